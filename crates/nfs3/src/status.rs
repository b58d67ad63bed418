//! `nfsstat3` and the result shape every NFSv3 procedure shares
//! (RFC 1813 section 2.6, <https://www.rfc-editor.org/rfc/rfc1813#section-2.6>).
//!
//! Design: success is not an error. [`NfsError`] holds only the failure
//! codes, and each procedure's result is a [`ProcedureResult`]: either the
//! success body, or a failure status with the failure body (which for most
//! procedures still carries attributes or wcc data).
//!
//! Unknown status values are a decode error (`UnknownDiscriminant`), not an
//! `Unknown(n)` arm: RFC 1813 closes the set, a server here never sends one,
//! and a client treats such a reply as garbage (EIO) rather than guessing.

use core::fmt;

use xdr::{Decode, DecodeError, Decoder, Encode, Encoder};

macro_rules! nfs_errors {
    ($( $(#[$meta:meta])* $variant:ident = $value:literal, $text:literal; )*) => {
        /// A failing `nfsstat3` (every value except `NFS3_OK`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum NfsError {
            $( $(#[$meta])* $variant, )*
        }

        impl NfsError {
            /// The wire value.
            pub fn to_u32(self) -> u32 {
                match self {
                    $( NfsError::$variant => $value, )*
                }
            }

            /// The error for a wire value; `None` for `NFS3_OK` and unknown
            /// values.
            pub fn from_u32(value: u32) -> Option<Self> {
                match value {
                    $( $value => Some(NfsError::$variant), )*
                    _ => None,
                }
            }

            /// Every error, in wire order (for tests and tables).
            pub const ALL: &'static [NfsError] = &[ $( NfsError::$variant, )* ];
        }

        impl fmt::Display for NfsError {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(match self {
                    $( NfsError::$variant => $text, )*
                })
            }
        }
    };
}

nfs_errors! {
    /// NFS3ERR_PERM: not owner.
    Permission = 1, "not owner";
    /// NFS3ERR_NOENT: no such file or directory.
    NoEntry = 2, "no such file or directory";
    /// NFS3ERR_IO: hard I/O error.
    Io = 5, "I/O error";
    /// NFS3ERR_NXIO: no such device or address.
    NoDeviceOrAddress = 6, "no such device or address";
    /// NFS3ERR_ACCES: permission denied.
    Access = 13, "permission denied";
    /// NFS3ERR_EXIST: file exists.
    Exist = 17, "file exists";
    /// NFS3ERR_XDEV: cross-device link.
    CrossDevice = 18, "cross-device link";
    /// NFS3ERR_NODEV: no such device.
    NoDevice = 19, "no such device";
    /// NFS3ERR_NOTDIR: not a directory.
    NotDirectory = 20, "not a directory";
    /// NFS3ERR_ISDIR: is a directory.
    IsDirectory = 21, "is a directory";
    /// NFS3ERR_INVAL: invalid argument.
    Invalid = 22, "invalid argument";
    /// NFS3ERR_FBIG: file too large.
    FileTooLarge = 27, "file too large";
    /// NFS3ERR_NOSPC: no space left on device.
    NoSpace = 28, "no space left on device";
    /// NFS3ERR_ROFS: read-only file system.
    ReadOnlyFileSystem = 30, "read-only file system";
    /// NFS3ERR_MLINK: too many hard links.
    TooManyLinks = 31, "too many links";
    /// NFS3ERR_NAMETOOLONG: file name too long.
    NameTooLong = 63, "file name too long";
    /// NFS3ERR_NOTEMPTY: directory not empty.
    NotEmpty = 66, "directory not empty";
    /// NFS3ERR_DQUOT: quota exceeded.
    QuotaExceeded = 69, "quota exceeded";
    /// NFS3ERR_STALE: stale file handle.
    Stale = 70, "stale file handle";
    /// NFS3ERR_REMOTE: too many levels of remote in path.
    Remote = 71, "too many levels of remote in path";
    /// NFS3ERR_BADHANDLE: illegal file handle.
    BadHandle = 10001, "illegal file handle";
    /// NFS3ERR_NOT_SYNC: SETATTR guard mismatch.
    NotSynchronized = 10002, "update synchronization mismatch";
    /// NFS3ERR_BAD_COOKIE: READDIR cookie is stale.
    BadCookie = 10003, "stale directory cookie";
    /// NFS3ERR_NOTSUPP: operation not supported.
    NotSupported = 10004, "operation not supported";
    /// NFS3ERR_TOOSMALL: buffer or request too small.
    TooSmall = 10005, "buffer too small";
    /// NFS3ERR_SERVERFAULT: server error not mapping to a known one.
    ServerFault = 10006, "server fault";
    /// NFS3ERR_BADTYPE: type not supported by the server.
    BadType = 10007, "type not supported";
    /// NFS3ERR_JUKEBOX: slow to respond, retry later.
    Jukebox = 10008, "try again later";
}

impl core::error::Error for NfsError {}

impl Encode for NfsError {
    fn encode(&self, encoder: &mut Encoder) {
        encoder.u32(self.to_u32());
    }
}

/// The result of one NFSv3 procedure: `nfsstat3` then the arm's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcedureResult<Success, Failure> {
    /// `NFS3_OK` and the success body (`*resok`).
    Ok(Success),
    /// Any other status and the failure body (`*resfail`).
    Failed {
        /// Why it failed.
        status: NfsError,
        /// What the server still reports (attributes, wcc data).
        body: Failure,
    },
}

impl<Success, Failure> ProcedureResult<Success, Failure> {
    /// A failure with its body.
    pub fn failed(status: NfsError, body: Failure) -> Self {
        ProcedureResult::Failed { status, body }
    }

    /// The status: `Ok(())` or the error.
    pub fn status(&self) -> Result<(), NfsError> {
        match self {
            ProcedureResult::Ok(_) => Ok(()),
            ProcedureResult::Failed { status, .. } => Err(*status),
        }
    }

    /// The success body, or the error (dropping the failure body).
    pub fn into_result(self) -> Result<Success, NfsError> {
        match self {
            ProcedureResult::Ok(success) => Ok(success),
            ProcedureResult::Failed { status, .. } => Err(status),
        }
    }
}

impl<Success: Encode, Failure: Encode> Encode for ProcedureResult<Success, Failure> {
    fn encode(&self, encoder: &mut Encoder) {
        match self {
            ProcedureResult::Ok(success) => {
                encoder.u32(0);
                success.encode(encoder);
            }
            ProcedureResult::Failed { status, body } => {
                status.encode(encoder);
                body.encode(encoder);
            }
        }
    }
}

impl<Success: Decode, Failure: Decode> Decode for ProcedureResult<Success, Failure> {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        match decoder.u32()? {
            0 => Ok(ProcedureResult::Ok(Success::decode(decoder)?)),
            value => {
                let status = NfsError::from_u32(value).ok_or(DecodeError::UnknownDiscriminant {
                    type_name: "nfsstat3",
                    value,
                })?;
                Ok(ProcedureResult::Failed {
                    status,
                    body: Failure::decode(decoder)?,
                })
            }
        }
    }
}
