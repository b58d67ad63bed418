//! Memory: the heap, pseudo-physical/machine frame translation, pages
//! that can be granted, and remapping single static pages.
//!
//! Layout (see `docs/xen.md`): the image is linked at [`VIRT_BASE`] and
//! Xen's bootstrap page tables map it, `.bss` included, 1:1 onto the first
//! pseudo-physical frames. The heap is a `.bss` array, so no page table is
//! ever built; the pages behind it are ordinary domain memory, so a heap
//! page's machine frame is `p2m[(va - VIRT_BASE) >> 12]`.

use super::hypercall;
use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use linked_list_allocator::LockedHeap;
use xen_abi::xen::{page_table_entry, StartInfo, MACH2PHYS_VIRT_START};
use xen_abi::{MachineFrame, PAGE_SIZE};

/// Where the image is mapped (`XEN_ELFNOTE_VIRT_BASE`, `linker/`).
pub const VIRT_BASE: u64 = 0xffff_ffff_8000_0000;

/// Bytes of the heap.
pub const HEAP_BYTES: usize = 16 << 20;

/// A page-aligned static area of `N` bytes that platform code remaps or
/// hands out; it is never accessed through a Rust reference.
#[repr(C, align(4096))]
pub struct StaticPages<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: the contents are only reached through raw pointers by code that
// synchronises on its own (single vCPU, no interrupts).
unsafe impl<const N: usize> Sync for StaticPages<N> {}

impl<const N: usize> StaticPages<N> {
    /// A zeroed area (in `.bss`).
    pub const fn new() -> Self {
        StaticPages(UnsafeCell::new([0; N]))
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.0.get().cast()
    }
}

static HEAP_AREA: StaticPages<HEAP_BYTES> = StaticPages::new();

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

static P2M: AtomicU64 = AtomicU64::new(0);
static PAGES: AtomicUsize = AtomicUsize::new(0);

extern "C" {
    static boot_stack_guard: u8;
    static _image_end: u8;
}

/// Set up the heap and frame translation; unmap the stack guard page.
pub fn init(start_info: &StartInfo) {
    P2M.store(start_info.mfn_list, Ordering::Relaxed);
    PAGES.store(start_info.nr_pages as usize, Ordering::Relaxed);
    // SAFETY: HEAP_AREA is a static array used by nothing else, handed to
    // the allocator exactly once (init runs once, before any allocation).
    unsafe { ALLOCATOR.lock().init(HEAP_AREA.as_ptr(), HEAP_BYTES) };
    let guard = core::ptr::addr_of!(boot_stack_guard) as u64;
    // SAFETY: the guard page lies below the stack and is never used;
    // unmapping it makes an overflow fault instead of corrupting memory.
    // Failure only loses the guard, so the result is ignored.
    let _ = unsafe { hypercall::update_va_mapping(guard, 0) };
}

/// Read the unmapped stack guard page: a page fault (the `test=fault`
/// boot-test action, which checks the fault report).
pub fn fault_on_purpose() -> ! {
    let guard = core::ptr::addr_of!(boot_stack_guard);
    // SAFETY: not sound to complete, and it does not: the page is unmapped,
    // the read faults, and the fault handler crashes the domain.
    let value = unsafe { guard.read_volatile() };
    panic!("the stack guard page is mapped (read {value})");
}

/// Pages the domain owns (`start_info.nr_pages`).
pub fn domain_pages() -> usize {
    PAGES.load(Ordering::Relaxed)
}

/// Bytes of the image including `.bss` (heap and stack).
pub fn image_bytes() -> u64 {
    (core::ptr::addr_of!(_image_end) as u64) - VIRT_BASE
}

/// `(used, total)` heap bytes.
pub fn heap_usage() -> (usize, usize) {
    let heap = ALLOCATOR.lock();
    (heap.used(), heap.size())
}

