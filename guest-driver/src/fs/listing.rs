//! Lookups answered from a directory's listing.
//!
//! Design: a program that looks up many names of one directory (`ls`
//! without `-l` then `stat` of each, a build's include search, a cold
//! `stat` of every file) would cost one LOOKUP call per name. With the
//! metadata table, once [`LIST_AFTER`] lookups of a directory went to the
//! server, the driver fetches the directory's whole listing with
//! READDIRPLUS (names, handles, file ids) and answers further lookups
//! there from it: a name listed is found (its attributes come from the
//! table, as any GETATTR's do), a name not listed does not exist.
//!
//! The listing is dropped whenever the directory changes: by the watcher
//! when another guest changed it (as it drops the names the kernel
//! caches, `watch.rs`), and by this driver's own changes to it (the kernel
//! is told of those directly). A listing fetched across such a drop is not
//! kept ([`super::nodes::Node::listing_epoch`]).
//!
//! Only when the kernel checks permissions (the server's LOOKUP would
//! check search permission on the directory for each caller; the kernel
//! does that check before asking) and caches names, found and not found
//! (`--entry-timeout` and `--negative-timeout` above 0): a listing is then
//! as current as the kernel's own cached names, which the watcher keeps
//! within milliseconds. A mount that wants every lookup to reach the
//! server gets that.
//!
//! Bounds: a directory of more than [`MAX_LISTED_ENTRIES`] entries is not
//! listed (its lookups go to the server); listings hold at most
//! [`MAX_ENTRIES`] entries in all, the oldest dropped first.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use nfs3::procedures::directory::ReadDirectoryPlusArguments;
use nfs3::FileHandle;

use super::{lock, nfs, NfsFilesystem};
use crate::client::Caller;

/// Lookups of one directory sent to the server before its listing is
/// fetched (a single lookup never costs a listing).
pub const LIST_AFTER: u32 = 2;

/// Largest directory listed.
pub const MAX_LISTED_ENTRIES: usize = 4_096;

/// Entries all listings hold together (about 100 bytes each).
pub const MAX_ENTRIES: usize = 65_536;

/// Bytes of names and cookies asked per READDIRPLUS (`dircount`).
const DIRECTORY_COUNT: u32 = 64 * 1024;

/// Largest READDIRPLUS reply asked for (`maxcount`).
const MAXIMUM_COUNT: u32 = 512 * 1024;

/// The name a server finds in an export's root without listing it.
const SNAPSHOTS: &[u8] = b".snapshots";

/// What the driver knows of a directory's listing.
#[derive(Debug, Clone, Default)]
pub enum Listing {
    /// Lookups sent to the server since the directory last changed.
    Counting(u32),
    /// Every entry (name -> handle and file id, when the server gave them),
    /// as of the last change.
    Listed(HashMap<Vec<u8>, Option<(FileHandle, u64)>>),
    /// Too large, or the listing was refused: lookups go to the server
    /// until the directory changes.
    Refused,
    /// Nothing counted yet.
    #[default]
    Unknown,
}

/// Which directories hold listings, oldest first, and their entries in
/// all.
#[derive(Debug, Default)]
pub struct Listings {
    order: VecDeque<(u64, usize)>,
    entries: usize,
}

/// What a lookup learned from a listing.
pub(super) enum Answer {
    /// Listed: the handle and file id to answer with.
    Found(FileHandle, u64),
    /// Not listed: no such name.
    Absent,
}

impl NfsFilesystem {
    /// The answer to a lookup of `name` in `parent` from its listing,
    /// fetching the listing when the directory's lookups earned it; `None`
    /// when the server must be asked.
    pub(super) fn lookup_in_listing(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
    ) -> Option<Answer> {
        // A listing is as current as the kernel's own cached names (the
        // watcher drops both): only where the mount lets the kernel cache
        // names, found and not found.
        if self.coherence.is_none()
            || !self.settings.kernel_permissions
            || self.settings.entry_timeout.is_zero()
            || self.settings.negative_timeout.is_zero()
        {
            return None;
        }
        let name = name.as_bytes();
        if let Some(answer) = self.answer(parent, name) {
            return Some(answer);
        }
        let due = {
            let mut nodes = lock(&self.nodes);
            let node = nodes.get_mut(parent)?;
            match &mut node.listing {
                Listing::Unknown => {
                    node.listing = Listing::Counting(1);
                    false
                }
                Listing::Counting(count) if *count < LIST_AFTER => {
                    *count += 1;
                    false
                }
                Listing::Counting(_) => true,
                Listing::Listed(_) | Listing::Refused => false,
            }
        };
        if !due {
            return None;
        }
        self.fetch_listing(caller, parent);
        self.answer(parent, name)
    }

