//! `serve --vrpc-socket`: guest-driver connections over shared-memory rings,
//! and the per-export metadata tables they map read-only.
//!
//! Each guest connection gets a thread. It takes every request the guest
//! has published, runs each on the server at once, answers those that need
//! no commit straight away, and holds the rest while the connection's
//! settler thread runs one group commit that covers them all (shared with
//! other guests and TCP clients through the server's durable sequence); the
//! guest's later calls are answered meanwhile, and the held replies when
//! that commit ends.
//!
//! Who may connect: the socket is created with `--vrpc-socket-mode`
//! (default 0660) and `--vrpc-socket-group` (default the server's group),
//! so only those users can connect at all. Each connection's credentials
//! (`SO_PEERCRED`: user and group id, recorded by the kernel at connect)
//! become its [`ClientAddress::Local`], which the export's `allow=` filter
//! (`local`, `uid:N`, `gid:N`) admits or refuses, at the handshake and on
//! every call.
//!
//! The metadata tables: one memfd per export, created at start with a fresh
//! boot id, sealed so guests can map it only read-only; the server's
//! attribute observer (`nfs_server::table::TablePublisher`, shared with the
//! Xen storage domain) writes every attribute it hands out or changes into
//! the table of the export the file handle belongs to.

use crate::serve::{lock, HostedServer};
use anyhow::Context;
use nfs_server::table::TablePublisher;
use nfs_server::{ClientAddress, ExportId, LocalPeer, ReplyRecord};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;
use vrpc_hosted::{
    Connection, ConnectionError, HostedReplyPages, Listener, MappedRegion, PendingConnection,
    Request,
};

/// The metadata tables of every export, shared by the observer (which
/// writes them) and the listener (which hands them to guests).
pub struct Tables {
    by_name: HashMap<String, Arc<MappedRegion>>,
}

/// A table refused a write (cannot happen for a region `create_tables`
/// sized; logged, never fatal: the table is a cache).
fn report_table_error(export: ExportId, file_id: u64, error: metatab::TableError) {
    log::warn!(
        "metadata table of export {:#x}: cannot update inode {file_id}: {error}",
        export.0
    );
}

/// Create a table per export and install the observer that fills them.
///
/// # Errors
/// When a memfd cannot be made, or `slots` is not a power of two.
pub fn create_tables(server: &mut HostedServer, slots: u32) -> anyhow::Result<Tables> {
    let boot_id = u64::from_be_bytes(crate::image::random_bytes()?);
    let mut by_name = HashMap::new();
    let mut publisher = TablePublisher::new().with_error_report(report_table_error);
    for (config, id) in server.exports() {
        let (region, writer) = vrpc_hosted::create_metadata_table(slots, boot_id)
            .with_context(|| format!("metadata table for export {}", config.name))?;
        by_name.insert(config.name.clone(), region);
        publisher.insert(id, writer);
    }
    server.set_observer(Box::new(publisher));
    Ok(Tables { by_name })
}

/// Who may connect to the socket: its mode and group.
#[derive(Debug, Clone, Copy)]
pub struct SocketAccess {
    mode: u32,
    group: Option<nix::unistd::Gid>,
}

impl SocketAccess {
    /// `mode` (permission bits) and `group` (a name or a number; `None`:
    /// the server's own).
    ///
    /// # Errors
    /// No such group.
    pub fn resolve(mode: u32, group: Option<&str>) -> anyhow::Result<Self> {
        let group = match group {
            None => None,
            Some(text) => Some(match text.parse::<u32>() {
                Ok(number) => nix::unistd::Gid::from_raw(number),
                Err(_) => {
                    nix::unistd::Group::from_name(text)
                        .with_context(|| format!("looking up group {text}"))?
                        .ok_or_else(|| {
                            anyhow::anyhow!("--vrpc-socket-group: no group named {text}")
                        })?
                        .gid
                }
            }),
        };
        Ok(Self { mode, group })
    }
}

