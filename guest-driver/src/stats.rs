//! Counters (RPCs per procedure, metadata-table hits and misses) and the
//! socket that `guest-driver stats DIR` reads them from.
//!
//! Design: counters are relaxed atomics bumped on the request path. They
//! are served as text lines (`name value`) on a Linux abstract unix socket
//! named after the canonical mount point, `guest-driver-stats:<path>`, so
//! nothing is added to the mounted tree and no file needs cleaning up when
//! the daemon dies. One connection gets one snapshot.

use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use nfs3::Procedure;

/// Every counter of one mount.
#[derive(Debug)]
pub struct Stats {
    calls: [AtomicU64; 22],
    table_hits: AtomicU64,
    table_misses: AtomicU64,
    mount_calls: AtomicU64,
    invalidated_nodes: AtomicU64,
    invalidated_names: AtomicU64,
    /// Attribute invalidations of files this driver was still changing
    /// (their pages judged later).
    invalidated_attributes: AtomicU64,
    local_misses: AtomicU64,
    local_hits: AtomicU64,
    listings: AtomicU64,
    deferred_setattrs: AtomicU64,
    lock_calls: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            calls: std::array::from_fn(|_| AtomicU64::new(0)),
            table_hits: AtomicU64::new(0),
            table_misses: AtomicU64::new(0),
            mount_calls: AtomicU64::new(0),
            invalidated_nodes: AtomicU64::new(0),
            invalidated_names: AtomicU64::new(0),
            invalidated_attributes: AtomicU64::new(0),
            local_misses: AtomicU64::new(0),
            local_hits: AtomicU64::new(0),
            listings: AtomicU64::new(0),
            deferred_setattrs: AtomicU64::new(0),
            lock_calls: AtomicU64::new(0),
        }
    }
}

impl Stats {
    /// Counts one call of `procedure`.
    pub fn count_call(&self, procedure: Procedure) {
        if let Some(counter) = self.calls.get(procedure.to_u32() as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Calls of `procedure` so far.
    pub fn calls(&self, procedure: Procedure) -> u64 {
        self.calls
            .get(procedure.to_u32() as usize)
            .map_or(0, |counter| counter.load(Ordering::Relaxed))
    }

    /// Counts a GETATTR answered from the metadata table.
    pub fn count_table_hit(&self) {
        self.table_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a GETATTR the metadata table could not answer.
    pub fn count_table_miss(&self) {
        self.table_misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the watcher invalidating one node and `names` cached names in
    /// it.
    pub fn count_invalidation(&self, names: u64) {
        self.invalidated_nodes.fetch_add(1, Ordering::Relaxed);
        self.invalidated_names.fetch_add(names, Ordering::Relaxed);
    }

    /// Counts the watcher invalidating the attributes only of a file this
    /// driver is still changing (its pages are judged once its calls are
    /// recorded).
    pub fn count_attribute_invalidation(&self) {
        self.invalidated_attributes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a lookup answered "not found" without a call.
    pub fn count_local_miss(&self) {
        self.local_misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a lookup answered with the file without a call (a listing
    /// named it, the table gave its attributes).
    pub fn count_local_hit(&self) {
        self.local_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a directory listed to answer lookups.
    pub fn count_listing(&self) {
        self.listings.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a setattr answered at once and sent later (merged with the
    /// file's other changes where possible).
    pub fn count_deferred_setattr(&self) {
        self.deferred_setattrs.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an NLM (lock) call.
    pub fn count_lock_call(&self) {
        self.lock_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a MOUNT protocol call.
    pub fn count_mount_call(&self) {
        self.mount_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as `name value` lines, procedures by their RFC names.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let mut total = 0;
        for procedure in Procedure::ALL {
            let count = self.calls(*procedure);
            total += count;
            text.push_str(&format!(
                "rpc.{} {count}\n",
                nfs3::procedure_name(*procedure)
            ));
        }
        text.push_str(&format!("rpc.total {total}\n"));
        text.push_str(&format!(
            "mount.calls {}\n",
            self.mount_calls.load(Ordering::Relaxed)
        ));
        text.push_str(&format!(
            "metatab.hits {}\nmetatab.misses {}\n",
            self.table_hits.load(Ordering::Relaxed),
            self.table_misses.load(Ordering::Relaxed)
        ));
        text.push_str(&format!(
            "watch.nodes {}\nwatch.names {}\nwatch.attributes {}\nlookup.local_misses {}\n",
            self.invalidated_nodes.load(Ordering::Relaxed),
            self.invalidated_names.load(Ordering::Relaxed),
            self.invalidated_attributes.load(Ordering::Relaxed),
            self.local_misses.load(Ordering::Relaxed)
        ));
        text.push_str(&format!(
            "lookup.local_hits {}\nlookup.listings {}\n",
            self.local_hits.load(Ordering::Relaxed),
            self.listings.load(Ordering::Relaxed)
        ));
        text.push_str(&format!(
            "setattr.deferred {}\nnlm.calls {}\n",
            self.deferred_setattrs.load(Ordering::Relaxed),
            self.lock_calls.load(Ordering::Relaxed)
        ));
        text
    }
}

/// The abstract socket name for a mount point (made canonical by the
/// caller).
fn socket_address(mount_point: &Path) -> io::Result<SocketAddr> {
    let name = format!("guest-driver-stats:{}", mount_point.display());
    SocketAddr::from_abstract_name(name.as_bytes())
}

/// Serves `stats` on the mount point's socket from a background thread.
///
/// # Errors
/// When the socket cannot be bound (another daemon serves this path).
pub fn serve(mount_point: &Path, stats: std::sync::Arc<Stats>) -> io::Result<()> {
    let listener = UnixListener::bind_addr(&socket_address(mount_point)?)?;
    thread::Builder::new().name("stats".into()).spawn(move || {
        for connection in listener.incoming() {
            match connection {
                Ok(mut stream) => {
                    let _ = stream.write_all(stats.render().as_bytes());
                }
                Err(error) => log::warn!("stats socket: {error}"),
            }
        }
    })?;
    Ok(())
}

/// Reads the counters of the daemon mounted at `mount_point`.
///
/// # Errors
/// When no daemon serves that mount point.
pub fn fetch(mount_point: &Path) -> io::Result<String> {
    let mut stream = UnixStream::connect_addr(&socket_address(mount_point)?)?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counters_are_served_on_the_mount_points_socket() {
        let stats = Arc::new(Stats::default());
        stats.count_call(Procedure::Lookup);
        stats.count_call(Procedure::Lookup);
        stats.count_call(Procedure::Commit);
        stats.count_table_hit();
        let path = Path::new("/nonexistent/stats-test").join(std::process::id().to_string());
        serve(&path, Arc::clone(&stats)).unwrap();
        let text = fetch(&path).unwrap();
        assert!(text.contains("rpc.LOOKUP 2\n"), "{text}");
        assert!(text.contains("rpc.COMMIT 1\n"), "{text}");
        assert!(text.contains("rpc.total 3\n"), "{text}");
        assert!(text.contains("metatab.hits 1\n"), "{text}");
        assert!(fetch(Path::new("/nonexistent/none")).is_err());
    }
}
