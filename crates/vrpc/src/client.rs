//! The guest's side of a connection as a blocking, multi-threaded client:
//! the one client every platform uses (hosted memfd rings, Xen grant
//! rings), over [`Frontend`] and a platform [`Link`].
//!
//! Design: [`RingClient::call`] may be used from many threads at once:
//! each call takes a slot and data pages under a lock, then waits for its
//! reply. One waiting caller at a time (the "receiver") sleeps on the
//! response doorbell through [`Link::wait`], collects every response that
//! arrived (in whatever order the server answers) and wakes the callers
//! they belong to; the others sleep on a condition variable. A lone caller
//! thus wakes straight from the doorbell, with no hand-off through a
//! helper thread. When the peer dies or breaks the protocol every pending
//! and later call fails with [`CallError::Disconnected`]; nothing waits
//! forever on a dead peer, because the platform's `wait` also returns when
//! the peer is gone (hosted: the socket hangs up; Xen: the backend's
//! xenstore state).
//!
//! Xids: the caller numbers its calls and the ring carries the record's
//! xid as it is (the reply, matched by it, comes back with it); a call
//! whose xid is still in flight on this connection is refused
//! ([`SubmitError::DuplicateXid`]), so the caller's numbering must keep
//! calls in flight apart, as it must on a stream transport.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use std::vec::Vec;

use crate::front::{CallFailure, Frontend, Payload};
use crate::memory::{Doorbell, SharedMemory};
use crate::SubmitError;

/// What woke a caller sleeping in [`Link::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The response doorbell rang (and was reset).
    Rang,
    /// The peer is gone.
    PeerGone,
    /// The timeout passed.
    TimedOut,
}

/// The platform's side of a connection besides its shared memory: the
/// response doorbell to sleep on and the peer's liveness.
pub trait Link: Send + Sync {
    /// Blocks until the response doorbell rings (resetting it), the peer is
    /// gone, [`Link::close`] was called, or `timeout` passes.
    ///
    /// # Errors
    /// The system call that failed; the client treats it as a lost peer.
    fn wait(&self, timeout: Option<Duration>) -> std::io::Result<Wake>;

    /// Whether the peer is still there, without waiting.
    fn is_alive(&self) -> bool;

    /// Ends the connection from this side: a caller in [`Link::wait`]
    /// wakes with [`Wake::PeerGone`] and [`Link::is_alive`] turns false.
    fn close(&self);
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The connection is gone (server exited, closed, or broke the
    /// protocol); reconnect.
    Disconnected,
    /// The record or payload cannot be sent on this connection.
    Submit(SubmitError),
    /// A payload was given but the record does not end in an empty opaque.
    NoPayloadField,
    /// The reply was larger than the slot plus `read_capacity`.
    ReplyTooLarge,
    /// The server dropped the call without replying.
    NoReply,
}

impl core::fmt::Display for CallError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Disconnected => formatter.write_str("connection to the storage domain lost"),
            Self::Submit(error) => write!(formatter, "request cannot be sent: {error}"),
            Self::NoPayloadField => {
                formatter.write_str("record does not end in an empty opaque for the payload")
            }
            Self::ReplyTooLarge => {
                formatter.write_str("reply larger than the read capacity offered")
            }
            Self::NoReply => formatter.write_str("server dropped the call"),
        }
    }
}

impl std::error::Error for CallError {}

#[derive(Debug)]
struct State<R, P, D> {
    frontend: Frontend<R, P, D>,
    finished: HashMap<u32, Result<Vec<u8>, CallError>>,
    /// The condition variable of each call waiting for its reply (all
    /// share the one mutex): a reply wakes exactly its caller.
    waiters: HashMap<u32, Arc<Condvar>>,
    disconnected: bool,
    /// A caller is sleeping on the doorbell on everyone's behalf.
    receiving: bool,
    /// Whether the receiver polls before sleeping.
    spin: SpinPolicy,
}

impl<R: SharedMemory, P: SharedMemory, D: Doorbell> State<R, P, D> {
    /// Collects every published response into `finished`, waking each
    /// one's caller, and re-arms the doorbell (the final check); a protocol
    /// error disconnects. Returns whether anything changed.
    fn collect(&mut self) -> bool {
        let mut changed = false;
        loop {
            changed |= self.collect_published();
            if self.disconnected {
                return true;
            }
            match self.frontend.enable_notifications() {
                Ok(true) => continue,
                Ok(false) => return changed,
                Err(_) => {
                    self.disconnect();
                    return true;
                }
            }
        }
    }

