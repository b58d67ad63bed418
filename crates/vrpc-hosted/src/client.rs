//! The guest's side: connect to a hosted storage domain and make calls.
//!
//! [`Client::call`] may be used from many threads at once: each call takes
//! a slot and data pages under a lock, then waits for its reply. One waiting
//! caller at a time (the "receiver") sleeps on the response doorbell and the
//! socket, collects every response that arrived (in whatever order the
//! server answers) and wakes the callers they belong to; the others sleep on
//! a condition variable. A lone caller thus wakes straight from the
//! doorbell, with no hand-off through a helper thread. When the server dies
//! or breaks the protocol every pending and later call fails with
//! [`CallError::Disconnected`]; nothing waits forever on a dead peer.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use vrpc::{CallFailure, Frontend, Payload, RingParameters, SubmitError};

use crate::doorbell::{EventDoorbell, Wake};
use crate::handshake::{receive_welcome, send_hello, Status};
use crate::region::MappedRegion;

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server refused.
    #[error("server refused the connection: {0:?}")]
    Refused(Status),
    /// The ring parameters are out of bounds.
    #[error("invalid ring parameters")]
    Parameters,
    /// The metadata table the server sent is unusable.
    #[error("unusable metadata table: {0}")]
    MetadataTable(metatab::TableError),
    /// A system call failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    /// The connection is gone (server exited, closed, or broke the
    /// protocol); reconnect.
    #[error("connection to the storage domain lost")]
    Disconnected,
    /// The record or payload cannot be sent on this connection.
    #[error("request cannot be sent: {0}")]
    Submit(SubmitError),
    /// A payload was given but the record does not end in an empty opaque.
    #[error("record does not end in an empty opaque for the payload")]
    NoPayloadField,
    /// The reply was larger than the slot plus `read_capacity`.
    #[error("reply larger than the read capacity offered")]
    ReplyTooLarge,
    /// The server dropped the call without replying.
    #[error("server dropped the call")]
    NoReply,
}

type HostedFrontend = Frontend<MappedRegion, MappedRegion, EventDoorbell>;

#[derive(Debug)]
struct State {
    frontend: HostedFrontend,
    finished: HashMap<u32, Result<Vec<u8>, CallError>>,
    /// The condition variable of each call waiting for its reply (all
    /// share the one mutex): a reply wakes exactly its caller.
    waiters: HashMap<u32, Arc<Condvar>>,
    disconnected: bool,
    /// A caller is sleeping on the doorbell on everyone's behalf.
    receiving: bool,
}

