//! The systems under test and their sessions (servers, mounts, teardown).
//!
//! A [`Session`] is one system brought up on fresh data: for the hosted
//! server a new image, for the ext4-backed systems a new directory on the
//! bench's loop-mounted ext4. [`Session::make_cold`] restarts every
//! process the system has and drops the kernel's caches, keeping the data;
//! [`Session::stop`] tears everything down and discards the data.

use super::cleanup::{self, Guard, ManagedProcess, Resource};
use anyhow::{bail, Context};
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server or a mount may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemKind {
    /// (a) The loop-mounted ext4 directly: the limit.
    Local,
    /// (b) guest-driver over hosted VRPC with the metadata table.
    VrpcTable,
    /// (c) guest-driver over hosted VRPC, table turned off.
    VrpcNoTable,
    /// (d) guest-driver over TCP to storage-domain-hosted: "standard NFS".
    TcpHosted,
    /// (e) guest-driver over TCP to nfs-ganesha (FSAL VFS on the ext4).
    Ganesha,
    /// (f) bindfs over a directory of the ext4: a plain FUSE passthrough.
    Bindfs,
}

impl SystemKind {
    /// Every system, in the order.
    pub const ALL: [SystemKind; 6] = [
        SystemKind::Local,
        SystemKind::VrpcTable,
        SystemKind::VrpcNoTable,
        SystemKind::TcpHosted,
        SystemKind::Ganesha,
        SystemKind::Bindfs,
    ];

    /// The letter the issue and the doc use.
    pub fn letter(self) -> char {
        match self {
            SystemKind::Local => 'a',
            SystemKind::VrpcTable => 'b',
            SystemKind::VrpcNoTable => 'c',
            SystemKind::TcpHosted => 'd',
            SystemKind::Ganesha => 'e',
            SystemKind::Bindfs => 'f',
        }
    }

    /// A short key for JSON, logs and `--systems`.
    pub fn key(self) -> &'static str {
        match self {
            SystemKind::Local => "local",
            SystemKind::VrpcTable => "vrpc",
            SystemKind::VrpcNoTable => "vrpc-no-table",
            SystemKind::TcpHosted => "tcp",
            SystemKind::Ganesha => "ganesha",
            SystemKind::Bindfs => "bindfs",
        }
    }

    /// A label for tables and the chart.
    pub fn label(self) -> &'static str {
        match self {
            SystemKind::Local => "local ext4",
            SystemKind::VrpcTable => "VRPC + table",
            SystemKind::VrpcNoTable => "VRPC, no table",
            SystemKind::TcpHosted => "TCP, our server",
            SystemKind::Ganesha => "TCP, nfs-ganesha",
            SystemKind::Bindfs => "bindfs",
        }
    }

    /// Parse a letter or a key.
    pub fn parse(text: &str) -> Option<SystemKind> {
        SystemKind::ALL
            .into_iter()
            .find(|kind| text == kind.key() || text.chars().eq([kind.letter()]))
    }

    /// Whether the system mounts through guest-driver (and has counters).
    pub fn uses_guest_driver(self) -> bool {
        match self {
            SystemKind::VrpcTable
            | SystemKind::VrpcNoTable
            | SystemKind::TcpHosted
            | SystemKind::Ganesha => true,
            SystemKind::Local | SystemKind::Bindfs => false,
        }
    }
}

/// The two binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `storage-domain-hosted`.
    pub hosted: PathBuf,
    /// `guest-driver`.
    pub guest_driver: PathBuf,
}

/// What every session shares: the work directory and the ext4 mount.
#[derive(Debug)]
pub struct Environment {
    /// Images, mount points, logs.
    pub work: PathBuf,
    /// Where the bench's ext4 image is mounted.
    pub ext4: PathBuf,
    /// The binaries under test.
    pub binaries: Binaries,
    /// Size of the hosted server's image.
    pub image_size: String,
    /// Extra arguments for every `guest-driver mount`.
    pub guest_driver_args: Vec<String>,
    _ext4_mount: Guard,
    _loop_device: Guard,
    log_counter: std::cell::Cell<u32>,
}

