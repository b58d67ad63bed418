//! Grant tables, version 1 (`xen/include/public/grant_table.h`).

use core::mem::size_of;

/// `GNTTABOP_setup_table`: argument is a [`GnttabSetupTable`].
pub const GNTTABOP_SETUP_TABLE: u32 = 2;

/// `GNTTAB_NR_RESERVED_ENTRIES`: entries the toolstack owns (console,
/// xenstore); a guest allocates from this index up.
pub const NR_RESERVED_ENTRIES: u32 = 8;

/// `GTF_permit_access`: the grantee may map or copy the frame.
pub const GTF_PERMIT_ACCESS: u16 = 1 << 0;
/// `GTF_readonly`: the grantee may only read.
pub const GTF_READONLY: u16 = 1 << 2;
/// `GTF_reading`: set by Xen while the grantee has the frame mapped.
pub const GTF_READING: u16 = 1 << 3;
/// `GTF_writing`: set by Xen while the grantee has it mapped writable.
pub const GTF_WRITING: u16 = 1 << 4;

/// `struct grant_entry_v1`: one entry of the shared grant table.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GrantEntryV1 {
    /// 0: `GTF_*`; written last when granting, cleared to end access.
    pub flags: u16,
    /// 2: the domain allowed to use the grant.
    pub domid: u16,
    /// 4: the granted frame (an MFN for a PV guest).
    pub frame: u32,
}
const _: () = assert!(size_of::<GrantEntryV1>() == 8);

/// Grant entries per 4 KiB frame of the v1 table.
pub const ENTRIES_PER_FRAME: usize = crate::PAGE_SIZE / size_of::<GrantEntryV1>();

/// `struct gnttab_setup_table` (interface >= 0x00040300: `frame_list` is
/// a handle to `xen_pfn_t`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GnttabSetupTable {
    /// 0: the domain (`DOMID_SELF`).
    pub dom: u16,
    /// 2: padding.
    pub padding0: u16,
    /// 4: frames wanted.
    pub nr_frames: u32,
    /// 8: OUT: `GNTST_*` status, 0 = okay.
    pub status: i16,
    /// 10: padding.
    pub padding1: [u8; 6],
    /// 16: guest handle of an array of `nr_frames` `xen_pfn_t` (OUT: MFNs).
    pub frame_list: u64,
}
const _: () = assert!(size_of::<GnttabSetupTable>() == 24);
