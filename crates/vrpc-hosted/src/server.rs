//! The storage domain's side: accept guests, map their rings, serve calls.
//!
//! Each accepted connection is independent: a guest that breaks the
//! protocol or dies costs only its own [`Connection`] (its methods return an
//! error; drop it), never the listener or other connections. Run each
//! connection on its own thread or poll loop.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vrpc::{Backend, ProtocolError, Request, ResponseStatus, RingParameters};

use crate::doorbell::{EventDoorbell, Wake, Waker};
use crate::handshake::{receive_hello, send_welcome, Status};
use crate::region::MappedRegion;

/// Why a connection ended or could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The guest closed its socket (or died).
    #[error("guest disconnected")]
    Closed,
    /// The guest broke the ring protocol.
    #[error("guest broke the ring protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The handshake failed; the guest was told why when it could be.
    #[error("handshake refused: {0:?}")]
    Refused(Status),
    /// A system call failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The credentials of the process that connected (`SO_PEERCRED`: the
/// kernel records them at `connect`, so the peer cannot forge them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Its process id (in the server's pid namespace).
    pub pid: i32,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
}

impl PeerCredentials {
    /// Reads the credentials of `stream`'s peer.
    ///
    /// # Errors
    /// The `getsockopt` failure.
    pub fn of(stream: &UnixStream) -> io::Result<Self> {
        let credentials =
            nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
                .map_err(io::Error::from)?;
        Ok(Self {
            pid: credentials.pid(),
            uid: credentials.uid(),
            gid: credentials.gid(),
        })
    }
}

/// Listens for guest drivers on a unix socket.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
}

impl Listener {
    /// Binds `path`, replacing a stale socket file left by an earlier
    /// server (never any other kind of file).
    ///
    /// # Errors
    /// The bind failure.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        if let Ok(metadata) = std::fs::symlink_metadata(path) {
            if metadata.file_type().is_socket() && UnixStream::connect(path).is_err() {
                std::fs::remove_file(path)?;
            }
        }
        Ok(Self {
            listener: UnixListener::bind(path)?,
        })
    }

    /// Waits for the next guest. The handshake is left to
    /// [`Incoming::handshake`] so that a slow guest never blocks `accept`.
    ///
    /// # Errors
    /// The accept failure.
    pub fn accept(&self) -> io::Result<Incoming> {
        let (stream, _) = self.listener.accept()?;
        // The handshake relies on blocking reads with a timeout, whatever
        // mode the listening socket is in.
        stream.set_nonblocking(false)?;
        Ok(Incoming { stream })
    }

    /// The listening socket (to poll it, or for `local_addr`).
    pub fn socket(&self) -> &UnixListener {
        &self.listener
    }
}

/// A guest connected, handshake not yet read.
#[derive(Debug)]
pub struct Incoming {
    stream: UnixStream,
}

impl Incoming {
    /// Reads the guest's hello, waiting at most `timeout` for it.
    ///
    /// # Errors
    /// [`ConnectionError`] when the hello is missing or malformed; the guest
    /// is told the reason where one applies.
    pub fn handshake(self, timeout: Duration) -> Result<PendingConnection, ConnectionError> {
        self.stream.set_read_timeout(Some(timeout))?;
        let peer = PeerCredentials::of(&self.stream)?;
        let hello = receive_hello(&self.stream)?;
        self.stream.set_read_timeout(None)?;
        let refuse = |status: Status| {
            let _ = send_welcome(&self.stream, status, None);
            Err(ConnectionError::Refused(status))
        };
        if !hello.version_ok {
            return refuse(Status::VersionMismatch);
        }
        let Ok(parameters) = hello.parameters.validate() else {
            return refuse(Status::BadParameters);
        };
        let Ok([ring, pool, request_file, response_file]) = <[_; 4]>::try_from(hello.files) else {
            return refuse(Status::BadRegions);
        };
        let mapped = (|| -> io::Result<_> {
            Ok((
                MappedRegion::map_received(ring, parameters.ring_bytes(), true)?,
                MappedRegion::map_received(pool, parameters.pool_bytes().max(4096), true)?,
                EventDoorbell::from_received(request_file)?,
                EventDoorbell::from_received(response_file)?,
            ))
        })();
        let Ok((ring, pool, requests, responses)) = mapped else {
            return refuse(Status::BadRegions);
        };
        Ok(PendingConnection {
            stream: self.stream,
            peer,
            export: hello.export,
            parameters,
            ring,
            pool,
            requests,
            responses,
        })
    }
}

