//! `serve`: the storage domain's NFS server as a Linux process.
//!
//! One TCP port serves NFSv3, MOUNT v3 and PORTMAP v2 (PORTMAP answers with
//! this port). Each connection has a reader thread that reassembles
//! records; calls go to a small pool of workers that run them on the one
//! [`Server`] under a mutex and write replies back as they finish, so one
//! client's many calls in flight (the Linux client pipelines on one
//! connection) and many clients share commits: a worker that needs its
//! call durable commits only if no other commit covered it meanwhile.
//!
//! A background thread commits every `--commit-interval` seconds so
//! UNSTABLE writes do not stay volatile for long. SIGINT and SIGTERM stop
//! accepting, let running calls finish, commit, and exit 0; `fsck` on the
//! image then reports it clean.

use crate::fstools::{check_image_size, format_image};
use crate::image::{random_bytes, ImageFile, SystemClock};
use anyhow::Context;
use byte_size::{parse_size, ByteSize};
use nfs_server::{ClientAddress, ExportConfig, Server, ServerConfig, MAX_RECORD_SIZE};
use sdfs::{CachedDevice, FaultControl, FaultDevice, FaultPlan, Volume};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;
use vfs::FileSystem;
use xdr::{Pushed, RecordReassembler};

/// The served file system: the image behind the data cache
/// (`--data-cache`), injecting faults only with `--fault`.
pub type HostedServer = Server<Volume<CachedDevice<FaultDevice<ImageFile>>>>;

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The disk image; created and formatted (at --size) when missing.
    #[arg(long)]
    pub disk: PathBuf,
    /// Size of a newly created image, e.g. 1G, 512MiB, 10GB (at least
    /// 256K). K, M, G, T and KiB, MiB, GiB, TiB are powers of 1024; KB,
    /// MB, GB, TB are powers of 1000.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub size: u64,
    /// Address and port for NFS, MOUNT and PORTMAP (port 0 picks a free
    /// one; the ready line says which).
    #[arg(long, default_value = "127.0.0.1:2049")]
    pub listen: SocketAddr,
    /// An export, e.g. `/data,path=/srv/data,ro,allow=10.0.0.0/8`
    /// (repeatable; see docs/operations.md). Default: the whole file
    /// system as `/`, read-write, root squashed, any client.
    #[arg(long = "export", value_name = "EXPORT")]
    pub exports: Vec<String>,
    /// A file of exports, one per line in the --export syntax; `#` starts
    /// a comment.
    #[arg(long, value_name = "FILE")]
    pub exports_file: Option<PathBuf>,
    /// Seconds between background commits of unstable writes.
    #[arg(long, default_value_t = 5)]
    pub commit_interval: u64,
    /// Inode cache size, e.g. 64M, 256MiB (units as for --size: K..T and
    /// KiB..TiB are powers of 1024, KB..TB powers of 1000).
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub cache_size: u64,
    /// Data block cache in front of the image, with read-ahead for
    /// sequential reads (units as for --size; 0 turns it off). Its room
    /// is reserved at start and filled as blocks are read.
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    pub data_cache: u64,
    /// Worker threads running calls.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Also serve guest-driver over VRPC (shared-memory rings) on this
    /// unix socket, with a metadata table per export.
    #[arg(long, value_name = "PATH")]
    pub vrpc_socket: Option<PathBuf>,
    /// Permissions of the VRPC socket, in octal: who may connect at all
    /// (connecting needs write permission). Which connected users may
    /// mount an export is then up to its allow= options (uid:N, gid:N).
    #[arg(long, value_name = "MODE", default_value = "660", value_parser = parse_mode)]
    pub vrpc_socket_mode: u32,
    /// Group owning the VRPC socket (a name or a number) [default: the
    /// server's group].
    #[arg(long, value_name = "GROUP")]
    pub vrpc_socket_group: Option<String>,
    /// Slots in each export's metadata table (a power of two; 128 bytes
    /// each).
    #[arg(long, default_value_t = 65_536)]
    pub metatab_slots: u32,
    /// For tests only: make the disk fail as SPEC says once the server is
    /// ready, e.g. `flush=3`, `write=12`, `tear=5`, `write=1%,seed=7`,
    /// `after=1000` (see docs/reliability.md). Off by default.
    #[arg(long, value_name = "SPEC", value_parser = parse_fault)]
    pub fault: Option<FaultPlan>,
    /// For tests and demonstrations: every flush of the disk first sleeps
    /// this many milliseconds, as a slow disk would (what goes on while a
    /// commit flushes, and group commit at work, become visible). 0, the
    /// default, adds nothing.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub flush_delay_ms: u64,
    /// For tests and demonstrations: every read of the disk first sleeps
    /// this many milliseconds, as a slow disk would. 0, the default, adds
    /// nothing.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub read_delay_ms: u64,
}

