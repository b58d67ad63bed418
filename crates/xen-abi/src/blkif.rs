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

/// `BLKIF_OP_INDIRECT` (`feature-max-indirect-segments`): a request whose
/// segments sit in separate granted pages ([`BlkifRequestIndirect`]).
pub const OP_INDIRECT: u8 = 6;

/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`.
pub const MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;

/// Segments one indirect page holds: `PAGE_SIZE / sizeof(struct
/// blkif_request_segment)`.
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = crate::PAGE_SIZE / size_of::<BlkifRequestSegment>();

/// `struct blkif_request_indirect` (x86_64 layout): it shares a ring slot
/// with [`BlkifRequest`] (the slot's first 64 bytes); its `nr_segments`
/// segments are arrays of [`BlkifRequestSegment`] in the pages
/// `indirect_grefs` names, [`SEGMENTS_PER_INDIRECT_PAGE`] to a page.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequestIndirect {
    /// 0: [`OP_INDIRECT`].
    pub operation: u8,
    /// 1: [`OP_READ`] or [`OP_WRITE`].
    pub indirect_op: u8,
    /// 2: segments, across the indirect pages.
    pub nr_segments: u16,
    /// 4: padding (x86_64 aligns `id` to 8).
    pub padding: u32,
    /// 8: echoed in the response.
    pub id: u64,
    /// 16: first 512-byte sector on the disk.
    pub sector_number: u64,
    /// 24: the virtual device handle.
    pub handle: u16,
    /// 26: padding.
    pub padding1: u16,
    /// 28: grants of the pages holding the segments.
    pub indirect_grefs: [u32; MAX_INDIRECT_PAGES_PER_REQUEST],
    /// 60: padding to the 8-byte alignment.
    pub padding2: u32,
}
const _: () = assert!(size_of::<BlkifRequestIndirect>() == 64);
const _: () = assert!(size_of::<BlkifRequestIndirect>() <= RING_ENTRY_SIZE);
const _: () = assert!(core::mem::offset_of!(BlkifRequestIndirect, indirect_grefs) == 28);

impl BlkifRequestIndirect {
    /// The request's bytes as they go into a ring slot (little-endian).
    pub fn encode(&self) -> [u8; 64] {
        let mut bytes = [0u8; 64];
        bytes[0] = self.operation;
        bytes[1] = self.indirect_op;
        bytes[2..4].copy_from_slice(&self.nr_segments.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.padding.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.id.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.sector_number.to_le_bytes());
        bytes[24..26].copy_from_slice(&self.handle.to_le_bytes());
        bytes[26..28].copy_from_slice(&self.padding1.to_le_bytes());
        for (index, gref) in self.indirect_grefs.iter().enumerate() {
            bytes[28 + 4 * index..32 + 4 * index].copy_from_slice(&gref.to_le_bytes());
        }
        bytes[60..64].copy_from_slice(&self.padding2.to_le_bytes());
        bytes
    }
}

impl BlkifRequestSegment {
    /// The segment's bytes as they go into an indirect page (little-endian).
    pub fn encode(&self) -> [u8; 8] {
        let mut bytes = [0u8; 8];
        bytes[0..4].copy_from_slice(&self.gref.to_le_bytes());
        bytes[4] = self.first_sect;
        bytes[5] = self.last_sect;
        bytes[6..8].copy_from_slice(&self.padding.to_le_bytes());
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_indirect_request_has_blkif_h_layout() {
        let request = BlkifRequestIndirect {
            operation: OP_INDIRECT,
            indirect_op: OP_WRITE,
            nr_segments: 0x0102,
            id: 0x1122_3344_5566_7788,
            sector_number: 0x0807_0605_0403_0201,
            handle: 51712,
            indirect_grefs: [0xaabb_ccdd, 9, 0, 0, 0, 0, 0, 0x0c0d_0e0f],
            ..BlkifRequestIndirect::default()
        };
        let mut golden = alloc::vec![6u8, 1, 0x02, 0x01, 0, 0, 0, 0];
        golden.extend_from_slice(&[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
        golden.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        golden.extend_from_slice(&[0x00, 0xca, 0, 0]);
        golden.extend_from_slice(&[0xdd, 0xcc, 0xbb, 0xaa, 9, 0, 0, 0]);
        golden.extend_from_slice(&[0; 20]);
        golden.extend_from_slice(&[0x0f, 0x0e, 0x0d, 0x0c, 0, 0, 0, 0]);
        assert_eq!(request.encode().as_slice(), golden.as_slice());
    }

    #[test]
    fn a_segment_has_blkif_h_layout() {
        let segment = BlkifRequestSegment {
            gref: 0x0102_0304,
            first_sect: 0,
            last_sect: 7,
            padding: 0,
        };
        assert_eq!(segment.encode(), [4, 3, 2, 1, 0, 7, 0, 0]);
        assert_eq!(SEGMENTS_PER_INDIRECT_PAGE, 512);
    }
}
