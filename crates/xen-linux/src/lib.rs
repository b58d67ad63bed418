//! Xen from Linux userspace: grant devices, event channels and a xenstore client.
//!
//! The guest side of VRPC (guest-driver) and the dom0 tool
//! (`storage-domain-ctl`) run as ordinary Linux processes and reach Xen
//! through the kernel's devices: `/dev/xen/gntalloc` (share our pages with
//! another domain), `/dev/xen/gntdev` (map pages another domain granted),
//! `/dev/xen/evtchn` (event channels) and `/dev/xen/xenbus` or xenstored's
//! unix socket (xenstore).
//!
//! Design: the Xen crates on the package registry are GPL-licensed and bind
//! the C libraries (`libxengnttab`, `libxenevtchn`, `libxenstore`), which
//! this MIT/Apache project neither links nor wants as a build dependency.
//! The ioctls are few and their structs small, so they are written here from
//! the Linux uapi headers (the private `ioctl` module names them and checks
//! every size), and the xenstore client reuses the storage domain's wire
//! code (`xen_abi::xenstore_wire`). Granted and mapped pages are a
//! [`vrpc_hosted::MappedRegion`] over the device file, so the one audited
//! set of atomic and volatile accessors serves memfds and grants alike; this
//! crate adds no second one.
//!
//! The `unsafe` here is the ioctl calls and the views of their argument
//! buffers; each has a `// SAFETY:` comment. Nothing in the host tests needs
//! Xen: they cover the ioctl layouts and drive the xenstore client against a
//! fake daemon. The device code runs only under Xen (QEMU boot tests).
#[cfg(not(target_os = "linux"))]
compile_error!("xen-linux talks to Linux's Xen devices and builds only for Linux");

pub mod evtchn;
pub mod gntalloc;
pub mod gntdev;
mod ioctl;
pub mod xenstore;

pub use evtchn::{EventChannel, Woken};
pub use gntalloc::{GrantedPages, UnmapNotify};
pub use gntdev::ForeignPages;
pub use xenstore::{Access, Permission, WatchEvent, Xenstore, XenstoreErrno, XenstoreError};

/// Bytes of one page granted or mapped through the devices.
pub const PAGE_SIZE: usize = xen_abi::PAGE_SIZE;

/// Opens a Xen device read-write with close-on-exec, naming it in the error.
fn open_device(path: &str, nonblocking: bool) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true);
    let mut flags = nix::libc::O_CLOEXEC;
    if nonblocking {
        flags |= nix::libc::O_NONBLOCK;
    }
    options.custom_flags(flags);
    match options.open(path) {
        Ok(file) => Ok(file.into()),
        Err(error) => Err(std::io::Error::new(
            error.kind(),
            format!("{path}: {error}"),
        )),
    }
}

/// Bytes of `count` pages, refusing counts that overflow.
fn pages_to_bytes(count: usize) -> std::io::Result<usize> {
    count
        .checked_mul(PAGE_SIZE)
        .filter(|_| count > 0 && u32::try_from(count).is_ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("cannot share {count} pages"),
            )
        })
}
