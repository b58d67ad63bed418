//! Shared memory as a memfd mapped `MAP_SHARED`: the hosted twin of granted
//! pages.
//!
//! Design: this is the one module of the hosted transport with `unsafe`.
//! [`MappedRegion`] owns the mapping for as long as it lives (Tock's
//! `DmaSlice` habit: the buffer a peer may touch is owned by a wrapper) and
//! implements [`vrpc::SharedMemory`] with atomic word accesses and copies
//! the compiler cannot see into (`copy_shared`: like volatile accesses, at
//! `memcpy`'s speed) at bounds-checked offsets; no `&[u8]` or `&mut [u8]` to the
//! mapping ever exists. A region received from a peer is mapped only when
//! the peer sealed it against shrinking (`F_SEAL_SHRINK`): otherwise the
//! peer could truncate the memfd and turn our next access into `SIGBUS`.
//! [`MappedRegion::map_device`] maps a Xen grant device instead (used by
//! `xen-linux`), so granted pages get the same accessors.

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use vrpc::memory::{check_range, check_word};
use vrpc::{OutOfBounds, SharedMemory};

/// A memfd mapped into this process, shared with a peer.
#[derive(Debug)]
pub struct MappedRegion {
    pointer: NonNull<u8>,
    length: usize,
    writable: bool,
    file: OwnedFd,
}

// SAFETY: the mapping is plain memory owned by this value until `Drop`; all
// accesses go through atomic operations or opaque copies at checked
// offsets, which are sound from any thread (the peer writes it concurrently
// anyway, so threads of this process add nothing new).
unsafe impl Send for MappedRegion {}
// SAFETY: as for `Send`: `&MappedRegion` only offers atomic accesses and
// opaque copies.
unsafe impl Sync for MappedRegion {}

fn errno(error: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(error as i32)
}

