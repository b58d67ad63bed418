//! Record marking for RPC over byte streams (RFC 5531 section 11).
//!
//! On TCP (and on the hosted stream transports) each RPC message is a record
//! sent as one or more fragments; each fragment starts with a four-byte big
//! endian mark: the top bit says "last fragment", the other 31 bits give the
//! fragment's length.
//!
//! Design: the [`RecordReassembler`] is a pure state machine fed with
//! whatever chunks the transport read (one byte or many records at a time).
//! It never buffers more than one record, and it refuses a record larger than
//! its configured maximum as soon as a fragment mark announces it, before the
//! bytes arrive; the transport then drops the connection, since the stream
//! cannot be resynchronised. Encoding is either [`encode_record`] (split into
//! fragments) or [`begin_record`] / [`end_record`] around a reply encoded in
//! place, which avoids a copy.

use alloc::vec::Vec;
use core::fmt;

/// Top bit of a fragment mark: this is the record's last fragment.
pub const LAST_FRAGMENT: u32 = 0x8000_0000;
/// Largest fragment length a mark can express.
pub const MAX_FRAGMENT_LENGTH: usize = 0x7fff_ffff;

/// Why the stream must be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// The record being reassembled would exceed the maximum.
    RecordTooLarge {
        /// The size the fragment marks announced so far.
        announced: u64,
        /// The configured maximum.
        maximum: usize,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::RecordTooLarge { announced, maximum } => write!(
                formatter,
                "record of at least {announced} bytes exceeds the maximum of {maximum}"
            ),
        }
    }
}

impl core::error::Error for RecordError {}

/// The result of one [`RecordReassembler::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// How many input bytes were consumed. Less than the input only when a
    /// record completed: push the rest again.
    pub consumed: usize,
    /// A complete record, if one finished.
    pub record: Option<Vec<u8>>,
}

/// Reassembles records from a byte stream delivered in arbitrary chunks.
#[derive(Debug, Clone)]
pub struct RecordReassembler {
    maximum_record_size: usize,
    mark: [u8; 4],
    mark_filled: usize,
    /// Bytes still to come in the current fragment; `None` while reading a mark.
    fragment_remaining: Option<usize>,
    last_fragment: bool,
    /// A fragment of the current record (possibly empty) has been seen.
    record_started: bool,
    record: Vec<u8>,
    failure: Option<RecordError>,
}

impl RecordReassembler {
    /// A reassembler that refuses records over `maximum_record_size` bytes.
    pub fn new(maximum_record_size: usize) -> Self {
        RecordReassembler {
            maximum_record_size,
            mark: [0; 4],
            mark_filled: 0,
            fragment_remaining: None,
            last_fragment: false,
            record_started: false,
            record: Vec::new(),
            failure: None,
        }
    }

