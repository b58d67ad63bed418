//! Write-behind: a FUSE write is answered once its data is queued, and
//! worker threads send the WRITE calls, several in flight per mount.
//!
//! Design (`docs/guest-driver.md`, "Write-behind"): a program's `write`
//! returns as on a local file system; the data reaches the server within
//! the time its calls take, and before anything can observe the file
//! through this mount or another: `close` (flush), `fsync`, `read`,
//! `stat` (GETATTR), `truncate` (SETATTR), `open`, a listing and a lookup
//! that returns the file all wait for the file's queued writes first, so
//! the kernel is never handed a size older than its own and the next
//! `open` anywhere sees the data (close-to-open). A failed WRITE is
//! reported by the next `write`, `fsync` or `close` of every descriptor
//! open on the file, once each, and by those opened later while no
//! descriptor has reported it yet: Linux's rule for writeback errors
//! (`errseq_t`, kept per file, sampled per descriptor at open). Queued
//! data is bounded ([`QUEUE_LIMIT`]): a writer beyond it waits.
//!
//! Each node's newest job is parked for up to [`PARK_TIME`] so that the
//! next can merge into it: a write continuing it (one WRITE per file for a
//! program writing in pieces), or an attribute change (`docs/guest-driver.md`,
//! "Deferred attribute changes": a `chmod`, `chown` or `utimes` of a file
//! this mount created, which the server will certainly allow, is answered
//! at once). Anything waiting for the file (close, fsync, stat, read,
//! open, a job that does not merge) sends it first. `tar x` thus costs one
//! WRITE and one SETATTR per file instead of about two and three.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use fuser::{Errno, INodeNo, Notifier};
use nfs3::procedures::data::WriteArguments;
use nfs3::procedures::inspect::SetAttributesArguments;
use nfs3::{FileAttributes, FileHandle, SetTime, SettableAttributes, StableHow};

use super::attributes::apply;
use super::nodes::NodeTable;
use super::{lock, nfs, note_data_version, record_own_change, OwnCalls};
use crate::client::{Caller, NfsClient};

/// Most bytes queued and not yet written, per mount.
pub const QUEUE_LIMIT: u64 = 16 << 20;

/// Threads sending queued WRITEs.
const WORKERS: usize = 4;

/// Longest a deferred attribute change waits for others to merge with
/// before it is sent anyway.
pub const PARK_TIME: Duration = Duration::from_millis(20);

/// One queued write, or a deferred attribute change (`attributes`).
struct Job {
    /// The open file it came through (0: none, a change by path).
    file: u64,
    node: u64,
    handle: FileHandle,
    caller: Caller,
    offset: u64,
    data: Vec<u8>,
    /// A SETATTR instead of a WRITE.
    attributes: Option<SettableAttributes>,
    /// Keeps the watcher from judging the file until the write's change
    /// is recorded.
    _own: OwnCalls,
}

/// A job not yet handed to a worker: later ones of the same node merge
/// into it (contiguous data of one open file, or attribute changes).
struct Parked {
    job: Job,
    since: Instant,
}

/// A failed queued write of a node.
#[derive(Debug)]
struct WriteError {
    error: Errno,
    /// Numbers the failures: a descriptor reports each failure it has
    /// not reported yet, once.
    sequence: u64,
    /// Whether a descriptor has reported it (until then, descriptors
    /// opened later report it too).
    seen: bool,
}

/// What is queued.
#[derive(Default)]
struct Queue {
    bytes: u64,
    /// Writes and attribute changes queued, parked or in flight, per node.
    pending: HashMap<u64, u32>,
    /// The last failure of a queued write, per node.
    errors: HashMap<u64, WriteError>,
    /// Per open file: its node, and the failure sequence it has reported
    /// (or found seen when it was opened).
    reported: HashMap<u64, (u64, u64)>,
    next_sequence: u64,
    /// Nodes whose cached pages are being dropped after a failed write.
    invalidating: HashMap<u64, u32>,
    /// End of the furthest queued write, per node with writes pending.
    ends: HashMap<u64, u64>,
    /// A job per node not yet handed to a worker (`Parked`).
    parked: HashMap<u64, Parked>,
    /// Per node, the deferred attribute changes the server has not
    /// answered yet (parked or sent), oldest first, with when each was
    /// made: what the server's attributes lack of what was answered.
    unapplied: HashMap<u64, Vec<(SettableAttributes, SystemTime)>>,
    /// The queue is being dropped: the parking thread ends.
    closing: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Queue")
            .field("bytes", &self.bytes)
            .field("pending", &self.pending.len())
            .field("parked", &self.parked.len())
            .finish_non_exhaustive()
    }
}

