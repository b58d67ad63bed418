//! A xenstore client over `/dev/xen/xenbus` or xenstored's unix socket.
//!
//! Synchronous: one request at a time (an internal mutex), the reply matched
//! by request id; watch events that arrive before a reply are queued for
//! [`Xenstore::next_watch_event`]. Both transports carry the same framing
//! (`io/xs_wire.h`): the kernel's xenbus device forwards requests to
//! xenstored and keeps the caller's request ids; the socket is xenstored
//! itself. Framing and payload parsing are `xen_abi::xenstore_wire`, shared
//! with the storage domain's ring client.
//!
//! Relative paths are relative to the caller's `/local/domain/<id>` (for
//! the socket, dom0's).

mod error;
#[cfg(any(test, feature = "test-utils"))]
pub mod fake;
#[cfg(test)]
mod tests;
mod transaction;

pub use error::{ProtocolError, XenstoreErrno, XenstoreError};
pub use transaction::Transaction;
pub use xen_abi::xenstore_wire::{Access, Permission};

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use xen_abi::xenstore_wire::{
    encode_permissions, encode_request, nul_terminated, parse_permissions, parse_transaction_id,
    parse_watch_event, split_directory, trim_nul, Message, Reassembler,
};
use xen_abi::xs_wire::MessageType;

/// The kernel's xenstore device.
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";
/// xenstored's socket in dom0.
pub const XENSTORED_SOCKET: &str = "/run/xenstored/socket";

/// How long a waiter for watch events sleeps before looking at the queue
/// again: another thread's request may have taken an event off the
/// connection meanwhile.
const WATCH_POLL_SLICE: Duration = Duration::from_millis(100);

/// Commit attempts of [`Xenstore::transaction`] before `EAGAIN` is returned.
const TRANSACTION_ATTEMPTS: usize = 64;

/// Watch events kept for [`Xenstore::next_watch_event`]; older ones are
/// dropped past this (a watch event only says "look again").
const MAX_QUEUED_EVENTS: usize = 1024;

/// Transaction id 0: outside any transaction.
const NO_TRANSACTION: u32 = 0;

/// A fired watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The path that changed (or the watched path, for the event every new
    /// watch fires once).
    pub path: String,
    /// The token given to [`Xenstore::watch`].
    pub token: String,
}

/// A connection to xenstore, shareable between threads.
#[derive(Debug)]
pub struct Xenstore {
    connection: File,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    next_request_id: u32,
    reassembler: Reassembler,
    events: VecDeque<WatchEvent>,
}

type Result<T> = std::result::Result<T, XenstoreError>;

impl Xenstore {
    /// Connects through `/dev/xen/xenbus`, or xenstored's socket when the
    /// device is missing.
    ///
    /// # Errors
    /// [`XenstoreError::Unreachable`] with both failures.
    pub fn open() -> Result<Xenstore> {
        match Self::open_path(XENBUS_DEVICE) {
            Ok(store) => Ok(store),
            Err(device_error) => match Self::open_path(XENSTORED_SOCKET) {
                Ok(store) => Ok(store),
                Err(socket_error) => Err(XenstoreError::Unreachable {
                    device: XENBUS_DEVICE,
                    device_error,
                    socket: XENSTORED_SOCKET,
                    socket_error,
                }),
            },
        }
    }

