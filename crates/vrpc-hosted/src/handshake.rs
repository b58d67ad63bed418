//! The hosted handshake: one message each way on the unix socket, with the
//! shared files passed by `SCM_RIGHTS` (`docs/vrpc.md`, "Hosted handshake").
//!
//! Hello (guest to server): 32 bytes then the export path, with four files:
//! ring memfd, pool memfd, request doorbell (guest rings the server),
//! response doorbell (server rings the guest).
//!
//! ```text
//! 0  magic "VRPC"   4  version (1)   8  slot_count   12 slot_size
//! 16 pool_pages     20 export_length (<= 1024)        24 reserved (8 bytes, 0)
//! 32 export path bytes (UTF-8)
//! ```
//!
//! Welcome (server to guest): 32 bytes, with one file (the metadata table
//! memfd, sealed so that it can only be mapped read-only) when
//! `metatab_bytes` is non-zero.
//!
//! ```text
//! 0  magic "VRPC"   4  version (1)   8  status   12 metatab_bytes
//! 16 reserved (16 bytes, 0)
//! ```

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use vrpc::layout::{MAGIC, VERSION};
use vrpc::RingParameters;

/// Size of the fixed part of both messages.
pub const MESSAGE_SIZE: usize = 32;
/// Longest export path.
pub const MAX_EXPORT_LENGTH: usize = 1024;
/// Linux passes at most this many files in one message (`SCM_MAX_FD`);
/// room for all of them means a peer can never make us truncate (and leak)
/// received files.
const MAX_FILES: usize = 253;

/// The server's answer to a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 0: connected.
    Accepted,
    /// 1: the hello's magic or version is not this server's.
    VersionMismatch,
    /// 2: no such export, or this guest may not mount it.
    ExportRefused,
    /// 3: ring parameters out of bounds.
    BadParameters,
    /// 4: the shared files are missing, not memfds, unsealed, too small, or
    /// the ring header disagrees with the parameters.
    BadRegions,
    /// 5: the export exists but does not admit this peer's credentials
    /// (its user and group ids, as the kernel reports them for the socket).
    NotAdmitted,
}

impl std::fmt::Display for Status {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::Accepted => "accepted",
            Self::VersionMismatch => "the server speaks another version of the handshake",
            Self::ExportRefused => "no such export, or this client may not mount it",
            Self::BadParameters => "ring parameters out of bounds",
            Self::BadRegions => "the shared memory regions are unusable",
            Self::NotAdmitted => "the export does not admit this user (its allow= options)",
        })
    }
}

impl Status {
    /// The wire value.
    pub const fn to_wire(self) -> u32 {
        match self {
            Self::Accepted => 0,
            Self::VersionMismatch => 1,
            Self::ExportRefused => 2,
            Self::BadParameters => 3,
            Self::BadRegions => 4,
            Self::NotAdmitted => 5,
        }
    }

    /// Decodes a wire value.
    pub const fn from_wire(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::Accepted),
            1 => Some(Self::VersionMismatch),
            2 => Some(Self::ExportRefused),
            3 => Some(Self::BadParameters),
            4 => Some(Self::BadRegions),
            5 => Some(Self::NotAdmitted),
            _ => None,
        }
    }
}

fn word(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    ])
}

