//! The on-disk byte layout: superblocks, index nodes, record blocks.
//!
//! All integers are little-endian. Every block carries a CRC-32C of its
//! whole contents computed with the checksum field zeroed; a block whose
//! checksum, magic or level does not match is reported as corrupt.
//! `docs/disk-format.md` is the specification of these bytes.

use crate::checksum::crc32c;
use crate::codec::{Reader, Writer};
use alloc::boxed::Box;
use alloc::format;
use vfs::FsError;

/// Bytes per block.
pub const BLOCK_SIZE: usize = 4096;

/// Superblock magic: "SDFSv001".
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"SDFSv001";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Interior index node magic ("SDIX").
pub const INTERIOR_MAGIC: u32 = u32::from_le_bytes(*b"SDIX");
/// Index leaf magic ("SDLF").
pub const LEAF_MAGIC: u32 = u32::from_le_bytes(*b"SDLF");
/// Inode record block magic ("SDRC").
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"SDRC");
/// Snapshot table block magic ("SDST"); same layout as record blocks.
pub const SNAPSHOT_MAGIC: u32 = u32::from_le_bytes(*b"SDST");

/// Children per interior index node.
pub const INTERIOR_FANOUT: u64 = 500;
/// Inode slots per index leaf.
pub const LEAF_SLOTS: u64 = 250;
/// Index levels above the leaves (the root is at this level).
pub const INDEX_LEVELS: u32 = 2;
/// Inode numbers the index can address (0 is never used).
pub const MAX_INODES: u64 = LEAF_SLOTS * INTERIOR_FANOUT * INTERIOR_FANOUT;

/// Bytes of a record block's header.
pub const RECORD_HEADER: usize = 24;
/// Payload bytes per record block.
pub const RECORD_PAYLOAD: usize = BLOCK_SIZE - RECORD_HEADER;

/// A block's worth of bytes, boxed so stacks stay small in the unikernel.
pub type Block = Box<[u8; BLOCK_SIZE]>;

/// A zeroed block.
pub fn zeroed() -> Block {
    Box::new([0u8; BLOCK_SIZE])
}

/// The committed root of the file system; two copies at blocks 0 and 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Blocks in the file system.
    pub block_count: u64,
    /// Commit number; the valid copy with the larger one is current.
    pub sequence: u64,
    /// Block of the index root.
    pub index_root: u64,
    /// Live inodes.
    pub inode_count: u64,
    /// Blocks in use (superblocks included).
    pub used_blocks: u64,
    /// Volume identity, chosen at mkfs.
    pub uuid: [u8; 16],
    /// Secret for file-handle MACs, chosen at mkfs.
    pub handle_secret: [u8; 32],
    /// First block of the snapshot table chain; 0 = no snapshots.
    pub snapshot_table: u64,
}

impl Superblock {
    /// Encode into a block.
    pub fn encode(&self) -> Block {
        let mut writer = Writer::default();
        writer.bytes(&SUPERBLOCK_MAGIC);
        writer.u32(FORMAT_VERSION);
        writer.u32(BLOCK_SIZE as u32);
        writer.u64(self.block_count);
        writer.u64(self.sequence);
        writer.u64(self.index_root);
        writer.u32(INDEX_LEVELS);
        writer.u32(0);
        writer.u64(self.inode_count);
        writer.u64(self.used_blocks);
        writer.bytes(&self.uuid);
        writer.bytes(&self.handle_secret);
        writer.u64(self.snapshot_table);
        let crc = crc32c(&writer.bytes);
        writer.u32(crc);
        let mut block = zeroed();
        block[..writer.bytes.len()].copy_from_slice(&writer.bytes);
        block
    }

