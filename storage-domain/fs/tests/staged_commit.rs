//! Staged commits (`Volume::commit_begin` / `commit_continue`): the flushes
//! of a commit run outside the volume while changes and reads go on.
//!
//! - Crash cuts: random workloads whose commits are staged, with random
//!   changes applied between a commit's steps and sometimes a plain commit
//!   in the middle of one; the write stream is cut at every flush and at
//!   random points. Every cut must pass fsck and hold the tree of the last
//!   commit that finished or of the one in progress at the cut (each
//!   commit holds the tree as it was when the commit began).
//! - What a staged commit covers, a stale step, and a failed detached
//!   flush.
//! - The same for commits moved on without waiting
//!   (`Volume::commit_advance`, the Xen domain's way): crash cuts with
//!   changes between the polls, durability only once the started flush
//!   is reported done, and a failed started flush.
//!
//! `SDFS_CRASH_CASES` (default 30 workloads) and `SDFS_CRASH_STEPS`
//! (default 80 operations each) set the crash test's size.

mod common;

use common::*;
use sdfs::device::{Event, MemoryDevice, RecordingDevice};
use sdfs::{BlockDevice, DeviceError, DeviceFlush, FlushTicket, Volume, BLOCK_SIZE};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use vfs::{CommitFlush, FileSystem, FsError, InodeId, NewNode, Ownership};

/// A recording device whose flush can also be taken away from it
/// ([`BlockDevice::flusher`]): a detached flush records its barrier in
/// the same event stream, when it runs. `fail_detached` makes detached
/// flushes fail.
///
/// It also has started flushes ([`BlockDevice::start_flush`]), as the Xen
/// domain's disk does: the barrier is recorded when the flush starts (so
/// it covers exactly the writes made before it, none made while it
/// runs), and it is reported done only after `polls_per_flush` polls.
/// Started flushes: ticket to (polls left before done, outcome).
type StartedFlushes = HashMap<u64, (u32, Result<(), DeviceError>)>;

#[derive(Clone)]
struct Shared {
    recording: Arc<Mutex<RecordingDevice>>,
    fail_detached: Arc<AtomicBool>,
    started: Arc<Mutex<StartedFlushes>>,
    tickets: Arc<Mutex<u64>>,
    polls_per_flush: Arc<Mutex<u32>>,
}

impl Shared {
    fn new(base: MemoryDevice) -> Self {
        Shared {
            recording: Arc::new(Mutex::new(RecordingDevice::new(base))),
            fail_detached: Arc::new(AtomicBool::new(false)),
            started: Arc::new(Mutex::new(HashMap::new())),
            tickets: Arc::new(Mutex::new(0)),
            polls_per_flush: Arc::new(Mutex::new(1)),
        }
    }

    fn events(&self) -> usize {
        self.recording.lock().unwrap().events.len()
    }
}

impl BlockDevice for Shared {
    fn block_count(&self) -> u64 {
        self.recording.lock().unwrap().block_count()
    }

    fn read_block(&mut self, block: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.recording.lock().unwrap().read_block(block, buffer)
    }

    fn write_block(&mut self, block: u64, data: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.recording.lock().unwrap().write_block(block, data)
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.recording.lock().unwrap().flush()
    }

    fn flusher(&mut self) -> Option<Box<dyn DeviceFlush>> {
        Some(Box::new(DetachedFlush(self.clone())))
    }

    fn start_flush(&mut self) -> Result<Option<FlushTicket>, DeviceError> {
        let outcome = if self.fail_detached.load(Ordering::SeqCst) {
            Err(DeviceError::Io)
        } else {
            self.recording.lock().unwrap().flush()
        };
        let mut tickets = self.tickets.lock().unwrap();
        *tickets += 1;
        let polls = *self.polls_per_flush.lock().unwrap();
        self.started
            .lock()
            .unwrap()
            .insert(*tickets, (polls, outcome));
        Ok(Some(FlushTicket(*tickets)))
    }

