//! Snapshots: read-only copies of the whole tree as of a commit.
//!
//! Copy-on-write makes them cheap: a snapshot is the index root of a commit,
//! kept in the snapshot table the superblock points to. Every block
//! reachable from a snapshot is *shared*: when the live tree releases it,
//! it stays allocated. Deleting a snapshot commits, then rebuilds the free
//! map by walking the live tree and the remaining snapshots, so exactly the
//! blocks only the deleted snapshot held become free.
//!
//! A live volume also serves its snapshots: [`Volume::with_snapshot`] runs
//! a closure on a read-only view of one, opened on first use (its index
//! only: the tree was walked when the volume was opened or the snapshot
//! taken) and kept between calls without a
//! device (a view is a `Volume<Detached>` that is lent the live device
//! for each call), at most [`MAX_OPEN_VIEWS`] at once unless
//! [`Volume::limit_snapshot_views`] says otherwise. A snapshot's blocks
//! are shared, so the live tree never writes them and a view never sees
//! them change.

use crate::bitmap::Bitmap;
use crate::codec::{Reader, Writer};
use crate::volume::{SpaceUse, Volume};
use crate::BlockDevice;
use alloc::boxed::Box;
use alloc::format;
use alloc::vec::Vec;
use vfs::{validate_name, Clock, FsError, Timestamp};

/// Most snapshots one file system keeps.
pub const MAX_SNAPSHOTS: usize = 1024;

/// Snapshot views a live volume keeps open by default (least recently
/// used closed first); each holds its tree's index and up to 1 MiB of
/// inodes. See [`Volume::limit_snapshot_views`].
pub const MAX_OPEN_VIEWS: usize = 4;

/// The inode cache of each snapshot view, by default.
pub(crate) const VIEW_CACHE_BYTES: usize = 1 << 20;

/// The device of a snapshot view between calls: none; every access fails
/// (a view is only used while lent the live device).
pub(crate) struct Detached;

impl BlockDevice for Detached {
    fn block_count(&self) -> u64 {
        0
    }

    fn read_block(
        &mut self,
        _block: u64,
        _buffer: &mut [u8; crate::BLOCK_SIZE],
    ) -> Result<(), crate::DeviceError> {
        Err(crate::DeviceError::Io)
    }

    fn write_block(
        &mut self,
        _block: u64,
        _data: &[u8; crate::BLOCK_SIZE],
    ) -> Result<(), crate::DeviceError> {
        Err(crate::DeviceError::Io)
    }

    fn flush(&mut self) -> Result<(), crate::DeviceError> {
        Err(crate::DeviceError::Io)
    }
}

/// One snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its name (the rules of a file name).
    pub name: Vec<u8>,
    /// The commit it preserves.
    pub sequence: u64,
    /// When it was taken.
    pub created: Timestamp,
    /// Live inodes at that commit.
    pub inodes: u64,
    pub(crate) index_root: u64,
}

/// Encode the snapshot table payload.
pub(crate) fn encode_table(snapshots: &[SnapshotInfo]) -> Vec<u8> {
    let mut writer = Writer::default();
    writer.u64(snapshots.len() as u64);
    for snapshot in snapshots {
        writer.u64(snapshot.index_root);
        writer.u64(snapshot.sequence);
        writer.i64(snapshot.created.seconds);
        writer.u32(snapshot.created.nanoseconds);
        writer.u64(snapshot.inodes);
        writer.u8(snapshot.name.len() as u8);
        writer.bytes(&snapshot.name);
    }
    writer.bytes
}

/// Decode the snapshot table payload.
///
/// # Errors
/// [`FsError::Corrupt`] naming the problem.
pub(crate) fn decode_table(payload: &[u8], block_count: u64) -> Result<Vec<SnapshotInfo>, FsError> {
    let mut reader = Reader::new(payload, "snapshot table");
    let count = reader.count(38)?;
    if count > MAX_SNAPSHOTS {
        return Err(reader.corrupt("too many snapshots"));
    }
    let mut snapshots: Vec<SnapshotInfo> = Vec::with_capacity(count);
    for _ in 0..count {
        let index_root = reader.u64()?;
        let sequence = reader.u64()?;
        let seconds = reader.i64()?;
        let nanoseconds = reader.u32()?;
        let inodes = reader.u64()?;
        let length = reader.u8()? as usize;
        let name = reader.take(length)?.to_vec();
        if index_root < 2
            || index_root >= block_count
            || nanoseconds >= 1_000_000_000
            || validate_name(&name).is_err()
        {
            return Err(reader.corrupt("bad snapshot entry"));
        }
        if snapshots.iter().any(|other| other.name == name) {
            return Err(reader.corrupt("duplicate snapshot name"));
        }
        snapshots.push(SnapshotInfo {
            name,
            sequence,
            created: Timestamp {
                seconds,
                nanoseconds,
            },
            inodes,
            index_root,
        });
    }
    if reader.remaining() != 0 {
        return Err(reader.corrupt("trailing bytes"));
    }
    Ok(snapshots)
}

