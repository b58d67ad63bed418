//! Device faults: random workloads on a [`FaultDevice`], run once clean to
//! count the device's requests, then again with a fault at every flush,
//! at every write (failed, and torn), at sampled reads, with the device
//! dying after sampled requests, and with random failures. After the
//! fault the volume must refuse every change and commit; once the fault
//! clears, the image must pass fsck and hold exactly the tree of the last
//! commit that returned success, or of the one that failed (its
//! superblock may have reached the device before the error).
//!
//! `SDFS_FAULT_SEEDS` (default 2 workloads) and `SDFS_FAULT_STEPS`
//! (default 40 operations each) set the size.

mod common;

use common::*;
use sdfs::fault::FaultRule;
use sdfs::{FaultDevice, FaultPlan, Volume};
use vfs::{FileSystem, FsError, InodeId, NewNode, Ownership};

type Faulty = Volume<FaultDevice<sdfs::device::MemoryDevice>>;

/// What a run left behind.
struct Outcome {
    /// Requests counted: (reads, writes, flushes).
    counts: (u64, u64, u64),
    /// Faults injected.
    injected: u64,
    /// Whether the volume failed.
    failed: bool,
}

/// The tree with the faults paused (dumping reads the device too).
fn paused_dump(volume: &mut Faulty) -> Tree {
    let control = volume.device().control();
    control.disarm();
    let tree = dump(volume);
    control.resume();
    tree
}

