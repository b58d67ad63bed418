//! blkfront: the domain's virtual disk, as an `sdfs::BlockDevice`.
//!
//! One-page blkif ring (32 slots) and a pool of [`BUFFER_PAGES`] data
//! pages granted to the backend once at connect time, writable, for the
//! whole connection (`feature-persistent`: a backend that offers it maps
//! them once instead of per request). A request carries 11 segments
//! (pages) in its ring slot, or, when the backend offers
//! `feature-max-indirect-segments`, up to that many (and `disk_segments=`)
//! in an indirect page: one of [`RING_SIZE`] more pages granted at
//! connect, lent to the request until its response is taken. A read of a
//! run of blocks becomes up to 8 plain requests in flight at once, or one
//! indirect one; the caller waits for all of them. Responses are
//! untrusted: each is copied out of the ring once and its id checked
//! against what is in flight.
//!
//! Writes return before they complete ([`StartedWrites`]): each block is
//! copied into one of the batch's pages and gathered with the blocks
//! before it into one request while they are consecutive (up to 11, or
//! 22 with indirect requests: a quarter of the pages); the request
//! goes on the ring when the run breaks or fills, or before a flush or a
//! read that needs it. A flush (plain or started) covers the writes
//! issued before it: it goes on the ring only once they have completed,
//! and fails if one of them failed. A read batch, which uses the same
//! pages, first waits for every write; a started read waits for the
//! writes of its blocks.
//!
//! The pool's last [`READ_PAGES`] serve up to [`MAX_READING`] reads
//! started without waiting (`start_read` / `poll_read`: the poll loop
//! reads what parked calls need while it serves others), each with the
//! pages it takes from them, their request ids tagged apart from a
//! batch's and from each other's.
//!
//! Flushes can also be started without waiting (`start_flush`, the
//! commits of the poll loop): their ids carry
//! [`crate::blkif_batch::STARTED_FLUSH_ID`], a batch that meets their
//! response on the way records it, and `poll_flush` looks without
//! blocking (asking the backend for an event at the next response, so the
//! poll loop may sleep on [`Blkfront::port`]).

use super::events;
use super::grants::{self, GrantError};
use super::hypercall::{self, HypercallError};
use super::memory::Page;
use super::xenbus::{self, XenbusError};
use super::xenstore::{Transaction, Xenstore};
use crate::blkif_batch::{
    build_requests, segments_per_request, IndirectPages, Outstanding, RingRequest, StartedFlushes,
    StartedWrites,
};
use crate::disk_reads::MAX_READING;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU32, Ordering};
use sdfs::{BlockDevice, DeviceError, FlushTicket, BLOCK_SIZE};
use xen_abi::blkif::{
    BlkifRequest, BlkifRequestIndirect, BlkifResponse, MAX_SEGMENTS_PER_REQUEST,
    OP_FLUSH_DISKCACHE, OP_READ, OP_WRITE_BARRIER, PROTOCOL_X86_64, RING_ENTRY_SIZE, RING_SIZE,
    RSP_EOPNOTSUPP, RSP_OKAY, SECTOR_SIZE,
};
use xen_abi::ring::{needs_notify, offset, SRING_HEADER_SIZE};
use xen_abi::xenbus::XenbusState;
use xen_abi::{DomainId, EventChannelPort, GrantRef};

/// Data pages shared with the backend: 14 full requests.
pub const BUFFER_PAGES: usize = BATCH_PAGES + READ_PAGES;

/// Of those, the pages of the reads the caller waits for (8 requests),
/// which started writes use between reads.
const BATCH_PAGES: usize = MAX_SEGMENTS_PER_REQUEST * 8;

/// The rest: the reads in flight without waiting (`start_read`), 66
/// blocks among up to [`MAX_READING`] reads (a parked 256 KiB READ in
/// one read). Their requests are at most 6 plus one per read beyond the
/// first (a read's last request may be partly empty): with a batch's 8
/// and the started flushes' 4, at most 21 of the 32-slot ring.
pub const READ_PAGES: usize = MAX_SEGMENTS_PER_REQUEST * 6;

/// The id bit of a read started without waiting; the read's slot is
/// shifted by [`READ_SLOT_SHIFT`], its requests are `0..n` below.
const STARTED_READ_ID: u64 = 1 << 62;

/// Where a started read's slot sits in its requests' ids.
const READ_SLOT_SHIFT: u32 = 8;

/// A read started without waiting.
#[derive(Debug)]
struct StartedRead {
    first: u64,
    /// Its read pages (indices into the last [`READ_PAGES`] of the pool):
    /// block `i` lands in `pages[i]`.
    pages: Vec<usize>,
    outstanding: Outstanding,
    /// When it must be answered by.
    deadline: u64,
}

