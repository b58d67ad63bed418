//! netfront: the domain's virtual network interface, as a smoltcp
//! `phy::Device`.
//!
//! Single queue, copy mode (`request-rx-copy`), no scatter-gather, GSO or
//! checksum offload: every frame fits one page. One-page TX and RX rings
//! (256 slots each), [`RX_BUFFERS`] receive pages granted writable and
//! posted in advance, [`TX_BUFFERS`] transmit pages granted read-only.
//!
//! The backend is untrusted: ring indices are checked against what was
//! posted, TX ids against what is outstanding; each RX response is judged
//! by `crate::netif_rx` (ids, offsets and lengths against the page). A
//! protocol violation marks the device broken (it then neither sends nor
//! receives) instead of panicking.

use super::events;
use super::grants::{self, GrantError};
use super::hypercall::{self, HypercallError};
use super::memory::Page;
use super::xenbus::{self, XenbusError};
use super::xenstore::{Transaction, Xenstore};
use crate::netif_rx::{RxAssembler, RxStep};
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU32, Ordering};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use xen_abi::netif::{
    NetifRxRequest, NetifRxResponse, NetifTxRequest, NetifTxResponse, RSP_OKAY, RX_ENTRY_SIZE,
    RX_RING_SIZE, TX_ENTRY_SIZE, TX_RING_SIZE,
};
use xen_abi::ring::{needs_notify, offset, SRING_HEADER_SIZE};
use xen_abi::xenbus::XenbusState;
use xen_abi::{DomainId, EventChannelPort, GrantRef};

/// Receive pages posted to the backend (fewer than the ring's 256 slots).
pub const RX_BUFFERS: usize = 128;
/// Transmit pages (frames in flight at once).
pub const TX_BUFFERS: usize = 64;
/// Ethernet frame without FCS at the standard MTU.
pub const FRAME_BYTES: usize = 1514;
/// Received frames queued for the stack before new ones are dropped.
const RECEIVE_QUEUE: usize = 256;

/// Why connecting failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetfrontError {
    /// The handshake failed.
    Xenbus(XenbusError),
    /// Granting a page failed.
    Grant(GrantError),
    /// Allocating the event channel failed.
    EventChannel(HypercallError),
    /// The heap is exhausted.
    OutOfMemory,
    /// The toolstack or backend published a value we cannot use.
    BadDetails(String),
}

impl From<XenbusError> for NetfrontError {
    fn from(error: XenbusError) -> Self {
        NetfrontError::Xenbus(error)
    }
}

impl From<super::xenstore::XenstoreError> for NetfrontError {
    fn from(error: super::xenstore::XenstoreError) -> Self {
        NetfrontError::Xenbus(XenbusError::Xenstore(error))
    }
}

impl From<GrantError> for NetfrontError {
    fn from(error: GrantError) -> Self {
        NetfrontError::Grant(error)
    }
}

impl core::fmt::Display for NetfrontError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NetfrontError::Xenbus(error) => write!(formatter, "netfront handshake: {error}"),
            NetfrontError::Grant(error) => write!(formatter, "netfront grant: {error:?}"),
            NetfrontError::EventChannel(error) => {
                write!(formatter, "netfront event channel: {error}")
            }
            NetfrontError::OutOfMemory => formatter.write_str("netfront: out of memory"),
            NetfrontError::BadDetails(what) => write!(formatter, "netfront: {what}"),
        }
    }
}

