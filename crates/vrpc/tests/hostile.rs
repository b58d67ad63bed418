//! A hostile peer: garbage indices, lengths and descriptors. Each must end
//! in a `ProtocolError` (or be served if it happens to be valid), never in a
//! panic or an access outside the regions.

mod common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use common::{call_record, regions, submit_with_payload, Rng, Strict};
use vrpc::layout::{
    Descriptor, DESCRIPTOR_SIZE, HEADER_SIZE, REQUEST_FLAGS, REQUEST_PAYLOAD_COUNT,
    REQUEST_PRODUCER, REQUEST_RECORD_LENGTH, REQUEST_REPLY_COUNT, REQUEST_SPLICE_LENGTH,
    REQUEST_SPLICE_OFFSET, RESPONSE_PRODUCER, SLOT_HEADER_SIZE,
};
use vrpc::{
    Backend, CountingDoorbell, Frontend, ProtocolError, RingParameters, SharedMemory,
    DEFAULT_MAX_RECORD,
};

const PARAMETERS: RingParameters = RingParameters {
    slot_count: 4,
    slot_size: 512,
    pool_pages: 8,
};

/// A valid request in slot 0 (4,000 payload bytes, 4 KiB reply capacity),
/// then `corrupt` applied to the ring, then what the backend makes of it.
fn backend_after(corrupt: impl FnOnce(&[AtomicU32])) -> Result<Option<Vec<u8>>, ProtocolError> {
    let (ring, pool) = regions(PARAMETERS);
    let doorbell = CountingDoorbell::new();
    let mut front = Frontend::new(&ring[..], &pool[..], &doorbell, PARAMETERS).unwrap();
    let payload = vec![7u8; 4000];
    submit_with_payload(
        &mut front,
        call_record(1, 7, 1, &[0, 0, 0, 0]),
        &payload,
        4096,
    );
    corrupt(&ring);
    let refused = AtomicUsize::new(0);
    let strict_ring = Strict {
        inner: &ring[..],
        refused: &refused,
    };
    let strict_pool = Strict {
        inner: &pool[..],
        refused: &refused,
    };
    let mut back = Backend::new(
        strict_ring,
        strict_pool,
        &doorbell,
        PARAMETERS,
        DEFAULT_MAX_RECORD,
    )
    .unwrap();
    let result = back
        .next_request()
        .map(|request| request.map(|r| r.record().to_vec()));
    assert_eq!(
        refused.load(Ordering::SeqCst),
        0,
        "no access outside the regions"
    );
    result
}

fn put(ring: &[AtomicU32], offset: usize, value: u32) {
    ring.write(offset, &value.to_le_bytes()).unwrap();
}

fn put16(ring: &[AtomicU32], offset: usize, value: u16) {
    ring.write(offset, &value.to_le_bytes()).unwrap();
}

fn put_descriptor(ring: &[AtomicU32], index: usize, descriptor: Descriptor) {
    ring.write(
        HEADER_SIZE + SLOT_HEADER_SIZE + index * DESCRIPTOR_SIZE,
        &descriptor.to_bytes(),
    )
    .unwrap();
}

#[test]
fn untouched_request_is_served() {
    let record = backend_after(|_| {}).unwrap().unwrap();
    assert_eq!(record.len(), 44 + 4000);
}