/// How long one batch of requests may take.
const IO_TIMEOUT_MS: u64 = 60_000;

/// `VDISK_READONLY` in the backend's `info` node (`blkif.h`).
const VDISK_READONLY: u32 = 0x4;

/// How the backend makes writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushMethod {
    /// `BLKIF_OP_FLUSH_DISKCACHE` (`feature-flush-cache`).
    FlushDiskCache,
    /// `BLKIF_OP_WRITE_BARRIER` (`feature-barrier`).
    Barrier,
    /// Neither: completed writes are taken as durable.
    None,
}

/// Why connecting failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlkfrontError {
    /// The handshake failed.
    Xenbus(XenbusError),
    /// Granting a page failed.
    Grant(GrantError),
    /// Allocating the event channel failed.
    EventChannel(HypercallError),
    /// The heap is exhausted.
    OutOfMemory,
    /// The backend published a value we cannot use.
    BadDetails(String),
}

impl From<XenbusError> for BlkfrontError {
    fn from(error: XenbusError) -> Self {
        BlkfrontError::Xenbus(error)
    }
}

impl From<super::xenstore::XenstoreError> for BlkfrontError {
    fn from(error: super::xenstore::XenstoreError) -> Self {
        BlkfrontError::Xenbus(XenbusError::Xenstore(error))
    }
}

impl From<GrantError> for BlkfrontError {
    fn from(error: GrantError) -> Self {
        BlkfrontError::Grant(error)
    }
}

impl core::fmt::Display for BlkfrontError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BlkfrontError::Xenbus(error) => write!(formatter, "blkfront handshake: {error}"),
            BlkfrontError::Grant(error) => write!(formatter, "blkfront grant: {error:?}"),
            BlkfrontError::EventChannel(error) => {
                write!(formatter, "blkfront event channel: {error}")
            }
            BlkfrontError::OutOfMemory => formatter.write_str("blkfront: out of memory"),
            BlkfrontError::BadDetails(what) => {
                write!(formatter, "blkfront: backend published {what}")
            }
        }
    }
}

/// A connected virtual disk.
#[derive(Debug)]
pub struct Blkfront {
    frontend: String,
    backend: String,
    backend_id: DomainId,
    handle: u16,
    ring: Page,
    ring_reference: GrantRef,
    port: EventChannelPort,
    request_producer: u32,
    response_consumer: u32,
    buffers: Vec<(Page, GrantRef)>,
    /// Pages holding indirect requests' segments (none when the backend
    /// offers no indirect requests or `disk_segments=` turns them off).
    indirect: Vec<(Page, GrantRef)>,
    /// Which request holds which indirect page.
    indirect_lent: IndirectPages,
    /// The backend's `feature-max-indirect-segments`.
    offered_segments: Option<u32>,
    /// Segments per read request (11: plain requests only).
    per_request: usize,
    /// Whether the backend keeps our grants mapped (`feature-persistent`).
    persistent: bool,
    sectors: u64,
    sector_size: u64,
    read_only: bool,
    flush_method: FlushMethod,
    broken: bool,
    started: StartedFlushes,
    /// Writes that returned before completing.
    pub writes: StartedWrites,
    /// The reads started without waiting, by slot (the slot is in their
    /// requests' ids).
    started_reads: [Option<StartedRead>; MAX_READING],
    /// Read pages no started read holds.
    free_read_pages: Vec<usize>,
    /// Most requests ever in flight at once.
    pub most_in_flight: usize,
    /// Requests completed.
    pub requests: u64,
}

/// The most blocks a started write gathers into one request with
/// `per_request` segments a request: a quarter of the writes' pages with
/// indirect requests, so that four are on the ring while the next blocks
/// are copied (one request of all 88 would make every write after it wait
/// for the whole of it).
fn write_run(per_request: usize) -> usize {
    per_request.clamp(MAX_SEGMENTS_PER_REQUEST, BATCH_PAGES / 4)
}

fn parse_number<T: core::str::FromStr>(value: &str, what: &str) -> Result<T, BlkfrontError> {
    value
        .trim()
        .parse()
        .map_err(|_| BlkfrontError::BadDetails(format!("{what} = {value:?}")))
}

