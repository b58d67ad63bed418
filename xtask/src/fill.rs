//! `cargo xtask fill`: a full disk with many writers. Clients of three
//! kinds (guest-driver over hosted VRPC, guest-driver over TCP, the
//! independent `nfs3_client` crate) fill a small image at once until each
//! is refused with ENOSPC (NFS3ERR_NOSPC), while a reader checks files
//! written before, byte for byte, through a VRPC mount and over NFS. Then,
//! on the full disk, every client removes most of its files and must be
//! able to write again. Checked each round: every client got NOSPC;
//! every file whose `fsync`/COMMIT succeeded holds exactly what was
//! written (read while the disk is full); the reader never failed. At the
//! end: the same after a clean stop and a restart, and fsck clean.

use crate::hosted::{self, GuestMount, MountTransport, Server};
use crate::torture::Scratch;
use crate::workload::check::Tree;
use crate::workload::client::{Files, Step};
use crate::workload::mount_client::MountFiles;
use crate::workload::nfs_client::{read_tree, NfsFiles};
use crate::workload::{content, Failure, FileKey};
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Arguments of `cargo xtask fill`.
#[derive(Debug, clap::Args)]
pub struct FillArgs {
    /// Size of the fresh image (`64M`, `1G`).
    #[arg(long, default_value = "64M")]
    pub size: String,
    /// Times the disk is filled and emptied again.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Seconds the disk stays full each round, the clients still trying
    /// to write and the reader reading.
    #[arg(long, default_value_t = 2.0)]
    pub hold: f64,
    /// Bytes of each file the writers write (1 MiB by default).
    #[arg(long, default_value_t = 1 << 20)]
    pub file_bytes: u64,
}

/// The client number of the files written before the fill (`c100/fN`),
/// which the reader checks.
const KNOWN_CLIENT: u32 = 100;
/// How many such files, and their size.
const KNOWN_FILES: u32 = 8;
const KNOWN_BYTES: u64 = 256 * 1024;
/// Bytes per write call.
const CHUNK: u64 = 64 * 1024;
/// How long all clients may take to fill the disk.
const FILL_LIMIT: Duration = Duration::from_secs(300);

/// Phases of a round ([`Shared::phase`]): the writers fill; the disk is
/// full and they keep trying; they stop (removals, checks); the run ends.
const FILLING: u8 = 0;
const HOLDING: u8 = 1;
const PAUSED: u8 = 2;
const STOPPED: u8 = 3;

/// What a writer knows of one of its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileState {
    /// Every write and the sync succeeded: it must hold exactly
    /// `content(key, 1, 0, length)`.
    Committed(u64),
    /// A write or sync failed (no space): each byte up to the length
    /// attempted is the content or zero.
    Partial(u64),
    /// Removed (the removal succeeded).
    Removed,
}

/// Counts of one client.
#[derive(Debug, Default)]
struct Tally {
    bytes_committed: u64,
    files_committed: u64,
    no_space: BTreeMap<&'static str, u64>,
    removed: u64,
    rewritten: u64,
    problems: Vec<String>,
}

/// A writer: its files, its counts.
struct Writer {
    client: u32,
    label: String,
    files: Box<dyn Files + Send>,
    state: BTreeMap<u32, FileState>,
    next_file: u32,
    tally: Tally,
}

/// What the threads share.
#[derive(Default)]
struct Shared {
    phase: AtomicU8,
    /// Clients refused at least once this round, one bit each.
    refused: AtomicU64,
    reads: AtomicU64,
    reads_while_full: AtomicU64,
    reader_problems: Mutex<Vec<String>>,
    reader_stop: AtomicBool,
}

impl Shared {
    fn phase(&self) -> u8 {
        self.phase.load(Ordering::SeqCst)
    }
}

impl Writer {
    fn key(&self, file: u32) -> FileKey {
        FileKey {
            client: self.client,
            file,
        }
    }

