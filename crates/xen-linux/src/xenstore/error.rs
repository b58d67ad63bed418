//! Errors of the xenstore client.

use std::fmt;
use std::io;

use xen_abi::xenstore_wire::WireError;

/// The errno names xenstored answers with (`xsd_errors` in
/// `io/xs_wire.h`), plus any name this crate does not know.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum XenstoreErrno {
    /// `EINVAL`.
    InvalidArgument,
    /// `EACCES`.
    PermissionDenied,
    /// `EEXIST`.
    Exists,
    /// `EISDIR`.
    IsDirectory,
    /// `ENOENT`.
    NotFound,
    /// `ENOMEM`.
    OutOfMemory,
    /// `ENOSPC`.
    NoSpace,
    /// `EIO`.
    InputOutput,
    /// `ENOTEMPTY`.
    NotEmpty,
    /// `ENOSYS`.
    NotImplemented,
    /// `EROFS`.
    ReadOnly,
    /// `EBUSY`.
    Busy,
    /// `EAGAIN`: a transaction conflicted; run it again.
    TryAgain,
    /// `EISCONN`.
    AlreadyConnected,
    /// `E2BIG`.
    TooBig,
    /// `EPERM`.
    NotPermitted,
    /// A name not in the list above, as the daemon sent it.
    Other(String),
}

impl XenstoreErrno {
    /// From the `XS_ERROR` payload (trailing NULs already removed).
    pub fn from_name(name: &str) -> XenstoreErrno {
        match name {
            "EINVAL" => XenstoreErrno::InvalidArgument,
            "EACCES" => XenstoreErrno::PermissionDenied,
            "EEXIST" => XenstoreErrno::Exists,
            "EISDIR" => XenstoreErrno::IsDirectory,
            "ENOENT" => XenstoreErrno::NotFound,
            "ENOMEM" => XenstoreErrno::OutOfMemory,
            "ENOSPC" => XenstoreErrno::NoSpace,
            "EIO" => XenstoreErrno::InputOutput,
            "ENOTEMPTY" => XenstoreErrno::NotEmpty,
            "ENOSYS" => XenstoreErrno::NotImplemented,
            "EROFS" => XenstoreErrno::ReadOnly,
            "EBUSY" => XenstoreErrno::Busy,
            "EAGAIN" => XenstoreErrno::TryAgain,
            "EISCONN" => XenstoreErrno::AlreadyConnected,
            "E2BIG" => XenstoreErrno::TooBig,
            "EPERM" => XenstoreErrno::NotPermitted,
            other => XenstoreErrno::Other(other.to_owned()),
        }
    }

    /// The errno name on the wire (`"ENOENT"`).
    pub fn name(&self) -> &str {
        match self {
            XenstoreErrno::InvalidArgument => "EINVAL",
            XenstoreErrno::PermissionDenied => "EACCES",
            XenstoreErrno::Exists => "EEXIST",
            XenstoreErrno::IsDirectory => "EISDIR",
            XenstoreErrno::NotFound => "ENOENT",
            XenstoreErrno::OutOfMemory => "ENOMEM",
            XenstoreErrno::NoSpace => "ENOSPC",
            XenstoreErrno::InputOutput => "EIO",
            XenstoreErrno::NotEmpty => "ENOTEMPTY",
            XenstoreErrno::NotImplemented => "ENOSYS",
            XenstoreErrno::ReadOnly => "EROFS",
            XenstoreErrno::Busy => "EBUSY",
            XenstoreErrno::TryAgain => "EAGAIN",
            XenstoreErrno::AlreadyConnected => "EISCONN",
            XenstoreErrno::TooBig => "E2BIG",
            XenstoreErrno::NotPermitted => "EPERM",
            XenstoreErrno::Other(name) => name,
        }
    }

    /// A few words on what it means for a xenstore operation.
    fn meaning(&self) -> &'static str {
        match self {
            XenstoreErrno::InvalidArgument => "invalid argument",
            XenstoreErrno::PermissionDenied => "permission denied",
            XenstoreErrno::Exists => "already exists",
            XenstoreErrno::IsDirectory => "is a directory",
            XenstoreErrno::NotFound => "no such node",
            XenstoreErrno::OutOfMemory => "daemon out of memory",
            XenstoreErrno::NoSpace => "quota exceeded",
            XenstoreErrno::InputOutput => "daemon input/output error",
            XenstoreErrno::NotEmpty => "not empty",
            XenstoreErrno::NotImplemented => "not implemented",
            XenstoreErrno::ReadOnly => "read-only",
            XenstoreErrno::Busy => "busy",
            XenstoreErrno::TryAgain => "transaction conflict, try again",
            XenstoreErrno::AlreadyConnected => "already connected",
            XenstoreErrno::TooBig => "too big",
            XenstoreErrno::NotPermitted => "operation not permitted",
            XenstoreErrno::Other(_) => "unknown error",
        }
    }
}

