//! The volume: opening, the inode index, the inode cache, block allocation
//! and the commit protocol.
//!
//! Three states of a block matter. *Committed* blocks are referenced by the
//! last superblock and are never written until a later commit has stopped
//! referencing them. *Fresh* blocks were allocated since the last commit;
//! nothing durable points at them, so they may be rewritten in place. Blocks
//! released during an epoch that were committed wait in `pending_free` and
//! become allocatable only after the next superblock is durable. Together
//! these make every crash land on the last durable commit.
//!
//! The free map is not stored: [`Volume::open`] rebuilds it by walking the
//! committed index and every inode record, checking each block is in range
//! and referenced once. That walk is also most of `fsck`.

use crate::bitmap::Bitmap;
use crate::layout::{
    decode_interior, decode_leaf, decode_record_block, encode_interior, encode_leaf,
    encode_record_block, zeroed, Block, LeafSlot, Superblock, BLOCK_SIZE, INDEX_LEVELS,
    INTERIOR_FANOUT, LEAF_SLOTS, MAX_INODES, RECORD_PAYLOAD,
};
use crate::record::{Content, Directory, Inode};
use crate::{BlockDevice, DeviceError, FlushTicket};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use vfs::{Attributes, Clock, FileType, FsError, Generation, InodeId};

/// Leaf slot value of an inode created since the last commit (its record
/// is only in the cache).
pub(crate) const PENDING: u64 = u64::MAX;

/// Blocks always kept free beyond what pending commits need.
const SLACK_BLOCKS: u64 = 8;

/// Largest inode record accepted when reading (bounds a forged chain).
const MAX_RECORD_BYTES: usize = 256 << 20;

/// Smallest device `format` accepts, in blocks (256 KiB).
pub const MIN_BLOCKS: u64 = 64;

/// What `format` writes besides the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatOptions {
    /// Volume identity (the caller supplies random bytes: no_std has no RNG).
    pub uuid: [u8; 16],
    /// Secret keying the NFS server's file-handle MACs.
    pub handle_secret: [u8; 32],
}

pub(crate) struct Cached {
    pub inode: Inode,
    pub chain: Vec<u64>,
    pub dirty: bool,
    pub last_used: u64,
    pub size: usize,
}

pub(crate) struct Leaf {
    pub block: u64,
    pub slots: Box<[LeafSlot]>,
    pub dirty: bool,
}

pub(crate) struct Interior {
    pub block: u64,
    pub children: Box<[u64]>,
    pub dirty: bool,
}

/// Whether a change may use the [release reserve](Volume::release_reserve).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpaceUse {
    /// It adds data, names or inodes (WRITE, CREATE, LINK, a snapshot,
    /// growing a file): the release reserve stays free.
    Grows,
    /// It removes, renames, shrinks or changes attributes: once committed
    /// it holds no more blocks than before, and may use the reserve.
    Keeps,
}

/// An open file system on a [`BlockDevice`].
pub struct Volume<D: BlockDevice> {
    pub(crate) device: D,
    pub(crate) clock: Box<dyn Clock>,
    pub(crate) superblock: Superblock,
    pub(crate) root_block: u64,
    pub(crate) interior: BTreeMap<u64, Interior>,
    pub(crate) leaves: BTreeMap<u64, Leaf>,
    pub(crate) cache: BTreeMap<u64, Cached>,
    pub(crate) dirty: BTreeSet<u64>,
    pub(crate) free_numbers: BTreeSet<u64>,
    pub(crate) next_number: u64,
    pub(crate) live_inodes: u64,
    pub(crate) used: Bitmap,
    pub(crate) fresh: Bitmap,
    /// Committed blocks released this epoch, as (first block, length).
    pub(crate) pending_free: Vec<(u64, u64)>,
    pub(crate) cursor: u64,
    pub(crate) epoch_reserve: u64,
    pub(crate) cache_limit: usize,
    pub(crate) cache_bytes: usize,
    pub(crate) tick: u64,
    /// Inode lookups the cache answered, and those that read the disk.
    pub(crate) cache_hits: u64,
    pub(crate) cache_misses: u64,
    pub(crate) applied: u64,
    pub(crate) durable: u64,
    pub(crate) failed: bool,
    pub(crate) snapshots: Vec<crate::snapshot::SnapshotInfo>,
    pub(crate) snapshot_chain: Vec<u64>,
    pub(crate) snapshots_dirty: bool,
    pub(crate) shared: Bitmap,
    pub(crate) read_only: bool,
    /// Snapshots opened for reading while live, by sequence, with the
    /// tick they were last used (see `snapshot.rs`).
    pub(crate) views: BTreeMap<u64, (u64, Volume<crate::snapshot::Detached>)>,
    /// When a snapshot was last taken or deleted.
    pub(crate) snapshots_changed: vfs::Timestamp,
    /// Most snapshot views kept open, and each one's inode cache.
    pub(crate) view_limit: (usize, usize),
    /// The staged commit whose flushes run outside the volume, if any.
    pub(crate) in_flight: Option<InFlight>,
    /// The last token given to a staged commit's step.
    pub(crate) commit_tokens: u64,
    /// The blocks a write gathers before writing them, kept empty between
    /// writes (at most [`WRITE_SCRATCH_KEPT`] bytes of room): a 1 MiB
    /// WRITE does not allocate, grow and free a buffer of its size.
    pub(crate) write_scratch: Vec<u8>,
}

/// Most room [`Volume::write_scratch`] keeps between writes.
pub(crate) const WRITE_SCRATCH_KEPT: usize = 2 << 20;

