//! `stats`: the figures of a running server, read over a control socket.
//!
//! Design: as guest-driver's `stats` (its counters are served on an
//! abstract unix socket named after the mount point), the server serves
//! text lines `name value` on the Linux abstract socket
//! `storage-domain-stats:<canonical image path>`, so `storage-domain-hosted
//! stats IMAGE` finds the server of that image, nothing is added to the
//! file system, and nothing is left to clean up when the server dies. One
//! connection gets one snapshot.

use crate::group_commit::GroupCommit;
use crate::serve::{lock, HostedServer};
use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vfs::FileSystem;

/// What the transports share besides the server: their counters, and the
/// group commit ([`Activity::make_durable`]).
#[derive(Debug, Default)]
pub struct Activity {
    group: GroupCommit,
    tcp_open: AtomicU64,
    tcp_total: AtomicU64,
    vrpc_open: AtomicU64,
    vrpc_total: AtomicU64,
    /// Guests attached over VRPC, by export name.
    guests: Mutex<std::collections::BTreeMap<String, u64>>,
    commit_nanoseconds: AtomicU64,
    commit_maximum_nanoseconds: AtomicU64,
    timed_commits: AtomicU64,
    /// Reads of cold blocks without the server's lock (`None`: every call
    /// reads waiting).
    cold_reads: Option<crate::cold_reads::ColdReads>,
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub struct ConnectionCount<'a> {
    activity: &'a Activity,
    export: Option<String>,
}

impl Drop for ConnectionCount<'_> {
    fn drop(&mut self) {
        match &self.export {
            None => self.activity.tcp_open.fetch_sub(1, Ordering::Relaxed),
            Some(export) => {
                let mut guests = lock(&self.activity.guests);
                if let Some(count) = guests.get_mut(export) {
                    *count -= 1;
                    if *count == 0 {
                        guests.remove(export);
                    }
                }
                self.activity.vrpc_open.fetch_sub(1, Ordering::Relaxed)
            }
        };
    }
}

impl Activity {
    /// No connections yet; read-only calls read cold blocks through
    /// `cold_reads` when given.
    pub fn new(cold_reads: Option<crate::cold_reads::ColdReads>) -> Self {
        Self {
            cold_reads,
            ..Self::default()
        }
    }

    /// Runs a call: see [`crate::cold_reads::ColdReads::handle`].
    pub fn handle(
        &self,
        server: &Mutex<HostedServer>,
        record: &[u8],
        client: nfs_server::ClientAddress,
        session: u64,
    ) -> Option<nfs_server::Reply> {
        match &self.cold_reads {
            Some(cold_reads) => cold_reads.handle(server, record, client, session),
            None => lock(server).handle_in_session(record, client, session),
        }
    }

    /// The first try of a call: see [`crate::cold_reads::ColdReads::try_now`]
    /// (without cold reads every call is answered, waiting). A READ's data
    /// goes into `pages` when given ([`crate::cold_reads::direct_reads`]).
    pub fn try_now(
        &self,
        server: &Mutex<HostedServer>,
        record: &[u8],
        client: nfs_server::ClientAddress,
        session: u64,
        pages: Option<&vrpc_hosted::HostedReplyPages>,
    ) -> crate::cold_reads::Tried {
        match &self.cold_reads {
            Some(cold_reads) => cold_reads.try_now(server, record, client, session, pages),
            None => {
                let mut server = lock(server);
                crate::cold_reads::direct_reads(&mut server, pages);
                crate::cold_reads::Tried::Answered(
                    server.handle_in_session(record, client, session),
                )
            }
        }
    }

    /// Ends a call [`Activity::try_now`] found cold: see
    /// [`crate::cold_reads::ColdReads::finish`].
    pub fn finish_cold(
        &self,
        server: &Mutex<HostedServer>,
        record: &[u8],
        client: nfs_server::ClientAddress,
        session: u64,
        cold: crate::cold_reads::Cold,
        pages: Option<&vrpc_hosted::HostedReplyPages>,
    ) -> Option<nfs_server::Reply> {
        match &self.cold_reads {
            Some(cold_reads) => cold_reads.finish(server, record, client, session, cold, pages),
            None => {
                let mut server = lock(server);
                crate::cold_reads::direct_reads(&mut server, pages);
                server.handle_in_session(record, client, session)
            }
        }
    }

