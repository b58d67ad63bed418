//! A bounded cache of device blocks with read-ahead: [`CachedDevice`].
//!
//! Design: a wrapper that is itself a [`BlockDevice`], so the volume, fsck
//! and every test device stack as before (`Volume<CachedDevice<D>>`). Its
//! room is a fixed arena of blocks allocated when it is made (on Xen at
//! boot, before the heap is budgeted for connections), never grown: a slot
//! per cached block, recycled least recently used first (the order of use
//! is a doubly linked list through the slots: a use moves one slot in
//! constant time).
//!
//! - **Reads** are answered from the arena when every block of the request
//!   is there; otherwise the device is asked once for the whole request,
//!   extended by the read-ahead window, and every block read is kept.
//! - **Read-ahead**: a request that continues a sequential stream (it
//!   starts where the stream's last request ended) doubles the stream's
//!   window from [`READ_AHEAD_START`] up to [`READ_AHEAD_MAX`] blocks
//!   (clamped to the device's end), and any other request starts a new
//!   stream. With streams parked (the hosted server,
//!   [`CachedDevice::park_streams`]) [`STREAMS`] streams are followed at
//!   once, so metadata reads in between do not end one, and a request
//!   less than one request or window away from a stream's end continues
//!   it (requests in flight arrive out of order). The file system lays
//!   files out in runs, so the blocks after a run are usually the file's
//!   next ones.
//! - **Kept fills** (the hosted server, [`CachedDevice::keep_fills`]): a
//!   large fill stays in the buffer it was read into, so a stream's data
//!   is not copied into the arena and out again; refusals leave out
//!   blocks a fill under way brings ([`CachedDevice::take_wanted`]).
//! - **Writes** go to the device first (write-through: nothing is held
//!   that a crash could lose), then replace the cached copies of the
//!   blocks written; a write the device fails evicts them instead, since a
//!   failed or torn write leaves their content unknown. Blocks written are
//!   not added (a commit writes many blocks that are read rarely).
//! - **Flush** passes through. Caching adds no ordering of its own: what
//!   the device holds after a crash is exactly what it would hold without
//!   the cache.
//! - **Reads that must not wait** (the Xen domain's poll loop, which
//!   serves every guest from one thread): with
//!   [`CachedDevice::refuse_waits`] on, a read the arena cannot answer
//!   (of at most a quarter of its room, [`REFUSE_FRACTION`], and not
//!   continuing a sequential stream; the others are read waiting, the
//!   stream with its read-ahead)
//!   fails at once ([`DeviceError::Io`]: a read-only call then fails with
//!   no change) and names the blocks it needed, with the read-ahead
//!   window ([`CachedDevice::take_wanted`]). The caller reads them without
//!   waiting and hands them over with [`CachedDevice::fill`], then makes
//!   the call again. A write between the announcement of a fill
//!   ([`CachedDevice::fill_started`]) and the fill wins: the fill leaves
//!   the blocks written meanwhile alone, so stale data never replaces
//!   newer.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::layout::BLOCK_SIZE;
use crate::{BlockDevice, DeviceError};

/// The read-ahead window's first size, in blocks (128 KiB).
pub const READ_AHEAD_START: u64 = 32;

/// The read-ahead window's largest size, in blocks (1 MiB).
pub const READ_AHEAD_MAX: u64 = 256;

/// Counters of a [`CachedDevice`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounters {
    /// Blocks read that the cache held.
    pub hits: u64,
    /// Blocks read that it did not hold (read from the device).
    pub misses: u64,
    /// Blocks read from the device ahead of any request for them.
    pub read_ahead: u64,
    /// Blocks evicted to make room.
    pub evictions: u64,
    /// Reads refused because they would have waited for the device.
    pub refused: u64,
}

/// A [`BlockDevice`] with a bounded block cache in front of `D`.
#[derive(Clone, Debug)]
pub struct CachedDevice<D> {
    inner: D,
    /// One slot per cachable block.
    arena: Vec<[u8; BLOCK_SIZE]>,
    /// Cached block number to its slot.
    map: BTreeMap<u64, usize>,
    /// Per slot: its block and its neighbours in the order of use, a list
    /// from the most recently used ([`CachedDevice::newest`]) to the least
    /// ([`CachedDevice::oldest`]), linked through slot numbers ([`NONE`]
    /// ends it), so a use moves a slot in constant time.
    uses: Vec<Use>,
    newest: usize,
    oldest: usize,
    /// Slots not holding a block.
    free: Vec<usize>,
    /// The sequential streams followed (see [`Stream`]).
    streams: [Stream; STREAMS],
    /// The window of the read being made (its stream's, 0 for none).
    window: u64,
    /// Reads so far: the streams' order of use.
    reads: u64,
    counters: CacheCounters,
    /// Reads that miss fail at once (see [`CachedDevice::refuse_waits`]).
    refuse_waits: bool,
    /// Refusals include a sequential stream's reads.
    park_streams: bool,
    /// The blocks the last refused read needed: (first, count).
    wanted: Option<(u64, u64)>,
    /// Fills announced and not yet made or abandoned.
    fills_pending: usize,
    /// Blocks written while fills were pending: (first, count); `None`
    /// once too many were to keep track of (the pending fills then keep
    /// nothing).
    written_meanwhile: Option<Vec<(u64, u64)>>,
    /// The buffer of the last read with read-ahead, kept for the next one
    /// when [`CachedDevice::keep_read_buffer`] asked for it.
    read_buffer: Option<Vec<u8>>,
    /// Large fills kept as they were read (see [`CachedDevice::keep_fills`]),
    /// oldest first, at most [`KEPT_FILLS`]; `None`: every fill is copied
    /// into the arena.
    kept: Option<Vec<KeptFill>>,
    /// Blocks named by refusals whose fills are pending: (first, count),
    /// at most [`UNDER_WAY_LIMIT`].
    under_way: Vec<(u64, u64)>,
    /// Buffers of retired kept fills, for the next reads
    /// ([`CachedDevice::take_spare`]), at most [`SPARE_BUFFERS`].
    spares: Vec<Vec<AlignedBlock>>,
}

