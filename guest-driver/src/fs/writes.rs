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

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;

use fuser::{Errno, INodeNo, Notifier};
use nfs3::procedures::data::WriteArguments;
use nfs3::{FileHandle, StableHow};

use super::nodes::NodeTable;
use super::{lock, nfs, note_data_version, record_own_change, OwnCalls};
use crate::client::{Caller, NfsClient};

/// Most bytes queued and not yet written, per mount.
pub const QUEUE_LIMIT: u64 = 16 << 20;

/// Threads sending queued WRITEs.
const WORKERS: usize = 4;

/// One queued write.
struct Job {
    file: u64,
    node: u64,
    handle: FileHandle,
    caller: Caller,
    offset: u64,
    data: Vec<u8>,
    /// Keeps the watcher from judging the file until the write's change
    /// is recorded.
    _own: OwnCalls,
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
#[derive(Debug, Default)]
struct Queue {
    bytes: u64,
    /// Writes queued or in flight, per node.
    pending: HashMap<u64, u32>,
    /// The last failure of a queued write, per node.
    errors: HashMap<u64, WriteError>,
    /// Per open file: its node, and the failure sequence it has reported
    /// (or found seen when it was opened).
    reported: HashMap<u64, (u64, u64)>,
    next_sequence: u64,
    /// Nodes whose cached pages are being dropped after a failed write.
    invalidating: HashMap<u64, u32>,
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
            let ok = nfs(self.client.write(
                caller,
                WriteArguments {
                    file: handle.clone(),
                    offset: offset + written as u64,
                    count: chunk.len() as u32,
                    stable: StableHow::Unstable,
                    data: chunk.to_vec(),
                },
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
}

/// The write-behind queue of one mount.
#[derive(Debug)]
pub(super) struct WriteBehind {
    shared: Arc<Shared>,
    /// One queue per worker; a node's writes always go to the same one,
    /// so they reach the server in the order the kernel sent them.
    jobs: Mutex<Vec<mpsc::Sender<Job>>>,
}

impl WriteBehind {
    /// Starts the workers (none when `enabled` is false: writes are then
    /// sent before the FUSE write is answered).
    pub fn new(sender: Sender, enabled: bool) -> WriteBehind {
        let shared = Arc::new(Shared {
            sender,
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
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
        WriteBehind {
            shared,
            jobs: Mutex::new(jobs),
        }
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
            let jobs = lock(&self.jobs);
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
        {
            let mut queue = lock(&self.shared.queue);
            if let Some(error) = queue.take(file, node) {
                return Err(error);
            }
            while queue.bytes > 0 && queue.bytes + length > QUEUE_LIMIT {
                queue = self
                    .shared
                    .changed
                    .wait(queue)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            queue.bytes += length;
            *queue.pending.entry(node).or_insert(0) += 1;
        }
        let job = Job {
            file,
            node,
            handle,
            caller,
            offset,
            data: data.to_vec(),
            _own: own,
        };
        if let Err(mpsc::SendError(job)) = jobs.send(job) {
            // The worker is gone: send it here.
            self.shared.run(job, &[]);
        }
        Ok(length as u32)
    }

    /// Waits until node `node` has no queued or unfinished write.
    pub fn drain(&self, node: u64) {
        let mut queue = lock(&self.shared.queue);
        while queue.pending.contains_key(&node) {
            queue = self
                .shared
                .changed
                .wait(queue)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Waits until no write of the mount is queued or unfinished.
    pub fn drain_all(&self) {
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
        // Workers end when the channel closes; what they hold finishes.
        lock(&self.jobs).clear();
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
                let contiguous = following.file == job.file
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
        if let Some(count) = queue.pending.get_mut(&job.node) {
            *count = count.saturating_sub(writes);
            if *count == 0 {
                queue.pending.remove(&job.node);
            }
        }
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
}

#[cfg(test)]
mod tests {
    use super::{Errno, Queue};

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
}