#[test]
fn each_kind_of_garbage_is_an_error() {
    let slot = HEADER_SIZE;
    type Corruption = Box<dyn Fn(&[AtomicU32])>;
    let cases: Vec<(&str, Corruption, ProtocolError)> = vec![
        (
            "producer far ahead",
            Box::new(|ring| put(ring, REQUEST_PRODUCER, 1000)),
            ProtocolError::IndexOverrun { producer: 1000 },
        ),
        (
            "producer behind",
            Box::new(|ring| put(ring, REQUEST_PRODUCER, u32::MAX)),
            ProtocolError::IndexOverrun { producer: u32::MAX },
        ),
        (
            "flags",
            Box::new(move |ring| put(ring, slot + REQUEST_FLAGS, 1)),
            ProtocolError::UnknownFlags,
        ),
        (
            "descriptor count",
            Box::new(move |ring| put16(ring, slot + REQUEST_PAYLOAD_COUNT, 17)),
            ProtocolError::TooManyDescriptors,
        ),
        (
            "reply count",
            Box::new(move |ring| put16(ring, slot + REQUEST_REPLY_COUNT, u16::MAX)),
            ProtocolError::TooManyDescriptors,
        ),
        (
            "record length",
            Box::new(move |ring| put(ring, slot + REQUEST_RECORD_LENGTH, 480)),
            ProtocolError::RecordOverflowsSlot,
        ),
        (
            "record length huge",
            Box::new(move |ring| put(ring, slot + REQUEST_RECORD_LENGTH, u32::MAX)),
            ProtocolError::RecordOverflowsSlot,
        ),
        (
            "splice offset",
            Box::new(move |ring| put(ring, slot + REQUEST_SPLICE_OFFSET, 100)),
            ProtocolError::SpliceOutOfRecord,
        ),
        (
            "splice length",
            Box::new(move |ring| put(ring, slot + REQUEST_SPLICE_LENGTH, 3999)),
            ProtocolError::SpliceLengthMismatch,
        ),
        (
            "splice length huge",
            Box::new(move |ring| put(ring, slot + REQUEST_SPLICE_LENGTH, u32::MAX)),
            ProtocolError::RecordTooLarge,
        ),
        (
            "page out of pool",
            Box::new(|ring| {
                put_descriptor(
                    ring,
                    0,
                    Descriptor {
                        page: 8,
                        offset: 0,
                        length: 4000,
                    },
                )
            }),
            ProtocolError::DescriptorOutOfPool,
        ),
        (
            "page huge",
            Box::new(|ring| {
                put_descriptor(
                    ring,
                    1,
                    Descriptor {
                        page: u32::MAX,
                        offset: 0,
                        length: 1,
                    },
                )
            }),
            ProtocolError::DescriptorOutOfPool,
        ),
        (
            "offset past page",
            Box::new(|ring| {
                put_descriptor(
                    ring,
                    0,
                    Descriptor {
                        page: 0,
                        offset: 4096,
                        length: 4000,
                    },
                )
            }),
            ProtocolError::DescriptorOutOfPool,
        ),
        (
            "length past pool",
            Box::new(|ring| {
                put_descriptor(
                    ring,
                    0,
                    Descriptor {
                        page: 7,
                        offset: 4000,
                        length: 4000,
                    },
                )
            }),
            ProtocolError::DescriptorOutOfPool,
        ),
        (
            "length wraps",
            Box::new(|ring| {
                put_descriptor(
                    ring,
                    1,
                    Descriptor {
                        page: 7,
                        offset: 4095,
                        length: u32::MAX,
                    },
                )
            }),
            ProtocolError::DescriptorOutOfPool,
        ),
        (
            "empty descriptor",
            Box::new(|ring| {
                put_descriptor(
                    ring,
                    1,
                    Descriptor {
                        page: 1,
                        offset: 0,
                        length: 0,
                    },
                )
            }),
            ProtocolError::DescriptorOutOfPool,
        ),
    ];
    for (name, corrupt, expected) in cases {
        assert_eq!(backend_after(corrupt), Err(expected), "{name}");
    }
}

#[test]
fn backend_rejects_a_header_that_disagrees_with_the_handshake() {
    let (ring, pool) = regions(PARAMETERS);
    let doorbell = CountingDoorbell::new();
    let _front = Frontend::new(&ring[..], &pool[..], &doorbell, PARAMETERS).unwrap();
    let other = RingParameters {
        slot_count: 8,
        ..PARAMETERS
    };
    let (big_ring, big_pool) = regions(other);
    let _ = (&big_ring, &big_pool);
    assert_eq!(
        Backend::new(
            &ring[..],
            &pool[..],
            &doorbell,
            RingParameters {
                slot_size: 256,
                ..PARAMETERS
            },
            1 << 20
        )
        .err(),
        Some(ProtocolError::BadHeader)
    );
    assert!(
        Backend::new(&ring[..], &pool[..], &doorbell, other, 1 << 20).is_err(),
        "ring too small"
    );
    let zeroed = regions(PARAMETERS);
    assert!(
        Backend::new(&zeroed.0[..], &zeroed.1[..], &doorbell, PARAMETERS, 1 << 20).is_err(),
        "no magic"
    );
}

