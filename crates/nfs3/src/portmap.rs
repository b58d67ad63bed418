//! PORTMAP version 2: the port mapper clients ask for the NFS and MOUNT
//! ports (RFC 1833 section 3, <https://www.rfc-editor.org/rfc/rfc1833#section-3>).
//!
//! Design: only the procedures a storage domain answers on its TCP side
//! (NULL, SET, UNSET, GETPORT, DUMP); CALLIT (indirect calls) is left out on
//! purpose: it is an amplification vector and nothing here needs it.

use alloc::vec::Vec;

use crate::list::EntryList;

/// PORTMAP program number.
pub const PROGRAM: u32 = 100_000;
/// PORTMAP version 2.
pub const VERSION: u32 = 2;
/// The port mapper's well-known port.
pub const PORT: u16 = 111;
/// `IPPROTO_TCP`.
pub const PROTOCOL_TCP: u32 = 6;
/// `IPPROTO_UDP`.
pub const PROTOCOL_UDP: u32 = 17;

xdr::xdr_struct! {
    /// `mapping`: a program version reachable on a port.
    pub struct Mapping {
        /// `prog`.
        pub program: u32,
        /// `vers`.
        pub version: u32,
        /// `prot`: `PROTOCOL_TCP` or `PROTOCOL_UDP`.
        pub protocol: u32,
        /// `port` (ignored by GETPORT arguments).
        pub port: u32,
    }
}

xdr::xdr_struct! {
    /// `pmaplist`: the DUMP result.
    pub struct MappingList {
        /// The mappings.
        pub mappings: Vec<Mapping> as EntryList<Mapping>,
    }
}

crate::program::program! {
    /// PORTMAP version 2.
    program Portmap2 = PROGRAM, version VERSION;
    /// PMAPPROC_NULL.
    Null = 0, (), ();
    /// PMAPPROC_SET: register a mapping; TRUE on success.
    Set = 1, Mapping, bool;
    /// PMAPPROC_UNSET: remove mappings for program and version.
    Unset = 2, Mapping, bool;
    /// PMAPPROC_GETPORT: the port, or 0 if not registered.
    GetPort = 3, Mapping, u32;
    /// PMAPPROC_DUMP: every mapping.
    Dump = 4, (), MappingList;
}
