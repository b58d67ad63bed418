//! The table between FUSE node ids and NFS file handles.
//!
//! Design: the kernel names files by node id and counts its references
//! (one per successful entry reply: lookup, create, mkdir, mknod, symlink,
//! link and each READDIRPLUS entry); `forget` drops them. A node lives while
//! the kernel holds a reference, or while a file on it is open (for the
//! silly rename below). Node ids are allocated here, one per distinct file
//! handle; the root is node 1 and is never forgotten. Two entries with the
//! same handle (hard links) share a node, so `stat` shows one inode number.

use std::collections::{HashMap, HashSet};

use nfs3::{FileAttributes, FileHandle, Time, WccAttributes};

use super::table::TableEntry;

/// The root's node id (FUSE_ROOT_ID).
pub const ROOT: u64 = 1;

/// What the driver knows about one file.
#[derive(Debug, Clone)]
pub struct Node {
    /// The server's handle.
    pub handle: FileHandle,
    /// References the kernel holds.
    pub lookups: u64,
    /// Open files on this node.
    pub open_count: u32,
    /// `(mtime, size)` that the kernel's cached pages of this file match,
    /// if known: set at open and by this driver's own changes (writes and
    /// attribute changes). An open that finds other values drops the page
    /// cache (close-to-open).
    pub data_version: Option<(Time, u64)>,
    /// Where the file was hidden when it was unlinked while open: removed
    /// on its last release.
    pub silly_name: Option<(FileHandle, Vec<u8>)>,
    /// The server's file id, once seen: the metadata table's key. Set
    /// through [`NodeTable::set_file_id`].
    file_id: Option<u64>,
    /// The table state the kernel's cached attributes (and, for a
    /// directory, its cached names) are known to match (see `fs/watch.rs`).
    pub known: Option<Known>,
    /// The watcher's epoch when it last found this node's attributes stale
    /// (a reply built before then must be invalidated again after it).
    pub stale_at: u64,
    /// Names in this directory the kernel was told it may cache (found and
    /// not found): what to invalidate when another guest changes it.
    pub names: HashSet<Vec<u8>>,
    /// The watcher's epoch when it last invalidated [`Node::names`].
    pub names_stale_at: u64,
    /// Every name in this directory, when this driver knows them all: it
    /// made the directory, or listed it, and every change since was its own
    /// (the watcher drops the set at the first change by anybody else). A
    /// lookup is then answered without a call: "not found" for a name not
    /// in it, the file for a name whose handle it holds.
    pub children: Option<Children>,
    /// Lookups of names in this directory sent to the server since its
    /// names were last known (see [`LIST_AFTER_LOOKUPS`]).
    pub lookups_unlisted: u32,
    /// A listing of this directory did not fit one READDIRPLUS reply, or
    /// was refused (a caller may search a directory it may not read): it
    /// is not listed for lookups again while the driver keeps the node.
    pub unlistable: bool,
    /// This driver's changes of the directory recorded so far: a listing
    /// that one may have overtaken is not kept.
    pub own_changes: u64,
    /// This driver's own changes to the node the watcher has not matched
    /// yet (see `fs/watch.rs`).
    pub own: OwnChanges,
    /// Set when this driver's CREATE made the file: the export lets this
    /// mount change it. `true` when the caller was root and the file came
    /// back owned by root, so root is not squashed there. Attribute changes
    /// the server will certainly allow may then be deferred (`fs/writes.rs`).
    pub made_here: Option<bool>,
}

/// A directory that looked up this many names at the server while its
/// names were not all known is listed (one READDIRPLUS) on the next
/// lookup, and the names there are answered from the listing while nobody
/// else changes it: a program walking a directory (`stat` of every file
/// after the kernel dropped its cache, `make` checking its targets) costs
/// one call for the directory instead of one per name, and a single
/// lookup in a directory costs no listing.
pub const LIST_AFTER_LOOKUPS: u32 = 1;

