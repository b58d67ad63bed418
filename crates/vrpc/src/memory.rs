//! The two platform abstractions the ring logic runs on: a region of memory
//! shared with another domain ([`SharedMemory`]) and the notification that
//! wakes the peer ([`Doorbell`]).
//!
//! Design: the peer may write any byte of a shared region at any moment, so
//! the ring code never holds a `&`/`&mut` into it (rust-vmm `vm-memory`, the
//! house STYLE "Shared memory and unsafe"). Every access goes through this
//! trait: single-word atomic loads and stores for indices and sequence
//! counters, and copies in or out for everything else. What is copied out is
//! then validated in private memory; nothing is read twice. Every method
//! bounds-checks and returns [`OutOfBounds`] instead of touching memory
//! outside the region, so a protocol bug can never become a stray access.
//!
//! Platforms implement the trait over real memory (the hosted memfd mapping
//! in `vrpc-hosted`, granted pages in the Xen storage domain); those
//! implementations hold the `unsafe`. This crate's own implementation, for
//! `[AtomicU32]`, is entirely safe: host tests, Miri and fuzzing use it.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

/// An access that would fall outside a shared region, or a misaligned word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBounds {
    /// Byte offset of the refused access.
    pub offset: usize,
    /// Its length in bytes.
    pub length: usize,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "shared-memory access of {} bytes at offset {} is outside the region or misaligned",
            self.length, self.offset
        )
    }
}

impl core::error::Error for OutOfBounds {}

/// Memory shared with a peer that may write it concurrently.
///
/// Word accesses are atomic (the peer sees either the old or the new value);
/// byte copies are not, so whatever they return is untrusted and must be
/// validated after the copy.
pub trait SharedMemory {
    /// Size of the region in bytes.
    fn size(&self) -> usize;

    /// Atomically loads the 32-bit little-endian word at `offset`, which must
    /// be a multiple of 4.
    ///
    /// # Errors
    /// [`OutOfBounds`] when the word is misaligned or outside the region.
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds>;

    /// Atomically stores `value` as the 32-bit little-endian word at
    /// `offset`, a multiple of 4.
    ///
    /// # Errors
    /// [`OutOfBounds`] when the word is misaligned or outside the region.
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds>;

    /// Copies `destination.len()` bytes starting at `offset` out of the
    /// region.
    ///
    /// # Errors
    /// [`OutOfBounds`] when the range leaves the region.
    fn read(&self, offset: usize, destination: &mut [u8]) -> Result<(), OutOfBounds>;

    /// Appends the `length` bytes starting at `offset` to `destination`
    /// ([`SharedMemory::read`] into new room: an implementation may skip
    /// zeroing that room first). On error `destination` is unchanged.
    ///
    /// # Errors
    /// [`OutOfBounds`] when the range leaves the region.
    fn read_append(
        &self,
        offset: usize,
        length: usize,
        destination: &mut alloc::vec::Vec<u8>,
    ) -> Result<(), OutOfBounds> {
        check_range(self.size(), offset, length)?;
        let start = destination.len();
        destination.resize(start + length, 0);
        let result = self.read(offset, &mut destination[start..]);
        if result.is_err() {
            destination.truncate(start);
        }
        result
    }

    /// Copies `source` into the region starting at `offset`.
    ///
    /// # Errors
    /// [`OutOfBounds`] when the range leaves the region.
    fn write(&self, offset: usize, source: &[u8]) -> Result<(), OutOfBounds>;
}

impl<T: SharedMemory + ?Sized> SharedMemory for &T {
    fn size(&self) -> usize {
        (**self).size()
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        (**self).load_u32(offset, order)
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        (**self).store_u32(offset, value, order)
    }
    fn read(&self, offset: usize, destination: &mut [u8]) -> Result<(), OutOfBounds> {
        (**self).read(offset, destination)
    }
    fn read_append(
        &self,
        offset: usize,
        length: usize,
        destination: &mut alloc::vec::Vec<u8>,
    ) -> Result<(), OutOfBounds> {
        (**self).read_append(offset, length, destination)
    }
    fn write(&self, offset: usize, source: &[u8]) -> Result<(), OutOfBounds> {
        (**self).write(offset, source)
    }
}

