//! The mixed workload shared by `cargo xtask torture` and `cargo xtask
//! soak`: seeded clients that create, write, sync, read and remove files,
//! and a ledger of what each client did and what was acknowledged when.
//!
//! Every byte a client writes is a function of (client, file, version,
//! offset) ([`content_byte`]), so any byte found later can be traced to
//! the write that put it there, or to none. Each client works in its own
//! directory `cN` on files `cN/fM` it alone writes (so the order of its
//! writes to a file is known); files are never renamed and names are never
//! reused. What the ledger counts as durable follows exactly what the
//! server and the driver promise (docs/reliability.md, "Kill campaign"):
//!
//! - a write: a later successful sync of its file (`fsync`/`fdatasync` on
//!   a mount, `close` on a TCP mount (commit on close), a COMMIT whose
//!   verifier is the one the WRITE got), with no error reported on the
//!   file in between (errors are reported once); or a WRITE answered
//!   FILE_SYNC;
//! - a name created or removed: the reply, for a TCP client of a `sync`
//!   export (every change is committed before its reply); a later
//!   successful `fsync` of the directory for a VRPC mount (`vrpc=local`
//!   answers before the commit).

pub mod check;
pub mod client;
pub mod mount_client;
pub mod nfs_client;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A small seeded generator (SplitMix64): runs replay from their seed.
#[derive(Clone, Debug)]
pub struct Random(u64);

impl Random {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Random {
        Random(mix(seed ^ 0x5851_F42D_4C95_7F2D))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A number in `low..high` (`low` when the range is empty).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next_u64() % (high - low)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
}

/// SplitMix64's finaliser.
fn mix(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

/// A file: which client owns it and its number there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileKey {
    /// The client, which alone writes the file.
    pub client: u32,
    /// The file's number in the client's directory.
    pub file: u32,
}

impl FileKey {
    /// The file's path under the export's root.
    pub fn path(&self) -> String {
        format!("c{}/f{}", self.client, self.file)
    }
}

fn version_seed(key: FileKey, version: u32) -> u64 {
    mix(mix(mix(u64::from(key.client) + 1) ^ u64::from(key.file)) ^ u64::from(version))
}

/// The byte that version `version` of `key` holds at `offset`.
pub fn content_byte(key: FileKey, version: u32, offset: u64) -> u8 {
    let word = mix(version_seed(key, version) ^ (offset / 8));
    (word >> ((offset % 8) * 8)) as u8
}

/// `length` bytes of version `version` of `key` from `offset`.
pub fn content(key: FileKey, version: u32, offset: u64, length: usize) -> Vec<u8> {
    (offset..offset + length as u64)
        .map(|at| content_byte(key, version, at))
        .collect()
}

/// A write verifier (NFS clients only).
pub type Verifier = [u8; 8];

/// One write a client made (or tried to make) to a file.
#[derive(Clone, Debug)]
pub struct WriteRecord {
    /// Its version: the content it wrote is `content(key, version, ..)`.
    pub version: u32,
    /// Where.
    pub offset: u64,
    /// How many bytes.
    pub length: u64,
    /// Whether the client was told it succeeded.
    pub acknowledged: bool,
    /// Whether it was acknowledged as durable.
    pub durable: bool,
    /// The operation that made it durable, for reports.
    pub made_durable_by: &'static str,
    /// The verifier of an UNSTABLE WRITE reply.
    verifier: Option<Verifier>,
}

/// What a client did to one file, and what it was told.
#[derive(Clone, Debug)]
pub struct FileRecord {
    /// The file.
    pub key: FileKey,
    /// Its creation was acknowledged.
    pub create_acknowledged: bool,
    /// Its creation was acknowledged as durable: the name must exist
    /// unless a removal was attempted.
    pub create_durable: bool,
    /// A removal was attempted: the name may be gone.
    pub remove_attempted: bool,
    /// Its removal was acknowledged as durable: the name must not exist.
    pub remove_durable: bool,
    create_waits_for_directory: bool,
    remove_waits_for_directory: bool,
    /// Every write, in the order the client made them.
    pub writes: Vec<WriteRecord>,
    /// Acknowledged writes no sync has covered yet.
    unsynced: Vec<usize>,
}

impl FileRecord {
    fn new(key: FileKey) -> FileRecord {
        FileRecord {
            key,
            create_acknowledged: false,
            create_durable: false,
            remove_attempted: false,
            remove_durable: false,
            create_waits_for_directory: false,
            remove_waits_for_directory: false,
            writes: Vec::new(),
            unsynced: Vec::new(),
        }
    }

