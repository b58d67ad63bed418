//! Keeps long kernel caching coherent: a thread that follows the metadata
//! table's change journal and tells the kernel exactly what another guest
//! changed.
//!
//! Design (`docs/guest-driver.md`, "Consistency"): with a metadata table
//! the kernel caches attributes and names (found and not found) for long
//! timeouts. Every [`INTERVAL`] ([`IDLE_INTERVAL`] once the journal has
//! been still for [`QUIET`]) the watcher reads the slots the storage
//! domain wrote since its last pass (`metatab`'s journal; everything after
//! an overrun or on another table) and, for each node whose file maps to
//! such a slot, compares the slot with [`Known`], the state the kernel's
//! cache matches:
//! - attributes changed: `notify_inval_inode` (with the cached pages when
//!   mtime or size moved);
//! - a directory changed: `notify_inval_entry` for every name the kernel
//!   was told it may cache in it ([`Node::names`]), negative ones included;
//! - the slot now holds another file, or none: both, since changes can no
//!   longer be seen; the kernel asks again and the server republishes.
//!
//! This driver's own changes are not invalidated (the kernel applied them
//! already): each call that may change a node marks it in flight, and its
//! reply's wcc data records a transition `before -> after`. A changed slot
//! whose state the recorded transitions lead to from [`Known`] was changed
//! by this driver alone; anything else is another guest's change. A node
//! with a call in flight is judged at a later pass (at most
//! [`MAX_DEFERRAL`] later). A file whose calls are still in flight then
//! (one this driver streams into) has its attributes invalidated and its
//! pages judged once the calls are recorded (at most
//! [`MAX_PAGE_DEFERRAL`] later), as long as the changes the recorded
//! transitions lack are no more than the calls in flight
//! ([`OwnChanges::missing_changes`]).
//!
//! [`OwnChanges::missing_changes`]: super::nodes::OwnChanges::missing_changes
//!
//! Races with replies in flight: a reply built from data older than a
//! change the watcher just handled would land in the kernel after the
//! invalidation. The watcher therefore stamps each invalidation with a new
//! epoch ([`Coherence`]); a request handler notes the epoch before it reads
//! anything and, after replying, invalidates again what was stamped since.
//!
//! [`Known`]: super::nodes::Known
//! [`Node::names`]: super::nodes::Node::names

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use fuser::{INodeNo, Notifier};

use super::lock;
use super::nodes::{Known, NodeTable};
use super::table::{AttributeTable, Changed, Cursor};
use crate::stats::Stats;

/// Time between two looks at the journal while it moves.
pub const INTERVAL: Duration = Duration::from_millis(2);

/// Time between two looks once the journal was still for [`QUIET`]: an
/// idle mount wakes 100 times a second instead of 500 (measured hosted:
/// an idle mount's driver used 1% of a CPU at 2 ms), and a change that
/// ends a quiet spell still shows within about 10 ms.
pub const IDLE_INTERVAL: Duration = Duration::from_millis(10);

/// How long the journal must be still before the watcher slows down.
pub const QUIET: Duration = Duration::from_secs(1);

/// Longest a node with this driver's calls in flight is left unjudged.
pub const MAX_DEFERRAL: Duration = Duration::from_millis(100);

/// Longest the cached pages of a file this driver keeps changing (calls
/// always in flight, as while a program streams into it) are left
/// unjudged when its calls in flight could explain the change; its
/// attributes are invalidated meanwhile.
pub const MAX_PAGE_DEFERRAL: Duration = Duration::from_secs(1);

/// The invalidation epoch shared by the watcher and the request handlers.
#[derive(Debug, Default)]
pub struct Coherence {
    epoch: AtomicU64,
}

