//! The block device protocol (`xen/include/public/io/blkif.h`).

use core::mem::size_of;

/// `BLKIF_OP_READ`.
pub const OP_READ: u8 = 0;
/// `BLKIF_OP_WRITE`.
pub const OP_WRITE: u8 = 1;
/// `BLKIF_OP_WRITE_BARRIER` (`feature-barrier`).
pub const OP_WRITE_BARRIER: u8 = 2;
/// `BLKIF_OP_FLUSH_DISKCACHE` (`feature-flush-cache`).
pub const OP_FLUSH_DISKCACHE: u8 = 3;

/// `BLKIF_RSP_OKAY`.
pub const RSP_OKAY: i16 = 0;
/// `BLKIF_RSP_ERROR`.
pub const RSP_ERROR: i16 = -1;
/// `BLKIF_RSP_EOPNOTSUPP`.
pub const RSP_EOPNOTSUPP: i16 = -2;

/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`.
pub const MAX_SEGMENTS_PER_REQUEST: usize = 11;

/// The protocol name a 64-bit frontend writes (`XEN_IO_PROTO_ABI_X86_64`,
/// `io/protocols.h`).
pub const PROTOCOL_X86_64: &str = "x86_64-abi";

/// `struct blkif_request_segment`: one granted page and the sectors of it
/// (512-byte units, inclusive) to transfer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequestSegment {
    /// 0: grant of the data page.
    pub gref: u32,
    /// 4: first sector in the page.
    pub first_sect: u8,
    /// 5: last sector in the page.
    pub last_sect: u8,
    /// 6: padding.
    pub padding: u16,
}
const _: () = assert!(size_of::<BlkifRequestSegment>() == 8);

/// `struct blkif_request` (x86_64 layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequest {
    /// 0: `OP_*`.
    pub operation: u8,
    /// 1: segments used.
    pub nr_segments: u8,
    /// 2: the virtual device handle.
    pub handle: u16,
    /// 4: padding (x86_64 aligns `id` to 8).
    pub padding: u32,
    /// 8: echoed in the response.
    pub id: u64,
    /// 16: first 512-byte sector on the disk.
    pub sector_number: u64,
    /// 24: the pages.
    pub seg: [BlkifRequestSegment; MAX_SEGMENTS_PER_REQUEST],
}
const _: () = assert!(size_of::<BlkifRequest>() == 112);

/// `struct blkif_response`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifResponse {
    /// 0: the request's `id`.
    pub id: u64,
    /// 8: the request's operation.
    pub operation: u8,
    /// 9: padding.
    pub padding: u8,
    /// 10: `RSP_*`.
    pub status: i16,
    /// 12: padding to the 8-byte alignment.
    pub padding1: u32,
}
const _: () = assert!(size_of::<BlkifResponse>() == 16);

/// Bytes of one ring slot: the union of request and response.
pub const RING_ENTRY_SIZE: usize = size_of::<BlkifRequest>();

/// Entries of a one-page blkif ring.
pub const RING_SIZE: usize = crate::ring::ring_size(crate::PAGE_SIZE, RING_ENTRY_SIZE);
const _: () = assert!(RING_SIZE == 32);

/// Sector size of the protocol's `sector_number` and segment fields.
pub const SECTOR_SIZE: u64 = 512;