    /// Collects the responses published now, without re-arming the
    /// doorbell (the peer then publishes without ringing). Returns whether
    /// anything changed.
    fn collect_published(&mut self) -> bool {
        let mut changed = false;
        loop {
            match self.frontend.poll_response() {
                Ok(Some(completion)) => {
                    let result = completion.reply.map_err(|failure| match failure {
                        CallFailure::ReplyTooLarge => CallError::ReplyTooLarge,
                        CallFailure::NoReply => CallError::NoReply,
                    });
                    if let Some(waiter) = self.waiters.get(&completion.xid) {
                        waiter.notify_one();
                    }
                    self.finished.insert(completion.xid, result);
                    changed = true;
                }
                Ok(None) => return changed,
                Err(_) => {
                    self.disconnect();
                    return true;
                }
            }
        }
    }

    /// Marks the connection dead and wakes every caller.
    fn disconnect(&mut self) {
        self.disconnected = true;
        for waiter in self.waiters.values() {
            waiter.notify_one();
        }
    }
}

#[derive(Debug)]
struct Shared<R, P, D, L> {
    state: Mutex<State<R, P, D>>,
    /// Callers waiting for a free slot or free pages.
    space: Condvar,
    link: L,
}

impl<R, P, D, L> Shared<R, P, D, L> {
    fn lock(&self) -> MutexGuard<'_, State<R, P, D>> {
        // A panicking caller cannot leave the state half-updated in a way
        // that matters more than losing the connection would.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn wait_on<'a, T>(condition: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condition
        .wait(guard)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long a caller waiting for a reply polls the ring before it arms the
/// doorbell and sleeps: a storage domain answers most calls within it, and
/// a reply found by polling costs no doorbell on either side.
pub const SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// A wait shorter than this many [`SPIN`]s is quick (see [`SpinPolicy`]).
pub const QUICK_WAITS: u32 = 4;

/// Whether a wait polls for [`SPIN`] before it sleeps, learnt from the
/// wait before: one that ended within [`QUICK_WAITS`] times [`SPIN`] (a
/// burst of calls, a reply that came soon) makes the next poll first; one
/// that did not (the program computing between calls) makes the next
/// sleep at once, leaving the CPU the polling would take to the program
/// (measurements: `docs/vrpc.md`, "Polling before sleeping").
#[derive(Debug, Clone, Copy)]
pub struct SpinPolicy {
    quick: bool,
}

impl Default for SpinPolicy {
    fn default() -> Self {
        SpinPolicy { quick: true }
    }
}

impl SpinPolicy {
    /// How long the next wait polls before sleeping.
    pub fn budget(&self) -> std::time::Duration {
        if self.quick {
            SPIN
        } else {
            std::time::Duration::ZERO
        }
    }

