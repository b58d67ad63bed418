//! Grant table v1: lets a backend domain map pages we own.
//!
//! `GNTTABOP_setup_table` returns the table's machine frames; they are
//! mapped over a static area and written with atomics only (Xen sets and
//! clears `GTF_reading`/`GTF_writing` while the grantee has a mapping).

use super::hypercall::{self, HypercallError};
use super::memory::{self, StaticPages};
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU16, AtomicU32, Ordering};
use spin::Mutex;
use xen_abi::grant_table::{
    ENTRIES_PER_FRAME, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING,
    NR_RESERVED_ENTRIES,
};
use xen_abi::{DomainId, GrantRef, MachineFrame, PAGE_SIZE};

/// Frames of the grant table (512 entries each).
const FRAMES: usize = 4;

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

/// Set up and map the table.
///
/// # Errors
/// [`GrantError::Setup`] when Xen refuses.
pub fn init() -> Result<(), GrantError> {
    let mut frames = [0u64; FRAMES];
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
