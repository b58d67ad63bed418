//! `.snapshots`: every snapshot of the file system, read-only, under the
//! root of every export (as ZFS's `.zfs/snapshot` and NetApp's
//! `.snapshot`).
//!
//! Design: `.snapshots` is answered by the server, not stored: LOOKUP of
//! that name in an export's root finds it, and `.snapshots/NAME` is the
//! export's directory as snapshot NAME holds it. It is hidden from READDIR
//! of the root (as ZFS's default `snapdir=hidden`), so `find`, `du`,
//! `rm -r`, `tar` and `rsync` of an export do not walk every snapshot;
//! whoever knows the name looks it up. A call whose first handle names a
//! snapshot object runs the ordinary procedure inside
//! [`vfs::FileSystem::in_snapshot`] with the call's tree set to that
//! snapshot, so every handle made during it carries the snapshot id
//! (`handle.rs`), its attributes are never published in the metadata
//! table (a deleted snapshot must not leave attributes a guest could
//! trust), and its file ids are moved out of the live range. Every change
//! (SETATTR, WRITE, CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME,
//! LINK) into, out of or inside a snapshot answers NFS3ERR_ROFS; COMMIT is
//! answered as usual. A handle into a deleted snapshot answers
//! NFS3ERR_STALE.

use alloc::vec::Vec;

use nfs3::procedures::data::CommitOk;
use nfs3::procedures::directory::{
    entry_size, read_directory_overhead, Entry, EntryPlus, ReadDirectoryOk, ReadDirectoryPlusOk,
};
use nfs3::procedures::inspect::{
    AccessOk, AttributesFailed, GetAttributesOk, LookupFailed, LookupOk, ACCESS_LOOKUP, ACCESS_READ,
};
use nfs3::{Arguments, FileHandle, NfsError, ProcedureResult, Results, WccData};
use vfs::{Attributes, FileSystem, FileType, FsError, Generation, InodeId, SnapshotListing};

use crate::convert::{file_attributes, status, wcc_attributes};
use crate::handle::{HandleContents, Tree};
use crate::identity::{Identity, EXECUTE, READ};
use crate::procedures::{failure, is_non_idempotent};
use crate::{Caller, Core, MAX_IO_SIZE};

/// The name of the snapshot directory in every export's root.
pub const SNAPSHOT_DIRECTORY: &[u8] = b".snapshots";

/// The file id of every export's `.snapshots` directory. Live file ids are
/// inode numbers (below 2^26 in sdfs); snapshot objects take the upper
/// half (see [`snapshot_file_id`]).
pub const SNAPSHOT_DIRECTORY_FILE_ID: u64 = 1 << 63;

/// The file id of `inode` in snapshot `id`: bit 63 set, the low 31 bits of
/// the id above the low 32 bits of the inode. Distinct from every live
/// file id; two snapshots' objects can share one only when their ids are
/// 2^31 commits apart (file ids are not handles: nothing aliases then,
/// only `find`'s loop detection could be misled).
pub fn snapshot_file_id(id: u64, inode: InodeId) -> u64 {
    SNAPSHOT_DIRECTORY_FILE_ID | ((id & 0x7fff_ffff) << 32) | (inode.0 & 0xffff_ffff)
}

/// A digest of the listing: the `.snapshots` directory's change counter
/// (it moves whenever a snapshot is taken or deleted; never 0).
fn listing_change(listing: &SnapshotListing) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&(listing.snapshots.len() as u64).to_be_bytes());
    for snapshot in &listing.snapshots {
        eat(&snapshot.id.to_be_bytes());
        eat(&[snapshot.name.len() as u8]);
        eat(&snapshot.name);
    }
    hash.max(1)
}

/// The attributes of a `.snapshots` directory: root's, mode 0555, one
/// link per snapshot (each is a directory), times of the last change.
fn directory_attributes(listing: &SnapshotListing) -> Attributes {
    let count = listing.snapshots.len() as u64;
    Attributes {
        inode: InodeId(0),
        generation: Generation(0),
        file_type: FileType::Directory,
        mode: 0o555,
        nlink: 2u32.saturating_add(u32::try_from(count).unwrap_or(u32::MAX)),
        uid: 0,
        gid: 0,
        size: count,
        used: 0,
        rdev: Default::default(),
        atime: listing.changed,
        mtime: listing.changed,
        ctime: listing.changed,
        change: listing_change(listing),
    }
}

