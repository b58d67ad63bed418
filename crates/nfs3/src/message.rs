//! Whole RPC messages for one program: header plus body, both directions
//! (RFC 5531 section 9).
//!
//! Design: the four things a peer does with a message, generic over
//! [`RpcProgram`] so NFS, MOUNT and PORTMAP share them:
//! - server: [`decode_call`] a record, then [`encode_reply`] the results (or
//!   encode the [`CallRejection`]'s reply header);
//! - client: [`encode_call`] the arguments, then [`decode_reply`] the record.
//!
//! These produce and consume record bodies; wrap them with
//! `xdr::record` on stream transports.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use xdr::{
    AcceptedStatus, CallError, CallHeader, DecodeError, Decoder, Encode, Encoder, OpaqueAuth,
    RejectedReply, ReplyBody, ReplyError, ReplyHeader,
};

use crate::program::RpcProgram;

/// What the server does with a call it cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallRejection {
    /// Not even an xid could be read, or the message is a reply: send
    /// nothing.
    Drop,
    /// Send this reply header, with no results.
    Reply(ReplyHeader),
}

/// Server: decodes a call to program `P` from one record.
///
/// Trailing bytes after the arguments are rejected as garbage.
///
/// # Errors
/// A [`CallRejection`] saying whether and how to answer: `RPC_MISMATCH`,
/// `PROG_UNAVAIL`, `PROG_MISMATCH`, `PROC_UNAVAIL` or `GARBAGE_ARGS`.
/// Authentication is the caller's business (it has the credential).
pub fn decode_call<P: RpcProgram>(
    record: &[u8],
) -> Result<(CallHeader, P::Arguments), CallRejection> {
    let mut decoder = Decoder::new(record);
    let header = match CallHeader::decode(&mut decoder) {
        Ok(header) => header,
        Err(CallError::Decode { xid: Some(xid), .. }) => {
            return Err(accepted(xid, AcceptedStatus::GarbageArguments))
        }
        Err(CallError::Decode { xid: None, .. } | CallError::NotACall { .. }) => {
            return Err(CallRejection::Drop)
        }
        Err(CallError::RpcVersionMismatch { xid, .. }) => {
            return Err(CallRejection::Reply(ReplyHeader::denied(
                xid,
                RejectedReply::RpcMismatch {
                    low: xdr::rpc::RPC_VERSION,
                    high: xdr::rpc::RPC_VERSION,
                },
            )))
        }
    };
    let xid = header.xid;
    if header.program != P::PROGRAM {
        return Err(accepted(xid, AcceptedStatus::ProgramUnavailable));
    }
    if header.version != P::VERSION {
        return Err(accepted(
            xid,
            AcceptedStatus::ProgramMismatch {
                low: P::VERSION,
                high: P::VERSION,
            },
        ));
    }
    let arguments = match P::decode_arguments(header.procedure, &mut decoder) {
        None => return Err(accepted(xid, AcceptedStatus::ProcedureUnavailable)),
        Some(Err(_)) => return Err(accepted(xid, AcceptedStatus::GarbageArguments)),
        Some(Ok(arguments)) => arguments,
    };
    if decoder.finish().is_err() {
        return Err(accepted(xid, AcceptedStatus::GarbageArguments));
    }
    Ok((header, arguments))
}

fn accepted(xid: u32, status: AcceptedStatus) -> CallRejection {
    CallRejection::Reply(ReplyHeader::accepted(xid, status))
}

/// Server: a successful reply carrying `results`, appended to `buffer`
/// (which may already hold a reserved record mark).
pub fn encode_reply(xid: u32, results: &impl Encode, buffer: Vec<u8>) -> Vec<u8> {
    let mut encoder = Encoder::from_vec(buffer);
    ReplyHeader::success(xid).encode(&mut encoder);
    results.encode(&mut encoder);
    encoder.into_bytes()
}

/// Server: the reply for a [`CallRejection::Reply`] (a header with no
/// results), appended to `buffer`.
pub fn encode_rejection(header: &ReplyHeader, buffer: Vec<u8>) -> Vec<u8> {
    let mut encoder = Encoder::from_vec(buffer);
    header.encode(&mut encoder);
    encoder.into_bytes()
}

