//! FSSTAT, FSINFO and PATHCONF: file-system-wide information (RFC 1813
//! sections 3.3.18-3.3.20, <https://www.rfc-editor.org/rfc/rfc1813#section-3.3.18>).

use crate::attributes::PostOperationAttributes;
use crate::procedures::inspect::AttributesFailed;
use crate::status::ProcedureResult;
use crate::types::{FileHandle, Time};

/// FSF3_LINK: hard links are supported.
pub const PROPERTY_LINK: u32 = 0x0001;
/// FSF3_SYMLINK: symbolic links are supported.
pub const PROPERTY_SYMLINK: u32 = 0x0002;
/// FSF3_HOMOGENEOUS: PATHCONF is the same for every file.
pub const PROPERTY_HOMOGENEOUS: u32 = 0x0008;
/// FSF3_CANSETTIME: SETATTR can set times.
pub const PROPERTY_CAN_SET_TIME: u32 = 0x0010;

xdr::xdr_struct! {
    /// `FSSTAT3args`, `FSINFO3args` and `PATHCONF3args`.
    pub struct FileSystemArguments {
        /// `fsroot` (`object` for PATHCONF).
        pub object: FileHandle,
    }
}

xdr::xdr_struct! {
    /// `FSSTAT3resok`.
    pub struct FileSystemStatisticsOk {
        /// `obj_attributes`.
        pub object_attributes: PostOperationAttributes,
        /// `tbytes`.
        pub total_bytes: u64,
        /// `fbytes`.
        pub free_bytes: u64,
        /// `abytes`: free to this user.
        pub available_bytes: u64,
        /// `tfiles`.
        pub total_files: u64,
        /// `ffiles`.
        pub free_files: u64,
        /// `afiles`.
        pub available_files: u64,
        /// `invarsec`: seconds the figures stay valid.
        pub invariant_seconds: u32,
    }
}

/// `FSSTAT3res`.
pub type FileSystemStatisticsResult = ProcedureResult<FileSystemStatisticsOk, AttributesFailed>;

xdr::xdr_struct! {
    /// `FSINFO3resok`.
    pub struct FileSystemInformationOk {
        /// `obj_attributes`.
        pub object_attributes: PostOperationAttributes,
        /// `rtmax`.
        pub read_maximum: u32,
        /// `rtpref`.
        pub read_preferred: u32,
        /// `rtmult`.
        pub read_multiple: u32,
        /// `wtmax`.
        pub write_maximum: u32,
        /// `wtpref`.
        pub write_preferred: u32,
        /// `wtmult`.
        pub write_multiple: u32,
        /// `dtpref`: preferred READDIR request size.
        pub directory_preferred: u32,
        /// `maxfilesize`.
        pub maximum_file_size: u64,
        /// `time_delta`: server time granularity.
        pub time_delta: Time,
        /// `properties`: `PROPERTY_*` bits.
        pub properties: u32,
    }
}

/// `FSINFO3res`.
pub type FileSystemInformationResult = ProcedureResult<FileSystemInformationOk, AttributesFailed>;

xdr::xdr_struct! {
    /// `PATHCONF3resok`.
    pub struct PathConfigurationOk {
        /// `obj_attributes`.
        pub object_attributes: PostOperationAttributes,
        /// `linkmax`.
        pub link_maximum: u32,
        /// `name_max`.
        pub name_maximum: u32,
        /// `no_trunc`: long names are rejected, not truncated.
        pub no_truncation: bool,
        /// `chown_restricted`.
        pub chown_restricted: bool,
        /// `case_insensitive`.
        pub case_insensitive: bool,
        /// `case_preserving`.
        pub case_preserving: bool,
    }
}

/// `PATHCONF3res`.
pub type PathConfigurationResult = ProcedureResult<PathConfigurationOk, AttributesFailed>;
