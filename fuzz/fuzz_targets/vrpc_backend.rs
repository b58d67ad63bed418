//! The VRPC ring consumer against an arbitrary ring: a hostile frontend
//! controls every byte of the ring and the data pool. The backend must
//! answer valid requests and refuse the rest with an error; a panic, a
//! request outside the regions, or an unbounded record is a bug.
//!
//! Input: three parameter bytes (slot count `2 << (b0 % 4)`, slot size
//! `256 << (b1 % 3)`, pool pages `b2 % 8`), then the ring image from
//! offset 0 (header and slots; the magic, version and parameter words are
//! forced to the right values so the attach succeeds), then the pool image.
//! Seeds are written by `cargo test -p vrpc --test fuzz_seeds -- --ignored`.
#![no_main]

use std::sync::atomic::{AtomicU32, Ordering};

use libfuzzer_sys::fuzz_target;
use vrpc::layout::{HEADER_MAGIC, HEADER_SLOT_COUNT, HEADER_SLOT_SIZE, HEADER_VERSION, MAGIC, VERSION};
use vrpc::{Backend, CountingDoorbell, OutOfBounds, RingParameters, SharedMemory};

const MAX_RECORD: usize = 64 * 1024;

/// Memory that treats any refused access as a bug of the backend.
struct Strict<'a>(&'a [AtomicU32]);

impl Strict<'_> {
    fn check<T>(result: Result<T, OutOfBounds>) -> Result<T, OutOfBounds> {
        if let Err(error) = &result {
            panic!("backend asked for an access outside a region: {error}");
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
    let Some((parameter_bytes, image)) = input.split_first_chunk::<3>() else {
        return;
    };
    let parameters = RingParameters {
        slot_count: 2 << (parameter_bytes[0] % 4),
        slot_size: 256 << (parameter_bytes[1] % 3),
        pool_pages: u32::from(parameter_bytes[2] % 8),
    };
    let ring = region(parameters.ring_bytes());
    let pool = region(parameters.pool_bytes());
    let ring_image = &image[..image.len().min(ring.size())];
    let pool_image = &image[ring_image.len()..];
    ring.write(0, ring_image).unwrap();
    pool.write(0, &pool_image[..pool_image.len().min(pool.size())]).unwrap();
    for (offset, value) in [
        (HEADER_MAGIC, MAGIC),
        (HEADER_VERSION, VERSION),
        (HEADER_SLOT_COUNT, parameters.slot_count),
        (HEADER_SLOT_SIZE, parameters.slot_size),
    ] {
        ring.store_u32(offset, value, Ordering::Relaxed).unwrap();
    }
    let doorbell = CountingDoorbell::new();
    let mut backend = Backend::new(Strict(&ring), Strict(&pool), &doorbell, parameters, MAX_RECORD)
        .expect("a well-formed header attaches");
    for step in 0..64usize {
        match backend.next_request() {
            Ok(Some(request)) => {
                assert!(request.record().len() <= MAX_RECORD);
                assert!(request.reply_capacity() <= parameters.pool_bytes() * 16);
                // Replies of varied sizes: inline, spliced, too large.
                let mut reply = request.record().to_vec();
                reply.resize(reply.len() + step * 97, 0x5a);
                // A reply segment taken from the frontend's bytes, inside
                // the reply or not: refused or carried, never a panic.
                let word = |at: usize| {
                    reply.get(at..at + 2).map_or(0, |bytes| {
                        usize::from(u16::from_be_bytes([bytes[0], bytes[1]]))
                    })
                };
                let segment = (step % 3 != 0).then(|| word(4)..word(4) + word(6));
                if step % 5 == 4 {
                    backend.respond_no_reply(request).unwrap();
                } else {
                    match backend.respond(request, &reply, segment) {
                        Ok(_) | Err(vrpc::ProtocolError::SegmentOutOfReply) => {}
                        Err(error) => panic!("answering failed: {error}"),
                    }
                }
            }
            Ok(None) => match backend.enable_notifications() {
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            },
            Err(_) => break,
        }
    }
});
