//! The XDR encoder: appends to a `Vec<u8>` (RFC 4506 section 4).
//!
//! Encoding is infallible: values built by this program are trusted, and
//! respecting a type's declared maximum is the constructor's job (the
//! decoder on the other side checks it). Padding is always written as zeros.

use alloc::vec::Vec;

use crate::padding_length;

/// An append-only XDR writer that owns its buffer.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    buffer: Vec<u8>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Encoder { buffer: Vec::new() }
    }

    /// An encoder that appends to `buffer` (for example after a reserved
    /// record mark).
    pub fn from_vec(buffer: Vec<u8>) -> Self {
        Encoder { buffer }
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer
    }

    /// Length of the buffer.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// The finished buffer.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buffer
    }

    /// An unsigned integer.
    pub fn u32(&mut self, value: u32) {
        self.buffer.extend_from_slice(&value.to_be_bytes());
    }

    /// A signed integer.
    pub fn i32(&mut self, value: i32) {
        self.buffer.extend_from_slice(&value.to_be_bytes());
    }

    /// An unsigned hyper integer.
    pub fn u64(&mut self, value: u64) {
        self.buffer.extend_from_slice(&value.to_be_bytes());
    }

    /// A signed hyper integer.
    pub fn i64(&mut self, value: i64) {
        self.buffer.extend_from_slice(&value.to_be_bytes());
    }

    /// A boolean.
    pub fn bool(&mut self, value: bool) {
        self.u32(u32::from(value));
    }

    /// Fixed-length opaque data plus zero padding.
    pub fn fixed_opaque(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
        let padding = padding_length(bytes.len());
        self.buffer.extend_from_slice(&[0; 3][..padding]);
    }

    /// A length prefix.
    ///
    /// # Panics
    /// If `length` does not fit in 32 bits, which no XDR item can.
    pub fn length(&mut self, length: usize) {
        let length = u32::try_from(length).expect("XDR lengths fit in 32 bits");
        self.u32(length);
    }

    /// Variable-length opaque data: length, bytes, padding.
    ///
    /// # Panics
    /// If `bytes` is longer than `u32::MAX`.
    pub fn variable_opaque(&mut self, bytes: &[u8]) {
        self.length(bytes.len());
        self.fixed_opaque(bytes);
    }

    /// A string, as bytes.
    ///
    /// # Panics
    /// If `bytes` is longer than `u32::MAX`.
    pub fn string(&mut self, bytes: &[u8]) {
        self.variable_opaque(bytes);
    }

    /// A variable-length array: count, then each element.
    ///
    /// # Panics
    /// If there are more than `u32::MAX` elements.
    pub fn array<T>(&mut self, elements: &[T], mut element: impl FnMut(&mut Self, &T)) {
        self.length(elements.len());
        for value in elements {
            element(self, value);
        }
    }

    /// Optional data: a boolean, then the value if present.
    pub fn optional<T>(&mut self, value: Option<&T>, encode: impl FnOnce(&mut Self, &T)) {
        self.bool(value.is_some());
        if let Some(value) = value {
            encode(self, value);
        }
    }

    /// Any [`crate::Encode`] type.
    pub fn encode<T: crate::Encode + ?Sized>(&mut self, value: &T) {
        value.encode(self);
    }
}