    /// Decode and validate one superblock copy.
    ///
    /// # Errors
    /// [`FsError::Corrupt`] naming the first thing wrong.
    pub fn decode(block: &[u8; BLOCK_SIZE]) -> Result<Self, FsError> {
        let mut reader = Reader::new(block, "superblock");
        if reader.take(8)? != SUPERBLOCK_MAGIC {
            return Err(FsError::Corrupt(
                "superblock: bad magic (not an sdfs image)".into(),
            ));
        }
        let version = reader.u32()?;
        if version != FORMAT_VERSION {
            return Err(FsError::Corrupt(format!(
                "superblock: unsupported format version {version}"
            )));
        }
        if reader.u32()? as usize != BLOCK_SIZE {
            return Err(reader.corrupt("unsupported block size"));
        }
        let block_count = reader.u64()?;
        let sequence = reader.u64()?;
        let index_root = reader.u64()?;
        let levels = reader.u32()?;
        let _reserved = reader.u32()?;
        let inode_count = reader.u64()?;
        let used_blocks = reader.u64()?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(reader.take(16)?);
        let mut handle_secret = [0u8; 32];
        handle_secret.copy_from_slice(reader.take(32)?);
        let snapshot_table = reader.u64()?;
        let covered = BLOCK_SIZE - reader.remaining();
        let stored = reader.u32()?;
        if crc32c(&block[..covered]) != stored {
            return Err(reader.corrupt("checksum mismatch"));
        }
        if levels != INDEX_LEVELS {
            return Err(reader.corrupt("unsupported index depth"));
        }
        if index_root < 2 || index_root >= block_count {
            return Err(reader.corrupt("index root out of range"));
        }
        if snapshot_table == 1 || (snapshot_table != 0 && snapshot_table >= block_count) {
            return Err(reader.corrupt("snapshot table out of range"));
        }
        Ok(Superblock {
            block_count,
            sequence,
            index_root,
            inode_count,
            used_blocks,
            uuid,
            handle_secret,
            snapshot_table,
        })
    }
}

