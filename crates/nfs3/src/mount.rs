//! MOUNT protocol version 3: how a client obtains an export's root file
//! handle (RFC 1813 appendix I,
//! <https://www.rfc-editor.org/rfc/rfc1813#appendix-I>).
//!
//! Design: `mountstat3` gets its own [`MountError`] (success excluded, as
//! with `nfsstat3`); unknown values are a decode error for the same reason.
//! Host and group names are bytes, bounded by `MNTNAMLEN`; paths by
//! `MNTPATHLEN`.

use alloc::vec::Vec;
use core::fmt;

use xdr::{Decode, DecodeError, Decoder, Encode, Encoder, VariableArray, VariableOpaque};

use crate::list::EntryList;
use crate::types::FileHandle;

/// MOUNT program number.
pub const PROGRAM: u32 = 100_005;
/// MOUNT version 3 (the one that pairs with NFSv3).
pub const VERSION: u32 = 3;
/// `MNTPATHLEN`: longest export path.
pub const MAX_PATH: u32 = 1024;
/// `MNTNAMLEN`: longest host or group name.
pub const MAX_NAME: u32 = 255;
/// Decode bound on the flavors list of an MNT reply.
pub const MAX_AUTH_FLAVORS: u32 = 64;

/// Codec for `dirpath`.
pub type DirectoryPathCodec = VariableOpaque<MAX_PATH>;
/// Codec for `name`.
pub type NameCodec = VariableOpaque<MAX_NAME>;

xdr::xdr_struct! {
    /// `dirpath`: the MNT and UMNT argument.
    pub struct DirectoryPath {
        /// The export path.
        pub path: Vec<u8> as DirectoryPathCodec,
    }
}

/// A failing `mountstat3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MountError {
    /// MNT3ERR_PERM = 1.
    Permission,
    /// MNT3ERR_NOENT = 2.
    NoEntry,
    /// MNT3ERR_IO = 5.
    Io,
    /// MNT3ERR_ACCES = 13.
    Access,
    /// MNT3ERR_NOTDIR = 20.
    NotDirectory,
    /// MNT3ERR_INVAL = 22.
    Invalid,
    /// MNT3ERR_NAMETOOLONG = 63.
    NameTooLong,
    /// MNT3ERR_NOTSUPP = 10004.
    NotSupported,
    /// MNT3ERR_SERVERFAULT = 10006.
    ServerFault,
}

impl MountError {
    /// Every error, in wire order.
    pub const ALL: [MountError; 9] = [
        MountError::Permission,
        MountError::NoEntry,
        MountError::Io,
        MountError::Access,
        MountError::NotDirectory,
        MountError::Invalid,
        MountError::NameTooLong,
        MountError::NotSupported,
        MountError::ServerFault,
    ];

    /// The wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            MountError::Permission => 1,
            MountError::NoEntry => 2,
            MountError::Io => 5,
            MountError::Access => 13,
            MountError::NotDirectory => 20,
            MountError::Invalid => 22,
            MountError::NameTooLong => 63,
            MountError::NotSupported => 10004,
            MountError::ServerFault => 10006,
        }
    }
}

impl fmt::Display for MountError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            MountError::Permission => "not owner",
            MountError::NoEntry => "no such export",
            MountError::Io => "I/O error",
            MountError::Access => "permission denied",
            MountError::NotDirectory => "not a directory",
            MountError::Invalid => "invalid argument",
            MountError::NameTooLong => "path too long",
            MountError::NotSupported => "operation not supported",
            MountError::ServerFault => "server fault",
        })
    }
}

impl core::error::Error for MountError {}

xdr::xdr_struct! {
    /// `mountres3_ok`.
    pub struct MountOk {
        /// `fhandle`: the export root's handle (at most 64 bytes).
        pub handle: FileHandle,
        /// `auth_flavors`: flavors the server accepts (1 = AUTH_SYS).
        pub auth_flavors: Vec<u32> as VariableArray<MAX_AUTH_FLAVORS, u32>,
    }
}

/// `mountres3`: the MNT result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountResult {
    /// MNT3_OK.
    Ok(MountOk),
    /// Any failure; the body is void.
    Failed(MountError),
}

impl Encode for MountResult {
    fn encode(&self, encoder: &mut Encoder) {
        match self {
            MountResult::Ok(ok) => {
                encoder.u32(0);
                ok.encode(encoder);
            }
            MountResult::Failed(error) => encoder.u32(error.to_u32()),
        }
    }
}

impl Decode for MountResult {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        match decoder.u32()? {
            0 => Ok(MountResult::Ok(MountOk::decode(decoder)?)),
            value => MountError::ALL
                .into_iter()
                .find(|error| error.to_u32() == value)
                .map(MountResult::Failed)
                .ok_or(DecodeError::UnknownDiscriminant {
                    type_name: "mountstat3",
                    value,
                }),
        }
    }
}

xdr::xdr_struct! {
    /// `mountbody`: one client's mount of one export.
    pub struct MountEntry {
        /// `ml_hostname`.
        pub host_name: Vec<u8> as NameCodec,
        /// `ml_directory`.
        pub directory: Vec<u8> as DirectoryPathCodec,
    }
}

xdr::xdr_struct! {
    /// `mountlist`: the DUMP result.
    pub struct MountList {
        /// The entries.
        pub entries: Vec<MountEntry> as EntryList<MountEntry>,
    }
}

xdr::xdr_struct! {
    /// `groupnode` without its link: a host or netgroup allowed to mount.
    pub struct Group {
        /// `gr_name`.
        pub name: Vec<u8> as NameCodec,
    }
}

xdr::xdr_struct! {
    /// `exportnode` without its link.
    pub struct Export {
        /// `ex_dir`.
        pub directory: Vec<u8> as DirectoryPathCodec,
        /// `ex_groups`: empty means everyone.
        pub groups: Vec<Group> as EntryList<Group>,
    }
}

xdr::xdr_struct! {
    /// `exports`: the EXPORT result.
    pub struct ExportList {
        /// The exports.
        pub exports: Vec<Export> as EntryList<Export>,
    }
}

crate::program::program! {
    /// MOUNT version 3.
    program Mount3 = PROGRAM, version VERSION;
    /// MOUNTPROC3_NULL.
    Null = 0, (), ();
    /// MOUNTPROC3_MNT: an export path to its root handle.
    Mount = 1, DirectoryPath, MountResult;
    /// MOUNTPROC3_DUMP: the server's list of mounts.
    Dump = 2, (), MountList;
    /// MOUNTPROC3_UMNT: forget one mount.
    Unmount = 3, DirectoryPath, ();
    /// MOUNTPROC3_UMNTALL: forget all of this client's mounts.
    UnmountAll = 4, (), ();
    /// MOUNTPROC3_EXPORT: the export list.
    Export = 5, (), ExportList;
}
