//! Requests that change names: mknod, mkdir, symlink, link, unlink, rmdir,
//! rename, and readlink (RFC 1813 sections 3.3.5, 3.3.9-3.3.15).
//!
//! Unlinking a file that is open here renames it to a hidden name instead
//! (the "silly rename" every NFS client does), so the open file keeps
//! working; the last release removes it.

use std::ffi::OsStr;

use fuser::{Errno, FileAttr, INodeNo};
use nfs3::procedures::create::{
    CreatedOk, MakeDirectoryArguments, MakeNodeArguments, MakeNodeData, SymlinkArguments,
};
use nfs3::procedures::inspect::{LookupArguments, ReadLinkArguments};
use nfs3::procedures::remove::{LinkArguments, RemoveArguments, RenameArguments};
use nfs3::{DeviceNumbers, DirectoryOperationArguments, FileHandle, SettableAttributes};

use super::{attributes, lock, name_bytes, nfs, NfsFilesystem};
use crate::client::Caller;

fn location(directory: FileHandle, name: &OsStr) -> DirectoryOperationArguments {
    DirectoryOperationArguments {
        directory,
        name: name_bytes(name),
    }
}

fn with_mode(mode: u32) -> SettableAttributes {
    SettableAttributes {
        mode: Some(mode & 0o7777),
        ..SettableAttributes::default()
    }
}

impl NfsFilesystem {
    /// The entry for an object a CREATE, MKDIR, SYMLINK or MKNOD made: its
    /// handle from the reply, or from a LOOKUP when the server sent none.
    pub(super) fn created_entry(
        &self,
        caller: &Caller,
        parent: u64,
        directory: &FileHandle,
        name: &OsStr,
        created: CreatedOk,
    ) -> Result<FileAttr, Errno> {
        self.own_directory_change(parent, &created.directory_wcc, |children| {
            children.insert(name_bytes(name));
        });
        match created.object {
            Some(handle) => self.entry(caller, &handle, created.object_attributes),
            None => {
                let found = nfs(self.client.lookup(
                    caller,
                    LookupArguments {
                        what: location(directory.clone(), name),
                    },
                ))?;
                self.entry(caller, &found.object, found.object_attributes)
            }
        }
    }

    pub(super) fn do_readlink(&self, caller: &Caller, node: INodeNo) -> Result<Vec<u8>, Errno> {
        let symlink = self.handle_of(node)?;
        nfs(self.client.read_link(caller, ReadLinkArguments { symlink })).map(|ok| ok.data)
    }

