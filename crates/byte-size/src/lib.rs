//! Sizes as people write them: `4096`, `64K`, `512MiB`, `10GB`.
//!
//! Every size option of the project (the hosted server's `--size` and
//! `--cache-size`, `mkfs --size`, `cargo xtask quickstart --size`, the Xen
//! kernel's `cache=`) goes through [`parse_size`], so they all accept the
//! same spellings and refuse the same mistakes with the same words.
//!
//! The units follow GNU coreutils (`truncate -s`, `dd`), which is what
//! people who type sizes on Linux expect:
//!
//! | unit | multiple |
//! |---|---|
//! | none, `B` | 1 |
//! | `K`, `KiB` | 1024 |
//! | `M`, `MiB` | 1024² |
//! | `G`, `GiB` | 1024³ |
//! | `T`, `TiB` | 1024⁴ |
//! | `KB` | 1000 |
//! | `MB` | 1000² |
//! | `GB` | 1000³ |
//! | `TB` | 1000⁴ |
//!
//! Case does not matter (`512mib`, `1g`), and one run of spaces may stand
//! between the number and the unit (`"512 MiB"`). The number is a whole,
//! unsigned decimal number: fractions (`1.5G`), signs and hexadecimal are
//! refused rather than guessed at.
#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

/// What the size options' help says about units, in one place.
pub const UNITS_HELP: &str =
    "K, M, G, T and KiB, MiB, GiB, TiB are powers of 1024; KB, MB, GB, TB are powers of 1000";

/// Why a size was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// Nothing but white space.
    Empty,
    /// The text does not start with a decimal digit (`-1`, `G`, `0x10`).
    NotANumber,
    /// A fraction such as `1.5G`.
    Fraction,
    /// The text after the number is not a unit of the table.
    UnknownUnit,
    /// The size does not fit in 64 bits.
    Overflow,
}

impl fmt::Display for SizeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeError::Empty => formatter.write_str("no size given (examples: 1G, 512MiB, 65536)"),
            SizeError::NotANumber => formatter.write_str(
                "a size is a whole decimal number of bytes with an optional unit \
                 (examples: 1G, 512MiB, 65536)",
            ),
            SizeError::Fraction => {
                formatter.write_str("fractions are not accepted: write 1536M, not 1.5G")
            }
            SizeError::UnknownUnit => write!(formatter, "unknown unit: {UNITS_HELP}"),
            SizeError::Overflow => formatter.write_str("too large: at most 2^64 - 1 bytes"),
        }
    }
}

impl core::error::Error for SizeError {}

/// The multiple of `unit` (ASCII, any case), or `None` for an unknown one.
fn multiplier(unit: &str) -> Option<u64> {
    let unit = unit.as_bytes();
    let (prefix, suffix) = match unit.split_first() {
        None => return Some(1),
        Some((prefix, suffix)) => (prefix.to_ascii_uppercase(), suffix),
    };
    if prefix == b'B' && suffix.is_empty() {
        return Some(1);
    }
    let exponent = match prefix {
        b'K' => 1,
        b'M' => 2,
        b'G' => 3,
        b'T' => 4,
        _ => return None,
    };
    let base: u64 = if suffix.eq_ignore_ascii_case(b"") || suffix.eq_ignore_ascii_case(b"iB") {
        1024
    } else if suffix.eq_ignore_ascii_case(b"B") {
        1000
    } else {
        return None;
    };
    Some(base.pow(exponent))
}

/// Parse a size in bytes (see the crate documentation for the units).
///
/// # Errors
/// [`SizeError`] says what is wrong: no number, a fraction, an unknown
/// unit, or more than `u64::MAX` bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SizeError::Empty);
    }
    let digits_end = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, rest) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(SizeError::NotANumber);
    }
    if rest.starts_with(['.', ',']) {
        return Err(SizeError::Fraction);
    }
    let multiplier = multiplier(rest.trim_start()).ok_or(SizeError::UnknownUnit)?;
    // Digits only, so the one parse error left is a number past u64.
    let value = digits.parse::<u64>().map_err(|_| SizeError::Overflow)?;
    value.checked_mul(multiplier).ok_or(SizeError::Overflow)
}

