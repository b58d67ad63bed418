//! READDIR and READDIRPLUS: directory listings (RFC 1813 sections 3.3.16
//! and 3.3.17, <https://www.rfc-editor.org/rfc/rfc1813#section-3.3.16>).
//!
//! On the wire an entry list is a linked list (`entry3 *nextentry`): each
//! entry is preceded by TRUE and the list ends with FALSE. Decoding follows
//! it iteratively (no recursion, so no stack growth) and stops after
//! [`MAX_DIRECTORY_ENTRIES`]. The size helpers let a server stop adding
//! entries before a reply would exceed the client's `count` / `maxcount`
//! (and, for READDIRPLUS, `dircount`).

use alloc::vec::Vec;

use xdr::padded_length;

pub use crate::list::{EntryList, MAX_LIST_ENTRIES as MAX_DIRECTORY_ENTRIES};

use crate::attributes::{PostOperationAttributes, PostOperationFileHandle, FILE_ATTRIBUTES_SIZE};
use crate::procedures::inspect::AttributesFailed;
use crate::status::ProcedureResult;
use crate::types::{CookieVerifier, FileHandle, FilenameCodec, VERIFIER_SIZE};

/// Size of a `post_op_attr` with or without attributes.
const fn post_operation_attributes_size(present: bool) -> usize {
    if present {
        4 + FILE_ATTRIBUTES_SIZE
    } else {
        4
    }
}

xdr::xdr_struct! {
    /// `READDIR3args`.
    pub struct ReadDirectoryArguments {
        /// `dir`.
        pub directory: FileHandle,
        /// `cookie`: 0 to start, else the last entry's cookie.
        pub cookie: u64,
        /// `cookieverf`: zeros to start, else from the previous reply.
        pub cookie_verifier: CookieVerifier,
        /// `count`: the largest `READDIR3resok` the client accepts.
        pub count: u32,
    }
}

xdr::xdr_struct! {
    /// `entry3` (without its `nextentry` link).
    pub struct Entry {
        /// `fileid`.
        pub file_id: u64,
        /// `name`.
        pub name: Vec<u8> as FilenameCodec,
        /// `cookie`: where to resume after this entry.
        pub cookie: u64,
    }
}

impl Entry {
    /// Bytes this entry adds to a reply, including its list link.
    pub fn encoded_size(&self) -> usize {
        entry_size(self.name.len())
    }
}

/// Bytes an `entry3` with a `name_length`-byte name adds to a READDIR reply.
pub const fn entry_size(name_length: usize) -> usize {
    4 + 8 + 4 + padded_length(name_length) + 8
}

xdr::xdr_struct! {
    /// `READDIR3resok` with `dirlist3` flattened.
    pub struct ReadDirectoryOk {
        /// `dir_attributes`.
        pub directory_attributes: PostOperationAttributes,
        /// `cookieverf`.
        pub cookie_verifier: CookieVerifier,
        /// `reply.entries`.
        pub entries: Vec<Entry> as EntryList<Entry>,
        /// `reply.eof`.
        pub end_of_file: bool,
    }
}

/// Bytes of a successful READDIR result besides its entries (status,
/// attributes, verifier, list end, eof): start here and add
/// [`Entry::encoded_size`] while the total stays within `count`.
pub const fn read_directory_overhead(with_attributes: bool) -> usize {
    4 + post_operation_attributes_size(with_attributes) + VERIFIER_SIZE + 4 + 4
}

/// `READDIR3res`.
pub type ReadDirectoryResult = ProcedureResult<ReadDirectoryOk, AttributesFailed>;

xdr::xdr_struct! {
    /// `READDIRPLUS3args`.
    pub struct ReadDirectoryPlusArguments {
        /// `dir`.
        pub directory: FileHandle,
        /// `cookie`.
        pub cookie: u64,
        /// `cookieverf`.
        pub cookie_verifier: CookieVerifier,
        /// `dircount`: bytes of directory information (id, name, cookie).
        pub directory_count: u32,
        /// `maxcount`: the largest `READDIRPLUS3resok` the client accepts.
        pub maximum_count: u32,
    }
}

xdr::xdr_struct! {
    /// `entryplus3` (without its `nextentry` link).
    pub struct EntryPlus {
        /// `fileid`.
        pub file_id: u64,
        /// `name`.
        pub name: Vec<u8> as FilenameCodec,
        /// `cookie`.
        pub cookie: u64,
        /// `name_attributes`.
        pub attributes: PostOperationAttributes,
        /// `name_handle`.
        pub handle: PostOperationFileHandle,
    }
}

impl EntryPlus {
    /// Bytes this entry adds to a reply (counts against `maxcount`).
    pub fn encoded_size(&self) -> usize {
        let handle = match &self.handle {
            Some(handle) => 4 + 4 + padded_length(handle.0.len()),
            None => 4,
        };
        entry_size(self.name.len())
            + post_operation_attributes_size(self.attributes.is_some())
            + handle
    }

    /// Bytes of directory information (file id, name, cookie) this entry
    /// adds (counts against `dircount`).
    pub fn directory_information_size(&self) -> usize {
        8 + 4 + padded_length(self.name.len()) + 8
    }
}

xdr::xdr_struct! {
    /// `READDIRPLUS3resok` with `dirlistplus3` flattened.
    pub struct ReadDirectoryPlusOk {
        /// `dir_attributes`.
        pub directory_attributes: PostOperationAttributes,
        /// `cookieverf`.
        pub cookie_verifier: CookieVerifier,
        /// `reply.entries`.
        pub entries: Vec<EntryPlus> as EntryList<EntryPlus>,
        /// `reply.eof`.
        pub end_of_file: bool,
    }
}

/// `READDIRPLUS3res`.
pub type ReadDirectoryPlusResult = ProcedureResult<ReadDirectoryPlusOk, AttributesFailed>;
