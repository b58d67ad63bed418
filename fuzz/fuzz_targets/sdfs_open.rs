//! Open an arbitrary image, walk it, change it and fsck it: errors are
//! fine, panics and hangs are bugs.
//!
//! Each input runs twice: as given (the checksums catch most mutations),
//! and resealed, with every superblock and sealed-block checksum
//! recomputed, so mutations reach the decoders and tree walks behind the
//! checksums as a forged image would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdfs::device::MemoryDevice;
use sdfs::{Volume, BLOCK_SIZE};
use vfs::{FileSystem, NewNode, Ownership, StepClock};

/// Superblock checksum offset (docs/disk-format.md).
const SUPERBLOCK_CHECKSUM_AT: usize = 120;

fn reseal(image: &mut [u8]) {
    for block in image.chunks_mut(BLOCK_SIZE) {
        if block.len() < BLOCK_SIZE {
            continue;
        }
        if block.starts_with(b"SDFSv001") {
            let checksum = sdfs::crc32c(&block[..SUPERBLOCK_CHECKSUM_AT]);
            block[SUPERBLOCK_CHECKSUM_AT..SUPERBLOCK_CHECKSUM_AT + 4]
                .copy_from_slice(&checksum.to_le_bytes());
        } else if [b"SDIX", b"SDLF", b"SDRC", b"SDST"]
            .iter()
            .any(|magic| block.starts_with(&magic[..]))
        {
            block[4..8].fill(0);
            let checksum = sdfs::crc32c(block);
            block[4..8].copy_from_slice(&checksum.to_le_bytes());
        }
    }
}

fn exercise(image: &[u8]) {
    let _ = sdfs::fsck(MemoryDevice::from_image(image), Box::new(StepClock::new(0)));
    let Ok(mut volume) = Volume::open(MemoryDevice::from_image(image), Box::new(StepClock::new(0)), 1 << 16) else {
        return;
    };
    let mut stack = vec![volume.root()];
    let mut budget = 1000;
    while let Some(directory) = stack.pop() {
        budget -= 1;
        if budget == 0 {
            break;
        }
        let Ok(page) = volume.readdir(directory, 0, 64) else { continue };
        for entry in page.entries {
            let mut buffer = [0u8; 8192];
            let _ = volume.read(entry.inode, 0, &mut buffer);
            let _ = volume.readlink(entry.inode);
            let _ = volume.lookup(directory, &entry.name);
            stack.push(entry.inode);
        }
    }
    let owner = Ownership { mode: 0o644, uid: 0, gid: 0 };
    if let Ok(file) = volume.create(volume.root(), b"fuzz", &NewNode::Regular, &owner) {
        let _ = volume.write(file.inode, 0, b"data");
    }
    let _ = volume.commit();
    let _ = volume.snapshot_create(b"fuzz-snapshot");
}

fuzz_target!(|image: &[u8]| {
    exercise(image);
    let mut resealed = image.to_vec();
    reseal(&mut resealed);
    if resealed != image {
        exercise(&resealed);
    }
});
