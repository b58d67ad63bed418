//! A fixed-size bit set over block numbers.

use alloc::vec;
use alloc::vec::Vec;

/// One bit per block: set = in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    length: u64,
    set_count: u64,
}

impl Bitmap {
    /// All clear, `length` bits.
    pub fn new(length: u64) -> Self {
        Bitmap {
            words: vec![0; length.div_ceil(64) as usize],
            length,
            set_count: 0,
        }
    }

    /// Whether `bit` is set (bits past the end read as set).
    pub fn get(&self, bit: u64) -> bool {
        if bit >= self.length {
            return true;
        }
        self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    /// Set `bit`; returns whether it was clear.
    pub fn set(&mut self, bit: u64) -> bool {
        if self.get(bit) {
            return false;
        }
        self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        self.set_count += 1;
        true
    }

    /// Clear `bit`.
    pub fn clear(&mut self, bit: u64) {
        if bit < self.length && self.get(bit) {
            self.words[(bit / 64) as usize] &= !(1 << (bit % 64));
            self.set_count -= 1;
        }
    }

    /// Set every bit set in `other` (same length).
    pub fn union_with(&mut self, other: &Bitmap) {
        for (word, extra) in self.words.iter_mut().zip(&other.words) {
            *word |= extra;
        }
        self.set_count = self
            .words
            .iter()
            .map(|word| u64::from(word.count_ones()))
            .sum();
    }

    /// Bits set.
    pub fn count(&self) -> u64 {
        self.set_count
    }

    /// The first clear bit at or after `start`, wrapping around once.
    pub fn find_clear(&self, start: u64) -> Option<u64> {
        let start = if start >= self.length { 0 } else { start };
        self.scan(start, self.length)
            .or_else(|| self.scan(0, start))
    }

    fn scan(&self, from: u64, to: u64) -> Option<u64> {
        let mut bit = from;
        while bit < to {
            let word = self.words[(bit / 64) as usize];
            if word == u64::MAX && bit.is_multiple_of(64) {
                bit += 64;
                continue;
            }
            if word & (1 << (bit % 64)) == 0 {
                return Some(bit);
            }
            bit += 1;
        }
        None
    }
}