/// A page-aligned block: the buffers of fills the cache keeps whole
/// ([`CachedDevice::fill_blocks`]), which a host reads into straight from
/// the disk (`O_DIRECT` wants aligned memory).
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
pub struct AlignedBlock(pub [u8; BLOCK_SIZE]);

impl core::fmt::Debug for AlignedBlock {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter.write_str("AlignedBlock")
    }
}

/// A fill kept whole: its blocks are cached where they were read.
#[derive(Clone, Debug)]
struct KeptFill {
    first: u64,
    blocks: Vec<AlignedBlock>,
    /// Per block: not read from here yet (read ahead of any request). When
    /// the fill retires, these are copied into the arena; the others were
    /// handed out already, and a stream does not come back for them.
    unread: Vec<bool>,
}

impl KeptFill {
    fn index_of(&self, block: u64) -> Option<usize> {
        let index = block.checked_sub(self.first)?;
        (index < self.blocks.len() as u64).then_some(index as usize)
    }
}

/// Fills kept whole at once; the oldest retires when one more comes.
pub const KEPT_FILLS: usize = 4;

/// Fills of fewer blocks are copied into the arena, not kept whole: they
/// are not a stream's, and what they hold (metadata, random reads) is
/// worth keeping after it was read.
pub const KEEP_WHOLE_MIN: usize = READ_AHEAD_START as usize;

/// Refusals whose blocks are remembered as under way.
const UNDER_WAY_LIMIT: usize = 16;

/// Buffers of retired fills kept for reuse.
const SPARE_BUFFERS: usize = 2;

/// A sequential stream: where it continues and its read-ahead window.
///
/// Several are followed at once, so that reads of other blocks between a
/// stream's requests (a file's metadata, another file) do not end it; a
/// read that continues none takes the place of the least recently used.
#[derive(Clone, Copy, Debug, Default)]
struct Stream {
    /// The block after the stream's furthest request (0: unused).
    next: u64,
    window: u64,
    /// [`CachedDevice`]'s read count at its last use.
    used: u64,
}

/// Sequential streams followed at once.
pub const STREAMS: usize = 4;

/// A slot's place in the order of use (see [`CachedDevice`]'s `uses`).
#[derive(Clone, Copy, Debug)]
struct Use {
    block: u64,
    newer: usize,
    older: usize,
}

/// No slot: the end of the list of uses.
const NONE: usize = usize::MAX;

/// Only reads of at most this fraction of the cache's room are refused:
/// a refused call is made again from the start, so everything it reads
/// must be in the cache at once, and a larger read would crowd out what
/// else it needs. Larger reads are made waiting, as without refusals.
pub const REFUSE_FRACTION: u64 = 4;

/// Ranges of blocks written during pending fills that are tracked one by
/// one; past this, pending fills are dropped whole.
const WRITTEN_MEANWHILE_LIMIT: usize = 64;

impl<D: BlockDevice> CachedDevice<D> {
    /// [`BlockDevice::read_blocks`] and [`BlockDevice::read_blocks_to`]:
    /// the same reads, the bytes handed to `output`.
    fn read_out(&mut self, first: u64, mut output: Output<'_, '_>) -> Result<(), DeviceError> {
        let length = output.len();
        let count = length.div_ceil(BLOCK_SIZE) as u64;
        let end = first.checked_add(count).ok_or(DeviceError::OutOfRange)?;
        if end > self.inner.block_count() {
            return Err(DeviceError::OutOfRange);
        }
        let sequential = self.follow(first, end);
        if self.arena.is_empty() {
            return match output {
                Output::Buffer(buffer) => self.inner.read_blocks(first, buffer),
                Output::Sink(length, sink) => self.inner.read_blocks_to(first, length, sink),
            };
        }
        if (first..end).all(|block| self.cached(block)) {
            for index in 0..count as usize {
                let at = index * BLOCK_SIZE;
                let block = first + index as u64;
                let take = (length - at).min(BLOCK_SIZE);
                if let Some(slot) = self.touch(block) {
                    output.put(at, &self.arena[slot][..take]);
                } else if let Some((fill, index)) = self.kept_block(block) {
                    let kept = &mut self.kept.as_mut().expect("found in it")[fill];
                    kept.unread[index] = false;
                    output.put(at, &kept.blocks[index].0[..take]);
                }
            }
            self.counters.hits += count;
            return Ok(());
        }
        // A sequential stream is read waiting, with its whole read-ahead
        // window: parking each of its reads would cost a round of the
        // caller's loop per window and cap the window at what a refused
        // read may name (measured under QEMU: a guest streaming 16 MiB
        // took 1.6 to 3.5 times as long).
        if self.refuse_waits
            && (!sequential || self.park_streams)
            && count <= self.arena.len() as u64 / REFUSE_FRACTION
        {
            // Named with its read-ahead, within the same fraction of the
            // room, less what is cached already at either end (a stream's
            // neighbouring request may have brought it).
            let ahead = self
                .window
                .min(self.inner.block_count() - end)
                .min((self.arena.len() as u64).saturating_sub(count));
            let wanted = (count + ahead)
                .min(self.arena.len() as u64 / REFUSE_FRACTION)
                .max(count)
                .max(1);
            // With streams parked, blocks a fill under way brings are not
            // read again: a read that needs nothing else names no blocks
            // (count 0: wait for the fills, then try again).
            let have = |cache: &Self, block: u64| {
                cache.cached(block) || (cache.park_streams && cache.under_way(block))
            };
            let start = (first..end).find(|&block| !have(self, block));
            let (start, stop) = match start {
                None if self.park_streams => (first, first),
                None => (first, first + wanted),
                Some(start) => (
                    start,
                    (end..first + wanted)
                        .find(|&block| have(self, block))
                        .unwrap_or(first + wanted),
                ),
            };
            self.wanted = Some((start, stop - start));
            if stop > start && self.under_way.len() < UNDER_WAY_LIMIT {
                self.under_way.push((start, stop - start));
            }
            self.counters.refused += 1;
            return Err(DeviceError::Io);
        }
        // One request for everything asked, and the window after it (never
        // more than the cache holds, so what is read ahead stays).
        let mut ahead = self
            .window
            .min(self.inner.block_count() - end)
            .min((self.arena.len() as u64).saturating_sub(count));
        // Room for the read-ahead is asked for, not assumed: without it
        // (a full heap on Xen) the request is read as it came.
        let kept = self.read_buffer.take();
        let keeping = kept.is_some();
        let mut read = kept.unwrap_or_default();
        if ahead > 0
            && read
                .try_reserve_exact(
                    (((count + ahead) as usize + 1) * BLOCK_SIZE).saturating_sub(read.len()),
                )
                .is_err()
        {
            ahead = 0;
        }
        // A read into a buffer with nothing to read ahead goes straight
        // into it; the rest go through the read buffer.
        let mut output = match output {
            Output::Buffer(buffer) if ahead == 0 => {
                if keeping {
                    self.read_buffer = Some(read);
                }
                self.inner.read_blocks(first, buffer)?;
                self.keep_whole_blocks(first, buffer);
                self.counters.misses += count;
                return Ok(());
            }
            output => output,
        };
        // A kept buffer is only zeroed where it grows: the device
        // overwrites every byte of the range read. The range starts at a
        // block-aligned address within it (one block more is asked for),
        // so a device that reads straight into aligned memory (the hosted
        // image's direct reads) needs no bounce.
        let range = ((count + ahead) as usize) * BLOCK_SIZE;
        read.resize(read.len().max(range + BLOCK_SIZE), 0);
        let start = read.as_ptr().align_offset(BLOCK_SIZE).min(BLOCK_SIZE);
        let window = &mut read[start..start + range];
        let result = self.inner.read_blocks(first, window);
        if result.is_ok() {
            output.put(0, &window[..length]);
            for index in 0..count + ahead {
                let at = index as usize * BLOCK_SIZE;
                self.keep(first + index, &window[at..at + BLOCK_SIZE]);
            }
        }
        if keeping {
            self.read_buffer = Some(read);
        }
        result?;
        self.counters.misses += count;
        self.counters.read_ahead += ahead;
        Ok(())
    }