/// A file a directory listing named: what a lookup needs to answer
/// without a call (its attributes come from the metadata table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// The server's handle.
    pub handle: FileHandle,
    /// The server's file id: the table key.
    pub file_id: u64,
}

/// Every name in a directory, each with its file when known (a listing
/// gives it, a rename inside the directory keeps it; the names this
/// driver's own CREATE, LINK and RENAME from elsewhere add come without
/// it, and a lookup of them asks the server).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Children {
    names: HashMap<Vec<u8>, Option<Child>>,
}

/// What a directory's known names say about one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameKnown {
    /// The names are not all known, or the name's file is not: ask.
    Unknown,
    /// Certainly not there.
    Absent,
    /// There, this file.
    Present(Child),
}

impl Children {
    /// Adds `name`, its file unknown (it replaces any file known there).
    pub fn insert(&mut self, name: Vec<u8>) {
        self.names.insert(name, None);
    }

    /// Adds `name` with its file.
    pub fn insert_child(&mut self, name: Vec<u8>, child: Child) {
        self.names.insert(name, Some(child));
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &[u8]) {
        self.names.remove(name);
    }

    /// Moves `from` to `to` (what a rename inside the directory does),
    /// keeping its file; `to`'s old file is gone.
    pub fn rename(&mut self, from: &[u8], to: Vec<u8>) {
        let child = self.names.remove(from).flatten();
        self.names.insert(to, child);
    }

    /// What these names say about `name`.
    pub fn known(&self, name: &[u8]) -> NameKnown {
        match self.names.get(name) {
            None => NameKnown::Absent,
            Some(None) => NameKnown::Unknown,
            Some(Some(child)) => NameKnown::Present(child.clone()),
        }
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// A file's UNSTABLE writes waiting for a COMMIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unstable {
    /// The verifier the latest of them got.
    pub verifier: nfs3::WriteVerifier,
    /// A write got another verifier than the ones before it: the server
    /// restarted and lost those; the next commit reports EIO, once.
    pub lost: bool,
    /// How many there were (a commit clears only the writes it saw).
    pub count: u64,
}

impl Unstable {
    /// The state after one more write answered UNSTABLE with `verifier`.
    pub fn after_write(previous: Option<Unstable>, verifier: nfs3::WriteVerifier) -> Unstable {
        match previous {
            Some(previous) => Unstable {
                verifier,
                lost: previous.lost || previous.verifier != verifier,
                count: previous.count + 1,
            },
            None => Unstable {
                verifier,
                lost: false,
                count: 1,
            },
        }
    }
}

/// What this driver itself did to a node, for the watcher to tell its own
/// changes from another guest's.
#[derive(Debug, Clone, Default)]
pub struct OwnChanges {
    /// Calls that may change the node, sent and not yet recorded.
    pub in_flight: u32,
    /// `(before, after)` of each recorded change (wcc data).
    pub transitions: Vec<(Key, Key)>,
    /// When the watcher first put off checking the node because a call was
    /// in flight.
    pub deferred_since: Option<std::time::Instant>,
    /// A change the watcher could not yet tell from this driver's own
    /// calls still in flight: the state the kernel's cached pages match,
    /// and since when the pages have been left unjudged (the attributes
    /// were invalidated meanwhile).
    pub unjudged: Option<(Key, std::time::Instant)>,
}

/// Most unmatched transitions kept per node: a file written in a stream
/// records one per WRITE until the watcher judges it (100 ms, more while
/// its calls stay in flight), so this holds 2,560 WRITEs a second.
pub const MAX_TRANSITIONS: usize = 256;

impl OwnChanges {
    /// Records this driver's change `before -> after` (the oldest is
    /// dropped when [`MAX_TRANSITIONS`] are kept).
    pub fn record(&mut self, before: Key, after: Key) {
        if self.transitions.len() >= MAX_TRANSITIONS {
            self.transitions.remove(0);
        }
        self.transitions.push((before, after));
    }

