//! An image file as an `sdfs` block device.
//!
//! Reads and writes are positioned (`pread`/`pwrite` through `FileExt`), and
//! the flush barrier is `fdatasync`, which the file system's commit protocol
//! relies on for ordering.
//!
//! Reads of [`DIRECT_READ_MIN`] bytes or more (a sequential stream with its
//! read-ahead, a cold fill) go through a second descriptor opened with
//! `O_DIRECT` ([`DirectFile`]): the disk's data lands in the server's own
//! buffer instead of being copied there out of the host's page cache, the
//! largest single cost of a hosted sequential read (a `perf` of a cold
//! 1 GiB read: 40% of all samples in that copy). The server's data cache
//! keeps what it reads; the host's page cache is left to the host. Writes
//! stay buffered: Linux writes back a dirty range before a direct read of
//! it, so a direct read always sees the last write. Where the host file
//! system refuses `O_DIRECT` (tmpfs), every read is buffered.

use sdfs::block_cache::AlignedBlock;
use sdfs::{BlockDevice, DeviceError, DeviceFlush, BLOCK_SIZE};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

fn busy() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ResourceBusy,
        "the image is in use by another process (a running server?)",
    )
}

/// Reads at least this long bypass the host's page cache ([`DirectFile`]).
pub const DIRECT_READ_MIN: usize = 64 * 1024;

/// A growable buffer of whole, page-aligned blocks (`O_DIRECT` needs the
/// memory, the offset and the length aligned).
#[derive(Default)]
pub struct AlignedBuffer(Vec<AlignedBlock>);

impl AlignedBuffer {
    /// The first `length` bytes (grown to whole blocks first; growth is
    /// zeroed, the rest keeps what it held).
    pub fn bytes(&mut self, length: usize) -> &mut [u8] {
        let blocks = length.div_ceil(BLOCK_SIZE);
        if self.0.len() < blocks {
            self.0.resize(blocks, AlignedBlock([0; BLOCK_SIZE]));
        }
        // SAFETY: `AlignedBlock` is `repr(C)` over `[u8; BLOCK_SIZE]` with
        // a size equal to its alignment, so the vector's first `blocks`
        // elements are `blocks * BLOCK_SIZE` initialised, contiguous bytes,
        // borrowed mutably through `self` for the slice's lifetime.
        let all = unsafe {
            std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), blocks * BLOCK_SIZE)
        };
        &mut all[..length]
    }

    /// Bytes it holds.
    pub fn capacity(&self) -> usize {
        self.0.capacity() * BLOCK_SIZE
    }

    /// Its first `length` bytes' blocks, to hand to the data cache whole.
    pub fn into_blocks(mut self, length: usize) -> Vec<AlignedBlock> {
        self.0.truncate(length.div_ceil(BLOCK_SIZE));
        self.0
    }

    /// A buffer over `blocks` (a retired fill's, from the data cache).
    pub fn from_blocks(blocks: Vec<AlignedBlock>) -> Self {
        Self(blocks)
    }
}

impl std::fmt::Debug for AlignedBuffer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "AlignedBuffer({} bytes)", self.capacity())
    }
}

/// A descriptor of the image opened with `O_DIRECT`, for reads that
/// bypass the host's page cache.
#[derive(Debug)]
pub struct DirectFile(File);

impl DirectFile {
    /// Opens `path` for direct reads; `None` (and a log line) when the host
    /// file system refuses `O_DIRECT`.
    pub fn open(path: &Path) -> Option<DirectFile> {
        use std::os::unix::fs::OpenOptionsExt;
        match OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open(path)
        {
            Ok(file) => Some(DirectFile(file)),
            Err(error) => {
                log::info!(
                    "reads of {} go through the host's page cache: no O_DIRECT ({error})",
                    path.display()
                );
                None
            }
        }
    }

    /// Reads `destination.len()` bytes (whole blocks) at `offset` (a whole
    /// block), straight into `destination` when it is page-aligned, else
    /// through `bounce`.
    ///
    /// # Errors
    /// The read's failure, or a short read (past the end of the image).
    pub fn read_exact_at(
        &self,
        destination: &mut [u8],
        offset: u64,
        bounce: &mut AlignedBuffer,
    ) -> std::io::Result<()> {
        let aligned = destination.as_ptr().addr().is_multiple_of(BLOCK_SIZE)
            && destination.len().is_multiple_of(BLOCK_SIZE);
        if aligned {
            return self.0.read_exact_at(destination, offset);
        }
        let length = destination.len();
        let buffer = bounce.bytes(length.next_multiple_of(BLOCK_SIZE));
        self.0.read_exact_at(buffer, offset)?;
        destination.copy_from_slice(&buffer[..length]);
        Ok(())
    }
}