impl MappedRegion {
    /// Creates a zeroed memfd of `length` bytes (a multiple of the page
    /// size), sealed against shrinking and growing, and maps it read-write.
    ///
    /// # Errors
    /// The system call that failed.
    pub fn create(name: &str, length: usize) -> io::Result<Self> {
        let file = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
            .map_err(errno)?;
        let file = File::from(file);
        file.set_len(length as u64)?;
        let file = OwnedFd::from(file);
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
        )
        .map_err(errno)?;
        Self::map_checked(file, length, true)
    }

    /// Maps a region a peer sent. It must be a memfd sealed with
    /// `F_SEAL_SHRINK` and at least `length` bytes long.
    ///
    /// # Errors
    /// `InvalidInput` when the file is not such a memfd; the system call
    /// that failed otherwise.
    pub fn map_received(file: OwnedFd, length: usize, writable: bool) -> io::Result<Self> {
        let seals = fcntl(&file, FcntlArg::F_GET_SEALS).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "shared region is not a sealable memfd",
            )
        })?;
        if SealFlag::from_bits_truncate(seals).contains(SealFlag::F_SEAL_SHRINK) {
            Self::map_checked(file, length, writable)
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shared region is not sealed against shrinking",
            ))
        }
    }

    /// Maps `length` bytes of a device file at `offset` `MAP_SHARED`: the
    /// Xen grant devices (`/dev/xen/gntalloc`, `/dev/xen/gntdev`), whose
    /// ioctls hand out the offset. No memfd seal or size check applies: the
    /// device backs exactly the pages its ioctl set up at that offset, and
    /// refuses the mapping otherwise. `writable` false maps `PROT_READ`
    /// only (for gntdev this makes the grant mapping read-only).
    ///
    /// The region owns `file` and unmaps before closing it.
    ///
    /// # Errors
    /// `InvalidInput` for an empty region or an offset past `off_t`; the
    /// `mmap` failure otherwise.
    pub fn map_device(
        file: OwnedFd,
        offset: u64,
        length: usize,
        writable: bool,
    ) -> io::Result<Self> {
        let Some(nonzero) = NonZeroUsize::new(length) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty shared region",
            ));
        };
        let offset = nix::libc::off_t::try_from(offset).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "device offset does not fit off_t",
            )
        })?;
        let protection = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), so
        // it aliases nothing of ours; the device driver backs the pages for
        // as long as the mapping exists (it refuses `mmap` of an offset it
        // did not hand out), and the mapping is only ever accessed through
        // the atomic and copying accessors below.
        let pointer = unsafe {
            mmap(
                None,
                nonzero,
                protection,
                MapFlags::MAP_SHARED,
                &file,
                offset,
            )
        }
        .map_err(errno)?;
        Ok(Self {
            pointer: pointer.cast(),
            length,
            writable,
            file,
        })
    }

    fn map_checked(file: OwnedFd, length: usize, writable: bool) -> io::Result<Self> {
        let size = File::from(file.try_clone()?).metadata()?.len();
        if size < length as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shared region smaller than announced",
            ));
        }
        let Some(nonzero) = NonZeroUsize::new(length) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty shared region",
            ));
        };
        let protection = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), so
        // it aliases nothing of ours; the file is at least `length` bytes
        // and sealed against shrinking, so every page stays backed for the
        // mapping's lifetime.
        let pointer = unsafe { mmap(None, nonzero, protection, MapFlags::MAP_SHARED, &file, 0) }
            .map_err(errno)?;
        Ok(Self {
            pointer: pointer.cast(),
            length,
            writable,
            file,
        })
    }

    /// Forbids every future writable mapping and `write(2)` of the memfd
    /// (`F_SEAL_FUTURE_WRITE`), keeping this process's own mapping writable:
    /// peers handed the file can only read it.
    ///
    /// # Errors
    /// The `fcntl` failure (Linux before 5.1 lacks the seal).
    pub fn seal_for_readers(&self) -> io::Result<()> {
        fcntl(
            &self.file,
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_FUTURE_WRITE | SealFlag::F_SEAL_SEAL),
        )
        .map_err(errno)?;
        Ok(())
    }

    /// The memfd, to send to a peer.
    pub fn file(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Whether this process may write the region.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Copies the region's bytes from `offset` into every byte of
    /// `destination`, which the caller checked lies inside the region
    /// (see [`copy_shared`]: the peer's concurrent writes yield garbage
    /// values, never undefined control flow; the copy is validated later).
    fn copy_out(&self, offset: usize, destination: &mut [MaybeUninit<u8>]) {
        // SAFETY: the caller checked `offset + destination.len()` against
        // the live mapping; `destination` is private memory of that
        // length, and `MaybeUninit` bytes may be written with anything.
        unsafe {
            copy_shared(
                self.pointer.as_ptr().add(offset),
                destination.as_mut_ptr().cast::<u8>(),
                destination.len(),
            );
        }
    }

    /// The word at `offset`, which `check_word` accepted.
    fn word(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: `offset + 4 <= length` and `offset % 4 == 0` (checked by
        // the callers through `check_word`); the mapping is page-aligned, so
        // the pointer is aligned for `AtomicU32` and inside the live mapping
        // owned by `self`, which outlives the returned reference. An
        // `AtomicU32` is an `UnsafeCell`: the shared reference promises no
        // immutability, and every access through it is an atomic operation,
        // which is what concurrent writes by the peer require.
        unsafe { AtomicU32::from_ptr(self.pointer.as_ptr().add(offset).cast::<u32>()) }
    }
}

/// Copies `length` bytes from `source` to `target`, one of which is the
/// shared mapping, as an access the compiler cannot see into: it neither
/// elides, merges nor repeats it, nor assumes anything about the bytes, so
/// a peer writing the mapping meanwhile yields garbage values, never
/// undefined control flow (what volatile accesses promise). On x86_64 it
/// is one `rep movsb` in inline assembly, which runs at `memcpy`'s speed
/// on processors with fast string moves (ERMS, every x86_64 since 2013):
/// the volatile word loop it replaced took about 1.4 times as long as
/// `memcpy` for the 1 MiB copies of a READ's data, measured with `perf`
/// on a sequential read through a hosted mount. Elsewhere, volatile
/// accesses: bytes up to an 8-byte boundary of `target`, then words.
///
/// # Safety
/// Both ranges are valid for `length` bytes (`target` for writes) and do
/// not overlap.
unsafe fn copy_shared(source: *const u8, target: *mut u8, length: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `rep movsb` copies `rcx` bytes from `rsi` to `rdi` upwards
    // (the direction flag is clear on entry, as the ABI requires), touching
    // only the two ranges, which the caller vouches for; it uses no stack
    // and leaves the flags alone.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") length => _,
            inout("rsi") source => _,
            inout("rdi") target => _,
            options(nostack, preserves_flags),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: every access lies in the ranges the caller vouches for; the
    // words are written 8-aligned (the loop before aligns `target`) and
    // read as byte arrays, which need no alignment.
    unsafe {
        let mut index = 0;
        while index < length && !(target as usize + index).is_multiple_of(8) {
            target
                .add(index)
                .write_volatile(source.add(index).read_volatile());
            index += 1;
        }
        while index + 8 <= length {
            let bytes = source.add(index).cast::<[u8; 8]>().read_volatile();
            target
                .add(index)
                .cast::<u64>()
                .write_volatile(u64::from_ne_bytes(bytes));
            index += 8;
        }
        while index < length {
            target
                .add(index)
                .write_volatile(source.add(index).read_volatile());
            index += 1;
        }
    }
}

impl Drop for MappedRegion {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `map_checked` with this length
        // and nothing refers into it once `self` is gone (no references ever
        // escape a method call).
        let _ = unsafe { munmap(self.pointer.cast(), self.length) };
    }
}