    /// Follows the recorded transitions from `from` as far as they lead,
    /// removing them, and returns the state reached: what the kernel's
    /// cache in state `from` matches after this driver's own changes.
    pub fn advance(&mut self, from: Key) -> Key {
        let mut at = from;
        while let Some(index) = self
            .transitions
            .iter()
            .position(|(before, _)| *before == at)
        {
            at = self.transitions.remove(index).1;
        }
        at
    }

    /// How many changes at least are missing between `from` and `to` for
    /// the recorded transitions to lead from one to the other: one before
    /// each recorded change the chain from `from` does not reach, and one
    /// at the end unless a recorded change ends at `to` (or the chain is
    /// there). Each call in flight makes one change; more missing changes
    /// than calls in flight means another guest's change.
    pub fn missing_changes(&self, from: Key, to: Key) -> usize {
        let mut at = from;
        let mut reached = vec![false; self.transitions.len()];
        while let Some(index) = self
            .transitions
            .iter()
            .enumerate()
            .position(|(index, (start, _))| *start == at && !reached[index])
        {
            reached[index] = true;
            at = self.transitions[index].1;
        }
        let unreached = reached.iter().filter(|reached| !**reached).count();
        let ends_at_to = at == to || self.transitions.iter().any(|(_, end)| *end == to);
        unreached + usize::from(!ends_at_to)
    }

    /// Whether the recorded transitions lead from `from` to `to`; the ones
    /// used are removed.
    pub fn explain(&mut self, from: Key, to: Key) -> bool {
        let mut at = from;
        let mut used = Vec::new();
        while at != to {
            let next = self
                .transitions
                .iter()
                .enumerate()
                .find(|(index, (before, _))| *before == at && !used.contains(index));
            match next {
                Some((index, (_, after))) => {
                    at = *after;
                    used.push(index);
                }
                None => return false,
            }
        }
        used.sort_unstable();
        for index in used.into_iter().rev() {
            self.transitions.remove(index);
        }
        true
    }
}

/// The part of a file's state that wcc data shows: what own changes are
/// matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// `mtime`.
    pub modify_time: Time,
    /// `ctime`.
    pub change_time: Time,
    /// `size`.
    pub size: u64,
}

impl Key {
    /// Whether cached data pages of a file in state `self` still hold in
    /// state `other`.
    pub fn same_data(&self, other: &Key) -> bool {
        self.modify_time == other.modify_time && self.size == other.size
    }

    /// The key of wcc attributes.
    pub fn of_wcc(wcc: &WccAttributes) -> Key {
        Key {
            modify_time: wcc.modify_time,
            change_time: wcc.change_time,
            size: wcc.size,
        }
    }

    /// The key of full attributes.
    pub fn of(attributes: &FileAttributes) -> Key {
        Key {
            modify_time: attributes.modify_time,
            change_time: attributes.change_time,
            size: attributes.size,
        }
    }
}

impl Node {
    /// The table key, once known.
    pub fn file_id(&self) -> Option<u64> {
        self.file_id
    }

    /// Moves [`Node::known`] to `entry` unless it already knows a later
    /// change (change counters only grow): a reply built from an older
    /// copy must not hide a change the watcher already saw.
    /// A directory with cached names, or whose names this driver knows, is
    /// left to the watcher: its state also vouches for those names, which
    /// this reply did not refresh (moving it past another guest's change
    /// would hide that change from the watcher for good).
    pub fn learn(&mut self, entry: &TableEntry) {
        if !self.names.is_empty() || self.children.is_some() {
            return;
        }
        let newer = self
            .known
            .as_ref()
            .is_none_or(|known| known.change <= entry.change);
        if newer {
            self.known = Some(Known::of(entry));
        }
    }
}

/// What the watcher compares: one slot's state for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// The change counter.
    pub change: u64,
    /// `mtime`: with the size, what cached pages depend on.
    pub modify_time: Time,
    /// `ctime`.
    pub change_time: Time,
    /// `size`.
    pub size: u64,
}

