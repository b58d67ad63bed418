//! Open files: create, open, read, write, flush/fsync (COMMIT), release
//! (RFC 1813 sections 3.3.6-3.3.8 and 3.3.21).
//!
//! Close-to-open: `open` always asks the server for the file's attributes
//! and keeps the kernel's cached pages only when `(mtime, size)` equal what
//! those pages match; `flush` (every close) commits the file's UNSTABLE
//! writes, so the next open anywhere sees the data. A commit whose verifier
//! differs from the writes' means the server restarted and lost them: the
//! close (or fsync) fails with EIO, as the Linux NFS client would after
//! failing to resend (this driver keeps no copy to resend). The loss is
//! reported once: the file's later writes and fsyncs work again.

use std::ffi::OsStr;

use fuser::{Errno, FileAttr, FopenFlags, INodeNo, OpenAccMode, OpenFlags};
use nfs3::procedures::create::{CreateArguments, CreateHow};
use nfs3::procedures::data::{CommitArguments, ReadArguments};
use nfs3::procedures::inspect::{AccessArguments, LookupArguments};
use nfs3::{
    DirectoryOperationArguments, FileHandle, NfsError, ProcedureResult, SettableAttributes,
};

use super::{errno, lock, name_bytes, nfs, NfsFilesystem, OpenFile};
use crate::client::{Caller, ReadData};

impl NfsFilesystem {
    /// Registers an open file on `node` and returns its FUSE handle.
    fn register_open(&self, node: u64, handle: FileHandle, caller: &Caller) -> u64 {
        let file = self.new_file_handle();
        if let Some(node) = lock(&self.nodes).get_mut(node) {
            node.open_count += 1;
        }
        lock(&self.files).insert(
            file,
            OpenFile {
                node,
                handle,
                caller: caller.clone(),
            },
        );
        self.writes.opened(file, node);
        file
    }