impl SharedMemory for MappedRegion {
    fn size(&self) -> usize {
        self.length
    }

    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        check_word(self.length, offset)?;
        Ok(u32::from_le(self.word(offset).load(order)))
    }

    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        check_word(self.length, offset)?;
        if !self.writable {
            return Err(OutOfBounds { offset, length: 4 });
        }
        self.word(offset).store(value.to_le(), order);
        Ok(())
    }

    fn read(&self, offset: usize, destination: &mut [u8]) -> Result<(), OutOfBounds> {
        check_range(self.length, offset, destination.len())?;
        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and `copy_out`
        // only stores initialised bytes, so `destination` stays valid.
        let room = unsafe { &mut *(std::ptr::from_mut(destination) as *mut [MaybeUninit<u8>]) };
        self.copy_out(offset, room);
        Ok(())
    }

    fn read_append(
        &self,
        offset: usize,
        length: usize,
        destination: &mut Vec<u8>,
    ) -> Result<(), OutOfBounds> {
        check_range(self.length, offset, length)?;
        destination.reserve(length);
        let start = destination.len();
        self.copy_out(offset, &mut destination.spare_capacity_mut()[..length]);
        // SAFETY: `reserve` made room for `length` more bytes and
        // `copy_out` initialised all `length` of them.
        unsafe { destination.set_len(start + length) };
        Ok(())
    }

    fn write(&self, offset: usize, source: &[u8]) -> Result<(), OutOfBounds> {
        check_range(self.length, offset, source.len())?;
        if !self.writable {
            return Err(OutOfBounds {
                offset,
                length: source.len(),
            });
        }
        // SAFETY: the range was checked to lie inside the live, writable
        // mapping; `source` is private memory of that length.
        unsafe {
            copy_shared(
                source.as_ptr(),
                self.pointer.as_ptr().add(offset),
                source.len(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// `read_append` (the copy into fresh room, not zeroed first) returns
    /// the same bytes as `read` at every alignment and length, after what
    /// the vector held, and refuses a range past the end leaving the
    /// vector as it was.
    #[test]
    fn read_append_matches_read_at_every_alignment() {
        let region = MappedRegion::create("read-append-test", 8192).unwrap();
        let pattern: Vec<u8> = (0..8192u32).map(|index| (index * 7 + 3) as u8).collect();
        region.write(0, &pattern).unwrap();
        for offset in [0, 1, 3, 7, 8, 9, 4095, 4096, 8000] {
            for length in [0, 1, 7, 8, 9, 15, 16, 17, 100, 192 - offset % 5] {
                let mut expected = vec![0u8; length];
                region.read(offset, &mut expected).unwrap();
                assert_eq!(expected, pattern[offset..offset + length]);
                let mut appended = vec![0xee; offset % 3];
                let before = appended.clone();
                region.read_append(offset, length, &mut appended).unwrap();
                assert_eq!(appended[..before.len()], before[..]);
                assert_eq!(appended[before.len()..], expected[..], "{offset}+{length}");
            }
        }
        let mut kept = vec![1, 2, 3];
        assert!(region.read_append(8190, 3, &mut kept).is_err());
        assert!(region.read_append(usize::MAX, 2, &mut kept).is_err());
        assert_eq!(kept, [1, 2, 3]);
    }

    /// `map_device` works on any mappable file; a memfd stands in for a
    /// grant device here: the offset selects the pages, read-only refuses
    /// writes.
    #[test]
    fn map_device_maps_at_the_offset() {
        let file = memfd_create("map-device-test", MFdFlags::MFD_CLOEXEC).unwrap();
        let mut writer = File::from(file.try_clone().unwrap());
        writer.write_all(&[1u8; 4096]).unwrap();
        writer.write_all(&[2u8; 4096]).unwrap();
        let region = MappedRegion::map_device(file.try_clone().unwrap(), 4096, 4096, true).unwrap();
        let mut byte = [0u8; 1];
        region.read(0, &mut byte).unwrap();
        assert_eq!(byte, [2]);
        region.write(4095, &[9]).unwrap();
        assert!(region.read(4096, &mut byte).is_err());
        let read_only = MappedRegion::map_device(file, 4096, 4096, false).unwrap();
        read_only.read(4095, &mut byte).unwrap();
        assert_eq!(byte, [9]);
        assert!(read_only.write(0, &[0]).is_err());
        assert!(MappedRegion::map_device(
            memfd_create("empty", MFdFlags::MFD_CLOEXEC).unwrap(),
            0,
            0,
            false
        )
        .is_err());
    }
}
