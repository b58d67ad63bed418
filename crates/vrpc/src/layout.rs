//! Byte layout of the ring region and the data-page pool (`docs/vrpc.md`).
//!
//! Design: modelled on Xen's `xen/include/public/io/ring.h` (the shared ring
//! header with `req_prod`, `req_event`, `rsp_prod`, `rsp_event`, then one
//! array of slots used by requests and responses alike). All integers in the
//! header, slots and descriptors are little-endian (both ends share one host);
//! the ONC RPC record bytes inside a slot are XDR (big-endian) as on TCP.
//!
//! NOTE: departures from `ring.h`: slot count and slot size are parameters of
//! the connection rather than derived from one page, the header carries a
//! magic, version and the parameters (so a ring image is self-describing),
//! and slots start after a 64-byte header instead of at `ring[0]`.

use core::fmt;

/// Size of a data page and the unit of the pool.
pub const PAGE_SIZE: usize = 4096;

/// `"VRPC"` read as a little-endian word.
pub const MAGIC: u32 = u32::from_le_bytes(*b"VRPC");
/// Version of this layout.
pub const VERSION: u32 = 1;

/// Size of the ring header; slots start here.
pub const HEADER_SIZE: usize = 64;
/// Offset of `req_prod`: requests produced by the frontend.
pub const REQUEST_PRODUCER: usize = 0;
/// Offset of `req_event`: the backend wants a notification when
/// `req_prod` passes this value.
pub const REQUEST_EVENT: usize = 4;
/// Offset of `rsp_prod`: responses produced by the backend.
pub const RESPONSE_PRODUCER: usize = 8;
/// Offset of `rsp_event`: the frontend wants a notification when `rsp_prod`
/// passes this value.
pub const RESPONSE_EVENT: usize = 12;
/// Offset of the magic word.
pub const HEADER_MAGIC: usize = 16;
/// Offset of the version word.
pub const HEADER_VERSION: usize = 20;
/// Offset of the slot count.
pub const HEADER_SLOT_COUNT: usize = 24;
/// Offset of the slot size.
pub const HEADER_SLOT_SIZE: usize = 28;

/// Size of the fixed part of a request or response slot.
pub const SLOT_HEADER_SIZE: usize = 32;
/// Size of one descriptor.
pub const DESCRIPTOR_SIZE: usize = 12;
/// Most descriptors (payload plus reply) one request may carry.
pub const MAX_DESCRIPTORS: usize = 16;

/// Request slot: offset of the xid (equal to the record's xid).
pub const REQUEST_XID: usize = 0;
/// Request slot: offset of the flags word (zero in version 1).
pub const REQUEST_FLAGS: usize = 4;
/// Request slot: offset of the inline record length.
pub const REQUEST_RECORD_LENGTH: usize = 8;
/// Request slot: offset of the splice offset.
pub const REQUEST_SPLICE_OFFSET: usize = 12;
/// Request slot: offset of the splice length.
pub const REQUEST_SPLICE_LENGTH: usize = 16;
/// Request slot: offset of the `u16` count of payload descriptors.
pub const REQUEST_PAYLOAD_COUNT: usize = 20;
/// Request slot: offset of the `u16` count of reply descriptors.
pub const REQUEST_REPLY_COUNT: usize = 22;

/// Response slot: offset of the xid (the request's).
pub const RESPONSE_XID: usize = 0;
/// Response slot: offset of the status word ([`ResponseStatus`]).
pub const RESPONSE_STATUS: usize = 4;
/// Response slot: offset of the inline record length.
pub const RESPONSE_RECORD_LENGTH: usize = 8;
/// Response slot: offset of the splice offset.
pub const RESPONSE_SPLICE_OFFSET: usize = 12;
/// Response slot: offset of the splice length.
pub const RESPONSE_SPLICE_LENGTH: usize = 16;

/// Smallest slot size.
pub const MIN_SLOT_SIZE: u32 = 256;
/// Largest slot size.
pub const MAX_SLOT_SIZE: u32 = 65536;
/// Most slots in a ring.
pub const MAX_SLOT_COUNT: u32 = 1024;
/// Most pages in the data pool (256 MiB).
pub const MAX_POOL_PAGES: u32 = 65536;

/// Transport outcome of a request, in the response slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStatus {
    /// 0: the slot carries the reply record.
    Ok,
    /// 1: the reply did not fit the slot plus the reply pages offered.
    ReplyTooLarge,
    /// 2: the server dropped the call without a reply (an RPC server may do
    /// that, RFC 5531 section 8; on TCP the client would time out).
    NoReply,
}

impl ResponseStatus {
    /// The wire value.
    pub const fn to_wire(self) -> u32 {
        match self {
            Self::Ok => 0,
            Self::ReplyTooLarge => 1,
            Self::NoReply => 2,
        }
    }

    /// Decodes a wire value; unknown values are a protocol error.
    pub const fn from_wire(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::Ok),
            1 => Some(Self::ReplyTooLarge),
            2 => Some(Self::NoReply),
            _ => None,
        }
    }
}