impl fmt::Display for XenstoreErrno {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} ({})", self.name(), self.meaning())
    }
}

/// How the daemon broke the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// A reply carried another request id than the request waiting.
    UnexpectedRequestId {
        /// The id sent.
        expected: u32,
        /// The id received.
        received: u32,
    },
    /// A reply carried another message type than the request.
    UnexpectedType {
        /// The type sent.
        expected: u32,
        /// The type received.
        received: u32,
    },
    /// A reply arrived while no request was waiting.
    UnsolicitedReply(u32),
    /// A watch event payload was not `path\0token\0`.
    MalformedWatchEvent,
    /// A transaction start reply was not a decimal id.
    MalformedTransactionId,
    /// A permission list did not parse.
    MalformedPermissions,
    /// A value that should be text was not UTF-8.
    NotUtf8,
    /// A domain id or path did not parse.
    MalformedDomain(String),
    /// The framing broke (oversize message).
    Wire(WireError),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::UnexpectedRequestId { expected, received } => write!(
                formatter,
                "reply to request {received} while waiting for {expected}"
            ),
            ProtocolError::UnexpectedType { expected, received } => write!(
                formatter,
                "reply of type {received} to a request of type {expected}"
            ),
            ProtocolError::UnsolicitedReply(id) => {
                write!(formatter, "reply to request {id} that nobody sent")
            }
            ProtocolError::MalformedWatchEvent => formatter.write_str("malformed watch event"),
            ProtocolError::MalformedTransactionId => {
                formatter.write_str("malformed transaction id")
            }
            ProtocolError::MalformedPermissions => formatter.write_str("malformed permissions"),
            ProtocolError::NotUtf8 => formatter.write_str("value is not UTF-8"),
            ProtocolError::MalformedDomain(text) => {
                write!(formatter, "malformed domain id or path {text:?}")
            }
            ProtocolError::Wire(error) => write!(formatter, "{error}"),
        }
    }
}

/// Why a xenstore operation failed.
#[derive(Debug, thiserror::Error)]
pub enum XenstoreError {
    /// The daemon refused the operation on `path`.
    #[error("xenstore {operation} {path}: {errno}")]
    Daemon {
        /// The operation (`"read"`, `"write"`, ...).
        operation: &'static str,
        /// The path it was applied to (empty for transaction ends).
        path: String,
        /// The daemon's answer.
        errno: XenstoreErrno,
    },
    /// The request itself cannot be framed (path plus value over 4096
    /// bytes).
    #[error("xenstore {operation} {path}: request too long ({source})")]
    RequestTooLong {
        /// The operation.
        operation: &'static str,
        /// The path.
        path: String,
        /// The framing error.
        source: WireError,
    },
    /// Neither `/dev/xen/xenbus` nor xenstored's socket could be opened.
    #[error("cannot reach xenstore ({device}: {device_error}; {socket}: {socket_error})")]
    Unreachable {
        /// The device tried.
        device: &'static str,
        /// Its error.
        device_error: io::Error,
        /// The socket tried.
        socket: &'static str,
        /// Its error.
        socket_error: io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("xenstore connection: {0}")]
    Io(#[from] io::Error),
    /// The daemon closed the connection.
    #[error("xenstore connection closed by the daemon")]
    Closed,
    /// The daemon broke the protocol; the connection is unusable.
    #[error("xenstore protocol: {0}")]
    Protocol(ProtocolError),
}

impl XenstoreError {
    /// The daemon's errno, when the daemon refused the operation.
    pub fn errno(&self) -> Option<&XenstoreErrno> {
        match self {
            XenstoreError::Daemon { errno, .. } => Some(errno),
            XenstoreError::RequestTooLong { .. }
            | XenstoreError::Unreachable { .. }
            | XenstoreError::Io(_)
            | XenstoreError::Closed
            | XenstoreError::Protocol(_) => None,
        }
    }

    /// Whether the daemon answered `ENOENT`.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(&XenstoreErrno::NotFound)
    }

    /// Whether the daemon answered `EAGAIN` (a transaction conflict).
    pub fn is_try_again(&self) -> bool {
        self.errno() == Some(&XenstoreErrno::TryAgain)
    }
}
