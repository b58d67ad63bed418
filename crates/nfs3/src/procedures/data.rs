//! READ, WRITE and COMMIT: the data path (RFC 1813 sections 3.3.6, 3.3.7
//! and 3.3.21, <https://www.rfc-editor.org/rfc/rfc1813#section-3.3.6>).
//!
//! Design: the write verifier in WRITE and COMMIT replies is how a client
//! learns that the server restarted and lost unstable writes; it is a plain
//! 8-byte array the server chooses at boot.

use alloc::vec::Vec;

use crate::attributes::{PostOperationAttributes, WccData};
use crate::procedures::inspect::AttributesFailed;
use crate::status::ProcedureResult;
use crate::types::{DataCodec, FileHandle, StableHow, WriteVerifier};

xdr::xdr_struct! {
    /// `READ3args`.
    pub struct ReadArguments {
        /// `file`.
        pub file: FileHandle,
        /// `offset`.
        pub offset: u64,
        /// `count`: bytes wanted.
        pub count: u32,
    }
}

xdr::xdr_struct! {
    /// `READ3resok`.
    pub struct ReadOk {
        /// `file_attributes`.
        pub file_attributes: PostOperationAttributes,
        /// `count`: bytes returned.
        pub count: u32,
        /// `eof`: the read reached the end of the file.
        pub end_of_file: bool,
        /// `data`.
        pub data: Vec<u8> as DataCodec,
    }
}

/// `READ3res`.
pub type ReadResult = ProcedureResult<ReadOk, AttributesFailed>;

/// Encoded size of a successful READ result carrying `data_length` bytes,
/// with or without attributes (status included).
pub const fn read_ok_size(data_length: usize, with_attributes: bool) -> usize {
    let attributes = if with_attributes {
        4 + crate::attributes::FILE_ATTRIBUTES_SIZE
    } else {
        4
    };
    4 + attributes + 4 + 4 + 4 + xdr::padded_length(data_length)
}

xdr::xdr_struct! {
    /// `WRITE3args`.
    pub struct WriteArguments {
        /// `file`.
        pub file: FileHandle,
        /// `offset`.
        pub offset: u64,
        /// `count`: should equal `data.len()`; the server checks.
        pub count: u32,
        /// `stable`.
        pub stable: StableHow,
        /// `data`.
        pub data: Vec<u8> as DataCodec,
    }
}

xdr::xdr_struct! {
    /// `WRITE3resok`.
    pub struct WriteOk {
        /// `file_wcc`.
        pub file_wcc: WccData,
        /// `count`: bytes written.
        pub count: u32,
        /// `committed`: how durable the write already is.
        pub committed: StableHow,
        /// `verf`.
        pub verifier: WriteVerifier,
    }
}

xdr::xdr_struct! {
    /// `WRITE3resfail` and `COMMIT3resfail`.
    pub struct FileWccFailed {
        /// `file_wcc`.
        pub file_wcc: WccData,
    }
}

/// `WRITE3res`.
pub type WriteResult = ProcedureResult<WriteOk, FileWccFailed>;

xdr::xdr_struct! {
    /// `COMMIT3args`.
    pub struct CommitArguments {
        /// `file`.
        pub file: FileHandle,
        /// `offset`.
        pub offset: u64,
        /// `count`: 0 means to the end of the file.
        pub count: u32,
    }
}

xdr::xdr_struct! {
    /// `COMMIT3resok`.
    pub struct CommitOk {
        /// `file_wcc`.
        pub file_wcc: WccData,
        /// `verf`.
        pub verifier: WriteVerifier,
    }
}

/// `COMMIT3res`.
pub type CommitResult = ProcedureResult<CommitOk, FileWccFailed>;
