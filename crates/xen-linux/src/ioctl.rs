//! Request codes and argument structs of the Linux Xen device ioctls.
//!
//! Mirrors the uapi headers `include/uapi/xen/gntalloc.h`, `gntdev.h` and
//! `evtchn.h` (installed by Debian's `libxen-dev` as
//! `/usr/include/xen/sys/*.h`). Every request is `_IOC(_IOC_NONE, type,
//! number, sizeof(struct))`: the size of the whole struct, including the
//! one-element array that stands for a variable-length tail, is part of the
//! request code, so each struct here has a size assertion against the
//! header's layout on 64-bit Linux.
//!
//! NOTE: the variable-length structs (`ioctl_gntalloc_alloc_gref`,
//! `ioctl_gntdev_map_grant_ref`) are declared here with their fixed head
//! only; the callers build a buffer of the head plus the array, at least
//! as long as the C struct (the kernel copies `sizeof(struct)` bytes in
//! and out).

use std::mem::size_of;

/// `_IOC(_IOC_NONE, kind, number, size)` in the generic Linux encoding
/// (x86, Arm, RISC-V): number in bits 0-7, type in 8-15, size in 16-29,
/// direction (none = 0) in 30-31.
pub(crate) const fn request_none(kind: u8, number: u8, size: usize) -> u32 {
    ((size as u32) << 16) | ((kind as u32) << 8) | number as u32
}

/// `struct ioctl_gntalloc_alloc_gref` without its `gref_ids[]` tail.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GntallocAllocHead {
    /// 0: `domid`, the domain given access.
    pub domain: u16,
    /// 2: `flags` (`GNTALLOC_FLAG_WRITABLE`).
    pub flags: u16,
    /// 4: `count` of pages.
    pub count: u32,
    /// 8: `index` (out): the mmap offset.
    pub index: u64,
    // 16: gref_ids[count] (out).
}
const _: () = assert!(size_of::<GntallocAllocHead>() == 16);
/// `sizeof(struct ioctl_gntalloc_alloc_gref)`: head, one `u32`, padding.
pub(crate) const GNTALLOC_ALLOC_SIZE: usize = 24;
/// `GNTALLOC_FLAG_WRITABLE`.
pub(crate) const GNTALLOC_FLAG_WRITABLE: u16 = 1;
/// `IOCTL_GNTALLOC_ALLOC_GREF`.
pub(crate) const IOCTL_GNTALLOC_ALLOC_GREF: u32 = request_none(b'G', 5, GNTALLOC_ALLOC_SIZE);

/// `struct ioctl_gntalloc_dealloc_gref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GntallocDealloc {
    /// 0: `index` from the allocation.
    pub index: u64,
    /// 8: `count` of pages.
    pub count: u32,
    // 12: padding to 16.
}
const _: () = assert!(size_of::<GntallocDealloc>() == 16);
/// `IOCTL_GNTALLOC_DEALLOC_GREF`.
pub(crate) const IOCTL_GNTALLOC_DEALLOC_GREF: u32 =
    request_none(b'G', 6, size_of::<GntallocDealloc>());

/// `struct ioctl_gntalloc_unmap_notify` (same layout as gntdev's).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UnmapNotify {
    /// 0: `index`: mmap offset of a byte in the page.
    pub index: u64,
    /// 8: `action`: `UNMAP_NOTIFY_*` bits.
    pub action: u32,
    /// 12: `event_channel_port`.
    pub event_channel_port: u32,
}
const _: () = assert!(size_of::<UnmapNotify>() == 16);
/// `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`.
pub(crate) const IOCTL_GNTALLOC_SET_UNMAP_NOTIFY: u32 =
    request_none(b'G', 7, size_of::<UnmapNotify>());
/// `UNMAP_NOTIFY_CLEAR_BYTE`.
pub(crate) const UNMAP_NOTIFY_CLEAR_BYTE: u32 = 0x1;
/// `UNMAP_NOTIFY_SEND_EVENT`.
pub(crate) const UNMAP_NOTIFY_SEND_EVENT: u32 = 0x2;

/// `struct ioctl_gntdev_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GntdevGrantRef {
    /// 0: `domid` of the granting domain.
    pub domain: u32,
    /// 4: `ref`.
    pub reference: u32,
}
const _: () = assert!(size_of::<GntdevGrantRef>() == 8);

/// `struct ioctl_gntdev_map_grant_ref` without its `refs[]` tail.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GntdevMapHead {
    /// 0: `count` of grants.
    pub count: u32,
    /// 4: `pad`.
    pub pad: u32,
    /// 8: `index` (out): the mmap offset.
    pub index: u64,
    // 16: refs[count] (in).
}
const _: () = assert!(size_of::<GntdevMapHead>() == 16);
/// `sizeof(struct ioctl_gntdev_map_grant_ref)`: head and one grant ref.
pub(crate) const GNTDEV_MAP_SIZE: usize = size_of::<GntdevMapHead>() + size_of::<GntdevGrantRef>();
/// `IOCTL_GNTDEV_MAP_GRANT_REF`.
pub(crate) const IOCTL_GNTDEV_MAP_GRANT_REF: u32 = request_none(b'G', 0, GNTDEV_MAP_SIZE);

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GntdevUnmap {
    /// 0: `index` from the map.
    pub index: u64,
    /// 8: `count` of pages.
    pub count: u32,
    /// 12: `pad`.
    pub pad: u32,
}
const _: () = assert!(size_of::<GntdevUnmap>() == 16);
/// `IOCTL_GNTDEV_UNMAP_GRANT_REF`.
pub(crate) const IOCTL_GNTDEV_UNMAP_GRANT_REF: u32 =
    request_none(b'G', 1, size_of::<GntdevUnmap>());

