//! The frontend (guest) end of a VRPC connection.
//!
//! Design: the frontend owns the ring and the data pool (it allocated both
//! and granted them to the backend). It assigns slots in ring order, pages
//! from [`PagePool`], and remembers per xid which pages a request holds until
//! its response is collected, in whatever order responses come. Responses
//! are untrusted like requests are on the other side: the producer index is
//! bounded by the requests in flight, every length by what the request
//! offered.
//!
//! Not thread-safe by itself (`&mut self`); a platform wraps it in a lock
//! and wakes callers by xid (see `vrpc-hosted`).

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

use crate::error::{ProtocolError, SubmitError};
use crate::layout::{
    get_u32, put_u16, put_u32, Descriptor, ParameterError, ResponseStatus, RingParameters,
    DESCRIPTOR_SIZE, HEADER_MAGIC, HEADER_SIZE, HEADER_SLOT_COUNT, HEADER_SLOT_SIZE,
    HEADER_VERSION, MAGIC, MAX_DESCRIPTORS, REQUEST_EVENT, REQUEST_FLAGS, REQUEST_PAYLOAD_COUNT,
    REQUEST_PRODUCER, REQUEST_RECORD_LENGTH, REQUEST_REPLY_COUNT, REQUEST_SPLICE_LENGTH,
    REQUEST_SPLICE_OFFSET, REQUEST_XID, RESPONSE_EVENT, RESPONSE_PRODUCER, RESPONSE_RECORD_LENGTH,
    RESPONSE_SPLICE_LENGTH, RESPONSE_SPLICE_OFFSET, RESPONSE_STATUS, RESPONSE_XID,
    SLOT_HEADER_SIZE, VERSION,
};
use crate::memory::{Doorbell, SharedMemory};
use crate::pool::{descriptors, Extent, PagePool};

/// Why a request got no reply record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The reply did not fit the slot plus the reply capacity offered.
    ReplyTooLarge,
    /// The server dropped the call.
    NoReply,
}

/// A collected response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The xid of the request it answers.
    pub xid: u32,
    /// The full reply record (inline bytes with the spliced bytes put
    /// back), or why there is none.
    pub reply: Result<Vec<u8>, CallFailure>,
}

/// The payload of a request carried by splice: `bytes` belong at `offset`
/// of the full record (see [`crate::splice`]).
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    /// Where in the full record the bytes go.
    pub offset: usize,
    /// The bytes.
    pub bytes: &'a [u8],
}

#[derive(Debug)]
struct InFlight {
    extents: Vec<Extent>,
    reply_descriptors: Vec<Descriptor>,
}

/// The frontend of one connection over ring memory `R`, pool memory `P`
/// and doorbell `D`.
#[derive(Debug)]
pub struct Frontend<R, P, D> {
    ring: R,
    pool: P,
    doorbell: D,
    parameters: RingParameters,
    /// `req_prod_pvt`: requests written, published or not.
    request_producer: u32,
    /// `rsp_cons`: responses consumed.
    response_consumer: u32,
    /// The last `rsp_prod` read, already validated.
    response_producer_seen: u32,
    pages: PagePool,
    in_flight: BTreeMap<u32, InFlight>,
    next_xid: u32,
    slot: Vec<u8>,
}

/// A ring region or pool too small for the parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupError {
    /// Parameters out of bounds.
    Parameters(ParameterError),
    /// A region smaller than the parameters need.
    RegionTooSmall,
    /// Writing the ring header failed.
    Memory(crate::memory::OutOfBounds),
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Parameters(error) => write!(formatter, "{error}"),
            Self::RegionTooSmall => {
                formatter.write_str("shared region smaller than the parameters need")
            }
            Self::Memory(error) => write!(formatter, "{error}"),
        }
    }
}

impl core::error::Error for SetupError {}

/// Initialises a ring header: both producer indices at `first_index`, both
/// event thresholds one past it (0 and 1 in Xen's
/// `SHARED_RING_INIT`), magic, version and parameters.
fn initialise_header<R: SharedMemory>(
    ring: &R,
    parameters: RingParameters,
    first_index: u32,
) -> Result<(), crate::memory::OutOfBounds> {
    ring.write(0, &[0; HEADER_SIZE])?;
    ring.store_u32(REQUEST_PRODUCER, first_index, Ordering::Relaxed)?;
    ring.store_u32(RESPONSE_PRODUCER, first_index, Ordering::Relaxed)?;
    ring.store_u32(
        REQUEST_EVENT,
        first_index.wrapping_add(1),
        Ordering::Relaxed,
    )?;
    ring.store_u32(
        RESPONSE_EVENT,
        first_index.wrapping_add(1),
        Ordering::Relaxed,
    )?;
    ring.store_u32(HEADER_MAGIC, MAGIC, Ordering::Relaxed)?;
    ring.store_u32(HEADER_VERSION, VERSION, Ordering::Relaxed)?;
    ring.store_u32(HEADER_SLOT_COUNT, parameters.slot_count, Ordering::Relaxed)?;
    // Release: the header is complete before anyone reads the slot size.
    ring.store_u32(HEADER_SLOT_SIZE, parameters.slot_size, Ordering::Release)
}