/// Client: a call to program `P`.
pub fn encode_call<P: RpcProgram>(
    xid: u32,
    credential: OpaqueAuth,
    arguments: &P::Arguments,
) -> Vec<u8> {
    let header = CallHeader {
        xid,
        program: P::PROGRAM,
        version: P::VERSION,
        procedure: P::procedure_number(arguments),
        credential,
        verifier: OpaqueAuth::none(),
    };
    let mut encoder = Encoder::new();
    header.encode(&mut encoder);
    arguments.encode(&mut encoder);
    encoder.into_bytes()
}

/// Why a client got no results from a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyFailure {
    /// The RPC header is malformed or the message is not a reply.
    Header(ReplyError),
    /// The server did not run the procedure (denied, or accepted without
    /// success).
    Unsuccessful {
        /// The reply's xid.
        xid: u32,
        /// What the server said.
        body: ReplyBody,
    },
    /// The results did not decode, or had trailing bytes.
    Results {
        /// The reply's xid.
        xid: u32,
        /// What was wrong.
        error: DecodeError,
    },
    /// The procedure number is not one of the program's.
    UnknownProcedure(u32),
}

impl fmt::Display for ReplyFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyFailure::Header(error) => write!(formatter, "{error}"),
            ReplyFailure::Unsuccessful { body, .. } => {
                write!(formatter, "call not executed: {body:?}")
            }
            ReplyFailure::Results { error, .. } => {
                write!(formatter, "malformed results: {error}")
            }
            ReplyFailure::UnknownProcedure(procedure) => {
                write!(formatter, "unknown procedure {procedure}")
            }
        }
    }
}

impl core::error::Error for ReplyFailure {}

/// Client: decodes the reply to a call of `procedure`, returning the xid
/// (match it to the call) and the results.
///
/// # Errors
/// [`ReplyFailure`].
pub fn decode_reply<P: RpcProgram>(
    record: &[u8],
    procedure: u32,
) -> Result<(u32, P::Results), ReplyFailure> {
    let mut decoder = Decoder::new(record);
    let header = ReplyHeader::decode(&mut decoder).map_err(ReplyFailure::Header)?;
    let xid = header.xid;
    match header.body {
        ReplyBody::Accepted(ref reply) if reply.status == AcceptedStatus::Success => {}
        body => return Err(ReplyFailure::Unsuccessful { xid, body }),
    }
    let results = P::decode_results(procedure, &mut decoder)
        .ok_or(ReplyFailure::UnknownProcedure(procedure))?
        .map_err(|error| ReplyFailure::Results { xid, error })?;
    decoder
        .finish()
        .map_err(|error| ReplyFailure::Results { xid, error })?;
    Ok((xid, results))
}

/// Server: [`encode_reply`] for NFSv3 results, also returning the range of
/// the record that holds its bulk data, for transports that carry bulk data
/// apart from the rest of the record (VRPC's data pages, a vectored socket
/// write): the `data<>` bytes of a `READ3resok` (without their padding), or
/// everything after the cookie verifier of a `READDIR3resok` /
/// `READDIRPLUS3resok` (the directory list). `None` for anything else.
pub fn encode_nfs_reply(
    xid: u32,
    results: &crate::Results,
    buffer: Vec<u8>,
) -> (Vec<u8>, Option<Range<usize>>) {
    use crate::procedures::Results;
    use crate::ProcedureResult;
    let mut encoder = Encoder::from_vec(buffer);
    ReplyHeader::success(xid).encode(&mut encoder);
    let body_start = encoder.len();
    results.encode(&mut encoder);
    let end = encoder.len();
    // The status word, then the optional attributes before the list.
    let list_start = |attributes: &crate::PostOperationAttributes| {
        let attributes = if attributes.is_some() {
            4 + crate::attributes::FILE_ATTRIBUTES_SIZE
        } else {
            4
        };
        body_start + 4 + attributes + crate::types::VERIFIER_SIZE
    };
    let segment = match results {
        Results::Read(ProcedureResult::Ok(ok)) => {
            let data_end = end - (xdr::padded_length(ok.data.len()) - ok.data.len());
            Some(data_end - ok.data.len()..data_end)
        }
        Results::ReadDirectory(ProcedureResult::Ok(ok)) => {
            Some(list_start(&ok.directory_attributes)..end)
        }
        Results::ReadDirectoryPlus(ProcedureResult::Ok(ok)) => {
            Some(list_start(&ok.directory_attributes)..end)
        }
        _ => None,
    };
    (encoder.into_bytes(), segment)
}