/// Binds the socket so that nobody outside `access` can ever connect: it
/// is created owner-only (umask), then given its group and mode.
fn bind(socket: &Path, access: SocketAccess) -> anyhow::Result<Listener> {
    use nix::sys::stat::{umask, Mode};
    use std::os::unix::fs::PermissionsExt;
    let previous = umask(Mode::from_bits_truncate(0o177));
    let bound = Listener::bind(socket);
    umask(previous);
    let listener = bound.with_context(|| format!("cannot listen on {}", socket.display()))?;
    if let Some(group) = access.group {
        std::os::unix::fs::chown(socket, None, Some(group.as_raw()))
            .with_context(|| format!("cannot give {} to group {group}", socket.display()))?;
    }
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(access.mode))
        .with_context(|| format!("cannot set the mode of {}", socket.display()))?;
    Ok(listener)
}

/// Accept guest-driver connections on `socket` until `stopping`.
///
/// # Errors
/// When the socket cannot be bound or given its group and mode.
pub fn start(
    socket: &Path,
    access: SocketAccess,
    server: Arc<Mutex<HostedServer>>,
    tables: Tables,
    stopping: Arc<AtomicBool>,
    activity: Arc<crate::status::Activity>,
) -> anyhow::Result<thread::JoinHandle<()>> {
    let listener = bind(socket, access)?;
    listener.socket().set_nonblocking(true)?;
    let tables = Arc::new(tables);
    let socket = socket.to_path_buf();
    Ok(thread::Builder::new()
        .name("vrpc-listener".into())
        .spawn(move || {
            let mut connections: Vec<thread::JoinHandle<()>> = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok(incoming) => {
                        let server = Arc::clone(&server);
                        let tables = Arc::clone(&tables);
                        let stopping = Arc::clone(&stopping);
                        let activity = Arc::clone(&activity);
                        let spawned = thread::Builder::new().name("vrpc-connection".into()).spawn(
                            move || match incoming.handshake(Duration::from_secs(10)) {
                                Ok(pending) => {
                                    admit(pending, &server, &tables, &stopping, &activity)
                                }
                                Err(error) => log::warn!("vrpc: handshake failed: {error}"),
                            },
                        );
                        match spawned {
                            Ok(handle) => connections.push(handle),
                            Err(error) => log::warn!("vrpc: cannot start a thread: {error}"),
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(100));
                    }
                    Err(error) => {
                        log::warn!("vrpc: accept failed: {error}");
                        thread::sleep(Duration::from_millis(100));
                    }
                }
                connections.retain(|handle| !handle.is_finished());
            }
            for handle in connections {
                let _ = handle.join();
            }
            let _ = std::fs::remove_file(&socket);
        })?)
}

/// Accept or refuse a guest's export, then serve it.
fn admit(
    pending: PendingConnection,
    server: &Mutex<HostedServer>,
    tables: &Tables,
    stopping: &AtomicBool,
    activity: &crate::status::Activity,
) {
    let name = String::from_utf8_lossy(&nfs_server::config::normalize_path(
        pending.export().as_bytes(),
    ))
    .into_owned();
    static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let credentials = pending.peer();
    // Its own identity for the duplicate request cache (xids are numbered
    // per connection), with the credentials the export filters on.
    let peer = LocalPeer {
        connection: CONNECTIONS.fetch_add(1, Ordering::Relaxed),
        uid: credentials.uid,
        gid: credentials.gid,
    };
    let client = ClientAddress::Local(peer);
    let (exists, admitted) = lock(server)
        .exports()
        .filter(|(config, _)| config.name == name)
        .fold((false, false), |(_, admitted), (config, _)| {
            (true, admitted || config.admits(&client))
        });
    let table = tables.by_name.get(&name);
    if !exists || table.is_none() {
        log::warn!(
            "vrpc: pid {} asked for export {name:?}, which does not exist",
            credentials.pid
        );
        let _ = pending.refuse();
        return;
    }
    if !admitted {
        log::warn!(
            "vrpc: refused pid {} (uid {}, gid {}): export {name} does not admit it (allow=)",
            credentials.pid,
            credentials.uid,
            credentials.gid
        );
        let _ = pending.refuse_peer();
        return;
    }
    match pending.accept(table.map(|table| &**table), nfs_server::MAX_RECORD_SIZE) {
        Ok(connection) => {
            log::info!(
                "vrpc: guest attached to export {name} (pid {}, uid {}, gid {})",
                credentials.pid,
                credentials.uid,
                credentials.gid
            );
            let _open = activity.vrpc_connection(&name);
            // The guest's locks last as long as its connection.
            let session = lock(server).begin_session();
            match serve(connection, client, session, server, stopping, activity) {
                Ok(()) => log::info!("vrpc: guest detached from export {name}"),
                Err(error) => log::warn!("vrpc: dropped a guest of export {name}: {error}"),
            }
            lock(server).end_session(session);
        }
        Err(error) => log::warn!("vrpc: cannot attach a guest: {error}"),
    }
}

