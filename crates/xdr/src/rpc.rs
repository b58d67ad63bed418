//! ONC RPC message headers: the call header and both kinds of reply
//! (RFC 5531 section 9).
//!
//! Design: a message is `xid`, a direction, then a header, then the
//! procedure's arguments or results with no length of their own. So the
//! header types here decode from (and encode into) the same cursor the
//! procedure bodies use: a server decodes a [`CallHeader`] and continues with
//! the arguments; a client decodes a [`ReplyHeader`] and, on
//! [`AcceptedStatus::Success`], continues with the results.
//!
//! Call-header errors carry the `xid` whenever it was read, because RFC 5531
//! wants a reply (`RPC_MISMATCH`) rather than silence for a wrong RPC version.

use core::fmt;

use crate::{AuthStatus, Decode, DecodeError, Decoder, Encode, Encoder, OpaqueAuth};

/// The RPC protocol version this crate speaks (RFC 5531 section 9).
pub const RPC_VERSION: u32 = 2;
/// `msg_type` CALL.
pub const MESSAGE_CALL: u32 = 0;
/// `msg_type` REPLY.
pub const MESSAGE_REPLY: u32 = 1;

/// The transaction id of any RPC message, without decoding the rest: a
/// client uses it to find the pending call (and so the procedure) that a
/// reply answers. `None` if fewer than four bytes.
pub fn peek_xid(message: &[u8]) -> Option<u32> {
    let word = message.get(..4)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

/// The header of a call: everything before the procedure's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallHeader {
    /// Transaction id, echoed in the reply.
    pub xid: u32,
    /// Program number (NFS is 100003).
    pub program: u32,
    /// Program version.
    pub version: u32,
    /// Procedure number within the program.
    pub procedure: u32,
    /// Who is calling.
    pub credential: OpaqueAuth,
    /// Proof of the credential (AUTH_NONE for AUTH_SYS).
    pub verifier: OpaqueAuth,
}

/// Why bytes are not a call this server can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// Malformed before the xid could be read, or within the header: drop it
    /// (or, with an xid, answer `GARBAGE_ARGS`).
    Decode {
        /// The transaction id, if it was read.
        xid: Option<u32>,
        /// What was wrong.
        error: DecodeError,
    },
    /// A reply arrived where a call was expected: ignore it.
    NotACall {
        /// Its transaction id.
        xid: u32,
    },
    /// `rpcvers` is not 2: answer `MSG_DENIED` / `RPC_MISMATCH { 2, 2 }`.
    RpcVersionMismatch {
        /// Its transaction id.
        xid: u32,
        /// The version asked for.
        version: u32,
    },
}

impl fmt::Display for CallError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Decode { error, .. } => write!(formatter, "malformed RPC call: {error}"),
            CallError::NotACall { xid } => write!(formatter, "message {xid:#x} is not a call"),
            CallError::RpcVersionMismatch { version, .. } => {
                write!(formatter, "RPC version {version} is not supported")
            }
        }
    }
}

impl core::error::Error for CallError {}

impl CallHeader {
    /// Reads a call header, leaving the decoder at the arguments.
    ///
    /// # Errors
    /// [`CallError`], which says how the server should react.
    pub fn decode(decoder: &mut Decoder<'_>) -> Result<Self, CallError> {
        let xid = decoder
            .u32()
            .map_err(|error| CallError::Decode { xid: None, error })?;
        let wrap = |error| CallError::Decode {
            xid: Some(xid),
            error,
        };
        if decoder.u32().map_err(wrap)? != MESSAGE_CALL {
            return Err(CallError::NotACall { xid });
        }
        let version = decoder.u32().map_err(wrap)?;
        if version != RPC_VERSION {
            return Err(CallError::RpcVersionMismatch { xid, version });
        }
        Ok(CallHeader {
            xid,
            program: decoder.u32().map_err(wrap)?,
            version: decoder.u32().map_err(wrap)?,
            procedure: decoder.u32().map_err(wrap)?,
            credential: OpaqueAuth::decode(decoder).map_err(wrap)?,
            verifier: OpaqueAuth::decode(decoder).map_err(wrap)?,
        })
    }
}

impl Encode for CallHeader {
    fn encode(&self, encoder: &mut Encoder) {
        encoder.u32(self.xid);
        encoder.u32(MESSAGE_CALL);
        encoder.u32(RPC_VERSION);
        encoder.u32(self.program);
        encoder.u32(self.version);
        encoder.u32(self.procedure);
        self.credential.encode(encoder);
        self.verifier.encode(encoder);
    }
}

/// The header of a reply: everything before the procedure's results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyHeader {
    /// The call's transaction id.
    pub xid: u32,
    /// Accepted or denied.
    pub body: ReplyBody,
}

/// `reply_body` (RFC 5531 section 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyBody {
    /// MSG_ACCEPTED: authentication passed.
    Accepted(AcceptedReply),
    /// MSG_DENIED.
    Denied(RejectedReply),
}

/// `accepted_reply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedReply {
    /// The server's verifier (AUTH_NONE here).
    pub verifier: OpaqueAuth,
    /// Whether the procedure ran; results follow only on success.
    pub status: AcceptedStatus,
}

