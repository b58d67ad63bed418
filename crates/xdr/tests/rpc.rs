//! Golden byte tests for ONC RPC headers and AUTH_SYS (RFC 5531 section 9,
//! appendix A), written by hand from the RFC's XDR.

use xdr::rpc::RPC_VERSION;
use xdr::{
    from_bytes, to_bytes, AcceptedReply, AcceptedStatus, AuthFlavor, AuthStatus, AuthSys,
    CallError, CallHeader, Credential, DecodeError, Decoder, OpaqueAuth, RejectedReply, ReplyBody,
    ReplyError, ReplyHeader,
};

/// xid 0x01020304, CALL, rpcvers 2, program 100003, version 3, procedure 1,
/// AUTH_SYS { stamp 0x55, "box", uid 1000, gid 100, gids [100, 10] },
/// AUTH_NONE verifier.
const CALL: &[u8] = &[
    0x01, 0x02, 0x03, 0x04, // xid
    0, 0, 0, 0, // CALL
    0, 0, 0, 2, // rpcvers
    0, 0x01, 0x86, 0xa3, // prog 100003
    0, 0, 0, 3, // vers
    0, 0, 0, 1, // proc
    0, 0, 0, 1, // AUTH_SYS
    0, 0, 0, 32, // body length
    0, 0, 0, 0x55, // stamp
    0, 0, 0, 3, b'b', b'o', b'x', 0, // machinename
    0, 0, 0x03, 0xe8, // uid 1000
    0, 0, 0, 100, // gid 100
    0, 0, 0, 2, 0, 0, 0, 100, 0, 0, 0, 10, // gids
    0, 0, 0, 0, 0, 0, 0, 0, // verifier AUTH_NONE
];

fn sample_credential() -> AuthSys {
    AuthSys {
        stamp: 0x55,
        machine_name: b"box".to_vec(),
        uid: 1000,
        gid: 100,
        gids: vec![100, 10],
    }
}

#[test]
fn call_header_with_auth_sys_matches_golden_bytes() {
    let header = CallHeader {
        xid: 0x0102_0304,
        program: 100_003,
        version: 3,
        procedure: 1,
        credential: OpaqueAuth::sys(&sample_credential()),
        verifier: OpaqueAuth::none(),
    };
    assert_eq!(to_bytes(&header), CALL);
    let mut decoder = Decoder::new(CALL);
    let decoded = CallHeader::decode(&mut decoder).unwrap();
    assert!(decoder.is_empty());
    assert_eq!(decoded, header);
    assert_eq!(
        decoded.credential.credential(),
        Ok(Credential::Sys(sample_credential()))
    );
}

#[test]
fn truncated_call_header_keeps_the_xid_once_read() {
    for length in 0..CALL.len() {
        let error = CallHeader::decode(&mut Decoder::new(&CALL[..length])).unwrap_err();
        let expected_xid = if length >= 4 { Some(0x0102_0304) } else { None };
        assert!(
            matches!(error, CallError::Decode { xid, .. } if xid == expected_xid),
            "prefix {length}: {error:?}"
        );
    }
}

#[test]
fn wrong_rpc_version_and_direction_are_classified() {
    let mut bytes = CALL.to_vec();
    bytes[11] = 3;
    assert_eq!(
        CallHeader::decode(&mut Decoder::new(&bytes)),
        Err(CallError::RpcVersionMismatch {
            xid: 0x0102_0304,
            version: 3
        })
    );
    let mut bytes = CALL.to_vec();
    bytes[7] = 1;
    assert_eq!(
        CallHeader::decode(&mut Decoder::new(&bytes)),
        Err(CallError::NotACall { xid: 0x0102_0304 })
    );
}

#[test]
fn auth_sys_limits_are_enforced() {
    let mut credential = sample_credential();
    credential.gids = (0..17).collect();
    let body = to_bytes(&credential);
    assert_eq!(
        from_bytes::<AuthSys>(&body),
        Err(DecodeError::LengthTooLarge {
            length: 17,
            maximum: 16
        })
    );
    let mut credential = sample_credential();
    credential.machine_name = vec![b'a'; 256];
    assert!(matches!(
        from_bytes::<AuthSys>(&to_bytes(&credential)),
        Err(DecodeError::LengthTooLarge { length: 256, .. })
    ));
    let oversize_body = OpaqueAuth {
        flavor: AuthFlavor::Unknown(9),
        body: vec![0; 401],
    };
    assert!(matches!(
        from_bytes::<OpaqueAuth>(&to_bytes(&oversize_body)),
        Err(DecodeError::LengthTooLarge {
            length: 401,
            maximum: 400
        })
    ));
}