impl<R: SharedMemory, P: SharedMemory, D: Doorbell> Frontend<R, P, D> {
    /// Takes over freshly allocated regions and writes the ring header.
    /// Call before the backend maps the ring.
    ///
    /// # Errors
    /// [`SetupError`] when the parameters or region sizes are wrong.
    pub fn new(
        ring: R,
        pool: P,
        doorbell: D,
        parameters: RingParameters,
    ) -> Result<Self, SetupError> {
        Self::with_first_index(ring, pool, doorbell, parameters, 0)
    }

    /// As [`Frontend::new`], with both producer indices starting at
    /// `first_index` instead of 0: lets tests cross the 2^32 wrap of the
    /// free-running indices quickly. A real connection starts at 0.
    ///
    /// # Errors
    /// As [`Frontend::new`].
    pub fn with_first_index(
        ring: R,
        pool: P,
        doorbell: D,
        parameters: RingParameters,
        first_index: u32,
    ) -> Result<Self, SetupError> {
        let parameters = parameters.validate().map_err(SetupError::Parameters)?;
        if ring.size() < parameters.ring_bytes() || pool.size() < parameters.pool_bytes() {
            return Err(SetupError::RegionTooSmall);
        }
        initialise_header(&ring, parameters, first_index).map_err(SetupError::Memory)?;
        Ok(Self {
            ring,
            pool,
            doorbell,
            parameters,
            request_producer: first_index,
            response_consumer: first_index,
            response_producer_seen: first_index,
            pages: PagePool::new(parameters.pool_pages),
            in_flight: BTreeMap::new(),
            next_xid: 1,
            slot: vec![0; parameters.slot_size as usize],
        })
    }

    /// The connection's parameters.
    pub fn parameters(&self) -> RingParameters {
        self.parameters
    }

    /// Requests sent whose responses were not collected.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Pages of the pool free now.
    pub fn free_pages(&self) -> usize {
        self.pages.free_pages()
    }

    /// A fresh xid not in flight. Xids count up from 1 and skip any still
    /// in flight after wrapping.
    pub fn allocate_xid(&mut self) -> u32 {
        loop {
            let xid = self.next_xid;
            self.next_xid = self.next_xid.wrapping_add(1);
            if !self.in_flight.contains_key(&xid) {
                return xid;
            }
        }
    }

    /// Whether a slot is free for a request now.
    pub fn has_free_slot(&self) -> bool {
        self.request_producer.wrapping_sub(self.response_consumer) < self.parameters.slot_count
    }

