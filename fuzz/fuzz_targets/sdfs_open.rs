//! Open an arbitrary image, walk it, change it and fsck it: errors are
//! fine, panics and hangs are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdfs::device::MemoryDevice;
use sdfs::Volume;
use vfs::{FileSystem, NewNode, Ownership, StepClock};

fuzz_target!(|image: &[u8]| {
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
            stack.push(entry.inode);
        }
    }
    let owner = Ownership { mode: 0o644, uid: 0, gid: 0 };
    if let Ok(file) = volume.create(volume.root(), b"fuzz", &NewNode::Regular, &owner) {
        let _ = volume.write(file.inode, 0, b"data");
    }
    let _ = volume.commit();
});