impl Coherence {
    /// The epoch now: what a handler notes before it reads anything.
    pub fn mark(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A new epoch for an invalidation about to be made.
    pub fn next(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// Stops the watcher when told or dropped.
#[derive(Debug)]
pub struct WatcherHandle {
    stop: Arc<AtomicBool>,
}

impl WatcherHandle {
    /// Ends the watcher thread (at its next pass).
    pub fn stop(self) {}
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What the watcher works with.
#[derive(Debug, Clone)]
pub struct Watcher {
    /// The driver's nodes.
    pub nodes: Arc<Mutex<NodeTable>>,
    /// The table followed.
    pub table: Arc<dyn AttributeTable>,
    /// The kernel, once the session exists.
    pub notifier: Arc<OnceLock<Notifier>>,
    /// The epoch.
    pub coherence: Arc<Coherence>,
    /// Counters.
    pub stats: Arc<Stats>,
}

/// Starts the watcher.
pub fn spawn(watcher: Watcher) -> WatcherHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let spawned = thread::Builder::new()
        .name("metatab-watch".into())
        .spawn(move || {
            let mut cursor = None;
            let mut slots = Vec::new();
            let mut deferred = Vec::new();
            let mut last_moved = Instant::now();
            while !stopped.load(Ordering::Relaxed) {
                let interval = if last_moved.elapsed() < QUIET {
                    INTERVAL
                } else {
                    IDLE_INTERVAL
                };
                thread::sleep(interval);
                let Some(notifier) = watcher.notifier.get() else {
                    continue;
                };
                match watcher.pass(&mut cursor, &mut slots, &mut deferred, notifier) {
                    Ok(Moved(true)) => last_moved = Instant::now(),
                    Ok(Moved(false)) => {}
                    // The mount is gone.
                    Err(Unmounted) => return,
                }
            }
        });
    if let Err(error) = spawned {
        log::error!("no metadata-table watcher ({error}): cached attributes may go stale");
    }
    WatcherHandle { stop }
}

/// The kernel no longer takes notifications: the mount is gone.
#[derive(Debug)]
pub struct Unmounted;

/// Whether a pass found the journal moved (or had nodes to judge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved(pub bool);

impl Watcher {
    /// One pass: reads the journal since `cursor` and invalidates what
    /// changed; `deferred` holds the nodes put off by an earlier pass.
    pub fn pass(
        &self,
        cursor: &mut Option<Cursor>,
        slots: &mut Vec<u32>,
        deferred: &mut Vec<u64>,
        notifier: &Notifier,
    ) -> Result<Moved, Unmounted> {
        slots.clear();
        let Some(changed) = self.table.changes(*cursor, &mut |slot| slots.push(slot)) else {
            // No usable table now: the connection is lost. What the kernel
            // caches can no longer be vouched for: drop it all once, so
            // that calls reach the driver (and fail with EIO until the
            // storage domain is back). A new table is rescanned whole.
            if cursor.take().is_some() {
                let all = lock(&self.nodes).all_with_file_id();
                for id in all {
                    self.forget_cached(id, notifier)?;
                }
            }
            return Ok(Moved(false));
        };
        let (new_cursor, everything) = match changed {
            Changed::Slots(new_cursor) => (new_cursor, false),
            Changed::Everything(new_cursor) => (new_cursor, true),
        };
        *cursor = Some(new_cursor);
        if !everything && slots.is_empty() && deferred.is_empty() {
            return Ok(Moved(false));
        }
        let mut candidates: Vec<u64> = {
            let mut nodes = lock(&self.nodes);
            nodes.set_slot_count(new_cursor.slot_count);
            if everything {
                nodes.all_with_file_id()
            } else {
                slots.sort_unstable();
                slots.dedup();
                let mut ids = Vec::new();
                for slot in slots.iter() {
                    ids.extend_from_slice(nodes.in_slot(metatab::layout::set_of_slot(*slot)));
                }
                ids
            }
        };
        candidates.append(deferred);
        candidates.sort_unstable();
        candidates.dedup();
        for id in candidates {
            if self.check(id, notifier)? == Checked::Deferred {
                deferred.push(id);
            }
        }
        Ok(Moved(true))
    }

    /// Invalidates everything the kernel caches of node `id`.
    fn forget_cached(&self, id: u64, notifier: &Notifier) -> Result<(), Unmounted> {
        let names = {
            let mut nodes = lock(&self.nodes);
            let Some(node) = nodes.get_mut(id) else {
                return Ok(());
            };
            let epoch = self.coherence.next();
            node.known = None;
            node.own.unjudged = None;
            node.children = None;
            node.stale_at = epoch;
            node.names_stale_at = epoch;
            node.names.drain().collect::<Vec<_>>()
        };
        self.stats.count_invalidation(names.len() as u64);
        deliver(notifier.inval_inode(INodeNo(id), 0, 0))?;
        for name in names {
            deliver(notifier.inval_entry(INodeNo(id), OsStr::from_bytes(&name)))?;
        }
        Ok(())
    }

    /// Compares node `id` with its slot and invalidates what changed.
    fn check(&self, id: u64, notifier: &Notifier) -> Result<Checked, Unmounted> {
        let (file_id, handle, known, unjudged) = {
            let nodes = lock(&self.nodes);
            let Some(node) = nodes.get(id) else {
                return Ok(Checked::Done);
            };
            let Some(file_id) = node.file_id() else {
                return Ok(Checked::Done);
            };
            (
                file_id,
                node.handle.clone(),
                node.known,
                node.own.unjudged.is_some(),
            )
        };
        let current = self
            .table
            .lookup(file_id, &handle)
            .map(|entry| Known::of(&entry));
        if current == known && !unjudged {
            return Ok(Checked::Done);
        }
        let (data_changed, names) = {
            let mut nodes = lock(&self.nodes);
            let Some(node) = nodes.get_mut(id) else {
                return Ok(Checked::Done);
            };
            // A handler may have moved on meanwhile: nothing to tell the
            // kernel then.
            if node.known == current && node.own.unjudged.is_none() {
                return Ok(Checked::Done);
            }
            // The state the kernel's cached pages match.
            let pages = node
                .own
                .unjudged
                .map(|(key, _)| key)
                .or_else(|| node.known.map(|known| known.key()));
            // This driver's own call may be what changed it: judge once
            // its change is recorded. Meanwhile the changes recorded so far
            // are followed, so that however fast the calls come the
            // recorded ones stay few.
            if node.own.in_flight > 0 {
                let since = *node
                    .own
                    .deferred_since
                    .get_or_insert_with(std::time::Instant::now);
                if since.elapsed() < MAX_DEFERRAL {
                    if let Some(from) = pages {
                        let reached = node.own.advance(from);
                        if reached != from || node.own.unjudged.is_some() {
                            let first = node.own.unjudged.map_or(since, |(_, first)| first);
                            node.own.unjudged = Some((reached, first));
                        }
                    }
                    return Ok(Checked::Deferred);
                }
            }
            node.own.deferred_since = None;
            if let (Some(from), Some(to)) = (pages, current) {
                if node.own.explain(from, to.key()) {
                    // Only this driver's changes: the kernel has them.
                    node.known = current;
                    node.own.unjudged = None;
                    return Ok(Checked::Done);
                }
                // Still changing it (a file written in a stream): when the
                // calls in flight may be what the recorded changes lack,
                // the attributes go now and the pages are judged once the
                // calls are recorded, within a bound.
                let since = node
                    .own
                    .unjudged
                    .map_or_else(std::time::Instant::now, |(_, since)| since);
                if node.own.in_flight > 0
                    && node.names.is_empty()
                    && node.own.missing_changes(from, to.key()) <= node.own.in_flight as usize
                    && since.elapsed() < MAX_PAGE_DEFERRAL
                {
                    node.own.unjudged = Some((node.own.advance(from), since));
                    if node.known == current {
                        return Ok(Checked::Deferred);
                    }
                    let epoch = self.coherence.next();
                    node.known = current;
                    node.stale_at = epoch;
                    drop(nodes);
                    self.stats.count_attribute_invalidation();
                    deliver(notifier.inval_inode(INodeNo(id), -1, 0))?;
                    return Ok(Checked::Deferred);
                }
            }
            node.own.transitions.clear();
            node.own.unjudged = None;
            let epoch = self.coherence.next();
            node.known = current;
            node.children = None;
            node.stale_at = epoch;
            let data_changed = match (pages, current) {
                (Some(pages), Some(current)) => !pages.same_data(&current.key()),
                _ => true,
            };
            let names = if node.names.is_empty() {
                Vec::new()
            } else {
                node.names_stale_at = epoch;
                node.names.drain().collect()
            };
            (data_changed, names)
        };
        self.stats.count_invalidation(names.len() as u64);
        // Offset 0 (length 0: to the end) drops cached pages as well; -1
        // only the attributes.
        let offset = if data_changed { 0 } else { -1 };
        deliver(notifier.inval_inode(INodeNo(id), offset, 0))?;
        for name in names {
            deliver(notifier.inval_entry(INodeNo(id), OsStr::from_bytes(&name)))?;
        }
        if file_id == super::io::SNAPSHOT_DIRECTORY_FILE_ID {
            self.forget_snapshots(notifier)?;
        }
        Ok(Checked::Done)
    }

    /// A snapshot was taken or deleted (`.snapshots` changed): the kernel
    /// kept every snapshot object for long, since none ever changes, but
    /// one may be gone now. Drop them all; the kernel asks again, and the
    /// server answers STALE for the deleted snapshot's.
    fn forget_snapshots(&self, notifier: &Notifier) -> Result<(), Unmounted> {
        let snapshot_nodes: Vec<u64> = {
            let nodes = lock(&self.nodes);
            nodes
                .all_with_file_id()
                .into_iter()
                .filter(|&id| {
                    nodes
                        .get(id)
                        .and_then(|node| node.file_id())
                        .is_some_and(super::io::is_snapshot_object)
                })
                .collect()
        };
        for id in snapshot_nodes {
            self.forget_cached(id, notifier)?;
        }
        Ok(())
    }
}

/// What [`Watcher::check`] did with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// Judged (and invalidated if needed).
    Done,
    /// Put off: a call of this driver that may change it is in flight.
    Deferred,
}

/// A notification's outcome: only a kernel that stopped listening is an
/// error (ENOENT: it had forgotten the node or name already).
pub fn deliver(result: std::io::Result<()>) -> Result<(), Unmounted> {
    match result {
        Ok(()) => Ok(()),
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(error) if error.raw_os_error() == Some(libc::ENODEV) => Err(Unmounted),
        Err(error) => {
            log::debug!("invalidation refused: {error}");
            Ok(())
        }
    }
}