impl Known {
    /// The state of a table entry.
    pub fn of(entry: &TableEntry) -> Known {
        Known {
            change: entry.change,
            modify_time: entry.attributes.modify_time,
            change_time: entry.attributes.change_time,
            size: entry.attributes.size,
        }
    }

    /// The wcc part.
    pub fn key(&self) -> Key {
        Key {
            modify_time: self.modify_time,
            change_time: self.change_time,
            size: self.size,
        }
    }
}

/// Whether `attributes` are the ones of `entry` (what a reply from the
/// server and the table agree on).
pub fn same_attributes(entry: &TableEntry, attributes: &FileAttributes) -> bool {
    entry.attributes == *attributes
}

/// Most names tracked in one directory: past it, names there get the short
/// fallback timeout instead (bounded memory for huge directories).
pub const MAX_TRACKED_NAMES: usize = 65_536;

/// Node ids and handles, both ways, and which nodes each table slot
/// concerns.
#[derive(Debug)]
pub struct NodeTable {
    nodes: HashMap<u64, Node>,
    by_handle: HashMap<FileHandle, u64>,
    next_id: u64,
    /// Slots in the table the index below is computed for.
    slot_count: Option<u32>,
    /// Table set (its first slot) to the nodes whose file id maps there.
    by_slot: HashMap<u32, Vec<u64>>,
    /// UNSTABLE writes not yet covered by a COMMIT, per file handle: kept
    /// past the kernel's FORGET of the node and whatever descriptor wrote
    /// them, so that an `fsync` through any later descriptor commits them
    /// and reports their loss (see [`Unstable`]).
    unstable: HashMap<FileHandle, Unstable>,
}

/// Files whose UNSTABLE writes are remembered at most; beyond, one whose
/// loss was not seen yet is forgotten (a restart's loss of its writes would
/// then go unreported). Programs that never fsync keep it full; 64 Ki
/// entries of about 100 bytes.
pub const UNSTABLE_FILES: usize = 65_536;

impl NodeTable {
    /// A table holding only the root.
    pub fn new(root: FileHandle) -> NodeTable {
        let mut table = NodeTable {
            nodes: HashMap::new(),
            by_handle: HashMap::new(),
            next_id: ROOT + 1,
            slot_count: None,
            by_slot: HashMap::new(),
            unstable: HashMap::new(),
        };
        table.by_handle.insert(root.clone(), ROOT);
        table.nodes.insert(
            ROOT,
            Node {
                handle: root,
                lookups: 1,
                open_count: 0,
                data_version: None,
                silly_name: None,
                file_id: None,
                known: None,
                stale_at: 0,
                names: HashSet::new(),
                names_stale_at: 0,
                children: None,
                lookups_unlisted: 0,
                unlistable: false,
                own_changes: 0,
                own: OwnChanges::default(),
                made_here: None,
            },
        );
        table
    }

    /// A WRITE to `handle` was answered UNSTABLE with `verifier`.
    pub fn note_unstable(&mut self, handle: &FileHandle, verifier: nfs3::WriteVerifier) {
        if self.unstable.len() >= UNSTABLE_FILES && !self.unstable.contains_key(handle) {
            if let Some(victim) = self
                .unstable
                .iter()
                .find(|(_, unstable)| !unstable.lost)
                .map(|(handle, _)| handle.clone())
            {
                self.unstable.remove(&victim);
            }
        }
        let previous = self.unstable.get(handle).copied();
        self.unstable
            .insert(handle.clone(), Unstable::after_write(previous, verifier));
    }

    /// The UNSTABLE writes of `handle` waiting for a COMMIT, if any.
    pub fn unstable(&mut self, handle: &FileHandle) -> Option<&mut Unstable> {
        self.unstable.get_mut(handle)
    }

    /// A COMMIT of `handle` answered: forgets the writes `covered` named
    /// (unless more came since).
    pub fn committed(&mut self, handle: &FileHandle, covered: Unstable) {
        if self.unstable.get(handle) == Some(&covered) {
            self.unstable.remove(handle);
        }
    }

