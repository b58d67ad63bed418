//! The XDR decoder: a cursor over untrusted bytes (RFC 4506 section 4).
//!
//! Contract: no method panics on any input, and no method allocates more than
//! the remaining input could justify. Every variable-length item is checked
//! against its declared maximum and against the bytes left before anything is
//! reserved, so a forged length of 4 GiB fails instead of allocating.
//!
//! NOTE: RFC 4506 section 3 says padding bytes are zero. The decoder does not
//! reject non-zero padding (as deployed implementations do not); re-encoding
//! such input normalises the padding to zero.

use alloc::vec::Vec;

use crate::error::DecodeError;
use crate::padding_length;

/// A read cursor over an XDR-encoded message.
#[derive(Debug, Clone)]
pub struct Decoder<'input> {
    input: &'input [u8],
    position: usize,
}

impl<'input> Decoder<'input> {
    /// A decoder positioned at the start of `input`.
    pub fn new(input: &'input [u8]) -> Self {
        Decoder { input, position: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.input.len() - self.position
    }

    /// The unconsumed bytes, without consuming them.
    pub fn remaining_bytes(&self) -> &'input [u8] {
        self.input.get(self.position..).unwrap_or(&[])
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Ends decoding of a complete message.
    ///
    /// # Errors
    /// [`DecodeError::TrailingBytes`] if input is left over.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes(count)),
        }
    }

    /// Consumes exactly `length` raw bytes (no padding).
    ///
    /// # Errors
    /// [`DecodeError::UnexpectedEnd`] if fewer bytes remain.
    pub fn take(&mut self, length: usize) -> Result<&'input [u8], DecodeError> {
        let remaining = self.remaining();
        if length > remaining {
            return Err(DecodeError::UnexpectedEnd {
                needed: length,
                remaining,
            });
        }
        let start = self.position;
        self.position += length;
        Ok(&self.input[start..self.position])
    }

    fn word(&mut self) -> Result<[u8; 4], DecodeError> {
        let bytes = self.take(4)?;
        Ok([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    /// An unsigned integer (RFC 4506 section 4.2).
    ///
    /// # Errors
    /// [`DecodeError::UnexpectedEnd`] on short input.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.word()?))
    }

    /// A signed integer (RFC 4506 section 4.1).
    ///
    /// # Errors
    /// [`DecodeError::UnexpectedEnd`] on short input.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.word()?))
    }

    /// An unsigned hyper integer (RFC 4506 section 4.5).
    ///
    /// # Errors
    /// [`DecodeError::UnexpectedEnd`] on short input.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let high = u64::from(self.u32()?);
        let low = u64::from(self.u32()?);
        Ok(high << 32 | low)
    }

    /// A signed hyper integer (RFC 4506 section 4.5).
    ///
    /// # Errors
    /// [`DecodeError::UnexpectedEnd`] on short input.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }

    /// A boolean: 0 or 1 only (RFC 4506 section 4.4).
    ///
    /// # Errors
    /// [`DecodeError::InvalidBoolean`] for any other value.
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::InvalidBoolean(other)),
        }
    }

    /// Fixed-length opaque data of `length` bytes plus padding (RFC 4506
    /// section 4.9).
    ///
    /// # Errors
    /// [`DecodeError::UnexpectedEnd`] on short input.
    pub fn fixed_opaque(&mut self, length: usize) -> Result<&'input [u8], DecodeError> {
        let padded =
            length
                .checked_add(padding_length(length))
                .ok_or(DecodeError::UnexpectedEnd {
                    needed: usize::MAX,
                    remaining: self.remaining(),
                })?;
        let bytes = self.take(padded)?;
        Ok(&bytes[..length])
    }

    /// Fixed-length opaque data into an array.
    ///
    /// # Errors
    /// [`DecodeError::UnexpectedEnd`] on short input.
    pub fn fixed_opaque_array<const LENGTH: usize>(&mut self) -> Result<[u8; LENGTH], DecodeError> {
        let bytes = self.fixed_opaque(LENGTH)?;
        let mut array = [0; LENGTH];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    /// A length that must not exceed `maximum` elements.
    ///
    /// # Errors
    /// [`DecodeError::LengthTooLarge`] past the maximum.
    pub fn length(&mut self, maximum: u32) -> Result<u32, DecodeError> {
        let length = self.u32()?;
        if length > maximum {
            return Err(DecodeError::LengthTooLarge { length, maximum });
        }
        Ok(length)
    }

    /// Variable-length opaque data of at most `maximum` bytes, borrowed
    /// (RFC 4506 section 4.10).
    ///
    /// # Errors
    /// [`DecodeError::LengthTooLarge`] or [`DecodeError::UnexpectedEnd`].
    pub fn variable_opaque(&mut self, maximum: u32) -> Result<&'input [u8], DecodeError> {
        let length = self.length(maximum)?;
        self.fixed_opaque(length as usize)
    }

    /// Variable-length opaque data of at most `maximum` bytes, copied.
    ///
    /// # Errors
    /// As [`Decoder::variable_opaque`].
    pub fn variable_opaque_vec(&mut self, maximum: u32) -> Result<Vec<u8>, DecodeError> {
        Ok(self.variable_opaque(maximum)?.to_vec())
    }

    /// A string of at most `maximum` bytes (RFC 4506 section 4.11), kept as
    /// bytes: NFS names need not be UTF-8.
    ///
    /// # Errors
    /// As [`Decoder::variable_opaque`].
    pub fn string(&mut self, maximum: u32) -> Result<Vec<u8>, DecodeError> {
        self.variable_opaque_vec(maximum)
    }

    /// A variable-length array of at most `maximum` elements (RFC 4506
    /// section 4.13). Capacity is reserved only for as many elements as the
    /// remaining input could hold at four bytes each.
    ///
    /// # Errors
    /// [`DecodeError::LengthTooLarge`], or the element decoder's error.
    pub fn array<T>(
        &mut self,
        maximum: u32,
        mut element: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = self.length(maximum)? as usize;
        let mut elements = Vec::with_capacity(count.min(self.remaining() / 4));
        for _ in 0..count {
            elements.push(element(self)?);
        }
        Ok(elements)
    }

    /// Optional data (RFC 4506 section 4.19): a boolean, then the value.
    ///
    /// # Errors
    /// [`DecodeError::InvalidBoolean`], or the value decoder's error.
    pub fn optional<T>(
        &mut self,
        value: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        if self.bool()? {
            Ok(Some(value(self)?))
        } else {
            Ok(None)
        }
    }

    /// Any [`crate::Decode`] type.
    ///
    /// # Errors
    /// The type's decoding error.
    pub fn decode<T: crate::Decode>(&mut self) -> Result<T, DecodeError> {
        T::decode(self)
    }
}