#[test]
fn random_garbage_never_panics_or_strays() {
    let mut rng = Rng(0xbad_c0de);
    let (mut served, mut errors) = (0, 0);
    for _ in 0..3000 {
        let (ring, pool) = regions(PARAMETERS);
        let doorbell = CountingDoorbell::new();
        let _front = Frontend::new(&ring[..], &pool[..], &doorbell, PARAMETERS).unwrap();
        let refused = AtomicUsize::new(0);
        let strict_ring = Strict {
            inner: &ring[..],
            refused: &refused,
        };
        let strict_pool = Strict {
            inner: &pool[..],
            refused: &refused,
        };
        let mut back =
            Backend::new(strict_ring, strict_pool, &doorbell, PARAMETERS, 64 * 1024).unwrap();
        for _ in 0..8 {
            // Scribble: slot bytes with plausible small fields, then indices.
            for _ in 0..rng.below(12) {
                let slot = HEADER_SIZE + rng.below(4) as usize * 512;
                let field = rng.below(40) as usize * 4;
                let value = match rng.below(3) {
                    0 => rng.below(16) as u32,
                    1 => rng.below(5000) as u32,
                    _ => rng.next() as u32,
                };
                put(&ring, slot + field, value);
            }
            if rng.below(2) == 0 {
                put(&ring, REQUEST_PRODUCER, rng.below(8) as u32);
            }
            if rng.below(8) == 0 {
                put(&ring, RESPONSE_PRODUCER, rng.next() as u32);
            }
            match back.next_request() {
                Ok(Some(request)) => {
                    let length = rng.below(6000) as usize;
                    let reply = rng.bytes(length);
                    back.respond(request, &reply, None).unwrap();
                    served += 1;
                }
                Ok(None) => {
                    let _ = back.enable_notifications();
                }
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
        assert_eq!(refused.load(Ordering::SeqCst), 0);
    }
    eprintln!("served {served}, protocol errors {errors}");
    assert!(
        served > 100 && errors > 100,
        "the garbage exercises both outcomes"
    );
}

#[test]
fn hostile_backend_cannot_break_the_frontend() {
    let mut rng = Rng(0xf00d);
    for _ in 0..2000 {
        let (ring, pool) = regions(PARAMETERS);
        let doorbell = CountingDoorbell::new();
        let refused = AtomicUsize::new(0);
        let strict_ring = Strict {
            inner: &ring[..],
            refused: &refused,
        };
        let strict_pool = Strict {
            inner: &pool[..],
            refused: &refused,
        };
        let mut front = Frontend::new(strict_ring, strict_pool, &doorbell, PARAMETERS).unwrap();
        for xid in 1..=rng.below(4) as u32 + 1 {
            let _ = front.submit(
                &call_record(xid, 7, 1, b""),
                None,
                rng.below(3) as usize * 4096,
            );
        }
        for _ in 0..rng.below(12) {
            let slot = HEADER_SIZE + rng.below(4) as usize * 512;
            let field = rng.below(10) as usize * 4;
            let value = if rng.below(2) == 0 {
                rng.below(6) as u32
            } else {
                rng.next() as u32
            };
            put(&ring, slot + field, value);
        }
        put(&ring, RESPONSE_PRODUCER, rng.below(8) as u32);
        for _ in 0..6 {
            match front.poll_response() {
                Ok(Some(_)) | Ok(None) => {}
                Err(_) => break,
            }
        }
        assert_eq!(refused.load(Ordering::SeqCst), 0);
    }
}