/// Write `crc` over the block with its checksum field (bytes 4..8) zeroed.
fn seal(block: &mut [u8; BLOCK_SIZE]) {
    block[4..8].fill(0);
    let crc = crc32c(&block[..]);
    block[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Check magic and checksum of a sealed block.
fn check(
    block: &[u8; BLOCK_SIZE],
    magic: u32,
    what: &'static str,
    number: u64,
) -> Result<(), FsError> {
    let mut copy = *block;
    let stored = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
    copy[4..8].fill(0);
    if u32::from_le_bytes([block[0], block[1], block[2], block[3]]) != magic {
        return Err(FsError::Corrupt(format!(
            "{what} at block {number}: bad magic"
        )));
    }
    if crc32c(&copy[..]) != stored {
        return Err(FsError::Corrupt(format!(
            "{what} at block {number}: checksum mismatch"
        )));
    }
    Ok(())
}

/// An interior index node: child block numbers (0 = none).
///
/// Layout: magic u32, crc u32, level u32, reserved u32, then
/// [`INTERIOR_FANOUT`] u64 children.
pub fn encode_interior(level: u32, children: &[u64]) -> Block {
    let mut block = zeroed();
    block[0..4].copy_from_slice(&INTERIOR_MAGIC.to_le_bytes());
    block[8..12].copy_from_slice(&level.to_le_bytes());
    for (index, child) in children.iter().take(INTERIOR_FANOUT as usize).enumerate() {
        let at = 16 + index * 8;
        block[at..at + 8].copy_from_slice(&child.to_le_bytes());
    }
    seal(&mut block);
    block
}

/// Decode an interior node at `level`.
///
/// # Errors
/// [`FsError::Corrupt`] on a bad magic, checksum or level.
pub fn decode_interior(
    block: &[u8; BLOCK_SIZE],
    level: u32,
    number: u64,
) -> Result<Box<[u64]>, FsError> {
    check(block, INTERIOR_MAGIC, "index node", number)?;
    let mut reader = Reader::new(&block[8..], "index node");
    if reader.u32()? != level {
        return Err(FsError::Corrupt(format!(
            "index node at block {number}: wrong level"
        )));
    }
    reader.u32()?;
    let mut children = alloc::vec![0u64; INTERIOR_FANOUT as usize];
    for child in children.iter_mut() {
        *child = reader.u64()?;
    }
    Ok(children.into_boxed_slice())
}

/// One inode slot of an index leaf.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeafSlot {
    /// First block of the inode's record chain; 0 = inode free.
    pub record: u64,
    /// The inode's generation (kept after the inode is freed, so reuse
    /// can bump it).
    pub generation: u64,
}

/// An index leaf: magic u32, crc u32, level u32 (0), reserved u32, then
/// [`LEAF_SLOTS`] × (record u64, generation u64).
pub fn encode_leaf(slots: &[LeafSlot]) -> Block {
    let mut block = zeroed();
    block[0..4].copy_from_slice(&LEAF_MAGIC.to_le_bytes());
    for (index, slot) in slots.iter().take(LEAF_SLOTS as usize).enumerate() {
        let at = 16 + index * 16;
        block[at..at + 8].copy_from_slice(&slot.record.to_le_bytes());
        block[at + 8..at + 16].copy_from_slice(&slot.generation.to_le_bytes());
    }
    seal(&mut block);
    block
}

/// Decode an index leaf.
///
/// # Errors
/// [`FsError::Corrupt`] on a bad magic, checksum or level.
pub fn decode_leaf(block: &[u8; BLOCK_SIZE], number: u64) -> Result<Box<[LeafSlot]>, FsError> {
    check(block, LEAF_MAGIC, "index leaf", number)?;
    let mut reader = Reader::new(&block[8..], "index leaf");
    if reader.u32()? != 0 {
        return Err(FsError::Corrupt(format!(
            "index leaf at block {number}: wrong level"
        )));
    }
    reader.u32()?;
    let mut slots = alloc::vec![LeafSlot::default(); LEAF_SLOTS as usize];
    for slot in slots.iter_mut() {
        slot.record = reader.u64()?;
        slot.generation = reader.u64()?;
    }
    Ok(slots.into_boxed_slice())
}

/// A record block: magic u32, crc u32, next u64 (0 = last), payload
/// length u32, reserved u32, then up to [`RECORD_PAYLOAD`] bytes.
pub fn encode_record_block(next: u64, payload: &[u8]) -> Block {
    encode_chain_block(RECORD_MAGIC, next, payload)
}

/// A chain block with `magic` (record and snapshot-table blocks).
pub fn encode_chain_block(magic: u32, next: u64, payload: &[u8]) -> Block {
    let mut block = zeroed();
    block[0..4].copy_from_slice(&magic.to_le_bytes());
    block[8..16].copy_from_slice(&next.to_le_bytes());
    let length = payload.len().min(RECORD_PAYLOAD);
    block[16..20].copy_from_slice(&(length as u32).to_le_bytes());
    block[RECORD_HEADER..RECORD_HEADER + length].copy_from_slice(&payload[..length]);
    seal(&mut block);
    block
}

/// Decode a record block into (next, payload).
///
/// # Errors
/// [`FsError::Corrupt`] on a bad magic, checksum or length.
pub fn decode_record_block(block: &[u8; BLOCK_SIZE], number: u64) -> Result<(u64, &[u8]), FsError> {
    decode_chain_block(block, RECORD_MAGIC, "inode record", number)
}

/// Decode a chain block with `magic` into (next, payload).
///
/// # Errors
/// [`FsError::Corrupt`] on a bad magic, checksum or length.
pub fn decode_chain_block<'a>(
    block: &'a [u8; BLOCK_SIZE],
    magic: u32,
    what: &'static str,
    number: u64,
) -> Result<(u64, &'a [u8]), FsError> {
    check(block, magic, what, number)?;
    let mut reader = Reader::new(&block[8..], what);
    let next = reader.u64()?;
    let length = reader.u32()? as usize;
    if length > RECORD_PAYLOAD {
        return Err(FsError::Corrupt(format!(
            "inode record at block {number}: bad length"
        )));
    }
    Ok((next, &block[RECORD_HEADER..RECORD_HEADER + length]))
}