/// Delays that make the image a slow disk (`--read-delay-ms`,
/// `--flush-delay-ms`); zero adds nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlowDisk {
    /// Before every read.
    pub read: Duration,
    /// Before every flush.
    pub flush: Duration,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("{text:?} is not a permission mode in octal (such as 660 or 600)"))
}

fn parse_fault(spec: &str) -> Result<FaultPlan, String> {
    FaultPlan::parse(spec).map_err(|error| error.to_string())
}

fn report_fault(fault: &sdfs::fault::InjectedFault) {
    log::warn!("{fault}");
}

/// Everything a worker needs for one call.
struct Call {
    record: Vec<u8>,
    client: ClientAddress,
    connection: Arc<Connection>,
}

/// The writing half of a client connection.
struct Connection {
    stream: Mutex<TcpStream>,
    peer: SocketAddr,
    /// Records of answered calls, for the reader to build the next ones
    /// in (see [`Connection::recycle`]).
    spare_records: Mutex<Vec<Vec<u8>>>,
}

/// Call records of at least this capacity are kept for the next calls.
const SPARE_RECORD_MIN: usize = 64 << 10;

/// Most call records a connection keeps.
const SPARE_RECORDS: usize = 2;

impl Connection {
    /// Keeps `record`, a call answered, for a later call's record: a 1 MiB
    /// WRITE then allocates nothing (the server maps blocks of 128 KiB or
    /// more on their own, see [`fix_mmap_threshold`]).
    fn recycle(&self, record: Vec<u8>) {
        if record.capacity() >= SPARE_RECORD_MIN {
            let mut spares = lock(&self.spare_records);
            if spares.len() < SPARE_RECORDS {
                spares.push(record);
            }
        }
    }

    /// A kept record, if any.
    fn spare_record(&self) -> Option<Vec<u8>> {
        lock(&self.spare_records).pop()
    }

