//! Decode arbitrary bytes as NFSv3, MOUNT and PORTMAP calls and replies (the
//! first byte picks the procedure), and check that whatever decodes
//! re-encodes to bytes that decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nfs3::message::{decode_call, decode_reply};
use nfs3::mount::Mount3;
use nfs3::portmap::Portmap2;
use nfs3::{Arguments, Nfs3, Procedure, Results};
use xdr::Decoder;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, body)) = input.split_first() else {
        return;
    };
    let procedure = Procedure::ALL[usize::from(selector) % Procedure::ALL.len()];
    if let Ok(arguments) = Arguments::decode(procedure, &mut Decoder::new(body)) {
        let bytes = xdr::to_bytes(&arguments);
        let again = Arguments::decode(procedure, &mut Decoder::new(&bytes));
        assert_eq!(again.as_ref(), Ok(&arguments));
    }
    if let Ok(results) = Results::decode(procedure, &mut Decoder::new(body)) {
        let bytes = xdr::to_bytes(&results);
        let again = Results::decode(procedure, &mut Decoder::new(&bytes));
        assert_eq!(again.as_ref(), Ok(&results));
    }
    let _ = decode_call::<Nfs3>(input);
    let _ = decode_call::<Mount3>(input);
    let _ = decode_call::<Portmap2>(input);
    let _ = decode_reply::<Nfs3>(input, u32::from(selector) % 22);
    let _ = decode_reply::<Mount3>(input, u32::from(selector) % 6);
    let _ = decode_reply::<Portmap2>(input, u32::from(selector) % 5);
});