    /// Writes one file of `bytes` in chunks, syncing at the end; returns
    /// true when everything succeeded, false when refused for space.
    fn write_file(&mut self, bytes: u64, counting: bool) -> bool {
        let file = self.next_file;
        self.next_file += 1;
        let key = self.key(file);
        match self.files.create(key) {
            Ok(()) => {}
            Err(failure) => {
                self.failed("create", key, &failure, counting);
                return false;
            }
        }
        self.state.insert(file, FileState::Partial(0));
        let mut offset = 0;
        let mut written_verifier = None;
        while offset < bytes {
            let length = CHUNK.min(bytes - offset);
            let data = content(key, 1, offset, length as usize);
            let last = offset + length == bytes;
            self.state.insert(file, FileState::Partial(offset + length));
            let steps = self.files.write(key, offset, &data, last.then_some(false));
            for step in steps {
                let (operation, result) = match step {
                    Step::Wrote(result) => {
                        if let Ok((_, Some(verifier))) = &result {
                            written_verifier = Some(*verifier);
                        }
                        ("write", result.map(drop))
                    }
                    Step::Synced(operation, result) => match result {
                        Ok(Some(verifier))
                            if written_verifier.is_some_and(|written| written != verifier) =>
                        {
                            // No restart during the fill: a COMMIT's
                            // verifier is the WRITEs'.
                            let problem = format!(
                                "{}: {}: {operation} verifier changed without a restart",
                                self.label,
                                key.path()
                            );
                            self.tally.problems.push(problem);
                            (operation, Ok(()))
                        }
                        other => (operation, other.map(drop)),
                    },
                    Step::Closed(result) => ("close", result),
                };
                if let Err(failure) = result {
                    self.failed(operation, key, &failure, counting);
                    return false;
                }
            }
            offset += length;
        }
        self.state.insert(file, FileState::Committed(bytes));
        self.tally.bytes_committed += bytes;
        self.tally.files_committed += 1;
        true
    }

    fn failed(&mut self, operation: &'static str, key: FileKey, failure: &Failure, counting: bool) {
        match failure {
            Failure::NoSpace if counting => {
                *self.tally.no_space.entry(operation).or_default() += 1;
            }
            other => self.tally.problems.push(format!(
                "{}: {operation} {}: {other:?}",
                self.label,
                key.path()
            )),
        }
    }

