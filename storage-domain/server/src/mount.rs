//! MOUNT v3 (RFC 1813 appendix I) and PORTMAP v2 (RFC 1833 section 3).
//!
//! MOUNT hands out an export's root handle to a client the export admits
//! and keeps the list DUMP reports (bounded: it is advisory, as in every
//! NFS server). PORTMAP answers for the programs this server serves, all on
//! its one TCP port, so clients that ask the port mapper find it.

use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use nfs3::mount::{
    Export, ExportList, Group, MountEntry, MountError, MountList, MountOk, MountResult,
};
use nfs3::portmap::{Mapping, MappingList, PROTOCOL_TCP};
use vfs::FileSystem;
use xdr::AuthFlavor;

use crate::{Caller, Core};

/// Most entries kept for MOUNT DUMP.
const MAXIMUM_MOUNTS: usize = 1024;

impl Core {
    pub(crate) fn mount<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: nfs3::mount::Arguments,
    ) -> nfs3::mount::Results {
        use nfs3::mount::{Arguments, Results};
        match arguments {
            Arguments::Null(()) => Results::Null(()),
            Arguments::Mount(path) => Results::Mount(self.mount_export(fs, caller, path.path)),
            Arguments::Dump(()) => Results::Dump(MountList {
                entries: self
                    .mounts
                    .iter()
                    .map(|(client, directory)| MountEntry {
                        host_name: client.to_string().into_bytes(),
                        directory: directory.clone(),
                    })
                    .collect(),
            }),
            Arguments::Unmount(path) => {
                self.mounts.retain(|(client, directory)| {
                    *client != caller.client || *directory != path.path
                });
                Results::Unmount(())
            }
            Arguments::UnmountAll(()) => {
                self.mounts.retain(|(client, _)| *client != caller.client);
                Results::UnmountAll(())
            }
            Arguments::Export(()) => Results::Export(ExportList {
                exports: self
                    .exports
                    .iter()
                    .map(|export| Export {
                        directory: export.config.name.clone().into_bytes(),
                        groups: export
                            .config
                            .clients
                            .iter()
                            .map(|filter| Group {
                                name: filter.to_string().into_bytes(),
                            })
                            .collect(),
                    })
                    .collect(),
            }),
        }
    }

    fn mount_export<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        path: Vec<u8>,
    ) -> MountResult {
        // `/data/`, `//data` and `/data` name the same export, and an empty
        // path the root export (some clients strip the last slash).
        let path = crate::config::normalize_path(&path);
        let Some(index) = self
            .exports
            .iter()
            .position(|export| export.config.name.as_bytes() == path.as_slice())
        else {
            return self.mount_snapshot(fs, caller, path);
        };
        let export = &self.exports[index];
        if !export.config.admits(&caller.client) {
            return MountResult::Failed(MountError::Access);
        }
        // The export's directory may have been removed through another
        // export since the server started.
        if fs
            .getattr_checked(export.root, export.root_generation)
            .is_err()
        {
            return MountResult::Failed(MountError::NoEntry);
        }
        let entry = (caller.client, path);
        if !self.mounts.contains(&entry) {
            if self.mounts.len() >= MAXIMUM_MOUNTS {
                self.mounts.remove(0);
            }
            self.mounts.push(entry);
        }
        MountResult::Ok(MountOk {
            handle: self.root_handle(index),
            auth_flavors: vec![AuthFlavor::Sys.to_u32(), AuthFlavor::None.to_u32()],
        })
    }

    /// MNT of `EXPORT/.snapshots/NAME` (or `EXPORT/.snapshots`): that
    /// snapshot of the export, read-only, as an export of its own.
    fn mount_snapshot<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        path: Vec<u8>,
    ) -> MountResult {
        let snapshot_directory = crate::snapshots::SNAPSHOT_DIRECTORY;
        let mut components: Vec<&[u8]> = path
            .split(|&byte| byte == b'/')
            .filter(|component| !component.is_empty())
            .collect();
        let name = match components.as_slice() {
            [.., last] if *last == snapshot_directory => None,
            [.., directory, last] if *directory == snapshot_directory => Some(*last),
            _ => return MountResult::Failed(MountError::NoEntry),
        };
        components.truncate(components.len() - 1 - usize::from(name.is_some()));
        let mut export_name = Vec::new();
        for component in &components {
            export_name.push(b'/');
            export_name.extend_from_slice(component);
        }
        if export_name.is_empty() {
            export_name.push(b'/');
        }
        let Some(index) = self
            .exports
            .iter()
            .position(|export| export.config.name.as_bytes() == export_name.as_slice())
        else {
            return MountResult::Failed(MountError::NoEntry);
        };
        if !self.exports[index].config.admits(&caller.client) {
            return MountResult::Failed(MountError::Access);
        }
        let Ok(listing) = fs.list_snapshots() else {
            return MountResult::Failed(MountError::NoEntry);
        };
        let handle = match name {
            None => self.snapshot_directory_handle(index),
            Some(name) => match self.lookup_snapshot(fs, index, &listing, name) {
                Ok((handle, _)) => handle,
                Err(_) => return MountResult::Failed(MountError::NoEntry),
            },
        };
        let entry = (caller.client, path);
        if !self.mounts.contains(&entry) {
            if self.mounts.len() >= MAXIMUM_MOUNTS {
                self.mounts.remove(0);
            }
            self.mounts.push(entry);
        }
        MountResult::Ok(MountOk {
            handle,
            auth_flavors: vec![AuthFlavor::Sys.to_u32(), AuthFlavor::None.to_u32()],
        })
    }

    pub(crate) fn portmap(
        &mut self,
        arguments: nfs3::portmap::Arguments,
    ) -> nfs3::portmap::Results {
        use nfs3::portmap::{Arguments, Results};
        match arguments {
            Arguments::Null(()) => Results::Null(()),
            // Registrations are refused: this is not a general port mapper.
            Arguments::Set(_) => Results::Set(false),
            Arguments::Unset(_) => Results::Unset(false),
            Arguments::GetPort(wanted) => Results::GetPort(
                self.mappings()
                    .into_iter()
                    .find(|mapping| {
                        mapping.program == wanted.program
                            && mapping.version == wanted.version
                            && mapping.protocol == wanted.protocol
                    })
                    .map_or(0, |mapping| mapping.port),
            ),
            Arguments::Dump(()) => Results::Dump(MappingList {
                mappings: self.mappings(),
            }),
        }
    }

    fn mappings(&self) -> Vec<Mapping> {
        if self.port == 0 {
            return Vec::new();
        }
        let port = u32::from(self.port);
        [
            (nfs3::portmap::PROGRAM, nfs3::portmap::VERSION),
            (nfs3::mount::PROGRAM, nfs3::mount::VERSION),
            (nfs3::PROGRAM, nfs3::VERSION),
            (nfs3::nlm::PROGRAM, nfs3::nlm::VERSION),
        ]
        .into_iter()
        .map(|(program, version)| Mapping {
            program,
            version,
            protocol: PROTOCOL_TCP,
            port,
        })
        .collect()
    }
}
