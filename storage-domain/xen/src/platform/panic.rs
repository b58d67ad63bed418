//! A panic prints its message and location on the console and crashes the
//! domain (`SHUTDOWN_crash`): `on_crash` in the `xl` config decides what
//! happens next (`preserve` keeps it for `xenctx`).

use super::{console, hypercall};
use xen_abi::sched::ShutdownReason;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(location) => console::print_in_panic(format_args!(
            "storage-domain panicked at {}:{}:{}: {}\n",
            location.file(),
            location.line(),
            location.column(),
            info.message()
        )),
        None => console::print_in_panic(format_args!(
            "storage-domain panicked: {}\n",
            info.message()
        )),
    }
    hypercall::shutdown(ShutdownReason::Crash)
}
