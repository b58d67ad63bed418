//! Caller identities and the permission checks the server makes for them.
//!
//! Design: the file system is structural and trusts its caller; every
//! permission decision is made here, from the AUTH_SYS credential after the
//! export's squash rules, the way a Unix kernel would decide for a local
//! process (owner/group/other bits, root bypass), plus the NFS server
//! convention that the owner of a file may always read and write it
//! (clients check permissions at open time; a file opened for writing and
//! then chmod'ed read-only must still accept the writes).

use alloc::vec::Vec;

use vfs::{Attributes, FileType};
use xdr::Credential;

use crate::config::{ExportConfig, Squash};

/// Read permission bit (in the `rwx` triplet).
pub const READ: u32 = 4;
/// Write permission bit.
pub const WRITE: u32 = 2;
/// Execute / search permission bit.
pub const EXECUTE: u32 = 1;

/// The identity a call runs as, after squashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Effective uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub groups: Vec<u32>,
}

impl Identity {
    /// The identity for `credential` on `export` (AUTH_NONE callers are
    /// anonymous).
    pub fn for_export(credential: &Credential, export: &ExportConfig) -> Self {
        let anonymous = Identity {
            uid: export.anonymous_uid,
            gid: export.anonymous_gid,
            groups: Vec::new(),
        };
        let Credential::Sys(sys) = credential else {
            return anonymous;
        };
        match export.squash {
            Squash::All => anonymous,
            Squash::Root => Identity {
                uid: if sys.uid == 0 {
                    export.anonymous_uid
                } else {
                    sys.uid
                },
                gid: if sys.gid == 0 {
                    export.anonymous_gid
                } else {
                    sys.gid
                },
                groups: sys
                    .gids
                    .iter()
                    .map(|&gid| if gid == 0 { export.anonymous_gid } else { gid })
                    .collect(),
            },
            Squash::None => Identity {
                uid: sys.uid,
                gid: sys.gid,
                groups: sys.gids.clone(),
            },
        }
    }

    /// Whether this is the superuser.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether the identity is in group `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Whether the identity owns the object.
    pub fn owns(&self, attributes: &Attributes) -> bool {
        self.uid == attributes.uid
    }

    /// Whether `wanted` (a mask of [`READ`], [`WRITE`], [`EXECUTE`]) is
    /// granted by the mode bits, with root's bypass (root may execute only
    /// what someone may execute, and search every directory).
    pub fn may(&self, attributes: &Attributes, wanted: u32) -> bool {
        if self.is_root() {
            let execute_ok = wanted & EXECUTE == 0
                || attributes.file_type == FileType::Directory
                || attributes.mode & 0o111 != 0;
            return execute_ok;
        }
        let bits = if self.owns(attributes) {
            attributes.mode >> 6
        } else if self.in_group(attributes.gid) {
            attributes.mode >> 3
        } else {
            attributes.mode
        } & 7;
        bits & wanted == wanted
    }

    /// READ/WRITE permission with the owner override.
    pub fn may_access_data(&self, attributes: &Attributes, wanted: u32) -> bool {
        self.owns(attributes) || self.may(attributes, wanted)
    }

    /// Whether the identity may remove or rename entry `victim` from
    /// `directory`: write and search on the directory, and with the sticky
    /// bit set, ownership of the entry or the directory.
    pub fn may_remove(&self, directory: &Attributes, victim: &Attributes) -> bool {
        if !self.may(directory, WRITE | EXECUTE) {
            return false;
        }
        directory.mode & 0o1000 == 0 || self.is_root() || self.owns(directory) || self.owns(victim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfs::{DeviceNumber, Generation, InodeId, Timestamp};
    use xdr::AuthSys;

    fn attributes(mode: u32, uid: u32, gid: u32) -> Attributes {
        Attributes {
            inode: InodeId(2),
            generation: Generation(1),
            file_type: FileType::Regular,
            mode,
            nlink: 1,
            uid,
            gid,
            size: 0,
            used: 0,
            rdev: DeviceNumber::default(),
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            change: 0,
        }
    }

    fn sys(uid: u32, gid: u32, gids: &[u32]) -> Credential {
        Credential::Sys(AuthSys {
            stamp: 0,
            machine_name: b"client".to_vec(),
            uid,
            gid,
            gids: gids.to_vec(),
        })
    }

    #[test]
    fn squash_rules() {
        let mut export = ExportConfig::whole_file_system();
        let root = Identity::for_export(&sys(0, 0, &[0, 5]), &export);
        assert_eq!((root.uid, root.gid), (65_534, 65_534));
        assert_eq!(root.groups, [65_534, 5]);
        export.squash = Squash::None;
        assert!(Identity::for_export(&sys(0, 0, &[]), &export).is_root());
        export.squash = Squash::All;
        assert_eq!(
            Identity::for_export(&sys(1000, 100, &[]), &export).uid,
            65_534
        );
        export.squash = Squash::None;
        assert_eq!(Identity::for_export(&Credential::None, &export).uid, 65_534);
    }

    #[test]
    fn mode_bits_by_class() {
        let file = attributes(0o640, 1000, 100);
        let owner = Identity::for_export(&sys(1000, 1, &[]), &ExportConfig::whole_file_system());
        let member =
            Identity::for_export(&sys(2000, 1, &[100]), &ExportConfig::whole_file_system());
        let other = Identity::for_export(&sys(3000, 3000, &[]), &ExportConfig::whole_file_system());
        assert!(owner.may(&file, READ | WRITE));
        assert!(member.may(&file, READ));
        assert!(!member.may(&file, WRITE));
        assert!(!other.may(&file, READ));
        let read_only = attributes(0o444, 1000, 100);
        assert!(owner.may_access_data(&read_only, WRITE));
        assert!(!member.may_access_data(&read_only, WRITE));
    }

    #[test]
    fn root_executes_only_executables() {
        let mut export = ExportConfig::whole_file_system();
        export.squash = Squash::None;
        let root = Identity::for_export(&sys(0, 0, &[]), &export);
        assert!(root.may(&attributes(0, 5, 5), READ | WRITE));
        assert!(!root.may(&attributes(0o644, 5, 5), EXECUTE));
        assert!(root.may(&attributes(0o100, 5, 5), EXECUTE));
    }

    #[test]
    fn sticky_directories() {
        let mut directory = attributes(0o1777, 0, 0);
        directory.file_type = FileType::Directory;
        let victim = attributes(0o644, 1000, 1000);
        let export = ExportConfig::whole_file_system();
        let owner = Identity::for_export(&sys(1000, 1000, &[]), &export);
        let stranger = Identity::for_export(&sys(2000, 2000, &[]), &export);
        assert!(owner.may_remove(&directory, &victim));
        assert!(!stranger.may_remove(&directory, &victim));
        directory.mode = 0o777;
        assert!(stranger.may_remove(&directory, &victim));
    }
}
