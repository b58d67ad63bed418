//! The storage domain as a Xen PV unikernel.
//!
//! Built for `x86_64-unknown-none` (see `docs/xen.md`), this is a no_std,
//! no_main kernel: `boot/` enters it, `platform/` owns every hypercall and
//! shared page, and `platform::kernel` wires the disk (blkfront) to the
//! same file system the hosted build uses.
//!
//! Built for the host (as `cargo clippy --workspace` and `cargo test
//! --workspace` do), only the platform-independent parts compile: the
//! command-line parser, the xenstore wire code and the boot tasks, with
//! their unit tests, plus a `main` that says how to build the real thing.
#![cfg_attr(target_os = "none", no_std, no_main)]
// The pure modules are used by the platform code, which the host build
// leaves out; their tests still run on the host.
#![cfg_attr(not(target_os = "none"), allow(dead_code))]

extern crate alloc;

mod blkif_batch;
mod command_line;
mod disk_reads;
mod fs_tasks;
mod netif_rx;
mod snapshot_control;
mod tcp_admission;
mod tcp_server;
mod vrpc_device;
mod vrpc_serve;

#[cfg(target_os = "none")]
mod platform;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "storage-domain-xen is a Xen PV kernel: build it with\n  \
         (cd storage-domain/xen && cargo build --release --target x86_64-unknown-none)\n\
         and boot it with `xl create xen-cfg/storage-domain.cfg` (see docs/xen.md)."
    );
    std::process::exit(2);
}
