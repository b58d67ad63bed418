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
    AcceptedStatus, CallError, CallHeader, Decode, DecodeError, Decoder, Encode, Encoder,
    OpaqueAuth, RejectedReply, ReplyBody, ReplyError, ReplyHeader,
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
    let (header, decoder) = decode_call_header::<P>(record)?;
    let arguments = decode_arguments::<P>(&header, decoder)?;
    Ok((header, arguments))
}

/// The arguments after a decoded call header, to the end of the record.
fn decode_arguments<P: RpcProgram>(
    header: &CallHeader,
    mut decoder: Decoder<'_>,
) -> Result<P::Arguments, CallRejection> {
    let xid = header.xid;
    let arguments = match P::decode_arguments(header.procedure, &mut decoder) {
        None => return Err(accepted(xid, AcceptedStatus::ProcedureUnavailable)),
        Some(Err(_)) => return Err(accepted(xid, AcceptedStatus::GarbageArguments)),
        Some(Ok(arguments)) => arguments,
    };
    if decoder.finish().is_err() {
        return Err(accepted(xid, AcceptedStatus::GarbageArguments));
    }
    Ok(arguments)
}

/// Server: [`decode_call`] for NFSv3, except that a WRITE's data is not
/// copied out of the record: its arguments come with `data` empty, and the
/// range of `record` holding the data comes beside them (`None` for every
/// other procedure), so the file system can take the data where it lies.
///
/// # Errors
/// As [`decode_call`].
pub fn decode_nfs_call(
    record: &[u8],
) -> Result<(CallHeader, crate::Arguments, Option<Range<usize>>), CallRejection> {
    use crate::procedures::data::WriteArguments;
    use crate::types::{FileHandle, StableHow, MAX_DATA_WIRE};
    let (header, mut decoder) = decode_call_header::<crate::Nfs3>(record)?;
    if header.procedure != crate::Procedure::Write.to_u32() {
        let arguments = decode_arguments::<crate::Nfs3>(&header, decoder)?;
        return Ok((header, arguments, None));
    }
    let garbage = || accepted(header.xid, AcceptedStatus::GarbageArguments);
    let mut fields = || -> Result<_, DecodeError> {
        let file = FileHandle::decode(&mut decoder)?;
        let offset = decoder.u64()?;
        let count = decoder.u32()?;
        let stable = StableHow::decode(&mut decoder)?;
        let data = opaque_in_place(&mut decoder, MAX_DATA_WIRE)?;
        let arguments = WriteArguments {
            file,
            offset,
            count,
            stable,
            data: Vec::new(),
        };
        Ok((arguments, data))
    };
    let (arguments, data) = fields().map_err(|_| garbage())?;
    if decoder.finish().is_err() {
        return Err(garbage());
    }
    Ok((header, crate::Arguments::Write(arguments), Some(data)))
}

/// Decodes a variable-length opaque of at most `maximum` bytes without
/// copying it: the range of the record its bytes occupy (padding
/// excluded).
fn opaque_in_place(decoder: &mut Decoder<'_>, maximum: u32) -> Result<Range<usize>, DecodeError> {
    let length = decoder.variable_opaque(maximum)?.len();
    let end = decoder.position() - xdr::padding_length(length);
    Ok(end - length..end)
}

/// Decodes the call header and checks program and version; the decoder
/// is left at the arguments.
fn decode_call_header<P: RpcProgram>(
    record: &[u8],
) -> Result<(CallHeader, Decoder<'_>), CallRejection> {
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
    Ok((header, decoder))
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

/// Client: [`decode_reply`] for an NFSv3 READ, without copying the data
/// out of the record: the results come with `data` empty, and the range of
/// `record` holding the data beside them (empty for a failed READ).
///
/// # Errors
/// As [`decode_reply`].
pub fn decode_read_reply(
    record: &[u8],
) -> Result<(u32, crate::procedures::data::ReadResult, Range<usize>), ReplyFailure> {
    use crate::procedures::data::ReadOk;
    use crate::{PostOperationAttributes, ProcedureResult};
    let read = crate::Procedure::Read.to_u32();
    let mut decoder = Decoder::new(record);
    let header = ReplyHeader::decode(&mut decoder).map_err(ReplyFailure::Header)?;
    let xid = header.xid;
    match header.body {
        ReplyBody::Accepted(ref reply) if reply.status == AcceptedStatus::Success => {}
        body => return Err(ReplyFailure::Unsuccessful { xid, body }),
    }
    let failed = |error| ReplyFailure::Results { xid, error };
    if decoder.remaining_bytes().get(..4) != Some(&[0, 0, 0, 0][..]) {
        // A failure (or garbage) carries no data: decode it as usual.
        return match decode_reply::<crate::Nfs3>(record, read)? {
            (xid, crate::Results::Read(result)) => Ok((xid, result, 0..0)),
            _ => Err(ReplyFailure::UnknownProcedure(read)),
        };
    }
    decoder.u32().map_err(failed)?;
    let file_attributes = PostOperationAttributes::decode(&mut decoder).map_err(failed)?;
    let count = decoder.u32().map_err(failed)?;
    let end_of_file = decoder.bool().map_err(failed)?;
    let range = opaque_in_place(&mut decoder, crate::types::MAX_DATA_WIRE).map_err(failed)?;
    decoder.finish().map_err(failed)?;
    let ok = ReadOk {
        file_attributes,
        count,
        end_of_file,
        data: Vec::new(),
    };
    Ok((xid, ProcedureResult::Ok(ok), range))
}
