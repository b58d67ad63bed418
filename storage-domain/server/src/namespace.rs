//! Procedures that change names: CREATE, MKDIR, SYMLINK, MKNOD, REMOVE,
//! RMDIR, RENAME and LINK (RFC 1813 sections 3.3.8-3.3.15).
//!
//! Every one checks, in this order: the handles; a read-only export
//! (ROFS); the directory's type (NOTDIR); the name (`.`/`..` are EXIST for
//! the creating procedures and INVAL for the removing ones; empty, `/`,
//! NUL give INVAL; past 255 bytes NAMETOOLONG); write and search
//! permission on the directory (ACCES); then asks the file system. The
//! directory's wcc data is reported on success and failure alike.

use nfs3::procedures::create::{
    CreateArguments, CreateHow, CreatedOk, CreatedResult, DirectoryWccFailed,
    MakeDirectoryArguments, MakeNodeArguments, MakeNodeData, SymlinkArguments,
};
use nfs3::procedures::remove::{
    LinkArguments, LinkResult, LinkWcc, RemoveArguments, RemoveResult, RenameArguments,
    RenameResult, RenameWcc,
};
use nfs3::{DirectoryOperationArguments, NfsError, ProcedureResult, SettableAttributes, WccData};
use vfs::{
    Attributes, DeviceNumber, FileSystem, FileType, NewNode, Ownership, SetAttributes, SetTime,
    Timestamp, SYMLINK_MAX,
};

use crate::convert::{self, status, wcc_attributes};
use crate::identity::{EXECUTE, WRITE};
use crate::procedures::Resolved;
use crate::snapshots::SNAPSHOT_DIRECTORY;
use crate::{Caller, Core};

/// Whether a name is `.` or `..`.
fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

/// A directory resolved for a change, or the failure with whatever wcc
/// data could be had.
// The failure carries the wcc data its reply needs; it is built once per
// failed call and moved straight into the reply, so boxing would only add
// an allocation.
#[allow(clippy::result_large_err)]
type Prepared = Result<(Resolved, Attributes), (NfsError, WccData)>;

