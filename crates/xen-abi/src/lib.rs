//! The Xen public ABI as `repr(C)` Rust types, for a 64-bit x86 PV guest.
//!
//! Written from Xen 4.17's public headers (`xen/include/public/`, installed
//! by Debian's `libxen-dev` under `/usr/include/xen/`), interface version
//! `0x00040e00`. Each module names the header it mirrors; only what the
//! storage domain uses is here. Every struct has a compile-time size check
//! against the header's layout on x86_64, and an offset comment per field.
//!
//! Nothing here touches hardware: the types describe memory that the
//! platform code (`storage-domain/xen`) reads with volatile accesses.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod blkif;
pub mod console;
pub mod elfnote;
pub mod event_channel;
pub mod grant_table;
pub mod netif;
pub mod ring;
pub mod sched;
pub mod xen;
pub mod xenbus;
pub mod xenstore_wire;
pub mod xs_wire;

/// A domain's identifier (`domid_t`, `xen.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u16);

impl DomainId {
    /// `DOMID_SELF`: the calling domain.
    pub const SELF: DomainId = DomainId(0x7ff0);
}

/// A grant reference (`grant_ref_t`, `grant_table.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantRef(pub u32);

/// An event channel port (`evtchn_port_t`, `event_channel.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventChannelPort(pub u32);

/// A machine frame number (`xen_pfn_t` holding an MFN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MachineFrame(pub u64);

/// The page size of x86 PV guests (`XEN_PAGE_SIZE`).
pub const PAGE_SIZE: usize = 4096;

/// The interface version this crate mirrors (`__XEN_INTERFACE_VERSION__`).
pub const INTERFACE_VERSION: u32 = 0x0004_0e00;
