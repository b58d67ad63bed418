//! guest-driver: mounts a storage-domain export (NFSv3) through FUSE.
//!
//! Design: this binary only wires parts together: a transport (TCP with
//! record marking, hosted VRPC rings or Xen grant rings, all behind the
//! [`client::Transport`] trait), MOUNT for the root handle, the NFSv3
//! [`client::NfsClient`], the FUSE file system [`fs::NfsFilesystem`] and the
//! [`stats`] socket. It runs in the foreground and unmounts cleanly on
//! SIGINT or SIGTERM (or when someone runs `fusermount3 -u` / `umount`).
//! `docs/guest-driver.md` is the user's guide.
#![forbid(unsafe_code)]

mod client;
mod errno;
mod fs;
mod mount_helper;
mod stats;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use fuser::{Config, MountOption, SessionACL};
use nfs3::procedures::filesystem::FileSystemArguments;

use client::{Caller, NfsClient, TcpTransport, Transport};

/// Mounts a storage-domain export through FUSE.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mount an export at DIR and serve it until unmounted, SIGINT or
    /// SIGTERM.
    Mount(MountArgs),
    /// Print the counters of the daemon serving DIR.
    Stats {
        /// The mount point.
        dir: PathBuf,
    },
    /// Time NULL calls to the server one after another (the transport's
    /// round trip without FUSE): p50, p99 and the mean.
    Ping {
        #[command(flatten)]
        transport: TransportArgs,
        /// Calls to make.
        #[arg(long, default_value_t = 10_000)]
        count: u32,
    },
}

/// Which server, over which transport.
#[derive(Debug, Args)]
struct TransportArgs {
    /// NFSv3 over TCP to HOST:PORT (MOUNT is asked on the same port first,
    /// then through PORTMAP on HOST:111).
    #[arg(long, value_name = "HOST:PORT", required_unless_present_any = ["hosted", "xen"])]
    tcp: Option<String>,
    /// Hosted VRPC through the storage domain's unix socket.
    #[arg(long, value_name = "SOCKET", conflicts_with_all = ["tcp", "xen"])]
    hosted: Option<PathBuf>,
    /// VRPC over Xen grant tables, to the storage domain dom0 attached
    /// this domain to (`storage-domain-ctl attach`): the device is found
    /// in this domain's `device/vrpc` (waiting up to 2 minutes for one).
    #[arg(long, conflicts_with = "tcp")]
    xen: bool,
    /// With --xen: use the device whose backend is this domain (name or
    /// id), when several are attached.
    #[arg(long, value_name = "NAME|DOMID", requires = "xen")]
    backend: Option<String>,
    /// With --xen: use device N of `device/vrpc`.
    #[arg(long, value_name = "N", requires = "xen")]
    device: Option<u32>,
    /// With --xen: pages of this domain's memory granted to the storage
    /// domain as the data pool (at most what it allows) [default: 480].
    /// Each mount grants the pool, its ring (17 pages) and the pool's
    /// directory; Linux's gntalloc allows 1,024 grants in all unless its
    /// `limit` parameter is raised, so smaller pools let more devices
    /// mount at once. Calls carrying more data than the pool holds are
    /// refused, so keep it at least a few times the 64 KiB of the largest
    /// READ or WRITE.
    #[arg(long, value_name = "N", requires = "xen", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pool_pages: Option<u32>,
    /// The MOUNT service's TCP port, when the server serves MOUNT on
    /// another port than NFS (skips PORTMAP).
    #[arg(long, value_name = "PORT", requires = "tcp")]
    mount_port: Option<u16>,
    /// The export path to mount [default: / ; with --xen: the export the
    /// device is attached to].
    #[arg(long)]
    export: Option<String>,
}