    /// The wait that began at `started` ended now.
    pub fn ended(&mut self, started: std::time::Instant) {
        // A wait that slept also took the wake-up: judged against the
        // polling window alone, a reply that came just after it would
        // stop the polling for good.
        self.quick = started.elapsed() < SPIN * QUICK_WAITS;
    }
}

/// A connection's frontend shared by many calling threads.
#[derive(Debug)]
pub struct RingClient<R, P, D, L> {
    shared: Arc<Shared<R, P, D, L>>,
}

impl<R, P, D, L> Clone for RingClient<R, P, D, L> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<R, P, D, L> RingClient<R, P, D, L>
where
    R: SharedMemory,
    P: SharedMemory,
    D: Doorbell,
    L: Link,
{
    /// A client over a connected `frontend` (ring initialised, peer
    /// attached) and its `link`.
    pub fn new(frontend: Frontend<R, P, D>, link: L) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    frontend,
                    finished: HashMap::new(),
                    waiters: HashMap::new(),
                    disconnected: false,
                    receiving: false,
                    spin: SpinPolicy::default(),
                }),
                space: Condvar::new(),
                link,
            }),
        }
    }

    /// The platform link.
    pub fn link(&self) -> &L {
        &self.shared.link
    }

    /// Whether the connection is still usable: no call saw it fail and
    /// the link says the peer is alive (checked without waiting).
    pub fn is_connected(&self) -> bool {
        let mut state = self.shared.lock();
        if state.disconnected {
            return false;
        }
        if self.shared.link.is_alive() {
            true
        } else {
            state.disconnect();
            false
        }
    }

    /// Makes one call and waits for its reply.
    ///
    /// `record` is the ONC RPC call record (what TCP would carry, without
    /// record marking); its xid, which no other call in flight on this
    /// connection may have, is the one the ring carries.
    /// `write_payload`, when not empty, is bulk data for the record's last
    /// field, a variable-length opaque that the record must carry empty
    /// (encode `WRITE3args` with empty `data`): it travels in data pages
    /// and the server sees the standard record. `read_capacity` is how
    /// many bytes of data pages the server may fill with the reply's bulk
    /// data (READ data, READDIR lists): at least the call's `count` plus a
    /// little, or 0 for small replies. Returns the full standard reply
    /// record.
    ///
    /// # Errors
    /// [`CallError`].
    pub fn call(
        &self,
        record: &[u8],
        write_payload: &[u8],
        read_capacity: usize,
    ) -> Result<Vec<u8>, CallError> {
        let Some(xid) = record.get(..4) else {
            return Err(CallError::Submit(SubmitError::BadRecord));
        };
        let xid = u32::from_be_bytes([xid[0], xid[1], xid[2], xid[3]]);
        // Only a call with a payload needs its record changed (the
        // opaque's length and padding); others go as they are.
        let filled;
        let (carried, payload) = if write_payload.is_empty() {
            (record, None)
        } else {
            let mut record = record.to_vec();
            let offset = crate::splice::fill_trailing_opaque(&mut record, write_payload.len())
                .ok_or(CallError::NoPayloadField)?;
            filled = record;
            let payload = Payload {
                offset,
                bytes: write_payload,
            };
            (&filled[..], Some(payload))
        };
        let shared = &*self.shared;
        let mut state = shared.lock();
        loop {
            if state.disconnected {
                return Err(CallError::Disconnected);
            }
            // A caller still waiting for, or about to take, the reply of a
            // call with this xid keeps the xid: its reply would be
            // mistaken for this one's.
            if state.waiters.contains_key(&xid) {
                return Err(CallError::Submit(SubmitError::DuplicateXid));
            }
            match state.frontend.submit(carried, payload, read_capacity) {
                Ok(_) => break,
                Err(error) if error.is_transient() => {
                    state = wait_on(&shared.space, state);
                }
                Err(error) => return Err(CallError::Submit(error)),
            }
        }
        let waiter = Arc::new(Condvar::new());
        state.waiters.insert(xid, Arc::clone(&waiter));
        let result = loop {
            if let Some(result) = state.finished.remove(&xid) {
                break result;
            }
            if state.disconnected {
                break Err(CallError::Disconnected);
            }
            if state.receiving {
                state = wait_on(&waiter, state);
                continue;
            }
            // Become the receiver: look for the reply for a moment without
            // arming the doorbell (a reply that comes meanwhile costs
            // neither side a system call), then collect, and sleep on the
            // doorbell only when the final check says nothing is pending.
            state.receiving = true;
            let started = std::time::Instant::now();
            let spin_until = started + state.spin.budget();
            let mut collected = false;
            while std::time::Instant::now() < spin_until {
                drop(state);
                std::thread::yield_now();
                state = shared.lock();
                if state.collect_published() {
                    collected = true;
                    break;
                }
            }
            state.receiving = false;
            if collected {
                state.spin.ended(started);
                shared.space.notify_all();
                continue;
            }
            if state.collect() {
                state.spin.ended(started);
                shared.space.notify_all();
                continue;
            }
            state.receiving = true;
            drop(state);
            let wake = shared.link.wait(None);
            state = shared.lock();
            state.receiving = false;
            state.spin.ended(started);
            match wake {
                Ok(Wake::Rang | Wake::TimedOut) => {
                    if state.collect() {
                        shared.space.notify_all();
                    }
                }
                Ok(Wake::PeerGone) | Err(_) => {
                    state.disconnect();
                    shared.space.notify_all();
                }
            }
        };
        state.waiters.remove(&xid);
        // Hand the receiving over to a caller still waiting, if any.
        if !state.receiving {
            if let Some(next) = state.waiters.values().next() {
                next.notify_one();
            }
        }
        drop(state);
        result
    }

    /// Disconnects: pending and later calls fail with
    /// [`CallError::Disconnected`].
    pub fn close(&self) {
        self.shared.lock().disconnect();
        self.shared.space.notify_all();
        // A receiver asleep in the link wakes and finds the state dead.
        self.shared.link.close();
    }

    /// Takes the frontend back once no other clone of this client exists
    /// (to tear the connection down: its regions may be released only
    /// after the peer stopped using them).
    pub fn into_frontend(self) -> Option<Frontend<R, P, D>> {
        let shared = Arc::into_inner(self.shared)?;
        let state = shared
            .state
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(state.frontend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_wait_polls_only_after_a_quick_one() {
        let mut spin = SpinPolicy::default();
        assert_eq!(spin.budget(), SPIN, "a new connection polls");
        // A wait far longer than the polling: the next sleeps at once.
        spin.ended(Instant::now() - SPIN * QUICK_WAITS * 2);
        assert_eq!(spin.budget(), Duration::ZERO);
        // A quick one: the next polls again.
        spin.ended(Instant::now());
        assert_eq!(spin.budget(), SPIN);
        // One that outlasted the polling by a wake-up still counts as
        // quick.
        spin.ended(Instant::now() - SPIN * 2);
        assert_eq!(spin.budget(), SPIN);
    }
}