/// A staged commit ([`Volume::commit_begin`]): its blocks are written and
/// its superblock chosen; it waits for a device flush.
pub(crate) struct InFlight {
    /// The token of the step it waits for.
    token: u64,
    /// Whether its superblock is written (it waits for the second flush).
    superblock_written: bool,
    superblock: Superblock,
    /// The blocks the commit releases (the last commit's, free once it is
    /// durable).
    frees: Vec<(u64, u64)>,
    /// Blocks allocated before it began: part of it, so no longer free to
    /// reuse at once when released.
    fresh: Bitmap,
    /// What it makes durable.
    applied: u64,
    /// The device's flush of step `token`, when
    /// [`Volume::commit_advance`] started it.
    ticket: Option<FlushTicket>,
}

impl<D: BlockDevice> core::fmt::Debug for Volume<D> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("Volume")
            .field("sequence", &self.superblock.sequence)
            .field("live_inodes", &self.live_inodes)
            .field("used_blocks", &self.used.count())
            .finish()
    }
}

fn device_error(error: DeviceError) -> FsError {
    match error {
        DeviceError::OutOfRange => {
            FsError::Corrupt("block number past the end of the device".into())
        }
        DeviceError::Io => FsError::Io,
    }
}

/// Read one block.
pub(crate) fn read<D: BlockDevice>(device: &mut D, block: u64) -> Result<Block, FsError> {
    let mut buffer = zeroed();
    device
        .read_block(block, &mut buffer)
        .map_err(device_error)?;
    Ok(buffer)
}

impl<D: BlockDevice> Volume<D> {
    /// Write an empty file system (a root directory, mode 0755, owned by
    /// root) onto `device`.
    ///
    /// # Errors
    /// [`FsError::NoSpace`] when the device is smaller than 64 blocks;
    /// [`FsError::Io`] when it fails.
    pub fn format(
        device: &mut D,
        options: FormatOptions,
        clock: &dyn Clock,
    ) -> Result<(), FsError> {
        let block_count = device.block_count();
        if block_count < MIN_BLOCKS {
            return Err(FsError::NoSpace);
        }
        let now = clock.now();
        let root = Inode {
            attributes: Attributes {
                inode: InodeId(1),
                generation: Generation(1),
                file_type: FileType::Directory,
                mode: 0o755,
                nlink: 2,
                uid: 0,
                gid: 0,
                size: 0,
                used: 0,
                rdev: Default::default(),
                atime: now,
                mtime: now,
                ctime: now,
                change: 1,
            },
            content: Content::Directory(Directory::new(1)),
        };
        let mut slots = vec![LeafSlot::default(); LEAF_SLOTS as usize];
        slots[1] = LeafSlot {
            record: 2,
            generation: 1,
        };
        let mut level_one = vec![0u64; INTERIOR_FANOUT as usize];
        level_one[0] = 3;
        let mut level_two = vec![0u64; INTERIOR_FANOUT as usize];
        level_two[0] = 4;
        let writes: [(u64, Block); 4] = [
            (2, encode_record_block(0, &root.encode())),
            (3, encode_leaf(&slots)),
            (4, encode_interior(1, &level_one)),
            (5, encode_interior(INDEX_LEVELS, &level_two)),
        ];
        for (block, data) in &writes {
            device.write_block(*block, data).map_err(device_error)?;
        }
        device.flush().map_err(device_error)?;
        let superblock = Superblock {
            block_count,
            sequence: 1,
            index_root: 5,
            inode_count: 1,
            used_blocks: 6,
            uuid: options.uuid,
            handle_secret: options.handle_secret,
            snapshot_table: 0,
        };
        let encoded = superblock.encode();
        device.write_block(0, &encoded).map_err(device_error)?;
        device.write_block(1, &encoded).map_err(device_error)?;
        device.flush().map_err(device_error)
    }

    /// Open the file system on `device`, keeping about `cache_bytes` of
    /// inodes in memory.
    ///
    /// # Errors
    /// [`FsError::Corrupt`] naming what is wrong with the image;
    /// [`FsError::Io`] when the device fails.
    pub fn open(device: D, clock: Box<dyn Clock>, cache_bytes: usize) -> Result<Self, FsError> {
        Self::open_at(device, clock, cache_bytes, None)
    }

    /// Open the live tree (`index_root` None) or, read-only, the tree under
    /// another index root (a snapshot).
    pub(crate) fn open_at(
        device: D,
        clock: Box<dyn Clock>,
        cache_bytes: usize,
        index_root: Option<u64>,
    ) -> Result<Self, FsError> {
        Self::open_tree(device, clock, cache_bytes, index_root, true)
    }

