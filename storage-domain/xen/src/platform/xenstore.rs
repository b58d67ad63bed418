//! Xenstore client over the shared ring (`start_info.store_mfn`).
//!
//! Synchronous: one request at a time, replies matched by request id.
//! Watch events that arrive meanwhile are queued for
//! [`Xenstore::next_watch_event`]. Operations: read, write, directory,
//! watch, unwatch, transactions.

use super::{events, hypercall, memory};
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU32, Ordering};
use xen_abi::xen::StartInfo;
use xen_abi::xenstore_wire::{
    encode_request, nul_terminated, parse_transaction_id, parse_watch_event, split_directory,
    trim_nul, Message, Reassembler, WireError,
};
use xen_abi::xs_wire::{offset, MessageType, RING_SIZE};
use xen_abi::{EventChannelPort, MachineFrame};

/// Distinct watch events kept until someone asks for them.
const MAX_QUEUED_EVENTS: usize = 64;

/// How long a request may wait for its reply.
const REPLY_TIMEOUT_MS: u64 = 30_000;

/// Why a xenstore operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XenstoreError {
    /// The daemon answered with an error (`"ENOENT"`, `"EAGAIN"`, ...).
    Errno(String),
    /// The daemon broke the protocol.
    Protocol(&'static str),
    /// A message could not be framed.
    Wire(WireError),
    /// No reply in time.
    Timeout,
}

impl core::fmt::Display for XenstoreError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            XenstoreError::Errno(name) => write!(formatter, "xenstore error {name}"),
            XenstoreError::Protocol(what) => write!(formatter, "xenstore protocol: {what}"),
            XenstoreError::Wire(error) => write!(formatter, "{error}"),
            XenstoreError::Timeout => formatter.write_str("xenstore reply timed out"),
        }
    }
}

/// A transaction id; [`Transaction::NONE`] outside transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transaction(pub u32);

impl Transaction {
    /// No transaction.
    pub const NONE: Transaction = Transaction(0);
}

/// A fired watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The path that changed.
    pub path: String,
    /// The token given to [`Xenstore::watch`].
    pub token: String,
}

/// The connection to xenstored.
#[derive(Debug)]
pub struct Xenstore {
    ring: *mut u8,
    port: EventChannelPort,
    next_request_id: u32,
    reassembler: Reassembler,
    events: VecDeque<WatchEvent>,
}

impl Xenstore {
    /// Connect to the ring Xen set up for this domain.
    ///
    /// # Errors
    /// [`XenstoreError::Protocol`] when the ring page is not ours.
    pub fn new(start_info: &StartInfo) -> Result<Xenstore, XenstoreError> {
        let address = memory::virtual_address_of(MachineFrame(start_info.store_mfn))
            .ok_or(XenstoreError::Protocol("xenstore page outside the domain"))?;
        Ok(Xenstore {
            ring: address as *mut u8,
            port: EventChannelPort(start_info.store_evtchn),
            next_request_id: 1,
            reassembler: Reassembler::new(),
            events: VecDeque::new(),
        })
    }

    /// The event channel xenstored signals, for a caller that waits on
    /// several channels at once.
    pub fn port(&self) -> EventChannelPort {
        self.port
    }

    fn index(&self, byte_offset: usize) -> &AtomicU32 {
        // SAFETY: the four ring indices are aligned u32s in the xenstore
        // page, which stays mapped; the daemon updates two of them.
        unsafe { AtomicU32::from_ptr(self.ring.add(byte_offset).cast()) }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), XenstoreError> {
        let deadline = events::deadline_after_ms(REPLY_TIMEOUT_MS);
        let mut remaining = bytes;
        while !remaining.is_empty() {
            events::clear_pending(self.port);
            let consumer = self.index(offset::REQ_CONS).load(Ordering::Acquire);
            let mut producer = self.index(offset::REQ_PROD).load(Ordering::Relaxed);
            let used = producer.wrapping_sub(consumer) as usize;
            if used > RING_SIZE {
                return Err(XenstoreError::Protocol("request ring indices out of range"));
            }
            if used == RING_SIZE {
                if events::system_time_ns() > deadline {
                    return Err(XenstoreError::Timeout);
                }
                events::wait(&[self.port], deadline);
                continue;
            }
            let count = (RING_SIZE - used).min(remaining.len());
            for &byte in &remaining[..count] {
                let slot = offset::REQUEST + (producer as usize & (RING_SIZE - 1));
                // SAFETY: slot is inside the request ring.
                unsafe { self.ring.add(slot).write_volatile(byte) };
                producer = producer.wrapping_add(1);
            }
            // Bytes before the index that publishes them.
            fence(Ordering::Release);
            self.index(offset::REQ_PROD)
                .store(producer, Ordering::Release);
            hypercall::notify(self.port);
            remaining = &remaining[count..];
        }
        Ok(())
    }

