//! Crash tests: random workloads on a device that records every write and
//! flush; the write stream is cut at every flush and at random points in
//! between (writes not yet flushed survive in a random subset), and the
//! image is reopened. It must pass fsck and hold exactly the tree of a
//! commit no older than the last one that returned: that commit, or the
//! one in progress at the cut.
//!
//! `SDFS_CRASH_CASES` (default 40 workloads) and `SDFS_CRASH_STEPS`
//! (default 80 operations each) set the size.

mod common;

use common::*;
use sdfs::device::{Event, RecordingDevice};
use sdfs::Volume;
use vfs::FileSystem;

#[test]
fn every_cut_recovers_a_recent_commit() {
    let cases = env_number("SDFS_CRASH_CASES", 40);
    let steps = env_number("SDFS_CRASH_STEPS", 80);
    let mut cuts_checked = 0u64;
    for case in 0..cases {
        let seed = 0xC4A5_0000 + case;
        let mut random = Random(seed);
        let base = formatted(4096);
        let mut volume = Volume::open(RecordingDevice::new(base), clock(), 1 << 20).expect("open");
        // commits[k] = (events recorded when commit k returned, tree at commit k)
        let mut commits = vec![(0usize, dump(&mut volume))];
        let mut tree = commits[0].1.clone();
        for _ in 0..steps {
            let (directories, files) = targets(&tree);
            random_operation(&mut volume, &mut random, &directories, &files);
            tree = dump(&mut volume);
            if random.chance(8) {
                // Snapshot create and delete commit internally; the live
                // tree they leave is the current one.
                let name = format!("s{}", random.below(3)).into_bytes();
                if volume.snapshot_create(&name).is_err() {
                    volume.snapshot_delete(&name).expect("snapshot delete");
                }
                let events = volume_events(&mut volume);
                commits.push((events, tree.clone()));
            } else if random.chance(30) {
                volume.commit().expect("commit");
                let events = volume_events(&mut volume);
                commits.push((events, tree.clone()));
            }
        }
        volume.commit().expect("final commit");
        commits.push((volume_events(&mut volume), dump(&mut volume)));
        let recording = volume.into_device();
        // The last commit that returned, or the one in progress at the cut.
        cuts_checked += check_crash_cuts(&recording, &commits, &mut random, seed, 2);
    }
    eprintln!("crash test: {cuts_checked} cuts checked");
    assert!(cuts_checked > 0);
}

/// Events recorded so far (the volume's device is the recorder).
fn volume_events(volume: &mut Volume<RecordingDevice>) -> usize {
    volume.device().events.len()
}

#[test]
fn recording_device_replays_only_flushed_writes_by_default() {
    let mut recording = RecordingDevice::new(formatted(128));
    use sdfs::BlockDevice;
    let block = Box::new([5u8; sdfs::BLOCK_SIZE]);
    recording.write_block(100, &block).unwrap();
    recording.flush().unwrap();
    recording.write_block(101, &block).unwrap();
    let mut image = recording.crash_image(recording.events.len(), |_| false);
    let mut buffer = [0u8; sdfs::BLOCK_SIZE];
    image.read_block(100, &mut buffer).unwrap();
    assert_eq!(buffer[0], 5);
    image.read_block(101, &mut buffer).unwrap();
    assert_eq!(buffer[0], 0);
    assert!(matches!(recording.events[1], Event::Flush));
}