impl Blkfront {
    /// Connect to the virtual disk `device/vbd/<device>`, with up to
    /// `wanted_segments` pages in a request (`disk_segments=`: indirect
    /// requests beyond 11 when the backend offers them).
    ///
    /// # Errors
    /// [`BlkfrontError`] naming the step.
    pub fn connect(
        xenstore: &mut Xenstore,
        device: &str,
        wanted_segments: usize,
    ) -> Result<Blkfront, BlkfrontError> {
        let frontend = format!("device/vbd/{device}");
        let backend = xenstore.read_string(Transaction::NONE, &format!("{frontend}/backend"))?;
        let backend_id = DomainId(parse_number(
            &xenstore.read_string(Transaction::NONE, &format!("{frontend}/backend-id"))?,
            "backend-id",
        )?);
        let handle: u16 = parse_number(device, "device id")?;
        xenbus::wait_for_state(xenstore, &backend, 30_000, |state| {
            matches!(state, XenbusState::InitWait | XenbusState::Connected)
        })?;

        let mut ring = Page::new().ok_or(BlkfrontError::OutOfMemory)?;
        // An empty ring: both event indices at 1 (FRONT_RING_INIT / SHARED_RING_INIT).
        ring.write(offset::REQ_EVENT, &1u32.to_le_bytes());
        ring.write(offset::RSP_EVENT, &1u32.to_le_bytes());
        let ring_reference = grants::grant(backend_id, ring.machine_frame(), false)?;
        let port = hypercall::alloc_unbound(backend_id).map_err(BlkfrontError::EventChannel)?;
        let mut buffers = Vec::with_capacity(BUFFER_PAGES);
        for _ in 0..BUFFER_PAGES {
            let page = Page::new().ok_or(BlkfrontError::OutOfMemory)?;
            let reference = grants::grant(backend_id, page.machine_frame(), false)?;
            buffers.push((page, reference));
        }

        loop {
            let transaction = xenstore.transaction_start()?;
            let ring_ref = format!("{}", ring_reference.0);
            let channel = format!("{}", port.0);
            xenstore.write(
                transaction,
                &format!("{frontend}/ring-ref"),
                ring_ref.as_bytes(),
            )?;
            xenstore.write(
                transaction,
                &format!("{frontend}/event-channel"),
                channel.as_bytes(),
            )?;
            xenstore.write(
                transaction,
                &format!("{frontend}/protocol"),
                PROTOCOL_X86_64.as_bytes(),
            )?;
            // Every data page is granted once, writable, for the whole
            // connection: the backend may keep them mapped.
            xenstore.write(transaction, &format!("{frontend}/feature-persistent"), b"1")?;
            xenbus::switch_state(xenstore, transaction, &frontend, XenbusState::Initialised)?;
            if xenstore.transaction_end(transaction, true)? {
                break;
            }
        }
        xenbus::wait_for_state(xenstore, &backend, 30_000, |state| {
            state == XenbusState::Connected
        })?;

        let sectors: u64 = parse_number(
            &xenstore.read_string(Transaction::NONE, &format!("{backend}/sectors"))?,
            "sectors",
        )?;
        let sector_size: u64 =
            match xenstore.read_string(Transaction::NONE, &format!("{backend}/sector-size")) {
                Ok(value) => parse_number(&value, "sector-size")?,
                Err(_) => SECTOR_SIZE,
            };
        if sector_size == 0
            || !sector_size.is_multiple_of(SECTOR_SIZE)
            || sector_size > BLOCK_SIZE as u64
        {
            return Err(BlkfrontError::BadDetails(format!(
                "sector-size {sector_size}"
            )));
        }
        let info: u32 = match xenstore.read_string(Transaction::NONE, &format!("{backend}/info")) {
            Ok(value) => parse_number(&value, "info")?,
            Err(_) => 0,
        };
        let feature = |xenstore: &mut Xenstore, name: &str| {
            xenstore
                .read_string(Transaction::NONE, &format!("{backend}/{name}"))
                .is_ok_and(|value| value.trim() == "1")
        };
        let offered_segments: Option<u32> = match xenstore.read_string(
            Transaction::NONE,
            &format!("{backend}/feature-max-indirect-segments"),
        ) {
            Ok(value) => Some(parse_number(&value, "feature-max-indirect-segments")?),
            Err(_) => None,
        };
        let per_request = segments_per_request(offered_segments, wanted_segments);
        let mut indirect = Vec::new();
        if per_request > MAX_SEGMENTS_PER_REQUEST {
            // One per ring slot: a request on the ring holds a slot, so one
            // is always free for the next indirect request. Writable: a
            // backend keeping grants mapped maps every page so.
            for _ in 0..RING_SIZE {
                let page = Page::new().ok_or(BlkfrontError::OutOfMemory)?;
                let reference = grants::grant(backend_id, page.machine_frame(), false)?;
                indirect.push((page, reference));
            }
        }
        let persistent = feature(xenstore, "feature-persistent");
        let flush_method = if feature(xenstore, "feature-flush-cache") {
            FlushMethod::FlushDiskCache
        } else if feature(xenstore, "feature-barrier") {
            FlushMethod::Barrier
        } else {
            FlushMethod::None
        };
        xenbus::switch_state(
            xenstore,
            Transaction::NONE,
            &frontend,
            XenbusState::Connected,
        )?;
        Ok(Blkfront {
            frontend,
            backend,
            backend_id,
            handle,
            ring,
            ring_reference,
            port,
            request_producer: 0,
            response_consumer: 0,
            buffers,
            indirect,
            indirect_lent: IndirectPages::new(if per_request > MAX_SEGMENTS_PER_REQUEST {
                RING_SIZE
            } else {
                0
            }),
            offered_segments,
            per_request,
            persistent,
            sectors,
            sector_size,
            read_only: info & VDISK_READONLY != 0,
            flush_method,
            broken: false,
            started: StartedFlushes::default(),
            writes: StartedWrites::new(0..BATCH_PAGES, write_run(per_request)),
            started_reads: Default::default(),
            free_read_pages: (0..READ_PAGES).collect(),
            most_in_flight: 0,
            requests: 0,
        })
    }