    /// Files the read of `first..end` under the stream it continues, or
    /// starts a stream with it; sets [`CachedDevice::window`] and says
    /// whether the read was sequential. A stream's requests may arrive a
    /// little out of order (a client with several requests in flight,
    /// served by several threads): with streams parked, a request that
    /// starts less than one request or window away from where the
    /// stream's furthest request ended continues it, and its end only
    /// moves forward; [`STREAMS`] streams are followed. Otherwise one
    /// stream is, continued only exactly where its last read ended.
    fn follow(&mut self, first: u64, end: u64) -> bool {
        self.reads += 1;
        // With streams parked (the hosted server), several streams are
        // followed, and a request that starts less than one request or
        // window away from a stream's end continues it; otherwise (Xen's
        // domain, whose loop waits for a stream's reads) one stream,
        // continued only where its last read ended.
        let (followed, tolerant) = if self.park_streams {
            (STREAMS, true)
        } else {
            (1, false)
        };
        let count = end - first;
        let continued = self.streams[..followed].iter_mut().find(|stream| {
            stream.next > 0
                && if tolerant {
                    first.abs_diff(stream.next) < count.max(stream.window).max(1)
                } else {
                    first == stream.next
                }
        });
        if let Some(stream) = continued {
            stream.window = (stream.window * 2).clamp(READ_AHEAD_START, READ_AHEAD_MAX);
            stream.next = stream.next.max(end);
            stream.used = self.reads;
            self.window = stream.window;
            return true;
        }
        let oldest = self.streams[..followed]
            .iter_mut()
            .min_by_key(|stream| stream.used)
            .expect("STREAMS > 0");
        *oldest = Stream {
            next: end,
            window: 0,
            used: self.reads,
        };
        self.window = 0;
        false
    }

    /// Keeps the whole blocks of `data`, read from `first`, in the cache.
    fn keep_whole_blocks(&mut self, first: u64, data: &[u8]) {
        for (index, chunk) in data.chunks(BLOCK_SIZE).enumerate() {
            if chunk.len() == BLOCK_SIZE {
                self.keep(first + index as u64, chunk);
            }
        }
    }

    /// Caches up to `bytes` of `inner`'s blocks (rounded down to whole
    /// blocks; zero caches nothing and reads through). The arena is
    /// allocated now; when the memory is not there, nothing is cached
    /// ([`CachedDevice::capacity_bytes`] says so) rather than failing.
    pub fn new(inner: D, bytes: u64) -> CachedDevice<D> {
        let slots = usize::try_from(bytes / BLOCK_SIZE as u64).unwrap_or(usize::MAX);
        let mut arena: Vec<[u8; BLOCK_SIZE]> = Vec::new();
        let mut uses = Vec::new();
        let slots = match (
            arena.try_reserve_exact(slots),
            uses.try_reserve_exact(slots),
        ) {
            (Ok(()), Ok(())) => slots,
            _ => 0,
        };
        arena.resize(slots, [0u8; BLOCK_SIZE]);
        let unused = Use {
            block: 0,
            newer: NONE,
            older: NONE,
        };
        uses.resize(slots, unused);
        CachedDevice {
            inner,
            free: (0..slots).rev().collect(),
            arena,
            map: BTreeMap::new(),
            uses,
            newest: NONE,
            oldest: NONE,
            streams: [Stream::default(); STREAMS],
            window: 0,
            reads: 0,
            counters: CacheCounters::default(),
            refuse_waits: false,
            park_streams: false,
            wanted: None,
            fills_pending: 0,
            written_meanwhile: Some(Vec::new()),
            read_buffer: None,
            kept: None,
            under_way: Vec::new(),
            spares: Vec::new(),
        }
    }

    /// Keeps the buffer of a read with read-ahead (up to a request plus
    /// [`READ_AHEAD_MAX`] blocks) for the next one, instead of allocating
    /// and zeroing a fresh one each time. For a host with memory to spare
    /// (the hosted server); Xen's domain asks for the room each time, so
    /// a full heap only costs it its read-ahead.
    pub fn keep_read_buffer(&mut self) {
        self.read_buffer.get_or_insert_with(Vec::new);
    }