// See `Prepared` for why the large error is kept unboxed.
#[allow(clippy::result_large_err)]
impl Core {
    /// The checks every name-changing procedure makes on its directory.
    fn prepare<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        location: &DirectoryOperationArguments,
        creating: bool,
    ) -> Prepared {
        let directory = self
            .resolve(fs, caller, &location.directory)
            .map_err(|error| (error, WccData::default()))?;
        let before = directory.attributes;
        let unchanged = |core: &mut Core, error| {
            let after = Some(core.attributes(directory.export, &before));
            Err((
                error,
                WccData {
                    before: Some(wcc_attributes(&before)),
                    after,
                },
            ))
        };
        if self.read_only(&directory) {
            return unchanged(self, NfsError::ReadOnlyFileSystem);
        }
        if before.file_type != FileType::Directory {
            return unchanged(self, NfsError::NotDirectory);
        }
        let name = location.name.as_slice();
        if is_dot(name) {
            let error = if creating {
                NfsError::Exist
            } else {
                NfsError::Invalid
            };
            return unchanged(self, error);
        }
        if let Err(error) = vfs::validate_name(name) {
            return unchanged(self, status(&error));
        }
        // `.snapshots` at an export's root is the server's (`snapshots.rs`):
        // it exists, and it is read-only.
        if name == SNAPSHOT_DIRECTORY
            && self.is_export_root(&directory)
            && fs.list_snapshots().is_ok()
        {
            let error = if creating {
                NfsError::Exist
            } else {
                NfsError::ReadOnlyFileSystem
            };
            return unchanged(self, error);
        }
        if !directory.identity.may(&before, WRITE | EXECUTE) {
            return unchanged(self, NfsError::Access);
        }
        Ok((directory, before))
    }

    /// Ownership of a new object: the caller's uid; the directory's group
    /// under a set-group-id directory (which new directories inherit),
    /// else the caller's; root may choose both through `sattr3`.
    fn ownership(
        directory: &Resolved,
        requested: &SettableAttributes,
        default_mode: u32,
        is_directory: bool,
    ) -> Ownership {
        let identity = &directory.identity;
        let parent = &directory.attributes;
        let mut mode = requested.mode.unwrap_or(default_mode) & 0o7777;
        let mut gid = identity.gid;
        if parent.mode & 0o2000 != 0 {
            gid = parent.gid;
            if is_directory {
                mode |= 0o2000;
            }
        }
        let mut uid = identity.uid;
        if identity.is_root() {
            uid = requested.uid.unwrap_or(uid);
            gid = requested.gid.unwrap_or(gid);
        } else if let Some(wanted) = requested.gid {
            if identity.in_group(wanted) {
                gid = wanted;
            }
        }
        Ownership { mode, uid, gid }
    }

    /// Create `node` and apply what of `sattr3` creation did not (size,
    /// times); returns the new object's attributes.
    fn make<F: FileSystem + ?Sized>(
        fs: &mut F,
        directory: &Resolved,
        name: &[u8],
        node: &NewNode,
        requested: &SettableAttributes,
        default_mode: u32,
    ) -> Result<Attributes, NfsError> {
        let owner = Self::ownership(
            directory,
            requested,
            default_mode,
            matches!(node, NewNode::Directory),
        );
        let created = fs
            .create(directory.inode(), name, node, &owner)
            .map_err(|error| status(&error))?;
        let rest = SetAttributes {
            size: requested
                .size
                .filter(|_| created.file_type == FileType::Regular),
            ..convert::set_attributes(&SettableAttributes {
                mode: None,
                uid: None,
                gid: None,
                size: None,
                access_time: requested.access_time,
                modify_time: requested.modify_time,
            })
        };
        if convert::is_empty(&rest) {
            return Ok(created);
        }
        fs.setattr(created.inode, &rest)
            .map_err(|error| status(&error))
    }

    /// The reply of the four creating procedures.
    fn created<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        directory: &Resolved,
        before: &Attributes,
        outcome: Result<Attributes, NfsError>,
    ) -> CreatedResult {
        let directory_wcc = self.wcc(fs, directory.export, before);
        match outcome {
            Ok(attributes) => ProcedureResult::Ok(CreatedOk {
                object: Some(self.handle_for(directory.export, &attributes)),
                object_attributes: Some(self.attributes(directory.export, &attributes)),
                directory_wcc,
            }),
            Err(error) => ProcedureResult::failed(error, DirectoryWccFailed { directory_wcc }),
        }
    }

    pub(crate) fn create<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: CreateArguments,
    ) -> CreatedResult {
        let (directory, before) = match self.prepare(fs, caller, &arguments.location, true) {
            Ok(prepared) => prepared,
            Err((error, directory_wcc)) => {
                return ProcedureResult::failed(error, DirectoryWccFailed { directory_wcc })
            }
        };
        let name = arguments.location.name.as_slice();
        let existing = fs.lookup(directory.inode(), name);
        let outcome = match (&arguments.how, existing) {
            (_, Err(error)) if error != vfs::FsError::NotFound => Err(status(&error)),
            (CreateHow::Guarded(_), Ok(_)) => Err(NfsError::Exist),
            (CreateHow::Unchecked(requested), Ok(existing)) => {
                // UNCHECKED on an existing file: no error, only the size
                // (truncation) of the request is applied.
                if existing.file_type != FileType::Regular {
                    Err(NfsError::Exist)
                } else if let Some(size) = requested.size {
                    if !directory.identity.may_access_data(&existing, WRITE) {
                        Err(NfsError::Access)
                    } else {
                        fs.setattr(
                            existing.inode,
                            &SetAttributes {
                                size: Some(size),
                                ..SetAttributes::default()
                            },
                        )
                        .map_err(|error| status(&error))
                    }
                } else {
                    Ok(existing)
                }
            }
            (CreateHow::Exclusive(verifier), Ok(existing)) => {
                // A retransmitted exclusive create finds its own file: the
                // verifier is kept in the times until the client's SETATTR.
                if existing.file_type == FileType::Regular
                    && existing.atime == verifier_time(&verifier[..4])
                    && existing.mtime == verifier_time(&verifier[4..])
                {
                    Ok(existing)
                } else {
                    Err(NfsError::Exist)
                }
            }
            (CreateHow::Unchecked(requested) | CreateHow::Guarded(requested), Err(_)) => {
                Self::make(fs, &directory, name, &NewNode::Regular, requested, 0o644)
            }
            (CreateHow::Exclusive(verifier), Err(_)) => {
                let requested = SettableAttributes {
                    mode: Some(0o600),
                    ..SettableAttributes::default()
                };
                Self::make(fs, &directory, name, &NewNode::Regular, &requested, 0o600).and_then(
                    |created| {
                        fs.setattr(
                            created.inode,
                            &SetAttributes {
                                atime: SetTime::Client(verifier_time(&verifier[..4])),
                                mtime: SetTime::Client(verifier_time(&verifier[4..])),
                                ..SetAttributes::default()
                            },
                        )
                        .map_err(|error| status(&error))
                    },
                )
            }
        };
        self.created(fs, &directory, &before, outcome)
    }

    pub(crate) fn make_directory<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: MakeDirectoryArguments,
    ) -> CreatedResult {
        let (directory, before) = match self.prepare(fs, caller, &arguments.location, true) {
            Ok(prepared) => prepared,
            Err((error, directory_wcc)) => {
                return ProcedureResult::failed(error, DirectoryWccFailed { directory_wcc })
            }
        };
        let outcome = Self::make(
            fs,
            &directory,
            &arguments.location.name,
            &NewNode::Directory,
            &arguments.attributes,
            0o755,
        );
        self.created(fs, &directory, &before, outcome)
    }

    pub(crate) fn symlink<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: SymlinkArguments,
    ) -> CreatedResult {
        let (directory, before) = match self.prepare(fs, caller, &arguments.location, true) {
            Ok(prepared) => prepared,
            Err((error, directory_wcc)) => {
                return ProcedureResult::failed(error, DirectoryWccFailed { directory_wcc })
            }
        };
        let target = arguments.target;
        let outcome = if target.is_empty() || target.contains(&0) {
            Err(NfsError::Invalid)
        } else if target.len() > SYMLINK_MAX {
            Err(NfsError::NameTooLong)
        } else {
            Self::make(
                fs,
                &directory,
                &arguments.location.name,
                &NewNode::Symlink(target),
                &arguments.attributes,
                0o777,
            )
        };
        self.created(fs, &directory, &before, outcome)
    }

    pub(crate) fn make_node<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: MakeNodeArguments,
    ) -> CreatedResult {
        let (directory, before) = match self.prepare(fs, caller, &arguments.location, true) {
            Ok(prepared) => prepared,
            Err((error, directory_wcc)) => {
                return ProcedureResult::failed(error, DirectoryWccFailed { directory_wcc })
            }
        };
        let device = |numbers: &nfs3::DeviceNumbers| DeviceNumber {
            major: numbers.major,
            minor: numbers.minor,
        };
        let root = directory.identity.is_root();
        let (node, requested) = match &arguments.what {
            MakeNodeData::CharacterDevice {
                attributes,
                device: numbers,
            } => (
                Some(NewNode::CharacterDevice(device(numbers))),
                attributes.clone(),
            ),
            MakeNodeData::BlockDevice {
                attributes,
                device: numbers,
            } => (
                Some(NewNode::BlockDevice(device(numbers))),
                attributes.clone(),
            ),
            MakeNodeData::Socket(attributes) => (Some(NewNode::Socket), attributes.clone()),
            MakeNodeData::Fifo(attributes) => (Some(NewNode::Fifo), attributes.clone()),
            MakeNodeData::Other(_) => (None, SettableAttributes::default()),
        };
        let outcome = match node {
            // MKNOD makes only special files; regular files, directories
            // and links have their own procedures.
            None => Err(NfsError::BadType),
            Some(NewNode::CharacterDevice(_) | NewNode::BlockDevice(_)) if !root => {
                Err(NfsError::Permission)
            }
            Some(node) => Self::make(
                fs,
                &directory,
                &arguments.location.name,
                &node,
                &requested,
                0o644,
            ),
        };
        self.created(fs, &directory, &before, outcome)
    }

    pub(crate) fn remove<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: RemoveArguments,
        directory_wanted: bool,
    ) -> RemoveResult {
        let (directory, before) = match self.prepare(fs, caller, &arguments.object, false) {
            Ok(prepared) => prepared,
            Err((error, directory_wcc)) => {
                return ProcedureResult::failed(error, DirectoryWccFailed { directory_wcc })
            }
        };
        let name = arguments.object.name.as_slice();
        let outcome = fs
            .lookup(directory.inode(), name)
            .map_err(|error| status(&error))
            .and_then(|victim| {
                if !directory.identity.may_remove(&before, &victim) {
                    return Err(NfsError::Access);
                }
                let removed = if directory_wanted {
                    fs.rmdir(directory.inode(), name)
                } else {
                    fs.unlink(directory.inode(), name)
                };
                removed.map_err(|error| status(&error))?;
                Ok(victim)
            });
        if let Ok(victim) = &outcome {
            // Publishes the victim's new link count, or its removal.
            self.post(fs, directory.export, victim.inode);
        }
        let directory_wcc = self.wcc(fs, directory.export, &before);
        match outcome {
            Ok(_) => ProcedureResult::Ok(DirectoryWccFailed { directory_wcc }),
            Err(error) => ProcedureResult::failed(error, DirectoryWccFailed { directory_wcc }),
        }
    }

    pub(crate) fn rename<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: RenameArguments,
    ) -> RenameResult {
        let empty = || RenameWcc {
            from_directory_wcc: WccData::default(),
            to_directory_wcc: WccData::default(),
        };
        let (from, from_before) = match self.prepare(fs, caller, &arguments.from, false) {
            Ok(prepared) => prepared,
            Err((error, from_directory_wcc)) => {
                return ProcedureResult::failed(
                    error,
                    RenameWcc {
                        from_directory_wcc,
                        ..empty()
                    },
                )
            }
        };
        let (to, to_before) = match self.prepare(fs, caller, &arguments.to, false) {
            Ok(prepared) => prepared,
            Err((error, to_directory_wcc)) => {
                let from_directory_wcc = self.wcc(fs, from.export, &from_before);
                return ProcedureResult::failed(
                    error,
                    RenameWcc {
                        from_directory_wcc,
                        to_directory_wcc,
                    },
                );
            }
        };
        let from_name = arguments.from.name.as_slice();
        let to_name = arguments.to.name.as_slice();
        let outcome = (|| {
            if from.export != to.export {
                return Err(NfsError::CrossDevice);
            }
            let source = fs
                .lookup(from.inode(), from_name)
                .map_err(|error| status(&error))?;
            if !from.identity.may_remove(&from_before, &source) {
                return Err(NfsError::Access);
            }
            let target = match fs.lookup(to.inode(), to_name) {
                Ok(target) => Some(target),
                Err(vfs::FsError::NotFound) => None,
                Err(error) => return Err(status(&error)),
            };
            if let Some(target) = &target {
                if target.inode != source.inode && !to.identity.may_remove(&to_before, target) {
                    return Err(NfsError::Access);
                }
            }
            // Moving a directory to another parent rewrites its `..`.
            if source.file_type == FileType::Directory
                && from.inode() != to.inode()
                && !from.identity.may(&source, WRITE)
            {
                return Err(NfsError::Access);
            }
            fs.rename(from.inode(), from_name, to.inode(), to_name)
                .map_err(|error| status(&error))?;
            Ok((source, target))
        })();
        if let Ok((source, target)) = &outcome {
            self.post(fs, from.export, source.inode);
            if let Some(target) = target {
                if target.inode != source.inode {
                    self.post(fs, from.export, target.inode);
                }
            }
        }
        let wcc = RenameWcc {
            from_directory_wcc: self.wcc(fs, from.export, &from_before),
            to_directory_wcc: self.wcc(fs, to.export, &to_before),
        };
        match outcome {
            Ok(_) => ProcedureResult::Ok(wcc),
            Err(error) => ProcedureResult::failed(error, wcc),
        }
    }

    pub(crate) fn link<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: LinkArguments,
    ) -> LinkResult {
        let file = match self.resolve(fs, caller, &arguments.file) {
            Ok(file) => file,
            Err(error) => {
                return ProcedureResult::failed(
                    error,
                    LinkWcc {
                        file_attributes: None,
                        link_directory_wcc: WccData::default(),
                    },
                )
            }
        };
        let (directory, before) = match self.prepare(fs, caller, &arguments.link, true) {
            Ok(prepared) => prepared,
            Err((error, link_directory_wcc)) => {
                let file_attributes = self.post(fs, file.export, file.inode());
                return ProcedureResult::failed(
                    error,
                    LinkWcc {
                        file_attributes,
                        link_directory_wcc,
                    },
                );
            }
        };
        let outcome = if file.export != directory.export {
            Err(NfsError::CrossDevice)
        } else {
            fs.link(file.inode(), directory.inode(), &arguments.link.name)
                .map(|_| ())
                .map_err(|error| status(&error))
        };
        let file_attributes = self.post(fs, file.export, file.inode());
        let link_directory_wcc = self.wcc(fs, directory.export, &before);
        let wcc = LinkWcc {
            file_attributes,
            link_directory_wcc,
        };
        match outcome {
            Ok(()) => ProcedureResult::Ok(wcc),
            Err(error) => ProcedureResult::failed(error, wcc),
        }
    }
}

/// The time an exclusive-create verifier half is kept in.
fn verifier_time(half: &[u8]) -> Timestamp {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&half[..4]);
    Timestamp {
        seconds: i64::from(u32::from_be_bytes(bytes)),
        nanoseconds: 0,
    }
}