    fn poll_flush(&mut self, ticket: FlushTicket) -> Option<Result<(), DeviceError>> {
        let mut started = self.started.lock().unwrap();
        let Some((polls, outcome)) = started.get_mut(&ticket.0) else {
            return Some(Err(DeviceError::Io));
        };
        if *polls > 0 {
            *polls -= 1;
            return None;
        }
        let outcome = *outcome;
        started.remove(&ticket.0);
        Some(outcome)
    }
}

struct DetachedFlush(Shared);

impl DeviceFlush for DetachedFlush {
    fn flush(&mut self) -> Result<(), DeviceError> {
        if self.0.fail_detached.load(Ordering::SeqCst) {
            return Err(DeviceError::Io);
        }
        self.0.recording.lock().unwrap().flush()
    }
}

/// One random change to the tree.
fn random_change(volume: &mut Volume<Shared>, random: &mut Random) {
    let tree = dump(volume);
    let (directories, files) = targets(&tree);
    random_operation(volume, random, &directories, &files);
}

/// Commits the rest, then checks the crash cuts of everything `device`
/// recorded against `commits` (the events recorded when each finished,
/// and its tree): the last finished commit, or one after it that was in
/// progress (a plain commit in the middle of a staged one finishes two at
/// the same event count). Returns the cuts checked.
fn final_cuts(
    mut volume: Volume<Shared>,
    device: &Shared,
    mut commits: Vec<(usize, Tree)>,
    random: &mut Random,
    seed: u64,
) -> u64 {
    volume.commit().expect("final commit");
    commits.push((device.events(), dump(&mut volume)));
    drop(volume);
    let recording = device.recording.lock().unwrap().clone();
    check_crash_cuts(&recording, &commits, random, seed, 3)
}

/// Runs the staged commit's steps to the end.
fn finish(volume: &mut Volume<Shared>, mut step: Option<Box<dyn CommitFlush>>) {
    while let Some(mut flush) = step {
        let flushed = flush.run();
        step = volume
            .commit_continue(flush.token(), flushed)
            .expect("commit step");
    }
}

#[test]
fn every_cut_of_staged_commits_recovers_a_recent_commit() {
    let cases = env_number("SDFS_CRASH_CASES", 30);
    let steps = env_number("SDFS_CRASH_STEPS", 80);
    let mut cuts_checked = 0u64;
    let mut changes_in_flight = 0u64;
    for case in 0..cases {
        let seed = 0x57A6_0000 + case;
        let mut random = Random(seed);
        let device = Shared::new(formatted(4096));
        let mut volume = Volume::open(device.clone(), clock(), 1 << 20).expect("open");
        // commits[k] = (events recorded when commit k finished, its tree)
        let mut commits = vec![(0usize, dump(&mut volume))];
        // The staged commit in progress: its next step and its tree.
        let mut in_flight: Option<(Box<dyn CommitFlush>, Tree)> = None;
        for _ in 0..steps {
            random_change(&mut volume, &mut random);
            if in_flight.is_some() {
                changes_in_flight += 1;
            }
            match in_flight.take() {
                None if random.chance(25) => {
                    let tree = dump(&mut volume);
                    match volume.commit_begin().expect("commit begin") {
                        Some(step) => in_flight = Some((step, tree)),
                        None => commits.push((device.events(), tree)),
                    }
                }
                Some((mut step, tree)) if random.chance(50) => {
                    // The flush runs now, with changes made since the
                    // commit began already written to the device.
                    let flushed = step.run();
                    match volume
                        .commit_continue(step.token(), flushed)
                        .expect("commit step")
                    {
                        Some(next) => in_flight = Some((next, tree)),
                        None => commits.push((device.events(), tree)),
                    }
                }
                Some((step, tree)) if random.chance(10) => {
                    // A plain commit meanwhile finishes the staged one,
                    // then commits the rest; the staged step, when it comes
                    // back, is stale.
                    let current = dump(&mut volume);
                    let before = volume.durable_sequence();
                    volume.commit().expect("commit");
                    assert!(
                        volume.durable_sequence() > before || before == volume.applied_sequence()
                    );
                    let events = device.events();
                    commits.push((events, tree));
                    commits.push((events, current));
                    let mut step = step;
                    let flushed = step.run();
                    assert!(volume
                        .commit_continue(step.token(), flushed)
                        .expect("stale step")
                        .is_none());
                }
                other => in_flight = other,
            }
        }
        if let Some((step, tree)) = in_flight.take() {
            finish(&mut volume, Some(step));
            commits.push((device.events(), tree));
        }
        cuts_checked += final_cuts(volume, &device, commits, &mut random, seed);
    }
    eprintln!("staged crash test: {cuts_checked} cuts, {changes_in_flight} changes made while a commit was in flight");
    assert!(cuts_checked > 0);
    assert!(
        changes_in_flight > 0,
        "no change ran during a staged commit"
    );
}