    /// A TCP client connected.
    pub fn tcp_connection(&self) -> ConnectionCount<'_> {
        self.tcp_open.fetch_add(1, Ordering::Relaxed);
        self.tcp_total.fetch_add(1, Ordering::Relaxed);
        ConnectionCount {
            activity: self,
            export: None,
        }
    }

    /// A guest attached to `export` over VRPC.
    pub fn vrpc_connection(&self, export: &str) -> ConnectionCount<'_> {
        self.vrpc_open.fetch_add(1, Ordering::Relaxed);
        self.vrpc_total.fetch_add(1, Ordering::Relaxed);
        *lock(&self.guests).entry(export.to_owned()).or_default() += 1;
        ConnectionCount {
            activity: self,
            export: Some(export.to_owned()),
        }
    }

    /// Make every operation up to `sequence` durable (see
    /// [`GroupCommit::make_durable`]); counts the time of a commit this
    /// thread ran. Returns whether `sequence` is durable.
    pub fn make_durable(&self, server: &Mutex<HostedServer>, sequence: u64) -> bool {
        self.group
            .make_durable(server, sequence, |started| self.count_commit(started))
    }

    /// Commit everything applied so far (the background committer), as
    /// [`Activity::make_durable`] does.
    ///
    /// # Errors
    /// [`vfs::FsError::Io`] when the commit failed.
    pub fn commit_all(&self, server: &Mutex<HostedServer>) -> Result<(), vfs::FsError> {
        let sequence = lock(server).applied_sequence();
        if self.make_durable(server, sequence) {
            Ok(())
        } else {
            Err(vfs::FsError::Io)
        }
    }

    fn count_commit(&self, started: Instant) {
        let nanoseconds = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.commit_nanoseconds
            .fetch_add(nanoseconds, Ordering::Relaxed);
        self.commit_maximum_nanoseconds
            .fetch_max(nanoseconds, Ordering::Relaxed);
        self.timed_commits.fetch_add(1, Ordering::Relaxed);
    }

    /// The text `stats` prints.
    pub fn render(&self, server: &Mutex<HostedServer>) -> String {
        let mut server = lock(server);
        let statistics = server.statistics();
        let (hits, misses) = server.filesystem().cache_statistics();
        let data = server.filesystem().device().counters();
        let locks_held = server.locks().len();
        let space = server.filesystem().statfs().ok();
        let snapshots = server.filesystem().snapshots().len();
        drop(server);
        let mut text = String::new();
        let mut line = |name: &str, value: String| {
            text.push_str(name);
            text.push(' ');
            text.push_str(&value);
            text.push('\n');
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        line("connections.tcp", load(&self.tcp_open).to_string());
        line("connections.tcp.total", load(&self.tcp_total).to_string());
        line("connections.vrpc", load(&self.vrpc_open).to_string());
        line("connections.vrpc.total", load(&self.vrpc_total).to_string());
        for (export, count) in lock(&self.guests).iter() {
            line(&format!("guests.{export}"), count.to_string());
        }
        // Every procedure, named and ordered as guest-driver's `stats`,
        // as the Xen storage domain publishes them too.
        let mut calls = String::new();
        statistics.render(locks_held, &mut calls);
        for entry in calls.lines() {
            if let Some((name, value)) = entry.split_once(' ') {
                line(name, value.to_owned());
            }
        }
        let timed = load(&self.timed_commits);
        let mean = load(&self.commit_nanoseconds)
            .checked_div(timed)
            .unwrap_or(0);
        line("commit.mean_us", format!("{:.1}", mean as f64 / 1e3));
        line(
            "commit.max_us",
            format!("{:.1}", load(&self.commit_maximum_nanoseconds) as f64 / 1e3),
        );
        line("snapshots", snapshots.to_string());
        line("cache.hits", hits.to_string());
        line("cache.misses", misses.to_string());
        let ratio = match hits + misses {
            0 => 0.0,
            lookups => hits as f64 / lookups as f64,
        };
        line("cache.hit_ratio", format!("{ratio:.3}"));
        line("data_cache.hits", data.hits.to_string());
        line("data_cache.misses", data.misses.to_string());
        line("data_cache.read_ahead", data.read_ahead.to_string());
        let ratio = match data.hits + data.misses {
            0 => 0.0,
            blocks => data.hits as f64 / blocks as f64,
        };
        line("data_cache.hit_ratio", format!("{ratio:.3}"));
        let cold = self
            .cold_reads
            .as_ref()
            .map(crate::cold_reads::ColdReads::counters)
            .unwrap_or_default();
        line("disk.parked_calls", cold.parked_calls.to_string());
        line("disk.waited_calls", cold.waited_calls.to_string());
        line("disk.blocks_read_unlocked", cold.blocks_read.to_string());
        line("disk.fill_waits", cold.fill_waits.to_string());
        if let Some(space) = space {
            let block = u64::from(space.block_size);
            line(
                "space.total_bytes",
                (space.total_blocks * block).to_string(),
            );
            line(
                "space.used_bytes",
                ((space.total_blocks - space.free_blocks.min(space.total_blocks)) * block)
                    .to_string(),
            );
            line("space.free_bytes", (space.free_blocks * block).to_string());
            line(
                "inodes.used",
                (space.total_inodes - space.free_inodes.min(space.total_inodes)).to_string(),
            );
        }
        text
    }
}

fn socket_address(image: &Path) -> io::Result<SocketAddr> {
    let mut name = b"storage-domain-stats:".to_vec();
    name.extend_from_slice(image.as_os_str().as_encoded_bytes());
    SocketAddr::from_abstract_name(name)
}

/// Serve `activity` for the server of `image` (canonical path) until the
/// process exits.
///
/// # Errors
/// When the socket cannot be bound (another server of the same image).
pub fn serve(
    image: &Path,
    activity: Arc<Activity>,
    server: Arc<Mutex<HostedServer>>,
) -> io::Result<()> {
    let listener = UnixListener::bind_addr(&socket_address(image)?)?;
    std::thread::Builder::new()
        .name("stats".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.write_all(activity.render(&server).as_bytes());
            }
        })?;
    Ok(())
}

/// The figures of the server serving `image`.
///
/// # Errors
/// When no server of `image` runs here.
pub fn fetch(image: &Path) -> io::Result<String> {
    let mut stream = UnixStream::connect_addr(&socket_address(image)?)?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}