/// Whether `next` may be merged into the parked `parked` (sent as one
/// SETATTR with the same outcome as the two in order): not a change of
/// owner after one of mode, which the owner change would have stripped of
/// its set-id bits.
fn mergeable(parked: &SettableAttributes, next: &SettableAttributes) -> bool {
    parked.size.is_none()
        && next.size.is_none()
        && !(parked.mode.is_some() && (next.uid.is_some() || next.gid.is_some()))
}

/// `next` applied over `parked`: later values win.
fn merge(parked: &mut SettableAttributes, next: SettableAttributes) {
    parked.mode = next.mode.or(parked.mode);
    parked.uid = next.uid.or(parked.uid);
    parked.gid = next.gid.or(parked.gid);
    if next.access_time != SetTime::DontChange {
        parked.access_time = next.access_time;
    }
    if next.modify_time != SetTime::DontChange {
        parked.modify_time = next.modify_time;
    }
}

impl Queue {
    /// Records a failed write of `node`: an earlier failure nobody has
    /// reported yet stands for both (Linux keeps the first as well).
    fn fail(&mut self, node: u64, error: Errno) {
        if self.errors.get(&node).is_some_and(|known| !known.seen) {
            return;
        }
        self.next_sequence += 1;
        let sequence = self.next_sequence;
        self.errors.insert(
            node,
            WriteError {
                error,
                sequence,
                seen: false,
            },
        );
    }

    /// Open file `file` of `node` was opened: it reports the failures
    /// from now on, and an earlier one no descriptor has reported yet.
    fn open(&mut self, file: u64, node: u64) {
        let reported = match self.errors.get(&node) {
            Some(error) if error.seen => error.sequence,
            _ => 0,
        };
        self.reported.insert(file, (node, reported));
    }

    /// The failure open file `file` of `node` has not reported yet,
    /// marked reported by it.
    fn take(&mut self, file: u64, node: u64) -> Option<Errno> {
        let error = self.errors.get_mut(&node)?;
        let reported = self.reported.entry(file).or_insert((node, 0));
        if reported.1 >= error.sequence {
            return None;
        }
        reported.1 = error.sequence;
        error.seen = true;
        Some(error.error)
    }
}

/// What sending a WRITE needs, shared with the workers.
#[derive(Debug)]
pub(super) struct Sender {
    pub client: Arc<NfsClient>,
    pub nodes: Arc<Mutex<NodeTable>>,
    /// Record own changes for the table watcher.
    pub coherent: bool,
    /// Largest WRITE.
    pub write_size: u32,
    /// Tells the kernel its pages of a file are stale (filled once
    /// mounted).
    pub notifier: Arc<OnceLock<Notifier>>,
}

impl Sender {
    /// Writes `data` at `offset` to `node` now, in WRITEs of at most the
    /// write size; returns the bytes written.
    pub fn write_now(
        &self,
        node: u64,
        handle: &FileHandle,
        caller: &Caller,
        offset: u64,
        data: &[u8],
    ) -> Result<u32, Errno> {
        let mut written = 0usize;
        while written < data.len() {
            let chunk = &data[written..data.len().min(written + self.write_size as usize)];
            // Sent from the caller's buffer: no copy of the data on the way
            // to the transport.
            let ok = nfs(self.client.write_from(
                caller,
                WriteArguments {
                    file: handle.clone(),
                    offset: offset + written as u64,
                    count: chunk.len() as u32,
                    stable: StableHow::Unstable,
                    data: Vec::new(),
                },
                chunk,
            ))?;
            note_data_version(&self.nodes, node, &ok.file_wcc);
            if self.coherent {
                record_own_change(&self.nodes, node, &ok.file_wcc, |_| {});
            }
            if ok.committed == StableHow::Unstable {
                // Kept per file: a restart since the file's earlier
                // UNSTABLE writes (another verifier) lost them, and the
                // file's next commit, through any descriptor, reports it.
                lock(&self.nodes).note_unstable(handle, ok.verifier);
            }
            let count = (ok.count as usize).min(chunk.len());
            if count == 0 {
                return Err(Errno::EIO);
            }
            written += count;
        }
        Ok(written as u32)
    }
}

