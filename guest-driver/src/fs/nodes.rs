//! The table between FUSE node ids and NFS file handles.
//!
//! Design: the kernel names files by node id and counts its references
//! (one per successful entry reply: lookup, create, mkdir, mknod, symlink,
//! link and each READDIRPLUS entry); `forget` drops them. A node lives while
//! the kernel holds a reference, or while a file on it is open (for the
//! silly rename below). Node ids are allocated here, one per distinct file
//! handle; the root is node 1 and is never forgotten. Two entries with the
//! same handle (hard links) share a node, so `stat` shows one inode number.

use std::collections::HashMap;

use nfs3::{FileHandle, Time};

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
    /// if known: set at open and by this driver's own writes. An open that
    /// finds other values drops the page cache (close-to-open).
    pub data_version: Option<(Time, u64)>,
    /// Where the file was hidden when it was unlinked while open: removed
    /// on its last release.
    pub silly_name: Option<(FileHandle, Vec<u8>)>,
    /// The server's file id, once seen: the metadata table's key.
    pub file_id: Option<u64>,
    /// The metadata table's change counter that the kernel's cached
    /// attributes of this node match, when known (see `fs/watch.rs`).
    pub table_change: Option<u64>,
}

/// A node the kernel caches, as the table watcher checks it.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The node id.
    pub id: u64,
    /// The table key.
    pub file_id: u64,
    /// The handle the slot must match.
    pub handle: FileHandle,
    /// [`Node::table_change`].
    pub table_change: Option<u64>,
}

/// Node ids and handles, both ways.
#[derive(Debug)]
pub struct NodeTable {
    nodes: HashMap<u64, Node>,
    by_handle: HashMap<FileHandle, u64>,
    next_id: u64,
}

impl NodeTable {
    /// A table holding only the root.
    pub fn new(root: FileHandle) -> NodeTable {
        let mut table = NodeTable {
            nodes: HashMap::new(),
            by_handle: HashMap::new(),
            next_id: ROOT + 1,
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
                table_change: None,
            },
        );
        table
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
                table_change: None,
            },
        );
        (id, true)
    }

    /// The node for `handle` with one more kernel reference: what an entry
    /// reply needs.
    pub fn reference(&mut self, handle: &FileHandle) -> u64 {
        let (id, _) = self.remember(handle);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.lookups += 1;
        }
        id
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
            }
        }
    }

    /// Every node the kernel holds whose file id is known.
    pub fn watched(&self) -> Vec<Watched> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.lookups > 0)
            .filter_map(|(id, node)| {
                Some(Watched {
                    id: *id,
                    file_id: node.file_id?,
                    handle: node.handle.clone(),
                    table_change: node.table_change,
                })
            })
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

    fn handle(byte: u8) -> FileHandle {
        FileHandle(vec![byte; 8])
    }

    #[test]
    fn references_and_forgets_balance() {
        let mut table = NodeTable::new(handle(0));
        let first = table.reference(&handle(1));
        assert_eq!(table.reference(&handle(1)), first, "one node per handle");
        let second = table.reference(&handle(2));
        assert_ne!(first, second);
        assert_eq!(table.len(), 3);
        table.forget(first, 1);
        assert!(table.get(first).is_some(), "one reference left");
        table.forget(first, 1);
        assert!(table.get(first).is_none());
        assert_eq!(table.find(&handle(1)), None);
        // A handle seen again gets a fresh id, never a reused one.
        let again = table.reference(&handle(1));
        assert!(again > second);
        table.forget(ROOT, 100);
        assert!(table.get(ROOT).is_some(), "the root is never forgotten");
    }

    #[test]
    fn an_open_node_outlives_its_references() {
        let mut table = NodeTable::new(handle(0));
        let id = table.reference(&handle(1));
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
}
