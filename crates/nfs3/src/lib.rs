//! NFSv3 (RFC 1813), MOUNT v3 and PORTMAP v2 message types, both directions.
//!
//! Design: one crate of plain data types with XDR encode and decode for each,
//! so the storage domain's server (decode arguments, encode results) and the
//! guest driver's client (encode arguments, decode results) share every
//! definition and can be round-trip tested against each other. No I/O, no
//! clock, no file-system semantics: those live in `nfs-server`. Decoding
//! untrusted bytes inherits the `xdr` contract (no panics, bounded
//! allocation).
//!
//! - NFSv3: <https://www.rfc-editor.org/rfc/rfc1813> (types section 2,
//!   procedures section 3)
//! - MOUNT v3: <https://www.rfc-editor.org/rfc/rfc1813#appendix-I>
//! - PORTMAP v2: <https://www.rfc-editor.org/rfc/rfc1833#section-3>
//!
//! Server:
//! `message::decode_call::<Nfs3>(record)` -> `(CallHeader, Arguments)` or the
//! reply header to send; then `message::encode_reply(xid, &results, buffer)`.
//! Client: `message::encode_call::<Nfs3>(xid, credential, &arguments)`, then
//! `message::decode_reply::<Nfs3>(record, procedure)`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod attributes;
mod list;
pub mod message;
pub mod mount;
pub mod nlm;
pub mod portmap;
pub mod procedures;
mod program;
mod status;
pub mod types;

pub use attributes::{
    FileAttributes, PostOperationAttributes, PreOperationAttributes, SetTime, SettableAttributes,
    WccAttributes, WccData,
};
pub use list::{EntryList, MAX_LIST_ENTRIES};
pub use procedures::{Arguments, Nfs3, Procedure, Results};
pub use program::RpcProgram;
pub use status::{NfsError, ProcedureResult};
pub use types::{
    CookieVerifier, CreateVerifier, DeviceNumbers, DirectoryOperationArguments, FileHandle,
    FileType, StableHow, Time, WriteVerifier,
};

/// NFS program number.
pub const PROGRAM: u32 = 100_003;
/// NFS version implemented here.
pub const VERSION: u32 = 3;
/// The NFS port by convention (also registered with PORTMAP).
pub const PORT: u16 = 2049;

/// The RFC 1813 name of a procedure.
pub fn procedure_name(procedure: Procedure) -> &'static str {
    match procedure {
        Procedure::Null => "NULL",
        Procedure::GetAttributes => "GETATTR",
        Procedure::SetAttributes => "SETATTR",
        Procedure::Lookup => "LOOKUP",
        Procedure::Access => "ACCESS",
        Procedure::ReadLink => "READLINK",
        Procedure::Read => "READ",
        Procedure::Write => "WRITE",
        Procedure::Create => "CREATE",
        Procedure::MakeDirectory => "MKDIR",
        Procedure::Symlink => "SYMLINK",
        Procedure::MakeNode => "MKNOD",
        Procedure::Remove => "REMOVE",
        Procedure::RemoveDirectory => "RMDIR",
        Procedure::Rename => "RENAME",
        Procedure::Link => "LINK",
        Procedure::ReadDirectory => "READDIR",
        Procedure::ReadDirectoryPlus => "READDIRPLUS",
        Procedure::FileSystemStatistics => "FSSTAT",
        Procedure::FileSystemInformation => "FSINFO",
        Procedure::PathConfiguration => "PATHCONF",
        Procedure::Commit => "COMMIT",
    }
}