#[derive(Debug, Args)]
struct MountArgs {
    #[command(flatten)]
    transport: TransportArgs,
    /// Never answer GETATTR from the shared metadata table (for
    /// comparison).
    #[arg(long)]
    no_metadata_table: bool,
    /// Seconds the kernel may cache attributes [default: 60 with the
    /// metadata table, whose watcher invalidates what another guest changed
    /// within milliseconds; 0 without: every stat asks the driver].
    #[arg(long, value_name = "SECONDS")]
    attr_timeout: Option<f64>,
    /// Seconds the kernel may cache names [default: 60 with the metadata
    /// table (kept coherent as attributes are); 1 without].
    #[arg(long, value_name = "SECONDS")]
    entry_timeout: Option<f64>,
    /// Seconds the kernel may remember that a name does not exist, with the
    /// metadata table (0: never) [default: 60]. Without the table failed
    /// lookups are never cached.
    #[arg(long, value_name = "SECONDS")]
    negative_timeout: Option<f64>,
    /// Let the server decide every permission (ACCESS on access(2) and
    /// open) instead of the kernel checking mode bits from the attributes.
    #[arg(long)]
    server_permissions: bool,
    /// Let close return without waiting for the server to make the file's
    /// writes durable (they are already visible to every client); only
    /// fsync waits, as on a local file system. A storage-domain crash can
    /// then lose writes of closed files that were never fsynced. The
    /// default over VRPC (--hosted, --xen).
    #[arg(long, conflicts_with = "close_commit")]
    no_close_commit: bool,
    /// Send every write before answering it (no write-behind: the
    /// default over --tcp). Over VRPC a write is answered once queued and
    /// sent by worker threads; close, fsync, read and stat of the file wait
    /// for it.
    #[arg(long)]
    no_write_behind: bool,
    /// Make every close wait until the file's writes are durable (a COMMIT),
    /// the NFS client convention. The default over --tcp.
    #[arg(long)]
    close_commit: bool,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// How far the kernel reads ahead of a program reading a file in
    /// order (the mount's `read_ahead_kb`; FUSE leaves it at 128 KiB, so
    /// a sequential read asks for 128 KiB at a time). Several READs of up
    /// to the read size are then in flight at once, as Linux's NFS client
    /// reads ahead 15 read sizes. Setting it needs root; 0 keeps the
    /// kernel's value.
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = byte_size::parse_size)]
    read_ahead: u64,
    /// A kernel mount flag for the FUSE mount (repeatable): ro, nosuid,
    /// nodev, noexec, noatime, sync, dirsync and their opposites. FUSE
    /// mounts are nosuid and nodev unless suid or dev is given.
    #[arg(long, value_name = "FLAG", value_parser = clap::builder::PossibleValuesParser::new(mount_helper::KERNEL_FLAGS.map(|(flag, _)| flag)))]
    kernel_option: Vec<String>,
    /// The mount's source as /proc/mounts shows it [default:
    /// nfs:TRANSPORT:EXPORT]; mount.guest-driver passes the fstab's first
    /// field.
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
    /// Once the mount is live, point standard output and error at
    /// /dev/null, so whoever started the daemon and reads its output
    /// (mount.guest-driver) sees the end of it; later messages are lost.
    #[arg(long)]
    detach_output: bool,
    /// The mount point.
    dir: PathBuf,
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // Called as /sbin/mount.guest-driver by mount(8).
    if mount_helper::called_as_helper() {
        return mount_helper::run();
    }
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Mount(arguments) => mount(arguments),
        Command::Ping { transport, count } => ping(&transport, count),
        Command::Stats { dir } => {
            // A mount whose server died cannot be resolved through itself:
            // resolve the parent and append the last component.
            let dir = match dir.canonicalize() {
                Ok(dir) => dir,
                Err(_) => {
                    let parent = dir.parent().filter(|parent| !parent.as_os_str().is_empty());
                    let parent = parent
                        .unwrap_or(std::path::Path::new("."))
                        .canonicalize()
                        .with_context(|| format!("{}", dir.display()))?;
                    parent.join(dir.file_name().unwrap_or_default())
                }
            };
            let text = stats::fetch(&dir)
                .with_context(|| format!("no guest-driver serves {}", dir.display()))?;
            print!("{text}");
            Ok(())
        }
    }
}

/// The largest READ or WRITE payload guest-driver sends or asks for.
const MEBIBYTE: u32 = 1024 * 1024;

/// The connection to the server, and where MOUNT is reached.
struct Connection {
    nfs: Arc<dyn Transport>,
    mount: Arc<dyn Transport>,
    source: String,
    /// The shared metadata table, when the transport maps one.
    table: Option<Arc<dyn fs::table::AttributeTable>>,
    /// The export to mount.
    export: String,
    /// Runs after the unmount (the Xen handshake's Closing).
    on_exit: Option<Box<dyn FnOnce()>>,
    /// The largest READ or WRITE payload the transport carries.
    largest_payload: u32,
}

