//! Grant table v1: lets other domains map pages we own, and lets us map
//! or copy pages other domains granted us.
//!
//! Our side: `GNTTABOP_setup_table` returns the table's machine frames;
//! they are mapped over a static area and written with atomics only (Xen
//! sets and clears `GTF_reading`/`GTF_writing` while the grantee has a
//! mapping). [`FRAMES`] frames hold 16384 entries.
//!
//! The grantee side (the VRPC backend): [`ForeignMapping`] maps a guest's
//! grants over a run of our own heap pages (`GNTMAP_host_map` at their
//! virtual addresses: a PV guest without page tables of its own can only
//! map where it already maps) and restores the heap pages' own mappings
//! when unmapped; [`copy_from_foreign`] and [`copy_to_foreign`] copy
//! between a guest's granted pages and our memory with batched
//! `GNTTABOP_copy`, never mapping them.

use super::hypercall::{self, HypercallError};
use super::memory::{self, StaticPages};
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU16, AtomicU32, Ordering};
use spin::Mutex;
use xen_abi::grant_table::{
    status, GnttabCopy, GnttabCopyPointer, GnttabMapGrantRef, GnttabUnmapGrantRef,
    ENTRIES_PER_FRAME, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTMAP_HOST_MAP, GNTMAP_READONLY,
    GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING, NR_RESERVED_ENTRIES,
};
use xen_abi::{DomainId, GrantRef, MachineFrame, PAGE_SIZE};

/// Frames of the grant table (512 entries each: 16384 entries, of which
/// the first 8 are the toolstack's). Xen 4.17 lets a domU grow its table
/// to 64 frames unless `max_grant_frames` says less.
pub const FRAMES: usize = 32;

static TABLE: StaticPages<{ FRAMES * PAGE_SIZE }> = StaticPages::new();
static FREE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Why a grant operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// Setting the table up failed.
    Setup(HypercallError),
    /// Every entry is in use.
    Exhausted,
    /// The grantee still has the page mapped; the entry stays granted.
    InUse,
    /// The frame number does not fit a v1 entry.
    FrameTooHigh,
}

/// Entries free right now.
pub fn free_entries() -> usize {
    FREE.lock().len()
}

/// Set up and map the table.
///
/// # Errors
/// [`GrantError::Setup`] when Xen refuses.
pub fn init() -> Result<(), GrantError> {
    let mut frames = [0u64; FRAMES];
    // NOTE: asking for all frames at once; Xen grows the table to them.
    hypercall::grant_table_setup(&mut frames).map_err(GrantError::Setup)?;
    for (index, frame) in frames.iter().enumerate() {
        let address = TABLE.as_ptr() as u64 + (index * PAGE_SIZE) as u64;
        // SAFETY: TABLE is used only here, and from now on accessed only as
        // grant entries through atomics.
        unsafe { memory::map_machine_page(address, frame << 12) }.map_err(GrantError::Setup)?;
    }
    let mut free = FREE.lock();
    free.clear();
    free.extend((NR_RESERVED_ENTRIES..(FRAMES * ENTRIES_PER_FRAME) as u32).rev());
    Ok(())
}

fn entry_flags(reference: GrantRef) -> &'static AtomicU16 {
    assert!((reference.0 as usize) < FRAMES * ENTRIES_PER_FRAME);
    // SAFETY: in bounds (asserted); entries are 8 bytes, flags at offset 0.
    unsafe { AtomicU16::from_ptr(TABLE.as_ptr().add(reference.0 as usize * 8).cast()) }
}

fn entry_domain(reference: GrantRef) -> &'static AtomicU16 {
    // SAFETY: as in entry_flags; domid at offset 2.
    unsafe { AtomicU16::from_ptr(TABLE.as_ptr().add(reference.0 as usize * 8 + 2).cast()) }
}

fn entry_frame(reference: GrantRef) -> &'static AtomicU32 {
    // SAFETY: as in entry_flags; frame at offset 4.
    unsafe { AtomicU32::from_ptr(TABLE.as_ptr().add(reference.0 as usize * 8 + 4).cast()) }
}

/// Grant `domain` access to `frame`.
///
/// # Errors
/// [`GrantError::Exhausted`], [`GrantError::FrameTooHigh`].
pub fn grant(
    domain: DomainId,
    frame: MachineFrame,
    read_only: bool,
) -> Result<GrantRef, GrantError> {
    // NOTE: v1 entries hold 32-bit frame numbers (16 TiB of host memory).
    let frame_number = u32::try_from(frame.0).map_err(|_| GrantError::FrameTooHigh)?;
    let reference = GrantRef(FREE.lock().pop().ok_or(GrantError::Exhausted)?);
    entry_frame(reference).store(frame_number, Ordering::Relaxed);
    entry_domain(reference).store(domain.0, Ordering::Relaxed);
    // Frame and domain must be visible before the entry becomes valid.
    fence(Ordering::Release);
    let flags = GTF_PERMIT_ACCESS | if read_only { GTF_READONLY } else { 0 };
    entry_flags(reference).store(flags, Ordering::Release);
    Ok(reference)
}