impl State {
    /// Collects every published response into `finished`, waking each
    /// one's caller, and re-arms the doorbell (the final check); a protocol
    /// error disconnects. Returns whether anything changed.
    fn collect(&mut self) -> bool {
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
                Ok(None) => match self.frontend.enable_notifications() {
                    Ok(true) => continue,
                    Ok(false) => return changed,
                    Err(_) => break,
                },
                Err(_) => break,
            }
        }
        self.disconnect();
        true
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
struct Shared {
    state: Mutex<State>,
    /// Callers waiting for a free slot or free pages.
    space: Condvar,
    responses: EventDoorbell,
    stream: UnixStream,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking caller cannot leave the state half-updated in a way
        // that matters more than losing the connection would.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait<'a>(condition: &Condvar, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        condition
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A connection to a hosted storage domain's export.
#[derive(Debug)]
pub struct Client {
    shared: Arc<Shared>,
    metatab: Option<MappedRegion>,
}

/// Connects to the server listening at `path` and mounts `export`, with the
/// default ring parameters.
///
/// # Errors
/// [`ConnectError`].
pub fn connect(path: impl AsRef<Path>, export: &str) -> Result<Client, ConnectError> {
    Client::connect(path, export, RingParameters::default())
}

impl Client {
    /// Connects with explicit ring parameters: allocates the ring and pool
    /// memfds and both doorbells, sends them, and waits (at most 30 s) for
    /// the welcome.
    ///
    /// # Errors
    /// [`ConnectError`].
    pub fn connect(
        path: impl AsRef<Path>,
        export: &str,
        parameters: RingParameters,
    ) -> Result<Self, ConnectError> {
        let parameters = parameters
            .validate()
            .map_err(|_| ConnectError::Parameters)?;
        let stream = UnixStream::connect(path)?;
        let ring = MappedRegion::create("vrpc-ring", parameters.ring_bytes())?;
        let pool = MappedRegion::create("vrpc-pool", parameters.pool_bytes().max(4096))?;
        let requests = EventDoorbell::new()?;
        let responses = EventDoorbell::new()?;
        let files = [ring.file(), pool.file(), requests.file(), responses.file()];
        // The header must be in place before the server maps the ring, so
        // build the frontend (which writes it) before sending: keep the
        // files' duplicates for the hello.
        let owned: Vec<_> = files
            .iter()
            .map(|file| file.try_clone_to_owned())
            .collect::<io::Result<_>>()?;
        let frontend = Frontend::new(ring, pool, requests, parameters)
            .map_err(|_| ConnectError::Parameters)?;
        send_hello(
            &stream,
            parameters,
            export,
            [
                owned[0].as_fd(),
                owned[1].as_fd(),
                owned[2].as_fd(),
                owned[3].as_fd(),
            ],
        )?;
        drop(owned);
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let (status, table) = receive_welcome(&stream)?;
        stream.set_read_timeout(None)?;
        if status != Status::Accepted {
            return Err(ConnectError::Refused(status));
        }
        let metatab = match table {
            None => None,
            Some((file, bytes)) => {
                let region = MappedRegion::map_received(file, bytes, false)?;
                metatab::Reader::attach(&region).map_err(ConnectError::MetadataTable)?;
                Some(region)
            }
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                frontend,
                finished: HashMap::new(),
                waiters: HashMap::new(),
                disconnected: false,
                receiving: false,
            }),
            space: Condvar::new(),
            responses,
            stream,
        });
        Ok(Self { shared, metatab })
    }

    /// The export's metadata table, read-only, if the server shares one.
    pub fn metadata_table(&self) -> Option<metatab::Reader<&MappedRegion>> {
        self.metatab
            .as_ref()
            .and_then(|region| metatab::Reader::attach(region).ok())
    }

    /// Whether the connection is still usable: no call saw it fail, and
    /// the server has not hung up its end of the socket (checked without
    /// waiting; the server sends nothing on the socket after the welcome,
    /// so any readiness means it is gone).
    pub fn is_connected(&self) -> bool {
        let mut state = self.shared.lock();
        if state.disconnected {
            return false;
        }
        let mut descriptors = [nix::poll::PollFd::new(
            self.shared.stream.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut descriptors, nix::poll::PollTimeout::ZERO) {
            Ok(0) | Err(_) => true,
            Ok(_) => {
                state.disconnected = true;
                false
            }
        }
    }

    /// Makes one call and waits for its reply.
    ///
    /// `record` is the ONC RPC call record (what TCP would carry, without
    /// record marking); its xid is replaced by one unique on this connection
    /// and restored in the reply. `write_payload`, when not empty, is bulk
    /// data for the record's last field, a variable-length opaque that the
    /// record must carry empty (encode `WRITE3args` with empty `data`): it
    /// travels in data pages and the server sees the standard record.
    /// `read_capacity` is how many bytes of data pages the server may fill
    /// with the reply's bulk data (READ data, READDIR lists): at least the
    /// call's `count` plus a little, or 0 for small replies. Returns the full
    /// standard reply record.
    ///
    /// # Errors
    /// [`CallError`].
    pub fn call(
        &self,
        record: &[u8],
        write_payload: &[u8],
        read_capacity: usize,
    ) -> Result<Vec<u8>, CallError> {
        if record.len() < 4 {
            return Err(CallError::Submit(SubmitError::BadRecord));
        }
        let mut carried = record.to_vec();
        let payload = if write_payload.is_empty() {
            None
        } else {
            let offset = vrpc::splice::fill_trailing_opaque(&mut carried, write_payload.len())
                .ok_or(CallError::NoPayloadField)?;
            Some(Payload {
                offset,
                bytes: write_payload,
            })
        };
        let mut state = self.shared.lock();
        let xid = loop {
            if state.disconnected {
                return Err(CallError::Disconnected);
            }
            let xid = state.frontend.allocate_xid();
            carried[..4].copy_from_slice(&xid.to_be_bytes());
            match state.frontend.submit(&carried, payload, read_capacity) {
                Ok(xid) => break xid,
                Err(error) if error.is_transient() => {
                    state = Shared::wait(&self.shared.space, state);
                }
                Err(error) => return Err(CallError::Submit(error)),
            }
        };
        drop(carried);
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
                state = Shared::wait(&waiter, state);
                continue;
            }
            // Become the receiver: collect, and sleep on the doorbell only
            // when the final check says nothing is pending.
            if state.collect() {
                self.shared.space.notify_all();
                continue;
            }
            state.receiving = true;
            drop(state);
            let wake = self.shared.responses.wait(self.shared.stream.as_fd(), None);
            state = self.shared.lock();
            state.receiving = false;
            match wake {
                Ok(Wake::Rang | Wake::TimedOut) => {
                    if state.collect() {
                        self.shared.space.notify_all();
                    }
                }
                Ok(Wake::PeerGone) | Err(_) => {
                    state.disconnect();
                    self.shared.space.notify_all();
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
        let mut reply = result?;
        if reply.len() >= 4 {
            reply[..4].copy_from_slice(&record[..4]);
        }
        Ok(reply)
    }

    /// Disconnects: pending and later calls fail with
    /// [`CallError::Disconnected`]. Dropping the client does the same.
    pub fn close(&self) {
        // The receiver's poll sees the socket hang up and wakes everyone.
        let _ = self.shared.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}
