//! An image file as an `sdfs` block device.
//!
//! Reads and writes are positioned (`pread`/`pwrite` through `FileExt`), and
//! the flush barrier is `fdatasync`, which the file system's commit protocol
//! relies on for ordering.

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

/// A block device backed by a regular file (or a block device node).
#[derive(Debug)]
pub struct ImageFile {
    file: File,
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
        Self::from_file(file, true)
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
            block_count: length / BLOCK_SIZE as u64,
            writable,
            flush_delay: std::time::Duration::ZERO,
            read_delay: std::time::Duration::ZERO,
        })
    }

    /// A second descriptor of the image, for reads made beside this device
    /// (`cold_reads.rs`).
    ///
    /// # Errors
    /// The `dup` failure.
    pub fn reader(&self) -> std::io::Result<File> {
        self.file.try_clone()
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
        self.file
            .read_exact_at(buffer, first * BLOCK_SIZE as u64)
            .map_err(|error| {
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