impl TransportArgs {
    fn export(&self) -> String {
        self.export.clone().unwrap_or_else(|| "/".into())
    }
}

fn connect(arguments: &TransportArgs, no_metadata_table: bool) -> anyhow::Result<Connection> {
    if arguments.xen {
        let choice = client::xen::DeviceChoice {
            device: arguments.device,
            backend: arguments.backend.clone(),
            export: arguments.export.clone(),
            pool_pages: arguments.pool_pages,
        };
        let transport = client::xen::XenTransport::connect(&choice)?;
        let table = match (no_metadata_table, transport.has_table()) {
            (false, true) => Some(transport.table()),
            (false, false) => {
                log::warn!("the storage domain shares no metadata table: every GETATTR is an RPC");
                None
            }
            (true, _) => None,
        };
        let source = format!("xen:{}:{}", transport.frontend(), transport.export());
        let export = transport.export().to_string();
        let closing = transport.clone();
        let largest_payload = transport.largest_payload();
        let transport: Arc<dyn Transport> = Arc::new(transport);
        return Ok(Connection {
            nfs: Arc::clone(&transport),
            mount: transport,
            source,
            table,
            export,
            on_exit: Some(Box::new(move || closing.shutdown())),
            largest_payload,
        });
    }
    if let Some(socket) = &arguments.hosted {
        let transport = client::hosted::HostedTransport::connect(socket, &arguments.export())
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let table = match (no_metadata_table, transport.has_table()) {
            (false, true) => Some(transport.table()),
            (false, false) => {
                log::warn!("the server shares no metadata table: every GETATTR is an RPC");
                None
            }
            (true, _) => None,
        };
        if let Err(error) = transport.spawn_supervisor(Duration::from_millis(100)) {
            log::warn!(
                "no connection supervisor ({error}): a dead server is noticed by the next call \
                 and the mount does not reconnect"
            );
        }
        let closing = transport.clone();
        let transport: Arc<dyn Transport> = Arc::new(transport);
        return Ok(Connection {
            nfs: Arc::clone(&transport),
            mount: transport,
            source: format!("hosted:{}:{}", socket.display(), arguments.export()),
            table,
            export: arguments.export(),
            on_exit: Some(Box::new(move || closing.shutdown())),
            largest_payload: MEBIBYTE,
        });
    }
    let Some(address) = &arguments.tcp else {
        bail!("give --tcp HOST:PORT or --hosted SOCKET");
    };
    let (host, socket_address) =
        client::mount::resolve(address).with_context(|| format!("resolving {address}"))?;
    let nfs: Arc<dyn Transport> = Arc::new(
        TcpTransport::connect(socket_address)
            .with_context(|| format!("connecting to {socket_address}"))?,
    );
    let mount: Arc<dyn Transport> = match arguments.mount_port {
        Some(port) => Arc::new(
            TcpTransport::connect((socket_address.ip(), port))
                .with_context(|| format!("connecting to MOUNT on port {port}"))?,
        ),
        None => Arc::clone(&nfs),
    };
    Ok(Connection {
        nfs,
        mount,
        source: format!("{host}:{}", arguments.export()),
        table: None,
        export: arguments.export(),
        on_exit: None,
        largest_payload: MEBIBYTE,
    })
}

/// MNT on the connection's MOUNT transport; if that port does not serve
/// MOUNT (and no port was given), asks PORTMAP for it and tries there.
fn mount_export(
    connection: &mut Connection,
    arguments: &MountArgs,
) -> anyhow::Result<nfs3::FileHandle> {
    let export = connection.export.clone().into_bytes();
    let export = export.as_slice();
    match client::mount::mount(connection.mount.as_ref(), export) {
        Ok(handle) => return Ok(handle),
        Err(client::mount::MountFailure::Rpc(client::ClientError::Reply(failure)))
            if arguments.transport.mount_port.is_none() && arguments.transport.tcp.is_some() =>
        {
            log::info!("MOUNT is not on the NFS port ({failure}); asking PORTMAP");
        }
        Err(error) => return Err(error).context("MOUNT failed"),
    }
    let address = arguments.transport.tcp.as_deref().unwrap_or_default();
    let (host, socket_address) = client::mount::resolve(address)?;
    let port = client::mount::mount_port(&host).context("asking PORTMAP for MOUNT")?;
    connection.mount = Arc::new(TcpTransport::connect((socket_address.ip(), port))?);
    client::mount::mount(connection.mount.as_ref(), export).context("MOUNT failed")
}

