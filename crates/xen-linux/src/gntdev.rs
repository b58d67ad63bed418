//! Mapping pages another domain granted us, through `/dev/xen/gntdev`.
//!
//! `IOCTL_GNTDEV_MAP_GRANT_REF` reserves an offset for a list of grant
//! references; `mmap` of that offset maps them, read-only when the mapping
//! lacks `PROT_WRITE` (the device then maps with `GNTMAP_readonly`, which
//! is what a read-only grant requires). Header: `include/uapi/xen/gntdev.h`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;

use vrpc::{OutOfBounds, SharedMemory};
use vrpc_hosted::MappedRegion;

use crate::ioctl;

/// Another domain's granted pages, mapped here in the order of their
/// references.
///
/// Dropping it unmaps the pages, then releases the reservation.
#[derive(Debug)]
pub struct ForeignPages {
    // NOTE: field order is drop order: munmap before
    // IOCTL_GNTDEV_UNMAP_GRANT_REF.
    region: MappedRegion,
    reservation: Reservation,
}

/// The device's reservation of an offset; `Drop` releases it.
#[derive(Debug)]
struct Reservation {
    device: OwnedFd,
    index: u64,
    count: u32,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut argument = ioctl::GntdevUnmap {
            index: self.index,
            count: self.count,
            pad: 0,
        };
        // SAFETY: `argument` is the struct IOCTL_GNTDEV_UNMAP_GRANT_REF
        // reads, alive for the call.
        let _ = unsafe {
            ioctl::call(
                self.device.as_fd(),
                ioctl::IOCTL_GNTDEV_UNMAP_GRANT_REF,
                (&raw mut argument).cast(),
            )
        };
    }
}

impl ForeignPages {
    /// Maps the pages `domain` granted as `references`, writable here only
    /// when `writable` (a read-only grant must be mapped read-only).
    ///
    /// # Errors
    /// `InvalidInput` for an empty or absurd list; the open, ioctl or mmap
    /// failure otherwise (a bad or revoked reference fails the `mmap`).
    pub fn map(domain: u16, references: &[u32], writable: bool) -> io::Result<ForeignPages> {
        let count = references.len();
        let length = crate::pages_to_bytes(count)?;
        let device = crate::open_device("/dev/xen/gntdev", false)?;
        // Head (two u64 words), then one u64-sized `ioctl_gntdev_grant_ref`
        // per reference: at least the C struct's 24 bytes for count >= 1.
        let mut buffer = vec![0u64; 2 + count];
        let head = ioctl::GntdevMapHead {
            count: count as u32,
            pad: 0,
            index: 0,
        };
        let pointer = buffer.as_mut_ptr();
        // SAFETY: the buffer is 8-aligned and holds the 16-byte head plus
        // `count` 8-byte grant refs; each write stays inside it.
        unsafe {
            pointer.cast::<ioctl::GntdevMapHead>().write(head);
            let refs = pointer.add(2).cast::<ioctl::GntdevGrantRef>();
            for (index, &reference) in references.iter().enumerate() {
                refs.add(index).write(ioctl::GntdevGrantRef {
                    domain: u32::from(domain),
                    reference,
                });
            }
        }
        // SAFETY: the buffer is laid out as `struct
        // ioctl_gntdev_map_grant_ref` with `count` refs, at least `sizeof`
        // of the struct, alive across the call.
        unsafe {
            ioctl::call(
                device.as_fd(),
                ioctl::IOCTL_GNTDEV_MAP_GRANT_REF,
                pointer.cast(),
            )
        }?;
        // SAFETY: as above; the kernel wrote the head back.
        let head = unsafe { pointer.cast::<ioctl::GntdevMapHead>().read() };
        let reservation = Reservation {
            device: device.try_clone()?,
            index: head.index,
            count: count as u32,
        };
        let region = MappedRegion::map_device(device, head.index, length, writable)?;
        Ok(ForeignPages {
            region,
            reservation,
        })
    }

    /// Pages mapped.
    pub fn page_count(&self) -> usize {
        self.reservation.count as usize
    }

    /// Whether this process may write the pages.
    pub fn is_writable(&self) -> bool {
        self.region.is_writable()
    }
}

impl SharedMemory for ForeignPages {
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
    fn empty_list_is_refused_before_any_device() {
        let error = ForeignPages::map(0, &[], false).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn maps_our_own_grant_under_xen() {
        if !std::path::Path::new("/dev/xen/gntdev").exists() {
            eprintln!("skipped: /dev/xen/gntdev absent (not running under Xen)");
            return;
        }
        // Grant a page to ourselves and map it back read-only.
        let Ok(domain) = crate::Xenstore::open().and_then(|store| store.domain_id()) else {
            eprintln!("skipped: no xenstore to learn our domain id");
            return;
        };
        let granted = crate::GrantedPages::allocate(domain, 1, false).unwrap();
        granted.write(0, b"grant").unwrap();
        let mapped = ForeignPages::map(domain, granted.references(), false).unwrap();
        let mut back = [0; 5];
        mapped.read(0, &mut back).unwrap();
        assert_eq!(&back, b"grant");
        assert!(mapped.write(0, b"x").is_err());
    }
}
