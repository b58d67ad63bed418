//! `test=diskbench`: the disk read with plain requests (11 pages each) and
//! with indirect ones side by side, in one boot, before the file system is
//! opened. Emulation makes absolute times meaningless; the ratio between
//! the two, measured in alternating order, is what the QEMU test reports.
//!
//! Both ways of reading are measured: the waiting reads of a batch
//! (`read_blocks`, 88 blocks at a time: 8 plain requests or one indirect)
//! and the reads the poll loop starts without waiting (`start_read`, up to
//! [`MAX_READING`] of 64 blocks at once, a parked 256 KiB READ each: 6
//! plain requests or one indirect). Every pass must read the same bytes.

use super::blkfront::Blkfront;
use super::events;
use crate::disk_reads::MAX_READING;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use sdfs::{BlockDevice, DeviceError, BLOCK_SIZE};

/// Blocks read in each pass: 8 MiB (less on a smaller disk).
const PASS_BLOCKS: u64 = 2048;

/// Blocks of one waiting read (the batch's pages).
const BATCH_BLOCKS: u64 = 88;

/// Blocks of one started read (a 256 KiB READ).
const STARTED_BLOCKS: usize = 64;

/// Measured rounds; each reads a pass both ways, in alternating order.
const ROUNDS: usize = 3;

/// FNV-1a over the bytes read, to compare the passes.
fn digest(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

const DIGEST_START: u64 = 0xcbf2_9ce4_8422_2325;

/// One pass of waiting reads: the time (ns) spent in the reads (not in
/// the digest between them) and the digest.
fn waiting_pass(disk: &mut Blkfront, blocks: u64) -> Result<(u64, u64), DeviceError> {
    let mut buffer = vec![0u8; BATCH_BLOCKS as usize * BLOCK_SIZE];
    let mut hash = DIGEST_START;
    let mut elapsed = 0;
    let mut first = 0;
    while first < blocks {
        let count = BATCH_BLOCKS.min(blocks - first);
        let bytes = &mut buffer[..count as usize * BLOCK_SIZE];
        let started = events::system_time_ns();
        disk.read_blocks(first, bytes)?;
        elapsed += events::system_time_ns() - started;
        hash = digest(hash, bytes);
        first += count;
    }
    Ok((elapsed, hash))
}

/// One pass of started reads, up to [`MAX_READING`] at once: its time
/// (ns) and digest (over the blocks in disk order).
fn started_pass(disk: &mut Blkfront, blocks: u64) -> Result<(u64, u64), DeviceError> {
    let mut data = vec![0u8; blocks as usize * BLOCK_SIZE];
    let started = events::system_time_ns();
    let deadline = events::deadline_after_ms(120_000);
    let mut next = 0;
    let mut reading = 0;
    let mut done = 0;
    while done < blocks {
        while next < blocks && reading < MAX_READING {
            let want = STARTED_BLOCKS.min((blocks - next) as usize);
            let got = disk.start_read(next, want)?;
            if got == 0 {
                break;
            }
            next += got as u64;
            reading += 1;
        }
        match disk.poll_read() {
            Some((first, count, result)) => {
                let bytes = result?;
                let start = first as usize * BLOCK_SIZE;
                data[start..start + count * BLOCK_SIZE].copy_from_slice(&bytes);
                done += count as u64;
                reading -= 1;
            }
            None => {
                if events::system_time_ns() > deadline {
                    return Err(DeviceError::Io);
                }
                events::wait(&[disk.port()], deadline);
            }
        }
    }
    let elapsed = events::system_time_ns() - started;
    Ok((elapsed, digest(DIGEST_START, &data)))
}

/// Run the benchmark with up to `indirect_segments` a request for the
/// indirect side; the line to print. The disk is left with `indirect_segments`.
pub fn run(disk: &mut Blkfront, indirect_segments: usize) -> String {
    let blocks = PASS_BLOCKS.min(disk.block_count());
    let indirect = disk.set_segments_per_request(indirect_segments);
    if indirect <= xen_abi::blkif::MAX_SEGMENTS_PER_REQUEST {
        return format!(
            "disk bench: skipped (no indirect requests: backend offers {:?}, disk_segments={indirect_segments})",
            disk.offered_segments()
        );
    }
    match measure(disk, blocks, indirect) {
        Ok(line) => line,
        Err(error) => {
            disk.set_segments_per_request(indirect_segments);
            format!("disk bench: FAILED: {error:?}")
        }
    }
}

fn measure(disk: &mut Blkfront, blocks: u64, indirect: usize) -> Result<String, DeviceError> {
    let plain = xen_abi::blkif::MAX_SEGMENTS_PER_REQUEST;
    // Warm-up: whatever caches lie below (the emulator's host) see both
    // sides alike.
    disk.set_segments_per_request(plain);
    let (_, reference) = waiting_pass(disk, blocks)?;
    // [waiting, started] x [plain, indirect]: ns and requests.
    let mut times = [[0u64; 2]; 2];
    let mut requests = [[0u64; 2]; 2];
    let mut identical = true;
    for round in 0..ROUNDS {
        for side in [round % 2, 1 - round % 2] {
            disk.set_segments_per_request(if side == 0 { plain } else { indirect });
            let before = disk.requests;
            let (time, hash) = waiting_pass(disk, blocks)?;
            times[0][side] += time;
            requests[0][side] += disk.requests - before;
            identical &= hash == reference;
            let before = disk.requests;
            let (time, hash) = started_pass(disk, blocks)?;
            times[1][side] += time;
            requests[1][side] += disk.requests - before;
            identical &= hash == reference;
        }
    }
    disk.set_segments_per_request(indirect);
    let ms = |ns: u64| ns / 1_000_000;
    // Hundredths, printed as a decimal.
    let ratio = |pair: [u64; 2]| {
        let hundredths = pair[1].saturating_mul(100) / pair[0].max(1);
        format!("{}.{:02}", hundredths / 100, hundredths % 100)
    };
    Ok(format!(
        "disk bench: {} MiB x{ROUNDS} each way; waiting reads plain {} ms ({} requests), indirect {} ms ({} requests), indirect/plain {}; started reads plain {} ms ({} requests), indirect {} ms ({} requests), indirect/plain {}; data {}",
        (blocks * BLOCK_SIZE as u64) >> 20,
        ms(times[0][0]),
        requests[0][0],
        ms(times[0][1]),
        requests[0][1],
        ratio(times[0]),
        ms(times[1][0]),
        requests[1][0],
        ms(times[1][1]),
        requests[1][1],
        ratio(times[1]),
        if identical { "identical" } else { "MISMATCH" }
    ))
}
