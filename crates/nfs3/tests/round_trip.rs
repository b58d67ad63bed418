//! Seeded round trips of every procedure's arguments and results for NFSv3,
//! MOUNT v3 and PORTMAP v2, through the bare decoders and through the whole
//! call/reply message helpers (client encode -> server decode -> server
//! encode -> client decode).

mod common;

use common::{mount_messages, nfs_messages, portmap_messages, Random};
use nfs3::message::{decode_call, decode_reply, encode_call, encode_reply};
use nfs3::mount::{self, Mount3};
use nfs3::portmap::{self, Portmap2};
use nfs3::{Nfs3, Procedure, RpcProgram};
use xdr::{AuthSys, Decode, Decoder, Encode, OpaqueAuth};

fn credential(random: &mut Random) -> OpaqueAuth {
    OpaqueAuth::sys(&AuthSys {
        stamp: random.generate(),
        machine_name: b"guest".to_vec(),
        uid: 1000,
        gid: 1000,
        gids: vec![1000, 27],
    })
}

fn round_trip<P: RpcProgram>(
    random: &mut Random,
    arguments: P::Arguments,
    results: P::Results,
    procedure: u32,
) where
    P::Arguments: PartialEq + core::fmt::Debug,
    P::Results: PartialEq + core::fmt::Debug,
{
    let xid: u32 = random.generate();
    let call = encode_call::<P>(xid, credential(random), &arguments);
    let (header, decoded) = decode_call::<P>(&call).expect("call decodes");
    assert_eq!(header.xid, xid);
    assert_eq!(header.procedure, procedure);
    assert_eq!(decoded, arguments);
    let reply = encode_reply(xid, &results, Vec::new());
    let (reply_xid, decoded) = decode_reply::<P>(&reply, procedure).expect("reply decodes");
    assert_eq!(reply_xid, xid);
    assert_eq!(decoded, results);
}

#[test]
fn every_nfs_procedure_round_trips() {
    let mut random = Random(3);
    for _ in 0..300 {
        for &procedure in Procedure::ALL {
            let (arguments, results) = nfs_messages(&mut random, procedure);
            assert_eq!(arguments.procedure(), procedure);
            assert_eq!(results.procedure(), procedure);
            let bytes = xdr::to_bytes(&arguments);
            let mut decoder = Decoder::new(&bytes);
            assert_eq!(
                nfs3::Arguments::decode(procedure, &mut decoder),
                Ok(arguments.clone())
            );
            assert!(decoder.is_empty());
            round_trip::<Nfs3>(&mut random, arguments, results, procedure.to_u32());
        }
    }
}

#[test]
fn every_mount_procedure_round_trips() {
    let mut random = Random(4);
    for _ in 0..300 {
        for &procedure in mount::Procedure::ALL {
            let (arguments, results) = mount_messages(&mut random, procedure);
            round_trip::<Mount3>(&mut random, arguments, results, procedure.to_u32());
        }
    }
}

#[test]
fn every_portmap_procedure_round_trips() {
    let mut random = Random(5);
    for _ in 0..300 {
        for &procedure in portmap::Procedure::ALL {
            let (arguments, results) = portmap_messages(&mut random, procedure);
            round_trip::<Portmap2>(&mut random, arguments, results, procedure.to_u32());
        }
    }
}

#[test]
fn procedure_numbers_are_the_rfc_numbers() {
    assert_eq!(Procedure::ALL.len(), 22);
    for (number, procedure) in Procedure::ALL.iter().enumerate() {
        assert_eq!(procedure.to_u32(), number as u32);
        assert_eq!(Procedure::from_u32(number as u32), Some(*procedure));
    }
    assert_eq!(Procedure::from_u32(22), None);
    assert_eq!(mount::Procedure::ALL.len(), 6);
    assert_eq!(portmap::Procedure::ALL.len(), 5);
    assert_eq!((Nfs3::PROGRAM, Nfs3::VERSION), (100_003, 3));
    assert_eq!((Mount3::PROGRAM, Mount3::VERSION), (100_005, 3));
    assert_eq!((Portmap2::PROGRAM, Portmap2::VERSION), (100_000, 2));
}

#[test]
fn status_values_round_trip() {
    for &error in nfs3::NfsError::ALL {
        assert_eq!(nfs3::NfsError::from_u32(error.to_u32()), Some(error));
        let result: nfs3::ProcedureResult<(), ()> = nfs3::ProcedureResult::failed(error, ());
        let bytes = xdr::to_bytes(&result);
        assert_eq!(bytes, error.to_u32().to_be_bytes());
        assert_eq!(xdr::from_bytes(&bytes), Ok(result));
    }
    assert_eq!(nfs3::NfsError::from_u32(0), None);
    let mut encoder = xdr::Encoder::new();
    nfs3::FileType::Fifo.encode(&mut encoder);
    assert_eq!(
        nfs3::FileType::decode(&mut Decoder::new(encoder.as_bytes())),
        Ok(nfs3::FileType::Fifo)
    );
}