/// Threads per guest connection that finish calls whose blocks are read
/// from the disk (see [`serve`]).
const READ_WORKERS: usize = 3;

/// A call whose cold blocks a read worker reads.
struct ColdCall {
    request: Request,
    cold: crate::cold_reads::Cold,
    /// The request's reply pages, which a READ's data goes straight into.
    pages: Option<HostedReplyPages>,
}

/// Serve one guest until it goes, breaks the protocol, or the server stops.
///
/// The connection thread takes the guest's requests and runs each at once
/// under the server's lock, without waiting for the disk
/// ([`crate::status::Activity::try_now`]). Two kinds of call are finished
/// by helper threads, so that the guest's other calls are answered
/// meanwhile:
/// - a call that only reads and needs blocks the data cache does not hold
///   goes to one of [`READ_WORKERS`] read workers, which read them without
///   the lock and answer it (`cold_reads.rs`); several of a guest's cold
///   reads overlap. Only when the guest has nothing else published or
///   with the workers is such a call finished on the connection thread
///   (the same reads without the lock, but no hand-over);
/// - replies that promise durability are held (their requests keep their
///   ring slots) while the connection's settler runs the group commit that
///   covers them, so a guest's `fsync` does not stall its own reads.
///
/// Helpers hand their results back through channels and wake the
/// connection thread ([`Connection::waker`]), which sends every reply.
fn serve(
    mut connection: Connection,
    client: ClientAddress,
    session: u64,
    server: &Mutex<HostedServer>,
    stopping: &AtomicBool,
    activity: &crate::status::Activity,
) -> Result<(), ConnectionError> {
    let waker = connection.waker()?;
    let (ask, asked) = mpsc::channel::<u64>();
    let (ended, settled) = mpsc::channel::<u64>();
    let (cold_calls, cold_queue) = mpsc::channel::<ColdCall>();
    let cold_queue = Mutex::new(cold_queue);
    let (read, reads_done) = mpsc::channel::<(Request, Option<nfs_server::Reply>)>();
    thread::scope(|scope| {
        let settler_waker = waker.clone();
        let settler = thread::Builder::new()
            .name("vrpc-settler".into())
            .spawn_scoped(scope, move || {
                // Each commit covers the highest sequence asked for so far.
                while let Ok(mut sequence) = asked.recv() {
                    while let Ok(later) = asked.try_recv() {
                        sequence = sequence.max(later);
                    }
                    activity.make_durable(server, sequence);
                    if ended.send(sequence).is_err() {
                        return;
                    }
                    settler_waker.wake();
                }
            });
        if let Err(error) = settler {
            return Err(ConnectionError::Io(error));
        }
        for _ in 0..READ_WORKERS {
            let queue = &cold_queue;
            let read = read.clone();
            let waker = waker.clone();
            let worker = thread::Builder::new()
                .name("vrpc-reader".into())
                .spawn_scoped(scope, move || loop {
                    let next = lock(queue).recv();
                    let Ok(ColdCall {
                        request,
                        cold,
                        pages,
                    }) = next
                    else {
                        return;
                    };
                    let reply = activity.finish_cold(
                        server,
                        request.record(),
                        client,
                        session,
                        cold,
                        pages.as_ref(),
                    );
                    if read.send((request, reply)).is_err() {
                        return;
                    }
                    waker.wake();
                });
            if let Err(error) = worker {
                return Err(ConnectionError::Io(error));
            }
        }
        drop(read);
        let mut guest = Guest {
            connection: &mut connection,
            client,
            session,
            server,
            activity,
            held: Vec::new(),
            asked: 0,
            settled: 0,
            reading: 0,
        };
        let result = guest.serve(stopping, &ask, &settled, &cold_calls, &reads_done);
        // The helpers end when their channels go; what the settler was
        // asked for last is still committed (the guest may be gone, the
        // changes are not).
        drop(ask);
        drop(cold_calls);
        result
    })
}

