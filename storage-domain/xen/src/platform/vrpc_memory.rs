//! The VRPC transport's memory on Xen: the [`vrpc::SharedMemory`] and
//! [`vrpc::Doorbell`] implementations the backend runs on.
//!
//! - [`MappedRing`]: a guest's ring pages, mapped over our heap
//!   ([`grants::ForeignMapping`]);
//! - [`GrantCopyPool`]: a guest's data pool, never mapped: every read or
//!   write is a batched `GNTTABOP_copy` through the pool's grant references
//!   (a revoked grant fails that one copy, which the backend reports as a
//!   protocol error);
//! - [`TablePages`]: an export's metadata table in our own heap pages, which
//!   guests map read-only through grants;
//! - [`EventDoorbell`]: `EVTCHNOP_send` on the connection's port.
//!
//! As in `crates/vrpc-hosted/src/region.rs`: no `&`/`&mut` into memory a
//! guest can write is ever formed; words are atomics on raw pointers, byte
//! runs are volatile copies, every offset is bounds-checked first.

use super::grants::{self, ForeignError, ForeignMapping};
use super::hypercall;
use super::memory;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::Cell;
use core::sync::atomic::{AtomicU32, Ordering};
use vrpc::memory::{check_range, check_word};
use vrpc::{Doorbell, OutOfBounds, SharedMemory};
use xen_abi::{DomainId, EventChannelPort, GrantRef, MachineFrame, PAGE_SIZE};

/// Raw access to `length` bytes at `base`.
#[derive(Debug, Clone, Copy)]
struct RawRegion {
    base: *mut u8,
    length: usize,
}

impl RawRegion {
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        check_word(self.length, offset)?;
        // SAFETY: `offset + 4 <= length`, 4-aligned (check_word), and the
        // base is page-aligned, so the word is aligned and inside the
        // region, which the owner keeps mapped for `self`'s use; the
        // reference lives for this one atomic access.
        let word = unsafe { AtomicU32::from_ptr(self.base.add(offset).cast()) };
        Ok(u32::from_le(word.load(order)))
    }

    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        check_word(self.length, offset)?;
        // SAFETY: as in load_u32.
        let word = unsafe { AtomicU32::from_ptr(self.base.add(offset).cast()) };
        word.store(value.to_le(), order);
        Ok(())
    }

    fn read(&self, offset: usize, destination: &mut [u8]) -> Result<(), OutOfBounds> {
        check_range(self.length, offset, destination.len())?;
        for (index, byte) in destination.iter_mut().enumerate() {
            // SAFETY: `offset + index < offset + len <= length`; a volatile
            // byte read of live memory (the peer may change it: the copy is
            // validated afterwards by the caller).
            *byte = unsafe { self.base.add(offset + index).read_volatile() };
        }
        Ok(())
    }

    fn write(&self, offset: usize, source: &[u8]) -> Result<(), OutOfBounds> {
        check_range(self.length, offset, source.len())?;
        for (index, byte) in source.iter().enumerate() {
            // SAFETY: in bounds as in read; a volatile byte write.
            unsafe { self.base.add(offset + index).write_volatile(*byte) };
        }
        Ok(())
    }
}

/// A guest's ring pages, mapped writable over a run of our heap pages;
/// unmapped on drop (the heap pages get their own mappings back).
#[derive(Debug)]
pub struct MappedRing {
    mapping: ForeignMapping,
}

impl MappedRing {
    /// Map `references` of `domain`, writable.
    ///
    /// # Errors
    /// [`ForeignError`] from the map.
    pub fn map(domain: DomainId, references: &[GrantRef]) -> Result<MappedRing, ForeignError> {
        Ok(MappedRing {
            mapping: ForeignMapping::map(domain, references, true)?,
        })
    }

    fn region(&self) -> RawRegion {
        RawRegion {
            base: self.mapping.as_ptr(),
            length: self.mapping.size(),
        }
    }
}

impl SharedMemory for MappedRing {
    fn size(&self) -> usize {
        self.mapping.size()
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        self.region().load_u32(offset, order)
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        self.region().store_u32(offset, value, order)
    }
    fn read(&self, offset: usize, destination: &mut [u8]) -> Result<(), OutOfBounds> {
        self.region().read(offset, destination)
    }
    fn write(&self, offset: usize, source: &[u8]) -> Result<(), OutOfBounds> {
        self.region().write(offset, source)
    }
}

/// A guest's data pool, reached only through `GNTTABOP_copy`.
///
/// The protocol never makes word accesses on the pool (`vrpc::Backend`
/// only reads payloads and writes reply data), so `load_u32`/`store_u32`
/// refuse. A failed copy is recorded in the shared [`CopyFailure`] cell
/// (the backend sees only `OutOfBounds`) and refused.
#[derive(Debug)]
pub struct GrantCopyPool {
    domain: DomainId,
    references: Vec<GrantRef>,
    failure: Rc<Cell<Option<ForeignError>>>,
}

