//! NFSv3 dispatch and the procedures on one object: GETATTR, SETATTR,
//! LOOKUP, ACCESS, READLINK, READ, WRITE, COMMIT, FSSTAT, FSINFO, PATHCONF
//! (RFC 1813 section 3.3). Namespace changes are in `namespace`, listings
//! in `directory`.

use alloc::vec::Vec;

use nfs3::procedures::create::DirectoryWccFailed;
use nfs3::procedures::data::{
    CommitArguments, CommitOk, CommitResult, FileWccFailed, ReadArguments, ReadOk, ReadReplyBuffer,
    ReadResult, WriteArguments, WriteOk, WriteResult,
};
use nfs3::procedures::filesystem::{
    FileSystemArguments, FileSystemInformationOk, FileSystemInformationResult,
    FileSystemStatisticsOk, FileSystemStatisticsResult, PathConfigurationOk,
    PathConfigurationResult, PROPERTY_CAN_SET_TIME, PROPERTY_HOMOGENEOUS, PROPERTY_LINK,
    PROPERTY_SYMLINK,
};
use nfs3::procedures::inspect::{
    AccessArguments, AccessOk, AccessResult, AttributesFailed, GetAttributesArguments,
    GetAttributesOk, GetAttributesResult, LookupArguments, LookupFailed, LookupOk, LookupResult,
    ReadLinkArguments, ReadLinkOk, ReadLinkResult, SetAttributesArguments, SetAttributesResult,
    SetAttributesWcc, ACCESS_DELETE, ACCESS_EXECUTE, ACCESS_EXTEND, ACCESS_LOOKUP, ACCESS_MODIFY,
    ACCESS_READ,
};
use nfs3::procedures::remove::{LinkWcc, RenameWcc};
use nfs3::{
    Arguments, FileHandle, NfsError, PostOperationAttributes, Procedure, ProcedureResult, Results,
    StableHow, Time, WccData,
};
use vfs::{Attributes, FileSystem, FileType, InodeId, SetTime, MAX_FILE_SIZE};

use crate::convert::{self, file_attributes, status, wcc_attributes};
use crate::handle::Tree;
use crate::identity::{Identity, EXECUTE, READ, WRITE};
use crate::snapshots::{snapshot_file_id, SNAPSHOT_DIRECTORY, SNAPSHOT_DIRECTORY_FILE_ID};
use crate::{Caller, Core, MAX_IO_SIZE};

/// Procedures whose replies the duplicate request cache keeps: running
/// them twice is visible.
pub fn is_non_idempotent(procedure: Procedure) -> bool {
    match procedure {
        Procedure::SetAttributes
        | Procedure::Write
        | Procedure::Create
        | Procedure::MakeDirectory
        | Procedure::Symlink
        | Procedure::MakeNode
        | Procedure::Remove
        | Procedure::RemoveDirectory
        | Procedure::Rename
        | Procedure::Link => true,
        Procedure::Null
        | Procedure::GetAttributes
        | Procedure::Lookup
        | Procedure::Access
        | Procedure::ReadLink
        | Procedure::Read
        | Procedure::ReadDirectory
        | Procedure::ReadDirectoryPlus
        | Procedure::FileSystemStatistics
        | Procedure::FileSystemInformation
        | Procedure::PathConfiguration
        | Procedure::Commit => false,
    }
}