/// Counters for the console.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStatistics {
    /// Frames handed to the stack.
    pub received: u64,
    /// Frames sent.
    pub sent: u64,
    /// Frames dropped: received with the queue full, or not sent for
    /// lack of a TX buffer or refused by the backend.
    pub dropped: u64,
    /// Received frames dropped as malformed (error status, bad offset or
    /// length, too long, runt).
    pub dropped_malformed: u64,
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// A connected virtual network interface.
#[derive(Debug)]
pub struct Netfront {
    frontend: String,
    backend: String,
    mac: [u8; 6],
    port: EventChannelPort,
    tx_ring: Page,
    tx_ring_reference: GrantRef,
    rx_ring: Page,
    rx_ring_reference: GrantRef,
    /// Our private request producers and response consumers.
    tx_producer: u32,
    tx_consumer: u32,
    rx_producer: u32,
    rx_consumer: u32,
    tx_buffers: Vec<(Page, GrantRef)>,
    tx_free: Vec<u16>,
    tx_in_flight: Vec<bool>,
    rx_buffers: Vec<(Page, GrantRef)>,
    /// Which receive buffer the request at each ring slot carries.
    rx_slot_buffer: Vec<u16>,
    received: VecDeque<Vec<u8>>,
    assembler: RxAssembler,
    scratch: Vec<u8>,
    broken: Option<&'static str>,
    /// Counters.
    pub statistics: NetStatistics,
}

fn parse_number<T: core::str::FromStr>(value: &str, what: &str) -> Result<T, NetfrontError> {
    value
        .trim()
        .parse()
        .map_err(|_| NetfrontError::BadDetails(format!("{what} = {value:?}")))
}

impl Netfront {
    /// Connect to `device/vif/<device>`.
    ///
    /// # Errors
    /// [`NetfrontError`] naming the step.
    pub fn connect(xenstore: &mut Xenstore, device: &str) -> Result<Netfront, NetfrontError> {
        let frontend = format!("device/vif/{device}");
        let backend = xenstore.read_string(Transaction::NONE, &format!("{frontend}/backend"))?;
        let backend_id = DomainId(parse_number(
            &xenstore.read_string(Transaction::NONE, &format!("{frontend}/backend-id"))?,
            "backend-id",
        )?);
        let mac_text = xenstore.read_string(Transaction::NONE, &format!("{frontend}/mac"))?;
        let mac = parse_mac(&mac_text)
            .ok_or_else(|| NetfrontError::BadDetails(format!("mac = {mac_text:?}")))?;
        xenbus::wait_for_state(xenstore, &backend, 30_000, |state| {
            matches!(state, XenbusState::InitWait | XenbusState::Connected)
        })?;

        let mut tx_ring = Page::new().ok_or(NetfrontError::OutOfMemory)?;
        let mut rx_ring = Page::new().ok_or(NetfrontError::OutOfMemory)?;
        for ring in [&mut tx_ring, &mut rx_ring] {
            // An empty ring: both event indices at 1 (SHARED_RING_INIT).
            ring.write(offset::REQ_EVENT, &1u32.to_le_bytes());
            ring.write(offset::RSP_EVENT, &1u32.to_le_bytes());
        }
        let tx_ring_reference = grants::grant(backend_id, tx_ring.machine_frame(), false)?;
        let rx_ring_reference = grants::grant(backend_id, rx_ring.machine_frame(), false)?;
        let port = hypercall::alloc_unbound(backend_id).map_err(NetfrontError::EventChannel)?;
        let mut tx_buffers = Vec::with_capacity(TX_BUFFERS);
        for _ in 0..TX_BUFFERS {
            let page = Page::new().ok_or(NetfrontError::OutOfMemory)?;
            let reference = grants::grant(backend_id, page.machine_frame(), true)?;
            tx_buffers.push((page, reference));
        }
        let mut rx_buffers = Vec::with_capacity(RX_BUFFERS);
        for _ in 0..RX_BUFFERS {
            let page = Page::new().ok_or(NetfrontError::OutOfMemory)?;
            let reference = grants::grant(backend_id, page.machine_frame(), false)?;
            rx_buffers.push((page, reference));
        }
        let mut netfront = Netfront {
            frontend,
            backend,
            mac,
            port,
            tx_ring,
            tx_ring_reference,
            rx_ring,
            rx_ring_reference,
            tx_producer: 0,
            tx_consumer: 0,
            rx_producer: 0,
            rx_consumer: 0,
            tx_buffers,
            tx_free: (0..TX_BUFFERS as u16).rev().collect(),
            tx_in_flight: vec![false; TX_BUFFERS],
            rx_buffers,
            rx_slot_buffer: vec![0; RX_RING_SIZE],
            received: VecDeque::new(),
            assembler: RxAssembler::new(),
            scratch: vec![0; FRAME_BYTES],
            broken: None,
            statistics: NetStatistics::default(),
        };
        // Every receive buffer is posted before the backend connects.
        for buffer in 0..RX_BUFFERS as u16 {
            netfront.post_rx(buffer);
        }
        netfront.publish_rx();

        let frontend = netfront.frontend.clone();
        loop {
            let transaction = xenstore.transaction_start()?;
            let entries = [
                ("tx-ring-ref", format!("{}", tx_ring_reference.0)),
                ("rx-ring-ref", format!("{}", rx_ring_reference.0)),
                ("event-channel", format!("{}", port.0)),
                ("request-rx-copy", String::from("1")),
                ("feature-rx-notify", String::from("1")),
                ("feature-sg", String::from("0")),
                ("feature-gso-tcpv4", String::from("0")),
                ("feature-gso-tcpv6", String::from("0")),
                ("feature-no-csum-offload", String::from("1")),
                ("feature-ipv6-csum-offload", String::from("0")),
            ];
            for (key, value) in &entries {
                xenstore.write(transaction, &format!("{frontend}/{key}"), value.as_bytes())?;
            }
            xenbus::switch_state(xenstore, transaction, &frontend, XenbusState::Connected)?;
            if xenstore.transaction_end(transaction, true)? {
                break;
            }
        }
        let backend = netfront.backend.clone();
        xenbus::wait_for_state(xenstore, &backend, 30_000, |state| {
            state == XenbusState::Connected
        })?;
        hypercall::notify(port);
        Ok(netfront)
    }