fn run(seed: u64, steps: u64, plan: FaultPlan) -> Outcome {
    let label = format!("seed {seed} faults {plan}");
    let device = FaultDevice::new(formatted(2048), plan);
    let control = device.control();
    let mut volume = Volume::open(device, clock(), 1 << 20).expect("open");
    control.arm();
    let mut random = Random(seed);
    let mut committed = paused_dump(&mut volume);
    let mut in_progress = None;
    let mut tree = committed.clone();
    for step in 0..steps {
        let (directories, files) = targets(&tree);
        random_operation(&mut volume, &mut random, &directories, &files);
        if volume.is_failed() {
            break;
        }
        if random.chance(20) || step + 1 == steps {
            let before = paused_dump(&mut volume);
            match volume.commit() {
                Ok(()) => committed = before.clone(),
                Err(error) => {
                    assert_eq!(error, FsError::Io, "{label}: commit");
                    in_progress = Some(before);
                    break;
                }
            }
            tree = before;
        } else {
            tree = paused_dump(&mut volume);
        }
    }
    let counts = control.counts();
    let injected = control.injected();
    let failed = volume.is_failed();
    if failed {
        // Like a file system remounted read-only: changes and commits are
        // refused, even once the device works again.
        control.disarm();
        let owner = Ownership {
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        assert_eq!(
            volume
                .create(InodeId(1), b"after-the-fault", &NewNode::Regular, &owner)
                .map(|_| ()),
            Err(FsError::Io),
            "{label}: a change after the failure"
        );
        assert_eq!(volume.commit(), Err(FsError::Io), "{label}: commit");
        assert!(volume.getattr(InodeId(1)).is_ok(), "{label}: getattr");
    } else {
        assert!(
            in_progress.is_none(),
            "{label}: a commit failed but the volume did not"
        );
    }
    // The fault clears: what is on the device must be a commit.
    control.disarm();
    let image = volume.into_device().into_inner();
    let report = sdfs::fsck(image.clone(), clock());
    assert!(report.is_clean(), "{label}: fsck: {:?}", report.problems);
    let mut reopened = Volume::open(image, clock(), 1 << 20).expect("reopen after the fault");
    let recovered = dump(&mut reopened);
    if recovered != committed {
        match &in_progress {
            Some(tree) if *tree == recovered => {}
            _ => assert_same_tree(&recovered, &committed, &label),
        }
    }
    Outcome {
        counts,
        injected,
        failed,
    }
}

fn plan(rules: Vec<FaultRule>, seed: u64) -> FaultPlan {
    FaultPlan { rules, seed }
}

#[test]
fn every_fault_point_leaves_a_commit() {
    let seeds = env_number("SDFS_FAULT_SEEDS", 2);
    let steps = env_number("SDFS_FAULT_STEPS", 40);
    let mut runs = 0u64;
    let mut failed_runs = 0u64;
    for case in 0..seeds {
        let seed = 0xFA17_0000 + case;
        let clean = run(seed, steps, FaultPlan::default());
        assert_eq!(clean.injected, 0);
        let (reads, writes, flushes) = clean.counts;
        assert!(
            flushes >= 2 && writes > 0,
            "seed {seed}: no commit happened"
        );
        use sdfs::fault::Operation::{Flush, Read, Write};
        let mut plans = Vec::new();
        for number in 1..=flushes {
            plans.push(plan(
                vec![FaultRule::Nth {
                    operation: Flush,
                    number,
                }],
                seed,
            ));
        }
        for number in 1..=writes {
            plans.push(plan(
                vec![FaultRule::Nth {
                    operation: Write,
                    number,
                }],
                seed,
            ));
            plans.push(plan(vec![FaultRule::Tear { number }], seed + number));
        }
        let total = reads + writes + flushes;
        for sample in 0..16 {
            plans.push(plan(
                vec![FaultRule::Nth {
                    operation: Read,
                    number: 1 + reads * sample / 16,
                }],
                seed,
            ));
            plans.push(plan(
                vec![FaultRule::After {
                    number: total * sample / 16,
                }],
                seed,
            ));
            plans.push(plan(
                vec![
                    FaultRule::Random {
                        operation: Write,
                        per_million: 20_000,
                    },
                    FaultRule::Random {
                        operation: Flush,
                        per_million: 50_000,
                    },
                    FaultRule::Random {
                        operation: Read,
                        per_million: 10_000,
                    },
                ],
                seed * 100 + sample,
            ));
        }
        for faults in plans {
            // A failed write or flush, or a torn write, always fails the
            // volume; a dead device always injects (a read may fail only
            // a lookup); random faults may not fire at all.
            let must_fail = faults.rules.iter().any(|rule| {
                matches!(
                    rule,
                    FaultRule::Tear { .. }
                        | FaultRule::Nth {
                            operation: Write | Flush,
                            ..
                        }
                )
            });
            let must_inject = must_fail
                || faults
                    .rules
                    .iter()
                    .any(|rule| matches!(rule, FaultRule::After { .. }));
            let outcome = run(seed, steps, faults.clone());
            assert!(
                outcome.injected > 0 || !must_inject,
                "seed {seed} faults {faults}: no fault injected"
            );
            assert!(
                outcome.failed || !must_fail,
                "seed {seed} faults {faults}: the fault did not fail the volume"
            );
            runs += 1;
            failed_runs += u64::from(outcome.failed);
        }
    }
    eprintln!("fault test: {runs} runs, {failed_runs} failed the volume, every image clean");
    assert!(failed_runs > 0);
}

#[test]
fn committed_data_stays_readable_after_a_failed_commit() {
    let device = FaultDevice::new(formatted(512), FaultPlan::parse("flush=1").unwrap());
    let control = device.control();
    let mut volume = Volume::open(device, clock(), 1 << 20).expect("open");
    let owner = Ownership {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let kept = volume
        .create(InodeId(1), b"kept", &NewNode::Regular, &owner)
        .unwrap()
        .inode;
    volume.write(kept, 0, &[0x4b; 10_000]).unwrap();
    volume.commit().unwrap();
    control.arm();
    let lost = volume
        .create(InodeId(1), b"lost", &NewNode::Regular, &owner)
        .unwrap()
        .inode;
    volume.write(lost, 0, &[0x1c; 10_000]).unwrap();
    assert_eq!(volume.commit(), Err(FsError::Io));
    assert!(volume.is_failed());
    // Committed data reads; data that never became durable does not.
    let mut buffer = vec![0u8; 10_000];
    assert_eq!(volume.read(kept, 0, &mut buffer), Ok(10_000));
    assert!(buffer.iter().all(|&byte| byte == 0x4b));
    assert_eq!(volume.read(lost, 0, &mut buffer), Err(FsError::Io));
    assert_eq!(volume.write(kept, 0, b"x").map(|_| ()), Err(FsError::Io));
    control.disarm();
    let image = volume.into_device().into_inner();
    assert!(sdfs::fsck(image.clone(), clock()).is_clean());
    let mut reopened = Volume::open(image, clock(), 1 << 20).unwrap();
    assert!(reopened.lookup(InodeId(1), b"lost").is_err());
    let kept = reopened.lookup(InodeId(1), b"kept").unwrap().inode;
    assert_eq!(reopened.read(kept, 0, &mut buffer), Ok(10_000));
    assert!(buffer.iter().all(|&byte| byte == 0x4b));
}

#[test]
fn a_read_that_fails_halfway_through_a_write_never_reaches_a_commit() {
    let device = FaultDevice::new(formatted(512), FaultPlan::parse("read=1").unwrap());
    let control = device.control();
    let mut volume = Volume::open(device, clock(), 1 << 20).expect("open");
    let owner = Ownership {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let file = volume
        .create(InodeId(1), b"file", &NewNode::Regular, &owner)
        .unwrap()
        .inode;
    volume.write(file, 0, &[0x11; 3 * 4096]).unwrap();
    volume.commit().unwrap();
    // Two whole blocks are placed anew (no read), then the partial third
    // block's read fails: the first two are remapped but never written.
    control.arm();
    assert_eq!(
        volume.write(file, 0, &[0x22; 2 * 4096 + 100]).map(|_| ()),
        Err(FsError::Io)
    );
    assert_eq!(control.injected(), 1);
    control.disarm();
    assert_eq!(volume.commit(), Err(FsError::Io));
    let image = volume.into_device().into_inner();
    let mut reopened = Volume::open(image, clock(), 1 << 20).unwrap();
    let mut buffer = vec![0u8; 3 * 4096];
    assert_eq!(reopened.read(file, 0, &mut buffer), Ok(3 * 4096));
    assert!(buffer.iter().all(|&byte| byte == 0x11));
}
