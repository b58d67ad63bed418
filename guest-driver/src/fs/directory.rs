//! Directory listings through READDIRPLUS (RFC 1813 section 3.3.17).
//!
//! Design: the FUSE offset of each entry is the server's cookie, so the
//! kernel's next request names where to resume. One READDIRPLUS fetches
//! more entries than one FUSE buffer holds; the rest wait in the open
//! directory's stream and serve the next request when it resumes at the
//! same cookie (any other offset, a seekdir, drops them and asks the
//! server). The cookie verifier from the first reply goes with every later
//! call. Each entry's handle and attributes come with the listing, so a
//! READDIRPLUS primes the kernel's entry and attribute caches (`ls -l`
//! costs no LOOKUP or GETATTR per file).
//!
//! A directory where lookups keep reaching the server is listed once for
//! them ([`NfsFilesystem::list_for_lookup`]): its names and handles are
//! kept while nobody else changes it, and lookups there are answered
//! without a call (the attributes from the metadata table).

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::{Errno, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};
use nfs3::procedures::directory::{EntryPlus, ReadDirectoryPlusArguments};
use nfs3::procedures::inspect::LookupArguments;
use nfs3::{CookieVerifier, DirectoryOperationArguments, FileAttributes, FileHandle};

use super::nodes::{self, Child, Children};
use super::table::TableEntry;
use super::{attributes, io, lock, nfs, NfsFilesystem};
use crate::client::Caller;

/// Bytes of names and cookies asked per READDIRPLUS (`dircount`).
const DIRECTORY_COUNT: u32 = 32 * 1024;
/// Largest READDIRPLUS reply asked for (`maxcount`).
const MAXIMUM_COUNT: u32 = 256 * 1024;

/// An open directory's position in the server's listing.
#[derive(Debug)]
pub(super) struct DirectoryStream {
    handle: FileHandle,
    verifier: CookieVerifier,
    /// Entries fetched but not yet given to the kernel.
    buffered: VecDeque<EntryPlus>,
    /// The cookie the first buffered entry follows.
    buffered_after: u64,
    /// The server said the listing ends after the buffered entries.
    end_of_file: bool,
}

/// One listed entry, complete.
struct Listed {
    name: Vec<u8>,
    cookie: u64,
    handle: Option<FileHandle>,
    attributes: FileAttributes,
}

impl NfsFilesystem {
    pub(super) fn do_opendir(&self, _caller: &Caller, node: INodeNo) -> Result<u64, Errno> {
        let handle = self.handle_of(node)?;
        let file = self.new_file_handle();
        lock(&self.directories).insert(
            file,
            DirectoryStream {
                handle,
                verifier: [0; 8],
                buffered: VecDeque::new(),
                buffered_after: u64::MAX,
                end_of_file: false,
            },
        );
        Ok(file)
    }

    /// The next entries after `cookie`: from the stream's buffer when it
    /// resumes there, else from the server. Empty at the end.
    fn next_entries(&self, caller: &Caller, file: u64, cookie: u64) -> Result<Vec<Listed>, Errno> {
        let (handle, verifier) = {
            let mut directories = lock(&self.directories);
            let stream = directories.get_mut(&file).ok_or(Errno::EBADF)?;
            if stream.buffered_after == cookie
                && (!stream.buffered.is_empty() || stream.end_of_file)
            {
                let entries: Vec<EntryPlus> = stream.buffered.drain(..).collect();
                drop(directories);
                return self.complete(caller, file, entries);
            }
            let verifier = if cookie == 0 { [0; 8] } else { stream.verifier };
            (stream.handle.clone(), verifier)
        };
        let listing = nfs(self.client.read_directory_plus(
            caller,
            ReadDirectoryPlusArguments {
                directory: handle,
                cookie,
                cookie_verifier: verifier,
                directory_count: DIRECTORY_COUNT,
                maximum_count: MAXIMUM_COUNT,
            },
        ))?;
        {
            let mut directories = lock(&self.directories);
            if let Some(stream) = directories.get_mut(&file) {
                stream.verifier = listing.cookie_verifier;
                stream.buffered.clear();
                stream.end_of_file = listing.end_of_file;
                // Nothing buffered yet: a request at the last cookie of an
                // ended listing answers empty without asking again.
                stream.buffered_after = match listing.entries.last() {
                    Some(last) if listing.end_of_file => last.cookie,
                    _ => u64::MAX,
                };
            }
        }
        self.complete(caller, file, listing.entries)
    }

