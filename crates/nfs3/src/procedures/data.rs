//! READ, WRITE and COMMIT: the data path (RFC 1813 sections 3.3.6, 3.3.7
//! and 3.3.21, <https://www.rfc-editor.org/rfc/rfc1813#section-3.3.6>).
//!
//! Design: the write verifier in WRITE and COMMIT replies is how a client
//! learns that the server restarted and lost unstable writes; it is a plain
//! 8-byte array the server chooses at boot.

use alloc::vec::Vec;
use core::ops::Range;

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

/// In a successful `READ3res`, `count`, `eof` and the length word of
/// `data<>` are the 12 bytes before the data.
const READ_DATA_PREFIX: usize = 12;

/// A whole READ reply record (RPC reply header and a successful `READ3res`)
/// built in place, so the server's file system writes the data straight
/// into the record: [`ReadReplyBuffer::new`] encodes everything before the
/// data with room for up to `capacity` bytes, [`ReadReplyBuffer::data_mut`]
/// is that room, and [`ReadReplyBuffer::finish`] sets `count`, `eof` and the
/// data's length and pads. The bytes are exactly those of
/// [`crate::message::encode_reply`] with a [`ReadOk`].
#[derive(Debug)]
pub struct ReadReplyBuffer {
    record: Vec<u8>,
    data_start: usize,
    capacity: usize,
}

impl ReadReplyBuffer {
    /// The record for call `xid` with `file_attributes`, appended to
    /// `buffer`, with `capacity` (at most [`crate::types::MAX_DATA_WIRE`])
    /// zeroed bytes of room for the data.
    pub fn new(
        xid: u32,
        file_attributes: &PostOperationAttributes,
        capacity: usize,
        buffer: Vec<u8>,
    ) -> Self {
        use xdr::Encode;
        let capacity = capacity.min(crate::types::MAX_DATA_WIRE as usize);
        let mut encoder = xdr::Encoder::from_vec(buffer);
        xdr::ReplyHeader::success(xid).encode(&mut encoder);
        // nfsstat3 NFS3_OK, then READ3resok up to the data: count, eof and
        // the length are set by `finish`.
        encoder.u32(0);
        file_attributes.encode(&mut encoder);
        encoder.u32(0);
        encoder.bool(false);
        encoder.u32(0);
        let mut record = encoder.into_bytes();
        let data_start = record.len();
        record.resize(data_start + xdr::padded_length(capacity), 0);
        Self {
            record,
            data_start,
            capacity,
        }
    }

    /// The room for the data: `capacity` bytes.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.record[self.data_start..self.data_start + self.capacity]
    }

    /// The finished record, carrying the first `length` bytes of the room
    /// (at most `capacity`), and the range of the record those bytes
    /// occupy: the payload a transport may carry apart from the rest.
    pub fn finish(mut self, length: usize, end_of_file: bool) -> (Vec<u8>, Range<usize>) {
        let length = length.min(self.capacity);
        self.set_fields(length, end_of_file);
        let end = self.data_start + length;
        // The padding must be zeros whatever the room held past the data.
        self.record.truncate(end);
        self.record
            .resize(self.data_start + xdr::padded_length(length), 0);
        (self.record, self.data_start..end)
    }

    /// The finished record of a READ whose `length` bytes of data (at
    /// most [`crate::types::MAX_DATA_WIRE`]) the transport carries apart
    /// and already holds (a VRPC guest's data pages the server read
    /// into): the record without the data, its padding included, and the
    /// offset in it where the data belongs. For a buffer made with no
    /// room (`capacity` 0); any room it has is dropped.
    pub fn finish_apart(mut self, length: usize, end_of_file: bool) -> (Vec<u8>, usize) {
        let length = length.min(crate::types::MAX_DATA_WIRE as usize);
        self.set_fields(length, end_of_file);
        self.record.truncate(self.data_start);
        let padding = xdr::padded_length(length) - length;
        self.record.resize(self.data_start + padding, 0);
        (self.record, self.data_start)
    }

    /// Sets `count`, `eof` and the data's length word.
    fn set_fields(&mut self, length: usize, end_of_file: bool) {
        // `length` is at most MAX_DATA_WIRE, so it fits the word.
        let length_word = (length as u32).to_be_bytes();
        let fields = self.data_start - READ_DATA_PREFIX;
        self.record[fields..fields + 4].copy_from_slice(&length_word);
        self.record[fields + 4..fields + 8].copy_from_slice(&u32::from(end_of_file).to_be_bytes());
        self.record[fields + 8..fields + 12].copy_from_slice(&length_word);
    }
}
