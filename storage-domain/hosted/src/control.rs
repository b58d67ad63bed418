//! `snapshot create|list|delete` against a running server: its control
//! socket.
//!
//! Design: a sibling of the stats socket (`status.rs`): the Linux abstract
//! unix socket `storage-domain-control:<canonical image path>`, so the
//! command finds the server of an image by the image's path, nothing is
//! added to the file system, and nothing is left behind when the server
//! dies. Abstract sockets can be reached by any user of the network
//! namespace, so every request is checked against the peer's credentials
//! (`SO_PEERCRED`): only root and the server's own user may change
//! snapshots (listing is open to all, as `stats` is).
//!
//! One connection carries one request and its reply. A request is the
//! operation (`create`, `delete` or `list`), a NUL byte and the snapshot's
//! name (names may hold any byte but `/` and NUL); the client then shuts
//! its writing half. The reply is `ok` or `error` on the first line, then
//! the text to print.

use crate::serve::{lock, HostedServer};
use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use vfs::FsError;

/// Longest request: an operation, a NUL and a 255-byte name, with room.
const MAX_REQUEST: u64 = 512;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Take a snapshot.
    Create(Vec<u8>),
    /// Delete a snapshot.
    Delete(Vec<u8>),
    /// List the snapshots.
    List,
}

impl Request {
    fn encode(&self) -> Vec<u8> {
        let (operation, name): (&[u8], &[u8]) = match self {
            Request::Create(name) => (b"create", name),
            Request::Delete(name) => (b"delete", name),
            Request::List => (b"list", b""),
        };
        let mut bytes = operation.to_vec();
        bytes.push(0);
        bytes.extend_from_slice(name);
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Request> {
        let split = bytes.iter().position(|&byte| byte == 0)?;
        let (operation, name) = (&bytes[..split], bytes[split + 1..].to_vec());
        match operation {
            b"create" => Some(Request::Create(name)),
            b"delete" => Some(Request::Delete(name)),
            b"list" if name.is_empty() => Some(Request::List),
            _ => None,
        }
    }

    /// Whether the request changes the file system.
    fn changes(&self) -> bool {
        match self {
            Request::Create(_) | Request::Delete(_) => true,
            Request::List => false,
        }
    }
}

/// A snapshot error as the administrator should read it.
pub fn explain(name: &[u8], error: &FsError) -> String {
    let name = String::from_utf8_lossy(name);
    match error {
        FsError::Exists => format!("a snapshot named {name:?} exists already"),
        FsError::NotFound => format!("no snapshot named {name:?}"),
        FsError::InvalidName => format!(
            "bad snapshot name {name:?}: a name has 1 to 255 bytes, no '/' or NUL, and is not '.' or '..'"
        ),
        FsError::NameTooLong => {
            format!("bad snapshot name {name:?}: longer than 255 bytes")
        }
        FsError::NoSpace => format!(
            "snapshot {name:?}: no space left on the file system (or {} snapshots exist already)",
            sdfs::MAX_SNAPSHOTS
        ),
        FsError::NotSupported => "this file system has no snapshots".into(),
        other => format!("snapshot {name:?}: {other}"),
    }
}

/// The text `snapshot list` prints for `volume`'s snapshots.
pub fn listing<D: sdfs::BlockDevice>(volume: &sdfs::Volume<D>) -> String {
    let mut text = String::new();
    for snapshot in volume.snapshots() {
        text.push_str(&format!(
            "{}\tcommit {}\ttaken {}\t{} inodes\n",
            String::from_utf8_lossy(&snapshot.name),
            snapshot.sequence,
            snapshot.created.seconds,
            snapshot.inodes
        ));
    }
    text
}

/// Run `request` on `server`: the reply's first line and the text.
fn run(server: &Mutex<HostedServer>, request: &Request) -> (bool, String) {
    let mut server = lock(server);
    match request {
        Request::Create(name) => match server.create_snapshot(name) {
            Ok(taken) => {
                let inodes = server
                    .filesystem()
                    .snapshots()
                    .iter()
                    .find(|snapshot| snapshot.sequence == taken.id)
                    .map_or(0, |snapshot| snapshot.inodes);
                (
                    true,
                    format!(
                        "snapshot {:?} of commit {} ({inodes} inodes)\n",
                        String::from_utf8_lossy(name),
                        taken.id
                    ),
                )
            }
            Err(error) => (false, explain(name, &error)),
        },
        Request::Delete(name) => match server.delete_snapshot(name) {
            Ok(()) => (
                true,
                format!("deleted snapshot {:?}\n", String::from_utf8_lossy(name)),
            ),
            Err(error) => (false, explain(name, &error)),
        },
        Request::List => (true, listing(server.filesystem())),
    }
}

fn socket_address(image: &Path) -> io::Result<SocketAddr> {
    let mut name = b"storage-domain-control:".to_vec();
    name.extend_from_slice(image.as_os_str().as_encoded_bytes());
    SocketAddr::from_abstract_name(name)
}

fn answer(stream: &mut UnixStream, server: &Mutex<HostedServer>) -> io::Result<()> {
    let mut bytes = Vec::new();
    stream.take(MAX_REQUEST).read_to_end(&mut bytes)?;
    let (ok, text) = match Request::decode(&bytes) {
        None => (false, "not a control request".to_owned()),
        Some(request) => {
            let peer = vrpc_hosted::server::PeerCredentials::of(stream)?;
            let own = nix::unistd::geteuid().as_raw();
            if request.changes() && peer.uid != 0 && peer.uid != own {
                log::warn!(
                    "control: user {} (pid {}) may not change snapshots",
                    peer.uid,
                    peer.pid
                );
                (
                    false,
                    format!(
                        "user {} may not change snapshots (only root and user {own})",
                        peer.uid
                    ),
                )
            } else {
                let (ok, text) = run(server, &request);
                if ok && request.changes() {
                    log::info!("{}", text.trim_end());
                }
                (ok, text)
            }
        }
    };
    let status: &[u8] = if ok { b"ok\n" } else { b"error\n" };
    stream.write_all(status)?;
    stream.write_all(text.as_bytes())
}

/// Serve control requests for the server of `image` (canonical path)
/// until the process exits.
///
/// # Errors
/// When the socket cannot be bound (another server of the same image).
pub fn serve(image: &Path, server: Arc<Mutex<HostedServer>>) -> io::Result<()> {
    let listener = UnixListener::bind_addr(&socket_address(image)?)?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                // A client that sends nothing must not hold the others up.
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                if let Err(error) = answer(&mut stream, &server) {
                    log::warn!("control request: {error}");
                }
            }
        })?;
    Ok(())
}