    /// Fills until told to stop; each refusal is counted and the client
    /// tries again after a pause (a commit may have returned room).
    fn fill(&mut self, shared: &Shared, bytes: u64) {
        while matches!(shared.phase(), FILLING | HOLDING) {
            if !self.write_file(bytes, true) {
                shared.refused.fetch_or(1 << self.client, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// On the full disk: removes every file but the last committed one of
    /// each four, then writes one file, which must succeed.
    fn make_room(&mut self, bytes: u64) {
        let mut committed = 0u32;
        let files: Vec<(u32, FileState)> = self
            .state
            .iter()
            .map(|(&file, &state)| (file, state))
            .collect();
        for (file, state) in files {
            let keep = match state {
                FileState::Committed(_) => {
                    committed += 1;
                    committed.is_multiple_of(4)
                }
                FileState::Partial(_) => false,
                FileState::Removed => continue,
            };
            if keep {
                continue;
            }
            let key = self.key(file);
            match self.files.remove(key) {
                Ok(()) => {
                    self.state.insert(file, FileState::Removed);
                    self.tally.removed += 1;
                }
                Err(failure) => {
                    self.failed("remove (on the full disk)", key, &failure, false);
                }
            }
        }
        if self.write_file(bytes, false) {
            self.tally.rewritten += 1;
        }
    }
}

/// Checks every writer's files in `tree`.
fn check(writers: &[Arc<Mutex<Writer>>], tree: &Tree, when: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for writer in writers {
        let writer = writer.lock().expect("writer");
        let directory = format!("c{}", writer.client);
        let empty = BTreeMap::new();
        let entries = tree.get(&directory).unwrap_or(&empty);
        for (&file, &state) in &writer.state {
            let key = writer.key(file);
            let found = entries.get(&format!("f{file}"));
            match (state, found) {
                (FileState::Removed, None) => {}
                (FileState::Removed, Some(_)) => problems.push(format!(
                    "{when}: {}: {} was removed but is there",
                    writer.label,
                    key.path()
                )),
                (FileState::Committed(_), None) => problems.push(format!(
                    "{when}: {}: {} was committed but is missing",
                    writer.label,
                    key.path()
                )),
                (FileState::Committed(length), Some(bytes)) => {
                    if *bytes != content(key, 1, 0, length as usize) {
                        problems.push(format!(
                            "{when}: {}: {} was committed ({length} bytes) but holds {} bytes, \
                             {} differing",
                            writer.label,
                            key.path(),
                            bytes.len(),
                            differing(bytes, &content(key, 1, 0, length as usize))
                        ));
                    }
                }
                (FileState::Partial(_), None) => {}
                (FileState::Partial(attempted), Some(bytes)) => {
                    let expected = content(key, 1, 0, attempted as usize);
                    let wrong = bytes.len() as u64 > attempted
                        || bytes
                            .iter()
                            .zip(&expected)
                            .any(|(&found, &wanted)| found != wanted && found != 0);
                    if wrong {
                        problems.push(format!(
                            "{when}: {}: {} (refused for space after up to {attempted} bytes) \
                             holds {} bytes not all written by it",
                            writer.label,
                            key.path(),
                            bytes.len()
                        ));
                    }
                }
            }
        }
        for name in entries.keys() {
            let known = name
                .strip_prefix('f')
                .and_then(|number| number.parse::<u32>().ok())
                .is_some_and(|file| writer.state.contains_key(&file));
            if !known {
                problems.push(format!(
                    "{when}: {}: /{directory}/{name} was never created by it",
                    writer.label
                ));
            }
        }
    }
    problems.extend(check_known(tree, when));
    problems
}

fn differing(found: &[u8], expected: &[u8]) -> usize {
    found
        .iter()
        .zip(expected)
        .filter(|(found, wanted)| found != wanted)
        .count()
        + found.len().abs_diff(expected.len())
}

fn known_key(file: u32) -> FileKey {
    FileKey {
        client: KNOWN_CLIENT,
        file,
    }
}

fn check_known(tree: &Tree, when: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let entries = tree.get(&format!("c{KNOWN_CLIENT}"));
    for file in 0..KNOWN_FILES {
        let key = known_key(file);
        let found = entries.and_then(|entries| entries.get(&format!("f{file}")));
        if found.map(Vec::as_slice) != Some(&content(key, 1, 0, KNOWN_BYTES as usize)[..]) {
            problems.push(format!("{when}: {} is not what was written", key.path()));
        }
    }
    problems
}

/// Reads the known files in turn, through a VRPC mount (its page cache
/// dropped first, so each read reaches the server) and over NFS.
fn reader(shared: &Shared, mount: &Path, mut nfs: NfsFiles) {
    let mut turn = 0u32;
    while !shared.reader_stop.load(Ordering::SeqCst) {
        let key = known_key(turn % KNOWN_FILES);
        let expected = content(key, 1, 0, KNOWN_BYTES as usize);
        let full = shared.phase() == HOLDING;
        let (how, result) = if turn.is_multiple_of(2) {
            ("VRPC mount", read_uncached(&mount.join(key.path())))
        } else {
            (
                "NFS",
                nfs.read(key).map_err(|failure| format!("{failure:?}")),
            )
        };
        turn += 1;
        let problem = match result {
            Ok(bytes) if bytes == expected => None,
            Ok(bytes) => Some(format!("{} bytes differ", differing(&bytes, &expected))),
            Err(error) => Some(error),
        };
        shared.reads.fetch_add(1, Ordering::SeqCst);
        if full {
            shared.reads_while_full.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(problem) = problem {
            shared.reader_problems.lock().expect("reader").push(format!(
                "reader ({how}{}): {}: {problem}",
                if full { ", disk full" } else { "" },
                key.path()
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn read_uncached(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|error| error.to_string())?;
    let _ = nix::fcntl::posix_fadvise(
        &file,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    let mut bytes = vec![0u8; KNOWN_BYTES as usize + 1];
    let mut filled = 0;
    loop {
        let read = file
            .read_at(&mut bytes[filled..], filled as u64)
            .map_err(|error| error.to_string())?;
        if read == 0 {
            break;
        }
        filled += read;
        if filled == bytes.len() {
            break;
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

/// Available bytes `statvfs` reports on a mount.
fn available(mount: &Path) -> u64 {
    nix::sys::statvfs::statvfs(mount)
        .map(|stat| stat.blocks_available() * stat.fragment_size())
        .unwrap_or(0)
}

/// Runs the fill.
///
/// # Errors
/// When a client was never refused, a committed byte was lost, a removal
/// or the write after it failed, the reader failed, fsck failed, or the
/// harness failed.
pub fn run(args: FillArgs) -> anyhow::Result<()> {
    if let Some(reason) = hosted::mount_skip_reason() {
        eprintln!("fill: skipped: {reason}");
        return Ok(());
    }
    let binaries = hosted::build_binaries()?;
    let started = Instant::now();
    let scratch = Scratch::new("xtask-fill")?;
    let mut server = Server::start(&binaries, &scratch.0, &args.size)?;
    let mut mounts = Vec::new();
    for (transport, name) in [
        (MountTransport::Vrpc, "vrpc-a"),
        (MountTransport::Vrpc, "vrpc-b"),
        (MountTransport::Tcp, "tcp"),
        (MountTransport::Vrpc, "vrpc-reader"),
    ] {
        mounts.push(GuestMount::start(
            &binaries,
            &server,
            transport,
            &scratch.0.join(name),
        )?);
    }
    let outcome = fill(&args, &server, &mounts);
    for mount in &mut mounts {
        if let Err(error) = mount.stop() {
            eprintln!("fill: {error:#}");
        }
    }
    drop(mounts);
    let (writers, mut problems) = outcome?;
    server.stop()?;
    let fsck = server.fsck()?;
    server.restart()?;
    let tree = read_tree(&server.address).context("reading the tree after the restart")?;
    problems.extend(check(&writers, &tree, "after a restart"));
    server.stop()?;
    let final_fsck = server.fsck()?;
    let mut summary = Tally::default();
    for writer in &writers {
        let writer = writer.lock().expect("writer");
        summary.bytes_committed += writer.tally.bytes_committed;
        summary.files_committed += writer.tally.files_committed;
        summary.removed += writer.tally.removed;
        summary.rewritten += writer.tally.rewritten;
        for (operation, count) in &writer.tally.no_space {
            *summary.no_space.entry(operation).or_default() += count;
        }
        problems.extend(writer.tally.problems.iter().cloned());
    }
    let refusals: u64 = summary.no_space.values().sum();
    eprintln!(
        "fill: {} writers, {} rounds on {}: {:.1} MiB committed in {} files, {refusals} \
         refused for space ({}), {} removed on the full disk, {} files written after the \
         removals; {} s",
        writers.len(),
        args.rounds,
        args.size,
        summary.bytes_committed as f64 / f64::from(1 << 20),
        summary.files_committed,
        summary
            .no_space
            .iter()
            .map(|(operation, count)| format!("{operation} {count}"))
            .collect::<Vec<_>>()
            .join(", "),
        summary.removed,
        summary.rewritten,
        started.elapsed().as_secs()
    );
    for (label, result) in [("after the fill", fsck), ("after the restart", final_fsck)] {
        match result {
            Ok(()) => eprintln!("fill: fsck {label}: clean"),
            Err(report) => problems.push(format!("fsck {label}:\n{report}")),
        }
    }
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("fill: {problem}");
        }
        bail!("{} problems", problems.len());
    }
    println!(
        "fill: every client refused for space, nothing committed lost, the space came back, \
         fsck clean"
    );
    Ok(())
}

type Outcome = (Vec<Arc<Mutex<Writer>>>, Vec<String>);

fn fill(args: &FillArgs, server: &Server, mounts: &[GuestMount]) -> anyhow::Result<Outcome> {
    let mut setup = NfsFiles::new(&server.address, 1)?;
    setup.make_directory(KNOWN_CLIENT)?;
    for file in 0..KNOWN_FILES {
        let key = known_key(file);
        setup
            .create(key)
            .map_err(|failure| anyhow::anyhow!("creating {}: {failure:?}", key.path()))?;
        let data = content(key, 1, 0, KNOWN_BYTES as usize);
        for step in setup.write(key, 0, &data, Some(false)) {
            if let Step::Wrote(Err(failure)) | Step::Synced(_, Err(failure)) = step {
                bail!("writing {}: {failure:?}", key.path());
            }
        }
    }
    let mut writers = Vec::new();
    let layout: [(Option<&GuestMount>, &str); 4] = [
        (Some(&mounts[0]), "VRPC mount"),
        (Some(&mounts[1]), "VRPC mount"),
        (Some(&mounts[2]), "TCP mount"),
        (None, "NFS client"),
    ];
    for (client, (mount, kind)) in layout.into_iter().enumerate() {
        let client = client as u32;
        setup.make_directory(client)?;
        let files: Box<dyn Files + Send> = match mount {
            Some(mount) => Box::new(MountFiles::new(mount.path.clone(), mount.transport, None)),
            None => Box::new(NfsFiles::new(&server.address, u64::from(client))?),
        };
        writers.push(Arc::new(Mutex::new(Writer {
            client,
            label: format!("client {client} ({kind})"),
            files,
            state: BTreeMap::new(),
            next_file: 0,
            tally: Tally::default(),
        })));
    }
    let shared = Arc::new(Shared::default());
    let reader_thread = {
        let shared = Arc::clone(&shared);
        let mount = mounts[3].path.clone();
        let nfs = NfsFiles::new(&server.address, 99)?;
        thread::spawn(move || reader(&shared, &mount, nfs))
    };
    let result = rounds(args, server, &mounts[3].path, &writers, &shared);
    shared.phase.store(STOPPED, Ordering::SeqCst);
    shared.reader_stop.store(true, Ordering::SeqCst);
    let _ = reader_thread.join();
    let mut problems = result?;
    problems.extend(shared.reader_problems.lock().expect("reader").drain(..));
    eprintln!(
        "fill: the reader checked {} files ({} while the disk was full)",
        shared.reads.load(Ordering::SeqCst),
        shared.reads_while_full.load(Ordering::SeqCst)
    );
    Ok((writers, problems))
}

fn rounds(
    args: &FillArgs,
    server: &Server,
    reader_mount: &Path,
    writers: &[Arc<Mutex<Writer>>],
    shared: &Arc<Shared>,
) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let all: u64 = (1 << writers.len()) - 1;
    for round in 1..=args.rounds {
        let round_started = Instant::now();
        shared.refused.store(0, Ordering::SeqCst);
        shared.phase.store(FILLING, Ordering::SeqCst);
        let threads: Vec<_> = writers
            .iter()
            .map(|writer| {
                let writer = Arc::clone(writer);
                let shared = Arc::clone(shared);
                let bytes = args.file_bytes;
                thread::spawn(move || writer.lock().expect("writer").fill(&shared, bytes))
            })
            .collect();
        while shared.refused.load(Ordering::SeqCst) != all {
            if round_started.elapsed() > FILL_LIMIT || threads.iter().all(|t| t.is_finished()) {
                shared.phase.store(PAUSED, Ordering::SeqCst);
                for thread in threads {
                    let _ = thread.join();
                }
                let refused = shared.refused.load(Ordering::SeqCst);
                bail!(
                    "round {round}: clients {:?} were never refused for space within {} s",
                    (0..writers.len())
                        .filter(|client| refused & (1 << client) == 0)
                        .collect::<Vec<_>>(),
                    FILL_LIMIT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        let filled = round_started.elapsed();
        shared.phase.store(HOLDING, Ordering::SeqCst);
        let free_when_full = available(reader_mount);
        thread::sleep(Duration::from_secs_f64(args.hold));
        shared.phase.store(PAUSED, Ordering::SeqCst);
        for thread in threads {
            if thread.join().is_err() {
                bail!("a writer panicked");
            }
        }
        // Everything read back while the disk is still full.
        let tree = read_tree(&server.address).context("reading the tree on the full disk")?;
        problems.extend(check(writers, &tree, &format!("round {round}, disk full")));
        let removing = Instant::now();
        let threads: Vec<_> = writers
            .iter()
            .map(|writer| {
                let writer = Arc::clone(writer);
                let bytes = args.file_bytes;
                thread::spawn(move || writer.lock().expect("writer").make_room(bytes))
            })
            .collect();
        for thread in threads {
            if thread.join().is_err() {
                bail!("a writer panicked");
            }
        }
        let tree = read_tree(&server.address).context("reading the tree after the removals")?;
        problems.extend(check(
            writers,
            &tree,
            &format!("round {round}, after removals"),
        ));
        eprintln!(
            "fill: round {round}: every client refused for space after {:.1} s ({} KiB \
             available by statvfs then); removals and a new file each took {:.1} s; {} \
             problems so far",
            filled.as_secs_f64(),
            free_when_full / 1024,
            removing.elapsed().as_secs_f64(),
            problems.len()
        );
    }
    Ok(problems)
}
