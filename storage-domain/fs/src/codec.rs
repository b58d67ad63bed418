//! Little-endian field encoding and a bounded reader for on-disk bytes.
//!
//! Every value read from the device goes through [`Reader`], which returns
//! [`FsError::Corrupt`] instead of panicking when the bytes run out, so a
//! damaged or hostile image can never crash the storage domain.

use alloc::string::String;
use alloc::vec::Vec;
use vfs::FsError;

/// Appends little-endian fields to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    /// The bytes written so far.
    pub bytes: Vec<u8>,
}

impl Writer {
    /// Append a byte.
    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }
    /// Append a u32.
    pub fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    /// Append a u64.
    pub fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    /// Append an i64.
    pub fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    /// Append raw bytes.
    pub fn bytes(&mut self, value: &[u8]) {
        self.bytes.extend_from_slice(value);
    }
}

/// Reads little-endian fields from untrusted bytes; never panics.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`; `what` names the structure in errors.
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { bytes, what }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// The error for this structure.
    pub fn corrupt(&self, detail: &str) -> FsError {
        let mut text = String::from(self.what);
        text.push_str(": ");
        text.push_str(detail);
        FsError::Corrupt(text)
    }

    /// Take `count` raw bytes.
    ///
    /// # Errors
    /// [`FsError::Corrupt`] when fewer remain.
    pub fn take(&mut self, count: usize) -> Result<&'a [u8], FsError> {
        if count > self.bytes.len() {
            return Err(self.corrupt("truncated"));
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Ok(head)
    }

    /// Read a byte.
    ///
    /// # Errors
    /// [`FsError::Corrupt`] when truncated.
    pub fn u8(&mut self) -> Result<u8, FsError> {
        Ok(self.take(1)?[0])
    }

    /// Read a u32.
    ///
    /// # Errors
    /// [`FsError::Corrupt`] when truncated.
    pub fn u32(&mut self) -> Result<u32, FsError> {
        let mut field = [0u8; 4];
        field.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(field))
    }

    /// Read a u64.
    ///
    /// # Errors
    /// [`FsError::Corrupt`] when truncated.
    pub fn u64(&mut self) -> Result<u64, FsError> {
        let mut field = [0u8; 8];
        field.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(field))
    }

    /// Read an i64.
    ///
    /// # Errors
    /// [`FsError::Corrupt`] when truncated.
    pub fn i64(&mut self) -> Result<i64, FsError> {
        Ok(self.u64()? as i64)
    }

    /// Read a count of items each at least `item_size` bytes long, rejecting
    /// counts the remaining bytes cannot hold (so no allocation is sized by
    /// a forged count).
    ///
    /// # Errors
    /// [`FsError::Corrupt`] when the count is impossible.
    pub fn count(&mut self, item_size: usize) -> Result<usize, FsError> {
        let count = self.u64()?;
        let limit = (self.remaining() / item_size.max(1)) as u64;
        if count > limit {
            return Err(self.corrupt("count larger than the record"));
        }
        Ok(count as usize)
    }
}
