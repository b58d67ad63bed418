//! The guest's side: connect to a hosted storage domain and make calls.
//!
//! The calling machinery (many threads, one receiver sleeping on the
//! doorbell, replies matched by xid) is `vrpc::client::RingClient`, shared
//! with the Xen transport; this module adds the hosted handshake and the
//! [`HostedLink`]: the response eventfd to sleep on, and the connection's
//! unix socket, whose hang-up says the server is gone.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vrpc::client::{Link, RingClient, Wake};
use vrpc::{Frontend, RingParameters};

pub use vrpc::client::CallError;

use crate::doorbell::EventDoorbell;
use crate::handshake::{receive_welcome, send_hello, Status};
use crate::region::MappedRegion;

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server refused.
    #[error("the server refused the connection: {0}")]
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

/// The hosted [`Link`]: the response eventfd, and the unix socket the
/// server sends nothing more on after the welcome, so any readiness of it
/// means the server is gone.
#[derive(Debug)]
pub struct HostedLink {
    responses: EventDoorbell,
    stream: UnixStream,
}

impl Link for HostedLink {
    fn wait(&self, timeout: Option<Duration>) -> io::Result<Wake> {
        Ok(match self.responses.wait(self.stream.as_fd(), timeout)? {
            // No waker is given: `Woken` cannot come, and a ring is harmless.
            crate::doorbell::Wake::Rang | crate::doorbell::Wake::Woken => Wake::Rang,
            crate::doorbell::Wake::PeerGone => Wake::PeerGone,
            crate::doorbell::Wake::TimedOut => Wake::TimedOut,
        })
    }

    fn is_alive(&self) -> bool {
        let mut descriptors = [nix::poll::PollFd::new(
            self.stream.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(
            nix::poll::poll(&mut descriptors, nix::poll::PollTimeout::ZERO),
            Ok(0) | Err(_)
        )
    }

    fn close(&self) {
        // A receiver's poll sees the socket hang up and wakes.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

type HostedRingClient = RingClient<MappedRegion, MappedRegion, EventDoorbell, HostedLink>;

/// A connection to a hosted storage domain's export.
#[derive(Debug)]
pub struct Client {
    ring: HostedRingClient,
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
        let link = HostedLink { responses, stream };
        Ok(Self {
            ring: RingClient::new(frontend, link),
            metatab,
        })
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
        self.ring.is_connected()
    }

    /// Makes one call and waits for its reply: see
    /// `vrpc::client::RingClient::call`.
    ///
    /// # Errors
    /// [`CallError`].
    pub fn call(
        &self,
        record: &[u8],
        write_payload: &[u8],
        read_capacity: usize,
    ) -> Result<Vec<u8>, CallError> {
        self.ring.call(record, write_payload, read_capacity)
    }

    /// Disconnects: pending and later calls fail with
    /// [`CallError::Disconnected`]. Dropping the client does the same.
    pub fn close(&self) {
        self.ring.close();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}
