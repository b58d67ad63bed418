//! Where bulk data leaves the record: the splice.
//!
//! A slot carries a standard ONC RPC record with one byte range cut out; the
//! cut bytes travel in data pages. The range is `splice_length` bytes at
//! `splice_offset` of the full record, so the receiver rebuilds the full
//! record as `inline[..offset] ++ pages ++ inline[offset..]` with one copy
//! out of the pages. The transport needs no NFS knowledge to rebuild; only
//! the sender chooses the range:
//!
//! - WRITE calls: the guest encodes `WRITE3args` with an empty `data<>` and
//!   [`fill_trailing_opaque`] turns it into the record that carries the
//!   data's length, the data itself being the splice at the end (before the
//!   XDR padding). The storage domain hands the rebuilt standard record to
//!   the NFS server.
//! - Replies with bulk data (READ data, directory lists): the server names
//!   the range, as its encoder placed it, and hands it to
//!   [`crate::Backend::respond`]; VRPC itself knows no NFS.
//! - Any other record too long for its slot: the tail past the slot's
//!   capacity.

use alloc::vec::Vec;

/// Prepares a call whose last field is an empty variable-length opaque (a
/// `WRITE3args` encoded with empty `data<>`) to carry `length` payload bytes
/// by splice: sets the opaque's length word to `length`, appends the XDR
/// padding, and returns the splice offset (where the payload goes). `None`
/// when the record does not end in an empty opaque or `length` exceeds XDR's
/// range.
pub fn fill_trailing_opaque(record: &mut Vec<u8>, length: usize) -> Option<usize> {
    let word_start = record.len().checked_sub(4)?;
    if record[word_start..] != [0, 0, 0, 0] {
        return None;
    }
    let length_word = u32::try_from(length).ok()?;
    record[word_start..].copy_from_slice(&length_word.to_be_bytes());
    let splice_offset = record.len();
    record.resize(splice_offset + (4 - length % 4) % 4, 0);
    Some(splice_offset)
}