impl<T: SharedMemory + ?Sized> SharedMemory for alloc::sync::Arc<T> {
    fn size(&self) -> usize {
        (**self).size()
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        (**self).load_u32(offset, order)
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        (**self).store_u32(offset, value, order)
    }
    fn read(&self, offset: usize, destination: &mut [u8]) -> Result<(), OutOfBounds> {
        (**self).read(offset, destination)
    }
    fn read_append(
        &self,
        offset: usize,
        length: usize,
        destination: &mut alloc::vec::Vec<u8>,
    ) -> Result<(), OutOfBounds> {
        (**self).read_append(offset, length, destination)
    }
    fn write(&self, offset: usize, source: &[u8]) -> Result<(), OutOfBounds> {
        (**self).write(offset, source)
    }
}

/// Checks that `offset..offset + length` lies within `size` bytes.
pub fn check_range(size: usize, offset: usize, length: usize) -> Result<(), OutOfBounds> {
    match offset.checked_add(length) {
        Some(end) if end <= size => Ok(()),
        _ => Err(OutOfBounds { offset, length }),
    }
}

/// Checks a word access: in bounds and 4-aligned.
pub fn check_word(size: usize, offset: usize) -> Result<(), OutOfBounds> {
    if !offset.is_multiple_of(4) {
        return Err(OutOfBounds { offset, length: 4 });
    }
    check_range(size, offset, 4)
}

/// Safe shared memory over atomic words: the host twin of a mapped region.
///
/// Threads of one process share it the way two domains share pages; byte
/// copies are word-by-word relaxed atomics (a partial word is updated with a
/// compare-and-swap so a neighbour's bytes in the same word survive).
impl SharedMemory for [AtomicU32] {
    fn size(&self) -> usize {
        self.len() * 4
    }

    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        check_word(SharedMemory::size(self), offset)?;
        // Store words as little-endian byte images so byte copies and word
        // accesses agree on every host.
        Ok(u32::from_le(self[offset / 4].load(order)))
    }

    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        check_word(SharedMemory::size(self), offset)?;
        self[offset / 4].store(value.to_le(), order);
        Ok(())
    }

    fn read(&self, offset: usize, destination: &mut [u8]) -> Result<(), OutOfBounds> {
        check_range(SharedMemory::size(self), offset, destination.len())?;
        for (index, byte) in destination.iter_mut().enumerate() {
            let position = offset + index;
            let word = self[position / 4].load(Ordering::Relaxed).to_ne_bytes();
            *byte = word[position % 4];
        }
        Ok(())
    }

    fn write(&self, offset: usize, source: &[u8]) -> Result<(), OutOfBounds> {
        check_range(SharedMemory::size(self), offset, source.len())?;
        let mut index = 0;
        while index < source.len() {
            let position = offset + index;
            let word = &self[position / 4];
            let first = position % 4;
            let count = (4 - first).min(source.len() - index);
            if count == 4 {
                let bytes = [
                    source[index],
                    source[index + 1],
                    source[index + 2],
                    source[index + 3],
                ];
                word.store(u32::from_ne_bytes(bytes), Ordering::Relaxed);
            } else {
                let chunk = &source[index..index + count];
                // The closure always returns Some, so the update cannot fail.
                let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    let mut bytes = old.to_ne_bytes();
                    bytes[first..first + count].copy_from_slice(chunk);
                    Some(u32::from_ne_bytes(bytes))
                });
            }
            index += count;
        }
        Ok(())
    }
}

/// Wakes the peer: an event channel on Xen, an eventfd when hosted.
///
/// Notifications carry no data and may be coalesced; the ring indices say
/// what happened.
pub trait Doorbell {
    /// Signals the peer.
    fn notify(&self);
}

impl<T: Doorbell + ?Sized> Doorbell for &T {
    fn notify(&self) {
        (**self).notify();
    }
}

impl<T: Doorbell + ?Sized> Doorbell for alloc::sync::Arc<T> {
    fn notify(&self) {
        (**self).notify();
    }
}

/// A doorbell that counts rings: for tests and for polling peers.
#[derive(Debug, Default)]
pub struct CountingDoorbell {
    rings: AtomicU32,
}

impl CountingDoorbell {
    /// A doorbell that has not rung.
    pub const fn new() -> Self {
        Self {
            rings: AtomicU32::new(0),
        }
    }

    /// How often it rang.
    pub fn rings(&self) -> u32 {
        self.rings.load(Ordering::Acquire)
    }
}

impl Doorbell for CountingDoorbell {
    fn notify(&self) {
        self.rings.fetch_add(1, Ordering::AcqRel);
    }
}