    /// Bytes of the disk.
    pub fn size_bytes(&self) -> u64 {
        self.sectors.saturating_mul(self.sector_size)
    }

    /// The backend's xenstore path.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Whether the backend offers the disk read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// How writes are made durable.
    pub fn flush_method(&self) -> FlushMethod {
        self.flush_method
    }

    /// Segments per request: 11 with plain requests only, more with
    /// indirect ones.
    pub fn segments_per_request(&self) -> usize {
        self.per_request
    }

    /// The backend's `feature-max-indirect-segments`, if it offers any.
    pub fn offered_segments(&self) -> Option<u32> {
        self.offered_segments
    }

    /// Whether the backend keeps the granted pages mapped
    /// (`feature-persistent`).
    pub fn persistent(&self) -> bool {
        self.persistent
    }

    /// Most indirect pages ever held by requests at once.
    pub fn most_indirect(&self) -> usize {
        self.indirect_lent.most_lent
    }

    /// Use up to `wanted` segments a request from now on (within what the
    /// backend offered and the indirect pages allocated at connect time),
    /// for the disk benchmark's side-by-side runs; returns the segments a
    /// request now takes.
    pub fn set_segments_per_request(&mut self, wanted: usize) -> usize {
        let offered = if self.indirect.is_empty() {
            None
        } else {
            self.offered_segments
        };
        self.per_request = segments_per_request(offered, wanted);
        self.writes.set_max_run(write_run(self.per_request));
        self.per_request
    }

    /// The event channel the backend signals responses on: the poll loop
    /// waits on it while a started flush runs.
    pub fn port(&self) -> EventChannelPort {
        self.port
    }

    fn ring_index(&self, byte_offset: usize) -> &AtomicU32 {
        // SAFETY: the four ring indices are aligned u32s at the start of
        // the ring page, which this struct owns; the backend writes two.
        unsafe { AtomicU32::from_ptr(self.ring.as_ptr().add(byte_offset).cast()) }
    }

    fn slot(&self, index: u32) -> *mut u8 {
        let slot = index as usize % RING_SIZE;
        // SAFETY: 64 + 31 * 112 + 112 = 3648 <= 4096: inside the ring page.
        unsafe {
            self.ring
                .as_ptr()
                .add(SRING_HEADER_SIZE + slot * RING_ENTRY_SIZE)
        }
    }

    fn push(&mut self, request: &BlkifRequest) {
        let slot = self.slot(self.request_producer).cast::<BlkifRequest>();
        // SAFETY: the slot is ours until req_prod passes it (we never have
        // more than RING_SIZE outstanding); 16-byte aligned.
        unsafe { slot.write_volatile(*request) };
        self.request_producer = self.request_producer.wrapping_add(1);
    }

    /// Push a read or write request: an indirect one's segments go into the
    /// indirect page lent to it until its response is taken.
    fn push_request(&mut self, request: &RingRequest) -> Result<(), DeviceError> {
        match request {
            RingRequest::Direct(request) => self.push(request),
            RingRequest::Indirect { request, segments } => {
                // Every request in flight holds a ring slot and there is a
                // page per slot: none free is a bug, not the backend's doing.
                let Some(index) = self.indirect_lent.lend(request.id) else {
                    self.broken = true;
                    return Err(DeviceError::Io);
                };
                let (page, reference) = &mut self.indirect[index];
                // At most 512 segments of 8 bytes: the page holds them.
                for (slot, segment) in segments.iter().enumerate() {
                    page.write(slot * 8, &segment.encode());
                }
                let placed = BlkifRequestIndirect {
                    indirect_grefs: [reference.0, 0, 0, 0, 0, 0, 0, 0],
                    ..*request
                };
                let slot = self.slot(self.request_producer).cast::<[u8; 64]>();
                // SAFETY: the slot is ours until req_prod passes it (we never
                // have more than RING_SIZE outstanding); the request takes
                // its first 64 of 112 bytes.
                unsafe { slot.write_volatile(placed.encode()) };
                self.request_producer = self.request_producer.wrapping_add(1);
            }
        }
        Ok(())
    }