/// The result of `procedure` failing with `error` and an empty body.
pub fn failure(procedure: Procedure, error: NfsError) -> Results {
    let attributes = || AttributesFailed {
        object_attributes: None,
    };
    let directory = || DirectoryWccFailed {
        directory_wcc: WccData::default(),
    };
    match procedure {
        Procedure::Null => Results::Null(()),
        Procedure::GetAttributes => Results::GetAttributes(ProcedureResult::failed(error, ())),
        Procedure::SetAttributes => Results::SetAttributes(ProcedureResult::failed(
            error,
            SetAttributesWcc {
                object_wcc: WccData::default(),
            },
        )),
        Procedure::Lookup => Results::Lookup(ProcedureResult::failed(
            error,
            LookupFailed {
                directory_attributes: None,
            },
        )),
        Procedure::Access => Results::Access(ProcedureResult::failed(error, attributes())),
        Procedure::ReadLink => Results::ReadLink(ProcedureResult::failed(error, attributes())),
        Procedure::Read => Results::Read(ProcedureResult::failed(error, attributes())),
        Procedure::Write => Results::Write(ProcedureResult::failed(
            error,
            FileWccFailed {
                file_wcc: WccData::default(),
            },
        )),
        Procedure::Create => Results::Create(ProcedureResult::failed(error, directory())),
        Procedure::MakeDirectory => {
            Results::MakeDirectory(ProcedureResult::failed(error, directory()))
        }
        Procedure::Symlink => Results::Symlink(ProcedureResult::failed(error, directory())),
        Procedure::MakeNode => Results::MakeNode(ProcedureResult::failed(error, directory())),
        Procedure::Remove => Results::Remove(ProcedureResult::failed(error, directory())),
        Procedure::RemoveDirectory => {
            Results::RemoveDirectory(ProcedureResult::failed(error, directory()))
        }
        Procedure::Rename => Results::Rename(ProcedureResult::failed(
            error,
            RenameWcc {
                from_directory_wcc: WccData::default(),
                to_directory_wcc: WccData::default(),
            },
        )),
        Procedure::Link => Results::Link(ProcedureResult::failed(
            error,
            LinkWcc {
                file_attributes: None,
                link_directory_wcc: WccData::default(),
            },
        )),
        Procedure::ReadDirectory => {
            Results::ReadDirectory(ProcedureResult::failed(error, attributes()))
        }
        Procedure::ReadDirectoryPlus => {
            Results::ReadDirectoryPlus(ProcedureResult::failed(error, attributes()))
        }
        Procedure::FileSystemStatistics => {
            Results::FileSystemStatistics(ProcedureResult::failed(error, attributes()))
        }
        Procedure::FileSystemInformation => {
            Results::FileSystemInformation(ProcedureResult::failed(error, attributes()))
        }
        Procedure::PathConfiguration => {
            Results::PathConfiguration(ProcedureResult::failed(error, attributes()))
        }
        Procedure::Commit => Results::Commit(ProcedureResult::failed(
            error,
            FileWccFailed {
                file_wcc: WccData::default(),
            },
        )),
    }
}

/// A file handle checked against the export table, the client's rights
/// and the file system.
pub(crate) struct Resolved {
    /// Index into the export table.
    pub export: usize,
    /// Current attributes.
    pub attributes: Attributes,
    /// Who the call runs as on this export.
    pub identity: Identity,
}

impl Resolved {
    pub fn inode(&self) -> InodeId {
        self.attributes.inode
    }
}