    /// Move whatever the daemon has written into the reassembler.
    fn receive(&mut self) -> Result<bool, XenstoreError> {
        let producer = self.index(offset::RSP_PROD).load(Ordering::Acquire);
        let mut consumer = self.index(offset::RSP_CONS).load(Ordering::Relaxed);
        let available = producer.wrapping_sub(consumer) as usize;
        if available > RING_SIZE {
            return Err(XenstoreError::Protocol(
                "response ring indices out of range",
            ));
        }
        if available == 0 {
            return Ok(false);
        }
        let mut bytes = Vec::with_capacity(available);
        for _ in 0..available {
            let slot = offset::RESPONSE + (consumer as usize & (RING_SIZE - 1));
            // SAFETY: slot is inside the response ring; a copy is taken.
            bytes.push(unsafe { self.ring.add(slot).read_volatile() });
            consumer = consumer.wrapping_add(1);
        }
        // Finish reading before handing the space back.
        fence(Ordering::AcqRel);
        self.index(offset::RSP_CONS)
            .store(consumer, Ordering::Release);
        hypercall::notify(self.port);
        self.reassembler.push(&bytes);
        Ok(true)
    }

    /// Take every complete message; queue watch events, return the rest.
    fn next_message(&mut self) -> Result<Option<Message>, XenstoreError> {
        loop {
            match self
                .reassembler
                .next_message()
                .map_err(XenstoreError::Wire)?
            {
                Some(message) if message.message_type() == MessageType::WatchEvent => {
                    if let Some((path, token)) = parse_watch_event(&message.payload) {
                        let event = WatchEvent { path, token };
                        // A watcher re-reads the node on any event, so a
                        // repeat of a queued event adds nothing; the bound
                        // keeps a flooding daemon from exhausting the heap.
                        if !self.events.contains(&event) && self.events.len() < MAX_QUEUED_EVENTS {
                            self.events.push_back(event);
                        }
                    }
                }
                other => return Ok(other),
            }
        }
    }

    fn request(
        &mut self,
        message_type: MessageType,
        transaction: Transaction,
        parts: &[&[u8]],
    ) -> Result<Vec<u8>, XenstoreError> {
        let request_id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        let bytes = encode_request(message_type, request_id, transaction.0, parts)
            .map_err(XenstoreError::Wire)?;
        self.send(&bytes)?;
        let deadline = events::deadline_after_ms(REPLY_TIMEOUT_MS);
        loop {
            events::clear_pending(self.port);
            self.receive()?;
            while let Some(message) = self.next_message()? {
                if message.header.request_id != request_id {
                    continue; // a stale reply; nothing else is outstanding
                }
                return match message.message_type() {
                    MessageType::Error => Err(XenstoreError::Errno(
                        String::from_utf8_lossy(trim_nul(&message.payload)).into_owned(),
                    )),
                    reply if reply == message_type => Ok(message.payload),
                    _ => Err(XenstoreError::Protocol("reply of another type")),
                };
            }
            if events::system_time_ns() > deadline {
                return Err(XenstoreError::Timeout);
            }
            events::wait(&[self.port], deadline);
        }
    }

    /// `XS_READ`.
    ///
    /// # Errors
    /// [`XenstoreError`]; `Errno("ENOENT")` when the node is absent.
    pub fn read(&mut self, transaction: Transaction, path: &str) -> Result<Vec<u8>, XenstoreError> {
        self.request(MessageType::Read, transaction, &[&nul_terminated(path)])
    }