/// Answers `request` with `record`, whose bulk data the server may have
/// put into the request's reply pages already ([`ReplyRecord::placed`]).
fn send(
    connection: &mut Connection,
    request: Request,
    record: ReplyRecord,
) -> Result<(), ConnectionError> {
    match record.segment {
        Some(segment) if record.placed > 0 => {
            connection.respond_placed(request, &record.bytes, segment.start, record.placed)?;
        }
        segment => {
            connection.respond(request, &record.bytes, segment)?;
        }
    }
    Ok(())
}

/// One guest's connection, as its connection thread sees it.
struct Guest<'a> {
    connection: &'a mut Connection,
    client: ClientAddress,
    session: u64,
    server: &'a Mutex<HostedServer>,
    activity: &'a crate::status::Activity,
    /// Replies held until a commit covers them: request, reply, sequence.
    held: Vec<(Request, nfs_server::Reply, u64)>,
    /// The highest sequence the settler was asked to make durable.
    asked: u64,
    /// The highest sequence a commit the settler ran has covered (or
    /// failed to).
    settled: u64,
    /// Calls with the read workers.
    reading: usize,
}

impl Guest<'_> {
    fn serve(
        &mut self,
        stopping: &AtomicBool,
        ask: &mpsc::Sender<u64>,
        settled: &mpsc::Receiver<u64>,
        cold_calls: &mpsc::Sender<ColdCall>,
        reads_done: &mpsc::Receiver<(Request, Option<nfs_server::Reply>)>,
    ) -> Result<(), ConnectionError> {
        loop {
            while let Ok(sequence) = settled.try_recv() {
                self.settled = self.settled.max(sequence);
            }
            self.answer_settled()?;
            while let Ok((request, reply)) = reads_done.try_recv() {
                self.reading -= 1;
                self.answer(request, reply)?;
            }
            self.ask_for_commit(ask)?;
            if stopping.load(Ordering::SeqCst) {
                return self.finish_before_stopping(settled, reads_done, ask);
            }
            let first = match self
                .connection
                .next_request(Some(Duration::from_millis(500)))
            {
                Ok(Some(request)) => request,
                Ok(None) => continue,
                Err(ConnectionError::Closed) => return Ok(()),
                Err(error) => return Err(error),
            };
            let mut next = Some(first);
            while let Some(request) = next.take() {
                let pages =
                    (request.reply_capacity() > 0).then(|| self.connection.reply_pages(&request));
                let tried = self.activity.try_now(
                    self.server,
                    request.record(),
                    self.client,
                    self.session,
                    pages.as_ref(),
                );
                match tried {
                    crate::cold_reads::Tried::Answered(reply) => self.answer(request, reply)?,
                    crate::cold_reads::Tried::Cold(cold) => {
                        next = self.connection.try_next_request()?;
                        let call = ColdCall {
                            request,
                            cold,
                            pages,
                        };
                        if next.is_none() && self.reading == 0 {
                            // Nothing else of this guest's to answer
                            // meanwhile: finished here, without the
                            // hand-over's cost (a reader at queue depth 1).
                            self.finish_here(call)?;
                        } else {
                            self.reading += 1;
                            if let Err(mpsc::SendError(call)) = cold_calls.send(call) {
                                // No read worker left.
                                self.reading -= 1;
                                self.finish_here(call)?;
                            }
                        }
                        if next.is_some() {
                            continue;
                        }
                    }
                }
                next = self.connection.try_next_request()?;
            }
        }
    }

    /// Finishes a cold call on the connection thread.
    fn finish_here(&mut self, call: ColdCall) -> Result<(), ConnectionError> {
        let reply = self.activity.finish_cold(
            self.server,
            call.request.record(),
            self.client,
            self.session,
            call.cold,
            call.pages.as_ref(),
        );
        self.answer(call.request, reply)
    }

    /// Sends `reply`, or holds it until a commit covers it.
    fn answer(
        &mut self,
        request: Request,
        reply: Option<nfs_server::Reply>,
    ) -> Result<(), ConnectionError> {
        match reply {
            None => self.connection.respond_no_reply(request)?,
            Some(reply) => match reply.durable_at() {
                Some(sequence) if reply.needs_commit() => {
                    // Its record (a WRITE's data) is read: free it for the
                    // next call while the reply waits for the commit.
                    let mut request = request;
                    self.connection.recycle_record(&mut request);
                    self.held.push((request, reply, sequence));
                }
                _ => send(
                    self.connection,
                    request,
                    reply.into_record_unchecked_durability(),
                )?,
            },
        }
        Ok(())
    }

    /// One commit for everything this guest has held (and whatever other
    /// guests applied before it began).
    fn ask_for_commit(&mut self, ask: &mpsc::Sender<u64>) -> Result<(), ConnectionError> {
        let wanted = self
            .held
            .iter()
            .map(|(_, _, sequence)| *sequence)
            .max()
            .unwrap_or(0);
        if wanted > self.asked {
            self.asked = wanted;
            if ask.send(wanted).is_err() {
                return Err(ConnectionError::Io(std::io::Error::other(
                    "the connection's settler thread ended",
                )));
            }
        }
        Ok(())
    }

    /// Answers the held replies a commit has covered (or failed to cover).
    fn answer_settled(&mut self) -> Result<(), ConnectionError> {
        let settled = self.settled;
        if !self
            .held
            .iter()
            .any(|(_, _, sequence)| *sequence <= settled)
        {
            return Ok(());
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .held
            .drain(..)
            .partition(|(_, _, sequence)| *sequence <= settled);
        self.held = waiting;
        let records: Vec<_> = {
            let server = lock(self.server);
            ready
                .into_iter()
                .map(|(request, reply, _)| (request, server.settle_record(reply)))
                .collect()
        };
        for (request, record) in records {
            send(self.connection, request, record)?;
        }
        Ok(())
    }

    /// The server stops: answer the calls still with the helpers, as they
    /// end (a minute at most).
    fn finish_before_stopping(
        &mut self,
        settled: &mpsc::Receiver<u64>,
        reads_done: &mpsc::Receiver<(Request, Option<nfs_server::Reply>)>,
        ask: &mpsc::Sender<u64>,
    ) -> Result<(), ConnectionError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while (self.reading > 0 || !self.held.is_empty()) && std::time::Instant::now() < deadline {
            if let Ok((request, reply)) = reads_done.recv_timeout(Duration::from_millis(10)) {
                self.reading -= 1;
                self.answer(request, reply)?;
            }
            self.ask_for_commit(ask)?;
            while let Ok(sequence) = settled.try_recv() {
                self.settled = self.settled.max(sequence);
            }
            self.answer_settled()?;
        }
        Ok(())
    }
}
