//! Record marking (RFC 5531 section 11): reassembly from arbitrary chunks,
//! multi-fragment records, zero-length fragments, the size limit, encoding.

use xdr::record::{begin_record, encode_record, end_record, LAST_FRAGMENT};
use xdr::{RecordError, RecordReassembler};

/// Feeds `input` in chunks of `chunk` bytes and collects every record.
fn reassemble(
    reassembler: &mut RecordReassembler,
    input: &[u8],
    chunk: usize,
) -> Result<Vec<Vec<u8>>, RecordError> {
    let mut records = Vec::new();
    for mut piece in input.chunks(chunk) {
        while !piece.is_empty() {
            let pushed = reassembler.push(piece)?;
            piece = &piece[pushed.consumed..];
            records.extend(pushed.record);
        }
    }
    Ok(records)
}

fn mark(length: u32, last: bool) -> [u8; 4] {
    (length | if last { LAST_FRAGMENT } else { 0 }).to_be_bytes()
}

#[test]
fn single_fragment_golden() {
    let stream = [0x80, 0, 0, 4, 1, 2, 3, 4];
    let mut reassembler = RecordReassembler::new(64);
    assert_eq!(
        reassemble(&mut reassembler, &stream, 8),
        Ok(vec![vec![1, 2, 3, 4]])
    );
    assert!(reassembler.is_between_records());
    let mut encoded = Vec::new();
    encode_record(&[1, 2, 3, 4], 100, &mut encoded);
    assert_eq!(encoded, stream);
}

#[test]
fn multi_fragment_record_any_chunking() {
    let mut stream = Vec::new();
    stream.extend_from_slice(&mark(3, false));
    stream.extend_from_slice(b"abc");
    stream.extend_from_slice(&mark(0, false));
    stream.extend_from_slice(&mark(2, true));
    stream.extend_from_slice(b"de");
    stream.extend_from_slice(&mark(1, true));
    stream.extend_from_slice(b"f");
    for chunk in 1..=stream.len() {
        let mut reassembler = RecordReassembler::new(16);
        let records = reassemble(&mut reassembler, &stream, chunk).unwrap();
        assert_eq!(
            records,
            vec![b"abcde".to_vec(), b"f".to_vec()],
            "chunk {chunk}"
        );
        assert!(reassembler.is_between_records());
    }
}

#[test]
fn byte_at_a_time_reports_partial_state() {
    let mut stream = Vec::new();
    encode_record(b"hello world", 4, &mut stream);
    let mut reassembler = RecordReassembler::new(64);
    for (index, byte) in stream.iter().enumerate() {
        let pushed = reassembler.push(core::slice::from_ref(byte)).unwrap();
        assert_eq!(pushed.consumed, 1);
        if index + 1 == stream.len() {
            assert_eq!(pushed.record, Some(b"hello world".to_vec()));
        } else {
            assert_eq!(pushed.record, None);
            assert!(!reassembler.is_between_records());
        }
    }
}

#[test]
fn empty_record_is_one_empty_last_fragment() {
    let mut stream = Vec::new();
    encode_record(&[], 8, &mut stream);
    assert_eq!(stream, [0x80, 0, 0, 0]);
    let mut reassembler = RecordReassembler::new(0);
    assert_eq!(reassemble(&mut reassembler, &stream, 1), Ok(vec![vec![]]));
}

#[test]
fn oversize_record_fails_at_the_mark_and_stays_failed() {
    let mut reassembler = RecordReassembler::new(10);
    let mut stream = Vec::new();
    stream.extend_from_slice(&mark(6, false));
    stream.extend_from_slice(&[0; 6]);
    stream.extend_from_slice(&mark(5, true));
    let error = RecordError::RecordTooLarge {
        announced: 11,
        maximum: 10,
    };
    assert_eq!(reassemble(&mut reassembler, &stream, 3), Err(error));
    assert_eq!(reassembler.push(&[0]), Err(error));
    let mut reassembler = RecordReassembler::new(1 << 20);
    assert_eq!(
        reassembler.push(&[0xff, 0xff, 0xff, 0xff]),
        Err(RecordError::RecordTooLarge {
            announced: 0x7fff_ffff,
            maximum: 1 << 20
        })
    );
}

#[test]
fn encoder_splits_into_fragments_that_reassemble() {
    let record: Vec<u8> = (0..=255).collect();
    for fragment in [1, 3, 4, 100, 255, 256, 1000] {
        let mut stream = Vec::new();
        encode_record(&record, fragment, &mut stream);
        let fragments = record.len().div_ceil(fragment);
        assert_eq!(stream.len(), record.len() + 4 * fragments);
        let mut reassembler = RecordReassembler::new(256);
        assert_eq!(
            reassemble(&mut reassembler, &stream, 7),
            Ok(vec![record.clone()])
        );
    }
}

#[test]
fn in_place_record_mark() {
    let mut buffer = vec![9];
    let start = begin_record(&mut buffer);
    buffer.extend_from_slice(b"xyz");
    end_record(&mut buffer, start);
    assert_eq!(buffer, [9, 0x80, 0, 0, 3, b'x', b'y', b'z']);
}

#[test]
fn empty_non_last_fragment_is_mid_record() {
    let mut reassembler = RecordReassembler::new(8);
    let pushed = reassembler.push(&mark(0, false)).unwrap();
    assert_eq!((pushed.consumed, pushed.record), (4, None));
    assert!(!reassembler.is_between_records());
    let pushed = reassembler.push(&mark(0, true)).unwrap();
    assert_eq!(pushed.record, Some(vec![]));
    assert!(reassembler.is_between_records());
}

#[test]
fn a_recycled_buffer_holds_the_next_record_only() {
    let long: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let mut stream = mark(long.len() as u32, true).to_vec();
    stream.extend_from_slice(&long);
    let mut reassembler = RecordReassembler::new(1 << 16);
    let first = reassemble(&mut reassembler, &stream, 1000)
        .unwrap()
        .remove(0);
    assert_eq!(first, long);
    let buffer = first.as_ptr();
    reassembler.recycle(first);
    let mut stream = mark(3, false).to_vec();
    stream.extend_from_slice(b"abc");
    stream.extend_from_slice(&mark(2, true));
    stream.extend_from_slice(b"de");
    let second = reassemble(&mut reassembler, &stream, 2).unwrap().remove(0);
    assert_eq!(second, b"abcde", "none of the longer record's bytes");
    assert_eq!(second.as_ptr(), buffer, "built in the recycled buffer");
    // Offered mid-record, a buffer is not taken: the record under way
    // keeps its bytes.
    let mut stream = mark(4, true).to_vec();
    stream.extend_from_slice(b"wxyz");
    let pushed = reassembler.push(&stream[..6]).unwrap();
    assert_eq!(pushed.consumed, 6);
    reassembler.recycle(vec![9; 1 << 12]);
    let rest = reassembler.push(&stream[6..]).unwrap();
    assert_eq!(rest.record.as_deref(), Some(&b"wxyz"[..]));
    // More than twice the largest record's room: not taken.
    reassembler.recycle(Vec::with_capacity((1 << 17) + 1));
    let mut stream = mark(1, true).to_vec();
    stream.push(7);
    let third = reassemble(&mut reassembler, &stream, 5).unwrap().remove(0);
    assert!(third.capacity() <= 1 << 17);
}