/// The first handle of a call: the one whose tree decides where it runs.
fn primary_handle(arguments: &Arguments) -> Option<&FileHandle> {
    Some(match arguments {
        Arguments::Null(()) => return None,
        Arguments::GetAttributes(arguments) => &arguments.object,
        Arguments::SetAttributes(arguments) => &arguments.object,
        Arguments::Lookup(arguments) => &arguments.what.directory,
        Arguments::Access(arguments) => &arguments.object,
        Arguments::ReadLink(arguments) => &arguments.symlink,
        Arguments::Read(arguments) => &arguments.file,
        Arguments::Write(arguments) => &arguments.file,
        Arguments::Create(arguments) => &arguments.location.directory,
        Arguments::MakeDirectory(arguments) => &arguments.location.directory,
        Arguments::Symlink(arguments) => &arguments.location.directory,
        Arguments::MakeNode(arguments) => &arguments.location.directory,
        Arguments::Remove(arguments) => &arguments.object.directory,
        Arguments::RemoveDirectory(arguments) => &arguments.object.directory,
        Arguments::Rename(arguments) => &arguments.from.directory,
        Arguments::Link(arguments) => &arguments.file,
        Arguments::ReadDirectory(arguments) => &arguments.directory,
        Arguments::ReadDirectoryPlus(arguments) => &arguments.directory,
        Arguments::FileSystemStatistics(arguments) => &arguments.object,
        Arguments::FileSystemInformation(arguments) => &arguments.object,
        Arguments::PathConfiguration(arguments) => &arguments.object,
        Arguments::Commit(arguments) => &arguments.file,
    })
}

/// The export's directory inside a snapshot view.
fn export_root_in(
    view: &mut dyn FileSystem,
    components: &[Vec<u8>],
) -> Result<Attributes, FsError> {
    let mut directory = view.getattr(view.root())?;
    for component in components {
        directory = view.lookup(directory.inode, component)?;
    }
    if directory.file_type != FileType::Directory {
        return Err(FsError::NotFound);
    }
    Ok(directory)
}

impl Core {
    /// The file id of `inode` in the tree the call reads.
    /// (Inode 0 in a snapshot stands for `.snapshots`, the parent of the
    /// snapshot's root in its listing.)
    pub(crate) fn file_id(&self, inode: InodeId) -> u64 {
        match self.call_tree {
            Tree::Live => inode.0,
            Tree::Snapshot(_) if inode.0 == 0 => SNAPSHOT_DIRECTORY_FILE_ID,
            Tree::SnapshotDirectory => SNAPSHOT_DIRECTORY_FILE_ID,
            Tree::Snapshot(id) => snapshot_file_id(id, inode),
        }
    }

    /// Which tree the call's first handle names (the live one when it
    /// names none or is not a handle of ours: the ordinary checks answer).
    pub(crate) fn call_tree_of(&self, arguments: &Arguments) -> Tree {
        primary_handle(arguments)
            .and_then(|handle| self.key.open(&handle.0).ok())
            .map_or(Tree::Live, |(tree, _)| tree)
    }

    /// The handle of export `export`'s `.snapshots` directory.
    pub(crate) fn snapshot_directory_handle(&self, export: usize) -> FileHandle {
        FileHandle(self.key.make_in(
            Tree::SnapshotDirectory,
            &HandleContents {
                export: self.exports[export].id,
                inode: InodeId(0),
                generation: Generation(0),
            },
        ))
    }

    /// `fattr3` of export `export`'s `.snapshots`, published to the
    /// observer (its change counter tells guests when to drop the names
    /// they cached in it).
    pub(crate) fn snapshot_directory_fattr(
        &mut self,
        export: usize,
        listing: &SnapshotListing,
    ) -> nfs3::FileAttributes {
        let attributes = directory_attributes(listing);
        let mut converted = file_attributes(&attributes, self.file_system_id);
        converted.file_id = SNAPSHOT_DIRECTORY_FILE_ID;
        if self.observer.is_some() {
            let handle = self.snapshot_directory_handle(export);
            let id = self.exports[export].id;
            if let Some(observer) = self.observer.as_mut() {
                observer.updated(id, &handle.0, attributes.change, &converted);
            }
        }
        converted
    }

    /// Tell the observer about every export's `.snapshots` (after a
    /// snapshot was taken or deleted).
    pub(crate) fn publish_snapshot_directories(&mut self, listing: &SnapshotListing) {
        for export in 0..self.exports.len() {
            self.snapshot_directory_fattr(export, listing);
        }
    }