/// End a grant the grantee no longer maps, and recycle the entry.
///
/// # Errors
/// [`GrantError::InUse`] while the grantee still maps the page.
pub fn end(reference: GrantRef) -> Result<(), GrantError> {
    let flags = entry_flags(reference);
    let mut current = flags.load(Ordering::Acquire);
    loop {
        if current & (GTF_READING | GTF_WRITING) != 0 {
            return Err(GrantError::InUse);
        }
        match flags.compare_exchange(current, 0, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(actual) => current = actual,
        }
    }
    FREE.lock().push(reference.0);
    Ok(())
}

/// Why mapping or copying a foreign grant failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForeignError {
    /// The hypercall itself failed.
    Hypercall(HypercallError),
    /// Xen refused one operation: its `GNTST_*` status.
    Status(i16),
    /// The heap has no room for the pages to map over.
    OutOfMemory,
    /// A range outside the granted pages (a bug of the caller's checks).
    OutOfRange,
    /// A local buffer outside the domain's own pages.
    LocalFrame,
    /// Restoring a heap page's own mapping failed (the pages are leaked).
    Restore(HypercallError),
}

impl core::fmt::Display for ForeignError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ForeignError::Hypercall(error) => write!(formatter, "grant operation: {error}"),
            ForeignError::Status(code) => {
                write!(
                    formatter,
                    "grant operation: {} ({code})",
                    status::name(*code)
                )
            }
            ForeignError::OutOfMemory => formatter.write_str("no heap left to map over"),
            ForeignError::OutOfRange => formatter.write_str("range outside the granted pages"),
            ForeignError::LocalFrame => formatter.write_str("local buffer outside the domain"),
            ForeignError::Restore(error) => {
                write!(formatter, "restoring a heap page's mapping: {error}")
            }
        }
    }
}

/// The page table entry of one of our own pages (as the domain builder
/// maps the image), for restoring a page after a foreign mapping.
fn own_page_entry(virtual_address: u64) -> Option<u64> {
    use xen_abi::xen::page_table_entry::{ACCESSED, DIRTY, PRESENT, USER, WRITABLE};
    let frame = memory::machine_frame_of(virtual_address)?;
    Some((frame.0 << 12) | PRESENT | WRITABLE | USER | ACCESSED | DIRTY)
}

/// Foreign pages mapped over a run of our heap pages: one guest's grants,
/// contiguous in our address space in the order given. The heap pages'
/// own frames stay ours (unmapped meanwhile) and get their mappings back
/// on [`ForeignMapping::unmap`] or drop.
#[derive(Debug)]
pub struct ForeignMapping {
    address: *mut u8,
    /// Pages allocated (at least one).
    allocated: usize,
    /// `grant_handle_t` of each mapped page; empty once unmapped.
    handles: Vec<u32>,
    /// A page whose own mapping could not be restored: the allocation is
    /// leaked instead of freed.
    broken: bool,
}

// SAFETY: the mapping is owned exclusively by this value; accesses go
// through raw pointers (the kernel has one vCPU and no interrupts).
unsafe impl Send for ForeignMapping {}