/// A block device backed by a regular file (or a block device node).
#[derive(Debug)]
pub struct ImageFile {
    file: File,
    /// Large reads, when the host allows them ([`DirectFile`]).
    direct: Option<DirectFile>,
    /// The bounce buffer of direct reads into unaligned buffers.
    bounce: AlignedBuffer,
    /// Reads that bypassed the host's page cache.
    direct_reads: u64,
    block_count: u64,
    writable: bool,
    /// Every flush sleeps this long first (`serve --flush-delay-ms`).
    flush_delay: std::time::Duration,
    /// Every read sleeps this long first (`serve --read-delay-ms`).
    read_delay: std::time::Duration,
}

impl ImageFile {
    /// Open an existing image for reading and writing.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut image = Self::from_file(file, true)?;
        image.direct = DirectFile::open(path);
        Ok(image)
    }

    /// Open an existing image read-only (offline inspection: a write fails).
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open_read_only(path: &Path) -> std::io::Result<Self> {
        Self::from_file(File::open(path)?, false)
    }

    /// Create (or truncate) an image of `size` bytes, rounded down to whole
    /// blocks. The file is sparse: unwritten blocks take no space.
    ///
    /// # Errors
    /// When the file cannot be created or sized.
    pub fn create(path: &Path, size: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // Lock before truncating: never cut an image a server is using.
        if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock() {
            return Err(busy());
        }
        file.set_len(0)?;
        file.set_len(size - size % BLOCK_SIZE as u64)?;
        Self::from_file(file, true)
    }

    /// Create an image of `size` bytes (rounded down to whole blocks) at a
    /// path where nothing exists yet. When sizing fails (a size the host
    /// file system cannot hold), the file it created is removed again.
    ///
    /// # Errors
    /// When `path` exists, or the file cannot be created or sized.
    pub fn create_new(path: &Path, size: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        match file
            .set_len(size - size % BLOCK_SIZE as u64)
            .and_then(|()| Self::from_file(file, true))
        {
            Ok(image) => Ok(image),
            Err(error) => {
                let _ = std::fs::remove_file(path);
                Err(error)
            }
        }
    }

    fn from_file(file: File, writable: bool) -> std::io::Result<Self> {
        // One writer or several readers: a second server on the same image,
        // or fsck of an image being served, is refused instead of racing.
        let locked = if writable {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        if let Err(std::fs::TryLockError::WouldBlock) = locked {
            return Err(busy());
        }
        let length = file.metadata()?.len();
        Ok(ImageFile {
            file,
            direct: None,
            bounce: AlignedBuffer::default(),
            direct_reads: 0,
            block_count: length / BLOCK_SIZE as u64,
            writable,
            flush_delay: std::time::Duration::ZERO,
            read_delay: std::time::Duration::ZERO,
        })
    }

    /// A second descriptor of the image, for reads made beside this device
    /// (`cold_reads.rs`), and a direct one for its large reads when the
    /// device has one.
    ///
    /// # Errors
    /// The `dup` failure.
    pub fn reader(&self) -> std::io::Result<(File, Option<DirectFile>)> {
        let direct = match &self.direct {
            Some(direct) => Some(DirectFile(direct.0.try_clone()?)),
            None => None,
        };
        Ok((self.file.try_clone()?, direct))
    }

    /// Makes every flush sleep `flush` before its `fdatasync`, and every
    /// read sleep `read` first, as a slow disk would (for tests of what
    /// runs while a commit flushes or a call reads, and for seeing group
    /// commit at work).
    pub fn set_delays(&mut self, read: std::time::Duration, flush: std::time::Duration) {
        self.read_delay = read;
        self.flush_delay = flush;
    }
}

/// Sleeps `delay`, if any (a slow disk, `serve --read-delay-ms` and
/// `--flush-delay-ms`).
pub fn sleep(delay: std::time::Duration) {
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
}

/// `fdatasync` of `file`, after `delay`.
fn flush_file(file: &File, delay: std::time::Duration) -> Result<(), DeviceError> {
    sleep(delay);
    file.sync_data().map_err(|error| {
        log::error!("image flush failed: {error}");
        DeviceError::Io
    })
}

impl BlockDevice for ImageFile {
    fn block_count(&self) -> u64 {
        self.block_count
    }

    fn read_block(&mut self, block: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        if block >= self.block_count {
            return Err(DeviceError::OutOfRange);
        }
        sleep(self.read_delay);
        self.file
            .read_exact_at(buffer, block * BLOCK_SIZE as u64)
            .map_err(|error| {
                log::error!("image read of block {block} failed: {error}");
                DeviceError::Io
            })
    }

    fn read_blocks(&mut self, first: u64, buffer: &mut [u8]) -> Result<(), DeviceError> {
        let blocks = buffer.len().div_ceil(BLOCK_SIZE) as u64;
        if first
            .checked_add(blocks)
            .is_none_or(|end| end > self.block_count)
        {
            return Err(DeviceError::OutOfRange);
        }
        sleep(self.read_delay);
        let offset = first * BLOCK_SIZE as u64;
        let read = match &self.direct {
            Some(direct) if buffer.len() >= DIRECT_READ_MIN => {
                self.direct_reads += 1;
                direct.read_exact_at(buffer, offset, &mut self.bounce)
            }
            _ => self.file.read_exact_at(buffer, offset),
        };
        read.map_err(|error| {
            log::error!("image read of blocks {first}..+{blocks} failed: {error}");
            DeviceError::Io
        })
    }