fn write_file(volume: &mut Volume<Shared>, name: &[u8], data: &[u8]) -> InodeId {
    let root = volume.root();
    let owner = Ownership {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let file = volume
        .create(root, name, &NewNode::Regular, &owner)
        .expect("create")
        .inode;
    volume.write(file, 0, data).expect("write");
    file
}

fn read_file(volume: &mut Volume<Shared>, file: InodeId, length: usize) -> Vec<u8> {
    let mut buffer = vec![0u8; length];
    let count = volume.read(file, 0, &mut buffer).expect("read");
    buffer.truncate(count);
    buffer
}

#[test]
fn a_staged_commit_covers_what_was_applied_when_it_began() {
    let device = Shared::new(formatted(4096));
    let mut volume = Volume::open(device.clone(), clock(), 1 << 20).expect("open");
    let first = write_file(&mut volume, b"first", &[1u8; 10_000]);
    let covered = volume.applied_sequence();
    let step = volume.commit_begin().expect("begin").expect("a step");
    // While the flush is pending: reads and changes go on.
    assert_eq!(read_file(&mut volume, first, 10_000), vec![1u8; 10_000]);
    let second = write_file(&mut volume, b"second", &[2u8; 5_000]);
    volume.write(first, 0, &[3u8; 100]).expect("overwrite");
    let later = volume.applied_sequence();
    assert!(volume.durable_sequence() < covered);
    finish(&mut volume, Some(step));
    assert_eq!(volume.durable_sequence(), covered);
    // The next commit takes the rest.
    volume.commit().expect("commit");
    assert_eq!(volume.durable_sequence(), later);
    assert!(sdfs::fsck(device.recording.lock().unwrap().current.clone(), clock()).is_clean());
    let mut reopened = Volume::open(
        device.recording.lock().unwrap().current.clone(),
        clock(),
        1 << 20,
    )
    .expect("reopen");
    let root = reopened.root();
    let first = reopened.lookup(root, b"first").expect("first").inode;
    let second_again = reopened.lookup(root, b"second").expect("second").inode;
    let mut expected = vec![1u8; 10_000];
    expected[..100].fill(3);
    let mut buffer = vec![0u8; 10_000];
    reopened.read(first, 0, &mut buffer).expect("read");
    assert_eq!(buffer, expected);
    let mut buffer = vec![0u8; 5_000];
    reopened.read(second_again, 0, &mut buffer).expect("read");
    assert_eq!(buffer, vec![2u8; 5_000]);
    let _ = second;
}

#[test]
fn a_failed_detached_flush_fails_the_volume_and_keeps_the_last_commit() {
    let device = Shared::new(formatted(4096));
    let mut volume = Volume::open(device.clone(), clock(), 1 << 20).expect("open");
    let kept = write_file(&mut volume, b"kept", &[7u8; 4096]);
    volume.commit().expect("commit");
    let durable = volume.durable_sequence();
    write_file(&mut volume, b"lost", &[8u8; 4096]);
    let mut step = volume.commit_begin().expect("begin").expect("a step");
    device.fail_detached.store(true, Ordering::SeqCst);
    let flushed = step.run();
    assert_eq!(flushed, Err(FsError::Io));
    assert_eq!(
        volume.commit_continue(step.token(), flushed).err(),
        Some(FsError::Io)
    );
    assert!(volume.is_failed());
    assert_eq!(volume.durable_sequence(), durable);
    // Changes are refused; committed data is still served.
    let root = volume.root();
    assert_eq!(
        volume
            .create(
                root,
                b"more",
                &NewNode::Regular,
                &Ownership {
                    mode: 0o644,
                    uid: 0,
                    gid: 0
                }
            )
            .err(),
        Some(FsError::Io)
    );
    assert_eq!(read_file(&mut volume, kept, 4096), vec![7u8; 4096]);
    assert_eq!(volume.commit().err(), Some(FsError::Io));
    // On disk: the last commit, whole.
    let image = device.recording.lock().unwrap().current.clone();
    assert!(sdfs::fsck(image.clone(), clock()).is_clean());
    let mut reopened = Volume::open(image, clock(), 1 << 20).expect("reopen");
    let root = reopened.root();
    assert!(reopened.lookup(root, b"kept").is_ok());
    assert_eq!(
        reopened.lookup(root, b"lost").err(),
        Some(FsError::NotFound)
    );
    let _ = Event::Flush;
}

#[test]
fn blocks_released_during_a_staged_commit_are_not_reused_before_it_is_durable() {
    // Overwrite the same file again and again while commits are in
    // flight: each overwrite releases the blocks the commit in flight
    // holds. If one were reused at once, a cut after the commit would
    // read the newer bytes (or garbage) where the commit wrote older ones.
    let device = Shared::new(formatted(512));
    let mut volume = Volume::open(device.clone(), clock(), 1 << 20).expect("open");
    let file = write_file(&mut volume, b"file", &[0u8; 64 * 1024]);
    volume.commit().expect("commit");
    for round in 1..=20u8 {
        volume.write(file, 0, &[round; 64 * 1024]).expect("write");
        let step = volume.commit_begin().expect("begin");
        volume
            .write(file, 0, &[round.wrapping_add(100); 64 * 1024])
            .expect("write during the commit");
        let snapshot_before = device.recording.lock().unwrap().events.len();
        finish(&mut volume, step);
        let recording = device.recording.lock().unwrap().clone();
        let image = recording.crash_image(recording.events.len(), |_| false);
        let mut reopened = Volume::open(image, clock(), 1 << 20).expect("reopen");
        let root = reopened.root();
        let found = reopened.lookup(root, b"file").expect("file").inode;
        let mut buffer = vec![0u8; 64 * 1024];
        reopened.read(found, 0, &mut buffer).expect("read");
        assert!(
            buffer.iter().all(|&byte| byte == round),
            "round {round}: the durable commit does not hold its own bytes ({} events before)",
            snapshot_before
        );
    }
    volume.commit().expect("commit");
    assert!(sdfs::fsck(device.recording.lock().unwrap().current.clone(), clock()).is_clean());
}

#[test]
fn every_cut_of_advanced_commits_recovers_a_recent_commit() {
    let cases = env_number("SDFS_CRASH_CASES", 30);
    let steps = env_number("SDFS_CRASH_STEPS", 80);
    let mut cuts_checked = 0u64;
    let mut changes_in_flight = 0u64;
    for case in 0..cases {
        let seed = 0xAD7A_0000 + case;
        let mut random = Random(seed);
        let device = Shared::new(formatted(4096));
        *device.polls_per_flush.lock().unwrap() = random.below(3) as u32;
        let mut volume = Volume::open(device.clone(), clock(), 1 << 20).expect("open");
        let mut commits = vec![(0usize, dump(&mut volume))];
        // The tree of the commit in flight, as it was when it began.
        let mut in_flight: Option<Tree> = None;
        for _ in 0..steps {
            random_change(&mut volume, &mut random);
            if in_flight.is_some() {
                changes_in_flight += 1;
                if random.chance(10) {
                    // A plain commit finishes the one in flight, then
                    // commits the rest; its started flush is forgotten.
                    let current = dump(&mut volume);
                    volume.commit().expect("commit");
                    let events = device.events();
                    commits.push((events, in_flight.take().unwrap()));
                    commits.push((events, current));
                    continue;
                }
            }
            if in_flight.is_some() || random.chance(25) {
                let now = dump(&mut volume);
                let applied = volume.applied_sequence();
                let still = volume.commit_advance().expect("advance");
                match (in_flight.take(), still) {
                    (None, true) => {
                        assert!(volume.durable_sequence() < applied || applied == 0);
                        in_flight = Some(now);
                    }
                    (None, false) => commits.push((device.events(), now)),
                    (Some(began), false) => commits.push((device.events(), began)),
                    (Some(began), true) => in_flight = Some(began),
                }
            }
        }
        if let Some(began) = in_flight.take() {
            while volume.commit_advance().expect("advance") {}
            commits.push((device.events(), began));
        }
        cuts_checked += final_cuts(volume, &device, commits, &mut random, seed);
    }
    eprintln!("advanced crash test: {cuts_checked} cuts, {changes_in_flight} changes made while a commit was in flight");
    assert!(cuts_checked > 0);
    assert!(
        changes_in_flight > 0,
        "no change ran during a commit in flight"
    );
}

#[test]
fn an_advanced_commit_is_durable_only_when_its_flushes_are_reported_done() {
    let device = Shared::new(formatted(4096));
    *device.polls_per_flush.lock().unwrap() = 2;
    let mut volume = Volume::open(device.clone(), clock(), 1 << 20).expect("open");
    let first = write_file(&mut volume, b"first", &[1u8; 5000]);
    let covered = volume.applied_sequence();
    let durable = volume.durable_sequence();
    // Begins: blocks written, first flush started.
    assert!(volume.commit_advance().expect("begin"));
    assert_eq!(volume.durable_sequence(), durable);
    // A change while it runs belongs to the next commit.
    let second = write_file(&mut volume, b"second", &[2u8; 3000]);
    let mut polls = 0;
    while volume.commit_advance().expect("advance") {
        polls += 1;
        assert!(
            volume.durable_sequence() < covered,
            "durable before its flushes completed"
        );
        assert!(polls < 20, "the commit never finished");
    }
    // Two flushes, each reported done on its third poll (the first comes
    // right after it starts): three more calls.
    assert_eq!(polls, 3);
    assert_eq!(volume.durable_sequence(), covered);
    assert!(volume.applied_sequence() > covered);
    // The next call commits the rest.
    while volume.commit_advance().expect("advance") {}
    assert_eq!(volume.durable_sequence(), volume.applied_sequence());
    assert_eq!(read_file(&mut volume, first, 5000), vec![1u8; 5000]);
    assert_eq!(read_file(&mut volume, second, 3000), vec![2u8; 3000]);
    // Nothing left: no commit begins.
    assert!(!volume.commit_advance().expect("idle"));
    let image = device.recording.lock().unwrap().current.clone();
    assert!(sdfs::fsck(image, clock()).is_clean());
}

#[test]
fn a_failed_started_flush_fails_the_volume_and_keeps_the_last_commit() {
    let device = Shared::new(formatted(4096));
    let mut volume = Volume::open(device.clone(), clock(), 1 << 20).expect("open");
    let kept = write_file(&mut volume, b"kept", &[7u8; 4096]);
    while volume.commit_advance().expect("commit") {}
    let durable = volume.durable_sequence();
    write_file(&mut volume, b"lost", &[8u8; 4096]);
    device.fail_detached.store(true, Ordering::SeqCst);
    let mut outcome = volume.commit_advance();
    while outcome == Ok(true) {
        outcome = volume.commit_advance();
    }
    assert_eq!(outcome, Err(FsError::Io));
    assert!(volume.is_failed());
    assert_eq!(volume.durable_sequence(), durable);
    assert_eq!(read_file(&mut volume, kept, 4096), vec![7u8; 4096]);
    assert_eq!(volume.commit_advance(), Err(FsError::Io));
    let image = device.recording.lock().unwrap().current.clone();
    assert!(sdfs::fsck(image.clone(), clock()).is_clean());
    let mut reopened = Volume::open(image, clock(), 1 << 20).expect("reopen");
    let root = reopened.root();
    assert!(reopened.lookup(root, b"kept").is_ok());
    assert_eq!(
        reopened.lookup(root, b"lost").err(),
        Some(FsError::NotFound)
    );
}