    /// Send one reply as a single-fragment record: the mark and the reply
    /// in one vectored write (no copy of the reply).
    fn send(&self, reply: &[u8]) {
        let Ok(length) = u32::try_from(reply.len()) else {
            log::warn!(
                "{}: a reply of {} bytes cannot be framed",
                self.peer,
                reply.len()
            );
            return;
        };
        let mark = (length | 0x8000_0000).to_be_bytes();
        let mut stream = lock(&self.stream);
        if let Err(error) = write_all_vectored(&mut stream, &mark, reply) {
            log::debug!("{}: reply not sent: {error}", self.peer);
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// `head` then `body`, with as few system calls as the socket allows.
fn write_all_vectored(stream: &mut TcpStream, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let mut written = 0;
    let total = head.len() + body.len();
    while written < total {
        let result = if written < head.len() {
            stream.write_vectored(&[
                std::io::IoSlice::new(&head[written..]),
                std::io::IoSlice::new(body),
            ])
        } else {
            stream.write(&body[written - head.len()..])
        };
        match result {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(count) => written += count,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The server lock; a poisoned lock (a panicking worker) still guards a
/// consistent server, since every call applies fully or not at all.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Parse the exports of the command line and the exports file.
///
/// # Errors
/// The first bad export line, with its source.
pub fn exports(args: &ServeArgs) -> anyhow::Result<Vec<ExportConfig>> {
    let mut exports = Vec::new();
    for line in &args.exports {
        exports.push(ExportConfig::parse(line).with_context(|| format!("--export {line:?}"))?);
    }
    if let Some(path) = &args.exports_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            exports.push(
                ExportConfig::parse(line)
                    .with_context(|| format!("{}:{}", path.display(), number + 1))?,
            );
        }
    }
    if exports.is_empty() {
        exports.push(ExportConfig::whole_file_system());
    }
    Ok(exports)
}

/// A disk image this start created: removed again unless the server got
/// as far as serving, so a failed first start leaves nothing behind.
struct NewImage<'a> {
    path: &'a Path,
    keep: bool,
}

impl Drop for NewImage<'_> {
    fn drop(&mut self) {
        if !self.keep {
            log::info!("removing {}: the server did not start", self.path.display());
            let _ = std::fs::remove_file(self.path);
        }
    }
}

/// Open the image and build the server.
///
/// # Errors
/// An image that cannot be opened, a damaged file system, or an unusable
/// export.
pub fn open_server(
    disk: &Path,
    cache_bytes: u64,
    data_cache_bytes: u64,
    exports: Vec<ExportConfig>,
    port: u16,
    fault: Option<FaultPlan>,
    slow: SlowDisk,
) -> anyhow::Result<(
    HostedServer,
    std::sync::Arc<FaultControl>,
    Option<crate::cold_reads::ColdReads>,
)> {
    let mut device =
        ImageFile::open(disk).with_context(|| format!("cannot open {}", disk.display()))?;
    device.set_delays(slow.read, slow.flush);
    // Reads without the server's lock need a cache to fill, and would
    // pass by the fault plan.
    let cold_reads = if fault.is_none() && data_cache_bytes > 0 {
        match device.reader() {
            Ok((file, direct)) => Some(crate::cold_reads::ColdReads::new(file, direct, slow.read)),
            Err(error) => {
                log::warn!("cannot duplicate the image descriptor for reads: {error}");
                None
            }
        }
    } else {
        None
    };
    let device = FaultDevice::new(device, fault.unwrap_or_default()).with_report(report_fault);
    let control = device.control();
    let mut device = CachedDevice::new(device, data_cache_bytes);
    device.keep_read_buffer();
    if cold_reads.is_some() {
        // The read workers read a stream's windows without the lock, and
        // the cache keeps each window in the buffer it was read into.
        device.park_streams(true);
        device.keep_fills();
    }
    let mut volume = Volume::open(
        device,
        Box::new(SystemClock),
        usize::try_from(cache_bytes).unwrap_or(usize::MAX),
    )
    .map_err(|error| {
        anyhow::anyhow!(
            "{}: {error} (run `storage-domain-hosted fsck {}` for details)",
            disk.display(),
            disk.display()
        )
    })?;
    for export in &exports {
        nfs_server::ensure_directory(&mut volume, &export.path).map_err(|error| {
            anyhow::anyhow!(
                "export {}: cannot use {}: {error}",
                export.name,
                export.path
            )
        })?;
    }
    if volume.applied_sequence() > volume.durable_sequence() {
        log::info!("created the missing export directories");
        volume
            .commit()
            .map_err(|error| anyhow::anyhow!("{}: commit failed: {error}", disk.display()))?;
    }
    let uuid = volume.uuid();
    let mut file_system_id = [0u8; 8];
    file_system_id.copy_from_slice(&uuid[..8]);
    let config = ServerConfig {
        exports,
        handle_secret: volume.handle_secret(),
        write_verifier: random_bytes()?,
        file_system_id: u64::from_be_bytes(file_system_id),
        port,
    };
    let server = Server::new(volume, config).map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok((server, control, cold_reads))
}

/// `serve`.
///
/// # Errors
/// Startup failures (image, exports, address in use); once serving, only a
/// failed final commit.
pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    fix_mmap_threshold();
    let exports = exports(&args)?;
    let listener = TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let mut new_image = None;
    if std::fs::symlink_metadata(&args.disk).is_err() {
        check_image_size(args.size)?;
        log::info!(
            "{} does not exist: formatting a new {} image",
            args.disk.display(),
            ByteSize(args.size)
        );
        format_image(&args.disk, args.size, false)?;
        new_image = Some(NewImage {
            path: &args.disk,
            keep: false,
        });
    }
    let (mut server, faults, cold_reads) = open_server(
        &args.disk,
        args.cache_size,
        args.data_cache,
        exports,
        address.port(),
        args.fault.clone(),
        SlowDisk {
            read: Duration::from_millis(args.read_delay_ms),
            flush: Duration::from_millis(args.flush_delay_ms),
        },
    )?;
    let names = server.export_names().join(" ");
    let tables = match &args.vrpc_socket {
        Some(_) => Some(crate::vrpc_serve::create_tables(
            &mut server,
            args.metatab_slots,
        )?),
        None => None,
    };
    let server = Arc::new(Mutex::new(server));
    let activity = Arc::new(crate::status::Activity::new(cold_reads));
    let canonical_disk = args.disk.canonicalize()?;
    crate::status::serve(&canonical_disk, Arc::clone(&activity), Arc::clone(&server))
        .context("starting the stats socket")?;
    crate::control::serve(&canonical_disk, Arc::clone(&server))
        .context("starting the control socket")?;
    let stopping = Arc::new(AtomicBool::new(false));
    install_signal_handlers(&stopping, address)?;
    let vrpc = match (&args.vrpc_socket, tables) {
        (Some(socket), Some(tables)) => Some(crate::vrpc_serve::start(
            socket,
            crate::vrpc_serve::SocketAccess::resolve(
                args.vrpc_socket_mode,
                args.vrpc_socket_group.as_deref(),
            )?,
            Arc::clone(&server),
            tables,
            Arc::clone(&stopping),
            Arc::clone(&activity),
        )?),
        _ => None,
    };

    let (calls, queue) = mpsc::channel::<Call>();
    let queue = Arc::new(Mutex::new(queue));
    let mut workers = Vec::new();
    // Sent READ records come back from the workers (`worker`): one each.
    lock(&server).keep_reply_records(args.workers.max(1));
    for index in 0..args.workers.max(1) {
        let queue = Arc::clone(&queue);
        let server = Arc::clone(&server);
        let activity = Arc::clone(&activity);
        workers.push(
            thread::Builder::new()
                .name(format!("nfs-worker-{index}"))
                .spawn(move || worker(&queue, &server, &activity))?,
        );
    }
    let committer = {
        let server = Arc::clone(&server);
        let stopping = Arc::clone(&stopping);
        let activity = Arc::clone(&activity);
        let interval = Duration::from_secs(args.commit_interval.max(1));
        thread::Builder::new()
            .name("committer".into())
            .spawn(move || committer(&server, &stopping, interval, &activity))?
    };

    let vrpc_note = match &args.vrpc_socket {
        Some(socket) => format!(", VRPC on {}", socket.display()),
        None => String::new(),
    };
    if let Some(new_image) = &mut new_image {
        new_image.keep = true;
    }
    if let Some(plan) = &args.fault {
        log::warn!("fault injection armed: the disk fails as `{plan}` says (for tests only)");
        faults.arm();
    }
    log::info!(
        "ready: NFSv3, MOUNT v3 and PORTMAP v2 on {address}{vrpc_note}, disk {}, exports: {names}",
        args.disk.display()
    );
    let mut readers = Vec::new();
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                log::warn!("accept failed: {error}");
                continue;
            }
        };
        let calls = calls.clone();
        let stopping = Arc::clone(&stopping);
        let activity = Arc::clone(&activity);
        match thread::Builder::new()
            .name("nfs-connection".into())
            .spawn(move || {
                let _open = activity.tcp_connection();
                reader(stream, &calls, &stopping)
            }) {
            Ok(handle) => readers.push(handle),
            Err(error) => log::warn!("cannot start a connection thread: {error}"),
        }
        readers.retain(|handle| !handle.is_finished());
    }
    log::info!("stopping: finishing calls in flight");
    drop(calls);
    for handle in readers {
        let _ = handle.join();
    }
    for handle in workers {
        let _ = handle.join();
    }
    let _ = committer.join();
    if let Some(vrpc) = vrpc {
        let _ = vrpc.join();
    }
    let mut server = lock(&server);
    server
        .sync()
        .map_err(|error| anyhow::anyhow!("final commit failed: {error}"))?;
    let statistics = server.statistics();
    log::info!(
        "stopped cleanly: {} NFS calls, {} MOUNT, {} PORTMAP, {} rejected, {} replayed, {} commits",
        statistics.nfs_calls.iter().sum::<u64>(),
        statistics.mount_calls,
        statistics.portmap_calls,
        statistics.rejected,
        statistics.duplicates,
        statistics.commits
    );
    Ok(ExitCode::SUCCESS)
}