    /// Offers `buffer` (a record the caller is done with) for the next
    /// record to be built in: taken, emptied, when no record is under way
    /// and it has more room than the reassembler's own buffer; dropped
    /// otherwise, as is one with more than twice the largest record's
    /// room (a record grown piece by piece may have up to twice its
    /// length). A record's room otherwise grows with the bytes that
    /// arrive, never ahead of them: a client's mark alone takes no memory,
    /// which the Xen domain's TCP budget counts on.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.record.is_empty()
            && !self.record_started
            && buffer.capacity() > self.record.capacity()
            && buffer.capacity() <= self.maximum_record_size.saturating_mul(2)
        {
            buffer.clear();
            self.record = buffer;
        }
    }

    /// Whether the stream is at a record boundary: end of stream here is
    /// clean, anywhere else it truncated a record.
    pub fn is_between_records(&self) -> bool {
        self.mark_filled == 0 && self.fragment_remaining.is_none() && !self.record_started
    }

    /// Consumes bytes until the input is exhausted or one record completes.
    ///
    /// # Errors
    /// [`RecordError::RecordTooLarge`]; the reassembler then stays failed
    /// and the connection should be dropped.
    pub fn push(&mut self, input: &[u8]) -> Result<Pushed, RecordError> {
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        let mut consumed = 0;
        loop {
            let remaining = match self.fragment_remaining {
                Some(remaining) => remaining,
                None => {
                    let wanted = 4 - self.mark_filled;
                    let available = wanted.min(input.len() - consumed);
                    self.mark[self.mark_filled..self.mark_filled + available]
                        .copy_from_slice(&input[consumed..consumed + available]);
                    self.mark_filled += available;
                    consumed += available;
                    if self.mark_filled < 4 {
                        return Ok(Pushed {
                            consumed,
                            record: None,
                        });
                    }
                    self.start_fragment()?
                }
            };
            let available = remaining.min(input.len() - consumed);
            self.record
                .extend_from_slice(&input[consumed..consumed + available]);
            consumed += available;
            let remaining = remaining - available;
            if remaining > 0 {
                self.fragment_remaining = Some(remaining);
                return Ok(Pushed {
                    consumed,
                    record: None,
                });
            }
            self.fragment_remaining = None;
            if self.last_fragment {
                self.last_fragment = false;
                self.record_started = false;
                return Ok(Pushed {
                    consumed,
                    record: Some(core::mem::take(&mut self.record)),
                });
            }
            if consumed == input.len() {
                return Ok(Pushed {
                    consumed,
                    record: None,
                });
            }
        }
    }

    /// Parses a complete mark and checks the announced size.
    fn start_fragment(&mut self) -> Result<usize, RecordError> {
        let mark = u32::from_be_bytes(self.mark);
        self.mark_filled = 0;
        self.last_fragment = mark & LAST_FRAGMENT != 0;
        let length = (mark & !LAST_FRAGMENT) as usize;
        let announced = self.record.len() as u64 + length as u64;
        if announced > self.maximum_record_size as u64 {
            let failure = RecordError::RecordTooLarge {
                announced,
                maximum: self.maximum_record_size,
            };
            self.failure = Some(failure);
            self.record = Vec::new();
            return Err(failure);
        }
        self.fragment_remaining = Some(length);
        self.record_started = true;
        Ok(length)
    }
}

/// Appends `record` as fragments of at most `maximum_fragment` bytes (clamped
/// to 1..=2^31-1). An empty record is one empty last fragment.
pub fn encode_record(record: &[u8], maximum_fragment: usize, output: &mut Vec<u8>) {
    let maximum_fragment = maximum_fragment.clamp(1, MAX_FRAGMENT_LENGTH);
    let mut rest = record;
    loop {
        let length = rest.len().min(maximum_fragment);
        let (fragment, after) = rest.split_at(length);
        let last = if after.is_empty() { LAST_FRAGMENT } else { 0 };
        // `length` is at most MAX_FRAGMENT_LENGTH, so it fits in 31 bits.
        output.extend_from_slice(&(last | length as u32).to_be_bytes());
        output.extend_from_slice(fragment);
        rest = after;
        if rest.is_empty() {
            return;
        }
    }
}

/// Where a single-fragment record started in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordStart(usize);

/// Reserves a fragment mark at the end of `buffer`; encode the message after
/// it, then call [`end_record`].
pub fn begin_record(buffer: &mut Vec<u8>) -> RecordStart {
    let start = buffer.len();
    buffer.extend_from_slice(&[0; 4]);
    RecordStart(start)
}

/// Fills in the mark reserved by [`begin_record`]: the record is everything
/// after it, sent as one last fragment.
///
/// # Panics
/// If the record exceeds [`MAX_FRAGMENT_LENGTH`] bytes or `start` does not
/// come from `begin_record` on this buffer.
pub fn end_record(buffer: &mut [u8], start: RecordStart) {
    let length = buffer.len() - start.0 - 4;
    assert!(
        length <= MAX_FRAGMENT_LENGTH,
        "record too large for one fragment"
    );
    let mark = LAST_FRAGMENT | length as u32;
    buffer[start.0..start.0 + 4].copy_from_slice(&mark.to_be_bytes());
}
