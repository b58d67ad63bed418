//! The guest's ring consumer against an arbitrary ring: a hostile backend
//! controls the response slots, `rsp_prod` and the data pool. The frontend
//! must deliver only responses to requests in flight, each once, and refuse
//! the rest with an error; a panic or an access outside the regions is a
//! bug.
//!
//! Input: three parameter bytes (slot count `2 << (b0 % 4)`, slot size
//! `256 << (b1 % 3)`, pool pages `b2 % 8`), a byte with the number of
//! requests to submit first (`b3 % (slot count + 1)`, each offering
//! `b4 % 3` reply pages), then `rsp_prod` (4 bytes, little-endian), then the
//! slot area (from ring offset 64), then the pool image. Seeds are written
//! by `cargo test -p vrpc --test fuzz_seeds -- --ignored`.
#![no_main]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};

use libfuzzer_sys::fuzz_target;
use vrpc::layout::{HEADER_SIZE, PAGE_SIZE, RESPONSE_PRODUCER};
use vrpc::{CountingDoorbell, Frontend, OutOfBounds, RingParameters, SharedMemory};

/// Memory that treats any refused access as a bug of the frontend.
struct Strict<'a>(&'a [AtomicU32]);

impl Strict<'_> {
    fn check<T>(result: Result<T, OutOfBounds>) -> Result<T, OutOfBounds> {
        if let Err(error) = &result {
            panic!("frontend asked for an access outside a region: {error}");
        }
        result
    }
}

impl SharedMemory for Strict<'_> {
    fn size(&self) -> usize {
        self.0.size()
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        Self::check(self.0.load_u32(offset, order))
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        Self::check(self.0.store_u32(offset, value, order))
    }
    fn read(&self, offset: usize, destination: &mut [u8]) -> Result<(), OutOfBounds> {
        Self::check(self.0.read(offset, destination))
    }
    fn write(&self, offset: usize, source: &[u8]) -> Result<(), OutOfBounds> {
        Self::check(self.0.write(offset, source))
    }
}

fn region(bytes: usize) -> Vec<AtomicU32> {
    (0..bytes / 4).map(|_| AtomicU32::new(0)).collect()
}

fuzz_target!(|input: &[u8]| {
    let Some((head, image)) = input.split_first_chunk::<9>() else {
        return;
    };
    let parameters = RingParameters {
        slot_count: 2 << (head[0] % 4),
        slot_size: 256 << (head[1] % 3),
        pool_pages: u32::from(head[2] % 8),
    };
    let requests = u32::from(head[3]) % (parameters.slot_count + 1);
    let reply_capacity = usize::from(head[4] % 3) * PAGE_SIZE;
    let producer = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
    let ring = region(parameters.ring_bytes());
    let pool = region(parameters.pool_bytes());
    let doorbell = CountingDoorbell::new();
    let mut frontend = Frontend::new(Strict(&ring), Strict(&pool), &doorbell, parameters).unwrap();
    let mut sent = HashSet::new();
    for _ in 0..requests {
        let xid = frontend.allocate_xid();
        let mut record = xid.to_be_bytes().to_vec();
        record.extend_from_slice(&[0; 36]);
        if frontend.submit(&record, None, reply_capacity).is_ok() {
            sent.insert(xid);
        }
    }
    // The hostile backend's writes.
    let slots = &image[..image.len().min(ring.size() - HEADER_SIZE)];
    ring.write(HEADER_SIZE, slots).unwrap();
    let pool_image = &image[slots.len()..];
    pool.write(0, &pool_image[..pool_image.len().min(pool.size())]).unwrap();
    ring.store_u32(RESPONSE_PRODUCER, producer, Ordering::Release).unwrap();
    let mut delivered = 0;
    for _ in 0..64 {
        match frontend.poll_response() {
            Ok(Some(completion)) => {
                assert!(sent.remove(&completion.xid), "a response only for a request in flight, once");
                delivered += 1;
            }
            Ok(None) => match frontend.enable_notifications() {
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            },
            Err(_) => break,
        }
    }
    assert_eq!(frontend.in_flight(), sent.len());
    assert!(delivered <= requests as usize);
    if sent.is_empty() {
        assert_eq!(frontend.free_pages(), parameters.pool_pages as usize, "pages all returned");
    }
});