/// The machine frame behind a virtual address of the image (heap, static
/// pages), or `None` outside the domain's pages.
pub fn machine_frame_of(virtual_address: u64) -> Option<MachineFrame> {
    let pfn = virtual_address.checked_sub(VIRT_BASE)? >> 12;
    if pfn as usize >= domain_pages() {
        return None;
    }
    let p2m = P2M.load(Ordering::Relaxed) as *const u64;
    // SAFETY: Xen maps the p2m list (start_info.mfn_list) for the domain's
    // life with nr_pages entries; pfn was bounds-checked.
    Some(MachineFrame(unsafe {
        p2m.add(pfn as usize).read_volatile()
    }))
}

/// The virtual address of one of the domain's own machine frames (the
/// console and xenstore pages), through the machine-to-physical table.
pub fn virtual_address_of(frame: MachineFrame) -> Option<u64> {
    let m2p = MACH2PHYS_VIRT_START as *const u64;
    // SAFETY: Xen maps the read-only M2P table at MACH2PHYS_VIRT_START in
    // every PV guest; the frames asked about are the domain's own.
    let pfn = unsafe { m2p.add(frame.0 as usize).read_volatile() };
    if pfn as usize >= domain_pages() {
        return None;
    }
    Some(VIRT_BASE + (pfn << 12))
}

/// Point the static page at `virtual_address` to machine address
/// `machine_address` (shared info, grant table frames).
///
/// # Safety
/// `virtual_address` is a page of a [`StaticPages`] that nothing else
/// uses; afterwards it may only be accessed as the new frame's layout.
///
/// # Errors
/// When Xen refuses the mapping.
pub unsafe fn map_machine_page(
    virtual_address: u64,
    machine_address: u64,
) -> Result<(), hypercall::HypercallError> {
    use page_table_entry::{ACCESSED, DIRTY, PRESENT, USER, WRITABLE};
    let entry = (machine_address & !0xfff) | PRESENT | WRITABLE | USER | ACCESSED | DIRTY;
    // SAFETY: the caller's promise.
    unsafe { hypercall::update_va_mapping(virtual_address, entry) }
}

/// One zeroed, page-aligned page from the heap, for sharing with another
/// domain (rings, I/O buffers). Freed on drop: end any grant first.
#[derive(Debug)]
pub struct Page {
    address: *mut u8,
}

// SAFETY: a Page owns its allocation exclusively.
unsafe impl Send for Page {}

const PAGE_LAYOUT: Layout = match Layout::from_size_align(PAGE_SIZE, PAGE_SIZE) {
    Ok(layout) => layout,
    Err(_) => panic!("page layout"),
};

impl Page {
    /// Allocate a zeroed page; `None` when the heap is exhausted.
    pub fn new() -> Option<Page> {
        // SAFETY: PAGE_LAYOUT has a non-zero size.
        let address = unsafe { alloc_zeroed(PAGE_LAYOUT) };
        (!address.is_null()).then_some(Page { address })
    }

    /// The page's first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.address
    }

    /// The machine frame to grant.
    pub fn machine_frame(&self) -> MachineFrame {
        machine_frame_of(self.address as u64).expect("heap pages belong to the domain")
    }

    /// Copy `data` (at most a page) into the page at `offset`.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        assert!(offset + data.len() <= PAGE_SIZE);
        // SAFETY: in bounds (asserted); the peer may read concurrently, but
        // bytes are plain data and we never form a reference to them.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), self.address.add(offset), data.len())
        };
    }

    /// Copy bytes out of the page at `offset` into `buffer`.
    pub fn read(&self, offset: usize, buffer: &mut [u8]) {
        assert!(offset + buffer.len() <= PAGE_SIZE);
        // SAFETY: in bounds (asserted); a copy, so a peer's concurrent
        // writes can only make the copy stale, never unsound.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.address.add(offset),
                buffer.as_mut_ptr(),
                buffer.len(),
            )
        };
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with PAGE_LAYOUT, freed once.
        unsafe { dealloc(self.address, PAGE_LAYOUT) };
    }
}