    /// Queues one call and publishes it, ringing the doorbell when the
    /// backend asked to be woken (`req_event`).
    ///
    /// `record` is the call record (its first four bytes are the xid, which
    /// must not be in flight), `payload` bytes to splice into it through
    /// data pages, `reply_capacity` bytes of data pages the backend may fill
    /// with reply payload (READ data, directory lists). A record too long for
    /// its slot and without a payload travels partly in pages.
    ///
    /// # Errors
    /// [`SubmitError`]; [`SubmitError::is_transient`] ones clear when
    /// responses are collected.
    pub fn submit(
        &mut self,
        record: &[u8],
        payload: Option<Payload<'_>>,
        reply_capacity: usize,
    ) -> Result<u32, SubmitError> {
        let Some(xid_bytes) = record.get(0..4) else {
            return Err(SubmitError::BadRecord);
        };
        let xid = u32::from_be_bytes([xid_bytes[0], xid_bytes[1], xid_bytes[2], xid_bytes[3]]);
        if self.in_flight.contains_key(&xid) {
            return Err(SubmitError::DuplicateXid);
        }
        // Decide what travels inline and what in pages.
        let (inline, splice_offset, spliced): (&[u8], usize, &[u8]) = match payload {
            Some(payload) => {
                if payload.offset > record.len() {
                    return Err(SubmitError::BadRecord);
                }
                (record, payload.offset, payload.bytes)
            }
            None if record.len() > self.parameters.request_capacity(MAX_DESCRIPTORS / 2) => {
                let cut = self.parameters.request_capacity(MAX_DESCRIPTORS);
                (&record[..cut], cut, &record[cut..])
            }
            None => (record, record.len(), &[]),
        };
        if u32::try_from(spliced.len()).is_err() || u32::try_from(reply_capacity).is_err() {
            return Err(SubmitError::PoolTooSmall);
        }
        let needed_pages = spliced.len().div_ceil(crate::layout::PAGE_SIZE)
            + reply_capacity.div_ceil(crate::layout::PAGE_SIZE);
        if needed_pages > self.pages.pages() {
            return Err(SubmitError::PoolTooSmall);
        }
        if !self.has_free_slot() {
            return Err(SubmitError::RingFull);
        }
        let budget = MAX_DESCRIPTORS / 2;
        let Some(payload_extents) = self.pages.allocate(spliced.len(), budget) else {
            return Err(self.exhausted());
        };
        let Some(reply_extents) = self.pages.allocate(reply_capacity, budget) else {
            self.pages.release(&payload_extents);
            return Err(self.exhausted());
        };
        let payload_descriptors = descriptors(&payload_extents, spliced.len());
        let reply_descriptors = descriptors(&reply_extents, reply_capacity);
        let descriptor_count = payload_descriptors.len() + reply_descriptors.len();
        let mut extents = payload_extents;
        extents.extend_from_slice(&reply_extents);
        if inline.len() > self.parameters.request_capacity(descriptor_count) {
            self.pages.release(&extents);
            return Err(SubmitError::BadRecord);
        }
        // Payload into the pages first, then the slot, then the index.
        let mut written = 0;
        for descriptor in &payload_descriptors {
            let offset = descriptor.page as usize * crate::layout::PAGE_SIZE;
            let length = descriptor.length as usize;
            if let Err(error) = self.pool.write(offset, &spliced[written..written + length]) {
                self.pages.release(&extents);
                return Err(error.into());
            }
            written += length;
        }
        let slot = &mut self.slot;
        slot.fill(0);
        put_u32(slot, REQUEST_XID, xid);
        put_u32(slot, REQUEST_FLAGS, 0);
        put_u32(slot, REQUEST_RECORD_LENGTH, inline.len() as u32);
        put_u32(slot, REQUEST_SPLICE_OFFSET, splice_offset as u32);
        put_u32(slot, REQUEST_SPLICE_LENGTH, spliced.len() as u32);
        put_u16(
            slot,
            REQUEST_PAYLOAD_COUNT,
            payload_descriptors.len() as u16,
        );
        put_u16(slot, REQUEST_REPLY_COUNT, reply_descriptors.len() as u16);
        let mut position = SLOT_HEADER_SIZE;
        for descriptor in payload_descriptors.iter().chain(&reply_descriptors) {
            slot[position..position + DESCRIPTOR_SIZE].copy_from_slice(&descriptor.to_bytes());
            position += DESCRIPTOR_SIZE;
        }
        slot[position..position + inline.len()].copy_from_slice(inline);
        let used = position + inline.len();
        let slot_offset = self.parameters.slot_offset(self.request_producer);
        if let Err(error) = self.ring.write(slot_offset, &self.slot[..used]) {
            self.pages.release(&extents);
            return Err(error.into());
        }
        self.in_flight.insert(
            xid,
            InFlight {
                extents,
                reply_descriptors,
            },
        );
        self.request_producer = self.request_producer.wrapping_add(1);
        self.push_requests()?;
        Ok(xid)
    }

