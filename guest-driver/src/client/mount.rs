//! MOUNT v3 (RFC 1813 appendix I) and PORTMAP v2 GETPORT (RFC 1833
//! section 3): how the driver obtains an export's root handle.
//!
//! Design: our server answers MOUNT on the NFS port, so with an explicit
//! port no port mapper is involved. For a server that serves MOUNT
//! elsewhere, [`mount_port`] asks PORTMAP on port 111 of the same host.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use nfs3::mount::{self, DirectoryPath, Mount3, MountError, MountResult};
use nfs3::portmap::{self, Mapping, Portmap2};
use nfs3::FileHandle;
use xdr::OpaqueAuth;

use super::{call_program, Caller, ClientError, TcpTransport, Transport, XidSource};

/// Why a mount could not be made or undone.
#[derive(Debug)]
pub enum MountFailure {
    /// The RPC failed.
    Rpc(ClientError),
    /// The server refused the export.
    Refused(MountError),
    /// The port mapper does not know the MOUNT program.
    NotRegistered,
    /// The server does not accept AUTH_SYS for this export.
    NoAuthSys(Vec<u32>),
    /// Connecting failed.
    Connect(std::io::Error),
}

impl fmt::Display for MountFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountFailure::Rpc(error) => write!(formatter, "MOUNT call failed: {error}"),
            MountFailure::Refused(error) => write!(formatter, "the server refused: {error}"),
            MountFailure::NotRegistered => {
                formatter.write_str("the port mapper has no MOUNT v3 over TCP")
            }
            MountFailure::NoAuthSys(flavors) => write!(
                formatter,
                "the export does not accept AUTH_SYS (flavors {flavors:?})"
            ),
            MountFailure::Connect(error) => write!(formatter, "connect failed: {error}"),
        }
    }
}

impl std::error::Error for MountFailure {}

fn credential(caller: &Caller) -> OpaqueAuth {
    caller.credential(b"guest-driver", XidSource::new().next())
}

/// MNT: the root handle of `export`.
///
/// # Errors
/// [`MountFailure`].
pub fn mount(transport: &dyn Transport, export: &[u8]) -> Result<FileHandle, MountFailure> {
    let xids = XidSource::new();
    let arguments = mount::Arguments::Mount(DirectoryPath {
        path: export.to_vec(),
    });
    let results = call_program::<Mount3>(
        transport,
        xids.next(),
        credential(&Caller::root()),
        &arguments,
    )
    .map_err(MountFailure::Rpc)?;
    match results {
        mount::Results::Mount(MountResult::Ok(ok)) => {
            // An empty list means the server did not say; AUTH_SYS (1) or
            // AUTH_NONE (0) work with our credentials.
            if ok.auth_flavors.is_empty()
                || ok.auth_flavors.iter().any(|flavor| matches!(flavor, 0 | 1))
            {
                Ok(ok.handle)
            } else {
                Err(MountFailure::NoAuthSys(ok.auth_flavors))
            }
        }
        mount::Results::Mount(MountResult::Failed(error)) => Err(MountFailure::Refused(error)),
        _ => Err(MountFailure::Rpc(ClientError::WrongResults)),
    }
}

/// UMNT: tells the server this client no longer uses `export`.
///
/// # Errors
/// [`MountFailure`].
pub fn unmount(transport: &dyn Transport, export: &[u8]) -> Result<(), MountFailure> {
    let xids = XidSource::new();
    let arguments = mount::Arguments::Unmount(DirectoryPath {
        path: export.to_vec(),
    });
    call_program::<Mount3>(
        transport,
        xids.next(),
        credential(&Caller::root()),
        &arguments,
    )
    .map_err(MountFailure::Rpc)
    .map(|_| ())
}

/// Asks the port mapper on `host` port 111 for the MOUNT v3 TCP port.
///
/// # Errors
/// [`MountFailure`].
pub fn mount_port(host: &str) -> Result<u16, MountFailure> {
    let address = (host, portmap::PORT)
        .to_socket_addrs()
        .map_err(MountFailure::Connect)?
        .next()
        .ok_or_else(|| {
            MountFailure::Connect(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{host} has no address"),
            ))
        })?;
    let transport = TcpTransport::connect(address).map_err(MountFailure::Connect)?;
    let arguments = portmap::Arguments::GetPort(Mapping {
        program: mount::PROGRAM,
        version: mount::VERSION,
        protocol: portmap::PROTOCOL_TCP,
        port: 0,
    });
    let results = call_program::<Portmap2>(
        &transport,
        XidSource::new().next(),
        OpaqueAuth::none(),
        &arguments,
    )
    .map_err(MountFailure::Rpc)?;
    match results {
        portmap::Results::GetPort(0) => Err(MountFailure::NotRegistered),
        portmap::Results::GetPort(port) => {
            u16::try_from(port).map_err(|_| MountFailure::NotRegistered)
        }
        _ => Err(MountFailure::Rpc(ClientError::WrongResults)),
    }
}

/// Splits `HOST:PORT` (or `[V6]:PORT`) into the host part and the socket
/// address.
///
/// # Errors
/// When the address does not resolve.
pub fn resolve(host_and_port: &str) -> std::io::Result<(String, SocketAddr)> {
    let address = host_and_port
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let host = match host_and_port.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => host_and_port,
    };
    Ok((host.to_string(), address))
}