    /// Fills in entries the server listed without a handle or attributes.
    fn complete(
        &self,
        caller: &Caller,
        file: u64,
        entries: Vec<EntryPlus>,
    ) -> Result<Vec<Listed>, Errno> {
        let directory = lock(&self.directories)
            .get(&file)
            .map(|stream| stream.handle.clone())
            .ok_or(Errno::EBADF)?;
        let mut listed = Vec::with_capacity(entries.len());
        for entry in entries {
            let dot = entry.name == b"." || entry.name == b"..";
            let (handle, attributes) = match (entry.handle, entry.attributes) {
                (Some(handle), Some(attributes)) => (Some(handle), attributes),
                (None, Some(attributes)) if dot => (None, attributes),
                (Some(handle), None) => {
                    let attributes = self.get_attributes(caller, &handle)?;
                    (Some(handle), attributes)
                }
                (None, _) => {
                    let found = nfs(self.client.lookup(
                        caller,
                        LookupArguments {
                            what: DirectoryOperationArguments {
                                directory: directory.clone(),
                                name: entry.name.clone(),
                            },
                        },
                    ));
                    match found {
                        Ok(found) => {
                            let attributes = match found.object_attributes {
                                Some(attributes) => attributes,
                                None => self.get_attributes(caller, &found.object)?,
                            };
                            (Some(found.object), attributes)
                        }
                        // Removed since the listing: skip it.
                        Err(Errno::ENOENT) => continue,
                        Err(error) => return Err(error),
                    }
                }
            };
            listed.push(Listed {
                name: entry.name,
                cookie: entry.cookie,
                handle,
                attributes,
            });
        }
        Ok(listed)
    }

    /// Lists `directory` so that lookups there are answered without a call
    /// ([`nodes::LIST_AFTER_LOOKUPS`]); returns whether its names are now
    /// known (listed here or meanwhile by another request). Only where
    /// lookups may be answered locally (a watched table,
    /// `default_permissions`, names cached by the kernel), for a live
    /// directory (a snapshot's are not in the table), and when the whole
    /// listing fits one READDIRPLUS reply (else, or if the listing is
    /// refused, never again for this node). The names are kept only if
    /// nothing changed the directory during the call: no call of this
    /// driver's in flight or recorded, and no invalidation by the watcher
    /// since before it (the listing may predate another guest's change the
    /// watcher already handled). A change after it the watcher sees, and
    /// drops the names.
    pub(super) fn list_for_lookup(&self, caller: &Caller, directory: u64) -> bool {
        if !self.names_known_locally() {
            return false;
        }
        let mark = self.mark();
        let (handle, own_changes) = {
            let mut nodes = lock(&self.nodes);
            let Some(node) = nodes.get_mut(directory) else {
                return false;
            };
            let live = node
                .file_id()
                .is_some_and(|file_id| file_id < io::SNAPSHOT_DIRECTORY_FILE_ID);
            // Listed meanwhile by another request.
            if node.children.is_some() {
                return true;
            }
            if node.unlistable || !live {
                return false;
            }
            if node.lookups_unlisted < nodes::LIST_AFTER_LOOKUPS {
                node.lookups_unlisted += 1;
                return false;
            }
            if node.own.in_flight > 0 {
                return false;
            }
            (node.handle.clone(), node.own_changes)
        };
        let listing = match nfs(self.client.read_directory_plus(
            caller,
            ReadDirectoryPlusArguments {
                directory: handle.clone(),
                cookie: 0,
                cookie_verifier: [0; 8],
                directory_count: DIRECTORY_COUNT,
                maximum_count: MAXIMUM_COUNT,
            },
        )) {
            Ok(listing) => listing,
            Err(error) => {
                log::debug!("listing a directory for lookups failed: {error:?}");
                if let Some(node) = lock(&self.nodes).get_mut(directory) {
                    node.lookups_unlisted = 0;
                    // Refused stays refused; a lost connection or another
                    // passing failure is tried again after the next lookup.
                    node.unlistable = error == Errno::EACCES;
                }
                return false;
            }
        };
        let mut children = Children::default();
        for entry in listing.entries {
            if entry.name == b"." || entry.name == b".." {
                continue;
            }
            match entry.handle {
                Some(handle) => children.insert_child(
                    entry.name,
                    Child {
                        handle,
                        file_id: entry.file_id,
                    },
                ),
                None => children.insert(entry.name),
            }
        }
        let mut nodes = lock(&self.nodes);
        let Some(node) = nodes.get_mut(directory) else {
            return false;
        };
        node.lookups_unlisted = 0;
        if !listing.end_of_file || children.len() > nodes::MAX_TRACKED_NAMES {
            node.unlistable = true;
            return false;
        }
        if node.children.is_some() {
            return true;
        }
        let unchanged = node.handle == handle
            && node.own_changes == own_changes
            && node.own.in_flight == 0
            && node.stale_at <= mark
            && node.names_stale_at <= mark;
        if unchanged {
            node.children = Some(children);
            self.stats.count_listing();
        }
        unchanged
    }