    /// The interface's MAC address (from the toolstack's `mac` node).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The event channel to wait on.
    pub fn port(&self) -> EventChannelPort {
        self.port
    }

    /// The backend's xenstore path.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Why the device stopped, if the backend broke the protocol.
    pub fn broken(&self) -> Option<&'static str> {
        self.broken
    }

    fn index(ring: &Page, byte_offset: usize) -> &AtomicU32 {
        // SAFETY: the four ring indices are aligned u32s at the start of a
        // ring page this struct owns; the backend writes two of them.
        unsafe { AtomicU32::from_ptr(ring.as_ptr().add(byte_offset).cast()) }
    }

    fn tx_slot(&self, index: u32) -> *mut u8 {
        let slot = index as usize % TX_RING_SIZE;
        // SAFETY: 64 + 255 * 12 + 12 = 3136 <= 4096: inside the ring page.
        unsafe {
            self.tx_ring
                .as_ptr()
                .add(SRING_HEADER_SIZE + slot * TX_ENTRY_SIZE)
        }
    }

    fn rx_slot(&self, index: u32) -> *mut u8 {
        let slot = index as usize % RX_RING_SIZE;
        // SAFETY: 64 + 255 * 8 + 8 = 2112 <= 4096: inside the ring page.
        unsafe {
            self.rx_ring
                .as_ptr()
                .add(SRING_HEADER_SIZE + slot * RX_ENTRY_SIZE)
        }
    }

    fn post_rx(&mut self, buffer: u16) {
        let request = NetifRxRequest {
            id: buffer,
            pad: 0,
            gref: self.rx_buffers[usize::from(buffer)].1 .0,
        };
        self.rx_slot_buffer[self.rx_producer as usize % RX_RING_SIZE] = buffer;
        let slot = self.rx_slot(self.rx_producer).cast::<NetifRxRequest>();
        // SAFETY: at most RX_BUFFERS (< RX_RING_SIZE) requests are ever
        // outstanding, so this slot is ours until req_prod passes it; the
        // slot is 4-byte aligned (64 + 8k).
        unsafe { slot.write_volatile(request) };
        self.rx_producer = self.rx_producer.wrapping_add(1);
    }

    fn publish_rx(&mut self) {
        let old = Self::index(&self.rx_ring, offset::REQ_PROD).load(Ordering::Relaxed);
        if old == self.rx_producer {
            return;
        }
        // Requests before the index that publishes them.
        fence(Ordering::Release);
        Self::index(&self.rx_ring, offset::REQ_PROD).store(self.rx_producer, Ordering::Release);
        fence(Ordering::SeqCst);
        let event = Self::index(&self.rx_ring, offset::REQ_EVENT).load(Ordering::Acquire);
        if needs_notify(old, self.rx_producer, event) {
            hypercall::notify(self.port);
        }
    }

    fn fail(&mut self, why: &'static str) {
        if self.broken.is_none() {
            crate::println!("netfront: backend broke the protocol ({why}); interface stopped");
        }
        self.broken = Some(why);
    }

    /// Take the backend's RX and TX responses: received frames are queued
    /// for the stack, their pages posted again; sent frames free their
    /// pages. Clears the event channel's pending bit first, so an event
    /// after the check wakes the next [`events::wait`].
    pub fn service(&mut self) {
        events::clear_pending(self.port);
        if self.broken.is_some() {
            return;
        }
        self.collect_rx();
        self.collect_tx();
        self.publish_rx();
        // Ask for an event at the next response of either ring
        // (RING_FINAL_CHECK_FOR_RESPONSES); the caller polls again, and
        // the pending bit covers responses that race with this store.
        Self::index(&self.rx_ring, offset::RSP_EVENT)
            .store(self.rx_consumer.wrapping_add(1), Ordering::Release);
        Self::index(&self.tx_ring, offset::RSP_EVENT)
            .store(self.tx_consumer.wrapping_add(1), Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Whether responses are waiting (checked after re-arming rsp_event).
    pub fn has_responses(&self) -> bool {
        Self::index(&self.rx_ring, offset::RSP_PROD).load(Ordering::Acquire) != self.rx_consumer
            || Self::index(&self.tx_ring, offset::RSP_PROD).load(Ordering::Acquire)
                != self.tx_consumer
    }

    fn collect_rx(&mut self) {
        let producer = Self::index(&self.rx_ring, offset::RSP_PROD).load(Ordering::Acquire);
        let outstanding = self.rx_producer.wrapping_sub(self.rx_consumer);
        if producer.wrapping_sub(self.rx_consumer) > outstanding {
            return self.fail("rx rsp_prod beyond the posted requests");
        }
        while self.rx_consumer != producer {
            let index = self.rx_consumer;
            let buffer = self.rx_slot_buffer[index as usize % RX_RING_SIZE];
            let slot = self.rx_slot(index).cast::<NetifRxResponse>();
            // SAFETY: a slot the backend published (below rsp_prod), 4-byte
            // aligned; copied once, then judged by the RxAssembler.
            let response = unsafe { slot.read_volatile() };
            self.rx_consumer = index.wrapping_add(1);
            let page = &self.rx_buffers[usize::from(buffer)].0;
            let step = self
                .assembler
                .take(buffer, response, |start, out| page.read(start, out));
            // The slot's request is used up whatever it held: post the
            // buffer again (the backend is done writing it).
            self.post_rx(buffer);
            match step {
                RxStep::Nothing => {}
                RxStep::Frame(frame) if self.received.len() < RECEIVE_QUEUE => {
                    self.received.push_back(frame);
                    self.statistics.received += 1;
                }
                RxStep::Frame(_) => self.statistics.dropped += 1,
                RxStep::Broken(why) => return self.fail(why),
            }
        }
        self.statistics.dropped_malformed = self.assembler.dropped;
    }

    fn collect_tx(&mut self) {
        let producer = Self::index(&self.tx_ring, offset::RSP_PROD).load(Ordering::Acquire);
        let outstanding = self.tx_producer.wrapping_sub(self.tx_consumer);
        if producer.wrapping_sub(self.tx_consumer) > outstanding {
            return self.fail("tx rsp_prod beyond the sent requests");
        }
        while self.tx_consumer != producer {
            let slot = self.tx_slot(self.tx_consumer).cast::<NetifTxResponse>();
            // SAFETY: a slot the backend published (below rsp_prod), 4-byte
            // aligned; copied once, then validated.
            let response = unsafe { slot.read_volatile() };
            self.tx_consumer = self.tx_consumer.wrapping_add(1);
            let id = usize::from(response.id);
            if id >= TX_BUFFERS || !self.tx_in_flight[id] {
                return self.fail("tx response for no outstanding request");
            }
            if response.status != RSP_OKAY {
                self.statistics.dropped += 1;
            }
            self.tx_in_flight[id] = false;
            self.tx_free.push(response.id);
        }
    }

    fn send(&mut self, length: usize) {
        let Some(id) = self.tx_free.pop() else {
            self.statistics.dropped += 1;
            return;
        };
        let length = length.min(FRAME_BYTES);
        let (page, reference) = &mut self.tx_buffers[usize::from(id)];
        page.write(0, &self.scratch[..length]);
        let request = NetifTxRequest {
            gref: reference.0,
            offset: 0,
            flags: 0,
            id,
            size: length as u16,
        };
        self.tx_in_flight[usize::from(id)] = true;
        let slot = self.tx_slot(self.tx_producer).cast::<NetifTxRequest>();
        // SAFETY: at most TX_BUFFERS (< TX_RING_SIZE) requests are
        // outstanding, so the slot is ours; 4-byte aligned (64 + 12k).
        unsafe { slot.write_volatile(request) };
        let old = self.tx_producer;
        self.tx_producer = self.tx_producer.wrapping_add(1);
        fence(Ordering::Release);
        Self::index(&self.tx_ring, offset::REQ_PROD).store(self.tx_producer, Ordering::Release);
        fence(Ordering::SeqCst);
        let event = Self::index(&self.tx_ring, offset::REQ_EVENT).load(Ordering::Acquire);
        if needs_notify(old, self.tx_producer, event) {
            hypercall::notify(self.port);
        }
        self.statistics.sent += 1;
    }

    /// Close the interface (Closing, backend follows, Closed) and take the
    /// grants back. Best effort, bounded in time.
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
        for (_, reference) in self.tx_buffers.iter().chain(&self.rx_buffers) {
            let _ = grants::end(*reference);
        }
        let _ = grants::end(self.tx_ring_reference);
        let _ = grants::end(self.rx_ring_reference);
        hypercall::close(self.port);
        // Pages whose grant could not be ended must never be reused.
        core::mem::forget(self.tx_buffers);
        core::mem::forget(self.rx_buffers);
        core::mem::forget(self.tx_ring);
        core::mem::forget(self.rx_ring);
        Ok(state)
    }
}

