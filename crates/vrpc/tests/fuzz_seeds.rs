//! Writes the seed corpus of the `vrpc_backend` fuzz target: ring and pool
//! images left by a real frontend (format in
//! `fuzz/fuzz_targets/vrpc_backend.rs`). Run on purpose only:
//! `cargo test -p vrpc --test fuzz_seeds -- --ignored`.

mod common;

use common::{call_record, regions};
use vrpc::{CountingDoorbell, Frontend, Payload, RingParameters, SharedMemory};

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
        let mut record = call_record(2, 100_003, 7, &[0, 0, 0, 0]);
        let offset = vrpc::splice::fill_trailing_opaque(&mut record, payload.len()).unwrap();
        front
            .submit(
                &record,
                Some(Payload {
                    offset,
                    bytes: &payload,
                }),
                4096,
            )
            .unwrap();
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