#[derive(Debug)]
struct Shared {
    sender: Sender,
    queue: Mutex<Queue>,
    changed: Condvar,
    /// A change was parked, or the queue is closing: for the thread that
    /// sends parked changes when their time is up.
    parked_changed: Condvar,
    /// One queue per worker; a node's jobs always go to the same one,
    /// so they reach the server in the order the kernel sent them.
    jobs: Mutex<Vec<mpsc::Sender<Job>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Job")
            .field("node", &self.node)
            .field("offset", &self.offset)
            .field("length", &self.data.len())
            .field("attributes", &self.attributes)
            .finish_non_exhaustive()
    }
}

/// The write-behind queue of one mount.
#[derive(Debug)]
pub(super) struct WriteBehind {
    shared: Arc<Shared>,
}

impl WriteBehind {
    /// Starts the workers (none when `enabled` is false: writes are then
    /// sent before the FUSE write is answered).
    pub fn new(sender: Sender, enabled: bool) -> WriteBehind {
        let shared = Arc::new(Shared {
            sender,
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            parked_changed: Condvar::new(),
            jobs: Mutex::new(Vec::new()),
        });
        let mut jobs = Vec::new();
        if enabled {
            for index in 0..WORKERS {
                let (queue, receiver) = mpsc::channel::<Job>();
                let shared = Arc::clone(&shared);
                let spawned = thread::Builder::new()
                    .name(format!("write-behind-{index}"))
                    .spawn(move || shared.serve(&receiver));
                match spawned {
                    Ok(_) => jobs.push(queue),
                    Err(error) => log::warn!("no write-behind worker: {error}"),
                }
            }
        }
        if !jobs.is_empty() {
            let parker = Arc::clone(&shared);
            let spawned = thread::Builder::new()
                .name("write-behind-park".into())
                .spawn(move || parker.send_parked_when_due());
            if let Err(error) = spawned {
                // Without it parked changes would wait for the next drain:
                // defer nothing.
                log::warn!("no thread for deferred attribute changes: {error}");
                jobs.clear();
            }
        }
        *lock(&shared.jobs) = jobs;
        WriteBehind { shared }
    }