    /// Opens `node`: returns the FUSE handle, the open flags, and whether
    /// the file changed since the kernel's cached pages were filled.
    pub(super) fn do_open(
        &self,
        caller: &Caller,
        node: INodeNo,
        flags: OpenFlags,
    ) -> Result<(u64, FopenFlags, bool), Errno> {
        self.writes.drain(node.0);
        let (handle, file_id) = {
            let nodes = lock(&self.nodes);
            let entry = nodes.get(node.0).ok_or(Errno::ESTALE)?;
            (entry.handle.clone(), entry.file_id())
        };
        let (attributes, entry) =
            self.current_attributes_for(|| caller.clone(), &handle, file_id)?;
        // A snapshot's files never change: what the kernel holds of them
        // is current (the watcher drops it when the snapshots change).
        if !is_snapshot_object(attributes.file_id) {
            self.revalidate_at_open(node.0, entry.as_ref());
        }
        // A snapshot's files (under `.snapshots`) can never be written:
        // say so at open, as a read-only file system does, rather than at
        // the first write's flush.
        if flags.acc_mode() != OpenAccMode::O_RDONLY && is_snapshot_object(attributes.file_id) {
            return Err(Errno::EROFS);
        }
        if !self.settings.kernel_permissions {
            self.check_open_access(caller, &handle, flags)?;
        }
        let current = (attributes.modify_time, attributes.size);
        let unchanged = {
            let mut nodes = lock(&self.nodes);
            match nodes.get_mut(node.0) {
                Some(entry) => {
                    let unchanged = entry.data_version == Some(current);
                    entry.data_version = Some(current);
                    unchanged
                }
                None => false,
            }
        };
        let file = self.register_open(node.0, handle, caller);
        let mut open_flags = if unchanged {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        // A read-only handle never has writes to send or commit, so its
        // close needs no FLUSH: the kernel then returns from close(2)
        // without an upcall (one round trip less for every header a
        // compiler reads).
        if flags.acc_mode() == OpenAccMode::O_RDONLY {
            open_flags |= FopenFlags::FOPEN_NOFLUSH;
        }
        Ok((file, open_flags, !unchanged))
    }

    /// Close-to-open with cached attributes: when the file changed since
    /// the kernel's attributes were filled (the watcher may not have told
    /// it yet), they are invalidated before the open is answered, so the
    /// reads that follow see the current size.
    fn revalidate_at_open(&self, node: u64, entry: Option<&super::table::TableEntry>) {
        if self.coherence.is_none() || self.settings.attribute_timeout.is_zero() {
            return;
        }
        let stale = {
            let mut nodes = lock(&self.nodes);
            let Some(found) = nodes.get_mut(node) else {
                return;
            };
            match entry {
                Some(entry) if found.known == Some(super::nodes::Known::of(entry)) => false,
                Some(entry) => {
                    found.learn(entry);
                    true
                }
                // Not in the table: nothing says the cache is current.
                None => true,
            }
        };
        if stale {
            self.notify_attributes_stale(INodeNo(node));
        }
    }

    /// ACCESS for the open mode, when the kernel does not check
    /// permissions itself.
    fn check_open_access(
        &self,
        caller: &Caller,
        handle: &FileHandle,
        flags: OpenFlags,
    ) -> Result<(), Errno> {
        use nfs3::procedures::inspect::{ACCESS_EXTEND, ACCESS_MODIFY, ACCESS_READ};
        let wanted = match flags.acc_mode() {
            OpenAccMode::O_RDONLY => ACCESS_READ,
            OpenAccMode::O_WRONLY => ACCESS_MODIFY | ACCESS_EXTEND,
            OpenAccMode::O_RDWR => ACCESS_READ | ACCESS_MODIFY | ACCESS_EXTEND,
        };
        let granted = nfs(self.client.access(
            caller,
            AccessArguments {
                object: handle.clone(),
                access: wanted,
            },
        ))?;
        if granted.access & wanted == wanted {
            Ok(())
        } else {
            Err(Errno::EACCES)
        }
    }

    /// CREATE GUARDED, falling back to opening an existing file unless
    /// `O_EXCL` was asked (GUARDED never changes an existing file's mode,
    /// which UNCHECKED would).
    pub(super) fn create_file(
        &self,
        caller: &Caller,
        parent: u64,
        directory: &FileHandle,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, FileHandle), Errno> {
        let location = DirectoryOperationArguments {
            directory: directory.clone(),
            name: name_bytes(name),
        };
        let _own = self.own_calls(&[parent]);
        let created = self.client.create(
            caller,
            CreateArguments {
                location: location.clone(),
                how: CreateHow::Guarded(SettableAttributes {
                    mode: Some(mode & 0o7777),
                    ..SettableAttributes::default()
                }),
            },
        );
        let mut made_here = false;
        let (handle, attributes) = match nfs(created) {
            Ok(created) => {
                made_here = true;
                self.own_directory_change(parent, &created.directory_wcc, |children| {
                    children.insert(name_bytes(name));
                });
                match created.object {
                    Some(handle) => (handle, created.object_attributes),
                    None => {
                        let found = nfs(self
                            .client
                            .lookup(caller, LookupArguments { what: location }))?;
                        (found.object, found.object_attributes)
                    }
                }
            }
            Err(error)
                if error == errno::from_nfs(NfsError::Exist) && flags & libc::O_EXCL == 0 =>
            {
                let found = nfs(self
                    .client
                    .lookup(caller, LookupArguments { what: location }))?;
                (found.object, found.object_attributes)
            }
            Err(error) => return Err(error),
        };
        let made = made_here
            .then(|| caller.uid == 0 && attributes.as_ref().is_some_and(|found| found.uid == 0));
        let attributes = self.entry(caller, &handle, attributes)?;
        if made.is_some() {
            if let Some(entry) = lock(&self.nodes).get_mut(attributes.ino.0) {
                entry.made_here = made;
            }
        }
        Ok((attributes, handle))
    }

    pub(super) fn do_create(
        &self,
        caller: &Caller,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64), Errno> {
        let directory = self.handle_of(parent)?;
        let (attributes, handle) =
            self.create_file(caller, parent.0, &directory, name, mode, flags)?;
        let node = attributes.ino.0;
        if let Some(entry) = lock(&self.nodes).get_mut(node) {
            // A new file has no cached pages; an existing one opened
            // through create gets them dropped by the reply below unless
            // they match.
            entry.data_version = Some((
                super::attributes::to_nfs_time(attributes.mtime),
                attributes.size,
            ));
        }
        let file = self.register_open(node, handle, caller);
        Ok((attributes, file))
    }

    fn open_file(&self, file: u64) -> Result<(FileHandle, Caller, u64), Errno> {
        lock(&self.files)
            .get(&file)
            .map(|open| (open.handle.clone(), open.caller.clone(), open.node))
            .ok_or(Errno::EBADF)
    }

    /// READs `size` bytes at `offset`. The answer to FUSE is the data where
    /// it arrived (in the reply record) when one READ brings it all, as it
    /// does unless `size` exceeds the read size; pieces of several READs
    /// are joined.
    pub(super) fn do_read(&self, file: u64, offset: u64, size: u32) -> Result<ReadData, Errno> {
        let (handle, caller, node) = self.open_file(file)?;
        self.writes.drain(node);
        let size = size as usize;
        let mut joined: Vec<u8> = Vec::new();
        while joined.len() < size {
            let count = (size - joined.len()).min(self.settings.read_size as usize);
            let reply = self.client.read_in_place(
                &caller,
                ReadArguments {
                    file: handle.clone(),
                    offset: offset + joined.len() as u64,
                    count: count as u32,
                },
            );
            let (ok, mut data) = nfs(reply.map(|(result, data)| match result {
                ProcedureResult::Ok(ok) => ProcedureResult::Ok((ok, data)),
                ProcedureResult::Failed { status, body } => {
                    ProcedureResult::Failed { status, body }
                }
            }))?;
            data.truncate(count);
            let received = data.bytes().len();
            let last = ok.end_of_file || received == 0 || joined.len() + received >= size;
            if joined.is_empty() && last {
                return Ok(data);
            }
            joined.extend_from_slice(data.bytes());
            if last {
                break;
            }
        }
        Ok(ReadData::from_vec(joined))
    }

    pub(super) fn do_write(&self, file: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let (handle, caller, node) = self.open_file(file)?;
        let own = self.own_calls(&[node]);
        self.writes
            .write(file, node, handle, caller, offset, data, own)
    }

    /// Waits for the file's queued writes (and, after a failed one, for
    /// the kernel's pages of the file to be dropped); their first failure
    /// not yet reported is the answer. Called by `fsync`, `flush` and
    /// `release` only: the kernel holds none of the file's pages locked.
    pub(super) fn settle_writes(&self, file: u64) -> Result<(), Errno> {
        let (_, _, node) = self.open_file(file)?;
        self.writes.drain(node);
        self.writes.wait_invalidated(node);
        match self.writes.take_error(file, node) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// COMMIT the file (after its queued writes): `fsync` (`always`), and
    /// `close` with commit on close (only when UNSTABLE writes wait).
    ///
    /// `fsync` sends a COMMIT even when no UNSTABLE write of the file is
    /// known to wait: its own creation, and writes made before a restart
    /// of this driver, must be durable too when it returns (`sync FILE`
    /// opens read-only and fsyncs). Whether a server restart lost some of
    /// the file's writes is known from the verifiers they got, through any
    /// descriptor: kept per file handle (not per descriptor, and
    /// past the kernel forgetting the node).
    pub(super) fn do_commit(&self, file: u64, always: bool) -> Result<(), Errno> {
        self.settle_writes(file)?;
        let (handle, caller, _) = self.open_file(file)?;
        let expected = {
            let mut nodes = lock(&self.nodes);
            match nodes.unstable(&handle) {
                Some(unstable) if unstable.lost => {
                    // Reported once, as Linux reports a writeback error
                    // once per file: the file's later writes and fsyncs
                    // go on (those since the restart are still waiting).
                    unstable.lost = false;
                    log::error!("the server restarted and lost uncommitted writes");
                    return Err(Errno::EIO);
                }
                Some(unstable) => Some(*unstable),
                None if always => None,
                None => return Ok(()),
            }
        };
        let ok = nfs(self.client.commit(
            &caller,
            CommitArguments {
                file: handle.clone(),
                offset: 0,
                count: 0,
            },
        ))?;
        let Some(expected) = expected else {
            return Ok(());
        };
        // Forget what this COMMIT covered, unless more writes came since.
        lock(&self.nodes).committed(&handle, expected);
        if ok.verifier != expected.verifier {
            log::error!("the server restarted and lost uncommitted writes");
            return Err(Errno::EIO);
        }
        Ok(())
    }

    /// `fsync` of a directory: a COMMIT of the directory. The storage
    /// domain commits every change at once, names included, so this makes
    /// the directory's creations, removals and renames durable when the
    /// export answered them before their commit (`vrpc=local`, `async`).
    /// A server that refuses a COMMIT of a directory (RFC 1813 names a
    /// regular file: NFS3ERR_ISDIR, INVAL or NOTSUPP) follows the RFC's
    /// rule that a namespace change is committed before its reply: nothing
    /// is left to wait for.
    pub(super) fn do_sync_directory(&self, caller: &Caller, node: INodeNo) -> Result<(), Errno> {
        let handle = self.handle_of(node)?;
        let committed = self.client.commit(
            caller,
            CommitArguments {
                file: handle,
                offset: 0,
                count: 0,
            },
        );
        match committed {
            Ok(nfs3::ProcedureResult::Failed {
                status: NfsError::IsDirectory | NfsError::Invalid | NfsError::NotSupported,
                ..
            }) => Ok(()),
            other => nfs(other).map(drop),
        }
    }

    pub(super) fn do_release(&self, file: u64) -> Result<(), Errno> {
        let committed = if self.settings.commit_on_close {
            self.do_commit(file, false)
        } else {
            self.settle_writes(file)
        };
        let Some(open) = lock(&self.files).remove(&file) else {
            return Err(Errno::EBADF);
        };
        self.writes.closed(file);
        let hidden = {
            let mut nodes = lock(&self.nodes);
            let hidden = match nodes.get_mut(open.node) {
                Some(node) => {
                    node.open_count = node.open_count.saturating_sub(1);
                    if node.open_count == 0 {
                        node.silly_name.take()
                    } else {
                        None
                    }
                }
                None => None,
            };
            nodes.collect(open.node);
            hidden
        };
        if let Some((directory, name)) = hidden {
            // Recorded as this driver's own change of the directory, where
            // the kernel still knows it: the watcher then keeps what is
            // cached there, and a listing in flight is not kept.
            let parent = lock(&self.nodes).find(&directory);
            let _own = self.own_calls(parent.as_slice());
            let removed = nfs(self.client.remove(
                &open.caller,
                nfs3::procedures::remove::RemoveArguments {
                    object: DirectoryOperationArguments {
                        directory,
                        name: name.clone(),
                    },
                },
            ));
            match removed {
                Ok(removed) => {
                    if let Some(parent) = parent {
                        self.own_directory_change(parent, &removed.directory_wcc, |children| {
                            children.remove(&name);
                        });
                    }
                }
                Err(error) => log::warn!("removing a hidden unlinked file failed: {error:?}"),
            }
        }
        committed
    }
}

/// The file id the storage domain gives every export's `.snapshots`
/// directory (`docs/nfs-server.md`, "Snapshots: `.snapshots`").
pub const SNAPSHOT_DIRECTORY_FILE_ID: u64 = 1 << 63;

/// The name of that directory in an export's root. The server answers a
/// LOOKUP of it but lists it nowhere, so a listing of the root must not
/// answer "not found" for it.
pub const SNAPSHOT_DIRECTORY_NAME: &str = ".snapshots";

/// Whether a file id is one the storage domain gives objects inside a
/// snapshot (above [`SNAPSHOT_DIRECTORY_FILE_ID`]; live file ids are inode
/// numbers): they never change, and are never in the metadata table.
pub fn is_snapshot_object(file_id: u64) -> bool {
    file_id > SNAPSHOT_DIRECTORY_FILE_ID
}