    /// Whether reads the arena cannot answer fail at once instead of
    /// asking the device (see the module doc). A cache with no room
    /// always reads through.
    pub fn refuse_waits(&mut self, refuse: bool) {
        self.refuse_waits = refuse && !self.arena.is_empty();
    }

    /// Whether refusals include a sequential stream's reads (the hosted
    /// server, whose read workers overlap them).
    pub fn park_streams(&mut self, park: bool) {
        self.park_streams = park;
    }

    /// The blocks the last refused read needed (first, count), once. A
    /// count of 0 (only with [`CachedDevice::park_streams`]): every block
    /// it needs that is not cached is being read for a fill announced
    /// before; wait for fills, then try again.
    pub fn take_wanted(&mut self) -> Option<(u64, u64)> {
        self.wanted.take()
    }

    /// The blocks the last refused read needed, not yet taken.
    pub fn wanted(&self) -> Option<(u64, u64)> {
        self.wanted
    }

    /// A read for a later [`CachedDevice::fill`] is under way: from now
    /// on, blocks written are left alone by that fill.
    pub fn fill_started(&mut self) {
        if self.fills_pending == 0 {
            self.written_meanwhile = Some(Vec::new());
        }
        self.fills_pending += 1;
    }

    /// Keeps `data`, read from the device from block `first` by a read
    /// announced with [`CachedDevice::fill_started`], except the blocks
    /// written since (and blocks past the device); a whole number of
    /// blocks. `None` for `data` abandons the fill (the read failed).
    pub fn fill(&mut self, first: u64, data: Option<&[u8]>) {
        self.fill_arrived(first);
        if let Some(data) = data {
            for (index, chunk) in data.chunks_exact(BLOCK_SIZE).enumerate() {
                let Some(block) = first.checked_add(index as u64) else {
                    break;
                };
                if !self.written_since_announced(block)
                    && block < self.inner.block_count()
                    && !self.map.contains_key(&block)
                {
                    self.keep(block, chunk);
                }
            }
        }
        self.fill_done();
    }

    /// Whether every block of `first..first + count` is cached.
    pub fn holds(&self, first: u64, count: u64) -> bool {
        (0..count).all(|index| {
            first
                .checked_add(index)
                .is_some_and(|block| self.cached(block))
        })
    }

    /// Whether `block` was named by a refusal whose fill is pending.
    fn under_way(&self, block: u64) -> bool {
        self.under_way
            .iter()
            .any(|&(start, count)| block >= start && block - start < count)
    }

    /// The fill of blocks from `first` is made or abandoned: they are no
    /// longer under way.
    fn fill_arrived(&mut self, first: u64) {
        if let Some(index) = self.under_way.iter().position(|&(start, _)| start == first) {
            self.under_way.swap_remove(index);
        }
    }

    /// Whether `block` is in the arena or a kept fill.
    fn cached(&self, block: u64) -> bool {
        self.map.contains_key(&block) || self.kept_block(block).is_some()
    }

    /// The kept fill holding `block` (the newest that does) and its index
    /// there.
    fn kept_block(&self, block: u64) -> Option<(usize, usize)> {
        let kept = self.kept.as_ref()?;
        kept.iter()
            .enumerate()
            .rev()
            .find_map(|(fill, kept)| kept.index_of(block).map(|index| (fill, index)))
    }

    /// Keeps large fills whole instead of copying them into the arena
    /// (the hosted server, whose read workers read a stream's windows
    /// without the lock): a fill of [`KEEP_WHOLE_MIN`] blocks or more
    /// handed over with [`CachedDevice::fill_blocks`] is cached in its own
    /// buffer, up to [`KEPT_FILLS`] of them (their room comes on top of
    /// the arena's: at most a quarter of it each, the most a refused read
    /// names). When one more comes, the oldest retires: its blocks not
    /// read yet are copied into the arena, the others dropped (a stream
    /// has handed them out). A READ's data thus crosses memory once on
    /// the server, from the disk's buffer into the reply.
    pub fn keep_fills(&mut self) {
        self.kept.get_or_insert_with(Vec::new);
    }

    /// A buffer of a retired kept fill, for the next read.
    pub fn take_spare(&mut self) -> Option<Vec<AlignedBlock>> {
        self.spares.pop()
    }

    /// [`CachedDevice::fill`] with the read's own buffer, `blocks[0]`
    /// being block `first`: kept whole when [`CachedDevice::keep_fills`]
    /// asked for it, the fill is large and nothing in it was written since
    /// it was announced; else copied into the arena as by `fill`, the
    /// buffer kept as a spare.
    pub fn fill_blocks(&mut self, first: u64, mut blocks: Vec<AlignedBlock>) {
        self.fill_arrived(first);
        let past_end = self.inner.block_count().saturating_sub(first);
        blocks.truncate(usize::try_from(past_end).unwrap_or(usize::MAX));
        let count = blocks.len() as u64;
        let untouched = match &self.written_meanwhile {
            Some(ranges) => !ranges.iter().any(|&(start, written)| {
                start < first.saturating_add(count) && first < start.saturating_add(written)
            }),
            None => false,
        };
        let whole = self.kept.is_some()
            && blocks.len() >= KEEP_WHOLE_MIN
            && untouched
            && first.checked_add(count).is_some();
        if !whole {
            self.fill_each(first, &blocks);
            self.spare(blocks);
            return;
        }
        let kept = self.kept.as_mut().expect("checked");
        let retired = (kept.len() >= KEPT_FILLS).then(|| kept.remove(0));
        kept.push(KeptFill {
            first,
            unread: alloc::vec![true; blocks.len()],
            blocks,
        });
        if let Some(retired) = retired {
            self.retire(retired);
        }
        self.fill_done();
    }

    /// [`CachedDevice::fill`] of aligned blocks.
    fn fill_each(&mut self, first: u64, blocks: &[AlignedBlock]) {
        for (index, block) in blocks.iter().enumerate() {
            let Some(number) = first.checked_add(index as u64) else {
                break;
            };
            if !self.written_since_announced(number)
                && number < self.inner.block_count()
                && !self.map.contains_key(&number)
            {
                self.keep(number, &block.0);
            }
        }
        self.fill_done();
    }