/// SIGINT/SIGTERM: set `stopping` and wake the accept loop by connecting
/// to it.
fn install_signal_handlers(stopping: &Arc<AtomicBool>, address: SocketAddr) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let stopping = Arc::clone(stopping);
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                log::info!("signal {signal}: shutting down");
                stopping.store(true, Ordering::SeqCst);
                let _ = TcpStream::connect_timeout(&wake_address(address), Duration::from_secs(1));
            }
        })?;
    Ok(())
}

/// Where to connect to reach a listener bound to `address` (a wildcard
/// address is reached through loopback).
fn wake_address(address: SocketAddr) -> SocketAddr {
    let mut target = address;
    if target.ip().is_unspecified() {
        target.set_ip(match address {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    target
}

/// One connection: reassemble records and queue them as calls.
fn reader(stream: TcpStream, calls: &mpsc::Sender<Call>, stopping: &AtomicBool) {
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(_) => return,
    };
    if stopping.load(Ordering::SeqCst) {
        return;
    }
    let _ = stream.set_nodelay(true);
    // Lets the reader notice shutdown while a client is idle.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let connection = Arc::new(Connection {
        stream: Mutex::new(writer),
        peer,
        spare_records: Mutex::new(Vec::new()),
    });
    let client = ClientAddress::Ip(peer.ip());
    log::debug!("{peer}: connected");
    let mut stream = stream;
    let mut reassembler = RecordReassembler::new(MAX_RECORD_SIZE);
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        if stopping.load(Ordering::SeqCst) && reassembler.is_between_records() {
            break;
        }
        let read = match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                log::debug!("{peer}: {error}");
                break;
            }
        };
        let mut input = &buffer[..read];
        while !input.is_empty() {
            match reassembler.push(input) {
                Ok(Pushed { consumed, record }) => {
                    input = &input[consumed..];
                    if let Some(record) = record {
                        let call = Call {
                            record,
                            client,
                            connection: Arc::clone(&connection),
                        };
                        if calls.send(call).is_err() {
                            return;
                        }
                        if let Some(spare) = connection.spare_record() {
                            reassembler.recycle(spare);
                        }
                    }
                }
                Err(error) => {
                    log::warn!("{peer}: {error}; closing the connection");
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
    log::debug!("{peer}: disconnected");
}

fn worker(
    queue: &Mutex<mpsc::Receiver<Call>>,
    server: &Mutex<HostedServer>,
    activity: &crate::status::Activity,
) {
    loop {
        let call = match lock(queue).recv() {
            Ok(call) => call,
            Err(_) => return,
        };
        let reply = activity.handle(
            server,
            &call.record,
            call.client,
            nfs_server::locks::NO_SESSION,
        );
        let Some(reply) = reply else {
            log::debug!(
                "{}: dropped a record that is not a call",
                call.connection.peer
            );
            continue;
        };
        let bytes = match reply.durable_at() {
            Some(sequence) => {
                activity.make_durable(server, sequence);
                lock(server).settle(reply)
            }
            None => reply.into_bytes_unchecked_durability(),
        };
        call.connection.send(&bytes);
        call.connection.recycle(call.record);
        if bytes.capacity() >= SPARE_RECORD_MIN {
            // A READ's record: built in again by a later READ.
            lock(server).recycle_reply(bytes);
        }
    }
}

fn committer(
    server: &Mutex<HostedServer>,
    stopping: &AtomicBool,
    interval: Duration,
    activity: &crate::status::Activity,
) {
    let tick = Duration::from_millis(200);
    let mut waited = Duration::ZERO;
    let mut failure_reported = false;
    while !stopping.load(Ordering::SeqCst) {
        thread::sleep(tick);
        if !failure_reported && lock(server).filesystem().is_failed() {
            log::error!(
                "the disk failed: refusing every change (NFS3ERR_IO) until restarted; \
                 committed data can still be read"
            );
            failure_reported = true;
        }
        waited += tick;
        if waited < interval {
            continue;
        }
        waited = Duration::ZERO;
        if failure_reported {
            // Every commit is refused now; said once above.
            continue;
        }
        if let Err(error) = activity.commit_all(server) {
            log::error!("background commit failed: {error}");
        }
    }
}

/// Blocks of at least this many bytes are mapped on their own by glibc's
/// malloc and unmapped when freed.
const MMAP_THRESHOLD: usize = 128 << 10;

/// Fix glibc's mmap threshold at [`MMAP_THRESHOLD`] (its default
/// starting value) before any thread starts.
///
/// Left dynamic, glibc raises the threshold to the size of each mapped
/// block freed (up to 32 MiB), after which large blocks come from the
/// per-thread arenas between small long-lived ones (inode cache entries,
/// index nodes) that keep the arenas from shrinking. In a soak the large
/// blocks were the cold reads' buffers (132 KiB to 2 MiB, four in the 15
/// seconds traced, grown and handed between threads and the data cache), and
/// the server grew from 123 to 203 MiB in 30 minutes with 40-45 MiB of
/// it allocated, the rest free memory in 16 arenas; fixed at 128 KiB,
/// the threshold keeps it flat (`docs/reliability.md`, "Memory"): large
/// blocks are mapped and returned whole. A fresh mapped block costs a
/// page fault per page touched, so the per-call records of 1 MiB
/// WRITEs and READs are kept and reused instead (`Connection::recycle`,
/// `Server::keep_reply_records`, the VRPC backend's spare records, the
/// volume's write scratch).
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let threshold = libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes malloc's parameters; called before
        // the server starts any thread.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) } != 1 {
            log::warn!("could not fix malloc's mmap threshold: memory may grow with fragmentation");
        }
    }
}