    /// `XS_READ` as text.
    ///
    /// # Errors
    /// As [`Xenstore::read`].
    pub fn read_string(
        &mut self,
        transaction: Transaction,
        path: &str,
    ) -> Result<String, XenstoreError> {
        let value = self.read(transaction, path)?;
        Ok(String::from_utf8_lossy(trim_nul(&value)).into_owned())
    }

    /// `XS_WRITE`.
    ///
    /// # Errors
    /// [`XenstoreError`].
    pub fn write(
        &mut self,
        transaction: Transaction,
        path: &str,
        value: &[u8],
    ) -> Result<(), XenstoreError> {
        self.request(
            MessageType::Write,
            transaction,
            &[&nul_terminated(path), value],
        )
        .map(|_| ())
    }

    /// `XS_DIRECTORY`: child names.
    ///
    /// # Errors
    /// [`XenstoreError`].
    pub fn directory(
        &mut self,
        transaction: Transaction,
        path: &str,
    ) -> Result<Vec<String>, XenstoreError> {
        let payload = self.request(
            MessageType::Directory,
            transaction,
            &[&nul_terminated(path)],
        )?;
        Ok(split_directory(&payload))
    }

    /// `XS_WATCH`: the daemon fires once at once, then on every change.
    ///
    /// # Errors
    /// [`XenstoreError`].
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), XenstoreError> {
        self.request(
            MessageType::Watch,
            Transaction::NONE,
            &[&nul_terminated(path), &nul_terminated(token)],
        )
        .map(|_| ())
    }

    /// `XS_UNWATCH`; queued events of the watch are dropped.
    ///
    /// # Errors
    /// [`XenstoreError`].
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), XenstoreError> {
        self.request(
            MessageType::Unwatch,
            Transaction::NONE,
            &[&nul_terminated(path), &nul_terminated(token)],
        )?;
        self.events.retain(|event| event.token != token);
        Ok(())
    }

    /// `XS_TRANSACTION_START`.
    ///
    /// # Errors
    /// [`XenstoreError`].
    pub fn transaction_start(&mut self) -> Result<Transaction, XenstoreError> {
        let payload = self.request(MessageType::TransactionStart, Transaction::NONE, &[b"\0"])?;
        parse_transaction_id(&payload)
            .map(Transaction)
            .ok_or(XenstoreError::Protocol("bad transaction id"))
    }

    /// `XS_TRANSACTION_END`: `Ok(false)` when the daemon says `EAGAIN`
    /// (a conflicting change: run the transaction again).
    ///
    /// # Errors
    /// [`XenstoreError`] other than `EAGAIN`.
    pub fn transaction_end(
        &mut self,
        transaction: Transaction,
        commit: bool,
    ) -> Result<bool, XenstoreError> {
        let argument: &[u8] = if commit { b"T\0" } else { b"F\0" };
        match self.request(MessageType::TransactionEnd, transaction, &[argument]) {
            Ok(_) => Ok(true),
            Err(XenstoreError::Errno(name)) if name == "EAGAIN" => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The next watch event with `token` (any token when `None`), waiting
    /// until `deadline_ns` (system time; 0 waits forever); events of other
    /// watches stay queued. `Ok(None)` on timeout.
    ///
    /// # Errors
    /// [`XenstoreError`] when the ring breaks.
    pub fn next_watch_event(
        &mut self,
        token: Option<&str>,
        deadline_ns: u64,
    ) -> Result<Option<WatchEvent>, XenstoreError> {
        loop {
            let wanted = self
                .events
                .iter()
                .position(|event| token.is_none_or(|token| event.token == token));
            if let Some(index) = wanted {
                return Ok(self.events.remove(index));
            }
            events::clear_pending(self.port);
            let arrived = self.receive()?;
            // Replies nobody waits for are dropped; events are queued.
            while self.next_message()?.is_some() {}
            if arrived {
                continue;
            }
            if deadline_ns != 0 && events::system_time_ns() >= deadline_ns {
                return Ok(None);
            }
            events::wait(&[self.port], deadline_ns);
        }
    }
}
