//! `sdfs`: the storage domain's copy-on-write on-disk file system.
//!
//! The storage domain is a no_std unikernel, so it brings its own file
//! system; the no_std candidates were measured and lose data (see
//! `docs/disk-format.md`). This one is built for serving NFS: inode numbers
//! with generations for stable handles, a change counter per inode for the
//! shared attribute table, nanosecond times, readdir cookies that survive
//! concurrent changes, and group commit with ordering that rests only on the
//! device's flush.
//!
//! Nothing already committed is ever overwritten: a commit writes every
//! changed record, index node and data block to space that the last
//! committed state does not use, flushes, then writes the next of two
//! superblocks and flushes again. A crash at any point therefore leaves the
//! previous commit or the new one, never a mix. The byte layout is
//! specified in `docs/disk-format.md`.
//!
//! Every byte read from the device is untrusted: damaged or foreign images
//! give [`vfs::FsError::Corrupt`] naming what is wrong, never a panic.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod bitmap;
pub mod block_cache;
mod checksum;
mod codec;
pub mod device;
pub mod fault;
mod file_map;
mod fsck;
mod layout;
mod operations;
mod record;
mod snapshot;
mod volume;

pub use block_cache::{CacheCounters, CachedDevice};
pub use checksum::crc32c;
pub use fault::{FaultControl, FaultDevice, FaultPlan, FaultSpecError};
pub use fsck::{fsck, FsckReport};
pub use layout::{BLOCK_SIZE, MAX_INODES};
pub use snapshot::{SnapshotInfo, MAX_OPEN_VIEWS, MAX_SNAPSHOTS};
pub use volume::{FormatOptions, Volume, MIN_BLOCKS};

use alloc::boxed::Box;
use core::fmt;

/// A block-addressed device: an image file, a Xen virtual disk, or a test
/// double. Blocks are [`BLOCK_SIZE`] bytes.
///
/// Writes may reach the medium in any order and may be lost until
/// [`BlockDevice::flush`] returns: that barrier is the only ordering the
/// file system relies on.
pub trait BlockDevice {
    /// Blocks on the device.
    fn block_count(&self) -> u64;