fn put(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn nix_error(error: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(error as i32)
}

/// Sends `header ++ tail` with `files`.
fn send(
    stream: &UnixStream,
    header: &[u8],
    tail: &[u8],
    files: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let raw: Vec<RawFd> = files.iter().map(|file| file.as_raw_fd()).collect();
    let control = [ControlMessage::ScmRights(&raw)];
    let control: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &control };
    let mut message = header.to_vec();
    message.extend_from_slice(tail);
    let sent = sendmsg::<UnixAddr>(
        stream.as_raw_fd(),
        &[IoSlice::new(&message)],
        control,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(nix_error)?;
    if sent < message.len() {
        // Files went with the first byte; the rest is plain data.
        use std::io::Write;
        (&*stream).write_all(&message[sent..])?;
    }
    Ok(())
}

/// Receives a fixed-size header and the files sent with it.
fn receive(stream: &UnixStream, header: &mut [u8; MESSAGE_SIZE]) -> io::Result<Vec<OwnedFd>> {
    let mut control = nix::cmsg_space!([RawFd; MAX_FILES]);
    let (bytes, files) = {
        let mut slices = [IoSliceMut::new(&mut header[..])];
        let message = recvmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &mut slices,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(nix_error)?;
        let mut files = Vec::new();
        // `cmsgs` fails only on truncation, which room for SCM_MAX_FD files
        // rules out.
        for control_message in message.cmsgs().map_err(nix_error)? {
            if let ControlMessageOwned::ScmRights(received) = control_message {
                for raw in received {
                    // SAFETY: the kernel just installed `raw` in our file
                    // table for this message; nothing else owns it.
                    files.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        (message.bytes, files)
    };
    if bytes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "peer closed during the handshake",
        ));
    }
    (&*stream).read_exact(&mut header[bytes..])?;
    Ok(files)
}

/// A decoded hello, with its files.
#[derive(Debug)]
pub struct Hello {
    /// Magic and version matched.
    pub version_ok: bool,
    /// The ring parameters asked for (not yet validated).
    pub parameters: RingParameters,
    /// The export path.
    pub export: String,
    /// The files, in order: ring, pool, request doorbell, response doorbell.
    pub files: Vec<OwnedFd>,
}

/// Guest: sends a hello.
///
/// # Errors
/// The socket failure.
pub fn send_hello(
    stream: &UnixStream,
    parameters: RingParameters,
    export: &str,
    files: [BorrowedFd<'_>; 4],
) -> io::Result<()> {
    if export.len() > MAX_EXPORT_LENGTH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "export path too long",
        ));
    }
    let mut header = [0u8; MESSAGE_SIZE];
    put(&mut header, 0, MAGIC);
    put(&mut header, 4, VERSION);
    put(&mut header, 8, parameters.slot_count);
    put(&mut header, 12, parameters.slot_size);
    put(&mut header, 16, parameters.pool_pages);
    put(&mut header, 20, export.len() as u32);
    send(stream, &header, export.as_bytes(), &files)
}

/// Server: receives a hello.
///
/// # Errors
/// The socket failure; `InvalidData` for an export path that is too long
/// or not UTF-8.
pub fn receive_hello(stream: &UnixStream) -> io::Result<Hello> {
    let mut header = [0u8; MESSAGE_SIZE];
    let files = receive(stream, &mut header)?;
    let export_length = word(&header, 20) as usize;
    if export_length > MAX_EXPORT_LENGTH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "export path too long",
        ));
    }
    let mut export = vec![0; export_length];
    (&*stream).read_exact(&mut export)?;
    let export = String::from_utf8(export)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "export path not UTF-8"))?;
    Ok(Hello {
        version_ok: word(&header, 0) == MAGIC && word(&header, 4) == VERSION,
        parameters: RingParameters {
            slot_count: word(&header, 8),
            slot_size: word(&header, 12),
            pool_pages: word(&header, 16),
        },
        export,
        files,
    })
}

/// Server: sends a welcome, with the metadata table's file when there is
/// one.
///
/// # Errors
/// The socket failure.
pub fn send_welcome(
    stream: &UnixStream,
    status: Status,
    metatab: Option<(BorrowedFd<'_>, usize)>,
) -> io::Result<()> {
    let mut header = [0u8; MESSAGE_SIZE];
    put(&mut header, 0, MAGIC);
    put(&mut header, 4, VERSION);
    put(&mut header, 8, status.to_wire());
    let files: Vec<BorrowedFd<'_>> = metatab.iter().map(|(file, _)| *file).collect();
    put(
        &mut header,
        12,
        metatab.map_or(0, |(_, bytes)| bytes as u32),
    );
    send(stream, &header, &[], &files)
}

/// Guest: receives the welcome: status, metadata table size, and its file.
///
/// # Errors
/// The socket failure; `InvalidData` for a malformed welcome.
pub fn receive_welcome(stream: &UnixStream) -> io::Result<(Status, Option<(OwnedFd, usize)>)> {
    let mut header = [0u8; MESSAGE_SIZE];
    let mut files = receive(stream, &mut header)?;
    if word(&header, 0) != MAGIC || word(&header, 4) != VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a VRPC server",
        ));
    }
    let status = Status::from_wire(word(&header, 8))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown status"))?;
    let bytes = word(&header, 12) as usize;
    let metatab = match (bytes, files.len()) {
        (0, 0) => None,
        (bytes, 1) if bytes > 0 => files.pop().map(|file| (file, bytes)),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "welcome files disagree with its header",
            ))
        }
    };
    Ok((status, metatab))
}