fn heap_layout(pages: usize) -> Option<core::alloc::Layout> {
    core::alloc::Layout::from_size_align(pages.checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok()
}

fn statuses_ok<T>(
    result: Result<(), HypercallError>,
    entries: &[T],
    status_of: impl Fn(&T) -> i16,
) -> Result<(), ForeignError> {
    result.map_err(ForeignError::Hypercall)?;
    match entries
        .iter()
        .map(status_of)
        .find(|code| *code != status::OKAY)
    {
        Some(code) => Err(ForeignError::Status(code)),
        None => Ok(()),
    }
}

impl ForeignMapping {
    /// Map `references` of `domain` (read-only or writable), page `i` at
    /// byte `i * 4096`.
    ///
    /// # Errors
    /// [`ForeignError`]; nothing stays mapped on failure.
    pub fn map(
        domain: DomainId,
        references: &[GrantRef],
        writable: bool,
    ) -> Result<ForeignMapping, ForeignError> {
        let allocated = references.len().max(1);
        let layout = heap_layout(allocated).ok_or(ForeignError::OutOfRange)?;
        // SAFETY: the layout has a non-zero size.
        let address = unsafe { alloc::alloc::alloc_zeroed(layout) };
        if address.is_null() {
            return Err(ForeignError::OutOfMemory);
        }
        let mut mapping = ForeignMapping {
            address,
            allocated,
            handles: Vec::with_capacity(references.len()),
            broken: false,
        };
        let page_address = |index: usize| address as u64 + (index * PAGE_SIZE) as u64;
        // Unmap our own pages first (flushing each TLB entry), so no stale
        // translation of a heap page survives the grant mapping.
        for index in 0..references.len() {
            // SAFETY: the page was just allocated for this mapping and
            // nothing refers to it; it is accessed again only as the
            // foreign page or after its own mapping is restored.
            if let Err(error) = unsafe { hypercall::update_va_mapping(page_address(index), 0) } {
                mapping.restore(index);
                return Err(ForeignError::Hypercall(error));
            }
        }
        let flags = GNTMAP_HOST_MAP | if writable { 0 } else { GNTMAP_READONLY };
        let mut operations: Vec<GnttabMapGrantRef> = references
            .iter()
            .enumerate()
            .map(|(index, reference)| GnttabMapGrantRef {
                host_addr: page_address(index),
                flags,
                reference: reference.0,
                dom: domain.0,
                ..GnttabMapGrantRef::default()
            })
            .collect();
        // SAFETY: every host_addr is a page of this allocation, unmapped
        // above and used by nothing else.
        let result = unsafe { hypercall::grant_map(&mut operations) };
        match statuses_ok(result, &operations, |operation| operation.status) {
            Ok(()) => {
                mapping
                    .handles
                    .extend(operations.iter().map(|operation| operation.handle));
                Ok(mapping)
            }
            Err(error) => {
                // Undo the entries that did map (when the call itself
                // failed, none did), then give the heap pages back.
                let mut undo: Vec<GnttabUnmapGrantRef> = operations
                    .iter()
                    .filter(|operation| result.is_ok() && operation.status == status::OKAY)
                    .map(|operation| GnttabUnmapGrantRef {
                        host_addr: operation.host_addr,
                        handle: operation.handle,
                        ..GnttabUnmapGrantRef::default()
                    })
                    .collect();
                if !undo.is_empty() {
                    // SAFETY: these mappings were made above and never used.
                    let undone = unsafe { hypercall::grant_unmap(&mut undo) };
                    // A page still showing a foreign frame is never reused.
                    mapping.broken |= statuses_ok(undone, &undo, |entry| entry.status).is_err();
                }
                mapping.restore(references.len());
                Err(error)
            }
        }
    }

    /// Give the first `count` heap pages their own mappings back.
    fn restore(&mut self, count: usize) {
        for index in 0..count {
            let page = self.address as u64 + (index * PAGE_SIZE) as u64;
            let restored = own_page_entry(page).is_some_and(|entry| {
                // SAFETY: the page is ours and maps nothing else now; it
                // goes back to the allocator only after this.
                unsafe { hypercall::update_va_mapping(page, entry) }.is_ok()
            });
            self.broken |= !restored;
        }
    }

    /// The first byte of the mapped pages.
    pub fn as_ptr(&self) -> *mut u8 {
        self.address
    }

    /// Bytes mapped (0 once unmapped).
    pub fn size(&self) -> usize {
        self.handles.len() * PAGE_SIZE
    }

    /// Unmap every page and restore the heap pages' own mappings; the heap
    /// pages are freed on drop (leaked when anything failed). Idempotent.
    ///
    /// # Errors
    /// [`ForeignError`] when Xen refused; the pages are then leaked.
    pub fn unmap(&mut self) -> Result<(), ForeignError> {
        if self.handles.is_empty() {
            return Ok(());
        }
        let mut operations: Vec<GnttabUnmapGrantRef> = self
            .handles
            .iter()
            .enumerate()
            .map(|(index, handle)| GnttabUnmapGrantRef {
                host_addr: self.address as u64 + (index * PAGE_SIZE) as u64,
                handle: *handle,
                ..GnttabUnmapGrantRef::default()
            })
            .collect();
        // SAFETY: these are our live mappings; the owner stopped using them
        // (it unmaps only when tearing the connection down).
        let result = unsafe { hypercall::grant_unmap(&mut operations) };
        let pages = self.handles.len();
        self.handles.clear();
        if let Err(error) = statuses_ok(result, &operations, |operation| operation.status) {
            self.broken = true;
            return Err(error);
        }
        self.restore(pages);
        if self.broken {
            return Err(ForeignError::Restore(HypercallError(-1)));
        }
        Ok(())
    }
}

impl Drop for ForeignMapping {
    fn drop(&mut self) {
        // A failure is recorded in `broken`.
        let _ = self.unmap();
        if self.broken {
            // A page may still show a foreign frame, or nothing: never hand
            // it to the allocator again.
            return;
        }
        if let Some(layout) = heap_layout(self.allocated) {
            // SAFETY: allocated in `map` with this layout; every page has its
            // own mapping back; freed once.
            unsafe { alloc::alloc::dealloc(self.address, layout) };
        }
    }
}

/// Segments per `GNTTABOP_copy` call (the array lives on the stack).
const COPY_BATCH: usize = 64;

/// Which way a copy goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    FromForeign,
    ToForeign,
}