    fn answer(&self, parent: u64, name: &[u8]) -> Option<Answer> {
        let nodes = lock(&self.nodes);
        let Listing::Listed(entries) = &nodes.get(parent)?.listing else {
            return None;
        };
        match entries.get(name) {
            Some(Some((handle, file_id))) => Some(Answer::Found(handle.clone(), *file_id)),
            // Listed without a handle: the server knows.
            Some(None) => None,
            // The root hides `.snapshots` from its listing.
            None if name == SNAPSHOTS => None,
            None => Some(Answer::Absent),
        }
    }

    /// Lists `parent` with READDIRPLUS and keeps the listing, unless the
    /// directory is too large, the listing fails, or the watcher found the
    /// directory changed meanwhile.
    fn fetch_listing(&self, caller: &Caller, parent: u64) {
        let (directory, epoch) = {
            let nodes = lock(&self.nodes);
            let Some(node) = nodes.get(parent) else {
                return;
            };
            (node.handle.clone(), node.listing_epoch)
        };
        let mut entries = HashMap::new();
        let mut cookie = 0;
        let mut verifier = [0; 8];
        let refused = loop {
            let listing = match nfs(self.client.read_directory_plus(
                caller,
                ReadDirectoryPlusArguments {
                    directory: directory.clone(),
                    cookie,
                    cookie_verifier: verifier,
                    directory_count: DIRECTORY_COUNT,
                    maximum_count: MAXIMUM_COUNT,
                },
            )) {
                Ok(listing) => listing,
                Err(error) => {
                    log::debug!("listing directory {parent} for lookups failed: {error:?}");
                    break true;
                }
            };
            verifier = listing.cookie_verifier;
            for entry in &listing.entries {
                let known = match (&entry.handle, &entry.attributes) {
                    (Some(handle), Some(attributes)) => Some((handle.clone(), attributes.file_id)),
                    _ => None,
                };
                entries.insert(entry.name.clone(), known);
            }
            if entries.len() > MAX_LISTED_ENTRIES {
                break true;
            }
            match listing.entries.last() {
                Some(last) if !listing.end_of_file => cookie = last.cookie,
                _ => break false,
            }
        };
        entries.remove(&b"."[..]);
        entries.remove(&b".."[..]);
        let count = entries.len();
        {
            let mut nodes = lock(&self.nodes);
            let Some(node) = nodes.get_mut(parent) else {
                return;
            };
            if node.listing_epoch != epoch {
                // Changed while listed (by another guest, as the watcher
                // saw, or by this driver): the listing may miss it.
                return;
            }
            node.listing = if refused {
                Listing::Refused
            } else {
                Listing::Listed(entries)
            };
        }
        if !refused {
            self.keep_listing(parent, count);
        }
    }

    /// Accounts for a new listing of `count` entries, dropping the oldest
    /// listings past [`MAX_ENTRIES`].
    fn keep_listing(&self, parent: u64, count: usize) {
        let evicted = {
            let mut listings = lock(&self.listings);
            // An empty directory counts as one, so the queue stays bounded.
            let count = count.max(1);
            listings.order.push_back((parent, count));
            listings.entries += count;
            let mut evicted = Vec::new();
            while listings.entries > MAX_ENTRIES {
                let Some((node, entries)) = listings.order.pop_front() else {
                    break;
                };
                listings.entries -= entries;
                evicted.push(node);
            }
            evicted
        };
        if evicted.is_empty() {
            return;
        }
        let mut nodes = lock(&self.nodes);
        for node in evicted {
            if let Some(found) = nodes.get_mut(node) {
                if matches!(found.listing, Listing::Listed(_)) {
                    found.listing = Listing::Unknown;
                }
            }
        }
    }
}
