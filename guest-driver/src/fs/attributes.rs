//! Conversions between NFSv3 attributes (RFC 1813 section 2.6) and FUSE's,
//! and the caller's identity taken from a FUSE request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType as FuseType, INodeNo, TimeOrNow};
use nfs3::{FileAttributes, FileType, SetTime, Time};

use crate::client::Caller;

/// Block size reported by `stat` when the server gives none.
pub const BLOCK_SIZE: u32 = 4096;

/// FUSE attributes for node `node` with the server's `attributes`.
pub fn to_fuse(node: u64, attributes: &FileAttributes) -> FileAttr {
    FileAttr {
        ino: INodeNo(node),
        size: attributes.size,
        blocks: attributes.used.div_ceil(512),
        atime: to_system_time(attributes.access_time),
        mtime: to_system_time(attributes.modify_time),
        ctime: to_system_time(attributes.change_time),
        crtime: UNIX_EPOCH,
        kind: to_fuse_type(attributes.file_type),
        perm: (attributes.mode & 0o7777) as u16,
        nlink: attributes.link_count,
        uid: attributes.uid,
        gid: attributes.gid,
        rdev: encode_device(attributes.device.major, attributes.device.minor),
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

/// The attributes of a negative entry: node 0 tells the kernel the name
/// does not exist, and the entry timeout how long it may remember so.
pub fn negative() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FuseType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

/// The FUSE file type of an `ftype3`.
pub fn to_fuse_type(file_type: FileType) -> FuseType {
    match file_type {
        FileType::Regular => FuseType::RegularFile,
        FileType::Directory => FuseType::Directory,
        FileType::BlockDevice => FuseType::BlockDevice,
        FileType::CharacterDevice => FuseType::CharDevice,
        FileType::SymbolicLink => FuseType::Symlink,
        FileType::Socket => FuseType::Socket,
        FileType::Fifo => FuseType::NamedPipe,
    }
}

/// `nfstime3` to a system time.
pub fn to_system_time(time: Time) -> SystemTime {
    UNIX_EPOCH + Duration::new(u64::from(time.seconds), time.nanoseconds.min(999_999_999))
}

/// A system time to `nfstime3`. NFSv3 times are unsigned 32-bit seconds:
/// times before 1970 clamp to the epoch, after 2106 to the last second.
pub fn to_nfs_time(time: SystemTime) -> Time {
    match time.duration_since(UNIX_EPOCH) {
        Ok(elapsed) => Time {
            seconds: u32::try_from(elapsed.as_secs()).unwrap_or(u32::MAX),
            nanoseconds: elapsed.subsec_nanos(),
        },
        Err(_) => Time::default(),
    }
}

/// A FUSE `setattr` time to `set_atime` / `set_mtime`.
pub fn to_set_time(time: Option<TimeOrNow>) -> SetTime {
    match time {
        None => SetTime::DontChange,
        Some(TimeOrNow::Now) => SetTime::ServerTime,
        Some(TimeOrNow::SpecificTime(time)) => SetTime::ClientTime(to_nfs_time(time)),
    }
}

/// Whether the server will certainly allow `caller_uid` to make the
/// attribute change `new` (no size change) to a file with `base`, so that
/// it may be answered before it is sent. `root_effective`: root's calls
/// are known to act as root on this export. Conservative: `false` where
/// the server's answer could depend on more than `base` (a group change by
/// a non-root owner, which needs the server's view of the caller's
/// groups; set-group-id set by one, which the server may drop).
pub fn certainly_permitted(
    caller_uid: u32,
    root_effective: bool,
    base: &FileAttributes,
    new: &nfs3::SettableAttributes,
) -> bool {
    if new.size.is_some() {
        return false;
    }
    if caller_uid == 0 {
        return root_effective;
    }
    base.uid == caller_uid
        && new.uid.is_none_or(|uid| uid == base.uid)
        && new.gid.is_none_or(|gid| gid == base.gid)
        && new.mode.is_none_or(|mode| mode & 0o2000 == 0)
}

/// The attributes a file with `base` has after the server applies `new`
/// (no size change) at `now`, as the server applies it: a change of owner
/// or group without a mode drops set-user-id, and set-group-id when the
/// file is group-executable; ctime becomes `now`.
pub fn apply(
    mut base: FileAttributes,
    new: &nfs3::SettableAttributes,
    now: SystemTime,
) -> FileAttributes {
    let now = to_nfs_time(now);
    if let Some(mode) = new.mode {
        base.mode = mode & 0o7777;
    } else if (new.uid.is_some() || new.gid.is_some())
        && base.file_type != FileType::Directory
        && base.mode & 0o6000 != 0
    {
        base.mode &= !0o4000;
        if base.mode & 0o010 != 0 {
            base.mode &= !0o2000;
        }
    }
    base.uid = new.uid.unwrap_or(base.uid);
    base.gid = new.gid.unwrap_or(base.gid);
    match new.access_time {
        SetTime::DontChange => {}
        SetTime::ServerTime => base.access_time = now,
        SetTime::ClientTime(time) => base.access_time = time,
    }
    match new.modify_time {
        SetTime::DontChange => {}
        SetTime::ServerTime => base.modify_time = now,
        SetTime::ClientTime(time) => base.modify_time = time,
    }
    base.change_time = now;
    base
}

/// Linux's 32-bit device number encoding (`new_encode_dev`), which FUSE
/// carries in `rdev`.
pub fn encode_device(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// The inverse of [`encode_device`]: `(major, minor)`.
pub fn decode_device(device: u32) -> (u32, u32) {
    (
        (device & 0xfff00) >> 8,
        (device & 0xff) | ((device >> 12) & 0xfff00),
    )
}

/// The caller of a FUSE request: its (file system) uid and gid from the
/// request, and its supplementary groups from `/proc/<pid>/status`. When
/// the process is gone or the request came from the kernel itself (pid 0),
/// only the primary group is sent.
pub fn caller(uid: u32, gid: u32, pid: u32) -> Caller {
    let groups = if pid == 0 {
        Vec::new()
    } else {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|status| parse_groups(&status))
            .unwrap_or_default()
    };
    Caller { uid, gid, groups }
}

/// The `Groups:` line of a `/proc/<pid>/status` file.
pub fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|group| group.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(uid: u32, gid: u32, mode: u32) -> FileAttributes {
        FileAttributes {
            file_type: FileType::Regular,
            mode,
            link_count: 1,
            uid,
            gid,
            size: 10,
            used: 4096,
            device: nfs3::DeviceNumbers::default(),
            file_system_id: 1,
            file_id: 7,
            access_time: Time::default(),
            modify_time: Time::default(),
            change_time: Time::default(),
        }
    }

    fn change(
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        modify_time: SetTime,
    ) -> nfs3::SettableAttributes {
        nfs3::SettableAttributes {
            mode,
            uid,
            gid,
            size: None,
            access_time: SetTime::DontChange,
            modify_time,
        }
    }

    #[test]
    fn only_changes_the_server_certainly_allows_are_deferrable() {
        let time = SetTime::ClientTime(Time {
            seconds: 5,
            nanoseconds: 0,
        });
        let owned = file(1000, 100, 0o644);
        // Root: only where root is known to act as root.
        let chown = change(None, Some(1000), Some(1000), SetTime::DontChange);
        assert!(certainly_permitted(0, true, &owned, &chown));
        assert!(!certainly_permitted(0, false, &owned, &chown));
        // The owner: mode and times, an unchanged owner and group.
        let chmod = change(Some(0o600), None, None, time);
        assert!(certainly_permitted(1000, false, &owned, &chmod));
        let same = change(None, Some(1000), Some(100), SetTime::DontChange);
        assert!(certainly_permitted(1000, false, &owned, &same));
        // Not the owner, a new owner or group, set-group-id, a size.
        assert!(!certainly_permitted(1001, false, &owned, &chmod));
        let give = change(None, Some(1001), None, SetTime::DontChange);
        assert!(!certainly_permitted(1000, false, &owned, &give));
        let group = change(None, None, Some(101), SetTime::DontChange);
        assert!(!certainly_permitted(1000, false, &owned, &group));
        let setgid = change(Some(0o2755), None, None, SetTime::DontChange);
        assert!(!certainly_permitted(1000, false, &owned, &setgid));
        let mut truncate = change(None, None, None, SetTime::DontChange);
        truncate.size = Some(0);
        assert!(!certainly_permitted(0, true, &owned, &truncate));
    }

    #[test]
    fn applying_a_change_predicts_what_the_server_does() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let time = Time {
            seconds: 5,
            nanoseconds: 6,
        };
        let after = apply(
            file(0, 0, 0o600),
            &change(
                Some(0o640),
                Some(1000),
                Some(100),
                SetTime::ClientTime(time),
            ),
            now,
        );
        assert_eq!((after.mode, after.uid, after.gid), (0o640, 1000, 100));
        assert_eq!(after.modify_time, time);
        assert_eq!(after.change_time.seconds, 1_000);
        assert_eq!(after.size, 10);
        // A chown without a mode drops set-user-id, and set-group-id of a
        // group-executable file, as the server does.
        let chown = change(None, Some(1000), None, SetTime::DontChange);
        assert_eq!(apply(file(0, 0, 0o6755), &chown, now).mode, 0o755);
        assert_eq!(apply(file(0, 0, 0o6745), &chown, now).mode, 0o2745);
        let touch = nfs3::SettableAttributes {
            access_time: SetTime::ServerTime,
            ..change(None, None, None, SetTime::ServerTime)
        };
        let touched = apply(file(0, 0, 0o644), &touch, now);
        assert_eq!(touched.modify_time.seconds, 1_000);
        assert_eq!(touched.access_time.seconds, 1_000);
    }

    #[test]
    fn device_numbers_round_trip_through_the_fuse_encoding() {
        for (major, minor) in [(0, 0), (1, 3), (8, 17), (259, 65_537), (4095, 1_048_575)] {
            let encoded = encode_device(major, minor);
            assert_eq!(decode_device(encoded), (major, minor));
            // The same as glibc's makedev for these ranges.
            assert_eq!(u64::from(encoded), libc::makedev(major, minor));
        }
    }

    #[test]
    fn times_convert_and_clamp() {
        let time = Time {
            seconds: 1_700_000_000,
            nanoseconds: 123,
        };
        assert_eq!(to_nfs_time(to_system_time(time)), time);
        assert_eq!(
            to_nfs_time(UNIX_EPOCH - Duration::from_secs(5)),
            Time::default()
        );
        assert_eq!(
            to_nfs_time(UNIX_EPOCH + Duration::from_secs(1 << 40)).seconds,
            u32::MAX
        );
    }

    #[test]
    fn groups_are_read_from_the_status_line() {
        let status = "Name:\tbash\nUid:\t0\t0\t0\t0\nGroups:\t4 24 27 \nNSpid:\t1\n";
        assert_eq!(parse_groups(status), vec![4, 24, 27]);
        assert_eq!(parse_groups("Groups:\n"), Vec::<u32>::new());
        assert_eq!(parse_groups("nothing"), Vec::<u32>::new());
        let me = caller(0, 0, std::process::id());
        assert_eq!((me.uid, me.gid), (0, 0));
    }
}