/// Send `request` to the server of `image` (canonical path). `Ok(None)`
/// when no server of `image` runs here.
///
/// # Errors
/// When the server was reached but the exchange failed; the server's own
/// refusal comes back as `Ok(Some(Err(text)))`.
pub fn request(image: &Path, request: &Request) -> io::Result<Option<Result<String, String>>> {
    let mut stream = match UnixStream::connect_addr(&socket_address(image)?) {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            return Ok(None)
        }
        Err(error) => return Err(error),
    };
    stream.write_all(&request.encode())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    match reply.split_once('\n') {
        Some(("ok", text)) => Ok(Some(Ok(text.to_owned()))),
        Some(("error", text)) => Ok(Some(Err(text.to_owned()))),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected reply {reply:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_refused() {
        for request in [
            Request::Create(b"daily 1".to_vec()),
            Request::Delete(b"x".to_vec()),
            Request::List,
        ] {
            assert_eq!(Request::decode(&request.encode()), Some(request));
        }
        assert_eq!(Request::decode(b"create"), None);
        assert_eq!(Request::decode(b"format\0x"), None);
        assert_eq!(Request::decode(b"list\0x"), None);
        assert_eq!(Request::decode(b""), None);
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: [(FsError, &str); 6] = [
            (FsError::Exists, "a snapshot named \"x\" exists already"),
            (FsError::NotFound, "no snapshot named \"x\""),
            (
                FsError::InvalidName,
                "bad snapshot name \"x\": a name has 1 to 255 bytes",
            ),
            (FsError::NameTooLong, "longer than 255 bytes"),
            (
                FsError::NoSpace,
                "no space left on the file system (or 1024 snapshots",
            ),
            (FsError::Io, "snapshot \"x\": "),
        ];
        for (error, expected) in cases {
            let text = explain(b"x", &error);
            assert!(text.contains(expected), "{error:?}: {text}");
        }
    }
}
