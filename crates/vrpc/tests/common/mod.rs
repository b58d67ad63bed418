//! Shared helpers of the ring tests: regions over atomic words, a strict
//! memory wrapper that records refused accesses, and a small PRNG.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use vrpc::{Doorbell, Frontend, OutOfBounds, Payload, RingParameters, SharedMemory};

/// Submits `record` (a call ending in an empty opaque, which is made to
/// announce `payload`) with `payload` in pool pages and `reply_capacity`
/// bytes of reply pages offered; returns the whole record the backend
/// must rebuild, payload spliced in.
pub fn submit_with_payload<R: SharedMemory, P: SharedMemory, D: Doorbell>(
    front: &mut Frontend<R, P, D>,
    mut record: Vec<u8>,
    payload: &[u8],
    reply_capacity: usize,
) -> Vec<u8> {
    let offset = vrpc::splice::fill_trailing_opaque(&mut record, payload.len()).unwrap();
    front
        .submit(
            &record,
            Some(Payload {
                offset,
                bytes: payload,
            }),
            reply_capacity,
        )
        .unwrap();
    [&record[..offset], payload, &record[offset..]].concat()
}

/// A zeroed region of `bytes` bytes.
pub fn region(bytes: usize) -> Vec<AtomicU32> {
    (0..bytes.div_ceil(4)).map(|_| AtomicU32::new(0)).collect()
}

/// Ring and pool regions for `parameters`.
pub fn regions(parameters: RingParameters) -> (Vec<AtomicU32>, Vec<AtomicU32>) {
    (
        region(parameters.ring_bytes()),
        region(parameters.pool_bytes()),
    )
}

/// Memory that counts the accesses it refused: the protocol must never ask.
#[derive(Debug)]
pub struct Strict<'a> {
    pub inner: &'a [AtomicU32],
    pub refused: &'a AtomicUsize,
}

impl Strict<'_> {
    fn check<T>(&self, result: Result<T, OutOfBounds>) -> Result<T, OutOfBounds> {
        if result.is_err() {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
}

impl SharedMemory for Strict<'_> {
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        self.check(self.inner.load_u32(offset, order))
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        self.check(self.inner.store_u32(offset, value, order))
    }
    fn read(&self, offset: usize, destination: &mut [u8]) -> Result<(), OutOfBounds> {
        self.check(self.inner.read(offset, destination))
    }
    fn write(&self, offset: usize, source: &[u8]) -> Result<(), OutOfBounds> {
        self.check(self.inner.write(offset, source))
    }
}

/// xorshift64*: deterministic test randomness.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
    pub fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.next() as u8).collect()
    }
}

/// A minimal call record: xid, CALL, RPC version 2, program, version,
/// procedure, AUTH_NONE credential and verifier, then `body`.
pub fn call_record(xid: u32, program: u32, procedure: u32, body: &[u8]) -> Vec<u8> {
    let mut record = Vec::new();
    for word in [xid, 0, 2, program, 3, procedure, 0, 0, 0, 0] {
        record.extend_from_slice(&word.to_be_bytes());
    }
    record.extend_from_slice(body);
    record
}