impl Core {
    /// Run one NFS call; the flag says whether the reply must wait for a
    /// commit (RFC 1813: a reply to a change means the change is on stable
    /// storage, except for UNSTABLE writes).
    ///
    /// `write_data` is a WRITE's data where it lies (the call record; the
    /// arguments' `data` is then empty), or empty.
    pub(crate) fn nfs<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: Arguments,
        write_data: &[u8],
    ) -> (Results, bool) {
        let changes = match &arguments {
            Arguments::Write(write) => write.stable != StableHow::Unstable,
            Arguments::Commit(_) => true,
            other => is_non_idempotent(other.procedure()),
        };
        let explicit = matches!(arguments, Arguments::Commit(_));
        self.call_export = None;
        let results = match (self.call_tree_of(&arguments), arguments) {
            (Tree::Live, Arguments::Write(arguments)) if !write_data.is_empty() => {
                Results::Write(self.write(fs, caller, arguments, write_data))
            }
            (tree, arguments) => match tree {
                Tree::Live => self.dispatch(fs, caller, arguments),
                Tree::SnapshotDirectory => self.snapshot_directory_call(fs, caller, arguments),
                Tree::Snapshot(id) => self.snapshot_call(fs, caller, id, arguments),
            },
        };
        // An `async` export answers changes at once, and so does a
        // `vrpc=local` one to VRPC callers; COMMIT always waits.
        let asynchronous = self.call_export.is_some_and(|export| {
            self.exports[export]
                .config
                .answers_before_commit(&caller.client)
        });
        (results, changes && (explicit || !asynchronous))
    }

    /// Run one NFS call on `fs` (the live file system, or a snapshot's
    /// when the call's tree says so).
    pub(crate) fn dispatch<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: Arguments,
    ) -> Results {
        match arguments {
            Arguments::Null(()) => Results::Null(()),
            Arguments::GetAttributes(arguments) => {
                Results::GetAttributes(self.get_attributes(fs, caller, arguments))
            }
            Arguments::SetAttributes(arguments) => {
                Results::SetAttributes(self.set_attributes(fs, caller, arguments))
            }
            Arguments::Lookup(arguments) => Results::Lookup(self.lookup(fs, caller, arguments)),
            Arguments::Access(arguments) => Results::Access(self.access(fs, caller, arguments)),
            Arguments::ReadLink(arguments) => {
                Results::ReadLink(self.read_link(fs, caller, arguments))
            }
            Arguments::Read(arguments) => Results::Read(self.read(fs, caller, arguments)),
            Arguments::Write(mut arguments) => {
                let data = core::mem::take(&mut arguments.data);
                Results::Write(self.write(fs, caller, arguments, &data))
            }
            Arguments::Create(arguments) => Results::Create(self.create(fs, caller, arguments)),
            Arguments::MakeDirectory(arguments) => {
                Results::MakeDirectory(self.make_directory(fs, caller, arguments))
            }
            Arguments::Symlink(arguments) => Results::Symlink(self.symlink(fs, caller, arguments)),
            Arguments::MakeNode(arguments) => {
                Results::MakeNode(self.make_node(fs, caller, arguments))
            }
            Arguments::Remove(arguments) => {
                Results::Remove(self.remove(fs, caller, arguments, false))
            }
            Arguments::RemoveDirectory(arguments) => {
                Results::RemoveDirectory(self.remove(fs, caller, arguments, true))
            }
            Arguments::Rename(arguments) => Results::Rename(self.rename(fs, caller, arguments)),
            Arguments::Link(arguments) => Results::Link(self.link(fs, caller, arguments)),
            Arguments::ReadDirectory(arguments) => {
                Results::ReadDirectory(self.read_directory(fs, caller, arguments))
            }
            Arguments::ReadDirectoryPlus(arguments) => {
                Results::ReadDirectoryPlus(self.read_directory_plus(fs, caller, arguments))
            }
            Arguments::FileSystemStatistics(arguments) => {
                Results::FileSystemStatistics(self.file_system_statistics(fs, caller, arguments))
            }
            Arguments::FileSystemInformation(arguments) => {
                Results::FileSystemInformation(self.file_system_information(fs, caller, arguments))
            }
            Arguments::PathConfiguration(arguments) => {
                Results::PathConfiguration(self.path_configuration(fs, caller, arguments))
            }
            Arguments::Commit(arguments) => Results::Commit(self.commit(fs, caller, arguments)),
        }
    }

    /// Check a handle: made by this server (else BADHANDLE), for an export
    /// that still exists (else STALE) and admits this client (else ACCES),
    /// naming a live inode of the same generation (else STALE).
    pub(crate) fn resolve<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        handle: &FileHandle,
    ) -> Result<Resolved, NfsError> {
        let (tree, contents) = self.key.open(&handle.0).map_err(|_| NfsError::BadHandle)?;
        // The call's first handle chose the tree; another handle of the
        // same call (RENAME's target directory, LINK's directory) naming
        // another tree means a change into or out of a snapshot.
        if tree != self.call_tree {
            return Err(NfsError::ReadOnlyFileSystem);
        }
        let export = self
            .exports
            .iter()
            .position(|export| export.id == contents.export)
            .ok_or(NfsError::Stale)?;
        let config = &self.exports[export].config;
        if !config.admits(&caller.client) {
            return Err(NfsError::Access);
        }
        let identity = Identity::for_export(&caller.credential, config);
        if self.call_export.is_none() {
            self.call_export = Some(export);
        }
        let attributes = fs
            .getattr_checked(contents.inode, contents.generation)
            .map_err(|error| status(&error))?;
        Ok(Resolved {
            export,
            attributes,
            identity,
        })
    }

    /// Whether changes to `resolved` are refused (NFS3ERR_ROFS): on a
    /// read-only export and in every snapshot.
    pub(crate) fn read_only(&self, resolved: &Resolved) -> bool {
        self.exports[resolved.export].config.read_only || self.call_tree != Tree::Live
    }

    /// Whether `resolved` is the export's root (in a snapshot: the
    /// export's directory in that snapshot).
    pub(crate) fn is_export_root(&self, resolved: &Resolved) -> bool {
        match self.call_tree {
            Tree::Live => self.exports[resolved.export].root == resolved.inode(),
            Tree::SnapshotDirectory | Tree::Snapshot(_) => {
                self.snapshot_root == Some(resolved.inode())
            }
        }
    }

    /// `fattr3` of `attributes`, published to the observer.
    pub(crate) fn attributes(
        &mut self,
        export: usize,
        attributes: &Attributes,
    ) -> nfs3::FileAttributes {
        let mut converted = file_attributes(attributes, self.file_system_id);
        match self.call_tree {
            Tree::Live => {}
            // Never published: a guest must not find attributes of a
            // snapshot it could trust after the snapshot is deleted.
            Tree::SnapshotDirectory => {
                converted.file_id = SNAPSHOT_DIRECTORY_FILE_ID;
                return converted;
            }
            Tree::Snapshot(id) => {
                converted.file_id = snapshot_file_id(id, attributes.inode);
                return converted;
            }
        }
        if self.observer.is_some() {
            let handle = self.handle_for(export, attributes);
            let id = self.exports[export].id;
            if let Some(observer) = self.observer.as_mut() {
                observer.updated(id, &handle.0, attributes.change, &converted);
            }
        }
        converted
    }

    /// Current attributes of `inode` after a change, for wcc and post-op
    /// data; `None` when it is gone (the observer hears so).
    pub(crate) fn post<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        export: usize,
        inode: InodeId,
    ) -> PostOperationAttributes {
        match fs.getattr(inode) {
            Ok(attributes) => Some(self.attributes(export, &attributes)),
            Err(_) => {
                if self.call_tree == Tree::Live {
                    if let Some(observer) = self.observer.as_mut() {
                        observer.removed(self.exports[export].id, inode);
                    }
                }
                None
            }
        }
    }

    /// wcc data for `before` and the inode's state now.
    pub(crate) fn wcc<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        export: usize,
        before: &Attributes,
    ) -> WccData {
        WccData {
            before: Some(wcc_attributes(before)),
            after: self.post(fs, export, before.inode),
        }
    }

    fn get_attributes<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: GetAttributesArguments,
    ) -> GetAttributesResult {
        match self.resolve(fs, caller, &arguments.object) {
            Ok(resolved) => ProcedureResult::Ok(GetAttributesOk {
                attributes: self.attributes(resolved.export, &resolved.attributes),
            }),
            Err(error) => ProcedureResult::failed(error, ()),
        }
    }

    fn set_attributes<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: SetAttributesArguments,
    ) -> SetAttributesResult {
        let resolved = match self.resolve(fs, caller, &arguments.object) {
            Ok(resolved) => resolved,
            Err(error) => {
                return ProcedureResult::failed(
                    error,
                    SetAttributesWcc {
                        object_wcc: WccData::default(),
                    },
                )
            }
        };
        let before = resolved.attributes;
        let outcome = self
            .check_set_attributes(&resolved, &arguments)
            .and_then(|mut changes| {
                // chown/chgrp of a non-directory drops set-user-id, and
                // set-group-id when group-executable (what a local kernel does).
                if (changes.uid.is_some() || changes.gid.is_some())
                    && changes.mode.is_none()
                    && before.file_type != FileType::Directory
                    && before.mode & 0o6000 != 0
                {
                    let mut mode = before.mode & !0o4000;
                    if mode & 0o010 != 0 {
                        mode &= !0o2000;
                    }
                    changes.mode = Some(mode);
                }
                if convert::is_empty(&changes) {
                    return Ok(());
                }
                fs.setattr(before.inode, &changes)
                    .map(|_| ())
                    .map_err(|error| status(&error))
            });
        let object_wcc = self.wcc(fs, resolved.export, &before);
        match outcome {
            Ok(()) => ProcedureResult::Ok(SetAttributesWcc { object_wcc }),
            Err(error) => ProcedureResult::failed(error, SetAttributesWcc { object_wcc }),
        }
    }

    /// The permission rules of SETATTR (POSIX chmod/chown/truncate/utimes).
    fn check_set_attributes(
        &self,
        resolved: &Resolved,
        arguments: &SetAttributesArguments,
    ) -> Result<vfs::SetAttributes, NfsError> {
        let attributes = &resolved.attributes;
        let identity = &resolved.identity;
        if self.read_only(resolved) {
            return Err(NfsError::ReadOnlyFileSystem);
        }
        if let Some(guard) = arguments.guard {
            if guard != convert::time(attributes.ctime) {
                return Err(NfsError::NotSynchronized);
            }
        }
        let mut changes = convert::set_attributes(&arguments.new_attributes);
        let root = identity.is_root();
        let owner = identity.owns(attributes);
        if changes.uid == Some(attributes.uid) && !root {
            // chown to the current owner is allowed to the owner.
            if !owner {
                return Err(NfsError::Permission);
            }
        } else if changes.uid.is_some() && !root {
            return Err(NfsError::Permission);
        }
        if let Some(gid) = changes.gid {
            if !root && !(owner && (identity.in_group(gid) || gid == attributes.gid)) {
                return Err(NfsError::Permission);
            }
        }
        if let Some(mode) = changes.mode {
            if !root && !owner {
                return Err(NfsError::Permission);
            }
            // An unprivileged owner outside the file's group cannot set
            // set-group-id (it is silently dropped, as chmod(2) does).
            let group = changes.gid.unwrap_or(attributes.gid);
            if !root && mode & 0o2000 != 0 && !identity.in_group(group) {
                changes.mode = Some(mode & !0o2000);
            }
        }
        if changes.size.is_some() {
            if attributes.file_type == FileType::Directory {
                return Err(NfsError::IsDirectory);
            }
            if attributes.file_type != FileType::Regular {
                return Err(NfsError::Invalid);
            }
            if !identity.may_access_data(attributes, WRITE) {
                return Err(NfsError::Access);
            }
        }
        for time in [changes.atime, changes.mtime] {
            match time {
                SetTime::Unchanged => {}
                SetTime::ServerTime => {
                    if !owner && !identity.may(attributes, WRITE) {
                        return Err(NfsError::Access);
                    }
                }
                SetTime::Client(_) => {
                    if !owner && !root {
                        return Err(NfsError::Permission);
                    }
                }
            }
        }
        Ok(changes)
    }

    fn lookup<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: LookupArguments,
    ) -> LookupResult {
        let directory = match self.resolve(fs, caller, &arguments.what.directory) {
            Ok(resolved) => resolved,
            Err(error) => {
                return ProcedureResult::failed(
                    error,
                    LookupFailed {
                        directory_attributes: None,
                    },
                )
            }
        };
        let export = directory.export;
        let directory_attributes = Some(self.attributes(export, &directory.attributes));
        let failed = |error, directory_attributes| {
            ProcedureResult::failed(
                error,
                LookupFailed {
                    directory_attributes,
                },
            )
        };
        if directory.attributes.file_type != FileType::Directory {
            return failed(NfsError::NotDirectory, directory_attributes);
        }
        if !directory.identity.may(&directory.attributes, EXECUTE) {
            return failed(NfsError::Access, directory_attributes);
        }
        let name = arguments.what.name.as_slice();
        let at_root = self.is_export_root(&directory);
        if at_root && (self.call_tree, name) == (Tree::Live, SNAPSHOT_DIRECTORY) {
            if let Ok(listing) = fs.list_snapshots() {
                return ProcedureResult::Ok(LookupOk {
                    object: self.snapshot_directory_handle(export),
                    object_attributes: Some(self.snapshot_directory_fattr(export, &listing)),
                    directory_attributes,
                });
            }
        }
        if at_root && name == b".." && self.call_tree != Tree::Live {
            // Above a snapshot's root: `.snapshots`.
            if let Some(listing) = self.call_listing.clone() {
                let object_attributes = self.snapshot_directory_fattr(export, &listing);
                return ProcedureResult::Ok(LookupOk {
                    object: self.snapshot_directory_handle(export),
                    object_attributes: Some(object_attributes),
                    directory_attributes,
                });
            }
        }
        let found = if name == b".." && at_root {
            // Never above an export's root.
            Ok(directory.attributes)
        } else {
            fs.lookup(directory.inode(), name)
        };
        match found {
            Ok(attributes) => ProcedureResult::Ok(LookupOk {
                object: self.handle_for(export, &attributes),
                object_attributes: Some(self.attributes(export, &attributes)),
                directory_attributes,
            }),
            Err(error) => failed(status(&error), directory_attributes),
        }
    }

    fn access<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: AccessArguments,
    ) -> AccessResult {
        let resolved = match self.resolve(fs, caller, &arguments.object) {
            Ok(resolved) => resolved,
            Err(error) => {
                return ProcedureResult::failed(
                    error,
                    AttributesFailed {
                        object_attributes: None,
                    },
                )
            }
        };
        let attributes = &resolved.attributes;
        let identity = &resolved.identity;
        let directory = attributes.file_type == FileType::Directory;
        let writable = !self.read_only(&resolved) && identity.may(attributes, WRITE);
        let mut granted = 0;
        if identity.may(attributes, READ) {
            granted |= ACCESS_READ;
        }
        if directory && identity.may(attributes, EXECUTE) {
            granted |= ACCESS_LOOKUP;
        }
        if writable {
            granted |= ACCESS_MODIFY | ACCESS_EXTEND;
            if directory && identity.may(attributes, EXECUTE) {
                granted |= ACCESS_DELETE;
            }
        }
        if !directory && identity.may(attributes, EXECUTE) {
            granted |= ACCESS_EXECUTE;
        }
        ProcedureResult::Ok(AccessOk {
            object_attributes: Some(self.attributes(resolved.export, &resolved.attributes)),
            access: arguments.access & granted,
        })
    }

    fn read_link<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: ReadLinkArguments,
    ) -> ReadLinkResult {
        let resolved = match self.resolve(fs, caller, &arguments.symlink) {
            Ok(resolved) => resolved,
            Err(error) => {
                return ProcedureResult::failed(
                    error,
                    AttributesFailed {
                        object_attributes: None,
                    },
                )
            }
        };
        let symlink_attributes = Some(self.attributes(resolved.export, &resolved.attributes));
        if resolved.attributes.file_type != FileType::Symlink {
            return ProcedureResult::failed(
                NfsError::Invalid,
                AttributesFailed {
                    object_attributes: symlink_attributes,
                },
            );
        }
        match fs.readlink(resolved.inode()) {
            Ok(data) => ProcedureResult::Ok(ReadLinkOk {
                symlink_attributes,
                data,
            }),
            Err(error) => ProcedureResult::failed(
                status(&error),
                AttributesFailed {
                    object_attributes: symlink_attributes,
                },
            ),
        }
    }

    fn read<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: ReadArguments,
    ) -> ReadResult {
        let resolved = match self.resolve(fs, caller, &arguments.file) {
            Ok(resolved) => resolved,
            Err(error) => {
                return ProcedureResult::failed(
                    error,
                    AttributesFailed {
                        object_attributes: None,
                    },
                )
            }
        };
        let attributes = resolved.attributes;
        let failed = |core: &mut Core, error| {
            ProcedureResult::failed(
                error,
                AttributesFailed {
                    object_attributes: Some(core.attributes(resolved.export, &attributes)),
                },
            )
        };
        match attributes.file_type {
            FileType::Regular => {}
            FileType::Directory => return failed(self, NfsError::IsDirectory),
            _ => return failed(self, NfsError::Invalid),
        }
        // Reading an executable one may not read is allowed: a client runs
        // programs through READ.
        if !resolved.identity.may_access_data(&attributes, READ)
            && !resolved.identity.may(&attributes, EXECUTE)
        {
            return failed(self, NfsError::Access);
        }
        let count = arguments.count.min(MAX_IO_SIZE) as usize;
        let available = attributes.size.saturating_sub(arguments.offset);
        let capacity = count.min(usize::try_from(available).unwrap_or(usize::MAX));
        let file_attributes = Some(self.attributes(resolved.export, &attributes));
        // With a destination that holds it, the file system hands the data
        // straight there and the record leaves it out.
        if let Some(mut destination) = self
            .read_destination
            .take()
            .filter(|destination| destination.capacity() >= capacity)
        {
            let mut fits = true;
            let read = fs.read_to(
                attributes.inode,
                arguments.offset,
                capacity,
                &mut |at, bytes| fits = fits && destination.put(at, bytes),
            );
            match read {
                Ok(length) if fits => {
                    let length = length.min(capacity);
                    let end_of_file =
                        arguments.offset.saturating_add(length as u64) >= attributes.size;
                    let (bytes, at) =
                        ReadReplyBuffer::new(self.call_xid, &file_attributes, 0, Vec::new())
                            .finish_apart(length, end_of_file);
                    self.read_record = Some(crate::ReplyRecord {
                        bytes,
                        segment: Some(at..at),
                        placed: length,
                    });
                    return ProcedureResult::Ok(ReadOk {
                        file_attributes,
                        count: length as u32,
                        end_of_file,
                        data: Vec::new(),
                    });
                }
                // Refused by the destination: read into the record below.
                Ok(_) => {}
                Err(error) => return failed(self, status(&error)),
            }
        }
        // The reply record is built around the room for the data, and the
        // file system reads straight into it (see `Core::read_record`).
        let buffer = self.reply_spare(capacity);
        let mut record = ReadReplyBuffer::new(self.call_xid, &file_attributes, capacity, buffer);
        match fs.read(attributes.inode, arguments.offset, record.data_mut()) {
            Ok(length) => {
                let length = length.min(capacity);
                let end_of_file = arguments.offset.saturating_add(length as u64) >= attributes.size;
                let (bytes, segment) = record.finish(length, end_of_file);
                self.read_record = Some(crate::ReplyRecord {
                    bytes,
                    segment: Some(segment),
                    placed: 0,
                });
                ProcedureResult::Ok(ReadOk {
                    file_attributes,
                    count: length as u32,
                    end_of_file,
                    data: Vec::new(),
                })
            }
            Err(error) => {
                // A read refused for now (`WouldWait`) is tried again:
                // keep the record for that try.
                self.keep_reply_spare(record.finish(0, false).0);
                failed(self, status(&error))
            }
        }
    }

    fn write<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: WriteArguments,
        data: &[u8],
    ) -> WriteResult {
        let resolved = match self.resolve(fs, caller, &arguments.file) {
            Ok(resolved) => resolved,
            Err(error) => {
                return ProcedureResult::failed(
                    error,
                    FileWccFailed {
                        file_wcc: WccData::default(),
                    },
                )
            }
        };
        let before = resolved.attributes;
        let outcome = (|| {
            if self.read_only(&resolved) {
                return Err(NfsError::ReadOnlyFileSystem);
            }
            match before.file_type {
                FileType::Regular => {}
                FileType::Directory => return Err(NfsError::IsDirectory),
                _ => return Err(NfsError::Invalid),
            }
            if !resolved.identity.may_access_data(&before, WRITE) {
                return Err(NfsError::Access);
            }
            if (data.len() as u64) < u64::from(arguments.count) {
                return Err(NfsError::Invalid);
            }
            let count = arguments.count.min(MAX_IO_SIZE);
            if arguments.offset.saturating_add(u64::from(count)) > MAX_FILE_SIZE {
                return Err(NfsError::FileTooLarge);
            }
            fs.write(before.inode, arguments.offset, &data[..count as usize])
                .map_err(|error| status(&error))?;
            Ok(count)
        })();
        let file_wcc = self.wcc(fs, resolved.export, &before);
        match outcome {
            Ok(count) => ProcedureResult::Ok(WriteOk {
                file_wcc,
                count,
                // Every commit makes data and metadata durable together, so
                // DATA_SYNC is answered as FILE_SYNC.
                committed: match arguments.stable {
                    _ if self.exports[resolved.export]
                        .config
                        .answers_before_commit(&caller.client) =>
                    {
                        StableHow::Unstable
                    }
                    StableHow::Unstable => StableHow::Unstable,
                    StableHow::DataSync | StableHow::FileSync => StableHow::FileSync,
                },
                verifier: self.write_verifier,
            }),
            Err(error) => ProcedureResult::failed(error, FileWccFailed { file_wcc }),
        }
    }

    fn commit<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: CommitArguments,
    ) -> CommitResult {
        let resolved = match self.resolve(fs, caller, &arguments.file) {
            Ok(resolved) => resolved,
            Err(error) => {
                return ProcedureResult::failed(
                    error,
                    FileWccFailed {
                        file_wcc: WccData::default(),
                    },
                )
            }
        };
        let attributes = resolved.attributes;
        let file_wcc = WccData {
            before: Some(wcc_attributes(&attributes)),
            after: Some(self.attributes(resolved.export, &attributes)),
        };
        match attributes.file_type {
            // NOTE: RFC 1813 section 3.3.21 names a regular file. A commit
            // here makes every change durable at once, so a COMMIT of a
            // directory is answered as one of a file: it is how a client
            // makes names durable (guest-driver's `fsync` of a directory)
            // on an export that answers changes before their commit
            // (`async`, VRPC guests under `vrpc=local`).
            FileType::Regular | FileType::Directory => ProcedureResult::Ok(CommitOk {
                file_wcc,
                verifier: self.write_verifier,
            }),
            _ => ProcedureResult::failed(NfsError::Invalid, FileWccFailed { file_wcc }),
        }
    }

    fn file_system_statistics<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: FileSystemArguments,
    ) -> FileSystemStatisticsResult {
        let resolved = match self.resolve(fs, caller, &arguments.object) {
            Ok(resolved) => resolved,
            Err(error) => {
                return ProcedureResult::failed(
                    error,
                    AttributesFailed {
                        object_attributes: None,
                    },
                )
            }
        };
        let object_attributes = Some(self.attributes(resolved.export, &resolved.attributes));
        match fs.statfs() {
            Ok(totals) => {
                let block = u64::from(totals.block_size);
                let free_bytes = totals.free_blocks.saturating_mul(block);
                ProcedureResult::Ok(FileSystemStatisticsOk {
                    object_attributes,
                    total_bytes: totals.total_blocks.saturating_mul(block),
                    free_bytes,
                    available_bytes: free_bytes,
                    total_files: totals.total_inodes,
                    free_files: totals.free_inodes,
                    available_files: totals.free_inodes,
                    invariant_seconds: 0,
                })
            }
            Err(error) => {
                ProcedureResult::failed(status(&error), AttributesFailed { object_attributes })
            }
        }
    }

    fn file_system_information<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: FileSystemArguments,
    ) -> FileSystemInformationResult {
        match self.resolve(fs, caller, &arguments.object) {
            Ok(resolved) => ProcedureResult::Ok(FileSystemInformationOk {
                object_attributes: Some(self.attributes(resolved.export, &resolved.attributes)),
                read_maximum: MAX_IO_SIZE,
                read_preferred: MAX_IO_SIZE,
                read_multiple: 4096,
                write_maximum: MAX_IO_SIZE,
                write_preferred: MAX_IO_SIZE,
                write_multiple: 4096,
                directory_preferred: 64 * 1024,
                maximum_file_size: MAX_FILE_SIZE,
                time_delta: Time {
                    seconds: 0,
                    nanoseconds: 1,
                },
                properties: PROPERTY_LINK
                    | PROPERTY_SYMLINK
                    | PROPERTY_HOMOGENEOUS
                    | PROPERTY_CAN_SET_TIME,
            }),
            Err(error) => ProcedureResult::failed(
                error,
                AttributesFailed {
                    object_attributes: None,
                },
            ),
        }
    }

    fn path_configuration<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: FileSystemArguments,
    ) -> PathConfigurationResult {
        match self.resolve(fs, caller, &arguments.object) {
            Ok(resolved) => ProcedureResult::Ok(PathConfigurationOk {
                object_attributes: Some(self.attributes(resolved.export, &resolved.attributes)),
                link_maximum: vfs::LINK_MAX,
                name_maximum: vfs::NAME_MAX as u32,
                no_truncation: true,
                chown_restricted: true,
                case_insensitive: false,
                case_preserving: true,
            }),
            Err(error) => ProcedureResult::failed(
                error,
                AttributesFailed {
                    object_attributes: None,
                },
            ),
        }
    }
}