    /// Whether `block` was written since the pending fills were announced
    /// (or too much was written to tell).
    fn written_since_announced(&self, block: u64) -> bool {
        match &self.written_meanwhile {
            Some(ranges) => ranges
                .iter()
                .any(|&(start, count)| block >= start && block - start < count),
            None => true,
        }
    }

    /// One announced fill is made or abandoned.
    fn fill_done(&mut self) {
        self.fills_pending = self.fills_pending.saturating_sub(1);
        if self.fills_pending == 0 {
            self.written_meanwhile = Some(Vec::new());
            self.under_way.clear();
        }
    }

    /// Copies a retiring kept fill's unread blocks into the arena.
    fn retire(&mut self, retired: KeptFill) {
        for (index, block) in retired.blocks.iter().enumerate() {
            let number = retired.first + index as u64;
            if retired.unread[index] && !self.map.contains_key(&number) {
                self.keep(number, &block.0);
            }
        }
        self.spare(retired.blocks);
    }

    /// Keeps `blocks` for a later read, when there is room.
    fn spare(&mut self, blocks: Vec<AlignedBlock>) {
        if self.spares.len() < SPARE_BUFFERS && !blocks.is_empty() {
            self.spares.push(blocks);
        }
    }

    /// The device underneath.
    pub fn into_inner(self) -> D {
        self.inner
    }

    /// The device underneath, for its own controls.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Bytes of blocks the cache can hold.
    pub fn capacity_bytes(&self) -> u64 {
        self.arena.len() as u64 * BLOCK_SIZE as u64
    }

    /// What the cache did so far.
    pub fn counters(&self) -> CacheCounters {
        self.counters
    }

    /// Takes `slot` out of the order of use.
    fn unlink(&mut self, slot: usize) {
        let Use { newer, older, .. } = self.uses[slot];
        match newer {
            NONE => self.newest = older,
            newer => self.uses[newer].older = older,
        }
        match older {
            NONE => self.oldest = newer,
            older => self.uses[older].newer = newer,
        }
    }

    /// Puts `slot`, holding `block`, first in the order of use.
    fn link_newest(&mut self, slot: usize, block: u64) {
        self.uses[slot] = Use {
            block,
            newer: NONE,
            older: self.newest,
        };
        match self.newest {
            NONE => self.oldest = slot,
            newest => self.uses[newest].newer = slot,
        }
        self.newest = slot;
    }

    fn touch(&mut self, block: u64) -> Option<usize> {
        let slot = *self.map.get(&block)?;
        if self.newest != slot {
            self.unlink(slot);
            self.link_newest(slot, block);
        }
        Some(slot)
    }

    fn evict(&mut self, block: u64) {
        if let Some(slot) = self.map.remove(&block) {
            self.unlink(slot);
            self.free.push(slot);
        }
    }

    /// Keeps a copy of `data` as `block`'s content.
    fn keep(&mut self, block: u64, data: &[u8]) {
        if self.arena.is_empty() {
            return;
        }
        let slot = match self.touch(block) {
            Some(slot) => slot,
            None => {
                let slot = match self.free.pop() {
                    Some(slot) => slot,
                    None => {
                        let oldest = self.oldest;
                        if oldest == NONE {
                            return;
                        }
                        self.counters.evictions += 1;
                        self.map.remove(&self.uses[oldest].block);
                        self.unlink(oldest);
                        oldest
                    }
                };
                self.map.insert(block, slot);
                self.link_newest(slot, block);
                slot
            }
        };
        self.arena[slot].copy_from_slice(data);
    }

    /// Replaces the cached copies of the blocks from `first` with `data`
    /// (after the device took them), or evicts them (`data` `None`: the
    /// write failed).
    fn written(&mut self, first: u64, count: u64, data: Option<&[u8]>) {
        if self.fills_pending > 0 {
            if let Some(ranges) = &mut self.written_meanwhile {
                if ranges.len() < WRITTEN_MEANWHILE_LIMIT {
                    ranges.push((first, count));
                } else {
                    self.written_meanwhile = None;
                }
            }
        }
        if let Some(kept) = &mut self.kept {
            let end = first.saturating_add(count);
            let mut retired = Vec::new();
            let mut index = 0;
            while index < kept.len() {
                let fill = &mut kept[index];
                let fill_end = fill.first + fill.blocks.len() as u64;
                if fill.first >= end || first >= fill_end {
                    index += 1;
                    continue;
                }
                let Some(data) = data else {
                    // A failed write leaves the blocks unknown: the fill
                    // goes whole.
                    retired.push(kept.remove(index).blocks);
                    continue;
                };
                for block in first.max(fill.first)..end.min(fill_end) {
                    let at = (block - first) as usize * BLOCK_SIZE;
                    let piece = &data[at..(at + BLOCK_SIZE).min(data.len())];
                    let target = &mut fill.blocks[(block - fill.first) as usize].0;
                    target[..piece.len()].copy_from_slice(piece);
                    target[piece.len()..].fill(0);
                }
                index += 1;
            }
            for blocks in retired {
                self.spare(blocks);
            }
        }
        for index in 0..count {
            let block = first + index;
            let Some(&slot) = self.map.get(&block) else {
                continue;
            };
            match data {
                Some(data) => {
                    let at = index as usize * BLOCK_SIZE;
                    let piece = &data[at..(at + BLOCK_SIZE).min(data.len())];
                    self.arena[slot][..piece.len()].copy_from_slice(piece);
                    self.arena[slot][piece.len()..].fill(0);
                }
                None => self.evict(block),
            }
        }
    }
}

