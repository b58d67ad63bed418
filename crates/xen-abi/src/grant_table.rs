//! Grant tables, version 1 (`xen/include/public/grant_table.h`): the
//! granting side (entries, `setup_table`) and the grantee side (map, unmap,
//! copy).
//!
//! NOTE: the `ref` field is named `reference` (a Rust keyword otherwise),
//! and `gnttab_copy_ptr`'s union is one `u64` ([`GnttabCopyPointer`]).

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

/// `GNTTABOP_map_grant_ref`: argument is an array of [`GnttabMapGrantRef`].
pub const GNTTABOP_MAP_GRANT_REF: u32 = 0;
/// `GNTTABOP_unmap_grant_ref`: argument is an array of
/// [`GnttabUnmapGrantRef`].
pub const GNTTABOP_UNMAP_GRANT_REF: u32 = 1;
/// `GNTTABOP_copy`: argument is an array of [`GnttabCopy`].
pub const GNTTABOP_COPY: u32 = 5;

/// `GNTMAP_device_map`: map for device (DMA) access.
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
/// `GNTMAP_host_map`: map at `host_addr` (for a PV guest without
/// `GNTMAP_contains_pte`, a virtual address whose page table exists).
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// `GNTMAP_readonly`: map read-only.
pub const GNTMAP_READONLY: u32 = 1 << 2;

/// `GNTCOPY_source_gref`: the source is a grant reference, not a frame.
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `GNTCOPY_dest_gref`: the destination is a grant reference.
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// `enum grant_status` (`GNTST_*`), the `status` of map, unmap and copy
/// operations.
pub mod status {
    /// `GNTST_okay`.
    pub const OKAY: i16 = 0;
    /// `GNTST_general_error`.
    pub const GENERAL_ERROR: i16 = -1;
    /// `GNTST_bad_domain`: unrecognised domain id.
    pub const BAD_DOMAIN: i16 = -2;
    /// `GNTST_bad_gntref`: unrecognised or inappropriate grant reference.
    pub const BAD_GNTREF: i16 = -3;
    /// `GNTST_bad_handle`: unrecognised or inappropriate handle.
    pub const BAD_HANDLE: i16 = -4;
    /// `GNTST_bad_virt_addr`: inappropriate virtual address to map.
    pub const BAD_VIRT_ADDR: i16 = -5;
    /// `GNTST_bad_dev_addr`: inappropriate device address to unmap.
    pub const BAD_DEV_ADDR: i16 = -6;
    /// `GNTST_no_device_space`: out of space in the I/O MMU.
    pub const NO_DEVICE_SPACE: i16 = -7;
    /// `GNTST_permission_denied`: not enough privilege.
    pub const PERMISSION_DENIED: i16 = -8;
    /// `GNTST_bad_page`: the page was invalid for the operation.
    pub const BAD_PAGE: i16 = -9;
    /// `GNTST_bad_copy_arg`: copy arguments cross a page boundary.
    pub const BAD_COPY_ARG: i16 = -10;
    /// `GNTST_address_too_big`: transfer page address too large.
    pub const ADDRESS_TOO_BIG: i16 = -11;
    /// `GNTST_eagain`: not done, try again.
    pub const EAGAIN: i16 = -12;
    /// `GNTST_no_space`: out of space (handles and such).
    pub const NO_SPACE: i16 = -13;

    /// The header's name of a status, for messages.
    pub fn name(status: i16) -> &'static str {
        match status {
            OKAY => "GNTST_okay",
            GENERAL_ERROR => "GNTST_general_error",
            BAD_DOMAIN => "GNTST_bad_domain",
            BAD_GNTREF => "GNTST_bad_gntref",
            BAD_HANDLE => "GNTST_bad_handle",
            BAD_VIRT_ADDR => "GNTST_bad_virt_addr",
            BAD_DEV_ADDR => "GNTST_bad_dev_addr",
            NO_DEVICE_SPACE => "GNTST_no_device_space",
            PERMISSION_DENIED => "GNTST_permission_denied",
            BAD_PAGE => "GNTST_bad_page",
            BAD_COPY_ARG => "GNTST_bad_copy_arg",
            ADDRESS_TOO_BIG => "GNTST_address_too_big",
            EAGAIN => "GNTST_eagain",
            NO_SPACE => "GNTST_no_space",
            _ => "unknown grant status",
        }
    }
}

/// `struct gnttab_map_grant_ref`: map the grant `(dom, ref)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabMapGrantRef {
    /// 0: where to map (`GNTMAP_host_map`): a page-aligned virtual address.
    pub host_addr: u64,
    /// 8: `GNTMAP_*`.
    pub flags: u32,
    /// 12: the grant reference in the granting domain's table.
    pub reference: u32,
    /// 16: the granting domain.
    pub dom: u16,
    /// 18: OUT: `GNTST_*` ([`status`]).
    pub status: i16,
    /// 20: OUT: the handle that unmaps it (`grant_handle_t`).
    pub handle: u32,
    /// 24: OUT: the bus address, for `GNTMAP_device_map`.
    pub dev_bus_addr: u64,
}
const _: () = assert!(size_of::<GnttabMapGrantRef>() == 32);

/// `struct gnttab_unmap_grant_ref`: destroy a mapping made by
/// `GNTTABOP_map_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabUnmapGrantRef {
    /// 0: the virtual address mapped (or 0).
    pub host_addr: u64,
    /// 8: the bus address mapped (or 0).
    pub dev_bus_addr: u64,
    /// 16: the handle the map returned.
    pub handle: u32,
    /// 20: OUT: `GNTST_*` ([`status`]).
    pub status: i16,
    /// 22: padding.
    pub padding: u16,
}
const _: () = assert!(size_of::<GnttabUnmapGrantRef>() == 24);

/// `struct gnttab_copy_ptr`: one side of a copy: a grant reference of
/// `domid` (with `GNTCOPY_*_gref`) or a frame of the calling domain (a
/// machine frame for a PV guest), and a byte offset in that page.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabCopyPointer {
    /// 0: `union { grant_ref_t ref; xen_pfn_t gmfn; }`: a grant reference
    /// in the low 32 bits, or a whole frame number.
    pub reference_or_frame: u64,
    /// 8: the domain (`DOMID_SELF` for a frame of our own).
    pub domid: u16,
    /// 10: byte offset in the page.
    pub offset: u16,
    /// 12: padding.
    pub padding: u32,
}
const _: () = assert!(size_of::<GnttabCopyPointer>() == 16);

/// `struct gnttab_copy`: Xen copies `len` bytes from `source` to `dest`;
/// neither side may cross its page.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabCopy {
    /// 0: where the bytes come from.
    pub source: GnttabCopyPointer,
    /// 16: where they go.
    pub dest: GnttabCopyPointer,
    /// 32: bytes, at most a page.
    pub len: u16,
    /// 34: `GNTCOPY_*`.
    pub flags: u16,
    /// 36: OUT: `GNTST_*` ([`status`]).
    pub status: i16,
    /// 38: padding.
    pub padding: u16,
}
const _: () = assert!(size_of::<GnttabCopy>() == 40);