impl Environment {
    /// Create and loop-mount a fresh ext4 image of `ext4_size` under `work`.
    ///
    /// # Errors
    /// When a tool fails.
    pub fn new(
        work: &Path,
        binaries: Binaries,
        ext4_size: &str,
        image_size: &str,
    ) -> anyhow::Result<Environment> {
        for directory in ["mnt", "logs", "ext4"] {
            std::fs::create_dir_all(work.join(directory))?;
        }
        let ext4 = work.join("ext4");
        if cleanup::is_mounted(&ext4) {
            bail!(
                "{} is mounted already (another bench running, or a crashed one: umount it)",
                ext4.display()
            );
        }
        let image = work.join("ext4.img");
        let _ = std::fs::remove_file(&image);
        run(Command::new("truncate")
            .args(["--size", ext4_size])
            .arg(&image))?;
        run(Command::new("mkfs.ext4")
            .args(["-F", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&image))?;
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output()
            .context("cannot run losetup")?;
        if !output.status.success() {
            bail!(
                "losetup --find --show {} failed: {}",
                image.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let device = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        let loop_device = cleanup::register(Resource::LoopDevice(device.clone()));
        let ext4_mount = cleanup::register(Resource::Mount(ext4.clone()));
        run(Command::new("mount").arg(&device).arg(&ext4))?;
        Ok(Environment {
            work: work.to_owned(),
            ext4,
            binaries,
            image_size: image_size.to_owned(),
            guest_driver_args: Vec::new(),
            // Fields drop in declaration order: unmount before detaching.
            _ext4_mount: ext4_mount,
            _loop_device: loop_device,
            log_counter: std::cell::Cell::new(0),
        })
    }

    /// A fresh, numbered log file name under `logs/`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        let number = self.log_counter.get();
        self.log_counter.set(number + 1);
        self.work
            .join("logs")
            .join(format!("{number:04}-{name}.log"))
    }

    /// A fresh log file for a process's output.
    fn log_file(&self, name: &str) -> anyhow::Result<(PathBuf, File)> {
        let path = self.log_path(name);
        let file = File::create(&path).with_context(|| format!("{}", path.display()))?;
        Ok((path, file))
    }
}

/// Why `kind` cannot run on this machine with these binaries, if so.
pub fn unavailable(kind: SystemKind, binaries: &Binaries) -> Option<String> {
    let help = |program: &Path, args: &[&str]| -> String {
        Command::new(program)
            .args(args)
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default()
    };
    match kind {
        SystemKind::Local => None,
        SystemKind::VrpcTable | SystemKind::VrpcNoTable => {
            if !help(&binaries.hosted, &["serve", "--help"]).contains("--vrpc-socket") {
                Some("storage-domain-hosted serve has no --vrpc-socket yet".into())
            } else if !help(&binaries.guest_driver, &["mount", "--help"]).contains("--hosted") {
                Some("guest-driver mount has no --hosted yet".into())
            } else {
                None
            }
        }
        SystemKind::TcpHosted => {
            if help(&binaries.guest_driver, &["mount", "--help"]).contains("--tcp") {
                None
            } else {
                Some("guest-driver mount has no --tcp".into())
            }
        }
        SystemKind::Ganesha => ["ganesha.nfsd", "ip", "nsenter"]
            .into_iter()
            .find(|program| !crate::process::on_path(program))
            .map(|program| format!("{program} is not installed (scripts/bootstrap.sh bench)"))
            .or_else(|| {
                (!Path::new("/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so").exists()
                    && !Path::new("/usr/lib/ganesha/libfsalvfs.so").exists())
                .then(|| "nfs-ganesha-vfs (FSAL VFS) is not installed".to_owned())
            }),
        SystemKind::Bindfs => (!crate::process::on_path("bindfs"))
            .then(|| "bindfs is not installed (scripts/bootstrap.sh bench)".to_owned()),
    }
}

/// Where a session's data lives.
#[derive(Debug)]
enum Data {
    /// A directory on the bench ext4.
    Directory(PathBuf),
    /// The hosted server's image file.
    Image(PathBuf),
}

/// One system brought up.
#[derive(Debug)]
pub struct Session<'e> {
    kind: SystemKind,
    environment: &'e Environment,
    data: Data,
    /// Where the workloads run.
    dir: PathBuf,
    processes: Vec<ManagedProcess>,
    mount: Option<Guard>,
    namespace: Option<(String, Guard)>,
    phase_counters: Vec<(String, String)>,
}

impl<'e> Session<'e> {
    /// Bring `kind` up on fresh data.
    ///
    /// # Errors
    /// When a server or mount does not come up; everything started is
    /// torn down again.
    pub fn start(kind: SystemKind, environment: &'e Environment) -> anyhow::Result<Session<'e>> {
        let mount_point = environment.work.join("mnt").join(kind.key());
        let (data, dir) = match kind {
            SystemKind::Local => {
                let data = environment.ext4.join("local");
                (Data::Directory(data.clone()), data)
            }
            SystemKind::Ganesha | SystemKind::Bindfs => (
                Data::Directory(environment.ext4.join(format!("{}-export", kind.key()))),
                mount_point,
            ),
            SystemKind::VrpcTable | SystemKind::VrpcNoTable | SystemKind::TcpHosted => (
                Data::Image(environment.work.join(format!("{}.img", kind.key()))),
                mount_point,
            ),
        };
        match &data {
            Data::Directory(path) => {
                remove_tree(path)?;
                std::fs::create_dir_all(path)?;
            }
            Data::Image(path) => {
                let _ = std::fs::remove_file(path);
            }
        }
        let mut session = Session {
            kind,
            environment,
            data,
            dir,
            processes: Vec::new(),
            mount: None,
            namespace: None,
            phase_counters: Vec::new(),
        };
        session.bring_up()?;
        Ok(session)
    }

    /// The directory the workloads use.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The system.
    pub fn kind(&self) -> SystemKind {
        self.kind
    }

    /// Restart every process of the system (keeping the data), write back
    /// and drop the page, dentry and inode caches. The guest-driver
    /// counters of the phase that ends here are kept under `phase`.
    ///
    /// # Errors
    /// When the system does not come back.
    pub fn make_cold(&mut self, phase: &str) -> anyhow::Result<()> {
        self.end_phase(phase);
        self.take_down();
        drop_caches()?;
        self.bring_up()
    }

    /// CPU seconds the system's own processes (server, guest-driver,
    /// ganesha, bindfs) used since they started; 0 for local ext4, whose
    /// work is the kernel's.
    pub fn cpu_seconds(&self) -> f64 {
        self.processes
            .iter()
            .filter_map(|process| process.pid().and_then(cleanup::cpu_seconds))
            .sum()
    }

    /// Keep the guest-driver counters since the last restart under `phase`.
    pub fn end_phase(&mut self, phase: &str) {
        if let Some(text) = self.counters() {
            self.phase_counters.push((phase.to_owned(), text));
        }
    }

    /// The counters kept by [`Session::end_phase`], oldest first.
    pub fn phase_counters(&self) -> &[(String, String)] {
        &self.phase_counters
    }

    /// `guest-driver stats DIR`, for systems mounted through guest-driver.
    fn counters(&self) -> Option<String> {
        if !self.kind.uses_guest_driver() {
            return None;
        }
        // The stats socket is an abstract unix socket: it lives in the
        // network namespace of the guest-driver that serves the mount.
        let mut command = match &self.namespace {
            Some((namespace, _)) => {
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net=/run/netns/{namespace}"))
                    .arg(&self.environment.binaries.guest_driver);
                command
            }
            None => Command::new(&self.environment.binaries.guest_driver),
        };
        let output = command.arg("stats").arg(&self.dir).output().ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Tear down and discard the data.
    pub fn stop(mut self) {
        self.take_down();
        match &self.data {
            Data::Directory(path) => {
                if let Err(error) = remove_tree(path) {
                    eprintln!("bench: {error:#}");
                }
            }
            Data::Image(path) => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    fn bring_up(&mut self) -> anyhow::Result<()> {
        let result = match self.kind {
            SystemKind::Local => Ok(()),
            SystemKind::TcpHosted => self.start_hosted(None),
            SystemKind::VrpcTable | SystemKind::VrpcNoTable => {
                let socket = self
                    .environment
                    .work
                    .join(format!("{}.sock", self.kind.key()));
                self.start_hosted(Some(socket))
            }
            SystemKind::Ganesha => self.start_ganesha(),
            SystemKind::Bindfs => self.start_bindfs(),
        };
        if result.is_err() {
            self.take_down();
        }
        result
    }

    /// Stop processes newest first (the mount's daemon before its server),
    /// then make sure nothing stays mounted.
    fn take_down(&mut self) {
        while let Some(process) = self.processes.pop() {
            process.stop();
        }
        if let Some(mount) = self.mount.take() {
            mount.release();
        }
        if let Some((_, namespace)) = self.namespace.take() {
            namespace.release();
        }
    }

    fn spawn(&mut self, name: &str, command: &mut Command) -> anyhow::Result<PathBuf> {
        let (log, file) = self
            .environment
            .log_file(&format!("{}-{name}", self.kind.key()))?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        self.processes.push(ManagedProcess::spawn(name, command)?);
        Ok(log)
    }

    fn start_hosted(&mut self, socket: Option<PathBuf>) -> anyhow::Result<()> {
        let Data::Image(image) = &self.data else {
            bail!("the hosted server needs an image");
        };
        let image = image.clone();
        let port = free_port()?;
        let mut serve = Command::new(&self.environment.binaries.hosted);
        serve
            .arg("serve")
            .arg("--disk")
            .arg(&image)
            .args(["--size", &self.environment.image_size])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--export", "/,no_root_squash"]);
        if let Some(socket) = &socket {
            let _ = std::fs::remove_file(socket);
            serve.arg("--vrpc-socket").arg(socket);
        }
        let log = self.spawn("server", &mut serve)?;
        self.wait_until("the server listens", &log, || {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
                && socket.as_ref().is_none_or(|socket| socket.exists())
        })?;
        let mut mount = Command::new(&self.environment.binaries.guest_driver);
        mount.arg("mount");
        match &socket {
            Some(socket) => {
                mount.arg("--hosted").arg(socket);
                if self.kind == SystemKind::VrpcNoTable {
                    mount.arg("--no-metadata-table");
                }
            }
            None => {
                mount.args(["--tcp", &format!("127.0.0.1:{port}")]);
            }
        }
        mount
            .args(&self.environment.guest_driver_args)
            .arg(&self.dir);
        self.mount_with("guest-driver", &mut mount)
    }

    fn start_ganesha(&mut self) -> anyhow::Result<()> {
        let Data::Directory(export) = &self.data else {
            bail!("ganesha exports a directory");
        };
        let export = export.clone();
        // A network namespace of its own: ganesha registers with (and on
        // exit unregisters from) rpcbind, which must not disturb any other
        // NFS server on this machine; guest-driver joins the namespace.
        let namespace = format!("xtask-bench-{}", std::process::id());
        if self.namespace.is_none() {
            let _ = Command::new("ip")
                .args(["netns", "delete", &namespace])
                .stderr(Stdio::null())
                .status();
            run(Command::new("ip").args(["netns", "add", &namespace]))?;
            let guard = cleanup::register(Resource::NetworkNamespace(namespace.clone()));
            self.namespace = Some((namespace.clone(), guard));
            run(Command::new("ip").args(["-n", &namespace, "link", "set", "lo", "up"]))?;
        }
        let config = self.environment.work.join("ganesha.conf");
        std::fs::write(&config, ganesha_config(&export))?;
        let enter = format!("--net=/run/netns/{namespace}");
        let mut server = Command::new("nsenter");
        server
            .arg(&enter)
            .args(["ganesha.nfsd", "-F", "-f"])
            .arg(&config)
            .arg("-L")
            .arg(self.environment.work.join("logs/ganesha.log"))
            .arg("-p")
            .arg(self.environment.work.join("ganesha.pid"))
            .args(["-N", "NIV_WARN"]);
        let log = self.spawn("ganesha", &mut server)?;
        self.wait_until("ganesha listens", &log, || {
            Command::new("nsenter")
                .arg(&enter)
                .args([
                    "bash",
                    "-c",
                    "exec 3<>/dev/tcp/127.0.0.1/2049 4<>/dev/tcp/127.0.0.1/20048",
                ])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })?;
        let mut mount = Command::new("nsenter");
        mount
            .arg(&enter)
            .arg(&self.environment.binaries.guest_driver)
            .args(["mount", "--tcp", "127.0.0.1:2049", "--mount-port", "20048"])
            .arg("--export")
            .arg(&export)
            .args(&self.environment.guest_driver_args)
            .arg(&self.dir);
        self.mount_with("guest-driver", &mut mount)
    }

    fn start_bindfs(&mut self) -> anyhow::Result<()> {
        let Data::Directory(source) = &self.data else {
            bail!("bindfs passes a directory through");
        };
        let mut mount = Command::new("bindfs");
        mount
            .args(["-f", "--multithreaded"])
            .arg(source.clone())
            .arg(&self.dir);
        self.mount_with("bindfs", &mut mount)
    }

    /// Start a FUSE daemon on `self.dir` and wait for the mount.
    fn mount_with(&mut self, name: &str, command: &mut Command) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        if cleanup::is_mounted(&self.dir) {
            bail!("{} is mounted already", self.dir.display());
        }
        self.mount = Some(cleanup::register(Resource::Mount(self.dir.clone())));
        let log = self.spawn(name, command)?;
        let dir = self.dir.clone();
        self.wait_until("the mount appears", &log, || cleanup::is_mounted(&dir))
    }

    /// Poll `ready` until true; fail early if a process of the session
    /// exits, quoting its log.
    fn wait_until(
        &mut self,
        what: &str,
        log: &Path,
        mut ready: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            for process in &mut self.processes {
                if let Some(status) = process.exited() {
                    bail!(
                        "{} exited ({status}) before {what}: {}",
                        process.name(),
                        log_tail(log)
                    );
                }
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "timed out after {} s waiting until {what}: {}",
                    START_TIMEOUT.as_secs(),
                    log_tail(log)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.take_down();
    }
}

/// Ganesha's configuration: NFSv3 only, over TCP, on 2049 with MOUNT on
/// 20048 inside the bench's own network namespace, no locking or quota
/// services, root not squashed (like the other servers here).
fn ganesha_config(export: &Path) -> String {
    let path = export.display();
    format!(
        "NFS_CORE_PARAM {{
    NFS_Port = 2049;
    MNT_Port = 20048;
    Protocols = 3;
    Enable_NLM = false;
    Enable_RQUOTA = false;
}}
NFSV4 {{ Graceless = true; }}
EXPORT {{
    Export_Id = 1;
    Path = {path};
    Pseudo = {path};
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 3;
    Transports = TCP;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = WARN; }}
"
    )
}

/// A TCP port nobody listens on now.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// The last lines of a log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // anyhow's backtrace (RUST_BACKTRACE set) would hide the error itself.
    let text = text.split("Stack backtrace:").next().unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    format!("{} says: {}", log.display(), tail.join(" | "))
}

/// `sync`, then drop the page cache, dentries and inodes.
///
/// # Errors
/// When not root.
pub fn drop_caches() -> anyhow::Result<()> {
    run(&mut Command::new("sync"))?;
    std::fs::write("/proc/sys/vm/drop_caches", "3\n")
        .context("cannot drop caches (the bench must run as root)")
}

/// Remove a directory tree if it exists.
fn remove_tree(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Run a setup command quietly; fail with its stderr.
///
/// # Errors
/// When it cannot start or exits non-zero.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {}", crate::process::describe(command)))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}",
            crate::process::describe(command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
