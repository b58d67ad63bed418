//! Errors of the ring protocol.

use core::fmt;

use crate::memory::OutOfBounds;

/// The peer broke the protocol, or a shared region refused an access.
///
/// Either way the connection is unusable: the backend drops it, the
/// frontend fails every call in flight. Nothing the peer writes causes more
/// than this error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// A shared region refused an access (too small for the parameters).
    Memory(OutOfBounds),
    /// The ring header's magic, version or parameters disagree with the
    /// handshake.
    BadHeader,
    /// The peer's producer index claims more entries than the ring can hold.
    IndexOverrun {
        /// The producer index read.
        producer: u32,
    },
    /// A request slot names more descriptors than allowed or than fit.
    TooManyDescriptors,
    /// An inline record longer than its slot can hold.
    RecordOverflowsSlot,
    /// A descriptor names bytes outside the data pool, or is empty.
    DescriptorOutOfPool,
    /// A splice offset beyond the inline record.
    SpliceOutOfRecord,
    /// A splice length that disagrees with the descriptors.
    SpliceLengthMismatch,
    /// A request record longer than the backend accepts.
    RecordTooLarge,
    /// A request slot with non-zero flags.
    UnknownFlags,
    /// A response for an xid not in flight (frontend), or an answer to a
    /// request this backend did not hand out (backend).
    UnknownXid {
        /// The xid of the response.
        xid: u32,
    },
    /// A response status outside the protocol.
    UnknownStatus,
    /// The backend's caller named a reply segment outside its reply record
    /// (a bug on the serving side, not the peer's doing).
    SegmentOutOfReply,
}

impl From<OutOfBounds> for ProtocolError {
    fn from(error: OutOfBounds) -> Self {
        Self::Memory(error)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory(error) => write!(formatter, "{error}"),
            Self::BadHeader => formatter.write_str("ring header disagrees with the handshake"),
            Self::IndexOverrun { producer } => {
                write!(
                    formatter,
                    "peer producer index {producer} overruns the ring"
                )
            }
            Self::TooManyDescriptors => formatter.write_str("too many descriptors in a slot"),
            Self::RecordOverflowsSlot => formatter.write_str("inline record overflows its slot"),
            Self::DescriptorOutOfPool => formatter.write_str("descriptor outside the data pool"),
            Self::SpliceOutOfRecord => formatter.write_str("splice offset beyond the record"),
            Self::SpliceLengthMismatch => {
                formatter.write_str("splice length disagrees with the descriptors")
            }
            Self::RecordTooLarge => formatter.write_str("request record too large"),
            Self::UnknownFlags => formatter.write_str("unknown request flags"),
            Self::UnknownXid { xid } => {
                write!(formatter, "response for xid {xid:#x} not in flight")
            }
            Self::UnknownStatus => formatter.write_str("unknown response status"),
            Self::SegmentOutOfReply => formatter.write_str("reply segment outside the reply"),
        }
    }
}

impl core::error::Error for ProtocolError {}

/// Why the frontend could not queue a request. Only [`SubmitError::RingFull`]
/// and [`SubmitError::PoolExhausted`] are transient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// Every slot holds a request or an unread response: collect responses.
    RingFull,
    /// Not enough free data pages now: collect responses.
    PoolExhausted,
    /// The payload plus reply capacity exceed the whole pool (or the
    /// descriptor limit): this request can never be sent.
    PoolTooSmall,
    /// The record cannot be carried (too short to hold an xid, or too long
    /// for the slot while it also carries a payload).
    BadRecord,
    /// The record's xid is already in flight.
    DuplicateXid,
    /// A shared region refused an access.
    Memory(OutOfBounds),
}

impl SubmitError {
    /// Whether retrying after responses were collected can succeed.
    pub const fn is_transient(self) -> bool {
        match self {
            Self::RingFull | Self::PoolExhausted => true,
            Self::PoolTooSmall | Self::BadRecord | Self::DuplicateXid | Self::Memory(_) => false,
        }
    }
}

impl From<OutOfBounds> for SubmitError {
    fn from(error: OutOfBounds) -> Self {
        Self::Memory(error)
    }
}

impl fmt::Display for SubmitError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RingFull => formatter.write_str("ring full"),
            Self::PoolExhausted => formatter.write_str("data pool exhausted"),
            Self::PoolTooSmall => formatter.write_str("request larger than the data pool"),
            Self::BadRecord => formatter.write_str("record cannot be carried"),
            Self::DuplicateXid => formatter.write_str("xid already in flight"),
            Self::Memory(error) => write!(formatter, "{error}"),
        }
    }
}

impl core::error::Error for SubmitError {}