/// Copy between the foreign pages `references` of `domain` (a region of
/// `references.len()` pages, page `i` at byte `i * 4096`), starting at
/// byte `foreign_offset`, and `length` bytes of our memory at `local`.
/// Each segment stays inside one page on both sides; up to
/// [`COPY_BATCH`] segments go in one hypercall; every status is checked.
///
/// # Safety
/// `local..local + length` is memory of ours that may be read (to the
/// guest) or overwritten (from the guest) during the call.
unsafe fn copy_foreign(
    domain: DomainId,
    references: &[GrantRef],
    foreign_offset: usize,
    local: *mut u8,
    length: usize,
    direction: Direction,
) -> Result<(), ForeignError> {
    let end = foreign_offset
        .checked_add(length)
        .ok_or(ForeignError::OutOfRange)?;
    if end > references.len().saturating_mul(PAGE_SIZE) {
        return Err(ForeignError::OutOfRange);
    }
    let mut batch = [GnttabCopy::default(); COPY_BATCH];
    let mut count = 0;
    let mut done = 0;
    while done < length {
        let foreign = foreign_offset + done;
        let local_address = local as u64 + done as u64;
        let foreign_room = PAGE_SIZE - foreign % PAGE_SIZE;
        let local_room = PAGE_SIZE - (local_address as usize % PAGE_SIZE);
        let chunk = foreign_room.min(local_room).min(length - done);
        let frame = memory::machine_frame_of(local_address).ok_or(ForeignError::LocalFrame)?;
        let theirs = GnttabCopyPointer {
            reference_or_frame: u64::from(references[foreign / PAGE_SIZE].0),
            domid: domain.0,
            offset: (foreign % PAGE_SIZE) as u16,
            padding: 0,
        };
        let ours = GnttabCopyPointer {
            reference_or_frame: frame.0,
            domid: DomainId::SELF.0,
            offset: (local_address as usize % PAGE_SIZE) as u16,
            padding: 0,
        };
        batch[count] = match direction {
            Direction::FromForeign => GnttabCopy {
                source: theirs,
                dest: ours,
                len: chunk as u16,
                flags: GNTCOPY_SOURCE_GREF,
                ..GnttabCopy::default()
            },
            Direction::ToForeign => GnttabCopy {
                source: ours,
                dest: theirs,
                len: chunk as u16,
                flags: GNTCOPY_DEST_GREF,
                ..GnttabCopy::default()
            },
        };
        count += 1;
        done += chunk;
        if count == COPY_BATCH || done == length {
            // SAFETY: each local side lies inside `local..local + length`
            // (the caller's promise) and inside one page; the foreign side
            // is Xen's to check.
            let result = unsafe { hypercall::grant_copy(&mut batch[..count]) };
            statuses_ok(result, &batch[..count], |segment| segment.status)?;
            count = 0;
        }
    }
    Ok(())
}

/// Copy `destination.len()` bytes out of `domain`'s granted pages
/// `references`, starting at byte `foreign_offset` of that run.
///
/// # Errors
/// [`ForeignError`]: a revoked or bad grant fails with its status.
pub fn copy_from_foreign(
    domain: DomainId,
    references: &[GrantRef],
    foreign_offset: usize,
    destination: &mut [u8],
) -> Result<(), ForeignError> {
    // SAFETY: `destination` is ours, exclusively borrowed for the call.
    unsafe {
        copy_foreign(
            domain,
            references,
            foreign_offset,
            destination.as_mut_ptr(),
            destination.len(),
            Direction::FromForeign,
        )
    }
}

/// Copy `source` into `domain`'s granted pages `references`, starting at
/// byte `foreign_offset` of that run (the grants must be writable).
///
/// # Errors
/// [`ForeignError`]: a revoked, read-only or bad grant fails with its
/// status.
pub fn copy_to_foreign(
    domain: DomainId,
    references: &[GrantRef],
    foreign_offset: usize,
    source: &[u8],
) -> Result<(), ForeignError> {
    // SAFETY: `source` is ours and borrowed for the call; Xen only reads
    // it (the pointer is cast to `*mut` for the shared helper).
    unsafe {
        copy_foreign(
            domain,
            references,
            foreign_offset,
            source.as_ptr().cast_mut(),
            source.len(),
            Direction::ToForeign,
        )
    }
}