    fn exhausted(&self) -> SubmitError {
        // With nothing in flight no response will free pages: the request
        // cannot fit the pool as it is split (the descriptor budget).
        if self.in_flight.is_empty() {
            SubmitError::PoolTooSmall
        } else {
            SubmitError::PoolExhausted
        }
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`.
    fn push_requests(&mut self) -> Result<(), SubmitError> {
        let new = self.request_producer;
        let old = new.wrapping_sub(1);
        // Release: the slot and payload bytes written above are visible
        // before the backend can see the new producer index (Xen's wmb()).
        self.ring
            .store_u32(REQUEST_PRODUCER, new, Ordering::Release)?;
        // SeqCst fence: the producer store above is ordered before the
        // req_event load below (Xen's mb()). Without it the backend could
        // publish req_event and re-check req_prod in the window where our
        // store is not yet visible and we read its stale req_event: both
        // sides would then sleep (the missed-notification race).
        fence(Ordering::SeqCst);
        let event = self.ring.load_u32(REQUEST_EVENT, Ordering::Relaxed)?;
        if new.wrapping_sub(event) < new.wrapping_sub(old) {
            self.doorbell.notify();
        }
        Ok(())
    }

    /// Reads and validates `rsp_prod`: it may not run ahead of the requests
    /// in flight.
    fn response_producer(&mut self) -> Result<u32, ProtocolError> {
        if self.response_producer_seen != self.response_consumer {
            return Ok(self.response_producer_seen);
        }
        // Acquire: the response slots up to the producer index are read
        // after the index (Xen's rmb() after reading rsp_prod).
        let producer = self.ring.load_u32(RESPONSE_PRODUCER, Ordering::Acquire)?;
        let available = producer.wrapping_sub(self.response_consumer);
        let outstanding = self.request_producer.wrapping_sub(self.response_consumer);
        if available > outstanding {
            return Err(ProtocolError::IndexOverrun { producer });
        }
        self.response_producer_seen = producer;
        Ok(producer)
    }

    /// Collects the next response, if one was published.
    ///
    /// # Errors
    /// [`ProtocolError`] when the backend broke the protocol: the connection
    /// is then unusable.
    pub fn poll_response(&mut self) -> Result<Option<Completion>, ProtocolError> {
        let producer = self.response_producer()?;
        if producer == self.response_consumer {
            return Ok(None);
        }
        let slot_offset = self.parameters.slot_offset(self.response_consumer);
        self.ring.read(slot_offset, &mut self.slot)?;
        let slot = &self.slot;
        let xid = get_u32(slot, RESPONSE_XID);
        let status = ResponseStatus::from_wire(get_u32(slot, RESPONSE_STATUS))
            .ok_or(ProtocolError::UnknownStatus)?;
        let record_length = get_u32(slot, RESPONSE_RECORD_LENGTH) as usize;
        let splice_offset = get_u32(slot, RESPONSE_SPLICE_OFFSET) as usize;
        let splice_length = get_u32(slot, RESPONSE_SPLICE_LENGTH) as usize;
        let in_flight = self
            .in_flight
            .get(&xid)
            .ok_or(ProtocolError::UnknownXid { xid })?;
        let reply = match status {
            ResponseStatus::Ok => {
                if record_length > self.parameters.response_capacity() {
                    return Err(ProtocolError::RecordOverflowsSlot);
                }
                if splice_offset > record_length {
                    return Err(ProtocolError::SpliceOutOfRecord);
                }
                let capacity: usize = in_flight
                    .reply_descriptors
                    .iter()
                    .map(|d| d.length as usize)
                    .sum();
                if splice_length > capacity {
                    return Err(ProtocolError::SpliceLengthMismatch);
                }
                let inline = &slot[SLOT_HEADER_SIZE..SLOT_HEADER_SIZE + record_length];
                let mut record = Vec::with_capacity(record_length + splice_length);
                record.extend_from_slice(&inline[..splice_offset]);
                let mut remaining = splice_length;
                for descriptor in &in_flight.reply_descriptors {
                    if remaining == 0 {
                        break;
                    }
                    let length = remaining.min(descriptor.length as usize);
                    let offset = descriptor.page as usize * crate::layout::PAGE_SIZE
                        + descriptor.offset as usize;
                    self.pool.read_append(offset, length, &mut record)?;
                    remaining -= length;
                }
                record.extend_from_slice(&inline[splice_offset..]);
                Ok(record)
            }
            ResponseStatus::ReplyTooLarge => Err(CallFailure::ReplyTooLarge),
            ResponseStatus::NoReply => Err(CallFailure::NoReply),
        };
        if let Some(finished) = self.in_flight.remove(&xid) {
            self.pages.release(&finished.extents);
        }
        self.response_consumer = self.response_consumer.wrapping_add(1);
        Ok(Some(Completion { xid, reply }))
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: asks for a doorbell at the next
    /// response and reports whether one arrived meanwhile. Call before
    /// sleeping on the doorbell; sleep only when it returns `false`.
    ///
    /// # Errors
    /// [`ProtocolError`] as for [`Frontend::poll_response`].
    pub fn enable_notifications(&mut self) -> Result<bool, ProtocolError> {
        if self.response_producer()? != self.response_consumer {
            return Ok(true);
        }
        self.ring.store_u32(
            RESPONSE_EVENT,
            self.response_consumer.wrapping_add(1),
            Ordering::Relaxed,
        )?;
        // SeqCst fence: the rsp_event store is ordered before the re-read of
        // rsp_prod. Otherwise a response pushed between our first read and
        // the store could be missed by both: the backend reads the old
        // rsp_event (no doorbell) and we read the old rsp_prod (sleep).
        fence(Ordering::SeqCst);
        Ok(self.response_producer()? != self.response_consumer)
    }
}
