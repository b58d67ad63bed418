//! The `Encode` / `Decode` traits, their impls for XDR primitives, and the
//! `xdr_struct!` macro that derives both for a plain XDR struct.
//!
//! Design: a struct in an RFC is its fields in order (RFC 4506 section 4.14),
//! so one macro writes the struct and both directions from a single field
//! list; the two directions cannot drift apart. Variable-length fields name
//! their bound with `as VariableOpaque<MAX>` or `as VariableArray<MAX>`,
//! because a bare `Vec` has no maximum on the wire.

use alloc::vec::Vec;
use core::marker::PhantomData;

use crate::{DecodeError, Decoder, Encoder};

/// A type with an XDR encoding.
pub trait Encode {
    /// Appends this value's encoding.
    fn encode(&self, encoder: &mut Encoder);
}

/// A type that can be decoded from untrusted XDR.
pub trait Decode: Sized {
    /// Reads one value.
    ///
    /// # Errors
    /// Any [`DecodeError`]; the decoder's position is then unspecified.
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError>;
}

/// A codec for a field whose Rust type alone does not say how it is encoded
/// (a bounded `Vec`).
pub trait FieldCodec<T> {
    /// Appends the field.
    fn encode_field(value: &T, encoder: &mut Encoder);
    /// Reads the field.
    ///
    /// # Errors
    /// Any [`DecodeError`].
    fn decode_field(decoder: &mut Decoder<'_>) -> Result<T, DecodeError>;
}

/// `opaque<MAXIMUM>` or `string<MAXIMUM>` held as `Vec<u8>`.
#[derive(Debug)]
pub struct VariableOpaque<const MAXIMUM: u32>;

impl<const MAXIMUM: u32> FieldCodec<Vec<u8>> for VariableOpaque<MAXIMUM> {
    fn encode_field(value: &Vec<u8>, encoder: &mut Encoder) {
        encoder.variable_opaque(value);
    }
    fn decode_field(decoder: &mut Decoder<'_>) -> Result<Vec<u8>, DecodeError> {
        decoder.variable_opaque_vec(MAXIMUM)
    }
}

/// `T<MAXIMUM>`: a variable-length array of XDR values.
#[derive(Debug)]
pub struct VariableArray<const MAXIMUM: u32, T>(PhantomData<T>);

impl<const MAXIMUM: u32, T: Encode + Decode> FieldCodec<Vec<T>> for VariableArray<MAXIMUM, T> {
    fn encode_field(value: &Vec<T>, encoder: &mut Encoder) {
        encoder.array(value, |encoder, element| element.encode(encoder));
    }
    fn decode_field(decoder: &mut Decoder<'_>) -> Result<Vec<T>, DecodeError> {
        decoder.array(MAXIMUM, T::decode)
    }
}

macro_rules! primitive {
    ($type:ty, $method:ident) => {
        impl Encode for $type {
            fn encode(&self, encoder: &mut Encoder) {
                encoder.$method(*self);
            }
        }
        impl Decode for $type {
            fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
                decoder.$method()
            }
        }
    };
}

primitive!(u32, u32);
primitive!(i32, i32);
primitive!(u64, u64);
primitive!(i64, i64);
primitive!(bool, bool);

/// `void` (RFC 4506 section 4.16).
impl Encode for () {
    fn encode(&self, _encoder: &mut Encoder) {}
}

impl Decode for () {
    fn decode(_decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(())
    }
}

/// `opaque[LENGTH]` (RFC 4506 section 4.9).
impl<const LENGTH: usize> Encode for [u8; LENGTH] {
    fn encode(&self, encoder: &mut Encoder) {
        encoder.fixed_opaque(self);
    }
}

impl<const LENGTH: usize> Decode for [u8; LENGTH] {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        decoder.fixed_opaque_array()
    }
}

/// `T *` optional data (RFC 4506 section 4.19).
impl<T: Encode> Encode for Option<T> {
    fn encode(&self, encoder: &mut Encoder) {
        encoder.optional(self.as_ref(), |encoder, value| value.encode(encoder));
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        decoder.optional(T::decode)
    }
}

/// Encodes a value into a fresh buffer.
pub fn to_bytes<T: Encode + ?Sized>(value: &T) -> Vec<u8> {
    let mut encoder = Encoder::new();
    value.encode(&mut encoder);
    encoder.into_bytes()
}

/// Decodes a value that must occupy all of `bytes`.
///
/// # Errors
/// The type's error, or [`DecodeError::TrailingBytes`].
pub fn from_bytes<T: Decode>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut decoder = Decoder::new(bytes);
    let value = T::decode(&mut decoder)?;
    decoder.finish()?;
    Ok(value)
}

/// Declares a struct whose XDR encoding is its fields in order, and derives
/// [`Encode`] and [`Decode`] for it. A field may name a [`FieldCodec`] with
/// `as`:
///
/// ```
/// xdr::xdr_struct! {
///     /// A name and a number.
///     pub struct Example {
///         /// At most 8 bytes.
///         pub name: Vec<u8> as xdr::VariableOpaque<8>,
///         /// Any number.
///         pub number: u32,
///     }
/// }
/// let bytes = xdr::to_bytes(&Example { name: b"ab".to_vec(), number: 7 });
/// assert_eq!(bytes, [0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0, 0, 7]);
/// ```
#[macro_export]
macro_rules! xdr_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident : $type:ty $(as $codec:ty)?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $(
                $(#[$field_meta])*
                pub $field: $type,
            )*
        }

        impl $crate::Encode for $name {
            fn encode(&self, encoder: &mut $crate::Encoder) {
                $( $crate::__xdr_encode_field!(&self.$field, encoder, $type $(, $codec)?); )*
            }
        }

        impl $crate::Decode for $name {
            fn decode(
                decoder: &mut $crate::Decoder<'_>,
            ) -> ::core::result::Result<Self, $crate::DecodeError> {
                Ok($name {
                    $( $field: $crate::__xdr_decode_field!(decoder, $type $(, $codec)?), )*
                })
            }
        }
    };
}

/// Implementation detail of [`xdr_struct!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __xdr_encode_field {
    ($value:expr, $encoder:ident, $type:ty) => {
        $crate::Encode::encode($value, $encoder)
    };
    ($value:expr, $encoder:ident, $type:ty, $codec:ty) => {
        <$codec as $crate::FieldCodec<$type>>::encode_field($value, $encoder)
    };
}

/// Implementation detail of [`xdr_struct!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __xdr_decode_field {
    ($decoder:ident, $type:ty) => {
        <$type as $crate::Decode>::decode($decoder)?
    };
    ($decoder:ident, $type:ty, $codec:ty) => {
        <$codec as $crate::FieldCodec<$type>>::decode_field($decoder)?
    };
}
