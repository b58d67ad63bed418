//! Feed arbitrary bytes to the record-marking reassembler in chunk sizes the
//! input chooses, then decode every record as an RPC call and as a reply:
//! errors are fine, panics, hangs and unbounded buffering are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xdr::{CallHeader, Decoder, RecordReassembler, ReplyHeader};

const MAXIMUM_RECORD: usize = 1 << 16;

fuzz_target!(|input: &[u8]| {
    let Some((&chunk, stream)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut reassembler = RecordReassembler::new(MAXIMUM_RECORD);
    for mut piece in stream.chunks(chunk) {
        while !piece.is_empty() {
            let Ok(pushed) = reassembler.push(piece) else {
                return;
            };
            assert!(pushed.consumed <= piece.len());
            assert!(pushed.consumed > 0 || pushed.record.is_some());
            piece = &piece[pushed.consumed..];
            if let Some(record) = pushed.record {
                assert!(record.len() <= MAXIMUM_RECORD);
                if let Ok(header) = CallHeader::decode(&mut Decoder::new(&record)) {
                    let _ = header.credential.credential();
                }
                let _ = ReplyHeader::decode(&mut Decoder::new(&record));
            }
        }
    }
});