    /// Publish pushed requests and notify if the backend asked.
    fn publish(&mut self) {
        let old = self.ring_index(offset::REQ_PROD).load(Ordering::Relaxed);
        // Requests must be visible before the index that publishes them.
        fence(Ordering::Release);
        self.ring_index(offset::REQ_PROD)
            .store(self.request_producer, Ordering::Release);
        // The new req_prod must be visible before we read req_event
        // (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY's mb()).
        fence(Ordering::SeqCst);
        let event = self.ring_index(offset::REQ_EVENT).load(Ordering::Acquire);
        if needs_notify(old, self.request_producer, event) {
            hypercall::notify(self.port);
        }
    }

    /// Copy out every response published so far: a started flush's is
    /// recorded for `poll_flush`, any other must belong to `batch`. A
    /// response that belongs nowhere, or a producer index past the ring,
    /// breaks the device.
    fn take_responses(&mut self, mut batch: Option<&mut Outstanding>) -> Result<(), DeviceError> {
        if self.broken {
            return Err(DeviceError::Io);
        }
        let producer = self.ring_index(offset::RSP_PROD).load(Ordering::Acquire);
        if producer.wrapping_sub(self.response_consumer) as usize > RING_SIZE {
            self.broken = true;
            return Err(DeviceError::Io);
        }
        while self.response_consumer != producer {
            let slot = self.slot(self.response_consumer).cast::<BlkifResponse>();
            // SAFETY: a slot the backend has published (below rsp_prod);
            // copied once, then validated.
            let response = unsafe { slot.read_volatile() };
            self.response_consumer = self.response_consumer.wrapping_add(1);
            let accepted = if StartedFlushes::owns(response.id) {
                self.started.complete(&response).is_ok()
            } else if response.id & STARTED_READ_ID != 0 {
                let slot = (response.id & !STARTED_READ_ID) >> READ_SLOT_SHIFT;
                let mut untagged = response;
                untagged.id &= (1 << READ_SLOT_SHIFT) - 1;
                usize::try_from(slot)
                    .ok()
                    .and_then(|slot| self.started_reads.get_mut(slot))
                    .and_then(Option::as_mut)
                    .is_some_and(|read| read.outstanding.complete(&untagged).is_ok())
            } else if StartedWrites::owns(response.id) {
                self.writes.complete(&response).is_ok()
            } else {
                batch
                    .as_deref_mut()
                    .is_some_and(|batch| batch.complete(&response).is_ok())
            };
            if !accepted {
                self.broken = true;
                return Err(DeviceError::Io);
            }
            // An indirect request's page is free again.
            self.indirect_lent.take_back(response.id);
            self.requests += 1;
        }
        self.release_flushes();
        Ok(())
    }

    /// Put on the ring every held flush whose writes have completed (one
    /// behind a failed write is answered as failed: `StartedFlushes::
    /// release`); without a flush operation (the backend refused it since)
    /// completed writes are durable, and it is answered as done.
    fn release_flushes(&mut self) {
        let mut published = false;
        for id in self.started.release(&self.writes) {
            match self.flush_request(id) {
                Some(request) => {
                    self.push(&request);
                    published = true;
                }
                None => {
                    let _ = self.started.complete(&BlkifResponse {
                        id,
                        status: RSP_OKAY,
                        ..BlkifResponse::default()
                    });
                }
            }
        }
        if published {
            self.publish();
        }
    }

    /// Wait (bounded) until `until` holds of the started writes, taking
    /// every response meanwhile.
    fn wait_for_writes(&mut self, until: fn(&StartedWrites) -> bool) -> Result<(), DeviceError> {
        self.wait_until(None, |writes, _| until(writes))
    }

    /// Wait (bounded, sleeping on the event channel) until `done` holds of
    /// the started writes and `batch`, taking every response meanwhile
    /// (the batch's into `batch`). Past the deadline the device is broken:
    /// requests may still complete into its pages, which are never used
    /// again.
    fn wait_until(
        &mut self,
        mut batch: Option<&mut Outstanding>,
        done: impl Fn(&StartedWrites, Option<&Outstanding>) -> bool,
    ) -> Result<(), DeviceError> {
        let deadline = events::deadline_after_ms(IO_TIMEOUT_MS);
        loop {
            events::clear_pending(self.port);
            self.take_responses(batch.as_deref_mut())?;
            if done(&self.writes, batch.as_deref()) {
                return Ok(());
            }
            if self.ask_for_event() {
                continue;
            }
            if events::system_time_ns() > deadline {
                self.broken = true;
                return Err(DeviceError::Io);
            }
            events::wait(&[self.port], deadline);
        }
    }