    /// Records a write about to be made; returns its version.
    pub fn begin_write(&mut self, offset: u64, length: u64) -> u32 {
        let version = self.writes.len() as u32 + 1;
        self.writes.push(WriteRecord {
            version,
            offset,
            length,
            acknowledged: false,
            durable: false,
            made_durable_by: "",
            verifier: None,
        });
        version
    }

    /// The write of `version` succeeded; `durable` if the reply said so
    /// (FILE_SYNC), `verifier` that of an UNSTABLE reply.
    pub fn write_acknowledged(
        &mut self,
        version: u32,
        durable: Option<&'static str>,
        verifier: Option<Verifier>,
    ) {
        let index = version as usize - 1;
        let write = &mut self.writes[index];
        write.acknowledged = true;
        write.verifier = verifier;
        match durable {
            Some(operation) => {
                write.durable = true;
                write.made_durable_by = operation;
            }
            None => self.unsynced.push(index),
        }
    }

    /// An operation on the file failed (the write itself, a sync, a
    /// close): earlier unsynced writes may be lost, and the error is
    /// reported once, so no later sync vouches for them.
    pub fn error_reported(&mut self) {
        self.unsynced.clear();
    }

    /// A sync of the file succeeded (`operation` names it): every
    /// acknowledged write since the last error is durable, if it got
    /// `verifier` (when the sync has one).
    pub fn synced(&mut self, operation: &'static str, verifier: Option<Verifier>) {
        for index in self.unsynced.drain(..) {
            let write = &mut self.writes[index];
            if verifier.is_none() || write.verifier == verifier {
                write.durable = true;
                write.made_durable_by = operation;
            }
        }
    }

    /// The end of the furthest write attempted.
    pub fn attempted_end(&self) -> u64 {
        self.writes
            .iter()
            .map(|write| write.offset + write.length)
            .max()
            .unwrap_or(0)
    }
}

/// When a client's creations and removals become durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameDurability {
    /// On the reply (a TCP client of a `sync` export).
    OnReply,
    /// After a later successful `fsync` of the directory (VRPC mounts).
    OnDirectorySync,
}

/// Everything one client did, in order.
#[derive(Debug)]
pub struct ClientLedger {
    /// The client's number (its directory is `c{client}`).
    pub client: u32,
    /// What it is, for reports (`vrpc mount 0`, `nfs client`).
    pub label: String,
    /// When its names become durable.
    pub names: NameDurability,
    /// Its files, by number.
    pub files: BTreeMap<u32, FileRecord>,
}

impl ClientLedger {
    /// An empty ledger.
    pub fn new(client: u32, label: String, names: NameDurability) -> ClientLedger {
        ClientLedger {
            client,
            label,
            names,
            files: BTreeMap::new(),
        }
    }

    /// Records a creation about to be attempted.
    pub fn begin_create(&mut self, file: u32) -> &mut FileRecord {
        let key = FileKey {
            client: self.client,
            file,
        };
        self.files
            .entry(file)
            .or_insert_with(|| FileRecord::new(key))
    }

    /// The file's record.
    pub fn file(&mut self, file: u32) -> &mut FileRecord {
        self.files
            .get_mut(&file)
            .expect("a file the client created")
    }