    pub(super) fn do_mknod(
        &self,
        caller: &Caller,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        device: u32,
    ) -> Result<FileAttr, Errno> {
        let directory = self.handle_of(parent)?;
        let attributes = with_mode(mode);
        let (major, minor) = attributes::decode_device(device);
        let device = DeviceNumbers { major, minor };
        let what = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => {
                let (attributes, _) =
                    self.create_file(caller, parent.0, &directory, name, mode, libc::O_EXCL)?;
                return Ok(attributes);
            }
            libc::S_IFCHR => MakeNodeData::CharacterDevice { attributes, device },
            libc::S_IFBLK => MakeNodeData::BlockDevice { attributes, device },
            libc::S_IFIFO => MakeNodeData::Fifo(attributes),
            libc::S_IFSOCK => MakeNodeData::Socket(attributes),
            _ => return Err(Errno::EINVAL),
        };
        let _own = self.own_calls(&[parent.0]);
        let created = nfs(self.client.make_node(
            caller,
            MakeNodeArguments {
                location: location(directory.clone(), name),
                what,
            },
        ))?;
        self.created_entry(caller, parent.0, &directory, name, created)
    }

    pub(super) fn do_mkdir(
        &self,
        caller: &Caller,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        let directory = self.handle_of(parent)?;
        let _own = self.own_calls(&[parent.0]);
        let created = nfs(self.client.make_directory(
            caller,
            MakeDirectoryArguments {
                location: location(directory.clone(), name),
                attributes: with_mode(mode),
            },
        ))?;
        let made = self.created_entry(caller, parent.0, &directory, name, created)?;
        // A directory made here is empty, and this driver knows every name
        // in it for as long as nobody else changes it; only if the table
        // shows it as made (nobody changed it already).
        if self.coherence.is_some() {
            let mut nodes = lock(&self.nodes);
            if let Some(node) = nodes.get_mut(made.ino.0) {
                let as_made = node.known.is_some_and(|known| {
                    known.size == made.size
                        && known.modify_time == attributes::to_nfs_time(made.mtime)
                        && known.change_time == attributes::to_nfs_time(made.ctime)
                });
                if as_made && node.names.is_empty() {
                    node.children = Some(super::nodes::Children::default());
                }
            }
        }
        Ok(made)
    }

    pub(super) fn do_symlink(
        &self,
        caller: &Caller,
        parent: INodeNo,
        name: &OsStr,
        target: &std::path::Path,
    ) -> Result<FileAttr, Errno> {
        let directory = self.handle_of(parent)?;
        let _own = self.own_calls(&[parent.0]);
        let created = nfs(self.client.symlink(
            caller,
            SymlinkArguments {
                location: location(directory.clone(), name),
                attributes: SettableAttributes::default(),
                target: name_bytes(target.as_os_str()),
            },
        ))?;
        self.created_entry(caller, parent.0, &directory, name, created)
    }

    pub(super) fn do_link(
        &self,
        caller: &Caller,
        node: INodeNo,
        new_parent: INodeNo,
        new_name: &OsStr,
    ) -> Result<FileAttr, Errno> {
        let file = self.handle_of(node)?;
        let directory = self.handle_of(new_parent)?;
        let _own = self.own_calls(&[new_parent.0]);
        let linked = nfs(self.client.link(
            caller,
            LinkArguments {
                file: file.clone(),
                link: location(directory, new_name),
            },
        ))?;
        self.own_directory_change(new_parent.0, &linked.link_directory_wcc, |children| {
            children.insert(name_bytes(new_name));
        });
        self.entry(caller, &file, linked.file_attributes)
    }

    pub(super) fn do_unlink(
        &self,
        caller: &Caller,
        parent: INodeNo,
        name: &OsStr,
    ) -> Result<(), Errno> {
        let directory = self.handle_of(parent)?;
        let _own = self.own_calls(&[parent.0]);
        if self.hide_if_open(caller, parent.0, &directory, name)? {
            return Ok(());
        }
        let removed = nfs(self.client.remove(
            caller,
            RemoveArguments {
                object: location(directory, name),
            },
        ))?;
        self.own_directory_change(parent.0, &removed.directory_wcc, |children| {
            children.remove(&name_bytes(name));
        });
        Ok(())
    }

    /// If `name` is the last link of a file open here, renames it to a
    /// hidden name and returns true. Costs a LOOKUP only while some file is
    /// open.
    fn hide_if_open(
        &self,
        caller: &Caller,
        parent: u64,
        directory: &FileHandle,
        name: &OsStr,
    ) -> Result<bool, Errno> {
        if lock(&self.files).is_empty() {
            return Ok(false);
        }
        let Ok(found) = nfs(self.client.lookup(
            caller,
            LookupArguments {
                what: location(directory.clone(), name),
            },
        )) else {
            return Ok(false);
        };
        let open_node = {
            let nodes = lock(&self.nodes);
            nodes
                .find(&found.object)
                .filter(|id| nodes.get(*id).is_some_and(|node| node.open_count > 0))
        };
        let Some(node) = open_node else {
            return Ok(false);
        };
        // Another name keeps the file (a hard link, or the hidden name of
        // an earlier unlink): this name can simply go.
        let links = found
            .object_attributes
            .as_ref()
            .map_or(1, |attributes| attributes.link_count);
        if links > 1 {
            return Ok(false);
        }
        let counter = self
            .silly_counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let hidden = format!(".guest-driver-{}-{node}-{counter}", std::process::id());
        let renamed = nfs(self.client.rename(
            caller,
            RenameArguments {
                from: location(directory.clone(), name),
                to: location(directory.clone(), OsStr::new(&hidden)),
            },
        ))?;
        self.own_directory_change(parent, &renamed.from_directory_wcc, |children| {
            children.rename(&name_bytes(name), hidden.as_bytes().to_vec());
        });
        // The file's last release may have run while the RENAME was in
        // flight (FUSE sends RELEASE after `close` returned, so a program's
        // `close; unlink` races it): it found no hidden name to remove.
        // Checked under the lock the release takes, so exactly one of the
        // two removes the hidden name (the soak found such names left).
        let still_open = match lock(&self.nodes).get_mut(node) {
            Some(node) if node.open_count > 0 => {
                node.silly_name = Some((directory.clone(), hidden.clone().into_bytes()));
                true
            }
            _ => false,
        };
        if !still_open {
            let removed = nfs(self.client.remove(
                caller,
                RemoveArguments {
                    object: location(directory.clone(), OsStr::new(&hidden)),
                },
            ))?;
            self.own_directory_change(parent, &removed.directory_wcc, |children| {
                children.remove(hidden.as_bytes());
            });
        }
        Ok(true)
    }

    pub(super) fn do_rmdir(
        &self,
        caller: &Caller,
        parent: INodeNo,
        name: &OsStr,
    ) -> Result<(), Errno> {
        let directory = self.handle_of(parent)?;
        let _own = self.own_calls(&[parent.0]);
        let removed = nfs(self.client.remove_directory(
            caller,
            RemoveArguments {
                object: location(directory, name),
            },
        ))?;
        self.own_directory_change(parent.0, &removed.directory_wcc, |children| {
            children.remove(&name_bytes(name));
        });
        Ok(())
    }

    pub(super) fn do_rename(
        &self,
        caller: &Caller,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
    ) -> Result<(), Errno> {
        let from = self.handle_of(parent)?;
        let to = self.handle_of(new_parent)?;
        let _own = self.own_calls(&[parent.0, new_parent.0]);
        // A rename over a file open here would remove it: hide it first.
        self.hide_if_open(caller, new_parent.0, &to, new_name)?;
        let renamed = nfs(self.client.rename(
            caller,
            RenameArguments {
                from: location(from, name),
                to: location(to, new_name),
            },
        ))?;
        if parent == new_parent {
            self.own_directory_change(parent.0, &renamed.from_directory_wcc, |children| {
                children.rename(&name_bytes(name), name_bytes(new_name));
            });
        } else {
            self.own_directory_change(parent.0, &renamed.from_directory_wcc, |children| {
                children.remove(&name_bytes(name));
            });
            self.own_directory_change(new_parent.0, &renamed.to_directory_wcc, |children| {
                children.insert(name_bytes(new_name));
            });
        }
        // The kernel moves its cached entry to the new name, keeping its
        // timeout: the name is cached there now.
        let _ = self.name_timeout(new_parent.0, new_name);
        Ok(())
    }
}