/// A clock for internal read-only walks (they change no times).
pub(crate) struct NoClock;

impl Clock for NoClock {
    fn now(&self) -> Timestamp {
        Timestamp::default()
    }
}

/// Every block of the tree rooted at `index_root` (superblocks included),
/// each checked in range, checksummed and referenced once in that tree.
///
/// Takes a trait object so that walking from inside a walk does not nest
/// generic types without end.
pub(crate) fn walk(device: &mut dyn BlockDevice, index_root: u64) -> Result<Bitmap, FsError> {
    let view =
        Volume::<&mut dyn BlockDevice>::open_at(device, Box::new(NoClock), 0, Some(index_root))?;
    Ok(view.used)
}

impl<D: BlockDevice> Volume<D> {
    /// The snapshots, oldest first.
    pub fn snapshots(&self) -> &[SnapshotInfo] {
        &self.snapshots
    }

    /// Run `body` on a read-only view of the snapshot that preserves
    /// commit `sequence` ([`SnapshotInfo::sequence`]), while this volume
    /// stays live: the view is opened on first use and kept (see the
    /// module documentation). Every change in the view answers
    /// [`FsError::ReadOnly`]; its inode numbers are the snapshot's.
    ///
    /// # Errors
    /// [`FsError::Stale`] when no snapshot preserves `sequence` (or this
    /// is itself a snapshot view); the errors of opening it
    /// ([`FsError::Corrupt`], [`FsError::Io`]).
    pub fn with_snapshot<R>(
        &mut self,
        sequence: u64,
        body: impl FnOnce(&mut Volume<&mut dyn BlockDevice>) -> R,
    ) -> Result<R, FsError> {
        if self.read_only {
            return Err(FsError::Stale);
        }
        let (root, inodes) = self
            .snapshots
            .iter()
            .find(|snapshot| snapshot.sequence == sequence)
            .map(|snapshot| (snapshot.index_root, snapshot.inodes))
            .ok_or(FsError::Stale)?;
        self.tick += 1;
        let tick = self.tick;
        let mut view = match self.views.remove(&sequence) {
            // A trait object, so that a view's own `with_snapshot` (which
            // answers Stale) does not nest generic types without end.
            Some((_, view)) => view.rebind(&mut self.device as &mut dyn BlockDevice).0,
            None => {
                // Only the index is read: the tree's records and blocks
                // were checked when this volume was opened (or when the
                // snapshot was taken, a walk of the same tree), and
                // nothing changes them since; records are read when used.
                let mut view = Volume::open_tree(
                    &mut self.device as &mut dyn BlockDevice,
                    Box::new(NoClock),
                    self.view_limit.1,
                    Some(root),
                    false,
                )?;
                view.live_inodes = inodes;
                // A view allocates nothing: drop the maps only writers use.
                view.used = Bitmap::new(0);
                view.fresh = Bitmap::new(0);
                view.shared = Bitmap::new(0);
                view
            }
        };
        let result = body(&mut view);
        let (view, _) = view.rebind(Detached);
        if self.views.len() >= self.view_limit.0 {
            let oldest = self
                .views
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(&sequence, _)| sequence);
            if let Some(oldest) = oldest {
                self.views.remove(&oldest);
            }
        }
        self.views.insert(sequence, (tick, view));
        Ok(result)
    }

    /// Keep at most `views` snapshot views open (at least 1), each with
    /// about `cache_bytes` of inodes: the memory reading snapshots may
    /// take besides each open one's index (defaults: [`MAX_OPEN_VIEWS`],
    /// 1 MiB). Views open now are closed.
    pub fn limit_snapshot_views(&mut self, views: usize, cache_bytes: usize) {
        self.view_limit = (views.max(1), cache_bytes);
        self.views.clear();
    }

    /// When a snapshot was last taken or deleted since the volume was
    /// opened (before that: when the newest was taken).
    pub fn snapshots_changed(&self) -> Timestamp {
        self.snapshots_changed
    }

    /// Take a snapshot of everything applied so far (this commits).
    ///
    /// # Errors
    /// [`FsError::Exists`] for a name in use, name errors,
    /// [`FsError::NoSpace`], [`FsError::ReadOnly`] on a snapshot view,
    /// [`FsError::Io`].
    pub fn snapshot_create(&mut self, name: &[u8]) -> Result<SnapshotInfo, FsError> {
        validate_name(name)?;
        if self.snapshots.iter().any(|snapshot| snapshot.name == name) {
            return Err(FsError::Exists);
        }
        if self.snapshots.len() >= MAX_SNAPSHOTS {
            return Err(FsError::NoSpace);
        }
        self.reserve(&[], 0, self.table_blocks(name.len()), SpaceUse::Grows)?;
        self.commit_volume()?;
        let root = self.root_block;
        let blocks = walk(&mut self.device, root)?;
        self.shared.union_with(&blocks);
        let snapshot = SnapshotInfo {
            name: name.to_vec(),
            sequence: self.superblock.sequence,
            created: self.clock.now(),
            inodes: self.live_inodes,
            index_root: root,
        };
        self.snapshots.push(snapshot.clone());
        self.snapshots_dirty = true;
        self.snapshots_changed = snapshot.created;
        self.commit_volume()?;
        Ok(snapshot)
    }

    /// Delete a snapshot and free the blocks only it held (this commits).
    ///
    /// # Errors
    /// [`FsError::NotFound`], [`FsError::ReadOnly`], [`FsError::Io`].
    pub fn snapshot_delete(&mut self, name: &[u8]) -> Result<(), FsError> {
        let position = self
            .snapshots
            .iter()
            .position(|snapshot| snapshot.name == name)
            .ok_or(FsError::NotFound)?;
        self.reserve(&[], 0, self.table_blocks(0), SpaceUse::Keeps)?;
        // Commit first so the live tree on disk is the whole live tree.
        self.commit_volume()?;
        let live = walk(&mut self.device, self.root_block)?;
        let mut shared = Bitmap::new(self.superblock.block_count);
        for (index, snapshot) in self.snapshots.iter().enumerate() {
            if index != position {
                shared.union_with(&walk(&mut self.device, snapshot.index_root)?);
            }
        }
        // Blocks only the deleted snapshot held: free after the commit that
        // drops it from the table, like any other released block.
        for block in 2..self.superblock.block_count {
            if self.shared.get(block) && !shared.get(block) && !live.get(block) {
                self.defer_free(block);
            }
        }
        self.shared = shared;
        let removed = self.snapshots.remove(position);
        self.views.remove(&removed.sequence);
        self.snapshots_dirty = true;
        self.snapshots_changed = self.clock.now();
        self.commit_volume()
    }

    /// Open snapshot `name` of the file system on `device`, read-only:
    /// every change answers [`FsError::ReadOnly`].
    ///
    /// # Errors
    /// [`FsError::NotFound`] when there is no such snapshot, and the errors
    /// of [`Volume::open`].
    pub fn open_snapshot(
        mut device: D,
        clock: Box<dyn Clock>,
        cache_bytes: usize,
        name: &[u8],
    ) -> Result<Self, FsError> {
        let live = Volume::open_at(&mut device, Box::new(NoClock), 0, None)?;
        let root = live
            .snapshots
            .iter()
            .find(|snapshot| snapshot.name == name)
            .map(|snapshot| snapshot.index_root)
            .ok_or(FsError::NotFound)?;
        drop(live);
        Volume::open_at(device, clock, cache_bytes, Some(root))
    }

    /// Blocks the next snapshot table can take (with one more entry whose
    /// name is `extra_name` bytes long), plus the index root a commit
    /// always rewrites.
    fn table_blocks(&self, extra_name: usize) -> u64 {
        let bytes = encode_table(&self.snapshots).len() + 38 + extra_name;
        bytes.div_ceil(crate::layout::RECORD_PAYLOAD) as u64 + 2
    }

    /// Read the snapshot table chain (opening a live volume).
    pub(crate) fn load_snapshots(&mut self) -> Result<(), FsError> {
        let mut next = self.superblock.snapshot_table;
        let mut payload = Vec::new();
        while next != 0 {
            if self.snapshot_chain.len() > 64 {
                return Err(FsError::Corrupt("snapshot table chain too long".into()));
            }
            self.claim_block(next, "snapshot table")?;
            self.snapshot_chain.push(next);
            let block = crate::volume::read(&mut self.device, next)?;
            let (following, bytes) = crate::layout::decode_chain_block(
                &block,
                crate::layout::SNAPSHOT_MAGIC,
                "snapshot table",
                next,
            )?;
            payload.extend_from_slice(bytes);
            next = following;
        }
        if self.superblock.snapshot_table == 0 {
            return Ok(());
        }
        self.snapshots = decode_table(&payload, self.superblock.block_count)?;
        for index in 0..self.snapshots.len() {
            let root = self.snapshots[index].index_root;
            let blocks = walk(&mut self.device, root).map_err(|error| {
                FsError::Corrupt(format!(
                    "snapshot {:?}: {error}",
                    alloc::string::String::from_utf8_lossy(&self.snapshots[index].name)
                ))
            })?;
            self.shared.union_with(&blocks);
        }
        self.used.union_with(&self.shared.clone());
        self.snapshots_changed = self
            .snapshots
            .iter()
            .map(|snapshot| snapshot.created)
            .max()
            .unwrap_or_default();
        Ok(())
    }
}