    fn write_block(&mut self, block: u64, data: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        if block >= self.block_count {
            return Err(DeviceError::OutOfRange);
        }
        if !self.writable {
            return Err(DeviceError::Io);
        }
        self.file
            .write_all_at(data, block * BLOCK_SIZE as u64)
            .map_err(|error| {
                log::error!("image write of block {block} failed: {error}");
                DeviceError::Io
            })
    }

    fn write_blocks(&mut self, first: u64, data: &[u8]) -> Result<(), DeviceError> {
        let blocks = data.len().div_ceil(BLOCK_SIZE) as u64;
        if first
            .checked_add(blocks)
            .is_none_or(|end| end > self.block_count)
        {
            return Err(DeviceError::OutOfRange);
        }
        if !self.writable || !data.len().is_multiple_of(BLOCK_SIZE) {
            return Err(DeviceError::Io);
        }
        self.file
            .write_all_at(data, first * BLOCK_SIZE as u64)
            .map_err(|error| {
                log::error!("image write of blocks {first}..+{blocks} failed: {error}");
                DeviceError::Io
            })
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        if !self.writable {
            return Ok(());
        }
        flush_file(&self.file, self.flush_delay)
    }

    /// `fdatasync` of a second descriptor of the image: it covers every
    /// write to the file completed before it, whichever descriptor made
    /// it, so a commit's flushes run while other calls read and write.
    fn flusher(&mut self) -> Option<Box<dyn DeviceFlush>> {
        if !self.writable {
            return None;
        }
        match self.file.try_clone() {
            Ok(file) => Some(Box::new(ImageFlush {
                file,
                delay: self.flush_delay,
            })),
            Err(error) => {
                // Without a second descriptor the commit runs whole.
                log::warn!("cannot duplicate the image descriptor for a flush: {error}");
                None
            }
        }
    }
}

/// The flush of an [`ImageFile`], detached from it.
struct ImageFlush {
    file: File,
    delay: std::time::Duration,
}

impl DeviceFlush for ImageFlush {
    fn flush(&mut self) -> Result<(), DeviceError> {
        flush_file(&self.file, self.delay)
    }
}

/// The host's wall clock, for file times.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl vfs::Clock for SystemClock {
    fn now(&self) -> vfs::Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        vfs::Timestamp {
            seconds: since_epoch.as_secs() as i64,
            nanoseconds: since_epoch.subsec_nanos(),
        }
    }
}

/// Random bytes from the kernel, for volume identities and secrets.
///
/// # Errors
/// When `/dev/urandom` cannot be read.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    std::io::Read::read_exact(&mut File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_reads_bypass_the_page_cache_and_see_the_last_buffered_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        drop(ImageFile::create_new(&path, 4 << 20).unwrap());
        let mut image = ImageFile::open(&path).unwrap();
        if image.direct.is_none() {
            eprintln!(
                "skipped: the file system of {} refuses O_DIRECT, so every read is buffered",
                dir.path().display()
            );
            return;
        }
        let length = 64 * BLOCK_SIZE;
        let pattern = |seed: usize| -> Vec<u8> {
            (0..length)
                .map(|index| (index * 7 + index / BLOCK_SIZE + seed) as u8)
                .collect()
        };
        let first = pattern(1);
        // Written through the page cache, not flushed: the direct read must
        // still see it.
        image.write_blocks(10, &first).unwrap();
        let mut aligned = AlignedBuffer::default();
        image.read_blocks(10, aligned.bytes(length)).unwrap();
        assert!(aligned.bytes(length) == &first[..], "aligned direct read");
        // An unaligned buffer, and a length that is not whole blocks: bounced.
        let mut unaligned = vec![0u8; length + 1];
        image.read_blocks(10, &mut unaligned[1..]).unwrap();
        assert!(unaligned[1..] == first[..], "unaligned direct read");
        let mut partial = vec![0u8; length - 100];
        image.read_blocks(10, &mut partial).unwrap();
        assert!(partial[..] == first[..length - 100], "partial block read");
        assert_eq!(image.direct_reads, 3, "the large reads went direct");
        // Rewritten: read again, the new bytes.
        let second = pattern(2);
        image.write_blocks(10, &second).unwrap();
        image.read_blocks(10, aligned.bytes(length)).unwrap();
        assert!(
            aligned.bytes(length) == &second[..],
            "a read after a rewrite"
        );
        // Small reads stay buffered; past the end fails.
        let mut block = [0u8; BLOCK_SIZE];
        image.read_block(12, &mut block).unwrap();
        assert_eq!(block[..], second[2 * BLOCK_SIZE..3 * BLOCK_SIZE]);
        assert_eq!(image.direct_reads, 4);
        let last = image.block_count() - 10;
        assert_eq!(
            image.read_blocks(last, aligned.bytes(length)),
            Err(DeviceError::OutOfRange)
        );
    }
}