    /// Its creation succeeded.
    pub fn create_acknowledged(&mut self, file: u32) {
        let names = self.names;
        let record = self.file(file);
        record.create_acknowledged = true;
        match names {
            NameDurability::OnReply => record.create_durable = true,
            NameDurability::OnDirectorySync => record.create_waits_for_directory = true,
        }
    }

    /// A removal is about to be attempted.
    pub fn begin_remove(&mut self, file: u32) {
        self.file(file).remove_attempted = true;
    }

    /// The removal succeeded.
    pub fn remove_acknowledged(&mut self, file: u32) {
        let names = self.names;
        let record = self.file(file);
        match names {
            NameDurability::OnReply => record.remove_durable = true,
            NameDurability::OnDirectorySync => record.remove_waits_for_directory = true,
        }
    }

    /// An `fsync` of the client's directory succeeded: every creation and
    /// removal acknowledged before it is durable.
    pub fn directory_synced(&mut self) {
        for record in self.files.values_mut() {
            if std::mem::take(&mut record.create_waits_for_directory) {
                record.create_durable = true;
            }
            if std::mem::take(&mut record.remove_waits_for_directory) {
                record.remove_durable = true;
            }
        }
    }

    /// The server was killed and started again: creations and removals it
    /// answered before its commit and no directory `fsync` covered are
    /// lost or not, and a directory `fsync` on the new server does not
    /// vouch for them (a guest-driver mount cannot tell a name the restart
    /// lost: docs/guest-driver.md, "Durability").
    pub fn server_restarted(&mut self) {
        self.directory_sync_failed();
    }

    /// An `fsync` of the directory failed: the error is reported once.
    pub fn directory_sync_failed(&mut self) {
        for record in self.files.values_mut() {
            record.create_waits_for_directory = false;
            record.remove_waits_for_directory = false;
        }
    }
}

/// How an operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// EIO, or the connection to the server was lost: expected while the
    /// server is down.
    Io,
    /// ENOENT or ESTALE: the file is gone (its creation was lost with a
    /// restart, if it was not durable).
    Gone,
    /// ENOSPC, NFS3ERR_NOSPC: the disk is full (expected only by `cargo
    /// xtask fill`).
    NoSpace,
    /// Anything else: never expected.
    Unexpected(String),
}

impl Failure {
    /// Classifies an I/O error from a mount.
    pub fn from_io(error: &std::io::Error) -> Failure {
        match error.raw_os_error() {
            Some(libc_eio) if libc_eio == nix::libc::EIO || libc_eio == nix::libc::ENOTCONN => {
                Failure::Io
            }
            Some(code) if code == nix::libc::ENOENT || code == nix::libc::ESTALE => Failure::Gone,
            Some(code) if code == nix::libc::ENOSPC => Failure::NoSpace,
            _ => Failure::Unexpected(error.to_string()),
        }
    }
}

/// The kinds of operations whose latencies are reported.
pub const OPERATION_KINDS: &[&str] = &[
    "create",
    "write",
    "fsync",
    "fdatasync",
    "dirsync",
    "commit",
    "remove",
    "read",
    "visible",
];

/// Operation latencies and counts, per kind.
#[derive(Debug, Default)]
pub struct Measurements {
    /// Microseconds of each successful operation, by kind.
    pub latencies: BTreeMap<&'static str, Vec<u64>>,
    /// Operations attempted.
    pub operations: u64,
    /// Operations that failed with EIO or a lost connection.
    pub io_failures: u64,
    /// Unexpected failures, with the client and operation.
    pub unexpected: Vec<String>,
    /// What reads found that the durability rules do not allow.
    pub violations: Vec<String>,
}

impl Measurements {
    /// Records a successful operation of `kind` that began at `started`.
    pub fn record(&mut self, kind: &'static str, started: Instant) {
        let micros = started.elapsed().as_micros() as u64;
        self.latencies.entry(kind).or_default().push(micros);
    }