    /// `.snapshots/NAME` of export `export`: its handle and attributes.
    pub(crate) fn lookup_snapshot<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        export: usize,
        listing: &SnapshotListing,
        name: &[u8],
    ) -> Result<(FileHandle, nfs3::FileAttributes), NfsError> {
        if let Err(error) = vfs::validate_name(name) {
            return Err(status(&error));
        }
        let id = listing
            .snapshots
            .iter()
            .find(|snapshot| snapshot.name == name)
            .map(|snapshot| snapshot.id)
            .ok_or(NfsError::NoEntry)?;
        let components: Vec<Vec<u8>> = self.exports[export]
            .config
            .path_components()
            .map(<[u8]>::to_vec)
            .collect();
        let mut found = None;
        fs.in_snapshot(id, &mut |view| {
            found = Some(export_root_in(view, &components));
        })
        .map_err(|error| status(&error))?;
        // An export whose directory the snapshot does not hold has no
        // entry for it.
        let root = match found {
            Some(Ok(root)) => root,
            Some(Err(_)) | None => return Err(NfsError::NoEntry),
        };
        let handle = FileHandle(self.key.make_in(
            Tree::Snapshot(id),
            &HandleContents {
                export: self.exports[export].id,
                inode: root.inode,
                generation: root.generation,
            },
        ));
        let mut attributes = file_attributes(&root, self.file_system_id);
        attributes.file_id = snapshot_file_id(id, root.inode);
        Ok((handle, attributes))
    }

    /// Run a call whose first handle names an object of snapshot `id`.
    pub(crate) fn snapshot_call<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        id: u64,
        arguments: Arguments,
    ) -> Results {
        let procedure = arguments.procedure();
        let Some(export) = self.admitted_export(caller, &arguments) else {
            return failure(procedure, NfsError::Stale);
        };
        let export = match export {
            Ok(export) => export,
            Err(error) => return failure(procedure, error),
        };
        if is_non_idempotent(procedure) {
            // STALE for a deleted snapshot, ROFS for one that exists.
            let error = match fs.in_snapshot(id, &mut |_| {}) {
                Ok(()) => NfsError::ReadOnlyFileSystem,
                Err(error) => status(&error),
            };
            return failure(procedure, error);
        }
        // Only LOOKUP needs the listing (`..` of the snapshot's root is
        // `.snapshots`, whose attributes it makes); other calls do without
        // copying it. A deleted snapshot is found by `in_snapshot` below.
        if let Arguments::Lookup(_) = &arguments {
            match fs.list_snapshots() {
                Ok(listing) => self.call_listing = Some(listing),
                Err(error) => return failure(procedure, status(&error)),
            }
        }
        let components: Vec<Vec<u8>> = self.exports[export]
            .config
            .path_components()
            .map(<[u8]>::to_vec)
            .collect();
        let mut arguments = Some(arguments);
        let mut results = None;
        let outcome = fs.in_snapshot(id, &mut |view| {
            let Some(arguments) = arguments.take() else {
                return;
            };
            self.call_tree = Tree::Snapshot(id);
            self.snapshot_root = export_root_in(view, &components)
                .ok()
                .map(|root| root.inode);
            results = Some(self.dispatch(view, caller, arguments));
        });
        self.call_tree = Tree::Live;
        self.snapshot_root = None;
        self.call_listing = None;
        match (outcome, results) {
            (Ok(()), Some(results)) => results,
            (Err(error), _) => failure(procedure, status(&error)),
            (Ok(()), None) => failure(procedure, NfsError::ServerFault),
        }
    }

    /// The export a call's first handle names, if it still exists
    /// (`None`: STALE), and whether it admits the caller.
    fn admitted_export(
        &mut self,
        caller: &Caller,
        arguments: &Arguments,
    ) -> Option<Result<usize, NfsError>> {
        let (_, contents) = self.key.open(&primary_handle(arguments)?.0).ok()?;
        let export = self
            .exports
            .iter()
            .position(|export| export.id == contents.export)?;
        if !self.exports[export].config.admits(&caller.client) {
            return Some(Err(NfsError::Access));
        }
        if self.call_export.is_none() {
            self.call_export = Some(export);
        }
        Some(Ok(export))
    }

    /// Run a call whose first handle names an export's `.snapshots`.
    pub(crate) fn snapshot_directory_call<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: Arguments,
    ) -> Results {
        let procedure = arguments.procedure();
        let export = match self.admitted_export(caller, &arguments) {
            None => return failure(procedure, NfsError::Stale),
            Some(Err(error)) => return failure(procedure, error),
            Some(Ok(export)) => export,
        };
        let Ok(listing) = fs.list_snapshots() else {
            return failure(procedure, NfsError::Stale);
        };
        let identity = Identity::for_export(&caller.credential, &self.exports[export].config);
        let attributes = directory_attributes(&listing);
        let fattr = self.snapshot_directory_fattr(export, &listing);
        let body = || AttributesFailed {
            object_attributes: Some(fattr.clone()),
        };
        match arguments {
            Arguments::GetAttributes(_) => {
                Results::GetAttributes(ProcedureResult::Ok(GetAttributesOk {
                    attributes: fattr.clone(),
                }))
            }
            Arguments::Access(arguments) => {
                let mut granted = 0;
                if identity.may(&attributes, READ) {
                    granted |= ACCESS_READ;
                }
                if identity.may(&attributes, EXECUTE) {
                    granted |= ACCESS_LOOKUP;
                }
                Results::Access(ProcedureResult::Ok(AccessOk {
                    object_attributes: Some(fattr.clone()),
                    access: arguments.access & granted,
                }))
            }
            Arguments::Lookup(arguments) => {
                let directory_attributes = Some(fattr.clone());
                let name = arguments.what.name.as_slice();
                let found = match name {
                    b"." => Ok((self.snapshot_directory_handle(export), fattr.clone())),
                    b".." => {
                        let root = self.exports[export].root;
                        match fs.getattr(root) {
                            Ok(root) => {
                                Ok((self.root_handle(export), self.attributes(export, &root)))
                            }
                            Err(error) => Err(status(&error)),
                        }
                    }
                    _ if !identity.may(&attributes, EXECUTE) => Err(NfsError::Access),
                    _ => self.lookup_snapshot(fs, export, &listing, name),
                };
                Results::Lookup(match found {
                    Ok((object, object_attributes)) => ProcedureResult::Ok(LookupOk {
                        object,
                        object_attributes: Some(object_attributes),
                        directory_attributes,
                    }),
                    Err(error) => ProcedureResult::failed(
                        error,
                        LookupFailed {
                            directory_attributes,
                        },
                    ),
                })
            }
            Arguments::ReadDirectory(arguments) => Results::ReadDirectory(
                match self.snapshot_entries(
                    fs,
                    export,
                    &listing,
                    &identity,
                    arguments.cookie,
                    &arguments.cookie_verifier,
                    arguments.count,
                    false,
                ) {
                    Ok((entries, end_of_file)) => ProcedureResult::Ok(ReadDirectoryOk {
                        directory_attributes: Some(fattr.clone()),
                        cookie_verifier: self.cookie_verifier,
                        entries: entries
                            .into_iter()
                            .map(|entry| Entry {
                                file_id: entry.file_id,
                                name: entry.name,
                                cookie: entry.cookie,
                            })
                            .collect(),
                        end_of_file,
                    }),
                    Err(error) => ProcedureResult::failed(error, body()),
                },
            ),
            Arguments::ReadDirectoryPlus(arguments) => Results::ReadDirectoryPlus(
                match self.snapshot_entries(
                    fs,
                    export,
                    &listing,
                    &identity,
                    arguments.cookie,
                    &arguments.cookie_verifier,
                    arguments.maximum_count,
                    true,
                ) {
                    Ok((entries, end_of_file)) => ProcedureResult::Ok(ReadDirectoryPlusOk {
                        directory_attributes: Some(fattr.clone()),
                        cookie_verifier: self.cookie_verifier,
                        entries,
                        end_of_file,
                    }),
                    Err(error) => ProcedureResult::failed(error, body()),
                },
            ),
            Arguments::Read(_) => {
                Results::Read(ProcedureResult::failed(NfsError::IsDirectory, body()))
            }
            Arguments::ReadLink(_) => {
                Results::ReadLink(ProcedureResult::failed(NfsError::Invalid, body()))
            }
            Arguments::Commit(_) => Results::Commit(ProcedureResult::Ok(CommitOk {
                file_wcc: WccData {
                    before: Some(wcc_attributes(&attributes)),
                    after: Some(fattr.clone()),
                },
                verifier: self.write_verifier,
            })),
            Arguments::FileSystemStatistics(mut arguments) => {
                arguments.object = self.root_handle(export);
                let mut results =
                    self.dispatch(fs, caller, Arguments::FileSystemStatistics(arguments));
                if let Results::FileSystemStatistics(ProcedureResult::Ok(ok)) = &mut results {
                    ok.object_attributes = Some(fattr.clone());
                }
                results
            }
            Arguments::FileSystemInformation(mut arguments) => {
                arguments.object = self.root_handle(export);
                let mut results =
                    self.dispatch(fs, caller, Arguments::FileSystemInformation(arguments));
                if let Results::FileSystemInformation(ProcedureResult::Ok(ok)) = &mut results {
                    ok.object_attributes = Some(fattr.clone());
                }
                results
            }
            Arguments::PathConfiguration(mut arguments) => {
                arguments.object = self.root_handle(export);
                let mut results =
                    self.dispatch(fs, caller, Arguments::PathConfiguration(arguments));
                if let Results::PathConfiguration(ProcedureResult::Ok(ok)) = &mut results {
                    ok.object_attributes = Some(fattr.clone());
                }
                results
            }
            Arguments::Null(())
            | Arguments::SetAttributes(_)
            | Arguments::Write(_)
            | Arguments::Create(_)
            | Arguments::MakeDirectory(_)
            | Arguments::Symlink(_)
            | Arguments::MakeNode(_)
            | Arguments::Remove(_)
            | Arguments::RemoveDirectory(_)
            | Arguments::Rename(_)
            | Arguments::Link(_) => failure(procedure, NfsError::ReadOnlyFileSystem),
        }
    }

    /// The entries of `.snapshots` after `cookie`: `.` (cookie 1), `..`
    /// (cookie 2), then one per snapshot with cookie id + 2 (ids only
    /// grow, so a cookie stays a valid resume point while snapshots come
    /// and go). Snapshot entries carry no handle or attributes: opening
    /// every snapshot to list them would walk every tree; a client looks
    /// up the ones it wants.
    #[allow(clippy::too_many_arguments)] // One private helper of two callers.
    fn snapshot_entries<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        export: usize,
        listing: &SnapshotListing,
        identity: &Identity,
        cookie: u64,
        verifier: &nfs3::CookieVerifier,
        count: u32,
        plus: bool,
    ) -> Result<(Vec<EntryPlus>, bool), NfsError> {
        if !identity.may(&directory_attributes(listing), READ) {
            return Err(NfsError::Access);
        }
        if cookie != 0 && *verifier != [0; 8] && *verifier != self.cookie_verifier {
            return Err(NfsError::BadCookie);
        }
        let handle_size = 4 + xdr::padded_length(crate::handle::MAX_HANDLE_SIZE);
        let mut left =
            (count.min(MAX_IO_SIZE) as usize).saturating_sub(read_directory_overhead(plus));
        let mut entries = Vec::new();
        let mut take = |name_length: usize, with_attributes: bool| {
            let mut size = entry_size(name_length);
            if plus {
                size += 8;
                if with_attributes {
                    size += nfs3::attributes::FILE_ATTRIBUTES_SIZE + handle_size;
                }
            }
            if size > left {
                return false;
            }
            left -= size;
            true
        };
        let fattr = self.snapshot_directory_fattr(export, listing);
        if cookie == 0 {
            if !take(1, true) {
                return Err(NfsError::TooSmall);
            }
            entries.push(EntryPlus {
                file_id: SNAPSHOT_DIRECTORY_FILE_ID,
                name: b".".to_vec(),
                cookie: 1,
                attributes: plus.then(|| fattr.clone()),
                handle: plus.then(|| self.snapshot_directory_handle(export)),
            });
        }
        if cookie <= 1 {
            let root = fs
                .getattr(self.exports[export].root)
                .map_err(|error| status(&error))?;
            if !take(2, true) {
                return finish(entries, false);
            }
            entries.push(EntryPlus {
                file_id: root.inode.0,
                name: b"..".to_vec(),
                cookie: 2,
                attributes: plus.then(|| self.attributes(export, &root)),
                handle: plus.then(|| self.root_handle(export)),
            });
        }
        for snapshot in &listing.snapshots {
            let Some(entry_cookie) = snapshot.id.checked_add(2) else {
                continue;
            };
            if entry_cookie <= cookie {
                continue;
            }
            if !take(snapshot.name.len(), false) {
                return finish(entries, false);
            }
            entries.push(EntryPlus {
                // The snapshot's root inode is not known without opening
                // it; the root directory is inode 1 in sdfs and in MemFs.
                file_id: snapshot_file_id(snapshot.id, InodeId(1)),
                name: snapshot.name.clone(),
                cookie: entry_cookie,
                attributes: None,
                handle: None,
            });
        }
        Ok((entries, true))
    }
}

/// A listing that stopped early must hold at least one entry.
fn finish(entries: Vec<EntryPlus>, end: bool) -> Result<(Vec<EntryPlus>, bool), NfsError> {
    if entries.is_empty() && !end {
        return Err(NfsError::TooSmall);
    }
    Ok((entries, end))
}