    /// Put the gathered run of writes on the ring, waiting for a slot if
    /// the writes' share is full.
    fn issue_writes(&mut self) -> Result<(), DeviceError> {
        if !self.writes.gathering() {
            return Ok(());
        }
        if !self.writes.has_slot() {
            self.wait_for_writes(StartedWrites::has_slot)?;
        }
        let deadline = events::deadline_after_ms(IO_TIMEOUT_MS);
        let buffers = &self.buffers;
        if let Some(request) = self
            .writes
            .issue(self.handle, deadline, |page| buffers[page].1 .0)
        {
            self.push_request(&request)?;
            self.publish();
            self.note_in_flight(0);
        }
        Ok(())
    }

    /// Put the gathered run on the ring and wait until every write has
    /// completed (whatever its outcome: see `drain_writes`).
    fn settle_writes(&mut self) -> Result<(), DeviceError> {
        self.issue_writes()?;
        if !self.writes.idle() {
            self.wait_for_writes(StartedWrites::idle)?;
        }
        Ok(())
    }

    /// [`Blkfront::settle_writes`], failing if a write ever failed (for a
    /// flush, which must not succeed after one).
    fn drain_writes(&mut self) -> Result<(), DeviceError> {
        self.settle_writes()?;
        match self.writes.failure() {
            Some(_) => Err(DeviceError::Io),
            None => Ok(()),
        }
    }

    /// Ask for an event at the next response (RING_FINAL_CHECK_FOR_RESPONSES);
    /// returns whether one was published meanwhile (look again before
    /// sleeping).
    fn ask_for_event(&self) -> bool {
        self.ring_index(offset::RSP_EVENT)
            .store(self.response_consumer.wrapping_add(1), Ordering::Release);
        fence(Ordering::SeqCst);
        self.ring_index(offset::RSP_PROD).load(Ordering::Acquire) != self.response_consumer
    }

    /// Publish pushed requests, notify if the backend asked, and wait for
    /// `count` responses with ids `0..count`. Returns the first non-okay
    /// status, if any.
    fn complete(&mut self, count: usize) -> Result<Option<i16>, DeviceError> {
        self.publish();
        self.note_in_flight(count);

        let mut outstanding = Outstanding::new(count);
        self.wait_until(Some(&mut outstanding), |_, batch| {
            batch.is_none_or(|batch| batch.remaining() == 0)
        })?;
        Ok(outstanding.first_failure())
    }

    /// Records the requests in flight with `batch` more of a batch.
    fn note_in_flight(&mut self, batch: usize) {
        let reading: usize = self
            .started_reads
            .iter()
            .flatten()
            .map(|read| read.outstanding.remaining())
            .sum();
        self.most_in_flight = self
            .most_in_flight
            .max(batch + self.started.in_flight() + reading + self.writes.in_flight());
    }

    /// Start reading up to `blocks` from `first` into free read pages
    /// without waiting; [`Blkfront::poll_read`] hands them over. Returns
    /// the blocks started: fewer when fewer pages are free, 0 when
    /// [`MAX_READING`] reads are in flight or no page is free.
    ///
    /// # Errors
    /// [`DeviceError`] for a broken device or a range past the disk.
    pub fn start_read(&mut self, first: u64, blocks: usize) -> Result<usize, DeviceError> {
        let Some(slot) = self.started_reads.iter().position(Option::is_none) else {
            return Ok(0);
        };
        if self.free_read_pages.is_empty() {
            return Ok(0);
        }
        let blocks = blocks.clamp(1, self.free_read_pages.len());
        self.check_range(first, blocks * BLOCK_SIZE)?;
        if self.writes.overlaps(first, blocks as u64) {
            // The backend may order requests as it likes: the blocks'
            // writes complete first.
            self.settle_writes()?;
        }
        let pages = self
            .free_read_pages
            .split_off(self.free_read_pages.len() - blocks);
        let grants: Vec<u32> = pages
            .iter()
            .map(|&page| self.buffers[BATCH_PAGES + page].1 .0)
            .collect();
        let mut requests = build_requests(OP_READ, self.handle, first, &grants, self.per_request);
        for request in &mut requests {
            request.set_id(request.id() | STARTED_READ_ID | ((slot as u64) << READ_SLOT_SHIFT));
        }
        for request in &requests {
            self.push_request(request)?;
        }
        self.started_reads[slot] = Some(StartedRead {
            first,
            pages,
            outstanding: Outstanding::new(requests.len()),
            deadline: events::deadline_after_ms(IO_TIMEOUT_MS),
        });
        self.note_in_flight(0);
        self.publish();
        Ok(blocks)
    }