    /// Connects to `path`: a unix socket (xenstored) or a device file.
    ///
    /// # Errors
    /// The connect or open failure.
    pub fn open_path(path: &str) -> std::io::Result<Xenstore> {
        let metadata = std::fs::metadata(path)?;
        let descriptor: OwnedFd = if metadata.file_type().is_socket() {
            UnixStream::connect(path)?.into()
        } else {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)?
                .into()
        };
        Ok(Self::from_connection(descriptor))
    }

    /// Uses an open connection that speaks the xenstore wire protocol: a
    /// socket to xenstored, the xenbus device, or a test's fake daemon.
    pub fn from_connection(connection: OwnedFd) -> Xenstore {
        Xenstore {
            connection: File::from(connection),
            state: Mutex::new(State {
                next_request_id: 1,
                reassembler: Reassembler::new(),
                events: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in another thread mid-request leaves at worst a reply in
        // the reassembler, which the id check then reports.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until the connection is readable or `timeout` passes
    /// (`None`: forever); whether it is readable.
    fn wait_readable(&self, timeout: Option<Duration>) -> Result<bool> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            Some(timeout) => PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX),
        };
        let mut descriptors = [PollFd::new(self.connection.as_fd(), PollFlags::POLLIN)];
        match poll(&mut descriptors, timeout) {
            Ok(count) => Ok(count > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(error) => Err(XenstoreError::Io(error.into())),
        }
    }

    /// Reads what is available into the reassembler. Call only after
    /// [`Xenstore::wait_readable`] said so, with the lock held, so that the
    /// read does not block.
    fn receive(&self, state: &mut State) -> Result<()> {
        let mut buffer = [0u8; 4096 + 16];
        let length = loop {
            match (&self.connection).read(&mut buffer) {
                Ok(length) => break length,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.into()),
            }
        };
        if length == 0 {
            return Err(XenstoreError::Closed);
        }
        state.reassembler.push(&buffer[..length]);
        Ok(())
    }

    /// The next whole message; watch events are queued, not returned.
    fn next_reply(state: &mut State) -> Result<Option<Message>> {
        loop {
            let message = state
                .reassembler
                .next_message()
                .map_err(|error| XenstoreError::Protocol(ProtocolError::Wire(error)))?;
            let Some(message) = message else {
                return Ok(None);
            };
            if message.message_type() != MessageType::WatchEvent {
                return Ok(Some(message));
            }
            let (path, token) = parse_watch_event(&message.payload)
                .ok_or(XenstoreError::Protocol(ProtocolError::MalformedWatchEvent))?;
            if state.events.len() >= MAX_QUEUED_EVENTS {
                state.events.pop_front();
            }
            state.events.push_back(WatchEvent { path, token });
        }
    }

    /// Sends one request and returns its reply's payload.
    fn request(
        &self,
        message_type: MessageType,
        operation: &'static str,
        path: &str,
        transaction: u32,
        parts: &[&[u8]],
    ) -> Result<Vec<u8>> {
        let mut state = self.lock();
        let request_id = state.next_request_id;
        state.next_request_id = state.next_request_id.wrapping_add(1);
        let bytes =
            encode_request(message_type, request_id, transaction, parts).map_err(|source| {
                XenstoreError::RequestTooLong {
                    operation,
                    path: path.to_owned(),
                    source,
                }
            })?;
        // One write per message: the xenbus device and xenstored both
        // accept a message split over writes, but one is simplest.
        (&self.connection).write_all(&bytes)?;
        loop {
            if let Some(message) = Self::next_reply(&mut state)? {
                let received = message.header.request_id;
                if received != request_id {
                    return Err(XenstoreError::Protocol(
                        ProtocolError::UnexpectedRequestId {
                            expected: request_id,
                            received,
                        },
                    ));
                }
                match message.message_type() {
                    MessageType::Error => {
                        let name = String::from_utf8_lossy(trim_nul(&message.payload));
                        return Err(XenstoreError::Daemon {
                            operation,
                            path: path.to_owned(),
                            errno: XenstoreErrno::from_name(&name),
                        });
                    }
                    received if received == message_type => return Ok(message.payload),
                    received => {
                        return Err(XenstoreError::Protocol(ProtocolError::UnexpectedType {
                            expected: message_type.number(),
                            received: received.number(),
                        }))
                    }
                }
            }
            self.wait_readable(None)?;
            self.receive(&mut state)?;
        }
    }

    fn read_in(&self, transaction: u32, path: &str) -> Result<Option<Vec<u8>>> {
        match self.request(
            MessageType::Read,
            "read",
            path,
            transaction,
            &[&nul_terminated(path)],
        ) {
            Ok(payload) => Ok(Some(payload)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn read_string_in(&self, transaction: u32, path: &str) -> Result<Option<String>> {
        match self.read_in(transaction, path)? {
            None => Ok(None),
            Some(value) => String::from_utf8(value)
                .map(Some)
                .map_err(|_| XenstoreError::Protocol(ProtocolError::NotUtf8)),
        }
    }

    fn write_in(&self, transaction: u32, path: &str, value: &[u8]) -> Result<()> {
        self.request(
            MessageType::Write,
            "write",
            path,
            transaction,
            &[&nul_terminated(path), value],
        )?;
        Ok(())
    }

    fn simple_in(
        &self,
        message_type: MessageType,
        operation: &'static str,
        transaction: u32,
        path: &str,
    ) -> Result<Vec<u8>> {
        self.request(
            message_type,
            operation,
            path,
            transaction,
            &[&nul_terminated(path)],
        )
    }

    fn get_permissions_in(&self, transaction: u32, path: &str) -> Result<Vec<Permission>> {
        let payload = self.simple_in(
            MessageType::GetPermissions,
            "get-permissions",
            transaction,
            path,
        )?;
        parse_permissions(&payload)
            .ok_or(XenstoreError::Protocol(ProtocolError::MalformedPermissions))
    }

    fn set_permissions_in(
        &self,
        transaction: u32,
        path: &str,
        permissions: &[Permission],
    ) -> Result<()> {
        self.request(
            MessageType::SetPermissions,
            "set-permissions",
            path,
            transaction,
            &[&nul_terminated(path), &encode_permissions(permissions)],
        )?;
        Ok(())
    }

    /// `XS_READ`: the value at `path`, `None` when there is no such node.
    ///
    /// # Errors
    /// [`XenstoreError`] other than `ENOENT`.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.read_in(NO_TRANSACTION, path)
    }

    /// [`Xenstore::read`] of a text value.
    ///
    /// # Errors
    /// As `read`; a value that is not UTF-8 is [`ProtocolError::NotUtf8`].
    pub fn read_string(&self, path: &str) -> Result<Option<String>> {
        self.read_string_in(NO_TRANSACTION, path)
    }

    /// `XS_WRITE`: sets `path` to `value`, creating it (and missing parents,
    /// which inherit their parent's permissions) when needed.
    ///
    /// # Errors
    /// [`XenstoreError`].
    pub fn write(&self, path: &str, value: &[u8]) -> Result<()> {
        self.write_in(NO_TRANSACTION, path, value)
    }

    /// `XS_MKDIR`: creates `path` with an empty value; nothing when it
    /// exists.
    ///
    /// # Errors
    /// [`XenstoreError`].
    pub fn mkdir(&self, path: &str) -> Result<()> {
        self.simple_in(MessageType::MakeDirectory, "mkdir", NO_TRANSACTION, path)?;
        Ok(())
    }

    /// `XS_RM`: removes `path` and everything below it.
    ///
    /// # Errors
    /// [`XenstoreError`] (xenstored answers `ENOENT` only when the parent
    /// is missing too).
    pub fn remove(&self, path: &str) -> Result<()> {
        self.simple_in(MessageType::Remove, "remove", NO_TRANSACTION, path)?;
        Ok(())
    }

    /// `XS_DIRECTORY`: the names of `path`'s children.
    ///
    /// # Errors
    /// [`XenstoreError`] (`ENOENT` when `path` does not exist).
    pub fn directory(&self, path: &str) -> Result<Vec<String>> {
        let payload = self.simple_in(MessageType::Directory, "directory", NO_TRANSACTION, path)?;
        Ok(split_directory(&payload))
    }

    /// `XS_GET_PERMS`: owner first (with everyone else's access), then the
    /// domains granted more.
    ///
    /// # Errors
    /// [`XenstoreError`].
    pub fn get_permissions(&self, path: &str) -> Result<Vec<Permission>> {
        self.get_permissions_in(NO_TRANSACTION, path)
    }

    /// `XS_SET_PERMS`: replaces `path`'s permissions; the first entry names
    /// the owner and everyone else's access.
    ///
    /// # Errors
    /// [`XenstoreError`].
    pub fn set_permissions(&self, path: &str, permissions: &[Permission]) -> Result<()> {
        self.set_permissions_in(NO_TRANSACTION, path, permissions)
    }

    /// `XS_TRANSACTION_START`: the operations of the returned handle see a
    /// private snapshot until [`Transaction::commit`].
    ///
    /// # Errors
    /// [`XenstoreError`].
    pub fn transaction_start(&self) -> Result<Transaction<'_>> {
        let payload = self.request(
            MessageType::TransactionStart,
            "transaction-start",
            "",
            NO_TRANSACTION,
            &[b"\0"],
        )?;
        let id = parse_transaction_id(&payload)
            .filter(|&id| id != NO_TRANSACTION)
            .ok_or(XenstoreError::Protocol(
                ProtocolError::MalformedTransactionId,
            ))?;
        Ok(Transaction::new(self, id))
    }

    fn transaction_end(&self, transaction: u32, commit: bool) -> Result<bool> {
        let argument: &[u8] = if commit { b"T\0" } else { b"F\0" };
        match self.request(
            MessageType::TransactionEnd,
            "transaction-end",
            "",
            transaction,
            &[argument],
        ) {
            Ok(_) => Ok(true),
            Err(error) if error.is_try_again() => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Runs `body` in a transaction and commits it, running it again from
    /// the start while the commit answers `EAGAIN` (up to 64 times). An
    /// error from `body` abandons the transaction and is returned.
    ///
    /// # Errors
    /// `body`'s error, or the start or commit failure.
    pub fn transaction<T, E: From<XenstoreError>>(
        &self,
        mut body: impl FnMut(&Transaction<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        for _ in 0..TRANSACTION_ATTEMPTS {
            let transaction = self.transaction_start()?;
            // On error the handle's drop abandons the transaction.
            let value = body(&transaction)?;
            if transaction.commit()? {
                return Ok(value);
            }
        }
        Err(XenstoreError::Daemon {
            operation: "transaction-end",
            path: String::new(),
            errno: XenstoreErrno::TryAgain,
        }
        .into())
    }

    /// Writes every `(path, value)` in one transaction (run again on
    /// `EAGAIN`): a device's keys appear to its peer all at once.
    ///
    /// # Errors
    /// [`XenstoreError`].
    pub fn write_all_in_transaction(&self, writes: &[(String, Vec<u8>)]) -> Result<()> {
        self.transaction(|transaction| {
            for (path, value) in writes {
                transaction.write(path, value)?;
            }
            Ok(())
        })
    }

    /// `XS_WATCH`: events for `path` and everything below it, tagged with
    /// `token`. xenstored fires one event right away.
    ///
    /// # Errors
    /// [`XenstoreError`].
    pub fn watch(&self, path: &str, token: &str) -> Result<()> {
        self.request(
            MessageType::Watch,
            "watch",
            path,
            NO_TRANSACTION,
            &[&nul_terminated(path), &nul_terminated(token)],
        )?;
        Ok(())
    }

    /// `XS_UNWATCH`; queued events of that token are dropped.
    ///
    /// # Errors
    /// [`XenstoreError`].
    pub fn unwatch(&self, path: &str, token: &str) -> Result<()> {
        self.request(
            MessageType::Unwatch,
            "unwatch",
            path,
            NO_TRANSACTION,
            &[&nul_terminated(path), &nul_terminated(token)],
        )?;
        self.lock().events.retain(|event| event.token != token);
        Ok(())
    }

    /// The next watch event with `token` (any token when `None`), waiting up
    /// to `timeout` (`None`: forever); events of other tokens stay queued.
    /// `Ok(None)` when the time passed.
    ///
    /// The lock is not held while waiting, so other threads' requests go
    /// on; an event one of them takes off the connection is seen here
    /// within 100 ms.
    ///
    /// # Errors
    /// [`XenstoreError`] when the connection breaks.
    pub fn next_watch_event(
        &self,
        token: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Option<WatchEvent>> {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        loop {
            {
                let mut state = self.lock();
                loop {
                    if let Some(message) = Self::next_reply(&mut state)? {
                        // Requests hold the lock until their reply, so a
                        // reply now answers nobody.
                        return Err(XenstoreError::Protocol(ProtocolError::UnsolicitedReply(
                            message.header.request_id,
                        )));
                    }
                    let wanted = state
                        .events
                        .iter()
                        .position(|event| token.is_none_or(|token| event.token == token));
                    if let Some(index) = wanted {
                        return Ok(state.events.remove(index));
                    }
                    if !self.wait_readable(Some(Duration::ZERO))? {
                        break;
                    }
                    self.receive(&mut state)?;
                }
            }
            let slice = match deadline {
                None => WATCH_POLL_SLICE,
                Some(deadline) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Ok(None);
                    }
                    remaining.min(WATCH_POLL_SLICE)
                }
            };
            self.wait_readable(Some(slice))?;
        }
    }

    /// `XS_GET_DOMAIN_PATH`: `/local/domain/<domain>`.
    ///
    /// # Errors
    /// [`XenstoreError`].
    pub fn domain_path(&self, domain: u16) -> Result<String> {
        let text = domain.to_string();
        let payload = self.request(
            MessageType::GetDomainPath,
            "get-domain-path",
            &text,
            NO_TRANSACTION,
            &[&nul_terminated(&text)],
        )?;
        String::from_utf8(trim_nul(&payload).to_vec())
            .map_err(|_| XenstoreError::Protocol(ProtocolError::NotUtf8))
    }

    /// The caller's domain id (its `domid` key).
    ///
    /// # Errors
    /// [`XenstoreError`]; `ENOENT` when the toolstack wrote no `domid`.
    pub fn domain_id(&self) -> Result<u16> {
        let Some(text) = self.read_string("domid")? else {
            return Err(XenstoreError::Daemon {
                operation: "read",
                path: "domid".to_owned(),
                errno: XenstoreErrno::NotFound,
            });
        };
        text.trim()
            .parse()
            .map_err(|_| XenstoreError::Protocol(ProtocolError::MalformedDomain(text)))
    }

    /// The id of the running domain called `name` (its
    /// `/local/domain/<id>/name`), scanning `/local/domain`.
    ///
    /// # Errors
    /// [`XenstoreError`] (`EACCES` for a guest that may not list domains).
    pub fn domain_id_by_name(&self, name: &str) -> Result<Option<u16>> {
        for entry in self.directory("/local/domain")? {
            let Ok(domain) = entry.parse::<u16>() else {
                continue;
            };
            let path = format!("/local/domain/{domain}/name");
            match self.read_string(&path) {
                Ok(Some(found)) if found == name => return Ok(Some(domain)),
                Ok(_) => {}
                // A domain that vanished or hides its name is not it.
                Err(error)
                    if matches!(
                        error.errno(),
                        Some(XenstoreErrno::NotFound | XenstoreErrno::PermissionDenied)
                    ) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }
}
