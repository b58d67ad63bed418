//! XDR (RFC 4506) and ONC RPC (RFC 5531) encoding for no_std.
//!
//! Design: the protocol crates above (`nfs3`) and both ends of the wire (the
//! storage domain's server and the guest driver's client) share one encoder
//! and one decoder, so a message encoded by one side decodes on the other by
//! construction. The decoder is the only code that touches untrusted bytes;
//! its contract (no panics, allocation bounded by the input) is stated in
//! [`decode`]. No clock, no I/O: the transport feeds bytes to the
//! [`record`] reassembler and hands complete records to the decoders.
//!
//! - XDR primitives: <https://www.rfc-editor.org/rfc/rfc4506#section-4>
//! - RPC messages: <https://www.rfc-editor.org/rfc/rfc5531#section-9>
//! - AUTH_SYS: <https://www.rfc-editor.org/rfc/rfc5531#appendix-A>
//! - Record marking: <https://www.rfc-editor.org/rfc/rfc5531#section-11>
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod auth;
mod codec;
pub mod decode;
pub mod encode;
mod error;
pub mod record;
pub mod rpc;

pub use auth::{AuthFlavor, AuthStatus, AuthSys, Credential, OpaqueAuth};
pub use codec::{from_bytes, to_bytes, Decode, Encode, FieldCodec, VariableArray, VariableOpaque};
pub use decode::Decoder;
pub use encode::Encoder;
pub use error::DecodeError;
pub use record::{Pushed, RecordError, RecordReassembler};
pub use rpc::{
    AcceptedReply, AcceptedStatus, CallError, CallHeader, RejectedReply, ReplyBody, ReplyError,
    ReplyHeader,
};

/// Bytes of zero padding after `length` bytes of opaque data, to reach a
/// multiple of four (RFC 4506 section 3).
pub const fn padding_length(length: usize) -> usize {
    (4 - length % 4) % 4
}

/// `length` rounded up to a multiple of four: the size of fixed opaque data.
pub const fn padded_length(length: usize) -> usize {
    length + padding_length(length)
}
