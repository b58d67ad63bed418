//! Conversions between the file system's object model and NFSv3 types.

use nfs3::{FileAttributes, NfsError, Time, WccAttributes};
use vfs::{Attributes, FileType, FsError, SetAttributes, SetTime, Timestamp};

/// The `nfsstat3` for a file-system error: one status per error, chosen by
/// an exhaustive match so a new error forces a decision.
pub fn status(error: &FsError) -> NfsError {
    match error {
        FsError::NotFound => NfsError::NoEntry,
        FsError::Exists => NfsError::Exist,
        FsError::NotDirectory => NfsError::NotDirectory,
        FsError::IsDirectory => NfsError::IsDirectory,
        FsError::NotEmpty => NfsError::NotEmpty,
        FsError::NameTooLong => NfsError::NameTooLong,
        FsError::InvalidName => NfsError::Invalid,
        FsError::Invalid => NfsError::Invalid,
        FsError::Stale => NfsError::Stale,
        FsError::NoSpace => NfsError::NoSpace,
        FsError::FileTooBig => NfsError::FileTooLarge,
        FsError::TooManyLinks => NfsError::TooManyLinks,
        FsError::ReadOnly => NfsError::ReadOnlyFileSystem,
        FsError::BadCookie => NfsError::BadCookie,
        FsError::NotSupported => NfsError::NotSupported,
        FsError::Io => NfsError::Io,
        FsError::Corrupt(_) => NfsError::Io,
    }
}

/// `nfstime3` for a timestamp; times before 1970 or after 2106 are clamped
/// (NFSv3 times are unsigned 32-bit seconds).
pub fn time(timestamp: Timestamp) -> Time {
    let seconds = timestamp.seconds.clamp(0, i64::from(u32::MAX));
    Time {
        seconds: u32::try_from(seconds).unwrap_or(u32::MAX),
        nanoseconds: timestamp.nanoseconds.min(999_999_999),
    }
}

/// A timestamp from a client's `nfstime3`.
pub fn timestamp(time: Time) -> Timestamp {
    Timestamp {
        seconds: i64::from(time.seconds),
        nanoseconds: time.nanoseconds.min(999_999_999),
    }
}

/// The NFS file type.
pub fn file_type(file_type: FileType) -> nfs3::FileType {
    match file_type {
        FileType::Regular => nfs3::FileType::Regular,
        FileType::Directory => nfs3::FileType::Directory,
        FileType::Symlink => nfs3::FileType::SymbolicLink,
        FileType::BlockDevice => nfs3::FileType::BlockDevice,
        FileType::CharacterDevice => nfs3::FileType::CharacterDevice,
        FileType::Fifo => nfs3::FileType::Fifo,
        FileType::Socket => nfs3::FileType::Socket,
    }
}

/// `fattr3` for an inode of a file system whose `fsid` is `file_system_id`.
pub fn file_attributes(attributes: &Attributes, file_system_id: u64) -> FileAttributes {
    FileAttributes {
        file_type: file_type(attributes.file_type),
        mode: attributes.mode & 0o7777,
        link_count: attributes.nlink,
        uid: attributes.uid,
        gid: attributes.gid,
        size: attributes.size,
        used: attributes.used,
        device: nfs3::DeviceNumbers {
            major: attributes.rdev.major,
            minor: attributes.rdev.minor,
        },
        file_system_id,
        file_id: attributes.inode.0,
        access_time: time(attributes.atime),
        modify_time: time(attributes.mtime),
        change_time: time(attributes.ctime),
    }
}

/// `wcc_attr`: what a client compares to decide whether its cache survived.
pub fn wcc_attributes(attributes: &Attributes) -> WccAttributes {
    WccAttributes {
        size: attributes.size,
        modify_time: time(attributes.mtime),
        change_time: time(attributes.ctime),
    }
}

/// The file system's form of a `sattr3`.
pub fn set_attributes(attributes: &nfs3::SettableAttributes) -> SetAttributes {
    let set_time = |how: nfs3::SetTime| match how {
        nfs3::SetTime::DontChange => SetTime::Unchanged,
        nfs3::SetTime::ServerTime => SetTime::ServerTime,
        nfs3::SetTime::ClientTime(time) => SetTime::Client(timestamp(time)),
    };
    SetAttributes {
        mode: attributes.mode.map(|mode| mode & 0o7777),
        uid: attributes.uid,
        gid: attributes.gid,
        size: attributes.size,
        atime: set_time(attributes.access_time),
        mtime: set_time(attributes.modify_time),
    }
}

/// Whether a `SetAttributes` changes nothing.
pub fn is_empty(changes: &SetAttributes) -> bool {
    *changes == SetAttributes::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_clamp_to_the_nfs_range() {
        let before = Timestamp {
            seconds: -5,
            nanoseconds: 3,
        };
        assert_eq!(time(before).seconds, 0);
        let after = Timestamp {
            seconds: i64::from(u32::MAX) + 10,
            nanoseconds: 0,
        };
        assert_eq!(time(after).seconds, u32::MAX);
        let now = Timestamp {
            seconds: 1_700_000_000,
            nanoseconds: 123,
        };
        assert_eq!(timestamp(time(now)), now);
    }

    #[test]
    fn every_error_has_its_status() {
        assert_eq!(status(&FsError::NoSpace), NfsError::NoSpace);
        assert_eq!(status(&FsError::FileTooBig), NfsError::FileTooLarge);
        assert_eq!(status(&FsError::NameTooLong), NfsError::NameTooLong);
        assert_eq!(status(&FsError::Corrupt("x".into())), NfsError::Io);
        assert_eq!(status(&FsError::Stale), NfsError::Stale);
    }
}
