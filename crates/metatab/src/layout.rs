//! Byte layout of the metadata table (`docs/metatab.md`).
//!
//! All integers little-endian; 64-bit fields are two 32-bit words, low word
//! first, each accessed atomically (a 64-bit value is only consistent under
//! the slot's sequence counter).

/// `"MTAB"` read as a little-endian word.
pub const MAGIC: u32 = u32::from_le_bytes(*b"MTAB");
/// Version of this layout (2: the change journal).
pub const VERSION: u32 = 2;

/// Size of the header; slots start here.
pub const HEADER_SIZE: usize = 64;
/// Header: magic.
pub const HEADER_MAGIC: usize = 0;
/// Header: version.
pub const HEADER_VERSION: usize = 4;
/// Header: slot count (a power of two).
pub const HEADER_SLOT_COUNT: usize = 8;
/// Header: slot size ([`SLOT_SIZE`]).
pub const HEADER_SLOT_SIZE: usize = 12;
/// Header: server boot id, 64 bits.
pub const HEADER_BOOT_ID: usize = 16;
/// Header: entries in the change journal ([`JOURNAL_LENGTH`]).
pub const HEADER_JOURNAL_LENGTH: usize = 24;
/// Header: the journal's head, the number of entries ever written
/// (wrapping); stored with release after the entry it counts.
pub const HEADER_JOURNAL_HEAD: usize = 28;

/// Entries in the change journal: a ring of the slots written last, after
/// the slots. One page.
pub const JOURNAL_LENGTH: u32 = 1024;
/// A journal entry is `lap << JOURNAL_LAP_SHIFT | slot index`, where `lap`
/// is `(position / JOURNAL_LENGTH) mod 2^15`: a reader that finds another
/// lap at a position knows the writer overwrote it.
pub const JOURNAL_LAP_SHIFT: u32 = 17;
/// Mask of the slot index in a journal entry.
pub const JOURNAL_SLOT_MASK: u32 = (1 << JOURNAL_LAP_SHIFT) - 1;

/// Size of one slot.
pub const SLOT_SIZE: usize = 128;
/// Most slots in a table (16 MiB of slots).
pub const MAX_SLOT_COUNT: u32 = 1 << 17;

/// Slot: sequence counter; odd while the server writes the slot.
pub const SLOT_SEQUENCE: usize = 0;
/// Slot: `ftype3`, or 0 for an empty slot.
pub const SLOT_TYPE: usize = 4;
/// Slot: the key, the file id (64 bits).
pub const SLOT_KEY: usize = 8;
/// Slot: digest of the file handle (64 bits, [`crate::handle_digest`]).
pub const SLOT_HANDLE_DIGEST: usize = 16;
/// Slot: `mode`.
pub const SLOT_MODE: usize = 24;
/// Slot: `nlink`.
pub const SLOT_LINK_COUNT: usize = 28;
/// Slot: `uid`.
pub const SLOT_UID: usize = 32;
/// Slot: `gid`.
pub const SLOT_GID: usize = 36;
/// Slot: `size` (64 bits).
pub const SLOT_SIZE_BYTES: usize = 40;
/// Slot: `used` (64 bits).
pub const SLOT_USED: usize = 48;
/// Slot: `rdev.specdata1`.
pub const SLOT_DEVICE_MAJOR: usize = 56;
/// Slot: `rdev.specdata2`.
pub const SLOT_DEVICE_MINOR: usize = 60;
/// Slot: `fsid` (64 bits).
pub const SLOT_FILE_SYSTEM_ID: usize = 64;
/// Slot: `fileid` (64 bits).
pub const SLOT_FILE_ID: usize = 72;
/// Slot: `atime` seconds, then nanoseconds.
pub const SLOT_ACCESS_TIME: usize = 80;
/// Slot: `mtime` seconds, then nanoseconds.
pub const SLOT_MODIFY_TIME: usize = 88;
/// Slot: `ctime` seconds, then nanoseconds.
pub const SLOT_CHANGE_TIME: usize = 96;
/// Slot: change counter (64 bits).
pub const SLOT_CHANGE: usize = 104;
/// Words of a slot after the sequence counter that carry data (offsets 4 to
/// 112); 112..128 is the writer's own.
pub const SLOT_DATA_END: usize = 112;
/// Slot: when the writer last published this slot (its own wrapping tick;
/// readers ignore it), to evict the least recently used of a set.
pub const SLOT_LAST_USED: usize = 112;

/// Slots a file may occupy: the table is 2-way set associative (a file in
/// one of the two slots of its set), so two files that collide do not
/// evict each other.
pub const WAYS: u32 = 2;

/// Offset of the change journal in a table of `slot_count` slots: right
/// after the last slot.
pub const fn journal_offset(slot_count: u32) -> usize {
    HEADER_SIZE + slot_count as usize * SLOT_SIZE
}

/// The journal entry for `position` recording `slot`.
pub const fn journal_entry(position: u32, slot: u32) -> u32 {
    journal_lap(position) << JOURNAL_LAP_SHIFT | (slot & JOURNAL_SLOT_MASK)
}

/// The lap tag an entry written at `position` carries.
pub const fn journal_lap(position: u32) -> u32 {
    (position / JOURNAL_LENGTH) & ((1 << (32 - JOURNAL_LAP_SHIFT)) - 1)
}

/// Bytes of a table of `slot_count` slots and its journal, rounded up to
/// 4 KiB pages.
pub const fn table_bytes(slot_count: u32) -> usize {
    (journal_offset(slot_count) + JOURNAL_LENGTH as usize * 4).div_ceil(4096) * 4096
}

/// The slot a file id maps to: Fibonacci hashing of the id, top bits.
pub const fn slot_index(file_id: u64, slot_count: u32) -> u32 {
    let hash = file_id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (hash >> 32) as u32 & (slot_count - 1)
}

/// The first slot of the set `file_id` maps to (the set is that slot and
/// the next).
pub const fn set_index(file_id: u64, slot_count: u32) -> u32 {
    slot_index(file_id, slot_count) & !(WAYS - 1)
}

/// The first slot of the set slot `index` belongs to.
pub const fn set_of_slot(index: u32) -> u32 {
    index & !(WAYS - 1)
}

/// Offset of slot `index`.
pub const fn slot_offset(index: u32) -> usize {
    HEADER_SIZE + index as usize * SLOT_SIZE
}
