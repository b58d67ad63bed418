//! Keeps long attribute caching coherent: a thread that watches the
//! metadata table's change counters of every file the kernel holds and
//! invalidates the kernel's attributes and pages of those that changed.
//!
//! Design (DESIGN section 5, "beyond the paper"): with `--attr-timeout` above
//! zero and a metadata table, the kernel answers `stat` from its own cache
//! (no FUSE request at all), and this watcher bounds how stale that cache
//! can be to about one [`INTERVAL`], for files whose slot the table holds;
//! for a file whose slot another file took (the table is a direct-mapped
//! cache) the attribute timeout is the bound. Without the table, or with
//! the default timeout of zero, no watcher runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use fuser::{INodeNo, Notifier};

use super::lock;
use super::nodes::NodeTable;
use super::table::AttributeTable;

/// Time between two passes over the watched nodes.
pub const INTERVAL: Duration = Duration::from_millis(5);

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

/// Starts the watcher over `nodes`.
pub fn spawn(
    nodes: Arc<Mutex<NodeTable>>,
    table: Arc<dyn AttributeTable>,
    notifier: Arc<OnceLock<Notifier>>,
) -> WatcherHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let spawned = thread::Builder::new()
        .name("metatab-watch".into())
        .spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                thread::sleep(INTERVAL);
                let Some(notifier) = notifier.get() else {
                    continue;
                };
                if pass(&nodes, table.as_ref(), notifier).is_err() {
                    // The mount is gone.
                    return;
                }
            }
        });
    if let Err(error) = spawned {
        log::error!("no metadata-table watcher ({error}): cached attributes may go stale");
    }
    WatcherHandle { stop }
}

/// One pass: invalidates every node whose slot's change counter moved.
/// `Err` when the kernel no longer takes notifications.
fn pass(
    nodes: &Mutex<NodeTable>,
    table: &dyn AttributeTable,
    notifier: &Notifier,
) -> Result<(), ()> {
    let watched = lock(nodes).watched();
    for node in watched {
        let current = table
            .lookup(node.file_id, &node.handle)
            .map(|entry| entry.change);
        let stale = match (node.table_change, current) {
            (known, Some(current)) => known != Some(current),
            // The slot holds another file now: the change cannot be seen;
            // drop what the kernel has once, then rely on the timeout.
            (Some(_), None) => true,
            (None, None) => false,
        };
        if !stale {
            continue;
        }
        if let Some(entry) = lock(nodes).get_mut(node.id) {
            entry.table_change = current;
            // Cached pages may be stale too: the next open decides again.
            entry.data_version = None;
        }
        match notifier.inval_inode(INodeNo(node.id), 0, 0) {
            Ok(()) => {}
            // The kernel forgot the node meanwhile.
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(error) if error.raw_os_error() == Some(libc::ENODEV) => return Err(()),
            Err(error) => log::debug!("invalidating node {}: {error}", node.id),
        }
    }
    Ok(())
}