    /// Puts entries that did not fit back at the head of the stream.
    fn keep_for_later(&self, file: u64, after: u64, rest: Vec<Listed>) {
        let mut directories = lock(&self.directories);
        let Some(stream) = directories.get_mut(&file) else {
            return;
        };
        stream.buffered = rest
            .into_iter()
            .map(|entry| EntryPlus {
                file_id: entry.attributes.file_id,
                name: entry.name,
                cookie: entry.cookie,
                attributes: Some(entry.attributes),
                handle: entry.handle,
            })
            .collect();
        stream.buffered_after = after;
    }

    pub(super) fn do_readdirplus(
        &self,
        caller: &Caller,
        node: INodeNo,
        file: u64,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // Listed attributes must not be older than queued writes.
        self.writes.drain_all();
        let mark = self.mark();
        let entries = match self.next_entries(caller, file, offset) {
            Ok(entries) => entries,
            Err(error) => return reply.error(error),
        };
        // What the table shows for each listed file, read before the node
        // lock is taken: entries it confirms need no recheck.
        let confirmed: Vec<Option<TableEntry>> = entries
            .iter()
            .map(
                |entry| match (&self.table, &self.coherence, &entry.handle) {
                    (Some(table), Some(_), Some(handle)) => table
                        .lookup(entry.attributes.file_id, handle)
                        .filter(|found| found.attributes == entry.attributes),
                    _ => None,
                },
            )
            .collect();
        let mut confirmed = confirmed.into_iter();
        let mut unconfirmed: Vec<u64> = Vec::new();
        let mut listed: Vec<Vec<u8>> = Vec::new();
        let mut entries = entries.into_iter();
        let mut last_cookie = offset;
        let filled = 'fill: {
            let mut nodes = lock(&self.nodes);
            for entry in entries.by_ref() {
                let in_table = confirmed.next().flatten();
                let name = OsStr::from_bytes(&entry.name);
                let dot = entry.name == b"." || entry.name == b"..";
                // "." and ".." take no reference (the kernel skips them).
                let (id, created) = match (&entry.handle, dot) {
                    (Some(handle), false) => nodes.remember(handle),
                    (Some(handle), true) => (nodes.find(handle).unwrap_or(node.0), false),
                    (None, _) => (node.0, false),
                };
                // Names the watcher follows are cached long; the others
                // (and every attribute the table does not confirm) briefly.
                let tracked = !dot
                    && self.coherence.is_some()
                    && entry.handle.is_some()
                    && nodes.track(node.0, &entry.name);
                let timeout = if tracked {
                    self.settings
                        .attribute_timeout
                        .min(self.settings.entry_timeout)
                } else {
                    self.settings
                        .attribute_timeout
                        .min(super::UNWATCHED_ENTRY_TIMEOUT)
                };
                let fuse_attributes = attributes::to_fuse(id, &entry.attributes);
                let full = reply.add(
                    INodeNo(id),
                    entry.cookie,
                    name,
                    &timeout,
                    &fuse_attributes,
                    Generation(0),
                );
                if full {
                    if created {
                        nodes.collect(id);
                    }
                    let mut rest = vec![entry];
                    rest.extend(entries.by_ref());
                    drop(nodes);
                    self.keep_for_later(file, last_cookie, rest);
                    break 'fill false;
                }
                if !dot {
                    nodes.add_reference(id);
                    if entry.handle.is_some() {
                        nodes.set_file_id(id, entry.attributes.file_id);
                        match (in_table, nodes.get_mut(id)) {
                            (Some(found), Some(child)) => child.learn(&found),
                            // A snapshot's objects never change (and are
                            // never in the table): nothing to recheck.
                            _ if self.coherence.is_some()
                                && !super::io::is_snapshot_object(entry.attributes.file_id) =>
                            {
                                unconfirmed.push(id)
                            }
                            _ => {}
                        }
                    }
                    if tracked {
                        listed.push(entry.name.clone());
                    }
                }
                last_cookie = entry.cookie;
            }
            true
        };
        if filled {
            self.mark_consumed(file, last_cookie);
        }
        reply.ok();
        // Attributes the table did not confirm may be stale already, and
        // names the watcher dropped meanwhile too: invalidated again (the
        // attributes only, as in `recheck`: the listing filled no page).
        let Some(notifier) = self.notifier.get() else {
            return;
        };
        for id in unconfirmed {
            let _ = super::watch::deliver(notifier.inval_inode(INodeNo(id), -1, 0));
        }
        let names_stale = lock(&self.nodes)
            .get(node.0)
            .is_some_and(|directory| directory.names_stale_at > mark);
        if names_stale {
            for name in listed {
                let _ = super::watch::deliver(notifier.inval_entry(node, OsStr::from_bytes(&name)));
            }
        }
    }

    /// After every fetched entry went to the kernel: a request resuming at
    /// the last one finds the end (if the server said so) without a call.
    fn mark_consumed(&self, file: u64, last_cookie: u64) {
        if let Some(stream) = lock(&self.directories).get_mut(&file) {
            if stream.end_of_file {
                stream.buffered.clear();
                stream.buffered_after = last_cookie;
            } else {
                stream.buffered_after = u64::MAX;
            }
        }
    }

    /// Plain READDIR from FUSE (when the kernel does not use readdirplus):
    /// the same listing without entry replies.
    pub(super) fn do_readdir(
        &self,
        caller: &Caller,
        file: u64,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.next_entries(caller, file, offset) {
            Ok(entries) => entries,
            Err(error) => return reply.error(error),
        };
        let mut entries = entries.into_iter();
        let mut last_cookie = offset;
        for entry in entries.by_ref() {
            // The node id where the kernel knows the file (what stat shows),
            // else the server's file id.
            let known = entry
                .handle
                .as_ref()
                .and_then(|handle| lock(&self.nodes).find(handle));
            let full = reply.add(
                INodeNo(known.unwrap_or(entry.attributes.file_id).max(1)),
                entry.cookie,
                attributes::to_fuse_type(entry.attributes.file_type),
                OsStr::from_bytes(&entry.name),
            );
            if full {
                let mut rest = vec![entry];
                rest.extend(entries.by_ref());
                self.keep_for_later(file, last_cookie, rest);
                return reply.ok();
            }
            last_cookie = entry.cookie;
        }
        self.mark_consumed(file, last_cookie);
        reply.ok();
    }
}
