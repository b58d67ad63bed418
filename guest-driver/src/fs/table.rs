//! GETATTR from the storage domain's shared metadata table (crate
//! `metatab`, layout in `docs/metatab.md`), before any RPC.
//!
//! Design: the table is keyed by file id and checked against a digest of
//! the file handle; a hit is a consistent copy of the server's current
//! attributes (seqlocked slot), so it answers like a GETATTR reply. A miss
//! (slot empty or holding another file) or a slot being written twice in a
//! row falls back to the RPC. Counted in [`crate::stats::Stats`].

use nfs3::{FileAttributes, FileHandle};

/// A consistent copy of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// The file's current attributes.
    pub attributes: FileAttributes,
    /// The slot's change counter: it moves whenever the attributes do.
    pub change: u64,
}

/// Where the watcher is in a table's change journal. A cursor of another
/// table (the storage domain restarted, or the guest re-attached to a new
/// one) is worth nothing: every slot counts as changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The table's boot id.
    pub boot_id: u64,
    /// Its slot count (the slot of a file depends on it).
    pub slot_count: u32,
    /// The journal position read up to.
    pub head: u32,
}

/// What changed since a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// Only the slots passed to the callback; go on from the cursor.
    Slots(Cursor),
    /// Possibly every slot (journal overrun, or another table); go on
    /// from the cursor.
    Everything(Cursor),
}

/// Where table lookups come from: the hosted connection's memfd, or
/// grant pages mapped from the storage domain on Xen.
pub trait AttributeTable: Send + Sync + std::fmt::Debug {
    /// The current attributes of the file `file_id` with `handle`, if the
    /// table holds them.
    fn lookup(&self, file_id: u64, handle: &FileHandle) -> Option<TableEntry>;

    /// The slots written since `since` (each passed to `changed`), or
    /// `None` when no table is usable now (the connection is down).
    fn changes(&self, since: Option<Cursor>, changed: &mut dyn FnMut(u32)) -> Option<Changed>;
}

/// [`AttributeTable::changes`] over a mapped table (any platform's).
pub fn changes_in<M: vrpc::SharedMemory>(
    table: &metatab::Reader<M>,
    since: Option<Cursor>,
    changed: &mut dyn FnMut(u32),
) -> Option<Changed> {
    let same_table = since.filter(|cursor| {
        cursor.boot_id == table.boot_id() && cursor.slot_count == table.slot_count()
    });
    let cursor = |head| Cursor {
        boot_id: table.boot_id(),
        slot_count: table.slot_count(),
        head,
    };
    let Some(since) = same_table else {
        return Some(Changed::Everything(cursor(table.journal_head().ok()?)));
    };
    match table.changes_since(since.head, changed).ok()? {
        metatab::Changes::Slots { head } => Some(Changed::Slots(cursor(head))),
        metatab::Changes::Overrun { head } => Some(Changed::Everything(cursor(head))),
    }
}

/// Looks `file_id` with `handle` up in a mapped table (any platform's).
pub fn lookup_in<M: vrpc::SharedMemory>(
    table: &metatab::Reader<M>,
    file_id: u64,
    handle: &FileHandle,
) -> Option<TableEntry> {
    let digest = metatab::handle_digest(&handle.0);
    // A slot being rewritten is retried once: the writer holds it for a
    // few stores only.
    for _ in 0..2 {
        match table.lookup(file_id, digest) {
            Ok(metatab::Lookup::Hit(entry)) => {
                return Some(TableEntry {
                    attributes: entry.attributes,
                    change: entry.change,
                })
            }
            Ok(metatab::Lookup::Busy) => continue,
            Ok(metatab::Lookup::Miss) | Err(_) => return None,
        }
    }
    None
}
