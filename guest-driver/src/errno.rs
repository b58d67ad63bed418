//! From NFS and RPC failures to the errno a FUSE request answers with.
//!
//! Design: one exhaustive `match` over `nfsstat3` (RFC 1813 section 2.6),
//! no wildcard, so a new status forces a decision. Where Linux's NFS client
//! maps a status to a kernel-internal code that leaks to programs as an
//! unknown number (BADHANDLE, NOT_SYNC, BAD_COOKIE, TOOSMALL, BADTYPE), the
//! nearest POSIX errno is chosen instead; the table in
//! `docs/guest-driver.md` lists every arm with its reason.

use fuser::Errno;
use nfs3::NfsError;
use xdr::{RejectedReply, ReplyBody};

use crate::client::ClientError;
use nfs3::message::ReplyFailure;

/// The errno for a failing `nfsstat3`.
pub fn from_nfs(error: NfsError) -> Errno {
    let code = match error {
        NfsError::Permission => libc::EPERM,
        NfsError::NoEntry => libc::ENOENT,
        NfsError::Io => libc::EIO,
        NfsError::NoDeviceOrAddress => libc::ENXIO,
        NfsError::Access => libc::EACCES,
        NfsError::Exist => libc::EEXIST,
        NfsError::CrossDevice => libc::EXDEV,
        NfsError::NoDevice => libc::ENODEV,
        NfsError::NotDirectory => libc::ENOTDIR,
        NfsError::IsDirectory => libc::EISDIR,
        NfsError::Invalid => libc::EINVAL,
        NfsError::FileTooLarge => libc::EFBIG,
        NfsError::NoSpace => libc::ENOSPC,
        NfsError::ReadOnlyFileSystem => libc::EROFS,
        NfsError::TooManyLinks => libc::EMLINK,
        NfsError::NameTooLong => libc::ENAMETOOLONG,
        NfsError::NotEmpty => libc::ENOTEMPTY,
        NfsError::QuotaExceeded => libc::EDQUOT,
        NfsError::Stale => libc::ESTALE,
        NfsError::Remote => libc::EREMOTE,
        // A handle the server cannot parse is, to a program, a file that
        // is gone: the VFS retries the path walk on ESTALE.
        NfsError::BadHandle => libc::ESTALE,
        // Only a SETATTR guard fails this way; the driver sends none.
        NfsError::NotSynchronized => libc::EIO,
        // The directory changed under a listing: the listing cannot go on.
        NfsError::BadCookie => libc::EIO,
        NfsError::NotSupported => libc::EOPNOTSUPP,
        // A reply buffer too small: what getdents says for a small buffer.
        NfsError::TooSmall => libc::EINVAL,
        NfsError::ServerFault => libc::EREMOTEIO,
        // MKNOD of a type the server does not store.
        NfsError::BadType => libc::EINVAL,
        // The server asks to retry later; the program may (no automatic
        // retry here).
        NfsError::Jukebox => libc::EAGAIN,
    };
    Errno::from_i32(code)
}

/// The errno for a call that got no NFS result.
pub fn from_client(error: &ClientError) -> Errno {
    let code = match error {
        ClientError::Transport(_) | ClientError::WrongResults => libc::EIO,
        ClientError::Reply(failure) => match failure {
            ReplyFailure::Unsuccessful {
                body: ReplyBody::Denied(RejectedReply::AuthError(_)),
                ..
            } => libc::EACCES,
            ReplyFailure::Unsuccessful { .. }
            | ReplyFailure::Header(_)
            | ReplyFailure::Results { .. }
            | ReplyFailure::UnknownProcedure(_) => libc::EIO,
        },
    };
    Errno::from_i32(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_named_after_an_errno_map_to_that_errno() {
        for error in NfsError::ALL {
            let errno = i32::from(from_nfs(*error));
            assert!(errno > 0 && errno < 134, "{error:?}: {errno}");
        }
        let named = [
            (NfsError::Permission, libc::EPERM),
            (NfsError::NoEntry, libc::ENOENT),
            (NfsError::Io, libc::EIO),
            (NfsError::NoDeviceOrAddress, libc::ENXIO),
            (NfsError::Access, libc::EACCES),
            (NfsError::Exist, libc::EEXIST),
            (NfsError::CrossDevice, libc::EXDEV),
            (NfsError::NoDevice, libc::ENODEV),
            (NfsError::NotDirectory, libc::ENOTDIR),
            (NfsError::IsDirectory, libc::EISDIR),
            (NfsError::Invalid, libc::EINVAL),
            (NfsError::FileTooLarge, libc::EFBIG),
            (NfsError::NoSpace, libc::ENOSPC),
            (NfsError::ReadOnlyFileSystem, libc::EROFS),
            (NfsError::TooManyLinks, libc::EMLINK),
            (NfsError::NameTooLong, libc::ENAMETOOLONG),
            (NfsError::NotEmpty, libc::ENOTEMPTY),
            (NfsError::QuotaExceeded, libc::EDQUOT),
            (NfsError::Stale, libc::ESTALE),
            (NfsError::Remote, libc::EREMOTE),
        ];
        for (error, code) in named {
            assert_eq!(i32::from(from_nfs(error)), code, "{error:?}");
            // RFC 1813 took these values from BSD's errno: below 35 they
            // equal Linux's, above they do not (63 is ENAMETOOLONG on BSD,
            // ENOSR on Linux), so a pass-through of the wire value would be
            // wrong there.
            if error.to_u32() < 35 {
                assert_eq!(error.to_u32() as i32, code, "{error:?}");
            } else {
                assert_ne!(error.to_u32() as i32, code, "{error:?}");
            }
        }
    }

    #[test]
    fn an_authentication_error_is_eacces_and_other_rpc_failures_eio() {
        let denied = ClientError::Reply(ReplyFailure::Unsuccessful {
            xid: 1,
            body: ReplyBody::Denied(RejectedReply::AuthError(xdr::AuthStatus::TooWeak)),
        });
        assert_eq!(i32::from(from_client(&denied)), libc::EACCES);
        let garbage = ClientError::Reply(ReplyFailure::UnknownProcedure(99));
        assert_eq!(i32::from(from_client(&garbage)), libc::EIO);
    }
}
