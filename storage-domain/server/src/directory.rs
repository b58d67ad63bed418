//! READDIR and READDIRPLUS (RFC 1813 sections 3.3.16 and 3.3.17).
//!
//! Cookies: the file system's cookies are stable resume points that never
//! repeat within a directory, so the server hands them out shifted by two,
//! keeping 1 and 2 for the `.` and `..` entries it adds itself (cookie 0
//! means "from the start"). The cookie verifier is one value per volume;
//! a non-zero cookie with another non-zero verifier is NFS3ERR_BAD_COOKIE.
//!
//! Sizes: entries are added while the encoded reply stays within the
//! client's `count` (READDIR) or `maxcount` (READDIRPLUS; also `dircount`
//! for the names and cookies alone), all capped at [`crate::MAX_IO_SIZE`].
//! A reply that cannot hold even one entry is NFS3ERR_TOOSMALL.

use alloc::vec::Vec;

use nfs3::procedures::directory::{
    entry_size, read_directory_overhead, Entry, EntryPlus, ReadDirectoryArguments, ReadDirectoryOk,
    ReadDirectoryPlusArguments, ReadDirectoryPlusOk, ReadDirectoryPlusResult, ReadDirectoryResult,
    MAX_DIRECTORY_ENTRIES,
};
use nfs3::procedures::inspect::AttributesFailed;
use nfs3::{CookieVerifier, NfsError, ProcedureResult};
use vfs::{Attributes, FileSystem, FileType, FsError, InodeId};

use crate::convert::status;
use crate::handle::{Tree, MAX_HANDLE_SIZE};
use crate::identity::READ;
use crate::procedures::Resolved;
use crate::{Caller, Core, MAX_IO_SIZE};

/// Cookies 1 and 2 belong to `.` and `..`.
const RESERVED_COOKIES: u64 = 2;
/// Entries asked of the file system at a time.
const BATCH: usize = 128;

/// One listed name, before it is encoded.
struct Listed {
    name: Vec<u8>,
    inode: InodeId,
    cookie: u64,
}

/// Size accounting for one reply.
trait Budget {
    /// Whether an entry with this name fits; if so it is counted.
    fn take(&mut self, name_length: usize) -> bool;
}

struct PlainBudget {
    left: usize,
}

impl Budget for PlainBudget {
    fn take(&mut self, name_length: usize) -> bool {
        let size = entry_size(name_length);
        if size > self.left {
            return false;
        }
        self.left -= size;
        true
    }
}

struct PlusBudget {
    left: usize,
    directory_left: usize,
}

impl Budget for PlusBudget {
    fn take(&mut self, name_length: usize) -> bool {
        // entry3 plus post_op_attr with attributes plus a post_op_fh3.
        let size = entry_size(name_length)
            + 4
            + nfs3::attributes::FILE_ATTRIBUTES_SIZE
            + 4
            + 4
            + xdr::padded_length(MAX_HANDLE_SIZE);
        let directory_size = 8 + 4 + xdr::padded_length(name_length) + 8;
        if size > self.left || directory_size > self.directory_left {
            return false;
        }
        self.left -= size;
        self.directory_left -= directory_size;
        true
    }
}