/// `struct ioctl_evtchn_bind_unbound_port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EvtchnBindUnboundPort {
    /// 0: `remote_domain` (an `unsigned int`).
    pub remote_domain: u32,
}
const _: () = assert!(size_of::<EvtchnBindUnboundPort>() == 4);
/// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`: returns the local port.
pub(crate) const IOCTL_EVTCHN_BIND_UNBOUND_PORT: u32 =
    request_none(b'E', 2, size_of::<EvtchnBindUnboundPort>());

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EvtchnBindInterdomain {
    /// 0: `remote_domain`.
    pub remote_domain: u32,
    /// 4: `remote_port`.
    pub remote_port: u32,
}
const _: () = assert!(size_of::<EvtchnBindInterdomain>() == 8);
/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: returns the local port.
pub(crate) const IOCTL_EVTCHN_BIND_INTERDOMAIN: u32 =
    request_none(b'E', 1, size_of::<EvtchnBindInterdomain>());

/// `struct ioctl_evtchn_unbind` and `struct ioctl_evtchn_notify`: one port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EvtchnPort {
    /// 0: `port`.
    pub port: u32,
}
const _: () = assert!(size_of::<EvtchnPort>() == 4);
/// `IOCTL_EVTCHN_UNBIND`.
pub(crate) const IOCTL_EVTCHN_UNBIND: u32 = request_none(b'E', 3, size_of::<EvtchnPort>());
/// `IOCTL_EVTCHN_NOTIFY`.
pub(crate) const IOCTL_EVTCHN_NOTIFY: u32 = request_none(b'E', 4, size_of::<EvtchnPort>());
/// `IOCTL_EVTCHN_RESET`: empties the event queue and clears its overflow
/// error; no argument.
pub(crate) const IOCTL_EVTCHN_RESET: u32 = request_none(b'E', 5, 0);

/// Issues `request` on `file` with `argument`; the ioctl's non-negative
/// return value on success.
///
/// # Safety
/// `argument` must point to memory laid out as `request`'s struct expects,
/// at least as long as the kernel reads and writes for that request (for
/// the variable-length requests: the head, the whole array, and no less
/// than the C struct's size), valid for reads and writes for the call.
pub(crate) unsafe fn call(
    file: std::os::fd::BorrowedFd<'_>,
    request: u32,
    argument: *mut std::ffi::c_void,
) -> std::io::Result<i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: the caller promises that `argument` matches `request`; the
    // file descriptor is open for the duration (it is borrowed).
    let result = unsafe {
        nix::libc::ioctl(
            file.as_raw_fd(),
            request as nix::sys::ioctl::ioctl_num_type,
            argument,
        )
    };
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request codes as printed by a C program that includes the
    /// headers from `libxen-dev` 4.17 (`printf("%#x", IOCTL_...)`).
    #[test]
    fn request_codes_match_the_headers() {
        assert_eq!(IOCTL_GNTALLOC_ALLOC_GREF, 0x0018_4705);
        assert_eq!(IOCTL_GNTALLOC_DEALLOC_GREF, 0x0010_4706);
        assert_eq!(IOCTL_GNTALLOC_SET_UNMAP_NOTIFY, 0x0010_4707);
        assert_eq!(IOCTL_GNTDEV_MAP_GRANT_REF, 0x0018_4700);
        assert_eq!(IOCTL_GNTDEV_UNMAP_GRANT_REF, 0x0010_4701);
        assert_eq!(IOCTL_EVTCHN_BIND_UNBOUND_PORT, 0x0004_4502);
        assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x0008_4501);
        assert_eq!(IOCTL_EVTCHN_UNBIND, 0x0004_4503);
        assert_eq!(IOCTL_EVTCHN_NOTIFY, 0x0004_4504);
        assert_eq!(IOCTL_EVTCHN_RESET, 0x0000_4505);
    }

    /// `sizeof` of each struct as the same C program printed it.
    #[test]
    fn struct_sizes_match_the_headers() {
        assert_eq!(GNTALLOC_ALLOC_SIZE, 24);
        assert_eq!(size_of::<GntallocDealloc>(), 16);
        assert_eq!(size_of::<UnmapNotify>(), 16);
        assert_eq!(size_of::<GntdevGrantRef>(), 8);
        assert_eq!(GNTDEV_MAP_SIZE, 24);
        assert_eq!(size_of::<GntdevUnmap>(), 16);
        assert_eq!(size_of::<EvtchnBindUnboundPort>(), 4);
        assert_eq!(size_of::<EvtchnBindInterdomain>(), 8);
        assert_eq!(size_of::<EvtchnPort>(), 4);
        // gref_ids[] and refs[] both start right after the 16-byte head.
        assert_eq!(std::mem::offset_of!(GntallocAllocHead, index), 8);
        assert_eq!(std::mem::offset_of!(GntdevMapHead, index), 8);
    }
}
