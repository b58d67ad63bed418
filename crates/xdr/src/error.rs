//! Decoding errors: one small enum for every way untrusted XDR can be wrong.
//!
//! The decoder reports the first problem and stops; callers map any of these
//! to the protocol's "garbage arguments" answer (RFC 5531 section 9).

use core::fmt;

/// Why a sequence of bytes is not a valid encoding of the expected type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended while `needed` more bytes were expected.
    UnexpectedEnd {
        /// Bytes the current item still needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A variable-length item declared more elements or bytes than allowed.
    LengthTooLarge {
        /// The length on the wire.
        length: u32,
        /// The largest length the type allows.
        maximum: u32,
    },
    /// A boolean was neither 0 nor 1 (RFC 4506 section 4.4).
    InvalidBoolean(u32),
    /// An enum or union discriminant is not one the type defines.
    UnknownDiscriminant {
        /// The type being decoded.
        type_name: &'static str,
        /// The value on the wire.
        value: u32,
    },
    /// Bytes were left over after a complete message.
    TrailingBytes(usize),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnexpectedEnd { needed, remaining } => write!(
                formatter,
                "input ended: needed {needed} bytes, {remaining} remaining"
            ),
            DecodeError::LengthTooLarge { length, maximum } => {
                write!(formatter, "length {length} exceeds the maximum {maximum}")
            }
            DecodeError::InvalidBoolean(value) => write!(formatter, "invalid boolean {value}"),
            DecodeError::UnknownDiscriminant { type_name, value } => {
                write!(formatter, "unknown {type_name} discriminant {value}")
            }
            DecodeError::TrailingBytes(count) => {
                write!(formatter, "{count} trailing bytes after the message")
            }
        }
    }
}

impl core::error::Error for DecodeError {}
