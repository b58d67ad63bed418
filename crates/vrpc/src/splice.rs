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
//! - READ, READDIR and READDIRPLUS replies: [`nfs_reply_payload`] finds the
//!   `data<>` bytes of `READ3resok` (RFC 1813 section 3.3.6) or the
//!   directory list after the cookie verifier of `READDIR3resok` /
//!   `READDIRPLUS3resok` (sections 3.3.16, 3.3.17).
//! - Any other record too long for its slot: the tail past the slot's
//!   capacity.

use alloc::vec::Vec;
use core::ops::Range;

/// ONC RPC program number of NFS.
pub const NFS_PROGRAM: u32 = 100_003;
/// NFSPROC3_READ.
pub const NFS3_READ: u32 = 6;
/// NFSPROC3_READDIR.
pub const NFS3_READDIR: u32 = 16;
/// NFSPROC3_READDIRPLUS.
pub const NFS3_READDIRPLUS: u32 = 17;

/// Encoded size of `fattr3`.
const FILE_ATTRIBUTES_SIZE: usize = 84;

fn be32(bytes: &[u8], offset: usize) -> Option<u32> {
    let word = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

/// `(program, version, procedure)` of a call record, if it is an RPC
/// version 2 call (RFC 5531 section 9).
pub fn call_procedure(record: &[u8]) -> Option<(u32, u32, u32)> {
    if be32(record, 4)? != 0 || be32(record, 8)? != 2 {
        return None;
    }
    Some((be32(record, 12)?, be32(record, 16)?, be32(record, 20)?))
}

/// The range of a reply record to carry in pages: the READ data or the
/// READDIR/READDIRPLUS directory list, when `procedure` (of the call) is one
/// of those and the reply is a successful NFSv3 reply. Never panics on any
/// bytes.
pub fn nfs_reply_payload(procedure: (u32, u32, u32), reply: &[u8]) -> Option<Range<usize>> {
    let (program, version, procedure) = procedure;
    if program != NFS_PROGRAM || version != 3 {
        return None;
    }
    // xid, msg_type REPLY (1), reply_stat MSG_ACCEPTED (0).
    if be32(reply, 4)? != 1 || be32(reply, 8)? != 0 {
        return None;
    }
    // The verifier: flavor, length, body padded to four.
    let verifier_length = usize::try_from(be32(reply, 16)?).ok()?;
    if verifier_length > 400 {
        return None;
    }
    let mut position = 20 + verifier_length.div_ceil(4) * 4;
    // accept_stat SUCCESS (0), then nfsstat3 NFS3_OK (0).
    if be32(reply, position)? != 0 || be32(reply, position + 4)? != 0 {
        return None;
    }
    position += 8;
    // post_op_attr: a boolean, then fattr3 when true.
    position += match be32(reply, position)? {
        0 => 4,
        1 => 4 + FILE_ATTRIBUTES_SIZE,
        _ => return None,
    };
    match procedure {
        NFS3_READ => {
            // count, eof, then data<>: length and bytes.
            let length = usize::try_from(be32(reply, position + 8)?).ok()?;
            let start = position + 12;
            let end = start.checked_add(length)?;
            (end <= reply.len()).then_some(start..end)
        }
        NFS3_READDIR | NFS3_READDIRPLUS => {
            // cookieverf3, then the directory list to the end of the record.
            let start = position + 8;
            (start < reply.len()).then_some(start..reply.len())
        }
        _ => None,
    }
}

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