/// The shape of one connection, agreed in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingParameters {
    /// Slots in the ring: a power of two, 2..=[`MAX_SLOT_COUNT`].
    pub slot_count: u32,
    /// Bytes per slot: a multiple of 64, [`MIN_SLOT_SIZE`]..=[`MAX_SLOT_SIZE`].
    pub slot_size: u32,
    /// Pages in the data pool: 0..=[`MAX_POOL_PAGES`].
    pub pool_pages: u32,
}

impl Default for RingParameters {
    /// 32 slots of 2 KiB (an inline record of up to 1,824 bytes plus 16
    /// descriptors) and a 4 MiB pool: four 1 MiB READs in flight.
    fn default() -> Self {
        Self {
            slot_count: 32,
            slot_size: 2048,
            pool_pages: 1024,
        }
    }
}

/// Parameters outside their bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterError(pub RingParameters);

impl fmt::Display for ParameterError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "invalid ring parameters {:?}", self.0)
    }
}

impl core::error::Error for ParameterError {}

impl RingParameters {
    /// Checks the bounds; every other method assumes them.
    ///
    /// # Errors
    /// [`ParameterError`] when a field is out of bounds.
    pub fn validate(self) -> Result<Self, ParameterError> {
        let slots_ok =
            self.slot_count.is_power_of_two() && (2..=MAX_SLOT_COUNT).contains(&self.slot_count);
        let size_ok = self.slot_size.is_multiple_of(64)
            && (MIN_SLOT_SIZE..=MAX_SLOT_SIZE).contains(&self.slot_size);
        let pool_ok = self.pool_pages <= MAX_POOL_PAGES;
        if slots_ok && size_ok && pool_ok {
            Ok(self)
        } else {
            Err(ParameterError(self))
        }
    }

    /// Bytes of the ring region: header and slots, rounded up to pages.
    pub const fn ring_bytes(self) -> usize {
        let used = HEADER_SIZE + self.slot_count as usize * self.slot_size as usize;
        used.div_ceil(PAGE_SIZE) * PAGE_SIZE
    }

    /// Bytes of the data-page pool.
    pub const fn pool_bytes(self) -> usize {
        self.pool_pages as usize * PAGE_SIZE
    }

    /// Offset of the slot a ring index maps to.
    pub const fn slot_offset(self, index: u32) -> usize {
        HEADER_SIZE + (index & (self.slot_count - 1)) as usize * self.slot_size as usize
    }

    /// Largest inline response record.
    pub const fn response_capacity(self) -> usize {
        self.slot_size as usize - SLOT_HEADER_SIZE
    }

    /// Largest inline request record when it carries `descriptors`.
    pub const fn request_capacity(self, descriptors: usize) -> usize {
        self.slot_size as usize - SLOT_HEADER_SIZE - descriptors * DESCRIPTOR_SIZE
    }
}

/// A byte range of the data pool: `length` bytes from byte `offset` of page
/// `page`, possibly running on through the following pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Index of the first page.
    pub page: u32,
    /// Byte offset within that page, below [`PAGE_SIZE`].
    pub offset: u32,
    /// Length in bytes, at least 1.
    pub length: u32,
}

impl Descriptor {
    /// Encodes to the slot layout.
    pub fn to_bytes(self) -> [u8; DESCRIPTOR_SIZE] {
        let mut bytes = [0; DESCRIPTOR_SIZE];
        bytes[0..4].copy_from_slice(&self.page.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.offset.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.length.to_le_bytes());
        bytes
    }

    /// Decodes from the slot layout (no validation).
    pub fn from_bytes(bytes: [u8; DESCRIPTOR_SIZE]) -> Self {
        Self {
            page: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            offset: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            length: u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        }
    }

    /// Byte offset of the range in the pool when it lies wholly inside a pool
    /// of `pool_pages` pages, with a non-zero length; `None` otherwise.
    pub fn pool_offset(self, pool_pages: u32) -> Option<usize> {
        if self.page >= pool_pages || self.offset as usize >= PAGE_SIZE || self.length == 0 {
            return None;
        }
        let start = u64::from(self.page) * PAGE_SIZE as u64 + u64::from(self.offset);
        let end = start.checked_add(u64::from(self.length))?;
        if end > u64::from(pool_pages) * PAGE_SIZE as u64 {
            return None;
        }
        usize::try_from(start).ok()
    }
}

/// Reads a little-endian `u32` at `offset` of a private copy.
pub(crate) fn get_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0; 4];
    if let Some(source) = bytes.get(offset..offset + 4) {
        word.copy_from_slice(source);
    }
    u32::from_le_bytes(word)
}

/// Reads a little-endian `u16` at `offset` of a private copy.
pub(crate) fn get_u16(bytes: &[u8], offset: usize) -> u16 {
    let mut word = [0; 2];
    if let Some(source) = bytes.get(offset..offset + 2) {
        word.copy_from_slice(source);
    }
    u16::from_le_bytes(word)
}

/// Writes a little-endian `u32` at `offset` of a private buffer.
pub(crate) fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
    if let Some(target) = bytes.get_mut(offset..offset + 4) {
        target.copy_from_slice(&value.to_le_bytes());
    }
}

/// Writes a little-endian `u16` at `offset` of a private buffer.
pub(crate) fn put_u16(bytes: &mut [u8], offset: usize, value: u16) {
    if let Some(target) = bytes.get_mut(offset..offset + 2) {
        target.copy_from_slice(&value.to_le_bytes());
    }
}