/// A guest whose hello was read and whose regions are mapped, waiting for
/// the server to accept its export.
#[derive(Debug)]
pub struct PendingConnection {
    stream: UnixStream,
    peer: PeerCredentials,
    export: String,
    parameters: RingParameters,
    ring: MappedRegion,
    pool: MappedRegion,
    requests: EventDoorbell,
    responses: EventDoorbell,
}

impl PendingConnection {
    /// Who connected, as the kernel saw it at `connect` time.
    pub fn peer(&self) -> PeerCredentials {
        self.peer
    }

    /// The export path the guest asked for.
    pub fn export(&self) -> &str {
        &self.export
    }

    /// The ring parameters the guest chose.
    pub fn parameters(&self) -> RingParameters {
        self.parameters
    }

    /// Accepts: attaches the backend to the ring and sends the welcome with
    /// the export's metadata table (a region made by
    /// [`crate::create_metadata_table`]), if any. Request records are
    /// limited to `max_record` bytes once rebuilt.
    ///
    /// # Errors
    /// [`ConnectionError::Refused`] when the ring header disagrees with the
    /// hello; the socket failure.
    pub fn accept(
        self,
        metatab: Option<&MappedRegion>,
        max_record: usize,
    ) -> Result<Connection, ConnectionError> {
        let mut backend = match Backend::new(
            self.ring,
            Arc::new(self.pool),
            self.responses,
            self.parameters,
            max_record,
        ) {
            Ok(backend) => backend,
            Err(_) => {
                let _ = send_welcome(&self.stream, Status::BadRegions, None);
                return Err(ConnectionError::Refused(Status::BadRegions));
            }
        };
        // A process's heap: two records kept per guest cost less than a
        // fresh 1 MiB allocation per WRITE.
        backend.keep_spare_records(2);
        send_welcome(
            &self.stream,
            Status::Accepted,
            metatab.map(|table| (table.file(), vrpc::SharedMemory::size(table))),
        )?;
        Ok(Connection {
            backend,
            requests: self.requests,
            stream: self.stream,
            export: self.export,
            waker: None,
            spin: vrpc::client::SpinPolicy::default(),
        })
    }

    /// Refuses the export (no such export, or not for this guest).
    ///
    /// # Errors
    /// The socket failure.
    pub fn refuse(self) -> io::Result<()> {
        send_welcome(&self.stream, Status::ExportRefused, None)
    }

    /// Refuses this peer: the export exists, but does not admit its
    /// credentials ([`PendingConnection::peer`]).
    ///
    /// # Errors
    /// The socket failure.
    pub fn refuse_peer(self) -> io::Result<()> {
        send_welcome(&self.stream, Status::NotAdmitted, None)
    }
}

type HostedBackend = Backend<MappedRegion, Arc<MappedRegion>, EventDoorbell>;

/// A request's reply pages in the guest's pool ([`Connection::reply_pages`]).
pub type HostedReplyPages = vrpc::ReplyPages<Arc<MappedRegion>>;

/// One guest's connection: the backend of its ring.
#[derive(Debug)]
pub struct Connection {
    backend: HostedBackend,
    requests: EventDoorbell,
    stream: UnixStream,
    export: String,
    /// Made on the first [`Connection::waker`].
    waker: Option<Waker>,
    /// Whether a wait for the next request polls before sleeping.
    spin: vrpc::client::SpinPolicy,
}

impl Connection {
    /// A [`Waker`] that makes a [`Connection::next_request`] waiting on
    /// another thread return `Ok(None)` at once: for a server that answers
    /// some requests later (after a commit) and must look at them while it
    /// waits for the guest's next request.
    ///
    /// # Errors
    /// The `eventfd` failure.
    pub fn waker(&mut self) -> io::Result<Waker> {
        if let Some(waker) = &self.waker {
            return Ok(waker.clone());
        }
        let waker = Waker::new()?;
        self.waker = Some(waker.clone());
        Ok(waker)
    }

    /// The export this guest mounted.
    pub fn export(&self) -> &str {
        &self.export
    }