impl<D: BlockDevice> BlockDevice for CachedDevice<D> {
    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }

    fn read_block(&mut self, block: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.read_blocks(block, &mut buffer[..])
    }

    fn read_blocks(&mut self, first: u64, buffer: &mut [u8]) -> Result<(), DeviceError> {
        self.read_out(first, Output::Buffer(buffer))
    }

    fn read_blocks_to(
        &mut self,
        first: u64,
        length: usize,
        sink: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<(), DeviceError> {
        self.read_out(first, Output::Sink(length, sink))
    }

    fn write_block(&mut self, block: u64, data: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.write_blocks(block, &data[..])
    }

    fn write_blocks(&mut self, first: u64, data: &[u8]) -> Result<(), DeviceError> {
        let count = data.len().div_ceil(BLOCK_SIZE) as u64;
        let result = self.inner.write_blocks(first, data);
        self.written(first, count, result.is_ok().then_some(data));
        result
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.inner.flush()
    }

    /// The cache writes through, so a flush of the device below covers
    /// every write made through it.
    fn flusher(&mut self) -> Option<alloc::boxed::Box<dyn crate::DeviceFlush>> {
        self.inner.flusher()
    }

    /// As [`CachedDevice::flusher`]: the flush below covers every write.
    fn start_flush(&mut self) -> Result<Option<crate::FlushTicket>, DeviceError> {
        self.inner.start_flush()
    }

    fn poll_flush(&mut self, ticket: crate::FlushTicket) -> Option<Result<(), DeviceError>> {
        self.inner.poll_flush(ticket)
    }
}

