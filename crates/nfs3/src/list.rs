//! XDR linked lists (`T *next`) as `Vec<T>`: READDIR entries, MOUNT's
//! mount and export lists, PORTMAP's mapping list.
//!
//! On the wire each element is preceded by TRUE and the list ends with
//! FALSE (RFC 4506 section 4.19, optional data). Decoding follows the list
//! iteratively, so a long list cannot grow the stack, and stops with
//! `LengthTooLarge` after [`MAX_LIST_ENTRIES`]; every element consumes at
//! least four bytes, so the input bounds allocation too.

use alloc::vec::Vec;
use core::marker::PhantomData;

use xdr::{Decode, DecodeError, Decoder, Encode, Encoder, FieldCodec};

/// Most entries one decoded list may hold.
pub const MAX_LIST_ENTRIES: u32 = 65_536;

/// Codec for a linked list of entries (`entry3 *` / `entryplus3 *`).
#[derive(Debug)]
pub struct EntryList<T>(PhantomData<T>);

impl<T: Encode + Decode> FieldCodec<Vec<T>> for EntryList<T> {
    fn encode_field(entries: &Vec<T>, encoder: &mut Encoder) {
        for entry in entries {
            encoder.bool(true);
            entry.encode(encoder);
        }
        encoder.bool(false);
    }

    fn decode_field(decoder: &mut Decoder<'_>) -> Result<Vec<T>, DecodeError> {
        let mut entries = Vec::new();
        while decoder.bool()? {
            if entries.len() >= MAX_LIST_ENTRIES as usize {
                return Err(DecodeError::LengthTooLarge {
                    length: MAX_LIST_ENTRIES + 1,
                    maximum: MAX_LIST_ENTRIES,
                });
            }
            entries.push(T::decode(decoder)?);
        }
        Ok(entries)
    }
}
