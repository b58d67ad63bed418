//! Golden byte tests for the XDR primitives (RFC 4506 section 4): decode,
//! construct, encode, compare; truncated input and oversize lengths fail.

use xdr::{from_bytes, to_bytes, DecodeError, Decoder, Encoder};

#[test]
fn integers_are_big_endian() {
    let mut encoder = Encoder::new();
    encoder.u32(0x0102_0304);
    encoder.i32(-2);
    encoder.u64(0x0102_0304_0506_0708);
    encoder.i64(-1);
    encoder.bool(true);
    let expected: &[u8] = &[
        1, 2, 3, 4, 0xff, 0xff, 0xff, 0xfe, 1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0, 0, 0, 1,
    ];
    assert_eq!(encoder.as_bytes(), expected);
    let mut decoder = Decoder::new(expected);
    assert_eq!(decoder.u32(), Ok(0x0102_0304));
    assert_eq!(decoder.i32(), Ok(-2));
    assert_eq!(decoder.u64(), Ok(0x0102_0304_0506_0708));
    assert_eq!(decoder.i64(), Ok(-1));
    assert_eq!(decoder.bool(), Ok(true));
    assert_eq!(decoder.finish(), Ok(()));
}

#[test]
fn boolean_other_than_zero_or_one_is_rejected() {
    assert_eq!(
        from_bytes::<bool>(&[0, 0, 0, 2]),
        Err(DecodeError::InvalidBoolean(2))
    );
}

#[test]
fn variable_opaque_is_padded_to_four_bytes() {
    let mut encoder = Encoder::new();
    encoder.variable_opaque(b"hello");
    let expected: &[u8] = &[0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o', 0, 0, 0];
    assert_eq!(encoder.as_bytes(), expected);
    let mut decoder = Decoder::new(expected);
    assert_eq!(decoder.variable_opaque(5), Ok(&b"hello"[..]));
    assert!(decoder.is_empty());
}

#[test]
fn fixed_opaque_round_trips() {
    let verifier = [1u8, 2, 3, 4, 5, 6, 7, 8];
    assert_eq!(to_bytes(&verifier), verifier);
    assert_eq!(from_bytes::<[u8; 8]>(&verifier), Ok(verifier));
    let three = [9u8, 9, 9];
    assert_eq!(to_bytes(&three), [9, 9, 9, 0]);
    assert_eq!(from_bytes::<[u8; 3]>(&[9, 9, 9, 0]), Ok(three));
}

#[test]
fn length_over_maximum_is_rejected_before_reading() {
    let bytes = [0, 0, 0, 6, b'a', b'b', b'c', b'd', b'e', b'f', 0, 0];
    assert_eq!(
        Decoder::new(&bytes).string(5),
        Err(DecodeError::LengthTooLarge {
            length: 6,
            maximum: 5
        })
    );
}

#[test]
fn huge_declared_length_fails_without_allocating() {
    let bytes = [0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4];
    assert_eq!(
        Decoder::new(&bytes).variable_opaque(u32::MAX),
        Err(DecodeError::UnexpectedEnd {
            needed: 0x1_0000_0000,
            remaining: 4
        })
    );
    // An array claiming four billion elements reserves at most one per
    // remaining word and then fails on the missing elements.
    let result = Decoder::new(&bytes).array(u32::MAX, |decoder| decoder.u32());
    assert_eq!(
        result,
        Err(DecodeError::UnexpectedEnd {
            needed: 4,
            remaining: 0
        })
    );
}

#[test]
fn truncated_input_is_an_error_at_every_length() {
    let mut encoder = Encoder::new();
    encoder.u64(7);
    encoder.string(b"name");
    encoder.array(&[1u32, 2, 3], |encoder, value| encoder.u32(*value));
    let bytes = encoder.into_bytes();
    let decode = |input: &[u8]| -> Result<(u64, Vec<u8>, Vec<u32>), DecodeError> {
        let mut decoder = Decoder::new(input);
        let number = decoder.u64()?;
        let name = decoder.string(16)?;
        let values = decoder.array(8, |decoder| decoder.u32())?;
        decoder.finish()?;
        Ok((number, name, values))
    };
    assert_eq!(decode(&bytes), Ok((7, b"name".to_vec(), vec![1, 2, 3])));
    for length in 0..bytes.len() {
        assert!(
            matches!(
                decode(&bytes[..length]),
                Err(DecodeError::UnexpectedEnd { .. })
            ),
            "prefix of {length} bytes"
        );
    }
}

#[test]
fn optional_data_is_a_boolean_then_the_value() {
    assert_eq!(to_bytes(&Some(5u32)), [0, 0, 0, 1, 0, 0, 0, 5]);
    assert_eq!(to_bytes(&None::<u32>), [0, 0, 0, 0]);
    assert_eq!(
        from_bytes::<Option<u32>>(&[0, 0, 0, 1, 0, 0, 0, 5]),
        Ok(Some(5))
    );
    assert_eq!(from_bytes::<Option<u32>>(&[0, 0, 0, 0]), Ok(None));
}

#[test]
fn trailing_bytes_are_reported() {
    assert_eq!(
        from_bytes::<u32>(&[0, 0, 0, 1, 0]),
        Err(DecodeError::TrailingBytes(1))
    );
}

#[test]
fn nonzero_padding_is_accepted_and_normalised() {
    let bytes = [0, 0, 0, 1, b'x', 7, 7, 7];
    let mut decoder = Decoder::new(&bytes);
    let value = decoder.variable_opaque_vec(4).unwrap();
    assert_eq!(value, b"x");
    let mut encoder = Encoder::new();
    encoder.variable_opaque(&value);
    assert_eq!(encoder.as_bytes(), [0, 0, 0, 1, b'x', 0, 0, 0]);
}

#[test]
fn errors_display_their_subject() {
    let text = DecodeError::UnknownDiscriminant {
        type_name: "ftype3",
        value: 9,
    }
    .to_string();
    assert_eq!(text, "unknown ftype3 discriminant 9");
}