/// A byte count shown the way people read it: `256 KiB` when it is a
/// whole number of a binary unit, else `262145 bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        let bytes = self.0;
        for (name, shift) in UNITS {
            if bytes != 0 && bytes.trailing_zeros() >= shift {
                return write!(formatter, "{} {name}", bytes >> shift);
            }
        }
        write!(formatter, "{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn golden_sizes() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("4096", 4096),
            ("  4096  ", 4096),
            ("10B", 10),
            ("10b", 10),
            ("64K", 64 << 10),
            ("64k", 64 << 10),
            ("64KiB", 64 << 10),
            ("64kib", 64 << 10),
            ("64KB", 64_000),
            ("64kB", 64_000),
            ("512M", 512 << 20),
            ("512MiB", 512 << 20),
            ("512 MiB", 512 << 20),
            ("512MB", 512_000_000),
            ("1G", 1 << 30),
            ("1GiB", 1 << 30),
            ("1GB", 1_000_000_000),
            ("2T", 2 << 40),
            ("2TiB", 2 << 40),
            ("2TB", 2_000_000_000_000),
            ("007M", 7 << 20),
            ("18446744073709551615", u64::MAX),
            ("16777215T", 16_777_215 << 40),
            ("18446744TB", 18_446_744_000_000_000_000),
        ];
        for &(text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text:?}");
        }
    }

    #[test]
    fn golden_errors() {
        let cases: &[(&str, SizeError)] = &[
            ("", SizeError::Empty),
            ("   ", SizeError::Empty),
            ("G", SizeError::NotANumber),
            ("-1", SizeError::NotANumber),
            ("+1", SizeError::NotANumber),
            ("MiB512", SizeError::NotANumber),
            ("1.5G", SizeError::Fraction),
            ("1,5G", SizeError::Fraction),
            ("12Q", SizeError::UnknownUnit),
            ("1P", SizeError::UnknownUnit),
            ("1 G B", SizeError::UnknownUnit),
            ("1KIBB", SizeError::UnknownUnit),
            ("1Kb2", SizeError::UnknownUnit),
            ("1iB", SizeError::UnknownUnit),
            ("0x10", SizeError::UnknownUnit),
            ("1e9", SizeError::UnknownUnit),
            ("18446744073709551616", SizeError::Overflow),
            ("99999999999999999999999", SizeError::Overflow),
            ("16777216T", SizeError::Overflow),
            ("99999999999T", SizeError::Overflow),
            ("18446745TB", SizeError::Overflow),
        ];
        for &(text, error) in cases {
            assert_eq!(parse_size(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn error_messages_say_what_to_write() {
        assert_eq!(
            SizeError::UnknownUnit.to_string(),
            "unknown unit: K, M, G, T and KiB, MiB, GiB, TiB are powers of 1024; \
             KB, MB, GB, TB are powers of 1000"
        );
        assert!(SizeError::Fraction.to_string().contains("1536M"));
        assert!(SizeError::Overflow.to_string().contains("2^64"));
    }

    #[test]
    fn shows_sizes() {
        assert_eq!(ByteSize(256 << 10).to_string(), "256 KiB");
        assert_eq!(ByteSize(1 << 30).to_string(), "1 GiB");
        assert_eq!(ByteSize(3 << 40).to_string(), "3 TiB");
        assert_eq!(ByteSize(1536 << 20).to_string(), "1536 MiB");
        assert_eq!(ByteSize(10).to_string(), "10 bytes");
        assert_eq!(ByteSize(0).to_string(), "0 bytes");
        assert_eq!(ByteSize(262_145).to_string(), "262145 bytes");
    }
}