/// `accept_stat` with its arm data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptedStatus {
    /// SUCCESS = 0: the procedure's results follow.
    Success,
    /// PROG_UNAVAIL = 1.
    ProgramUnavailable,
    /// PROG_MISMATCH = 2: the versions the server supports.
    ProgramMismatch {
        /// Lowest supported version.
        low: u32,
        /// Highest supported version.
        high: u32,
    },
    /// PROC_UNAVAIL = 3.
    ProcedureUnavailable,
    /// GARBAGE_ARGS = 4: the arguments did not decode.
    GarbageArguments,
    /// SYSTEM_ERR = 5.
    SystemError,
}

/// `rejected_reply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectedReply {
    /// RPC_MISMATCH = 0: the RPC versions the server supports.
    RpcMismatch {
        /// Lowest supported version.
        low: u32,
        /// Highest supported version.
        high: u32,
    },
    /// AUTH_ERROR = 1.
    AuthError(AuthStatus),
}

/// Why bytes are not a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// Malformed header.
    Decode(DecodeError),
    /// A call arrived where a reply was expected.
    NotAReply {
        /// Its transaction id.
        xid: u32,
    },
}

impl fmt::Display for ReplyError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Decode(error) => write!(formatter, "malformed RPC reply: {error}"),
            ReplyError::NotAReply { xid } => write!(formatter, "message {xid:#x} is not a reply"),
        }
    }
}

impl core::error::Error for ReplyError {}

impl From<DecodeError> for ReplyError {
    fn from(error: DecodeError) -> Self {
        ReplyError::Decode(error)
    }
}

impl ReplyHeader {
    /// An accepted reply with an AUTH_NONE verifier.
    pub fn accepted(xid: u32, status: AcceptedStatus) -> Self {
        ReplyHeader {
            xid,
            body: ReplyBody::Accepted(AcceptedReply {
                verifier: OpaqueAuth::none(),
                status,
            }),
        }
    }

    /// A successful reply header; the results are encoded after it.
    pub fn success(xid: u32) -> Self {
        ReplyHeader::accepted(xid, AcceptedStatus::Success)
    }

    /// A denied reply.
    pub fn denied(xid: u32, reason: RejectedReply) -> Self {
        ReplyHeader {
            xid,
            body: ReplyBody::Denied(reason),
        }
    }

    /// Reads a reply header, leaving the decoder at the results.
    ///
    /// # Errors
    /// [`ReplyError`].
    pub fn decode(decoder: &mut Decoder<'_>) -> Result<Self, ReplyError> {
        let xid = decoder.u32()?;
        if decoder.u32()? != MESSAGE_REPLY {
            return Err(ReplyError::NotAReply { xid });
        }
        let body = match decoder.u32()? {
            0 => {
                let verifier = OpaqueAuth::decode(decoder)?;
                let status = match decoder.u32()? {
                    0 => AcceptedStatus::Success,
                    1 => AcceptedStatus::ProgramUnavailable,
                    2 => AcceptedStatus::ProgramMismatch {
                        low: decoder.u32()?,
                        high: decoder.u32()?,
                    },
                    3 => AcceptedStatus::ProcedureUnavailable,
                    4 => AcceptedStatus::GarbageArguments,
                    5 => AcceptedStatus::SystemError,
                    value => return Err(unknown("accept_stat", value)),
                };
                ReplyBody::Accepted(AcceptedReply { verifier, status })
            }
            1 => ReplyBody::Denied(match decoder.u32()? {
                0 => RejectedReply::RpcMismatch {
                    low: decoder.u32()?,
                    high: decoder.u32()?,
                },
                1 => RejectedReply::AuthError(AuthStatus::decode(decoder)?),
                value => return Err(unknown("reject_stat", value)),
            }),
            value => return Err(unknown("reply_stat", value)),
        };
        Ok(ReplyHeader { xid, body })
    }
}

fn unknown(type_name: &'static str, value: u32) -> ReplyError {
    ReplyError::Decode(DecodeError::UnknownDiscriminant { type_name, value })
}

impl Encode for ReplyHeader {
    fn encode(&self, encoder: &mut Encoder) {
        encoder.u32(self.xid);
        encoder.u32(MESSAGE_REPLY);
        match &self.body {
            ReplyBody::Accepted(reply) => {
                encoder.u32(0);
                reply.verifier.encode(encoder);
                match reply.status {
                    AcceptedStatus::Success => encoder.u32(0),
                    AcceptedStatus::ProgramUnavailable => encoder.u32(1),
                    AcceptedStatus::ProgramMismatch { low, high } => {
                        encoder.u32(2);
                        encoder.u32(low);
                        encoder.u32(high);
                    }
                    AcceptedStatus::ProcedureUnavailable => encoder.u32(3),
                    AcceptedStatus::GarbageArguments => encoder.u32(4),
                    AcceptedStatus::SystemError => encoder.u32(5),
                }
            }
            ReplyBody::Denied(reason) => {
                encoder.u32(1);
                match reason {
                    RejectedReply::RpcMismatch { low, high } => {
                        encoder.u32(0);
                        encoder.u32(*low);
                        encoder.u32(*high);
                    }
                    RejectedReply::AuthError(status) => {
                        encoder.u32(1);
                        status.encode(encoder);
                    }
                }
            }
        }
    }
}
