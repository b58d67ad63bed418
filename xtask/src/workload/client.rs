//! One client's loop: pick an operation, run it through a [`Files`]
//! implementation (a mount point, an NFS client), and record in the
//! ledger what was attempted and what was acknowledged.

use super::check::check_file;
use super::{
    content, ClientLedger, Control, Failure, FileKey, FileRecord, Measurements, Mix, Operation,
    Random, Verifier,
};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What one step of a write or sync reported.
#[derive(Debug)]
pub enum Step {
    /// The write: `Some(operation)` if its reply said it is durable, and
    /// the verifier of an UNSTABLE reply.
    Wrote(Result<(Option<&'static str>, Option<Verifier>), Failure>),
    /// A sync of the file (`fsync`, `close` with commit on close, COMMIT)
    /// and the verifier it got, if any.
    Synced(&'static str, Result<Option<Verifier>, Failure>),
    /// A `close` that only settles queued writes (no commit).
    Closed(Result<(), Failure>),
}

/// Ways to reach the files.
pub trait Files {
    /// Creates the empty file (it must not exist).
    ///
    /// # Errors
    /// How it failed.
    fn create(&mut self, key: FileKey) -> Result<(), Failure>;
    /// Writes `data` at `offset`, then syncs if `sync` says how
    /// (`Some(true)`: data only).
    fn write(&mut self, key: FileKey, offset: u64, data: &[u8], sync: Option<bool>) -> Vec<Step>;
    /// Syncs the file on its own (a new descriptor, or COMMIT).
    fn sync(&mut self, key: FileKey, data_only: bool) -> Vec<Step>;
    /// `fsync` of the client's directory; `None` where that means nothing
    /// (an NFS client: names are durable on the reply).
    fn sync_directory(&mut self, client: u32) -> Option<Result<(), Failure>>;
    /// Removes the file.
    ///
    /// # Errors
    /// How it failed.
    fn remove(&mut self, key: FileKey) -> Result<(), Failure>;
    /// The file's bytes.
    ///
    /// # Errors
    /// How it failed.
    fn read(&mut self, key: FileKey) -> Result<Vec<u8>, Failure>;
    /// Checks that another mount sees the file as this one does (size,
    /// mtime, then `expected` bytes); `None` where there is no other
    /// mount.
    fn visible(&mut self, _key: FileKey, _expected: &[u8]) -> Option<Result<(), Failure>> {
        None
    }
}

/// The file's bytes as its writes, applied in order, make them.
pub fn expected_content(record: &FileRecord) -> Vec<u8> {
    let mut bytes = vec![0u8; record.attempted_end() as usize];
    for write in &record.writes {
        let data = content(
            record.key,
            write.version,
            write.offset,
            write.length as usize,
        );
        bytes[write.offset as usize..(write.offset + write.length) as usize].copy_from_slice(&data);
    }
    bytes
}

/// How a client runs.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Its seed.
    pub seed: u64,
    /// Sizes.
    pub mix: Mix,
    /// Reads must match the expected content exactly (no server
    /// restarts); otherwise the durability rules of [`check_file`].
    pub exact: bool,
}

/// A client: its ledger and its own view of which files exist.
pub struct Client<F: Files> {
    files: F,
    ledger: Arc<Mutex<ClientLedger>>,
    random: Random,
    settings: Settings,
    live: Vec<u32>,
    next_file: u32,
    measurements: Measurements,
    peers: bool,
}

impl<F: Files> Client<F> {
    /// A client working through `files`, recording into `ledger`.
    pub fn new(
        files: F,
        ledger: Arc<Mutex<ClientLedger>>,
        settings: Settings,
        peers: bool,
    ) -> Self {
        Client {
            files,
            ledger,
            random: Random::new(settings.seed),
            settings,
            live: Vec::new(),
            next_file: 0,
            measurements: Measurements::default(),
            peers,
        }
    }

    /// Runs operations until `control` stops it; returns the figures.
    pub fn run(mut self, control: &Control) -> Measurements {
        loop {
            control.checkpoint();
            if control.stopping() {
                break;
            }
            self.step();
        }
        self.measurements
    }

    fn label(&self) -> String {
        self.ledger.lock().expect("ledger").label.clone()
    }

    fn failed(&mut self, operation: &str, key: FileKey, failure: &Failure) {
        match failure {
            Failure::Io => self.measurements.io_failures += 1,
            Failure::Gone => {
                self.live.retain(|&file| file != key.file);
                if self.settings.exact {
                    let message = format!("{}: {operation} {}: gone", self.label(), key.path());
                    self.measurements.unexpected.push(message);
                }
            }
            Failure::NoSpace => {
                let message = format!("{}: {operation} {}: no space", self.label(), key.path());
                self.measurements.unexpected.push(message);
            }
            Failure::Unexpected(text) => {
                let message = format!("{}: {operation} {}: {text}", self.label(), key.path());
                self.measurements.unexpected.push(message);
            }
        }
        if self.settings.exact && *failure == Failure::Io {
            let message = format!("{}: {operation} {}: I/O error", self.label(), key.path());
            self.measurements.unexpected.push(message);
        }
    }

    /// Applies the steps of a write or sync to the file's record; true if
    /// all succeeded.
    fn apply(
        &mut self,
        operation: &str,
        key: FileKey,
        version: Option<u32>,
        steps: Vec<Step>,
    ) -> bool {
        let mut all_ok = true;
        for step in steps {
            let failure = {
                let mut ledger = self.ledger.lock().expect("ledger");
                let record = ledger.file(key.file);
                match step {
                    Step::Wrote(Ok((durable, verifier))) => {
                        let version = version.expect("a write step of a write");
                        record.write_acknowledged(version, durable, verifier);
                        None
                    }
                    Step::Synced(name, Ok(verifier)) => {
                        record.synced(name, verifier);
                        None
                    }
                    Step::Closed(Ok(())) => None,
                    Step::Wrote(Err(failure))
                    | Step::Synced(_, Err(failure))
                    | Step::Closed(Err(failure)) => {
                        record.error_reported();
                        Some(failure)
                    }
                }
            };
            if let Some(failure) = failure {
                all_ok = false;
                self.failed(operation, key, &failure);
            }
        }
        all_ok
    }

    fn key(&self, file: u32) -> FileKey {
        FileKey {
            client: self.ledger.lock().expect("ledger").client,
            file,
        }
    }

    fn write_some(&mut self, file: u32, started: Instant, kind: &'static str) {
        let key = self.key(file);
        let (offset, length, version) = {
            let mut ledger = self.ledger.lock().expect("ledger");
            let record = ledger.file(file);
            let end = record.attempted_end();
            let mix = self.settings.mix;
            let offset = self.random.range(0, end.min(mix.file_bytes - 1) + 1);
            let length = self
                .random
                .range(1, mix.write_bytes + 1)
                .min(mix.file_bytes - offset);
            (offset, length, record.begin_write(offset, length))
        };
        let sync = match self.random.range(0, 10) {
            0..=1 => Some(false),
            2 => Some(true),
            _ => None,
        };
        let data = content(key, version, offset, length as usize);
        let steps = self.files.write(key, offset, &data, sync);
        if self.apply(kind, key, Some(version), steps) {
            self.measurements.record(kind, started);
        }
    }

    fn pick_live(&mut self) -> u32 {
        let index = self.random.range(0, self.live.len() as u64) as usize;
        self.live[index]
    }

    fn step(&mut self) {
        self.measurements.operations += 1;
        let operation = Operation::choose(
            &mut self.random,
            self.live.len(),
            &self.settings.mix,
            self.peers,
        );
        let started = Instant::now();
        match operation {
            Operation::Create => {
                let file = self.next_file;
                self.next_file += 1;
                let key = self.key(file);
                self.ledger.lock().expect("ledger").begin_create(file);
                match self.files.create(key) {
                    Ok(()) => {
                        self.ledger
                            .lock()
                            .expect("ledger")
                            .create_acknowledged(file);
                        self.live.push(file);
                        self.write_some(file, started, "create");
                    }
                    // Whether it exists is unknown: never touched again.
                    Err(failure) => self.failed("create", key, &failure),
                }
            }
            Operation::Write => {
                let file = self.pick_live();
                self.write_some(file, started, "write");
            }
            Operation::Sync(data_only) => {
                let file = self.pick_live();
                let key = self.key(file);
                let kind = if data_only { "fdatasync" } else { "fsync" };
                let steps = self.files.sync(key, data_only);
                if self.apply(kind, key, None, steps) {
                    self.measurements.record(kind, started);
                }
            }
            Operation::DirectorySync => {
                let client = self.key(0).client;
                match self.files.sync_directory(client) {
                    None => self.read_one(started),
                    Some(Ok(())) => {
                        self.ledger.lock().expect("ledger").directory_synced();
                        self.measurements.record("dirsync", started);
                    }
                    Some(Err(failure)) => {
                        self.ledger.lock().expect("ledger").directory_sync_failed();
                        let key = FileKey { client, file: 0 };
                        self.failed("fsync of the directory", key, &failure);
                    }
                }
            }
            Operation::Remove => {
                let file = self.pick_live();
                let key = self.key(file);
                self.ledger.lock().expect("ledger").begin_remove(file);
                // Whatever the outcome, the client leaves the file alone.
                self.live.retain(|&live| live != file);
                match self.files.remove(key) {
                    Ok(()) => {
                        self.ledger
                            .lock()
                            .expect("ledger")
                            .remove_acknowledged(file);
                        self.measurements.record("remove", started);
                    }
                    Err(failure) => self.failed("remove", key, &failure),
                }
            }
            Operation::Read => self.read_one(started),
            Operation::Visible => {
                let file = self.pick_live();
                let key = self.key(file);
                let expected = expected_content(self.ledger.lock().expect("ledger").file(file));
                match self.files.visible(key, &expected) {
                    None => self.read_one(started),
                    Some(Ok(())) => self.measurements.record("visible", started),
                    Some(Err(failure)) => self.failed("visibility check", key, &failure),
                }
            }
        }
    }

    fn read_one(&mut self, started: Instant) {
        let file = self.pick_live();
        let key = self.key(file);
        match self.files.read(key) {
            Ok(bytes) => {
                let problems = {
                    let mut ledger = self.ledger.lock().expect("ledger");
                    let label = ledger.label.clone();
                    let record = ledger.file(file);
                    if self.settings.exact {
                        let expected = expected_content(record);
                        if bytes == expected {
                            Vec::new()
                        } else {
                            vec![format!(
                                "{label}: read {}: {} bytes differ from the {} written",
                                key.path(),
                                bytes.len(),
                                expected.len()
                            )]
                        }
                    } else {
                        check_file(&label, record, Some(&bytes))
                    }
                };
                if problems.is_empty() {
                    self.measurements.record("read", started);
                }
                self.measurements.violations.extend(problems);
            }
            Err(failure) => self.failed("read", key, &failure),
        }
    }
}