impl Core {
    /// Check the directory and the cookie, for both procedures.
    fn open_listing<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        handle: &nfs3::FileHandle,
        cookie: u64,
        verifier: &CookieVerifier,
    ) -> Result<Resolved, (NfsError, Option<nfs3::FileAttributes>)> {
        let directory = self
            .resolve(fs, caller, handle)
            .map_err(|error| (error, None))?;
        let attributes = Some(self.attributes(directory.export, &directory.attributes));
        if directory.attributes.file_type != FileType::Directory {
            return Err((NfsError::NotDirectory, attributes));
        }
        if !directory.identity.may(&directory.attributes, READ) {
            return Err((NfsError::Access, attributes));
        }
        if cookie != 0 && *verifier != [0; 8] && *verifier != self.cookie_verifier {
            return Err((NfsError::BadCookie, attributes));
        }
        Ok(directory)
    }

    /// `..` of a directory, never above its export's root.
    fn parent<F: FileSystem + ?Sized>(
        &self,
        fs: &mut F,
        directory: &Resolved,
    ) -> Result<Attributes, FsError> {
        if self.is_export_root(directory) {
            Ok(directory.attributes)
        } else {
            fs.lookup(directory.inode(), b"..")
        }
    }

    /// The names after `cookie` that fit `budget`, and whether the listing
    /// reached the end.
    fn list<F: FileSystem + ?Sized>(
        &self,
        fs: &mut F,
        directory: &Resolved,
        cookie: u64,
        budget: &mut dyn Budget,
    ) -> Result<(Vec<Listed>, bool), NfsError> {
        let mut listed = Vec::new();
        let full = |listed: &Vec<Listed>| listed.len() >= MAX_DIRECTORY_ENTRIES as usize;
        if cookie == 0 {
            if !budget.take(1) {
                return Err(NfsError::TooSmall);
            }
            listed.push(Listed {
                name: b".".to_vec(),
                inode: directory.inode(),
                cookie: 1,
            });
        }
        if cookie <= 1 {
            let parent = self.parent(fs, directory).map_err(|error| status(&error))?;
            if !budget.take(2) {
                return finish(listed, false);
            }
            // Above a snapshot's root is `.snapshots`, which has no inode
            // in the snapshot: inode 0 (never one of a file system) stands
            // for it, with its file id and no attributes or handle (a
            // client that wants them looks `..` up).
            let inode = if self.call_tree != Tree::Live && self.is_export_root(directory) {
                InodeId(0)
            } else {
                parent.inode
            };
            listed.push(Listed {
                name: b"..".to_vec(),
                inode,
                cookie: 2,
            });
        }
        let mut position = cookie.saturating_sub(RESERVED_COOKIES);
        loop {
            let page = fs
                .readdir(directory.inode(), position, BATCH)
                .map_err(|error| status(&error))?;
            for entry in page.entries {
                let Some(cookie) = entry.cookie.checked_add(RESERVED_COOKIES) else {
                    return Err(NfsError::ServerFault);
                };
                if full(&listed) || !budget.take(entry.name.len()) {
                    return finish(listed, false);
                }
                position = entry.cookie;
                listed.push(Listed {
                    name: entry.name,
                    inode: entry.inode,
                    cookie,
                });
            }
            if page.end {
                return finish(listed, true);
            }
        }
    }

    pub(crate) fn read_directory<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: ReadDirectoryArguments,
    ) -> ReadDirectoryResult {
        let directory = match self.open_listing(
            fs,
            caller,
            &arguments.directory,
            arguments.cookie,
            &arguments.cookie_verifier,
        ) {
            Ok(directory) => directory,
            Err((error, object_attributes)) => {
                return ProcedureResult::failed(error, AttributesFailed { object_attributes })
            }
        };
        let directory_attributes = Some(self.attributes(directory.export, &directory.attributes));
        let count = arguments.count.min(MAX_IO_SIZE) as usize;
        let mut budget = PlainBudget {
            left: count.saturating_sub(read_directory_overhead(true)),
        };
        match self.list(fs, &directory, arguments.cookie, &mut budget) {
            Ok((listed, end_of_file)) => ProcedureResult::Ok(ReadDirectoryOk {
                directory_attributes,
                cookie_verifier: self.cookie_verifier,
                entries: listed
                    .into_iter()
                    .map(|listed| Entry {
                        file_id: self.file_id(listed.inode),
                        name: listed.name,
                        cookie: listed.cookie,
                    })
                    .collect(),
                end_of_file,
            }),
            Err(error) => ProcedureResult::failed(
                error,
                AttributesFailed {
                    object_attributes: directory_attributes,
                },
            ),
        }
    }

    pub(crate) fn read_directory_plus<F: FileSystem + ?Sized>(
        &mut self,
        fs: &mut F,
        caller: &Caller,
        arguments: ReadDirectoryPlusArguments,
    ) -> ReadDirectoryPlusResult {
        let directory = match self.open_listing(
            fs,
            caller,
            &arguments.directory,
            arguments.cookie,
            &arguments.cookie_verifier,
        ) {
            Ok(directory) => directory,
            Err((error, object_attributes)) => {
                return ProcedureResult::failed(error, AttributesFailed { object_attributes })
            }
        };
        let directory_attributes = Some(self.attributes(directory.export, &directory.attributes));
        let maximum = arguments.maximum_count.min(MAX_IO_SIZE) as usize;
        let mut budget = PlusBudget {
            left: maximum.saturating_sub(read_directory_overhead(true)),
            // Clients send dircount 0 or tiny values meaning "no opinion";
            // only a meaningful one limits the reply.
            directory_left: match arguments.directory_count as usize {
                count if count < 512 => usize::MAX,
                count => count,
            },
        };
        let listed = match self.list(fs, &directory, arguments.cookie, &mut budget) {
            Ok(listed) => listed,
            Err(error) => {
                return ProcedureResult::failed(
                    error,
                    AttributesFailed {
                        object_attributes: directory_attributes,
                    },
                )
            }
        };
        let (listed, end_of_file) = listed;
        let mut entries = Vec::with_capacity(listed.len());
        for listed in listed {
            // An entry removed since the listing gets no attributes; the
            // client then looks it up itself.
            let attributes = if listed.inode == directory.inode() {
                Ok(directory.attributes)
            } else {
                fs.getattr(listed.inode)
            };
            let (attributes, handle) = match attributes {
                Ok(attributes) => (
                    Some(self.attributes(directory.export, &attributes)),
                    Some(self.handle_for(directory.export, &attributes)),
                ),
                Err(_) => (None, None),
            };
            entries.push(EntryPlus {
                file_id: self.file_id(listed.inode),
                name: listed.name,
                cookie: listed.cookie,
                attributes,
                handle,
            });
        }
        ProcedureResult::Ok(ReadDirectoryPlusOk {
            directory_attributes,
            cookie_verifier: self.cookie_verifier,
            entries,
            end_of_file,
        })
    }
}

/// A listing that stopped early must have room for at least one entry.
fn finish(listed: Vec<Listed>, end: bool) -> Result<(Vec<Listed>, bool), NfsError> {
    if listed.is_empty() && !end {
        return Err(NfsError::TooSmall);
    }
    Ok((listed, end))
}
