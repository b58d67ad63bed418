//! An image file as an `sdfs` block device.
//!
//! Reads and writes are positioned (`pread`/`pwrite` through `FileExt`), and
//! the flush barrier is `fdatasync`, which the file system's commit protocol
//! relies on for ordering.

use sdfs::{BlockDevice, DeviceError, BLOCK_SIZE};
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
        })
    }
}

impl BlockDevice for ImageFile {
    fn block_count(&self) -> u64 {
        self.block_count
    }

    fn read_block(&mut self, block: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        if block >= self.block_count {
            return Err(DeviceError::OutOfRange);
        }
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
        self.file.sync_data().map_err(|error| {
            log::error!("image flush failed: {error}");
            DeviceError::Io
        })
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

/// Parse a size such as `1G`, `512M`, `64K` or a plain byte count.
///
/// # Errors
/// A message naming the bad input.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, multiplier) = match text.char_indices().last() {
        Some((index, 'K' | 'k')) => (&text[..index], 1u64 << 10),
        Some((index, 'M' | 'm')) => (&text[..index], 1 << 20),
        Some((index, 'G' | 'g')) => (&text[..index], 1 << 30),
        Some((index, 'T' | 't')) => (&text[..index], 1 << 40),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|value| value.checked_mul(multiplier))
        .ok_or_else(|| format!("invalid size {text:?} (examples: 1G, 512M, 65536)"))
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
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