fn mount(arguments: MountArgs) -> anyhow::Result<()> {
    let dir = arguments
        .dir
        .canonicalize()
        .with_context(|| format!("mount point {}", arguments.dir.display()))?;
    let mut connection = connect(&arguments.transport, arguments.no_metadata_table)?;
    let root = mount_export(&mut connection, &arguments)?;
    let statistics = Arc::new(stats::Stats::default());
    statistics.count_mount_call();
    let client = Arc::new(NfsClient::new(
        Arc::clone(&connection.nfs),
        Arc::clone(&statistics),
    ));
    let settings = settings(
        &client,
        &root,
        &arguments,
        connection.table.is_some(),
        connection.largest_payload,
    )?;
    log::info!("mount settings: {settings:?}");

    let notifier = Arc::new(OnceLock::new());
    let filesystem = fs::NfsFilesystem::new(
        Arc::clone(&client),
        root,
        settings.clone(),
        Arc::clone(&notifier),
        connection.table.take(),
        Arc::clone(&statistics),
    );
    let source = arguments
        .source
        .clone()
        .unwrap_or_else(|| format!("nfs:{}", connection.source));
    let mut options = vec![
        MountOption::FSName(source),
        // As a kernel option, so /proc/mounts shows `fuse.guest-driver`.
        MountOption::CUSTOM("subtype=guest-driver".into()),
    ];
    if settings.kernel_permissions {
        options.push(MountOption::DefaultPermissions);
    }
    // clap admitted only names of mount_helper::KERNEL_FLAGS.
    options.extend(
        arguments
            .kernel_option
            .iter()
            .filter_map(|flag| mount_helper::kernel_flag(flag)),
    );
    let mut config = Config::default();
    config.mount_options = options;
    config.n_threads = Some(arguments.threads.max(1));
    config.clone_fd = true;
    // Root mounts for everyone (pjdfstest and other users switch ids);
    // others see only their own mount, FUSE's default.
    config.acl = if is_root() {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let session = fuser::Session::new(filesystem, &dir, &config)
        .with_context(|| format!("mounting at {}", dir.display()))?;
    let _ = notifier.set(session.notifier());
    stats::serve(&dir, Arc::clone(&statistics)).context("starting the stats socket")?;
    let background = session.spawn().context("starting the FUSE session")?;
    if arguments.read_ahead > 0 {
        set_read_ahead(&dir, arguments.read_ahead);
    }
    eprintln!(
        "guest-driver: {} mounted at {}",
        connection.source,
        dir.display()
    );
    if arguments.detach_output {
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .context("opening /dev/null")?;
        nix::unistd::dup2_stdout(&null).context("detaching standard output")?;
        nix::unistd::dup2_stderr(&null).context("detaching standard error")?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    while !stop.load(Ordering::Relaxed) && !background.guard.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let unmounted = if background.guard.is_finished() {
        background.join()
    } else {
        background.umount_and_join()
    };
    if let Err(error) =
        client::mount::unmount(connection.mount.as_ref(), connection.export.as_bytes())
    {
        log::warn!("UMNT failed: {error}");
    }
    statistics.count_mount_call();
    if let Some(on_exit) = connection.on_exit.take() {
        on_exit();
    }
    unmounted.with_context(|| format!("unmounting {}", dir.display()))?;
    eprintln!("guest-driver: unmounted {}", dir.display());
    Ok(())
}

/// Sets the read-ahead of the mount at `dir` (its backing device's
/// `read_ahead_kb` in sysfs, named by the mount's device number) to
/// `bytes`. The mount must be live: the `stat` waits for the kernel's
/// FUSE INIT, whose reply would otherwise lower the value again. A
/// failure (not root, no sysfs) leaves the kernel's value and says so.
fn set_read_ahead(dir: &Path, bytes: u64) {
    use std::os::unix::fs::MetadataExt;
    let device = match std::fs::metadata(dir) {
        Ok(found) => found.dev(),
        Err(error) => {
            log::warn!(
                "read-ahead left as it is: cannot stat {}: {error}",
                dir.display()
            );
            return;
        }
    };
    let knob = PathBuf::from(format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        nix::sys::stat::major(device),
        nix::sys::stat::minor(device)
    ));
    let kibibytes = bytes.div_ceil(1024);
    match std::fs::write(&knob, format!("{kibibytes}\n")) {
        Ok(()) => log::info!("read-ahead {kibibytes} KiB ({})", knob.display()),
        Err(error) => log::warn!(
            "read-ahead left at the kernel's value: cannot write {}: {error}",
            knob.display()
        ),
    }
}

fn ping(transport: &TransportArgs, count: u32) -> anyhow::Result<()> {
    let mut connection = connect(transport, true)?;
    let client = NfsClient::new(
        Arc::clone(&connection.nfs),
        Arc::new(stats::Stats::default()),
    );
    let caller = Caller::root();
    let mut times = Vec::with_capacity(count as usize);
    for _ in 0..count.max(1) {
        let started = std::time::Instant::now();
        match client.call(&caller, nfs3::Arguments::Null(())) {
            Ok(nfs3::Results::Null(())) => {}
            Ok(_) => bail!("the server answered NULL with other results"),
            Err(error) => bail!("NULL failed: {error}"),
        }
        times.push(started.elapsed());
    }
    times.sort();
    let at = |fraction: f64| times[((times.len() - 1) as f64 * fraction).round() as usize];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "{} NULL calls to {}: p50 {:.1} us, p99 {:.1} us, mean {:.1} us",
        times.len(),
        connection.source,
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6
    );
    if let Some(on_exit) = connection.on_exit.take() {
        on_exit();
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Sizes from FSINFO and PATHCONF, timeouts from the arguments.
fn settings(
    client: &NfsClient,
    root: &nfs3::FileHandle,
    arguments: &MountArgs,
    coherent: bool,
    largest_payload: u32,
) -> anyhow::Result<fs::Settings> {
    let caller = Caller::root();
    let information = client
        .file_system_information(
            &caller,
            FileSystemArguments {
                object: root.clone(),
            },
        )
        .context("FSINFO")?
        .into_result()
        .map_err(|status| anyhow::anyhow!("FSINFO: {status}"))?;
    let name_maximum = client
        .path_configuration(
            &caller,
            FileSystemArguments {
                object: root.clone(),
            },
        )
        .ok()
        .and_then(|result| result.into_result().ok())
        .map_or(255, |configuration| configuration.name_maximum)
        // Linux's NAME_MAX: programs size name buffers by statfs's answer.
        .min(255);
    let clamp = |maximum: u32| maximum.min(largest_payload).clamp(4096, MEBIBYTE);
    let seconds = |value: f64| Duration::from_secs_f64(value.max(0.0));
    // With a metadata table the kernel caches for long and the watcher
    // keeps it coherent. Without one, attributes are not cached (each stat
    // is a GETATTR) and names for a second: as safe as NFS's defaults.
    let (attributes, names, negative) = if coherent {
        (60.0, 60.0, 60.0)
    } else {
        (0.0, 1.0, 0.0)
    };
    Ok(fs::Settings {
        attribute_timeout: seconds(arguments.attr_timeout.unwrap_or(attributes)),
        entry_timeout: seconds(arguments.entry_timeout.unwrap_or(names)),
        negative_timeout: seconds(arguments.negative_timeout.unwrap_or(negative)),
        read_size: clamp(information.read_maximum),
        write_size: clamp(information.write_maximum),
        name_maximum,
        kernel_permissions: !arguments.server_permissions,
        write_behind: (arguments.transport.hosted.is_some() || arguments.transport.xen)
            && !arguments.no_write_behind,
        // Over VRPC a close behaves as on a local file system (fsync makes
        // data durable); over TCP as NFS clients do.
        commit_on_close: if arguments.transport.hosted.is_some()
            || arguments.transport.xen
            || arguments.no_close_commit
        {
            arguments.close_commit
        } else {
            true
        },
    })
}
