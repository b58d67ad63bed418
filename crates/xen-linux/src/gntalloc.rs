//! Sharing our pages with another domain through `/dev/xen/gntalloc`.
//!
//! `IOCTL_GNTALLOC_ALLOC_GREF` allocates pages in the kernel and grants
//! them to one domain; the pages are then `mmap`ed at the offset the ioctl
//! returns. Linux limits the grants of all gntalloc users together (module
//! parameter `limit`, 1024 by default). Header: `include/uapi/xen/gntalloc.h`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;

use vrpc::{OutOfBounds, SharedMemory};
use vrpc_hosted::MappedRegion;

use crate::ioctl;

/// What the kernel does for the peer when our side of the pages goes away
/// (this process unmaps them, exits or dies): `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnmapNotify {
    /// Zero this byte offset of the region (`UNMAP_NOTIFY_CLEAR_BYTE`).
    pub clear_byte: Option<usize>,
    /// Signal this local event channel port (`UNMAP_NOTIFY_SEND_EVENT`).
    pub event_channel_port: Option<u32>,
}

/// Pages of ours granted to one domain, mapped here read-write.
///
/// Dropping it unmaps the pages, then ends the grants. If the peer still
/// maps them, Linux keeps the pages until the peer lets go.
#[derive(Debug)]
pub struct GrantedPages {
    // NOTE: field order is drop order: the mapping goes before the
    // allocation's `Drop` issues IOCTL_GNTALLOC_DEALLOC_GREF.
    region: MappedRegion,
    references: Vec<u32>,
    allocation: Allocation,
}

/// The kernel's allocation; `Drop` deallocates it.
#[derive(Debug)]
struct Allocation {
    device: OwnedFd,
    index: u64,
    count: u32,
}

impl Drop for Allocation {
    fn drop(&mut self) {
        let mut argument = ioctl::GntallocDealloc {
            index: self.index,
            count: self.count,
        };
        // SAFETY: `argument` is the struct IOCTL_GNTALLOC_DEALLOC_GREF reads,
        // alive for the call.
        let _ = unsafe {
            ioctl::call(
                self.device.as_fd(),
                ioctl::IOCTL_GNTALLOC_DEALLOC_GREF,
                (&raw mut argument).cast(),
            )
        };
    }
}

impl GrantedPages {
    /// Allocates `count` zeroed pages, grants them to `domain` (writable by
    /// it when `writable`) and maps them here read-write.
    ///
    /// # Errors
    /// `InvalidInput` for zero or absurd counts; the open, ioctl or mmap
    /// failure otherwise (`ENOSPC`-like errors when the gntalloc limit is
    /// reached).
    pub fn allocate(domain: u16, count: usize, writable: bool) -> io::Result<GrantedPages> {
        let length = crate::pages_to_bytes(count)?;
        let device = crate::open_device("/dev/xen/gntalloc", false)?;
        // The head, then `count` u32 grant references, and never less than
        // the C struct (the kernel copies `sizeof` bytes in and out).
        let bytes = (16 + 4 * count).max(ioctl::GNTALLOC_ALLOC_SIZE);
        let mut buffer = vec![0u64; bytes.div_ceil(8)];
        let head = ioctl::GntallocAllocHead {
            domain,
            flags: if writable {
                ioctl::GNTALLOC_FLAG_WRITABLE
            } else {
                0
            },
            count: count as u32,
            index: 0,
        };
        let pointer = buffer.as_mut_ptr();
        // SAFETY: the buffer holds at least 16 bytes and is 8-aligned, as
        // the head needs.
        unsafe { pointer.cast::<ioctl::GntallocAllocHead>().write(head) };
        // SAFETY: the buffer is laid out as `struct
        // ioctl_gntalloc_alloc_gref` with room for `count` grant references
        // and at least `sizeof` of the struct; it lives across the call.
        unsafe {
            ioctl::call(
                device.as_fd(),
                ioctl::IOCTL_GNTALLOC_ALLOC_GREF,
                pointer.cast(),
            )
        }?;
        // SAFETY: as above; the kernel wrote the head back.
        let head = unsafe { pointer.cast::<ioctl::GntallocAllocHead>().read() };
        // SAFETY: the kernel wrote `count` u32 grant references at byte 16
        // of the buffer, which is 8-aligned and at least `16 + 4 * count`
        // bytes long; the slice is copied out before the buffer goes.
        let references = unsafe {
            std::slice::from_raw_parts(pointer.cast::<u8>().add(16).cast::<u32>(), count)
        }
        .to_vec();
        let allocation = Allocation {
            device: device.try_clone()?,
            index: head.index,
            count: count as u32,
        };
        let region = MappedRegion::map_device(device, head.index, length, true)?;
        Ok(GrantedPages {
            region,
            references,
            allocation,
        })
    }

    /// The grant reference of each page, in order.
    pub fn references(&self) -> &[u32] {
        &self.references
    }

    /// Pages granted.
    pub fn page_count(&self) -> usize {
        self.references.len()
    }

    /// Tells the kernel what to do for the peer when our side goes away:
    /// zero a byte of the region and/or signal an event channel. One
    /// setting per allocation (the page of `clear_byte`, or the first page);
    /// a later call replaces it.
    ///
    /// # Errors
    /// `InvalidInput` when `clear_byte` lies outside the region; the ioctl's
    /// failure otherwise.
    pub fn set_unmap_notify(&self, notify: UnmapNotify) -> io::Result<()> {
        let byte = notify.clear_byte.unwrap_or(0);
        if byte >= self.region.size() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unmap notify byte outside the granted pages",
            ));
        }
        let mut action = 0;
        if notify.clear_byte.is_some() {
            action |= ioctl::UNMAP_NOTIFY_CLEAR_BYTE;
        }
        if notify.event_channel_port.is_some() {
            action |= ioctl::UNMAP_NOTIFY_SEND_EVENT;
        }
        let mut argument = ioctl::UnmapNotify {
            index: self.allocation.index + byte as u64,
            action,
            event_channel_port: notify.event_channel_port.unwrap_or(0),
        };
        // SAFETY: `argument` is the struct IOCTL_GNTALLOC_SET_UNMAP_NOTIFY
        // reads, alive for the call.
        unsafe {
            ioctl::call(
                self.allocation.device.as_fd(),
                ioctl::IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
                (&raw mut argument).cast(),
            )
        }?;
        Ok(())
    }
}

impl SharedMemory for GrantedPages {
    fn size(&self) -> usize {
        self.region.size()
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        self.region.load_u32(offset, order)
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        self.region.store_u32(offset, value, order)
    }
    fn read(&self, offset: usize, destination: &mut [u8]) -> Result<(), OutOfBounds> {
        self.region.read(offset, destination)
    }
    fn write(&self, offset: usize, source: &[u8]) -> Result<(), OutOfBounds> {
        self.region.write(offset, source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_xen_or_refuses_cleanly() {
        if !std::path::Path::new("/dev/xen/gntalloc").exists() {
            eprintln!("skipped: /dev/xen/gntalloc absent (not running under Xen)");
            return;
        }
        let pages = GrantedPages::allocate(0, 2, true).expect("allocate under Xen");
        assert_eq!(pages.references().len(), 2);
        pages.write(4096, b"hello").unwrap();
        let mut back = [0; 5];
        pages.read(4096, &mut back).unwrap();
        assert_eq!(&back, b"hello");
    }

    #[test]
    fn zero_pages_are_refused_before_any_device() {
        let error = GrantedPages::allocate(0, 0, true).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
