//! Exceptions: a virtual IDT (`set_trap_table`) whose handlers
//! (`boot/entry.s`) print the fault on the console and crash the domain.
//!
//! Without it Xen would crash the domain on the first fault with only a
//! line in `xl dmesg`; with it the console says what and where.

use super::{console, events, hypercall};
use xen_abi::sched::ShutdownReason;
use xen_abi::xen::{TrapInfo, FLAT_KERNEL_CS, TRAP_MASK_EVENTS};

extern "C" {
    fn trap_divide_error();
    fn trap_breakpoint();
    fn trap_invalid_opcode();
    fn trap_double_fault();
    fn trap_stack_fault();
    fn trap_general_protection();
    fn trap_page_fault();
    fn trap_alignment_check();
}

/// Install the handlers. A failure is reported, not fatal: faults then
/// crash the domain through Xen instead.
pub fn init() {
    let handler = |vector: u8, address: unsafe extern "C" fn()| TrapInfo {
        vector,
        flags: TRAP_MASK_EVENTS,
        cs: FLAT_KERNEL_CS,
        padding: 0,
        address: address as usize as u64,
    };
    let table = [
        handler(0, trap_divide_error),
        handler(3, trap_breakpoint),
        handler(6, trap_invalid_opcode),
        handler(8, trap_double_fault),
        handler(12, trap_stack_fault),
        handler(13, trap_general_protection),
        handler(14, trap_page_fault),
        handler(17, trap_alignment_check),
        TrapInfo::default(),
    ];
    if let Err(error) = hypercall::set_trap_table(&table) {
        crate::println!("traps: set_trap_table failed: {error}");
    }
}

fn name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error",
        3 => "breakpoint",
        6 => "invalid opcode",
        8 => "double fault",
        12 => "stack fault",
        13 => "general protection fault",
        14 => "page fault",
        17 => "alignment check",
        _ => "exception",
    }
}

/// Called by the stubs in `boot/entry.s`.
///
/// # Safety
/// `frame` points to the six words the stub left on the stack: error code,
/// rip, cs, rflags, rsp, ss.
#[no_mangle]
pub unsafe extern "C" fn xen_trap(vector: u64, frame: *const u64) -> ! {
    // SAFETY: the caller's promise: six readable words.
    let [error_code, rip, _, _, rsp, _] = unsafe { core::ptr::read(frame.cast::<[u64; 6]>()) };
    let address = if vector == 14 {
        events::page_fault_address()
    } else {
        0
    };
    console::print_in_panic(format_args!(
        "storage-domain fault: {} (vector {vector}) at rip {rip:#x}, rsp {rsp:#x}, error code {error_code:#x}, address {address:#x}\n",
        name(vector)
    ));
    hypercall::shutdown(ShutdownReason::Crash)
}