/// Where [`CachedDevice`]'s reads put their bytes: the caller's buffer
/// ([`BlockDevice::read_blocks`]) or its sink of `length` bytes
/// ([`BlockDevice::read_blocks_to`]).
enum Output<'b, 's> {
    Buffer(&'b mut [u8]),
    Sink(usize, &'s mut dyn FnMut(usize, &[u8])),
}

impl Output<'_, '_> {
    fn len(&self) -> usize {
        match self {
            Output::Buffer(buffer) => buffer.len(),
            Output::Sink(length, _) => *length,
        }
    }

    /// Hands over `bytes`, which belong at `at` of the range read.
    fn put(&mut self, at: usize, bytes: &[u8]) {
        match self {
            Output::Buffer(buffer) => buffer[at..at + bytes.len()].copy_from_slice(bytes),
            Output::Sink(_, sink) => sink(at, bytes),
        }
    }
}

#[cfg(test)]
impl<D> CachedDevice<D> {
    /// The order of use lists every cached block once, both ways, and no
    /// free slot.
    fn check_order_of_use(&self) {
        let walk = |mut slot: usize, step: fn(&Use) -> usize| {
            let mut slots = Vec::new();
            while slot != NONE {
                assert!(slots.len() < self.uses.len(), "a cycle in the order of use");
                slots.push(slot);
                slot = step(&self.uses[slot]);
            }
            slots
        };
        let forward = walk(self.newest, |used| used.older);
        let mut backward = walk(self.oldest, |used| used.newer);
        backward.reverse();
        assert_eq!(forward, backward);
        assert_eq!(forward.len(), self.map.len());
        assert_eq!(forward.len() + self.free.len(), self.arena.len());
        for &slot in &forward {
            assert_eq!(self.map.get(&self.uses[slot].block), Some(&slot));
            assert!(!self.free.contains(&slot));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemoryDevice;
    use crate::fault::{FaultDevice, FaultPlan};

    /// splitmix64, enough for test sequences.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, limit: u64) -> u64 {
            self.next() % limit
        }
    }

    /// `device.read_blocks` into `buffer`, or (`through_sink`) its
    /// `read_blocks_to` with every piece put where it belongs, checking
    /// that the pieces cover the range once each, in order.
    fn read_either(
        device: &mut CachedDevice<MemoryDevice>,
        first: u64,
        buffer: &mut [u8],
        through_sink: bool,
    ) -> Result<(), DeviceError> {
        if !through_sink {
            return device.read_blocks(first, buffer);
        }
        let mut covered = 0;
        let result = device.read_blocks_to(first, buffer.len(), &mut |at, bytes| {
            assert_eq!(at, covered, "pieces out of order or overlapping");
            buffer[at..at + bytes.len()].copy_from_slice(bytes);
            covered += bytes.len();
        });
        if result.is_ok() {
            assert_eq!(covered, buffer.len(), "pieces missing");
        }
        result
    }

    /// Reads that must not wait, against an uncached device: a refused
    /// read names what it needs; its fill arrives later, with the device's
    /// content from when the read was refused, after random writes; a
    /// read retried after the fill must equal the uncached device's.
    #[test]
    fn refused_reads_filled_later_never_return_stale_data() {
        refused_reads_filled_later(false);
    }

    /// The same with large fills kept whole (the hosted server's way):
    /// streams refused too, larger reads, fills handed over in their own
    /// buffers, so fills are kept, read from, written over and retired.
    #[test]
    fn fills_kept_whole_never_return_stale_data() {
        refused_reads_filled_later(true);
    }

    fn refused_reads_filled_later(kept: bool) {
        let blocks: u64 = if kept { 600 } else { 200 };
        let largest = if kept { 48 } else { 6 };
        let mut refusals = 0;
        let mut checked = 0;
        let mut kept_hits = 0;
        let mut waits = 0;
        for seed in 0..20 {
            let mut random = Random(seed);
            let room = if kept {
                [128, 256, 512, blocks][seed as usize % 4]
            } else {
                [24, 32, 64, blocks][seed as usize % 4]
            };
            let mut plain = MemoryDevice::new(blocks);
            let mut cached = CachedDevice::new(MemoryDevice::new(blocks), room * BLOCK_SIZE as u64);
            cached.refuse_waits(true);
            if kept {
                cached.park_streams(true);
                cached.keep_fills();
            }
            // Fills under way: (first, the device's blocks when refused).
            let mut under_way: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut next = 0;
            for step in 0..2_000 {
                // In kept mode, half the reads continue the last one.
                let first = if kept && random.below(2) == 0 && next < blocks {
                    next
                } else {
                    random.below(blocks)
                };
                let count = 1 + random.below(largest.min(blocks - first));
                next = first + count;
                let length = count as usize * BLOCK_SIZE;
                match random.below(4) {
                    0 => {
                        let fill = random.next() as u8;
                        let data: Vec<u8> = (0..length)
                            .map(|index| fill.wrapping_add(index as u8))
                            .collect();
                        plain.write_blocks(first, &data).unwrap();
                        cached.write_blocks(first, &data).unwrap();
                    }
                    1 if !under_way.is_empty() => {
                        let index = random.below(under_way.len() as u64) as usize;
                        let (start, data) = under_way.swap_remove(index);
                        fill(&mut cached, start, &data, kept);
                    }
                    _ => {
                        let mut expected = alloc::vec![0u8; length];
                        let mut actual = alloc::vec![1u8; length];
                        plain.read_blocks(first, &mut expected).unwrap();
                        let through_sink = random.below(2) == 0;
                        match read_either(&mut cached, first, &mut actual, through_sink) {
                            Ok(()) => assert_eq!(actual, expected, "seed {seed} step {step}"),
                            Err(DeviceError::Io) => {
                                refusals += 1;
                                let (start, wanted) = cached.take_wanted().expect("named");
                                if wanted == 0 {
                                    // Wait: fills under way bring every
                                    // block not cached.
                                    assert!(kept, "only with streams parked");
                                    for block in first..first + count {
                                        assert!(
                                            cached.cached(block)
                                                || under_way.iter().any(|(start, data)| {
                                                    block >= *start
                                                        && block - start
                                                            < (data.len() / BLOCK_SIZE) as u64
                                                }),
                                            "seed {seed} step {step}: block {block} is coming from nowhere"
                                        );
                                    }
                                    waits += 1;
                                    continue;
                                }
                                // What was cached or under way at either
                                // end is left out.
                                assert!(start >= first && start < first + count);
                                assert!(start + wanted >= first + count);
                                assert!(count <= room / REFUSE_FRACTION);
                                assert!(wanted >= 1 && wanted <= room);
                                assert!(start + wanted <= blocks);
                                assert_eq!(cached.take_wanted(), None, "named once");
                                let mut data = alloc::vec![0u8; wanted as usize * BLOCK_SIZE];
                                plain.read_blocks(start, &mut data).unwrap();
                                cached.fill_started();
                                under_way.push((start, data));
                            }
                            Err(error) => panic!("seed {seed} step {step}: {error:?}"),
                        }
                    }
                }
            }
            for (start, data) in under_way.drain(..) {
                fill(&mut cached, start, &data, kept);
            }
            kept_hits += cached.kept.as_ref().map_or(0, |kept| {
                kept.iter()
                    .map(|fill| fill.unread.iter().filter(|unread| !**unread).count())
                    .sum::<usize>()
            });
            cached.check_order_of_use();
            // Everything cached equals the device.
            cached.refuse_waits(false);
            for block in 0..blocks {
                let mut expected = [0u8; BLOCK_SIZE];
                let mut actual = [1u8; BLOCK_SIZE];
                plain.read_block(block, &mut expected).unwrap();
                if cached.holds(block, 1) {
                    cached.read_block(block, &mut actual).unwrap();
                    assert_eq!(actual, expected, "seed {seed} block {block}");
                    checked += 1;
                }
            }
        }
        assert!(refusals > 100, "{refusals} refusals");
        assert!(checked > 0);
        if kept {
            assert!(kept_hits > 0, "no block was read from a kept fill");
            assert!(waits > 0, "no read waited for a fill under way");
        }
    }

    /// Hands a fill over as the server in `kept` mode does (its own
    /// buffer) or as bytes.
    fn fill(cached: &mut CachedDevice<MemoryDevice>, first: u64, data: &[u8], kept: bool) {
        if !kept {
            cached.fill(first, Some(data));
            return;
        }
        let mut blocks = cached.take_spare().unwrap_or_default();
        blocks.clear();
        blocks.extend(
            data.chunks_exact(BLOCK_SIZE)
                .map(|chunk| AlignedBlock(chunk.try_into().expect("whole blocks"))),
        );
        cached.fill_blocks(first, blocks);
    }

    #[test]
    fn a_sequential_stream_is_read_waiting_with_its_read_ahead() {
        let mut cached = CachedDevice::new(MemoryDevice::new(512), 256 * BLOCK_SIZE as u64);
        cached.refuse_waits(true);
        let mut buffer = alloc::vec![0u8; 4 * BLOCK_SIZE];
        // The first read of a stream is refused...
        assert_eq!(cached.read_blocks(100, &mut buffer), Err(DeviceError::Io));
        let (first, count) = cached.take_wanted().unwrap();
        let mut data = alloc::vec![0u8; count as usize * BLOCK_SIZE];
        cached.fill_started();
        cached.inner_mut().read_blocks(first, &mut data).unwrap();
        cached.fill(first, Some(&data));
        cached.read_blocks(100, &mut buffer).unwrap();
        // ...the ones that continue it are read waiting, ahead.
        for step in 1..20u64 {
            cached.read_blocks(100 + 4 * step, &mut buffer).unwrap();
        }
        assert_eq!(cached.take_wanted(), None);
        assert!(cached.counters().read_ahead > 0);
        assert_eq!(cached.counters().refused, 1);
    }

    #[test]
    fn a_cache_without_room_reads_through_even_when_refusing_waits() {
        let mut device = MemoryDevice::new(8);
        device.write_block(3, &[7u8; BLOCK_SIZE]).unwrap();
        let mut cached = CachedDevice::new(device, 0);
        cached.refuse_waits(true);
        let mut buffer = [0u8; BLOCK_SIZE];
        cached.read_block(3, &mut buffer).unwrap();
        assert_eq!(buffer, [7u8; BLOCK_SIZE]);
        assert_eq!(cached.take_wanted(), None);
    }

    #[test]
    fn an_abandoned_fill_keeps_nothing_and_a_write_meanwhile_wins() {
        let mut cached = CachedDevice::new(MemoryDevice::new(16), 16 * BLOCK_SIZE as u64);
        cached.refuse_waits(true);
        let mut buffer = [0u8; BLOCK_SIZE];
        assert_eq!(cached.read_block(5, &mut buffer), Err(DeviceError::Io));
        let (first, count) = cached.take_wanted().unwrap();
        cached.fill_started();
        cached.fill(first, None);
        assert!(!cached.holds(5, 1));
        cached.fill_started();
        cached.write_block(5, &[9u8; BLOCK_SIZE]).unwrap();
        let stale = alloc::vec![1u8; count as usize * BLOCK_SIZE];
        cached.fill(first, Some(&stale));
        cached.refuse_waits(false);
        cached.read_block(5, &mut buffer).unwrap();
        assert_eq!(buffer, [9u8; BLOCK_SIZE], "the write wins over the fill");
    }

    #[test]
    fn the_least_recently_used_block_makes_room() {
        let mut cached = CachedDevice::new(MemoryDevice::new(16), 3 * BLOCK_SIZE as u64);
        let mut buffer = [0u8; BLOCK_SIZE];
        // Apart, so no read is sequential (no read-ahead).
        for block in [0, 4, 8, 0] {
            cached.read_block(block, &mut buffer).unwrap();
        }
        cached.read_block(12, &mut buffer).unwrap();
        assert!(!cached.holds(4, 1), "4 was the least recently used");
        assert!(cached.holds(0, 1) && cached.holds(8, 1) && cached.holds(12, 1));
        cached.write_block(8, &[1u8; BLOCK_SIZE]).unwrap();
        cached.read_block(2, &mut buffer).unwrap();
        assert!(
            !cached.holds(8, 1),
            "a write is no use: 8 stayed the oldest"
        );
        assert!(cached.holds(0, 1) && cached.holds(12, 1) && cached.holds(2, 1));
        assert_eq!(cached.counters().evictions, 2);
        cached.check_order_of_use();
    }

    #[test]
    fn random_reads_and_writes_match_an_uncached_device() {
        const BLOCKS: u64 = 300;
        for seed in 0..20 {
            let mut random = Random(seed);
            // From no room, through room for a few blocks, to all of them.
            let room = [0, 1, 7, 64, BLOCKS + 10][seed as usize % 5];
            let mut plain = MemoryDevice::new(BLOCKS);
            let mut cached = CachedDevice::new(MemoryDevice::new(BLOCKS), room * BLOCK_SIZE as u64);
            // Half the seeds reuse one buffer for the reads with
            // read-ahead (the hosted server's setting), whose windows
            // grow and shrink under it.
            if seed % 2 == 1 {
                cached.keep_read_buffer();
            }
            let mut next = 0;
            for step in 0..2_000 {
                // Every other request continues the last one: read-ahead.
                let first = if random.below(2) == 0 && next < BLOCKS {
                    next
                } else {
                    random.below(BLOCKS)
                };
                let count = 1 + random.below(12.min(BLOCKS - first));
                let mut length = count as usize * BLOCK_SIZE;
                if random.below(4) == 0 {
                    // A partial last block.
                    length -= random.below(BLOCK_SIZE as u64) as usize;
                }
                match random.below(3) {
                    0 => {
                        let fill = random.next() as u8;
                        let data: Vec<u8> = (0..length)
                            .map(|index| fill.wrapping_add(index as u8))
                            .collect();
                        plain.write_blocks(first, &data).unwrap();
                        cached.write_blocks(first, &data).unwrap();
                    }
                    _ => {
                        let mut expected = alloc::vec![0u8; length];
                        let mut actual = alloc::vec![1u8; length];
                        plain.read_blocks(first, &mut expected).unwrap();
                        let through_sink = random.below(2) == 0;
                        read_either(&mut cached, first, &mut actual, through_sink).unwrap();
                        assert_eq!(actual, expected, "seed {seed} step {step}");
                        next = first + count;
                        if step % 97 == 0 {
                            cached.check_order_of_use();
                        }
                    }
                }
            }
            let counters = cached.counters();
            if room >= 64 {
                assert!(counters.hits > 0, "seed {seed}: no hit: {counters:?}");
                assert!(
                    counters.read_ahead > 0,
                    "seed {seed}: no read-ahead: {counters:?}"
                );
            }
            assert!(cached.map.len() as u64 <= room);
            cached.check_order_of_use();
            assert_eq!(cached.into_inner().to_image(), plain.to_image());
        }
    }

    #[test]
    fn sequential_reads_read_ahead_and_then_hit() {
        let mut device = CachedDevice::new(MemoryDevice::new(4_096), 2 << 20);
        let mut buffer = alloc::vec![0u8; 8 * BLOCK_SIZE];
        for chunk in 0..64 {
            device.read_blocks(chunk * 8, &mut buffer).unwrap();
        }
        let counters = device.counters();
        assert!(counters.read_ahead > 0, "{counters:?}");
        // Most of the 512 blocks came from blocks read ahead.
        assert!(counters.hits >= 400, "{counters:?}");
        // A random read does not read ahead.
        let before = device.counters().read_ahead;
        device.read_blocks(3_000, &mut buffer).unwrap();
        assert_eq!(device.counters().read_ahead, before);
        // Never past the device's end.
        let mut last = [0u8; BLOCK_SIZE];
        for block in 4_090..4_096 {
            device.read_block(block, &mut last).unwrap();
        }
        assert_eq!(
            device.read_block(4_096, &mut last),
            Err(DeviceError::OutOfRange)
        );
    }

    #[test]
    fn a_failed_write_drops_the_cached_copy() {
        let mut device = MemoryDevice::new(16);
        device.write_block(3, &[7u8; BLOCK_SIZE]).unwrap();
        let faulty = FaultDevice::new(device, FaultPlan::parse("tear=1").unwrap());
        let control = faulty.control();
        let mut cached = CachedDevice::new(faulty, 16 * BLOCK_SIZE as u64);
        let mut buffer = [0u8; BLOCK_SIZE];
        cached.read_block(3, &mut buffer).unwrap();
        assert_eq!(buffer, [7u8; BLOCK_SIZE]);
        // The device tears the write and fails it: the block holds neither
        // for sure, so the next read asks the device.
        control.arm();
        assert!(cached.write_blocks(2, &[9u8; 2 * BLOCK_SIZE]).is_err());
        control.disarm();
        let misses = cached.counters().misses;
        cached.read_block(3, &mut buffer).unwrap();
        assert_eq!(cached.counters().misses, misses + 1);
        let mut direct = [0u8; BLOCK_SIZE];
        cached.inner_mut().read_block(3, &mut direct).unwrap();
        assert_eq!(buffer, direct);
    }
}
