//! Writes the seed corpora of the `vrpc_backend` and `vrpc_frontend` fuzz
//! targets: ring and pool images left by a real frontend (and, for the
//! frontend target, a real backend's responses); formats in
//! `fuzz/fuzz_targets/`. Run on purpose only:
//! `cargo test -p vrpc --test fuzz_seeds -- --ignored`.

mod common;

use common::{call_record, regions, submit_with_payload};
use vrpc::{Backend, CountingDoorbell, Frontend, RingParameters, SharedMemory};

/// Parameter bytes for slot count 4, slot size 256, `pool_pages` pages.
fn parameter_bytes(pool_pages: u8) -> [u8; 3] {
    [1, 0, pool_pages]
}

fn seed(
    name: &str,
    pool_pages: u8,
    first_index: u32,
    fill: impl FnOnce(
        &mut Frontend<
            &[std::sync::atomic::AtomicU32],
            &[std::sync::atomic::AtomicU32],
            &CountingDoorbell,
        >,
    ),
) {
    let parameters = RingParameters {
        slot_count: 4,
        slot_size: 256,
        pool_pages: u32::from(pool_pages),
    };
    let (ring, pool) = regions(parameters);
    let doorbell = CountingDoorbell::new();
    let mut front =
        Frontend::with_first_index(&ring[..], &pool[..], &doorbell, parameters, first_index)
            .unwrap();
    fill(&mut front);
    let mut bytes = parameter_bytes(pool_pages).to_vec();
    let mut image = vec![0u8; 64 + 4 * 256];
    SharedMemory::read(&ring[..], 0, &mut image).unwrap();
    bytes.extend_from_slice(&image);
    let mut pool_image = vec![0u8; SharedMemory::size(&pool[..])];
    SharedMemory::read(&pool[..], 0, &mut pool_image).unwrap();
    // Trailing zeros of the pool need not be stored.
    let used = pool_image
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| last + 1);
    bytes.extend_from_slice(&pool_image[..used]);
    let directory =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/vrpc_backend");
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(directory.join(name), bytes).unwrap();
}

#[test]
#[ignore = "writes the fuzz seed corpus"]
fn write_vrpc_backend_seeds() {
    seed("one-small-call", 2, 0, |front| {
        front
            .submit(&call_record(1, 100_003, 1, b"getattr."), None, 0)
            .unwrap();
    });
    seed("write-and-read-descriptors", 2, 0, |front| {
        let payload: Vec<u8> = (0..700u32).map(|i| i as u8).collect();
        let record = call_record(2, 100_003, 7, &[0, 0, 0, 0]);
        submit_with_payload(front, record, &payload, 4096);
    });
    seed("three-in-flight-at-index-wrap", 4, u32::MAX - 1, |front| {
        for xid in 3..6 {
            front
                .submit(&call_record(xid, 100_003, 6, &[0; 12]), None, 100)
                .unwrap();
        }
    });
    seed("record-spilled-to-pages", 1, 0, |front| {
        let body: Vec<u8> = (0..600u32).map(|i| (i * 7) as u8).collect();
        front
            .submit(&call_record(6, 100_003, 8, &body), None, 0)
            .unwrap();
    });
}

/// A frontend seed: `requests` calls offering `reply_pages` pages each,
/// answered by a real backend with `reply(call)`.
fn frontend_seed(name: &str, requests: u8, reply_pages: u8, reply: impl Fn(&[u8]) -> Vec<u8>) {
    let parameters = RingParameters {
        slot_count: 4,
        slot_size: 256,
        pool_pages: 4,
    };
    let (ring, pool) = regions(parameters);
    let doorbell = CountingDoorbell::new();
    let mut front = Frontend::new(&ring[..], &pool[..], &doorbell, parameters).unwrap();
    for _ in 0..requests {
        let xid = front.allocate_xid();
        let mut record = xid.to_be_bytes().to_vec();
        record.extend_from_slice(&[0; 36]);
        front
            .submit(&record, None, usize::from(reply_pages) * 4096)
            .unwrap();
    }
    let mut back = Backend::new(&ring[..], &pool[..], &doorbell, parameters, 1 << 20).unwrap();
    while let Some(request) = back.next_request().unwrap() {
        let answer = reply(request.record());
        back.respond(request, &answer, None).unwrap();
    }
    let mut bytes = vec![1, 0, 4, requests, reply_pages];
    let mut producer = [0u8; 4];
    SharedMemory::read(&ring[..], vrpc::layout::RESPONSE_PRODUCER, &mut producer).unwrap();
    bytes.extend_from_slice(&producer);
    let mut slots = vec![0u8; 4 * 256];
    SharedMemory::read(&ring[..], 64, &mut slots).unwrap();
    bytes.extend_from_slice(&slots);
    let mut pool_image = vec![0u8; SharedMemory::size(&pool[..])];
    SharedMemory::read(&pool[..], 0, &mut pool_image).unwrap();
    let used = pool_image
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| last + 1);
    bytes.extend_from_slice(&pool_image[..used]);
    let directory =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/vrpc_frontend");
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(directory.join(name), bytes).unwrap();
}

#[test]
#[ignore = "writes the fuzz seed corpus"]
fn write_vrpc_frontend_seeds() {
    frontend_seed("two-short-replies", 2, 0, |call| call[..8].to_vec());
    frontend_seed("reply-tail-in-pages", 1, 1, |call| {
        let mut reply = call.to_vec();
        reply.resize(1500, 0x77);
        reply
    });
    frontend_seed("reply-too-large", 1, 0, |_| vec![1; 5000]);
    frontend_seed("four-in-flight", 4, 1, |call| call.to_vec());
}
