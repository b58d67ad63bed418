//! The shared metadata table: seqlocked `fattr3` slots guests map read-only.
//!
//! Design: the storage domain publishes the attributes of files it serves
//! into a table of pages per export; each guest of that export maps it
//! read-only and answers GETATTR (and the attribute half of LOOKUP) from it
//! without an RPC. Slots are direct-mapped by file id (a collision
//! overwrites: the table is a cache, a miss falls back to the RPC). Each
//! slot is a seqlock: the single writer makes the sequence odd, writes the
//! fields, makes it even again; a reader copies the fields between two reads
//! of the sequence and accepts the copy only when both reads agree, are even,
//! and the key matches. The change counter lets a guest cache attributes for
//! long and invalidate exactly when the file changed, and a change journal
//! (a ring of the slots written last) lets a guest find what changed without
//! scanning. Layout: `docs/metatab.md`.
//!
//! Every access goes through [`vrpc::SharedMemory`] (32-bit atomic words), so
//! this crate has no `unsafe` and never forms a reference into the table.
#![no_std]
#![forbid(unsafe_code)]

pub mod layout;
mod reader;
mod writer;

use core::fmt;

use nfs3::FileAttributes;
pub use reader::{Changes, Lookup, Reader};
pub use vrpc::SharedMemory;
pub use writer::Writer;

/// One file's published attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key: the file id the slot is indexed by.
    pub file_id: u64,
    /// [`handle_digest`] of the file's current handle: a guest holding a
    /// handle of a removed and reused inode does not match.
    pub handle_digest: u64,
    /// The attributes.
    pub attributes: FileAttributes,
    /// Changes whenever the attributes change (the server's per-file change
    /// counter); equal counters mean unchanged attributes.
    pub change: u64,
}

/// FNV-1a (64-bit) of a file handle's bytes: the digest stored in slots.
pub fn handle_digest(handle: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in handle {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A table that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    /// The region is smaller than the table it should hold.
    RegionTooSmall,
    /// Slot count not a power of two in 2..=[`layout::MAX_SLOT_COUNT`].
    BadSlotCount,
    /// The header's magic, version or slot size is wrong.
    BadHeader,
    /// A shared region refused an access.
    Memory(vrpc::OutOfBounds),
}

impl From<vrpc::OutOfBounds> for TableError {
    fn from(error: vrpc::OutOfBounds) -> Self {
        Self::Memory(error)
    }
}

impl fmt::Display for TableError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RegionTooSmall => formatter.write_str("region smaller than the metadata table"),
            Self::BadSlotCount => formatter.write_str("metadata table slot count invalid"),
            Self::BadHeader => formatter.write_str("metadata table header invalid"),
            Self::Memory(error) => write!(formatter, "{error}"),
        }
    }
}

impl core::error::Error for TableError {}

fn valid_slot_count(slot_count: u32) -> bool {
    slot_count.is_power_of_two() && (layout::WAYS..=layout::MAX_SLOT_COUNT).contains(&slot_count)
}