    /// Adds `other` to these.
    pub fn merge(&mut self, other: Measurements) {
        for (kind, mut values) in other.latencies {
            self.latencies.entry(kind).or_default().append(&mut values);
        }
        self.operations += other.operations;
        self.io_failures += other.io_failures;
        self.unexpected.extend(other.unexpected);
        self.violations.extend(other.violations);
    }

    /// One line per kind: count, p50, p99, max (milliseconds).
    pub fn percentile_report(&self) -> String {
        let mut text = String::new();
        for kind in OPERATION_KINDS {
            let Some(values) = self.latencies.get(kind) else {
                continue;
            };
            let mut sorted = values.clone();
            sorted.sort_unstable();
            let at = |fraction: f64| {
                let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
                sorted[index] as f64 / 1000.0
            };
            text.push_str(&format!(
                "  {kind:<10} {:>8} ops  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms\n",
                sorted.len(),
                at(0.5),
                at(0.99),
                at(1.0)
            ));
        }
        text
    }
}

/// Pauses the clients between operations (while the server is checked)
/// and stops them.
#[derive(Debug, Default)]
pub struct Control {
    paused: Mutex<bool>,
    resumed: Condvar,
    parked: AtomicUsize,
    stop: AtomicBool,
}

impl Control {
    /// Whether the clients should end.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Ends the clients after their current operation.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.resume();
    }

    /// Called by a client between operations: waits while paused.
    pub fn checkpoint(&self) {
        let mut paused = self.paused.lock().expect("control lock");
        if !*paused {
            return;
        }
        self.parked.fetch_add(1, Ordering::SeqCst);
        while *paused && !self.stopping() {
            paused = self.resumed.wait(paused).expect("control lock");
        }
        self.parked.fetch_sub(1, Ordering::SeqCst);
    }

    /// Pauses the clients and waits until all `clients` are parked.
    ///
    /// # Errors
    /// When a client does not park within `within` (stuck in a call).
    pub fn pause(&self, clients: usize, within: Duration) -> anyhow::Result<()> {
        *self.paused.lock().expect("control lock") = true;
        let deadline = Instant::now() + within;
        while self.parked.load(Ordering::SeqCst) < clients {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{} of {clients} clients still in an operation after {} s",
                    clients - self.parked.load(Ordering::SeqCst),
                    within.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Lets the clients go on.
    pub fn resume(&self) {
        *self.paused.lock().expect("control lock") = false;
        self.resumed.notify_all();
    }
}

/// Sizes and mix of a client's operations.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// Files a client keeps at most (it removes beyond).
    pub files: usize,
    /// Largest file (writes never extend past it).
    pub file_bytes: u64,
    /// Largest single write.
    pub write_bytes: u64,
}

impl Default for Mix {
    fn default() -> Mix {
        Mix {
            files: 12,
            file_bytes: 128 * 1024,
            write_bytes: 32 * 1024,
        }
    }
}

/// One operation of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Create a new file and write its first bytes.
    Create,
    /// Write to a file (an overwrite or an append), maybe syncing it.
    Write,
    /// Sync a file through a new descriptor (`fsync`, or `fdatasync`
    /// when the flag is set); COMMIT for NFS clients.
    Sync(bool),
    /// `fsync` of the client's directory.
    DirectorySync,
    /// Remove a file.
    Remove,
    /// Read a file back and check it.
    Read,
    /// Check that another mount sees what this one wrote (soak only).
    Visible,
}

impl Operation {
    /// Picks the next operation for a client holding `live` files.
    pub fn choose(random: &mut Random, live: usize, mix: &Mix, peers: bool) -> Operation {
        if live == 0 {
            return Operation::Create;
        }
        if live >= mix.files {
            return Operation::Remove;
        }
        match random.range(0, 100) {
            0..=14 => Operation::Create,
            15..=49 => Operation::Write,
            50..=57 => Operation::Sync(false),
            58..=61 => Operation::Sync(true),
            62..=69 => Operation::DirectorySync,
            70..=77 => Operation::Remove,
            78..=91 if peers => Operation::Visible,
            _ => Operation::Read,
        }
    }
}