#[test]
fn auth_sys_body_with_trailing_bytes_is_a_bad_credential() {
    let mut body = to_bytes(&sample_credential());
    body.extend_from_slice(&[0, 0, 0, 0]);
    let opaque = OpaqueAuth {
        flavor: AuthFlavor::Sys,
        body,
    };
    assert_eq!(opaque.credential(), Err(DecodeError::TrailingBytes(4)));
    let unknown = OpaqueAuth {
        flavor: AuthFlavor::from_u32(390_003),
        body: vec![],
    };
    assert_eq!(
        unknown.credential(),
        Ok(Credential::Other(AuthFlavor::Unknown(390_003)))
    );
}

fn reply_golden(xid: u32, tail: &[u8]) -> Vec<u8> {
    let mut bytes = xid.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 1]);
    bytes.extend_from_slice(tail);
    bytes
}

#[test]
fn every_reply_header_matches_golden_bytes() {
    const NONE: [u8; 8] = [0; 8];
    let accepted = |status: &[u8]| {
        let mut tail = vec![0, 0, 0, 0];
        tail.extend_from_slice(&NONE);
        tail.extend_from_slice(status);
        tail
    };
    let cases: Vec<(ReplyHeader, Vec<u8>)> = vec![
        (ReplyHeader::success(7), accepted(&[0, 0, 0, 0])),
        (
            ReplyHeader::accepted(7, AcceptedStatus::ProgramUnavailable),
            accepted(&[0, 0, 0, 1]),
        ),
        (
            ReplyHeader::accepted(7, AcceptedStatus::ProgramMismatch { low: 2, high: 3 }),
            accepted(&[0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3]),
        ),
        (
            ReplyHeader::accepted(7, AcceptedStatus::ProcedureUnavailable),
            accepted(&[0, 0, 0, 3]),
        ),
        (
            ReplyHeader::accepted(7, AcceptedStatus::GarbageArguments),
            accepted(&[0, 0, 0, 4]),
        ),
        (
            ReplyHeader::accepted(7, AcceptedStatus::SystemError),
            accepted(&[0, 0, 0, 5]),
        ),
        (
            ReplyHeader::denied(
                7,
                RejectedReply::RpcMismatch {
                    low: RPC_VERSION,
                    high: RPC_VERSION,
                },
            ),
            vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2],
        ),
        (
            ReplyHeader::denied(7, RejectedReply::AuthError(AuthStatus::TooWeak)),
            vec![0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5],
        ),
    ];
    for (header, tail) in cases {
        let golden = reply_golden(7, &tail);
        assert_eq!(to_bytes(&header), golden, "{header:?}");
        let mut decoder = Decoder::new(&golden);
        assert_eq!(ReplyHeader::decode(&mut decoder), Ok(header.clone()));
        assert!(decoder.is_empty());
        for length in 0..golden.len() {
            assert!(ReplyHeader::decode(&mut Decoder::new(&golden[..length])).is_err());
        }
    }
}

#[test]
fn reply_decoding_rejects_calls_and_unknown_arms() {
    assert_eq!(
        ReplyHeader::decode(&mut Decoder::new(CALL)),
        Err(ReplyError::NotAReply { xid: 0x0102_0304 })
    );
    let bytes = reply_golden(1, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6]);
    assert!(matches!(
        ReplyHeader::decode(&mut Decoder::new(&bytes)),
        Err(ReplyError::Decode(DecodeError::UnknownDiscriminant {
            type_name: "accept_stat",
            value: 6
        }))
    ));
}

#[test]
fn auth_status_values_round_trip() {
    for value in 0..20 {
        let status = AuthStatus::from_u32(value);
        assert_eq!(status.to_u32(), value);
        assert_eq!(from_bytes::<AuthStatus>(&to_bytes(&status)), Ok(status));
    }
    let reply = AcceptedReply {
        verifier: OpaqueAuth::none(),
        status: AcceptedStatus::Success,
    };
    assert_eq!(ReplyHeader::success(1).body, ReplyBody::Accepted(reply));
}

#[test]
fn xid_can_be_peeked_from_any_message() {
    assert_eq!(xdr::rpc::peek_xid(CALL), Some(0x0102_0304));
    assert_eq!(xdr::rpc::peek_xid(&[1, 2, 3]), None);
}