    /// The next request, waiting for one at most `timeout` (`None`: until
    /// one comes or the guest goes). `Ok(None)` means the timeout passed,
    /// or a [`Connection::waker`] woke it.
    ///
    /// # Errors
    /// [`ConnectionError::Closed`] when the guest went away;
    /// [`ConnectionError::Protocol`] when it broke the protocol. Either way
    /// drop the connection.
    pub fn next_request(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<Request>, ConnectionError> {
        loop {
            if let Some(request) = self.backend.next_request()? {
                return Ok(Some(request));
            }
            // A guest's next call usually follows its last reply closely:
            // poll for a moment before arming the doorbell, so that neither
            // side pays a system call for it.
            let started = std::time::Instant::now();
            let spin_until = started + self.spin.budget();
            while std::time::Instant::now() < spin_until {
                std::thread::yield_now();
                if let Some(request) = self.backend.next_request()? {
                    self.spin.ended(started);
                    return Ok(Some(request));
                }
            }
            if self.backend.enable_notifications()? {
                continue;
            }
            let wake =
                self.requests
                    .wait_or_woken(self.stream.as_fd(), self.waker.as_ref(), timeout)?;
            self.spin.ended(started);
            match wake {
                Wake::Rang => {}
                Wake::PeerGone => return Err(ConnectionError::Closed),
                Wake::TimedOut | Wake::Woken => return Ok(None),
            }
        }
    }

    /// A request if one is published now, without waiting.
    ///
    /// # Errors
    /// As [`Connection::next_request`].
    pub fn try_next_request(&mut self) -> Result<Option<Request>, ConnectionError> {
        Ok(self.backend.next_request()?)
    }

    /// Answers `request` with `reply`, whose bulk data is the range
    /// `segment` of it (see [`vrpc::Backend::respond`]).
    ///
    /// # Errors
    /// As [`Connection::next_request`].
    pub fn respond(
        &mut self,
        request: Request,
        reply: &[u8],
        segment: Option<std::ops::Range<usize>>,
    ) -> Result<ResponseStatus, ConnectionError> {
        Ok(self.backend.respond(request, reply, segment)?)
    }

    /// The reply pages `request` offered, for a server that writes a
    /// reply's bulk data there itself (on any thread) and then answers
    /// with [`Connection::respond_placed`] (see
    /// [`vrpc::Backend::reply_pages`]).
    pub fn reply_pages(&self, request: &Request) -> HostedReplyPages {
        self.backend.reply_pages(request)
    }

    /// Answers `request` with `reply` and the `placed` bytes of bulk data
    /// already written through [`Connection::reply_pages`], which belong
    /// at offset `at` of it (see [`vrpc::Backend::respond_placed`]).
    ///
    /// # Errors
    /// As [`Connection::next_request`].
    pub fn respond_placed(
        &mut self,
        request: Request,
        reply: &[u8],
        at: usize,
        placed: usize,
    ) -> Result<ResponseStatus, ConnectionError> {
        Ok(self.backend.respond_placed(request, reply, at, placed)?)
    }

    /// Frees `request`'s record for a later request's, once it has been
    /// read (see [`vrpc::Backend::recycle_record`]).
    pub fn recycle_record(&mut self, request: &mut Request) {
        self.backend.recycle_record(request);
    }

    /// Answers `request` with no reply (the server dropped the call).
    ///
    /// # Errors
    /// As [`Connection::next_request`].
    pub fn respond_no_reply(&mut self, request: Request) -> Result<(), ConnectionError> {
        Ok(self.backend.respond_no_reply(request)?)
    }

    /// Serves calls one at a time until the guest disconnects: `handler`
    /// gets each full call record and returns the reply record, or `None`
    /// to drop the call. Returns `Ok(())` when the guest closed cleanly.
    ///
    /// # Errors
    /// [`ConnectionError::Protocol`] or [`ConnectionError::Io`]: the
    /// connection is dead.
    pub fn serve(
        mut self,
        mut handler: impl FnMut(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<(), ConnectionError> {
        loop {
            let request = match self.next_request(None) {
                Ok(Some(request)) => request,
                Ok(None) => continue,
                Err(ConnectionError::Closed) => return Ok(()),
                Err(error) => return Err(error),
            };
            match handler(request.record()) {
                Some(reply) => {
                    self.respond(request, &reply, None)?;
                }
                None => self.respond_no_reply(request)?,
            }
        }
    }
}