    /// The node `id`, if the kernel may still use it.
    pub fn get(&self, id: u64) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// The node `id`, mutable.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&id)
    }

    /// The node id of `handle`, if known.
    pub fn find(&self, handle: &FileHandle) -> Option<u64> {
        self.by_handle.get(handle).copied()
    }

    /// The node for `handle`, created with no references if new. Returns
    /// the id and whether it was created.
    pub fn remember(&mut self, handle: &FileHandle) -> (u64, bool) {
        if let Some(id) = self.by_handle.get(handle) {
            return (*id, false);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.by_handle.insert(handle.clone(), id);
        self.nodes.insert(
            id,
            Node {
                handle: handle.clone(),
                lookups: 0,
                open_count: 0,
                data_version: None,
                silly_name: None,
                file_id: None,
                known: None,
                stale_at: 0,
                names: HashSet::new(),
                names_stale_at: 0,
                children: None,
                lookups_unlisted: 0,
                unlistable: false,
                own_changes: 0,
                own: OwnChanges::default(),
                made_here: None,
            },
        );
        (id, true)
    }

    /// The node for `handle` with one more kernel reference: what an entry
    /// reply needs; `true` when the node is new.
    pub fn reference(&mut self, handle: &FileHandle) -> (u64, bool) {
        let (id, created) = self.remember(handle);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.lookups += 1;
        }
        (id, created)
    }

    /// Adds one kernel reference to an existing node.
    pub fn add_reference(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.lookups += 1;
        }
    }

    /// Drops `count` kernel references; the node goes when none remain and
    /// no file is open on it.
    pub fn forget(&mut self, id: u64, count: u64) {
        if id == ROOT {
            return;
        }
        if let Some(node) = self.nodes.get_mut(&id) {
            node.lookups = node.lookups.saturating_sub(count);
        }
        self.collect(id);
    }

    /// Removes node `id` if nothing refers to it any more.
    pub fn collect(&mut self, id: u64) {
        let unused = self
            .nodes
            .get(&id)
            .is_some_and(|node| id != ROOT && node.lookups == 0 && node.open_count == 0);
        if unused {
            if let Some(node) = self.nodes.remove(&id) {
                self.by_handle.remove(&node.handle);
                if let Some(file_id) = node.file_id {
                    self.unindex(id, file_id);
                }
            }
        }
    }

    /// Records node `id`'s file id (the table key) and indexes it by slot.
    pub fn set_file_id(&mut self, id: u64, file_id: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        match node.file_id.replace(file_id) {
            Some(old) if old == file_id => return,
            Some(old) => self.unindex(id, old),
            None => {}
        }
        self.index(id, file_id);
    }

    fn index(&mut self, id: u64, file_id: u64) {
        if let Some(slot_count) = self.slot_count {
            self.by_slot
                .entry(metatab::layout::set_index(file_id, slot_count))
                .or_default()
                .push(id);
        }
    }

    fn unindex(&mut self, id: u64, file_id: u64) {
        let Some(slot_count) = self.slot_count else {
            return;
        };
        let slot = metatab::layout::set_index(file_id, slot_count);
        if let Some(ids) = self.by_slot.get_mut(&slot) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.by_slot.remove(&slot);
            }
        }
    }

    /// Indexes every node for a table of `slot_count` slots (at the first
    /// table, and when the storage domain's table changed size).
    pub fn set_slot_count(&mut self, slot_count: u32) {
        if self.slot_count == Some(slot_count) || !slot_count.is_power_of_two() {
            return;
        }
        self.slot_count = Some(slot_count);
        self.by_slot.clear();
        let known: Vec<(u64, u64)> = self
            .nodes
            .iter()
            .filter_map(|(id, node)| Some((*id, node.file_id?)))
            .collect();
        for (id, file_id) in known {
            self.index(id, file_id);
        }
    }

    /// Records that the kernel may cache `name` in directory `directory`
    /// (found or not) for long. False when that cannot be kept coherent:
    /// the directory's table key is unknown, or it tracks too many names.
    pub fn track(&mut self, directory: u64, name: &[u8]) -> bool {
        let Some(node) = self.nodes.get_mut(&directory) else {
            return false;
        };
        if node.file_id.is_none() {
            return false;
        }
        if node.names.contains(name) {
            return true;
        }
        if node.names.len() >= MAX_TRACKED_NAMES {
            return false;
        }
        node.names.insert(name.to_vec());
        true
    }

    /// The nodes whose file id maps to the set starting at slot `slot`.
    pub fn in_slot(&self, slot: u32) -> &[u64] {
        self.by_slot.get(&slot).map_or(&[], Vec::as_slice)
    }

    /// Every node with a file id.
    pub fn all_with_file_id(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.file_id.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// How many nodes are held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state after `n` changes (size and times grow with each).
    fn state(n: u32) -> Key {
        let time = Time {
            seconds: 1_000 + n,
            nanoseconds: 0,
        };
        Key {
            modify_time: time,
            change_time: time,
            size: u64::from(n) * 10,
        }
    }

    #[test]
    fn own_changes_recorded_in_any_order_explain_the_state_they_lead_to() {
        let mut own = OwnChanges::default();
        for n in [0, 1, 2, 4, 3, 6, 5] {
            own.record(state(n), state(n + 1));
        }
        assert!(!own.explain(state(0), state(8)));
        assert!(own.explain(state(0), state(7)));
        assert!(own.transitions.is_empty());
        // Past the room, the oldest go: the chain from the start breaks.
        for n in 0..(MAX_TRANSITIONS as u32 + 1) {
            own.record(state(n), state(n + 1));
        }
        assert_eq!(own.transitions.len(), MAX_TRANSITIONS);
        assert!(!own.explain(state(0), state(MAX_TRANSITIONS as u32 + 1)));
        assert!(own.explain(state(1), state(MAX_TRANSITIONS as u32 + 1)));
    }

    #[test]
    fn advancing_follows_and_removes_the_chain_from_a_state() {
        let mut own = OwnChanges::default();
        for n in [0, 1, 3, 4] {
            own.record(state(n), state(n + 1));
        }
        // 2 -> 3 is still to come: the chain from 0 ends at 2.
        assert_eq!(own.advance(state(0)), state(2));
        assert_eq!(
            own.transitions,
            vec![(state(3), state(4)), (state(4), state(5))]
        );
        assert_eq!(own.advance(state(7)), state(7));
        own.record(state(2), state(3));
        assert_eq!(own.advance(state(2)), state(5));
        assert!(own.transitions.is_empty());
    }

    #[test]
    fn missing_changes_count_what_calls_in_flight_must_make() {
        let mut own = OwnChanges::default();
        // Nothing recorded yet: one change missing (the call in flight).
        assert_eq!(own.missing_changes(state(0), state(1)), 1);
        assert_eq!(own.missing_changes(state(0), state(0)), 0);
        own.record(state(0), state(1));
        // The reply of 1 -> 2 is still to come.
        assert_eq!(own.missing_changes(state(0), state(2)), 1);
        own.record(state(2), state(3));
        // 1 -> 2 missing between the two pieces; none at the end.
        assert_eq!(own.missing_changes(state(0), state(3)), 1);
        // Another guest's change 3 -> 4, then ours from 4: two missing
        // changes for the one call that could be in flight.
        own.record(state(4), state(5));
        assert_eq!(own.missing_changes(state(0), state(5)), 2);
        // Everything recorded but another guest's change 5 -> 6 at the
        // end.
        let mut own = OwnChanges::default();
        own.record(state(0), state(5));
        assert_eq!(own.missing_changes(state(0), state(6)), 1);
        assert_eq!(own.missing_changes(state(0), state(5)), 0);
    }

    fn handle(byte: u8) -> FileHandle {
        FileHandle(vec![byte; 8])
    }

    #[test]
    fn references_and_forgets_balance() {
        let mut table = NodeTable::new(handle(0));
        let first = table.reference(&handle(1)).0;
        assert_eq!(
            table.reference(&handle(1)),
            (first, false),
            "one node per handle"
        );
        let second = table.reference(&handle(2)).0;
        assert_ne!(first, second);
        assert_eq!(table.len(), 3);
        table.forget(first, 1);
        assert!(table.get(first).is_some(), "one reference left");
        table.forget(first, 1);
        assert!(table.get(first).is_none());
        assert_eq!(table.find(&handle(1)), None);
        // A handle seen again gets a fresh id, never a reused one.
        let again = table.reference(&handle(1)).0;
        assert!(again > second);
        table.forget(ROOT, 100);
        assert!(table.get(ROOT).is_some(), "the root is never forgotten");
    }

    #[test]
    fn an_open_node_outlives_its_references() {
        let mut table = NodeTable::new(handle(0));
        let id = table.reference(&handle(1)).0;
        table.get_mut(id).unwrap().open_count = 1;
        table.forget(id, 1);
        assert!(table.get(id).is_some());
        table.get_mut(id).unwrap().open_count = 0;
        table.collect(id);
        assert!(table.get(id).is_none());
    }

    #[test]
    fn a_node_remembered_without_a_reference_can_be_collected() {
        let mut table = NodeTable::new(handle(0));
        let (id, created) = table.remember(&handle(3));
        assert!(created);
        assert_eq!(table.remember(&handle(3)), (id, false));
        table.collect(id);
        assert!(table.get(id).is_none());
    }

    #[test]
    fn known_names_answer_absent_present_or_ask() {
        let child = |n: u8| Child {
            handle: FileHandle(vec![n; 8]),
            file_id: u64::from(n),
        };
        let mut children = Children::default();
        assert_eq!(children.len(), 0);
        children.insert_child(b"listed".to_vec(), child(1));
        children.insert(b"made-here".to_vec());
        assert_eq!(children.known(b"listed"), NameKnown::Present(child(1)));
        // A name recorded without its file is asked for, never "absent".
        assert_eq!(children.known(b"made-here"), NameKnown::Unknown);
        assert_eq!(children.known(b"other"), NameKnown::Absent);
        // A rename keeps the file under the new name and replaces what
        // was there; the old name is gone.
        children.insert_child(b"target".to_vec(), child(2));
        children.rename(b"listed", b"target".to_vec());
        assert_eq!(children.known(b"target"), NameKnown::Present(child(1)));
        assert_eq!(children.known(b"listed"), NameKnown::Absent);
        // An insert forgets the file a name had (another file took it).
        children.insert(b"target".to_vec());
        assert_eq!(children.known(b"target"), NameKnown::Unknown);
        children.remove(b"target");
        assert_eq!(children.known(b"target"), NameKnown::Absent);
        assert_eq!(children.len(), 1);
    }

    #[test]
    fn a_directory_whose_names_are_known_keeps_its_state_for_the_watcher() {
        let mut table = NodeTable::new(handle(1));
        let (id, _) = table.reference(&handle(2));
        let entry = |change: u64| TableEntry {
            change,
            attributes: FileAttributes {
                file_type: nfs3::FileType::Directory,
                mode: 0o755,
                link_count: 2,
                uid: 0,
                gid: 0,
                size: 4096,
                used: 4096,
                device: nfs3::DeviceNumbers::default(),
                file_system_id: 1,
                file_id: 2,
                access_time: Time::default(),
                modify_time: Time::default(),
                change_time: Time::default(),
            },
        };
        let node = table.get_mut(id).unwrap();
        node.learn(&entry(1));
        assert_eq!(node.known.map(|known| known.change), Some(1));
        node.children = Some(Children::default());
        // A later state a reply saw must not move past a change the
        // watcher has not judged: the names would stay stale.
        node.learn(&entry(2));
        assert_eq!(node.known.map(|known| known.change), Some(1));
        node.children = None;
        node.learn(&entry(2));
        assert_eq!(node.known.map(|known| known.change), Some(2));
    }
}
