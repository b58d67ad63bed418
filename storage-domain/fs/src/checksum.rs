//! CRC-32C (Castagnoli), the checksum of every metadata block.
//!
//! Written here rather than taken from a crate: it is a few dozen lines,
//! the tables are computed at compile time, and it keeps this no_std crate
//! free of dependencies. CRC-32C is what ext4, btrfs and iSCSI use for
//! metadata; it catches every burst error up to 32 bits, which is the point
//! here (detecting torn and misdirected writes and bit rot), not security.
//!
//! Eight bytes per step ("slicing by 8": eight 256-entry tables, each the
//! CRC of a byte followed by 0 to 7 zero bytes): every metadata block read
//! or written is checksummed whole (4 KiB), and a byte at a time was the
//! largest cost of opening a volume and of fsck (and of the fuzz targets
//! that do both for every input).

const POLYNOMIAL: u32 = 0x82F6_3B78;

/// `TABLES[0]`: the CRC of each byte; `TABLES[k]`: of each byte followed
/// by `k` zero bytes.
const TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut index = 0;
    while index < 256 {
        let mut value = index as u32;
        let mut bit = 0;
        while bit < 8 {
            value = if value & 1 == 1 {
                (value >> 1) ^ POLYNOMIAL
            } else {
                value >> 1
            };
            bit += 1;
        }
        tables[0][index] = value;
        index += 1;
    }
    let mut slice = 1;
    while slice < 8 {
        let mut index = 0;
        while index < 256 {
            let previous = tables[slice - 1][index];
            tables[slice][index] = (previous >> 8) ^ tables[0][(previous & 0xFF) as usize];
            index += 1;
        }
        slice += 1;
    }
    tables
};

/// The CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let low = u32::from_le_bytes([word[0], word[1], word[2], word[3]]) ^ crc;
        let high = u32::from_le_bytes([word[4], word[5], word[6], word[7]]);
        crc = TABLES[7][(low & 0xFF) as usize]
            ^ TABLES[6][((low >> 8) & 0xFF) as usize]
            ^ TABLES[5][((low >> 16) & 0xFF) as usize]
            ^ TABLES[4][(low >> 24) as usize]
            ^ TABLES[3][(high & 0xFF) as usize]
            ^ TABLES[2][((high >> 8) & 0xFF) as usize]
            ^ TABLES[1][((high >> 16) & 0xFF) as usize]
            ^ TABLES[0][(high >> 24) as usize];
    }
    for &byte in words.remainder() {
        crc = TABLES[0][((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vectors() {
        // RFC 3720 appendix B.4 test vectors.
        assert_eq!(super::crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(super::crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }

    /// A byte at a time, straight from the definition.
    fn bitwise(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ super::POLYNOMIAL
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn eight_bytes_a_step_agree_with_the_definition_at_every_length_and_offset() {
        let bytes: alloc::vec::Vec<u8> = (0..600u32)
            .map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..9 {
            for end in start..bytes.len() {
                let slice = &bytes[start..end];
                assert_eq!(super::crc32c(slice), bitwise(slice), "{start}..{end}");
            }
        }
    }
}