    /// Read one block.
    ///
    /// # Errors
    /// [`DeviceError`] when the device fails or `block` is out of range.
    fn read_block(&mut self, block: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError>;

    /// Read consecutive blocks from `first` into `buffer` (a whole number
    /// of blocks). Devices that can do it in one request override this.
    ///
    /// # Errors
    /// [`DeviceError`] when the device fails or a block is out of range.
    fn read_blocks(&mut self, first: u64, buffer: &mut [u8]) -> Result<(), DeviceError> {
        let mut block = [0u8; BLOCK_SIZE];
        for (index, chunk) in buffer.chunks_mut(BLOCK_SIZE).enumerate() {
            self.read_block(first + index as u64, &mut block)?;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        Ok(())
    }

    /// Read `length` bytes of consecutive blocks from `first` (`length`
    /// need not be a whole number of blocks), handing them to `sink` in
    /// order as pieces with their offset in the range, instead of into a
    /// buffer of the caller's: a device that holds blocks in memory (the
    /// data cache) hands its own copies over, so a reader whose bytes go
    /// elsewhere (a guest's data pages) saves a pass over them. The
    /// default reads into a buffer and hands it over whole.
    ///
    /// # Errors
    /// As [`BlockDevice::read_blocks`]; `sink` may have been given part of
    /// the range.
    fn read_blocks_to(
        &mut self,
        first: u64,
        length: usize,
        sink: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<(), DeviceError> {
        let mut buffer = alloc::vec![0u8; length];
        self.read_blocks(first, &mut buffer)?;
        sink(0, &buffer);
        Ok(())
    }

    /// Write one block (not durable until the next flush). A device may
    /// return before the write completes; it then reports a failure of
    /// the write by failing the next flush, and a later read of the block
    /// returns what was written.
    ///
    /// # Errors
    /// [`DeviceError`] when the device fails or `block` is out of range.
    fn write_block(&mut self, block: u64, data: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError>;

    /// Write consecutive blocks from `first` (a whole number of blocks;
    /// not durable until the next flush). Devices that can do it in one
    /// request override this.
    ///
    /// # Errors
    /// [`DeviceError`] when the device fails or a block is out of range.
    fn write_blocks(&mut self, first: u64, data: &[u8]) -> Result<(), DeviceError> {
        let mut block = [0u8; BLOCK_SIZE];
        for (index, chunk) in data.chunks(BLOCK_SIZE).enumerate() {
            block.fill(0);
            block[..chunk.len()].copy_from_slice(chunk);
            self.write_block(first + index as u64, &block)?;
        }
        Ok(())
    }

    /// Make every write issued so far durable before any later write.
    ///
    /// # Errors
    /// [`DeviceError`] when the device fails.
    fn flush(&mut self) -> Result<(), DeviceError>;

    /// A handle that flushes this device from another thread, while the
    /// device itself goes on serving reads and writes: a flush through it
    /// covers every write the device had completed when the flush began.
    /// With one, [`Volume::commit_begin`] lets a commit's flushes run
    /// without the volume. `None` (the default) keeps every commit whole:
    /// the device is flushed through `&mut self`.
    fn flusher(&mut self) -> Option<Box<dyn DeviceFlush>> {
        None
    }

    /// Start a flush that completes while the caller goes on, for a
    /// single-threaded caller that must not wait for the device (the Xen
    /// domain's poll loop): it covers every write issued before it (a
    /// device whose writes return before they complete, Xen's blkfront,
    /// holds the flush back until they have), and
    /// [`BlockDevice::poll_flush`] tells when it has. Reads, writes and
    /// plain flushes may be issued meanwhile.
    /// Returns its ticket, or `None` (the default) for a device without
    /// such flushes: the caller then flushes through
    /// [`BlockDevice::flush`].
    ///
    /// # Errors
    /// [`DeviceError`] when the device fails.
    fn start_flush(&mut self) -> Result<Option<FlushTicket>, DeviceError> {
        Ok(None)
    }

    /// How the flush `ticket` ([`BlockDevice::start_flush`]) stands,
    /// without waiting: `None` while it runs, then its outcome, once. A
    /// ticket this device never issued, or one already reported, fails.
    fn poll_flush(&mut self, ticket: FlushTicket) -> Option<Result<(), DeviceError>> {
        let _ = ticket;
        Some(Err(DeviceError::Io))
    }
}

/// A flush started by [`BlockDevice::start_flush`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlushTicket(pub u64);

/// A device's flush, detached from the device ([`BlockDevice::flusher`]).
pub trait DeviceFlush: Send {
    /// Make every write the device completed before this call durable.
    ///
    /// # Errors
    /// [`DeviceError`] when the device fails.
    fn flush(&mut self) -> Result<(), DeviceError>;
}

impl<T: BlockDevice + ?Sized> BlockDevice for &mut T {
    fn block_count(&self) -> u64 {
        (**self).block_count()
    }

    fn read_block(&mut self, block: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        (**self).read_block(block, buffer)
    }

    fn read_blocks(&mut self, first: u64, buffer: &mut [u8]) -> Result<(), DeviceError> {
        (**self).read_blocks(first, buffer)
    }

    fn read_blocks_to(
        &mut self,
        first: u64,
        length: usize,
        sink: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<(), DeviceError> {
        (**self).read_blocks_to(first, length, sink)
    }

    fn write_block(&mut self, block: u64, data: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        (**self).write_block(block, data)
    }

    fn write_blocks(&mut self, first: u64, data: &[u8]) -> Result<(), DeviceError> {
        (**self).write_blocks(first, data)
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        (**self).flush()
    }

    fn flusher(&mut self) -> Option<Box<dyn DeviceFlush>> {
        (**self).flusher()
    }

    fn start_flush(&mut self) -> Result<Option<FlushTicket>, DeviceError> {
        (**self).start_flush()
    }

    fn poll_flush(&mut self, ticket: FlushTicket) -> Option<Result<(), DeviceError>> {
        (**self).poll_flush(ticket)
    }
}

/// Why a block device operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// The block number is past the end of the device.
    OutOfRange,
    /// The device reported an I/O error.
    Io,
}

impl fmt::Display for DeviceError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::OutOfRange => formatter.write_str("block out of range"),
            DeviceError::Io => formatter.write_str("device I/O error"),
        }
    }
}

impl core::error::Error for DeviceError {}
