//! Model-based randomized tests: long random operation sequences applied to
//! the disk file system and to the in-memory reference model, with every
//! result and, after each step, the whole tree (attributes, readdir cookies,
//! contents) compared. Commits and remounts are interleaved, and fsck runs
//! after every remount.
//!
//! `SDFS_MODEL_SEEDS` (default 6) and `SDFS_MODEL_STEPS` (default 400) set
//! the size; the seed is printed on failure.

mod common;

use common::*;
use sdfs::device::MemoryDevice;
use sdfs::{CachedDevice, Volume};
use vfs::memfs::{MemFs, MemFsLimits};
use vfs::FileSystem;

/// `data_cache`: bytes of [`CachedDevice`] in front of the device (zero:
/// reads go straight through); each remount starts it empty.
fn run(seed: u64, steps: u64, cache_bytes: usize, data_cache: u64) {
    let mut random = Random(seed);
    let mut model = MemFs::new(
        clock(),
        MemFsLimits {
            blocks: 1 << 30,
            inodes: 1 << 30,
        },
    );
    let cached = |device| CachedDevice::new(device, data_cache);
    let mut volume = Volume::open(cached(formatted(16_384)), clock(), cache_bytes).expect("open");
    let mut tree = dump(&mut model);
    // Snapshots taken so far, with the tree they must show forever.
    let mut snapshots: Vec<(Vec<u8>, Tree)> = Vec::new();
    // Their ids (for reading them while live), and ids of deleted ones.
    let mut snapshot_ids: Vec<u64> = Vec::new();
    let mut deleted_ids: Vec<u64> = Vec::new();
    let mut snapshot_counter = 0;
    for step in 0..steps {
        let (directories, files) = targets(&tree);
        let mut model_random = Random(random.next());
        let mut volume_random = Random(model_random.0);
        let expected = random_operation(&mut model, &mut model_random, &directories, &files);
        let actual = random_operation(&mut volume, &mut volume_random, &directories, &files);
        assert_eq!(
            actual, expected,
            "seed {seed} step {step}: operation result differs"
        );
        tree = dump(&mut model);
        assert_same_tree(
            &dump(&mut volume),
            &tree,
            &format!("seed {seed} step {step}"),
        );
        if random.chance(15) {
            volume.commit().expect("commit");
            assert_eq!(volume.durable_sequence(), volume.applied_sequence());
        }
        if random.chance(3) {
            let name = format!("snap-{snapshot_counter}").into_bytes();
            snapshot_counter += 1;
            let taken = volume.create_snapshot(&name).expect("snapshot");
            snapshots.push((name, tree.clone()));
            snapshot_ids.push(taken.id);
        }
        if random.chance(2) && !snapshots.is_empty() {
            let position = random.below(snapshots.len() as u64) as usize;
            let (name, _) = snapshots.remove(position);
            deleted_ids.push(snapshot_ids.remove(position));
            volume.snapshot_delete(&name).expect("snapshot delete");
        }
        if random.chance(10) {
            // Every snapshot, read while the volume stays live, shows the
            // tree of when it was taken and refuses changes; deleted ones
            // are stale.
            let listed = volume.list_snapshots().expect("list");
            assert_eq!(
                listed.snapshots.iter().map(|s| s.id).collect::<Vec<_>>(),
                snapshot_ids
            );
            for ((name, expected), &id) in snapshots.iter().zip(&snapshot_ids) {
                let context = format!(
                    "seed {seed} step {step} live snapshot {}",
                    String::from_utf8_lossy(name)
                );
                volume
                    .in_snapshot(id, &mut |view| {
                        assert_same_tree(&dump(view), expected, &context);
                        let root = view.root();
                        let owner = vfs::Ownership {
                            mode: 0o644,
                            uid: 0,
                            gid: 0,
                        };
                        let refused = view.create(
                            root,
                            b"not-in-the-workload",
                            &vfs::NewNode::Regular,
                            &owner,
                        );
                        assert_eq!(refused.map(|_| ()), Err(vfs::FsError::ReadOnly));
                    })
                    .expect("live snapshot");
            }
            for &id in &deleted_ids {
                assert_eq!(
                    volume.in_snapshot(id, &mut |_| panic!("a deleted snapshot ran")),
                    Err(vfs::FsError::Stale)
                );
            }
        }
        if random.chance(3) {
            volume.commit().expect("commit");
            let device: MemoryDevice = volume.into_device().into_inner();
            let report = sdfs::fsck(device.clone(), clock());
            assert!(
                report.is_clean(),
                "seed {seed} step {step}: fsck: {:?}",
                report.problems
            );
            for (name, expected) in &snapshots {
                let mut view = Volume::open_snapshot(device.clone(), clock(), cache_bytes, name)
                    .expect("open snapshot");
                assert_same_tree(
                    &dump(&mut view),
                    expected,
                    &format!(
                        "seed {seed} step {step} snapshot {}",
                        String::from_utf8_lossy(name)
                    ),
                );
                let owner = vfs::Ownership {
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                };
                let refused = view.create(
                    view.root(),
                    b"not-in-the-workload",
                    &vfs::NewNode::Regular,
                    &owner,
                );
                assert_eq!(refused, Err(vfs::FsError::ReadOnly));
            }
            volume = Volume::open(cached(device), clock(), cache_bytes).expect("reopen");
            let names: Vec<_> = volume
                .snapshots()
                .iter()
                .map(|snapshot| snapshot.name.clone())
                .collect();
            assert_eq!(
                names,
                snapshots
                    .iter()
                    .map(|(name, _)| name.clone())
                    .collect::<Vec<_>>()
            );
            assert_same_tree(
                &dump(&mut volume),
                &tree,
                &format!("seed {seed} step {step} after remount"),
            );
        }
    }
    volume.commit().expect("final commit");
    let report = sdfs::fsck(volume.into_device().into_inner(), clock());
    assert!(
        report.is_clean(),
        "seed {seed}: final fsck: {:?}",
        report.problems
    );
}

#[test]
fn random_sequences_match_the_model() {
    let seeds = env_number("SDFS_MODEL_SEEDS", 6);
    let steps = env_number("SDFS_MODEL_STEPS", 400);
    for seed in 0..seeds {
        run(0x5EED_0000 + seed, steps, 64 << 20, 0);
    }
}

#[test]
fn random_sequences_match_the_model_through_a_small_data_cache() {
    // 64 blocks of data cache: constant eviction, read-ahead, and writes
    // replacing cached copies of blocks the copy-on-write reuses.
    let seeds = env_number("SDFS_MODEL_SEEDS", 6).div_ceil(3);
    let steps = env_number("SDFS_MODEL_STEPS", 400);
    for seed in 0..seeds {
        run(0xDA7A_0000 + seed, steps, 64 << 20, 64 * 4096);
    }
}

#[test]
fn random_sequences_match_the_model_with_a_tiny_cache() {
    // A cache too small to hold the tree forces inodes out and back in.
    let seeds = env_number("SDFS_MODEL_SEEDS", 6).div_ceil(3);
    let steps = env_number("SDFS_MODEL_STEPS", 400);
    for seed in 0..seeds {
        run(0xCAC4_E000 + seed, steps, 2_000, 0);
    }
}