    /// [`Volume::open_at`], reading every inode record (checking each
    /// block in range and referenced once, building the free map) only
    /// when `walk_records`; otherwise only the index is read and records
    /// are read when used, which suits a snapshot whose tree was walked
    /// already (see `snapshot.rs`).
    pub(crate) fn open_tree(
        mut device: D,
        clock: Box<dyn Clock>,
        cache_bytes: usize,
        index_root: Option<u64>,
        walk_records: bool,
    ) -> Result<Self, FsError> {
        if device.block_count() < 2 {
            return Err(FsError::Corrupt(
                "device too small to hold a superblock".into(),
            ));
        }
        let first = read(&mut device, 0).and_then(|block| Superblock::decode(&block));
        let second = read(&mut device, 1).and_then(|block| Superblock::decode(&block));
        let superblock = match (first, second) {
            (Ok(a), Ok(b)) => {
                if b.sequence > a.sequence {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) => a,
            (Err(_), Ok(b)) => b,
            (Err(error), Err(_)) => return Err(error),
        };
        if superblock.block_count > device.block_count() {
            return Err(FsError::Corrupt(format!(
                "image truncated: the file system has {} blocks, the device {}",
                superblock.block_count,
                device.block_count()
            )));
        }
        let block_count = superblock.block_count;
        let mut volume = Volume {
            device,
            clock,
            root_block: index_root.unwrap_or(superblock.index_root),
            superblock,
            interior: BTreeMap::new(),
            leaves: BTreeMap::new(),
            cache: BTreeMap::new(),
            dirty: BTreeSet::new(),
            free_numbers: BTreeSet::new(),
            next_number: 1,
            live_inodes: 0,
            used: Bitmap::new(block_count),
            fresh: Bitmap::new(block_count),
            pending_free: Vec::new(),
            cursor: 2,
            epoch_reserve: 0,
            cache_limit: cache_bytes,
            cache_bytes: 0,
            tick: 0,
            cache_hits: 0,
            cache_misses: 0,
            applied: 0,
            durable: 0,
            failed: false,
            snapshots: Vec::new(),
            snapshot_chain: Vec::new(),
            snapshots_dirty: false,
            shared: Bitmap::new(block_count),
            read_only: index_root.is_some(),
            views: BTreeMap::new(),
            snapshots_changed: vfs::Timestamp::default(),
            view_limit: (
                crate::snapshot::MAX_OPEN_VIEWS,
                crate::snapshot::VIEW_CACHE_BYTES,
            ),
            in_flight: None,
            commit_tokens: 0,
            write_scratch: Vec::new(),
        };
        volume.used.set(0);
        volume.used.set(1);
        volume.load_index()?;
        if walk_records {
            volume.load_inodes()?;
        }
        if index_root.is_none() {
            volume.load_snapshots()?;
        }
        match volume.cached(1)?.inode.attributes.file_type {
            FileType::Directory => Ok(volume),
            _ => Err(FsError::Corrupt(
                "inode 1 (the root) is not a directory".into(),
            )),
        }
    }

    /// The same volume over another device (the snapshot views move
    /// between the live device and none); returns the old device.
    pub(crate) fn rebind<E: BlockDevice>(self, device: E) -> (Volume<E>, D) {
        let Volume {
            device: old,
            clock,
            superblock,
            root_block,
            interior,
            leaves,
            cache,
            dirty,
            free_numbers,
            next_number,
            live_inodes,
            used,
            fresh,
            pending_free,
            cursor,
            epoch_reserve,
            cache_limit,
            cache_bytes,
            tick,
            cache_hits,
            cache_misses,
            applied,
            durable,
            failed,
            snapshots,
            snapshot_chain,
            snapshots_dirty,
            shared,
            read_only,
            views,
            snapshots_changed,
            view_limit,
            in_flight,
            commit_tokens,
            write_scratch,
        } = self;
        let volume = Volume {
            device,
            clock,
            superblock,
            root_block,
            interior,
            leaves,
            cache,
            dirty,
            free_numbers,
            next_number,
            live_inodes,
            used,
            fresh,
            pending_free,
            cursor,
            epoch_reserve,
            cache_limit,
            cache_bytes,
            tick,
            cache_hits,
            cache_misses,
            applied,
            durable,
            failed,
            snapshots,
            snapshot_chain,
            snapshots_dirty,
            shared,
            read_only,
            views,
            snapshots_changed,
            view_limit,
            in_flight,
            commit_tokens,
            write_scratch,
        };
        (volume, old)
    }

    /// Mark a committed block in use; a block referenced twice or out of
    /// range is corruption.
    pub(crate) fn claim_block(&mut self, block: u64, what: &str) -> Result<(), FsError> {
        self.claim(block, what)
    }

    fn claim(&mut self, block: u64, what: &str) -> Result<(), FsError> {
        if block < 2 || block >= self.superblock.block_count {
            return Err(FsError::Corrupt(format!(
                "{what}: block {block} out of range"
            )));
        }
        if !self.used.set(block) {
            return Err(FsError::Corrupt(format!(
                "{what}: block {block} referenced twice"
            )));
        }
        Ok(())
    }

    fn load_index(&mut self) -> Result<(), FsError> {
        let root = self.root_block;
        self.claim(root, "index root")?;
        let root_children = decode_interior(&*read(&mut self.device, root)?, INDEX_LEVELS, root)?;
        for (first_index, &child) in root_children.iter().enumerate() {
            if child == 0 {
                continue;
            }
            self.claim(child, "index node")?;
            let children = decode_interior(&*read(&mut self.device, child)?, 1, child)?;
            for (second_index, &leaf_block) in children.iter().enumerate() {
                if leaf_block == 0 {
                    continue;
                }
                self.claim(leaf_block, "index leaf")?;
                let slots = decode_leaf(&*read(&mut self.device, leaf_block)?, leaf_block)?;
                let leaf_number = first_index as u64 * INTERIOR_FANOUT + second_index as u64;
                self.leaves.insert(
                    leaf_number,
                    Leaf {
                        block: leaf_block,
                        slots,
                        dirty: false,
                    },
                );
            }
            let index = first_index as u64;
            self.interior.insert(
                index,
                Interior {
                    block: child,
                    children,
                    dirty: false,
                },
            );
        }
        Ok(())
    }

    fn load_inodes(&mut self) -> Result<(), FsError> {
        let mut records = Vec::new();
        for (&leaf_number, leaf) in &self.leaves {
            for (slot_index, slot) in leaf.slots.iter().enumerate() {
                let number = leaf_number * LEAF_SLOTS + slot_index as u64;
                if slot.record != 0 {
                    if number == 0 {
                        return Err(FsError::Corrupt("index: inode 0 is in use".into()));
                    }
                    records.push((number, slot.generation));
                }
            }
        }
        for &(number, generation) in &records {
            let (inode, chain) = self.read_record(number, true)?;
            if inode.attributes.generation.0 != generation {
                return Err(FsError::Corrupt(format!(
                    "inode {number}: generation differs from the index"
                )));
            }
            for (first, length) in inode.data_runs() {
                for block in first..first.saturating_add(length) {
                    self.claim(block, "file data")?;
                }
            }
            self.live_inodes += 1;
            self.next_number = self.next_number.max(number + 1);
            let size = inode.memory_size();
            if self.cache_bytes + size <= self.cache_limit || number == 1 {
                self.cache_bytes += size;
                self.cache.insert(
                    number,
                    Cached {
                        inode,
                        chain,
                        dirty: false,
                        last_used: 0,
                        size,
                    },
                );
            }
        }
        let live: BTreeSet<u64> = records.iter().map(|&(number, _)| number).collect();
        self.free_numbers = (1..self.next_number)
            .filter(|number| !live.contains(number))
            .collect();
        Ok(())
    }

    /// Read and decode inode `number`'s record chain; `claim` marks its
    /// blocks in use (only while opening).
    fn read_record(&mut self, number: u64, claim: bool) -> Result<(Inode, Vec<u64>), FsError> {
        let mut next = self.slot(number).map(|slot| slot.record).unwrap_or(0);
        let mut payload = Vec::new();
        let mut chain = Vec::new();
        while next != 0 {
            if claim {
                self.claim(next, "inode record")?;
            } else if next >= self.superblock.block_count || next < 2 {
                return Err(FsError::Corrupt(format!(
                    "inode {number}: record block out of range"
                )));
            }
            if chain.len() as u64 > self.superblock.block_count || payload.len() > MAX_RECORD_BYTES
            {
                return Err(FsError::Corrupt(format!(
                    "inode {number}: record chain too long"
                )));
            }
            chain.push(next);
            let block = read(&mut self.device, next)?;
            let (following, bytes) = decode_record_block(&block, next)?;
            payload.extend_from_slice(bytes);
            next = following;
        }
        let inode = Inode::decode(&payload, number)?;
        Ok((inode, chain))
    }

    /// The index slot of inode `number`, if its leaf exists.
    pub(crate) fn slot(&self, number: u64) -> Option<LeafSlot> {
        let leaf = self.leaves.get(&(number / LEAF_SLOTS))?;
        leaf.slots.get((number % LEAF_SLOTS) as usize).copied()
    }

    pub(crate) fn set_slot(&mut self, number: u64, slot: LeafSlot) {
        let leaf = self
            .leaves
            .entry(number / LEAF_SLOTS)
            .or_insert_with(|| Leaf {
                block: 0,
                slots: vec![LeafSlot::default(); LEAF_SLOTS as usize].into_boxed_slice(),
                dirty: true,
            });
        if let Some(entry) = leaf.slots.get_mut((number % LEAF_SLOTS) as usize) {
            *entry = slot;
        }
        leaf.dirty = true;
    }

    /// Inode `number` from the cache, reading it in if needed.
    ///
    /// # Errors
    /// [`FsError::Stale`] when the inode is not allocated.
    pub(crate) fn cached(&mut self, number: u64) -> Result<&mut Cached, FsError> {
        self.tick += 1;
        if self.cache.contains_key(&number) {
            self.cache_hits += 1;
        } else {
            self.cache_misses += 1;
            match self.slot(number) {
                Some(slot) if slot.record != 0 && slot.record != PENDING => {}
                _ => return Err(FsError::Stale),
            }
            let (inode, chain) = self.read_record(number, false)?;
            let size = inode.memory_size();
            self.cache_bytes += size;
            self.cache.insert(
                number,
                Cached {
                    inode,
                    chain,
                    dirty: false,
                    last_used: 0,
                    size,
                },
            );
            self.evict(number);
        }
        let tick = self.tick;
        let entry = self.cache.get_mut(&number).ok_or(FsError::Stale)?;
        entry.last_used = tick;
        Ok(entry)
    }

    /// Drop least recently used clean inodes until the cache fits its
    /// budget (dirty inodes stay until committed; `keep` stays too).
    pub(crate) fn evict(&mut self, keep: u64) {
        if self.cache_bytes <= self.cache_limit {
            return;
        }
        let mut candidates: Vec<(u64, u64)> = self
            .cache
            .iter()
            .filter(|(&number, entry)| !entry.dirty && number != keep && number != 1)
            .map(|(&number, entry)| (entry.last_used, number))
            .collect();
        candidates.sort_unstable();
        let target = self.cache_limit - self.cache_limit / 4;
        for (_, number) in candidates {
            if self.cache_bytes <= target {
                break;
            }
            if let Some(entry) = self.cache.remove(&number) {
                self.cache_bytes -= entry.size;
            }
        }
    }

    /// Reserve room for the next commit before changing the inodes
    /// `numbers`: the first change to an inode in an epoch reserves its
    /// whole record (with its leaf and interior node), and each change
    /// `extra_records` more record blocks. A change that grows what the
    /// volume holds ([`SpaceUse::Grows`]) must also leave the
    /// [release reserve](Volume::release_reserve) free; one that does not
    /// ([`SpaceUse::Keeps`]: a removal, a rename, a truncation, new
    /// attributes) may use it, so a full disk still lets files be removed.
    ///
    /// # Errors
    /// [`FsError::NoSpace`] (nothing changed) or [`FsError::Io`].
    pub(crate) fn reserve(
        &mut self,
        numbers: &[u64],
        data_blocks: u64,
        extra_records: u64,
        space: SpaceUse,
    ) -> Result<(), FsError> {
        if self.read_only {
            return Err(FsError::ReadOnly);
        }
        if self.failed {
            return Err(FsError::Io);
        }
        let mut metadata = extra_records;
        for &number in numbers {
            if !self.dirty.contains(&number) {
                let bound = match self.cache.get(&number) {
                    Some(entry) => record_bound(&entry.inode),
                    None => 1,
                };
                // The record, its leaf and the leaf's interior node.
                metadata += bound + 2;
            }
        }
        let kept_free = match space {
            SpaceUse::Grows => self.release_reserve(),
            SpaceUse::Keeps => 0,
        };
        let needed = data_blocks + metadata + self.epoch_reserve + SLACK_BLOCKS + kept_free;
        if self.free_blocks() < needed {
            return Err(FsError::NoSpace);
        }
        self.epoch_reserve += metadata;
        Ok(())
    }

    /// Blocks that only changes which do not grow the volume's contents
    /// may use ([`SpaceUse::Keeps`]): 1/64 of the volume, at least 16
    /// blocks and at most 32,768 (128 MiB). Without it, writes could
    /// take the disk down to the last blocks a commit needs, and then the
    /// removal that would free space could not reserve the directory
    /// record its own commit rewrites (copy on write): a full disk would
    /// stay full for good.
    pub(crate) fn release_reserve(&self) -> u64 {
        (self.superblock.block_count / 64).clamp(16, 32_768)
    }

    /// Free blocks that changes which grow the volume's contents may use:
    /// what `statfs` reports free.
    pub(crate) fn available_blocks(&self) -> u64 {
        self.free_blocks()
            .saturating_sub(self.epoch_reserve + SLACK_BLOCKS + self.release_reserve())
    }

    /// Whether a commit would give blocks back: blocks released since the
    /// last commit (allocatable only after it), or room reserved for it
    /// beyond what it will use.
    pub(crate) fn commit_would_free(&self) -> bool {
        !self.pending_free.is_empty() || self.epoch_reserve > 0 || self.in_flight.is_some()
    }

    /// Blocks not in use (pending frees count as used until the commit).
    pub(crate) fn free_blocks(&self) -> u64 {
        self.superblock.block_count - self.used.count()
    }

    /// Mark inode `number` changed (it must be cached).
    pub(crate) fn mark_dirty(&mut self, number: u64) {
        if let Some(entry) = self.cache.get_mut(&number) {
            entry.dirty = true;
            self.dirty.insert(number);
        }
    }

    /// Allocate a fresh block.
    pub(crate) fn allocate(&mut self) -> Result<u64, FsError> {
        let block = self.used.find_clear(self.cursor).ok_or(FsError::NoSpace)?;
        self.used.set(block);
        self.fresh.set(block);
        self.cursor = block + 1;
        Ok(block)
    }

    /// Release a block: at once if fresh, after the next commit otherwise.
    pub(crate) fn release(&mut self, block: u64) {
        if self.shared.get(block) && block < self.superblock.block_count {
            // A snapshot still holds it: it stays allocated.
            return;
        }
        if self.fresh.get(block) && block < self.superblock.block_count {
            self.fresh.clear(block);
            self.used.clear(block);
        } else {
            self.defer_free(block);
        }
    }

    /// Release `length` blocks from `first`.
    pub(crate) fn release_run(&mut self, first: u64, length: u64) {
        for block in first..first.saturating_add(length) {
            self.release(block);
        }
    }

    /// Free a committed block once the next commit is durable (kept as
    /// runs, so releasing a large file costs little memory).
    pub(crate) fn defer_free(&mut self, block: u64) {
        match self.pending_free.last_mut() {
            Some((first, length)) if *first + *length == block => *length += 1,
            _ => self.pending_free.push((block, 1)),
        }
    }

    /// Write a data block, failing the volume on a device error.
    pub(crate) fn write_data(
        &mut self,
        block: u64,
        data: &[u8; BLOCK_SIZE],
    ) -> Result<(), FsError> {
        self.device.write_block(block, data).map_err(|error| {
            self.failed = true;
            device_error(error)
        })
    }

    /// Write consecutive data blocks in one device request, failing the
    /// volume on a device error.
    pub(crate) fn write_run(&mut self, first: u64, data: &[u8]) -> Result<(), FsError> {
        self.device.write_blocks(first, data).map_err(|error| {
            self.failed = true;
            device_error(error)
        })
    }

    /// Read consecutive data blocks in one device request.
    pub(crate) fn read_run(&mut self, first: u64, buffer: &mut [u8]) -> Result<(), FsError> {
        self.refuse_uncommitted(first, buffer.len().div_ceil(BLOCK_SIZE) as u64)?;
        self.device.read_blocks(first, buffer).map_err(device_error)
    }

    /// [`Volume::read_run`] of `length` bytes handed to `sink` in pieces
    /// ([`BlockDevice::read_blocks_to`]).
    pub(crate) fn read_run_to(
        &mut self,
        first: u64,
        length: usize,
        sink: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<(), FsError> {
        self.refuse_uncommitted(first, length.div_ceil(BLOCK_SIZE) as u64)?;
        self.device
            .read_blocks_to(first, length, sink)
            .map_err(device_error)
    }

    /// Read a data block.
    pub(crate) fn read_data(&mut self, block: u64) -> Result<Block, FsError> {
        self.refuse_uncommitted(block, 1)?;
        read(&mut self.device, block)
    }

    /// After a failure, data written since the last commit may never have
    /// reached the device (or reached it torn): only committed data is
    /// served, the rest answers [`FsError::Io`].
    fn refuse_uncommitted(&self, first: u64, count: u64) -> Result<(), FsError> {
        if self.failed
            && (first..first.saturating_add(count))
                .any(|block| block < self.superblock.block_count && self.fresh.get(block))
        {
            return Err(FsError::Io);
        }
        Ok(())
    }

    /// Whether a device error (or damage met during a change) has failed
    /// the volume: every change and commit then answers [`FsError::Io`]
    /// until it is opened again; committed data can still be read.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Make every applied change durable.
    ///
    /// # Errors
    /// [`FsError::Io`] when the device fails; the volume then refuses all
    /// further changes (the last durable commit is still intact on disk).
    pub fn commit_volume(&mut self) -> Result<(), FsError> {
        // A staged commit in flight is finished first.
        self.finish_in_flight()?;
        if self.prepare_commit()?.is_some() {
            self.finish_in_flight()?;
        }
        Ok(())
    }

    /// Finishes the commit in flight, if any, through the device's own
    /// flush (a detached step of it, when it comes back, is stale and
    /// ignored).
    fn finish_in_flight(&mut self) -> Result<(), FsError> {
        while let Some(token) = self.in_flight.as_ref().map(|flight| flight.token) {
            let flushed = self.device.flush().map_err(device_error);
            self.commit_step(token, flushed)?;
        }
        Ok(())
    }

    /// Begin a staged commit (see [`vfs::FileSystem::commit_begin`]): the
    /// blocks of every change applied so far are written now and the
    /// flushes are handed back, to run without the volume; changes made
    /// meanwhile belong to the next commit and never touch a block this
    /// commit or the last durable one uses. A device without a detached
    /// flush ([`BlockDevice::flusher`]) commits whole here.
    ///
    /// # Errors
    /// As [`Volume::commit_volume`].
    pub fn commit_begin(&mut self) -> Result<Option<Box<dyn vfs::CommitFlush>>, FsError> {
        if self.in_flight.is_some() {
            // One staged commit at a time: finish it, then stage the rest.
            self.commit_volume()?;
            return Ok(None);
        }
        let Some(token) = self.prepare_commit()? else {
            return Ok(None);
        };
        self.detached_step(token)
    }

    /// The next step of the staged commit, given how the flush of step
    /// `token` ended (see [`vfs::FileSystem::commit_continue`]).
    ///
    /// # Errors
    /// As [`Volume::commit_volume`].
    pub fn commit_continue(
        &mut self,
        token: u64,
        flushed: Result<(), FsError>,
    ) -> Result<Option<Box<dyn vfs::CommitFlush>>, FsError> {
        match self.commit_step(token, flushed)? {
            Some(next) => self.detached_step(next),
            None => Ok(None),
        }
    }

    /// Move commits on without waiting for the device (see
    /// [`vfs::FileSystem::commit_advance`]): begin a commit of everything
    /// applied when none is in flight, start each step's flush with
    /// [`BlockDevice::start_flush`], and take the next step when
    /// [`BlockDevice::poll_flush`] reports it done. A device without
    /// started flushes commits whole here; so does a staged commit begun
    /// by [`Volume::commit_begin`] (its detached step, when it comes back,
    /// is stale and ignored).
    ///
    /// # Errors
    /// As [`Volume::commit_volume`].
    pub fn commit_advance(&mut self) -> Result<bool, FsError> {
        if self.in_flight.is_none() {
            let Some(token) = self.prepare_commit()? else {
                return Ok(false);
            };
            if !self.start_step(token)? {
                return self.finish_in_flight().map(|()| false);
            }
        }
        while let Some((token, ticket)) = self
            .in_flight
            .as_ref()
            .map(|flight| (flight.token, flight.ticket))
        {
            let Some(ticket) = ticket else {
                return self.finish_in_flight().map(|()| false);
            };
            let Some(flushed) = self.device.poll_flush(ticket) else {
                return Ok(true);
            };
            match self.commit_step(token, flushed.map_err(device_error))? {
                Some(next) => {
                    if !self.start_step(next)? {
                        return self.finish_in_flight().map(|()| false);
                    }
                }
                None => return Ok(false),
            }
        }
        Ok(false)
    }

    /// Start the device's flush of step `token` of the commit in flight;
    /// `false` when the device has no started flushes.
    fn start_step(&mut self, token: u64) -> Result<bool, FsError> {
        match self.device.start_flush() {
            Ok(Some(ticket)) => {
                if let Some(flight) = self.in_flight.as_mut() {
                    flight.ticket = Some(ticket);
                }
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(error) => self
                .commit_step(token, Err(device_error(error)))
                .map(|_| false),
        }
    }

    /// Step `token`'s flush, detached from the device; without one the
    /// commit is finished here through the device.
    fn detached_step(&mut self, token: u64) -> Result<Option<Box<dyn vfs::CommitFlush>>, FsError> {
        match self.device.flusher() {
            Some(flush) => Ok(Some(Box::new(DetachedStep { token, flush }))),
            None => self.finish_in_flight().map(|()| None),
        }
    }

    /// Write the blocks of a commit of everything applied so far and choose
    /// its superblock; returns the token of the flush it waits for, or
    /// `None` when there was nothing to write.
    fn prepare_commit(&mut self) -> Result<Option<u64>, FsError> {
        if self.failed {
            return Err(FsError::Io);
        }
        if self.read_only {
            self.durable = self.applied;
            return Ok(None);
        }
        if self.dirty.is_empty()
            && !self.snapshots_dirty
            && !self.leaves.values().any(|leaf| leaf.dirty)
        {
            self.durable = self.applied;
            return Ok(None);
        }
        let result = self.write_commit_blocks();
        if result.is_err() {
            self.failed = true;
        }
        result.map(Some)
    }

    /// How the flush of step `token` of the staged commit ended: after the
    /// first flush the superblock is written (`Some`: the token of the
    /// second flush); after the second the commit is durable (`None`). A
    /// step of no commit in flight (finished otherwise) is ignored.
    fn commit_step(
        &mut self,
        token: u64,
        flushed: Result<(), FsError>,
    ) -> Result<Option<u64>, FsError> {
        match &self.in_flight {
            Some(flight) if flight.token == token => {}
            _ => return Ok(None),
        }
        let result = flushed.and_then(|()| self.advance_commit());
        if result.is_err() {
            self.failed = true;
            if let Some(flight) = self.in_flight.take() {
                // Its blocks never became a commit: after a failure only
                // committed data is served.
                self.fresh.union_with(&flight.fresh);
                self.pending_free.extend(flight.frees);
            }
        }
        result
    }

    fn advance_commit(&mut self) -> Result<Option<u64>, FsError> {
        self.commit_tokens += 1;
        let token = self.commit_tokens;
        let Some(flight) = self.in_flight.as_mut() else {
            return Ok(None);
        };
        if !flight.superblock_written {
            let copy = flight.superblock.sequence % 2;
            let encoded = flight.superblock.encode();
            flight.superblock_written = true;
            flight.token = token;
            flight.ticket = None;
            self.device
                .write_block(copy, &encoded)
                .map_err(device_error)?;
            return Ok(Some(token));
        }
        let Some(flight) = self.in_flight.take() else {
            return Ok(None);
        };
        self.superblock = flight.superblock;
        for (first, length) in flight.frees {
            for block in first..first + length {
                self.used.clear(block);
            }
        }
        self.durable = flight.applied;
        self.evict(1);
        Ok(None)
    }

    /// The in-memory half of a commit: every dirty record, leaf, interior
    /// node and the snapshot table to fresh blocks, a new index root, the
    /// superblock chosen (not written). Returns the token of the flush the
    /// commit waits for.
    fn write_commit_blocks(&mut self) -> Result<u64, FsError> {
        let dirty: Vec<u64> = core::mem::take(&mut self.dirty).into_iter().collect();
        for number in dirty {
            let Some(entry) = self.cache.get_mut(&number) else {
                continue;
            };
            let payload = entry.inode.encode();
            let generation = entry.inode.attributes.generation.0;
            let old_chain = core::mem::take(&mut entry.chain);
            for block in old_chain {
                self.release(block);
            }
            let blocks = self.write_chain(crate::layout::RECORD_MAGIC, &payload)?;
            self.set_slot(
                number,
                LeafSlot {
                    record: blocks[0],
                    generation,
                },
            );
            if let Some(entry) = self.cache.get_mut(&number) {
                entry.chain = blocks;
                entry.dirty = false;
                let size = entry.inode.memory_size();
                self.cache_bytes = self.cache_bytes - entry.size.min(self.cache_bytes) + size;
                entry.size = size;
            }
        }
        let dirty_leaves: Vec<u64> = self
            .leaves
            .iter()
            .filter(|(_, leaf)| leaf.dirty)
            .map(|(&number, _)| number)
            .collect();
        for leaf_number in dirty_leaves {
            let new_block = self.allocate()?;
            let Some(leaf) = self.leaves.get_mut(&leaf_number) else {
                continue;
            };
            let encoded = encode_leaf(&leaf.slots);
            let old = core::mem::replace(&mut leaf.block, new_block);
            leaf.dirty = false;
            self.device
                .write_block(new_block, &encoded)
                .map_err(device_error)?;
            if old != 0 {
                self.release(old);
            }
            let interior = self
                .interior
                .entry(leaf_number / INTERIOR_FANOUT)
                .or_insert_with(|| Interior {
                    block: 0,
                    children: vec![0; INTERIOR_FANOUT as usize].into_boxed_slice(),
                    dirty: true,
                });
            if let Some(child) = interior
                .children
                .get_mut((leaf_number % INTERIOR_FANOUT) as usize)
            {
                *child = new_block;
            }
            interior.dirty = true;
        }
        let dirty_interior: Vec<u64> = self
            .interior
            .iter()
            .filter(|(_, node)| node.dirty)
            .map(|(&index, _)| index)
            .collect();
        for index in dirty_interior {
            let new_block = self.allocate()?;
            let Some(node) = self.interior.get_mut(&index) else {
                continue;
            };
            let encoded = encode_interior(1, &node.children);
            let old = core::mem::replace(&mut node.block, new_block);
            node.dirty = false;
            self.device
                .write_block(new_block, &encoded)
                .map_err(device_error)?;
            if old != 0 {
                self.release(old);
            }
        }
        if self.snapshots_dirty {
            for block in core::mem::take(&mut self.snapshot_chain) {
                self.release(block);
            }
            if !self.snapshots.is_empty() {
                let payload = crate::snapshot::encode_table(&self.snapshots);
                let blocks = self.write_chain(crate::layout::SNAPSHOT_MAGIC, &payload)?;
                self.snapshot_chain = blocks;
            }
        }
        let mut root_children = vec![0u64; INTERIOR_FANOUT as usize];
        for (&index, node) in self.interior.iter() {
            if let Some(child) = root_children.get_mut(index as usize) {
                *child = node.block;
            }
        }
        let new_root = self.allocate()?;
        self.device
            .write_block(new_root, &encode_interior(INDEX_LEVELS, &root_children))
            .map_err(device_error)?;
        let old_root = core::mem::replace(&mut self.root_block, new_root);
        self.release(old_root);
        let mut superblock = self.superblock.clone();
        superblock.sequence += 1;
        superblock.index_root = new_root;
        superblock.inode_count = self.live_inodes;
        let pending: u64 = self.pending_free.iter().map(|&(_, length)| length).sum();
        superblock.used_blocks = self.used.count() - pending;
        superblock.snapshot_table = self.snapshot_chain.first().copied().unwrap_or(0);
        // Changes from here on belong to the next commit: blocks this one
        // uses are no longer fresh, and what it releases is freed when it
        // is durable.
        let fresh = core::mem::replace(&mut self.fresh, Bitmap::new(self.superblock.block_count));
        let frees = core::mem::take(&mut self.pending_free);
        self.snapshots_dirty = false;
        self.epoch_reserve = 0;
        self.commit_tokens += 1;
        let token = self.commit_tokens;
        self.in_flight = Some(InFlight {
            token,
            superblock_written: false,
            superblock,
            frees,
            fresh,
            applied: self.applied,
            ticket: None,
        });
        Ok(token)
    }

    /// Write `payload` as a chain of sealed blocks with `magic` to fresh
    /// blocks (at least one, even for an empty payload); returns them in
    /// chain order.
    fn write_chain(&mut self, magic: u32, payload: &[u8]) -> Result<Vec<u64>, FsError> {
        let pieces: Vec<&[u8]> = if payload.is_empty() {
            vec![&[][..]]
        } else {
            payload.chunks(RECORD_PAYLOAD).collect()
        };
        let mut blocks = Vec::with_capacity(pieces.len());
        for _ in 0..pieces.len() {
            blocks.push(self.allocate()?);
        }
        for (index, piece) in pieces.iter().enumerate() {
            let next = blocks.get(index + 1).copied().unwrap_or(0);
            let encoded = crate::layout::encode_chain_block(magic, next, piece);
            self.device
                .write_block(blocks[index], &encoded)
                .map_err(device_error)?;
        }
        Ok(blocks)
    }

    /// The volume identity chosen at format time.
    pub fn uuid(&self) -> [u8; 16] {
        self.superblock.uuid
    }

    /// The secret for file-handle MACs chosen at format time.
    pub fn handle_secret(&self) -> [u8; 32] {
        self.superblock.handle_secret
    }

    /// The number of the last durable commit.
    pub fn commit_sequence(&self) -> u64 {
        self.superblock.sequence
    }

    /// Total blocks.
    pub fn block_count(&self) -> u64 {
        self.superblock.block_count
    }

    /// Inode lookups since open: (answered from the cache, read from disk).
    pub fn cache_statistics(&self) -> (u64, u64) {
        (self.cache_hits, self.cache_misses)
    }

    /// The device, for inspection (tests count recorded events).
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device underneath, for its own controls (a data cache's
    /// [`crate::CachedDevice::take_wanted`] and fills). Reading and
    /// writing blocks through it behind the volume's back is not for
    /// this.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// Close without committing, returning the device (tests reopen it to
    /// check what is durable).
    pub fn into_device(self) -> D {
        self.device
    }

    /// Inode numbers this volume can hold: one record block at least each.
    pub(crate) fn inode_capacity(&self) -> u64 {
        (self.superblock.block_count / 2).min(MAX_INODES - 1)
    }
}

/// Record blocks inode `inode` can need when written.
pub(crate) fn record_bound(inode: &Inode) -> u64 {
    let bytes = 128
        + match &inode.content {
            Content::File(blocks) => blocks.run_count() * 24,
            Content::Directory(directory) => directory
                .by_cookie
                .values()
                .map(|entry| entry.name.len() + 18)
                .sum(),
            Content::Symlink(target) => target.len() + 8,
            Content::Special => 0,
        };
    bytes.div_ceil(RECORD_PAYLOAD) as u64 + 1
}

/// A staged commit's flush, detached from the device.
struct DetachedStep {
    token: u64,
    flush: Box<dyn crate::DeviceFlush>,
}

impl vfs::CommitFlush for DetachedStep {
    fn token(&self) -> u64 {
        self.token
    }

    fn run(&mut self) -> Result<(), FsError> {
        self.flush.flush().map_err(device_error)
    }
}

/// Over a data cache, reads that would wait for the device can be refused
/// (see [`crate::CachedDevice::refuse_waits`]); the cache names the blocks.
impl<D: BlockDevice> vfs::WaitControl for Volume<crate::CachedDevice<D>> {
    fn refuse_waits(&mut self, refuse: bool) {
        self.device.refuse_waits(refuse);
    }

    fn wants_blocks(&self) -> bool {
        self.device.wanted().is_some()
    }

    fn take_wanted(&mut self) -> Option<(u64, u64)> {
        self.device.take_wanted()
    }
}
