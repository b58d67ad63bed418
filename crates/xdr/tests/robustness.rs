//! Seeded random tests: round trips of generated headers and credentials,
//! and random or mutated bytes fed to every decoder (which must never
//! panic). Deterministic: a fixed-seed SplitMix64 generator, no dependencies.

use xdr::{
    from_bytes, to_bytes, AcceptedStatus, AuthFlavor, AuthStatus, AuthSys, CallHeader, Decoder,
    OpaqueAuth, RecordReassembler, RejectedReply, ReplyHeader,
};

struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut value = self.0;
        value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        value ^ (value >> 31)
    }
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
    fn u32(&mut self) -> u32 {
        self.next() as u32
    }
    fn bytes(&mut self, maximum: u64) -> Vec<u8> {
        let length = self.below(maximum + 1);
        (0..length).map(|_| self.next() as u8).collect()
    }
}

fn auth_sys(random: &mut Random) -> AuthSys {
    let groups = random.below(17);
    AuthSys {
        stamp: random.u32(),
        machine_name: random.bytes(255),
        uid: random.u32(),
        gid: random.u32(),
        gids: (0..groups).map(|_| random.u32()).collect(),
    }
}

fn call_header(random: &mut Random) -> CallHeader {
    let credential = match random.below(3) {
        0 => OpaqueAuth::none(),
        1 => OpaqueAuth::sys(&auth_sys(random)),
        _ => OpaqueAuth {
            flavor: AuthFlavor::from_u32(random.u32()),
            body: random.bytes(400),
        },
    };
    CallHeader {
        xid: random.u32(),
        program: random.u32(),
        version: random.u32(),
        procedure: random.u32(),
        credential,
        verifier: OpaqueAuth::none(),
    }
}

fn reply_header(random: &mut Random) -> ReplyHeader {
    let xid = random.u32();
    match random.below(8) {
        0 => ReplyHeader::success(xid),
        1 => ReplyHeader::accepted(xid, AcceptedStatus::ProgramUnavailable),
        2 => ReplyHeader::accepted(
            xid,
            AcceptedStatus::ProgramMismatch {
                low: random.u32(),
                high: random.u32(),
            },
        ),
        3 => ReplyHeader::accepted(xid, AcceptedStatus::ProcedureUnavailable),
        4 => ReplyHeader::accepted(xid, AcceptedStatus::GarbageArguments),
        5 => ReplyHeader::accepted(xid, AcceptedStatus::SystemError),
        6 => ReplyHeader::denied(
            xid,
            RejectedReply::RpcMismatch {
                low: random.u32(),
                high: random.u32(),
            },
        ),
        _ => ReplyHeader::denied(
            xid,
            RejectedReply::AuthError(AuthStatus::from_u32(random.u32())),
        ),
    }
}

#[test]
fn generated_headers_round_trip() {
    let mut random = Random(1);
    for _ in 0..2000 {
        let call = call_header(&mut random);
        let bytes = to_bytes(&call);
        let mut decoder = Decoder::new(&bytes);
        assert_eq!(CallHeader::decode(&mut decoder), Ok(call));
        assert!(decoder.is_empty());
        let reply = reply_header(&mut random);
        let bytes = to_bytes(&reply);
        let mut decoder = Decoder::new(&bytes);
        assert_eq!(ReplyHeader::decode(&mut decoder), Ok(reply));
        assert!(decoder.is_empty());
        let credential = auth_sys(&mut random);
        assert_eq!(from_bytes(&to_bytes(&credential)), Ok(credential));
    }
}

fn decode_everything(bytes: &[u8]) {
    let _ = CallHeader::decode(&mut Decoder::new(bytes));
    let _ = ReplyHeader::decode(&mut Decoder::new(bytes));
    let _ = from_bytes::<AuthSys>(bytes);
    if let Ok(opaque) = from_bytes::<OpaqueAuth>(bytes) {
        let _ = opaque.credential();
    }
    let mut decoder = Decoder::new(bytes);
    let _ = decoder.array(u32::MAX, |decoder| decoder.variable_opaque_vec(u32::MAX));
    let mut reassembler = RecordReassembler::new(4096);
    let mut rest = bytes;
    while let Ok(pushed) = reassembler.push(rest) {
        rest = &rest[pushed.consumed..];
        if rest.is_empty() {
            break;
        }
    }
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut random = Random(2);
    for _ in 0..5000 {
        decode_everything(&random.bytes(128));
        let mut bytes = if random.below(2) == 0 {
            to_bytes(&call_header(&mut random))
        } else {
            to_bytes(&reply_header(&mut random))
        };
        for _ in 0..=random.below(4) {
            if bytes.is_empty() {
                break;
            }
            let index = random.below(bytes.len() as u64) as usize;
            match random.below(3) {
                0 => bytes[index] = random.next() as u8,
                1 => bytes.truncate(index),
                _ => bytes[index] ^= 0x80,
            }
        }
        decode_everything(&bytes);
    }
}