    /// Writes `data`: queued when write-behind runs (answered at once),
    /// otherwise sent now. A queued write's earlier failure on this file
    /// is reported first.
    #[allow(clippy::too_many_arguments)] // One per part of the write.
    pub fn write(
        &self,
        file: u64,
        node: u64,
        handle: FileHandle,
        caller: Caller,
        offset: u64,
        data: &[u8],
        own: OwnCalls,
    ) -> Result<u32, Errno> {
        let queue = {
            let jobs = lock(&self.shared.jobs);
            // A node's writes keep to one worker: they stay in order.
            (!jobs.is_empty()).then(|| jobs[(node % jobs.len() as u64) as usize].clone())
        };
        let Some(jobs) = queue else {
            let written = self
                .shared
                .sender
                .write_now(node, &handle, &caller, offset, data);
            drop(own);
            return written;
        };
        let length = data.len() as u64;
        let write_size = u64::from(self.shared.sender.write_size);
        let mut unsent = Vec::new();
        let direct = {
            let mut queue = lock(&self.shared.queue);
            if let Some(error) = queue.take(file, node) {
                return Err(error);
            }
            if queue.bytes > 0 && queue.bytes + length > QUEUE_LIMIT {
                // What is parked counts: send it rather than wait for it.
                let nodes: Vec<u64> = queue.parked.keys().copied().collect();
                for parked in nodes {
                    unsent.extend(self.shared.unpark(&mut queue, parked));
                }
                drop(queue);
                self.shared.run_unsent(std::mem::take(&mut unsent));
                queue = lock(&self.shared.queue);
            }
            while queue.bytes > 0 && queue.bytes + length > QUEUE_LIMIT {
                queue = self
                    .shared
                    .changed
                    .wait(queue)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            queue.bytes += length;
            let end = queue.ends.entry(node).or_insert(0);
            *end = (*end).max(offset + length);
            // Appended to the file's parked write when it continues it;
            // otherwise what is parked goes first (the server then sees the
            // file's changes in the order the program made them) and this
            // write is parked in its place, or sent when it is full size.
            let appended = match queue.parked.get_mut(&node) {
                Some(parked)
                    if parked.job.attributes.is_none()
                        && parked.job.file == file
                        && parked.job.offset + parked.job.data.len() as u64 == offset
                        && parked.job.data.len() as u64 + length <= write_size =>
                {
                    parked.job.data.extend_from_slice(data);
                    true
                }
                _ => false,
            };
            if appended {
                drop(queue);
                drop(own);
                return Ok(length as u32);
            }
            unsent.extend(self.shared.unpark(&mut queue, node));
            *queue.pending.entry(node).or_insert(0) += 1;
            let job = Job {
                file,
                node,
                handle,
                caller,
                offset,
                data: data.to_vec(),
                attributes: None,
                _own: own,
            };
            if length >= write_size {
                Some(job)
            } else {
                queue.parked.insert(
                    node,
                    Parked {
                        job,
                        since: Instant::now(),
                    },
                );
                self.shared.parked_changed.notify_all();
                None
            }
        };
        self.shared.run_unsent(unsent);
        if let Some(job) = direct {
            if let Err(mpsc::SendError(job)) = jobs.send(job) {
                // The worker is gone: send it here.
                self.shared.run(job, &[]);
            }
        }
        Ok(length as u32)
    }

    /// Whether writes (and attribute changes) can be deferred at all.
    pub fn enabled(&self) -> bool {
        !lock(&self.shared.jobs).is_empty()
    }

    /// Defers a SETATTR of `node` and returns the attributes it gives,
    /// when `permitted` allows it given the attributes the file will have
    /// before it: the server's (`server`, read from the metadata table in
    /// the queue's lock) with the queued writes' size and the node's
    /// unanswered deferred changes applied. `None`: nothing was deferred
    /// (send it now).
    #[allow(clippy::too_many_arguments)] // One per part of the change.
    pub fn defer_attributes(
        &self,
        node: u64,
        file: Option<u64>,
        handle: FileHandle,
        caller: Caller,
        attributes: SettableAttributes,
        own: OwnCalls,
        server: impl FnOnce() -> Option<FileAttributes>,
        permitted: impl FnOnce(&FileAttributes) -> bool,
    ) -> Option<FileAttributes> {
        if !self.enabled() || attributes.size.is_some() {
            return None;
        }
        let (predicted, unsent, unused) = {
            let mut queue = lock(&self.shared.queue);
            let before = expected(&queue, node, server()?);
            if !permitted(&before) {
                return None;
            }
            let now = SystemTime::now();
            let predicted = apply(before, &attributes, now);
            let mut unsent = Vec::new();
            // Dropped after the lock (it takes the node table's).
            let mut unused = None;
            let merged = match queue.parked.get_mut(&node) {
                Some(parked) => match &mut parked.job.attributes {
                    Some(changes) if mergeable(changes, &attributes) => {
                        merge(changes, attributes.clone());
                        if parked.job.file == 0 {
                            parked.job.file = file.unwrap_or(0);
                        }
                        true
                    }
                    _ => false,
                },
                None => false,
            };
            if merged {
                unused = Some(own);
                if let Some(last) = queue
                    .unapplied
                    .get_mut(&node)
                    .and_then(|changes| changes.last_mut())
                {
                    merge(&mut last.0, attributes);
                    last.1 = now;
                }
            } else {
                unsent = self.shared.unpark(&mut queue, node);
                queue.parked.insert(
                    node,
                    Parked {
                        job: Job {
                            file: file.unwrap_or(0),
                            node,
                            handle,
                            caller,
                            offset: 0,
                            data: Vec::new(),
                            attributes: Some(attributes.clone()),
                            _own: own,
                        },
                        since: Instant::now(),
                    },
                );
                *queue.pending.entry(node).or_insert(0) += 1;
                queue
                    .unapplied
                    .entry(node)
                    .or_default()
                    .push((attributes, now));
            }
            self.shared.parked_changed.notify_all();
            (predicted, unsent, unused)
        };
        drop(unused);
        self.shared.run_unsent(unsent);
        Some(predicted)
    }

    /// For a `stat` of `node` while deferred attribute changes of it wait:
    /// waits for its queued writes only (not for the changes, which would
    /// send a parked one before the file's other changes could merge into
    /// it) and returns the attributes with the changes applied to the
    /// server's (`server`, read in the queue's lock). `None`: no change
    /// waits; ask as usual.
    pub fn attributes_while_deferred(
        &self,
        node: u64,
        server: impl FnOnce() -> Option<FileAttributes>,
    ) -> Option<FileAttributes> {
        let mut queue = lock(&self.shared.queue);
        if queue.unapplied.contains_key(&node)
            && queue
                .parked
                .get(&node)
                .is_some_and(|parked| parked.job.attributes.is_none())
        {
            // A parked write is waited for: it goes now.
            let unsent = self.shared.unpark_for_waiter(&mut queue, node);
            drop(queue);
            self.shared.run_unsent(unsent);
            queue = lock(&self.shared.queue);
        }
        loop {
            let changes = queue.unapplied.get(&node).map_or(0, Vec::len) as u32;
            if changes == 0 {
                return None;
            }
            // Only changes left: the server has every write.
            if queue.pending.get(&node).copied().unwrap_or(0) <= changes {
                break;
            }
            queue = self
                .shared
                .changed
                .wait(queue)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let server = server()?;
        Some(expected(&queue, node, server))
    }

    /// Waits until node `node` has no queued or unfinished write (a
    /// parked attribute change is sent first).
    pub fn drain(&self, node: u64) {
        let mut queue = lock(&self.shared.queue);
        if queue.parked.contains_key(&node) {
            let unsent = self.shared.unpark_for_waiter(&mut queue, node);
            drop(queue);
            self.shared.run_unsent(unsent);
            queue = lock(&self.shared.queue);
        }
        while queue.pending.contains_key(&node) {
            queue = self
                .shared
                .changed
                .wait(queue)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Waits until no write of the mount is queued or unfinished (parked
    /// attribute changes are sent first).
    pub fn drain_all(&self) {
        let mut queue = lock(&self.shared.queue);
        let nodes: Vec<u64> = queue.parked.keys().copied().collect();
        let mut unsent = Vec::new();
        for node in nodes {
            unsent.extend(self.shared.unpark(&mut queue, node));
        }
        drop(queue);
        self.shared.run_unsent(unsent);
        let mut queue = lock(&self.shared.queue);
        while !queue.pending.is_empty() {
            queue = self
                .shared
                .changed
                .wait(queue)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Waits until the kernel's pages of `node` dropped after its failed
    /// writes are gone (call only where the kernel holds none of the
    /// node's pages locked: `fsync`, `flush`, `release`).
    pub fn wait_invalidated(&self, node: u64) {
        let mut queue = lock(&self.shared.queue);
        while queue.invalidating.contains_key(&node) {
            queue = self
                .shared
                .changed
                .wait(queue)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Whether node `node` has queued or unfinished writes.
    pub fn pending(&self, node: u64) -> bool {
        lock(&self.shared.queue).pending.contains_key(&node)
    }

    /// After [`WriteBehind::drain`]: the failure of a queued write to
    /// `node` that open file `file` has not reported yet (whichever
    /// descriptor made the write), marked reported by `file`.
    pub fn take_error(&self, file: u64, node: u64) -> Option<Errno> {
        lock(&self.shared.queue).take(file, node)
    }

    /// Open file `file` of `node` was opened: it reports the failures
    /// from now on, and an earlier one no descriptor has reported yet.
    pub fn opened(&self, file: u64, node: u64) {
        lock(&self.shared.queue).open(file, node);
    }

    /// Open file `file` was released; a failure every descriptor has
    /// reported is forgotten with the file's last descriptor.
    pub fn closed(&self, file: u64) {
        let mut queue = lock(&self.shared.queue);
        let Some((node, _)) = queue.reported.remove(&file) else {
            return;
        };
        let still_open = queue.reported.values().any(|&(other, _)| other == node);
        if !still_open && queue.errors.get(&node).is_some_and(|error| error.seen) {
            queue.errors.remove(&node);
        }
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        // Parked changes are sent; workers end when their channels close,
        // and what they hold finishes.
        self.drain_all();
        lock(&self.shared.queue).closing = true;
        self.shared.parked_changed.notify_all();
        lock(&self.shared.jobs).clear();
    }
}

impl Shared {
    /// A worker: takes its queue's writes in order and merges a run of
    /// contiguous writes to one file into WRITEs of up to the write size
    /// (a program writing in small pieces then costs few calls).
    fn serve(&self, receiver: &mpsc::Receiver<Job>) {
        let mut next = None;
        loop {
            let mut job = match next.take() {
                Some(job) => job,
                None => match receiver.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
            };
            let mut merged = Vec::new();
            while job.data.len() < self.sender.write_size as usize {
                let Ok(following) = receiver.try_recv() else {
                    break;
                };
                let contiguous = following.attributes.is_none()
                    && job.attributes.is_none()
                    && following.file == job.file
                    && following.offset == job.offset + job.data.len() as u64
                    && job.data.len() + following.data.len() <= self.sender.write_size as usize;
                if !contiguous {
                    next = Some(following);
                    break;
                }
                job.data.extend_from_slice(&following.data);
                merged.push(following);
            }
            let lengths: Vec<u64> = merged.iter().map(|other| other.data.len() as u64).collect();
            self.run(job, &lengths);
        }
    }

    /// Sends `job`, whose data holds its own write followed by merged ones
    /// of `merged` bytes each (accounted as separate queued writes).
    fn run(&self, job: Job, merged: &[u64]) {
        if let Some(attributes) = job.attributes.clone() {
            return self.run_attributes(job, attributes);
        }
        let length = job.data.len() as u64;
        let writes = 1 + merged.len() as u32;
        let result =
            self.sender
                .write_now(job.node, &job.handle, &job.caller, job.offset, &job.data);
        // The change is recorded: the watcher may judge the file again.
        drop(job._own);
        let mut queue = lock(&self.queue);
        let failed = !matches!(result, Ok(written) if u64::from(written) == length);
        if failed {
            *queue.invalidating.entry(job.node).or_insert(0) += 1;
        }
        queue.bytes = queue.bytes.saturating_sub(length);
        finish(&mut queue, job.node, writes);
        match result {
            Ok(written) if u64::from(written) == length => {}
            Ok(_) => queue.fail(job.node, Errno::EIO),
            Err(error) => {
                log::warn!("a queued write failed: {error:?}");
                queue.fail(job.node, error);
            }
        }
        drop(queue);
        self.changed.notify_all();
        if failed {
            // The kernel copied the data into its page cache when the
            // write was answered: drop those pages, or this guest would
            // read bytes the server refused (Linux's NFS client drops
            // them on a write error too). Sent from this worker, not a
            // FUSE request, after the queue has room again and the
            // node's writes are no longer pending: a FUSE request the
            // kernel holds pages locked for (a write waiting for room, a
            // read draining the node) is not waiting on us. Only the
            // calls that report the error (`fsync`, `close`) wait for
            // this (`WriteBehind::wait_invalidated`); they hold no page.
            if let Some(notifier) = self.sender.notifier.get() {
                let _ = super::watch::deliver(notifier.inval_inode(INodeNo(job.node), 0, 0));
            }
            let mut queue = lock(&self.queue);
            if let Some(count) = queue.invalidating.get_mut(&job.node) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    queue.invalidating.remove(&job.node);
                }
            }
            drop(queue);
            self.changed.notify_all();
        }
    }

    /// Sends a deferred attribute change.
    fn run_attributes(&self, job: Job, attributes: SettableAttributes) {
        let result = nfs(self.sender.client.set_attributes(
            &job.caller,
            SetAttributesArguments {
                object: job.handle.clone(),
                new_attributes: attributes,
                guard: None,
            },
        ));
        if let Ok(ok) = &result {
            // The file's data is as it was: its pages stay valid (an
            // extracted file's `futimens` no longer costs its next open
            // the page cache).
            note_data_version(&self.sender.nodes, job.node, &ok.object_wcc);
            if self.sender.coherent {
                record_own_change(&self.sender.nodes, job.node, &ok.object_wcc, |_| {});
            }
        }
        drop(job._own);
        let mut queue = lock(&self.queue);
        // A node's changes are answered in the order they were made.
        if let Some(changes) = queue.unapplied.get_mut(&job.node) {
            if !changes.is_empty() {
                changes.remove(0);
            }
            if changes.is_empty() {
                queue.unapplied.remove(&job.node);
            }
        }
        finish(&mut queue, job.node, 1);
        if let Err(error) = result.filter_stale() {
            // Answered already: reported by the file's next close or
            // fsync, as a write-behind failure is.
            log::warn!("a deferred attribute change failed: {error:?}");
            queue.fail(job.node, error);
        }
        drop(queue);
        self.changed.notify_all();
    }

    /// Hands node `node`'s parked change, if any, to its worker (in the
    /// queue's lock, so nothing of the node is queued in between); what no
    /// worker took is returned, to be run by the caller after the lock.
    fn unpark(&self, queue: &mut Queue, node: u64) -> Vec<Job> {
        let Some(parked) = queue.parked.remove(&node) else {
            return Vec::new();
        };
        let job = parked.job;
        let jobs = lock(&self.jobs);
        if jobs.is_empty() {
            return vec![job];
        }
        match jobs[(node % jobs.len() as u64) as usize].send(job) {
            Ok(()) => Vec::new(),
            Err(mpsc::SendError(job)) => vec![job],
        }
    }

    /// [`Shared::unpark`] for a caller that waits for `node`'s writes next
    /// (`close`, `fsync`, `stat`): when the parked job is all the node has
    /// queued or in flight, the caller sends it itself, sparing the
    /// hand-off to a worker and back (two thread wake-ups on every close
    /// of a file written in pieces).
    fn unpark_for_waiter(&self, queue: &mut Queue, node: u64) -> Vec<Job> {
        if queue.pending.get(&node) == Some(&1) {
            if let Some(parked) = queue.parked.remove(&node) {
                return vec![parked.job];
            }
        }
        self.unpark(queue, node)
    }

    /// Runs jobs no worker took, here.
    fn run_unsent(&self, unsent: Vec<Job>) {
        for job in unsent {
            self.run(job, &[]);
        }
    }

    /// The parking thread: sends each parked change [`PARK_TIME`] after it
    /// was parked, unless something waiting for its file sent it earlier.
    fn send_parked_when_due(&self) {
        let mut queue = lock(&self.queue);
        loop {
            if queue.closing {
                return;
            }
            let now = Instant::now();
            let due: Vec<u64> = queue
                .parked
                .iter()
                .filter(|(_, parked)| now.duration_since(parked.since) >= PARK_TIME)
                .map(|(node, _)| *node)
                .collect();
            if !due.is_empty() {
                let mut unsent = Vec::new();
                for node in due {
                    unsent.extend(self.unpark(&mut queue, node));
                }
                drop(queue);
                self.run_unsent(unsent);
                queue = lock(&self.queue);
                continue;
            }
            let next = queue
                .parked
                .values()
                .map(|parked| parked.since + PARK_TIME)
                .min();
            queue = match next {
                None => self
                    .parked_changed
                    .wait(queue)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(at) => {
                    self.parked_changed
                        .wait_timeout(queue, at.saturating_duration_since(now))
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

/// A deferred change's outcome, where a file removed meanwhile (its
/// last name unlinked before the change went out: STALE) is no failure:
/// the change would have been invisible anyway.
trait FilterStale {
    fn filter_stale(self) -> Result<(), Errno>;
}

impl<T> FilterStale for Result<T, Errno> {
    fn filter_stale(self) -> Result<(), Errno> {
        match self {
            Err(error) if error == Errno::ESTALE => Ok(()),
            Err(error) => Err(error),
            Ok(_) => Ok(()),
        }
    }
}

/// The attributes `node` will have once its queued writes and deferred
/// changes reach the server, from the server's `attributes` now: the size
/// covers the queued writes, and the unanswered changes are applied again
/// (harmless for one the server applied meanwhile: applying a change twice
/// gives what applying it once does).
fn expected(queue: &Queue, node: u64, mut attributes: FileAttributes) -> FileAttributes {
    if let Some(end) = queue.ends.get(&node) {
        attributes.size = attributes.size.max(*end);
    }
    for (change, at) in queue.unapplied.get(&node).into_iter().flatten() {
        attributes = apply(attributes, change, *at);
    }
    attributes
}

/// `jobs` jobs of `node` are done.
fn finish(queue: &mut Queue, node: u64, jobs: u32) {
    if let Some(count) = queue.pending.get_mut(&node) {
        *count = count.saturating_sub(jobs);
        if *count == 0 {
            queue.pending.remove(&node);
            queue.ends.remove(&node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_reported_once_to_each_descriptor_open_on_the_file() {
        let mut queue = Queue::default();
        queue.open(1, 10);
        queue.open(2, 10);
        queue.open(3, 11);
        queue.fail(10, Errno::ENOSPC);
        assert_eq!(queue.take(2, 10), Some(Errno::ENOSPC), "another descriptor");
        assert_eq!(queue.take(2, 10), None, "once");
        assert_eq!(queue.take(1, 10), Some(Errno::ENOSPC), "the writer too");
        assert_eq!(queue.take(3, 11), None, "another file");
        // Seen: a descriptor opened now does not report it.
        queue.open(4, 10);
        assert_eq!(queue.take(4, 10), None);
        // A later failure is reported again, to everyone.
        queue.fail(10, Errno::EIO);
        assert_eq!(queue.take(4, 10), Some(Errno::EIO));
        assert_eq!(queue.take(1, 10), Some(Errno::EIO));
    }

    #[test]
    fn a_failure_nobody_saw_is_reported_to_a_descriptor_opened_later() {
        let mut queue = Queue::default();
        queue.open(1, 10);
        queue.fail(10, Errno::ENOSPC);
        // A second failure before anyone looked: the first stands.
        queue.fail(10, Errno::EIO);
        queue.open(2, 10);
        assert_eq!(queue.take(2, 10), Some(Errno::ENOSPC));
        assert_eq!(queue.take(1, 10), Some(Errno::ENOSPC));
        assert_eq!(queue.take(1, 10), None);
    }

    fn change(mode: Option<u32>, uid: Option<u32>, modify: SetTime) -> SettableAttributes {
        SettableAttributes {
            mode,
            uid,
            modify_time: modify,
            ..SettableAttributes::default()
        }
    }

    #[test]
    fn tar_s_three_changes_merge_into_one() {
        let time = SetTime::ClientTime(nfs3::Time {
            seconds: 9,
            nanoseconds: 0,
        });
        // utimensat, fchown, fchmod: what GNU tar does to each file.
        let mut parked = change(None, None, time);
        let chown = change(None, Some(1000), SetTime::DontChange);
        assert!(mergeable(&parked, &chown));
        merge(&mut parked, chown);
        let chmod = change(Some(0o640), None, SetTime::DontChange);
        assert!(mergeable(&parked, &chmod));
        merge(&mut parked, chmod);
        assert_eq!(parked.mode, Some(0o640));
        assert_eq!(parked.uid, Some(1000));
        assert_eq!(parked.modify_time, time);
    }

    #[test]
    fn an_owner_change_after_a_mode_change_is_not_merged() {
        // chmod 4755 then chown leaves 0755 locally; one SETATTR with both
        // would keep set-user-id.
        let parked = change(Some(0o4755), None, SetTime::DontChange);
        assert!(!mergeable(
            &parked,
            &change(None, Some(1), SetTime::DontChange)
        ));
        let size = SettableAttributes {
            size: Some(0),
            ..SettableAttributes::default()
        };
        assert!(!mergeable(&parked, &size));
        // A later value wins.
        let mut parked = change(Some(0o600), None, SetTime::ServerTime);
        merge(&mut parked, change(Some(0o644), None, SetTime::DontChange));
        assert_eq!(parked.mode, Some(0o644));
        assert_eq!(parked.modify_time, SetTime::ServerTime);
    }
}