/// A received frame for smoltcp.
#[derive(Debug)]
pub struct NetRxToken(Vec<u8>);

impl phy::RxToken for NetRxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

/// A transmit slot for smoltcp.
#[derive(Debug)]
pub struct NetTxToken<'a>(&'a mut Netfront);

impl phy::TxToken for NetTxToken<'_> {
    fn consume<R, F>(self, length: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let netfront = self.0;
        let length = length.min(FRAME_BYTES);
        let result = f(&mut netfront.scratch[..length]);
        netfront.send(length);
        result
    }
}

impl phy::Device for Netfront {
    type RxToken<'a> = NetRxToken;
    type TxToken<'a> = NetTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(NetRxToken, NetTxToken<'_>)> {
        if self.broken.is_some() {
            return None;
        }
        if self.received.is_empty() {
            self.service();
        }
        if self.tx_free.is_empty() {
            self.collect_tx();
            if self.tx_free.is_empty() {
                return None;
            }
        }
        let frame = self.received.pop_front()?;
        Some((NetRxToken(frame), NetTxToken(self)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<NetTxToken<'_>> {
        if self.broken.is_some() {
            return None;
        }
        if self.tx_free.is_empty() {
            self.collect_tx();
        }
        if self.tx_free.is_empty() {
            return None;
        }
        Some(NetTxToken(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = FRAME_BYTES;
        capabilities.max_burst_size = Some(TX_BUFFERS);
        capabilities
    }
}