    /// A started read that ended, without waiting: its first block, its
    /// blocks, and their data or the failure; `None` while none has
    /// ended (or none was started). Asks the backend for an event at the
    /// next response before saying "not yet", so a caller may sleep on
    /// [`Blkfront::port`].
    pub fn poll_read(&mut self) -> Option<(u64, usize, Result<Vec<u8>, DeviceError>)> {
        loop {
            let started = self.started_reads.iter().position(Option::is_some)?;
            if let Err(error) = self.take_responses(None) {
                // Broken: requests may still complete into the pages, which
                // are therefore never handed out again.
                let read = self.started_reads[started].take()?;
                return Some((read.first, read.pages.len(), Err(error)));
            }
            let done = self.started_reads.iter().position(|read| {
                read.as_ref()
                    .is_some_and(|read| read.outstanding.remaining() == 0)
            });
            if let Some(read) = done.and_then(|slot| self.started_reads[slot].take()) {
                let result = if read.outstanding.first_failure().is_some() {
                    Err(DeviceError::Io)
                } else {
                    let mut data = alloc::vec![0u8; read.pages.len() * BLOCK_SIZE];
                    for (chunk, &page) in data.chunks_mut(BLOCK_SIZE).zip(&read.pages) {
                        self.buffers[BATCH_PAGES + page].0.read(0, chunk);
                    }
                    Ok(data)
                };
                self.free_read_pages.extend_from_slice(&read.pages);
                return Some((read.first, read.pages.len(), result));
            }
            let now = events::system_time_ns();
            let late = self
                .started_reads
                .iter()
                .position(|read| read.as_ref().is_some_and(|read| now > read.deadline));
            if let Some(read) = late.and_then(|slot| self.started_reads[slot].take()) {
                // It may still complete into its pages: stop using them.
                self.broken = true;
                return Some((read.first, read.pages.len(), Err(DeviceError::Io)));
            }
            if !self.ask_for_event() {
                return None;
            }
        }
    }

    /// Transfer `blocks` (at most [`BATCH_PAGES`]) between the disk at
    /// `first` and buffers `0..blocks`.
    fn batch(&mut self, operation: u8, first: u64, blocks: usize) -> Result<(), DeviceError> {
        let grants: Vec<u32> = self.buffers[..blocks]
            .iter()
            .map(|(_, reference)| reference.0)
            .collect();
        let requests = build_requests(operation, self.handle, first, &grants, self.per_request);
        for request in &requests {
            self.push_request(request)?;
        }
        match self.complete(requests.len())? {
            None => Ok(()),
            Some(_) => Err(DeviceError::Io),
        }
    }

    fn check_range(&self, first: u64, bytes: usize) -> Result<usize, DeviceError> {
        if self.broken {
            return Err(DeviceError::Io);
        }
        let blocks = bytes.div_ceil(BLOCK_SIZE);
        match first.checked_add(blocks as u64) {
            Some(end) if end <= self.block_count() => Ok(blocks),
            _ => Err(DeviceError::OutOfRange),
        }
    }

    /// Close the device (frontend Closing, backend follows, frontend
    /// Closed) and take the grants back. Best effort, bounded in time.
    pub fn disconnect(self, xenstore: &mut Xenstore) -> Result<XenbusState, XenbusError> {
        xenbus::switch_state(
            xenstore,
            Transaction::NONE,
            &self.frontend,
            XenbusState::Closing,
        )?;
        let state = xenbus::wait_for_state(xenstore, &self.backend, 5_000, |state| {
            matches!(state, XenbusState::Closing | XenbusState::Closed)
        })?;
        xenbus::switch_state(
            xenstore,
            Transaction::NONE,
            &self.frontend,
            XenbusState::Closed,
        )?;
        for (_, reference) in self.buffers.iter().chain(&self.indirect) {
            let _ = grants::end(*reference);
        }
        let _ = grants::end(self.ring_reference);
        hypercall::close(self.port);
        let _ = self.backend_id;
        // Pages whose grant could not be ended must never be reused.
        core::mem::forget(self.buffers);
        core::mem::forget(self.indirect);
        core::mem::forget(self.ring);
        Ok(state)
    }
}

impl BlockDevice for Blkfront {
    fn block_count(&self) -> u64 {
        self.size_bytes() / BLOCK_SIZE as u64
    }

    fn read_block(&mut self, block: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.read_blocks(block, buffer)
    }

    fn read_blocks(&mut self, first: u64, buffer: &mut [u8]) -> Result<(), DeviceError> {
        let blocks = self.check_range(first, buffer.len())?;
        // The batch's pages are the writes': every write completes first
        // (which also orders this read after writes of its blocks). A write
        // that failed fails the next flush, not this read.
        self.settle_writes()?;
        let mut done = 0;
        while done < blocks {
            let count = BATCH_PAGES.min(blocks - done);
            self.batch(OP_READ, first + done as u64, count)?;
            for index in 0..count {
                let start = (done + index) * BLOCK_SIZE;
                let end = (start + BLOCK_SIZE).min(buffer.len());
                self.buffers[index].0.read(0, &mut buffer[start..end]);
            }
            done += count;
        }
        Ok(())
    }