/// Where a [`GrantCopyPool`] leaves the reason of its last failed copy.
pub type CopyFailure = Rc<Cell<Option<ForeignError>>>;

impl GrantCopyPool {
    /// The pool of `domain` whose page `i` is granted as `references[i]`.
    pub fn new(domain: DomainId, references: Vec<GrantRef>) -> (GrantCopyPool, CopyFailure) {
        let failure = Rc::new(Cell::new(None));
        (
            GrantCopyPool {
                domain,
                references,
                failure: Rc::clone(&failure),
            },
            failure,
        )
    }

    fn refuse(&self, offset: usize, length: usize, error: ForeignError) -> OutOfBounds {
        self.failure.set(Some(error));
        OutOfBounds { offset, length }
    }
}

impl SharedMemory for GrantCopyPool {
    fn size(&self) -> usize {
        self.references.len() * PAGE_SIZE
    }
    fn load_u32(&self, offset: usize, _: Ordering) -> Result<u32, OutOfBounds> {
        Err(OutOfBounds { offset, length: 4 })
    }
    fn store_u32(&self, offset: usize, _: u32, _: Ordering) -> Result<(), OutOfBounds> {
        Err(OutOfBounds { offset, length: 4 })
    }
    fn read(&self, offset: usize, destination: &mut [u8]) -> Result<(), OutOfBounds> {
        check_range(self.size(), offset, destination.len())?;
        grants::copy_from_foreign(self.domain, &self.references, offset, destination)
            .map_err(|error| self.refuse(offset, destination.len(), error))
    }
    fn write(&self, offset: usize, source: &[u8]) -> Result<(), OutOfBounds> {
        check_range(self.size(), offset, source.len())?;
        grants::copy_to_foreign(self.domain, &self.references, offset, source)
            .map_err(|error| self.refuse(offset, source.len(), error))
    }
}

/// Contiguous zeroed pages of our heap holding an export's metadata table;
/// guests map them read-only through grants. Freed on drop: the owner ends
/// every grant first (or leaks the region).
#[derive(Debug)]
pub struct TablePages {
    base: *mut u8,
    pages: usize,
}

// SAFETY: the pages are owned by this value until drop, and reached only
// through atomics and volatile copies at checked offsets (one vCPU, no
// interrupts: nothing runs concurrently on our side anyway).
unsafe impl Send for TablePages {}
// SAFETY: as for Send: `&TablePages` offers only atomic and volatile
// accesses.
unsafe impl Sync for TablePages {}

fn pages_layout(pages: usize) -> Option<core::alloc::Layout> {
    core::alloc::Layout::from_size_align(pages.checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok()
}

impl TablePages {
    /// `pages` zeroed pages; `None` when the heap cannot hold them.
    pub fn new(pages: usize) -> Option<TablePages> {
        let layout = pages_layout(pages.max(1))?;
        // SAFETY: non-zero size.
        let base = unsafe { alloc::alloc::alloc_zeroed(layout) };
        (!base.is_null()).then_some(TablePages {
            base,
            pages: pages.max(1),
        })
    }

    /// The machine frame of each page, in order (what gets granted).
    pub fn frames(&self) -> Vec<MachineFrame> {
        (0..self.pages)
            .map(|index| {
                memory::machine_frame_of(self.base as u64 + (index * PAGE_SIZE) as u64)
                    .expect("heap pages belong to the domain")
            })
            .collect()
    }

    fn region(&self) -> RawRegion {
        RawRegion {
            base: self.base,
            length: self.pages * PAGE_SIZE,
        }
    }
}

impl Drop for TablePages {
    fn drop(&mut self) {
        if let Some(layout) = pages_layout(self.pages) {
            // SAFETY: allocated in `new` with this layout, freed once.
            unsafe { alloc::alloc::dealloc(self.base, layout) };
        }
    }
}

impl SharedMemory for TablePages {
    fn size(&self) -> usize {
        self.pages * PAGE_SIZE
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        self.region().load_u32(offset, order)
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        self.region().store_u32(offset, value, order)
    }
    fn read(&self, offset: usize, destination: &mut [u8]) -> Result<(), OutOfBounds> {
        self.region().read(offset, destination)
    }
    fn write(&self, offset: usize, source: &[u8]) -> Result<(), OutOfBounds> {
        self.region().write(offset, source)
    }
}

/// The doorbell of one connection: `EVTCHNOP_send` on its bound port.
#[derive(Debug, Clone, Copy)]
pub struct EventDoorbell {
    /// The local port bound to the guest's.
    pub port: EventChannelPort,
}

impl Doorbell for EventDoorbell {
    fn notify(&self) {
        hypercall::notify(self.port);
    }
}
