//! Random and mutated bytes fed to every NFSv3, MOUNT and PORTMAP decoder,
//! both directions: decoding must return, never panic. Seeded, so a failure
//! reproduces.

mod common;

use common::{mount_messages, nfs_messages, portmap_messages, Random};
use nfs3::message::{decode_call, decode_reply, encode_call, encode_reply};
use nfs3::mount::{self, Mount3};
use nfs3::portmap::{self, Portmap2};
use nfs3::{Nfs3, Procedure};
use xdr::{Decoder, OpaqueAuth};

fn decode_everything(bytes: &[u8]) {
    for &procedure in Procedure::ALL {
        let _ = nfs3::Arguments::decode(procedure, &mut Decoder::new(bytes));
        let _ = nfs3::Results::decode(procedure, &mut Decoder::new(bytes));
        let _ = decode_reply::<Nfs3>(bytes, procedure.to_u32());
    }
    for &procedure in mount::Procedure::ALL {
        let _ = mount::Arguments::decode(procedure, &mut Decoder::new(bytes));
        let _ = mount::Results::decode(procedure, &mut Decoder::new(bytes));
        let _ = decode_reply::<Mount3>(bytes, procedure.to_u32());
    }
    for &procedure in portmap::Procedure::ALL {
        let _ = portmap::Arguments::decode(procedure, &mut Decoder::new(bytes));
        let _ = portmap::Results::decode(procedure, &mut Decoder::new(bytes));
        let _ = decode_reply::<Portmap2>(bytes, procedure.to_u32());
    }
    let _ = decode_call::<Nfs3>(bytes);
    let _ = decode_call::<Mount3>(bytes);
    let _ = decode_call::<Portmap2>(bytes);
}

fn mutate(random: &mut Random, bytes: &mut Vec<u8>) {
    for _ in 0..=random.below(4) {
        if bytes.is_empty() {
            return;
        }
        let index = random.below(bytes.len() as u64) as usize;
        match random.below(4) {
            0 => bytes[index] = random.next() as u8,
            1 => bytes.truncate(index),
            2 => bytes[index] ^= 1 << random.below(8),
            _ => {
                // Plant a large length or count word.
                let end = (index + 4).min(bytes.len());
                bytes[index..end].fill(0xff);
            }
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut random = Random(6);
    for _ in 0..3000 {
        decode_everything(&random.bytes(256));
    }
}

#[test]
fn mutated_messages_never_panic() {
    let mut random = Random(7);
    for _ in 0..100 {
        for &procedure in Procedure::ALL {
            let (arguments, results) = nfs_messages(&mut random, procedure);
            let mut call = encode_call::<Nfs3>(1, OpaqueAuth::none(), &arguments);
            mutate(&mut random, &mut call);
            decode_everything(&call);
            let mut reply = encode_reply(1, &results, Vec::new());
            mutate(&mut random, &mut reply);
            decode_everything(&reply);
        }
        for &procedure in mount::Procedure::ALL {
            let (arguments, results) = mount_messages(&mut random, procedure);
            let mut call = encode_call::<Mount3>(1, OpaqueAuth::none(), &arguments);
            mutate(&mut random, &mut call);
            decode_everything(&call);
            let mut reply = encode_reply(1, &results, Vec::new());
            mutate(&mut random, &mut reply);
            decode_everything(&reply);
        }
        for &procedure in portmap::Procedure::ALL {
            let (arguments, results) = portmap_messages(&mut random, procedure);
            let mut reply = encode_reply(1, &results, Vec::new());
            mutate(&mut random, &mut reply);
            decode_everything(&reply);
            let mut call = encode_call::<Portmap2>(1, OpaqueAuth::none(), &arguments);
            mutate(&mut random, &mut call);
            decode_everything(&call);
        }
    }
}