    fn write_block(&mut self, block: u64, data: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.write_blocks(block, data)
    }

    /// Returns once the data is copied into the pool's pages; the request
    /// goes on the ring with the run it belongs to (see the module's
    /// documentation). A write that fails later fails the next flush.
    fn write_blocks(&mut self, first: u64, data: &[u8]) -> Result<(), DeviceError> {
        if self.read_only || self.writes.failure().is_some() {
            return Err(DeviceError::Io);
        }
        self.check_range(first, data.len())?;
        for (index, chunk) in data.chunks(BLOCK_SIZE).enumerate() {
            let block = first + index as u64;
            if self.writes.breaks_run(block) {
                self.issue_writes()?;
            }
            let page = loop {
                if let Some(page) = self.writes.take_page() {
                    break page;
                }
                // Every page is gathered or on the ring.
                self.issue_writes()?;
                self.wait_for_writes(StartedWrites::has_free_page)?;
            };
            let buffer = &mut self.buffers[page].0;
            buffer.write(0, chunk);
            if chunk.len() < BLOCK_SIZE {
                buffer.write(chunk.len(), &[0u8; BLOCK_SIZE][..BLOCK_SIZE - chunk.len()]);
            }
            self.writes.gather(block, page);
            if self.writes.run_full() {
                // On the ring at once: nothing more can join it.
                self.issue_writes()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        if self.broken {
            return Err(DeviceError::Io);
        }
        self.drain_writes()?;
        let Some(request) = self.flush_request(0) else {
            // Every write has completed (waited for above): nothing more to ask.
            return Ok(());
        };
        self.push(&request);
        let status = self.complete(1)?;
        self.flush_outcome(status)
    }

    /// A flush request on the ring, answered through `poll_flush`.
    fn start_flush(&mut self) -> Result<Option<FlushTicket>, DeviceError> {
        if self.broken {
            return Err(DeviceError::Io);
        }
        let deadline = events::deadline_after_ms(IO_TIMEOUT_MS);
        // Without a flush operation nothing is asked (the caller's plain
        // flush waits for the writes and returns); with too many in flight
        // the caller flushes plainly.
        if self.flush_request(0).is_none() {
            return Ok(None);
        }
        if self.writes.failure().is_some() {
            return Err(DeviceError::Io);
        }
        self.issue_writes()?;
        let Some(id) = self.started.start(deadline) else {
            return Ok(None);
        };
        // Held until the writes issued so far have completed.
        self.started.hold(id, self.writes.issued_mark());
        self.release_flushes();
        self.note_in_flight(0);
        Ok(Some(FlushTicket(id)))
    }

    fn poll_flush(&mut self, ticket: FlushTicket) -> Option<Result<(), DeviceError>> {
        loop {
            if let Err(error) = self.take_responses(None) {
                return Some(Err(error));
            }
            match self.started.take(ticket.0) {
                None => return Some(Err(DeviceError::Io)),
                Some(Some(status)) => {
                    let status = (status != RSP_OKAY).then_some(status);
                    return Some(self.flush_outcome(status));
                }
                Some(None) => {}
            }
            let now = events::system_time_ns();
            if self.started.overdue(now) || self.writes.overdue(now) {
                // It may still complete: the device is no longer used.
                self.broken = true;
                return Some(Err(DeviceError::Io));
            }
            if !self.ask_for_event() {
                return None;
            }
        }
    }
}

impl Blkfront {
    /// The flush request with `id` for the backend's flush method, `None`
    /// when it has none.
    fn flush_request(&self, id: u64) -> Option<BlkifRequest> {
        let operation = match self.flush_method {
            FlushMethod::FlushDiskCache => OP_FLUSH_DISKCACHE,
            FlushMethod::Barrier => OP_WRITE_BARRIER,
            FlushMethod::None => return None,
        };
        Some(BlkifRequest {
            operation,
            nr_segments: 0,
            handle: self.handle,
            id,
            sector_number: 0,
            ..BlkifRequest::default()
        })
    }

    /// A flush's outcome from its first non-okay status: a backend that
    /// turns out not to support the operation has nothing to flush (its
    /// writes complete durable), which is remembered.
    fn flush_outcome(&mut self, status: Option<i16>) -> Result<(), DeviceError> {
        match status {
            None => Ok(()),
            Some(RSP_EOPNOTSUPP) => {
                self.flush_method = FlushMethod::None;
                Ok(())
            }
            Some(_) => Err(DeviceError::Io),
        }
    }
}
