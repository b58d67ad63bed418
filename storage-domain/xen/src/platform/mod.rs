//! The platform: everything that touches Xen. All of the kernel's unsafe
//! code is in this module; each block names what makes it sound.

pub mod blkfront;
pub mod console;
pub mod disk_bench;
pub mod events;
pub mod grants;
pub mod hypercall;
pub mod kernel;
pub mod memory;
pub mod netfront;
pub mod panic;
pub mod traps;
pub mod vrpc_backend;
pub mod vrpc_memory;
pub mod xenbus;
pub mod xenstore;

use xen_abi::xen::StartInfo;

core::arch::global_asm!(
    include_str!("../../../../boot/entry.s"),
    options(att_syntax)
);
core::arch::global_asm!(
    include_str!("../../../../boot/notes.s"),
    options(att_syntax)
);

/// The Rust entry point, called by `boot/entry.s` on the kernel stack.
///
/// # Safety
/// Called once, by the entry code, with the `start_info` pointer Xen put
/// in `rsi`: a mapped, readable `struct start_info`.
#[no_mangle]
pub unsafe extern "C" fn xen_start(start_info: *const StartInfo) -> ! {
    // SAFETY: the caller's promise: Xen's start_info is mapped and valid;
    // it is copied once and never read through the pointer again.
    let start_info: StartInfo = unsafe { core::ptr::read_volatile(start_info) };
    memory::init(&start_info);
    events::init(&start_info);
    console::init(&start_info);
    traps::init();
    kernel::main(&start_info)
}
