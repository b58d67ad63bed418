//! The hosted server and guest-driver mounts as child processes, for the
//! long-running checks (`torture`, `soak`).
//!
//! Every process started here is owned by a guard: dropping a [`Server`]
//! kills it, dropping a [`GuestMount`] stops its daemon and, if the mount
//! point is still mounted, detaches it (`umount -l`), so a failed run
//! leaves no server or mount behind.

use anyhow::{bail, Context};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a debug server may take to format and open its image on a
/// loaded 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the server and guest-driver (debug profile, as `cargo test`
/// does) and returns the directory that holds them.
///
/// # Errors
/// When the build fails.
pub fn build_binaries() -> anyhow::Result<PathBuf> {
    crate::process::execute(crate::process::cargo().args([
        "build",
        "--quiet",
        "-p",
        "storage-domain-hosted",
        "-p",
        "guest-driver",
    ]))?;
    Ok(crate::target_dir().join("debug"))
}

/// Why mounts cannot run here, if they cannot.
pub fn mount_skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root (mounting for every uid needs root)");
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing");
    }
    None
}

fn terminate(child: &mut Child, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "process {} ignored SIGTERM for {} s",
                child.id(),
                within.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A running `storage-domain-hosted serve` on an image in a scratch
/// directory, with NFS over TCP and hosted VRPC.
pub struct Server {
    child: Option<Child>,
    binaries: PathBuf,
    directory: PathBuf,
    /// `127.0.0.1:PORT`, kept across restarts.
    pub address: String,
    /// The hosted VRPC socket.
    pub socket: PathBuf,
    /// The disk image.
    pub image: PathBuf,
    starts: u32,
}

impl Server {
    /// Serves a fresh image of `size` in `directory` on a free port.
    ///
    /// # Errors
    /// When the server does not say it is ready.
    pub fn start(binaries: &Path, directory: &Path, size: &str) -> anyhow::Result<Server> {
        let mut server = Server {
            child: None,
            binaries: binaries.to_path_buf(),
            directory: directory.to_path_buf(),
            address: "127.0.0.1:0".into(),
            socket: directory.join("vrpc.sock"),
            image: directory.join("disk.img"),
            starts: 0,
        };
        server.launch(size)?;
        Ok(server)
    }

    fn launch(&mut self, size: &str) -> anyhow::Result<()> {
        self.starts += 1;
        let log_path = self.directory.join(format!("server-{}.log", self.starts));
        let log = File::create(&log_path)?;
        let child = Command::new(self.binaries.join("storage-domain-hosted"))
            .args(["serve", "--disk"])
            .arg(&self.image)
            .args(["--size", size, "--listen", &self.address])
            .args(["--export", "/,no_root_squash", "--vrpc-socket"])
            .arg(&self.socket)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting storage-domain-hosted serve")?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(line) = text.lines().find(|line| line.contains("ready: ")) {
                let address = line
                    .split_once(" on ")
                    .and_then(|(_, rest)| rest.split([',', ' ']).next())
                    .context("a ready line without an address")?;
                self.address = address.to_string();
                return Ok(());
            }
            let child = self.child.as_mut().expect("just started");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "serve exited before it was ready ({status}); log {}:\n{text}",
                    log_path.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "serve was not ready within 60 s (log {})",
                    log_path.display()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the server dies wherever it is.
    ///
    /// # Errors
    /// When it is not running or cannot be reaped.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("the server is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Serves the same image on the same address again.
    ///
    /// # Errors
    /// When the server does not come back.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("the server is still running");
        }
        self.launch("256M")
    }

    /// SIGTERM; the server must stop cleanly (status 0).
    ///
    /// # Errors
    /// When it does not.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("the server is not running")?;
        let status = terminate(&mut child, Duration::from_secs(30))?;
        if !status.success() {
            bail!("serve exited with {status} on SIGTERM");
        }
        Ok(())
    }

    /// `storage-domain-hosted fsck IMAGE` while the server is down: Ok
    /// when clean, otherwise the report.
    ///
    /// # Errors
    /// When the server still runs or fsck cannot run.
    pub fn fsck(&self) -> anyhow::Result<Result<(), String>> {
        if self.child.is_some() {
            bail!("fsck while the server runs");
        }
        let output = Command::new(self.binaries.join("storage-domain-hosted"))
            .arg("fsck")
            .arg(&self.image)
            .output()
            .context("running fsck")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(if output.status.success() && text.contains("clean") {
            Ok(())
        } else {
            Err(text)
        })
    }

    /// The server's resident set size in KiB (`VmRSS`).
    ///
    /// # Errors
    /// When the server is not running or /proc cannot be read.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("the server is not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .context("no VmRSS line")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn is_mounted(directory: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let wanted = directory.to_string_lossy();
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_ref()))
}

/// How a mount reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountTransport {
    /// `--hosted SOCKET`: VRPC rings and the metadata table.
    Vrpc,
    /// `--tcp ADDRESS`.
    Tcp,
}

/// A running `guest-driver mount`.
pub struct GuestMount {
    child: Option<Child>,
    /// The mount point.
    pub path: PathBuf,
    /// How it reaches the server.
    pub transport: MountTransport,
}

impl GuestMount {
    /// Mounts the server's `/` at `path` (created).
    ///
    /// # Errors
    /// When the daemon exits or nothing is mounted within 20 s.
    pub fn start(
        binaries: &Path,
        server: &Server,
        transport: MountTransport,
        path: &Path,
    ) -> anyhow::Result<GuestMount> {
        std::fs::create_dir_all(path)?;
        let path = path.canonicalize()?;
        let mut command = Command::new(binaries.join("guest-driver"));
        command.arg("mount");
        match transport {
            MountTransport::Vrpc => command.arg("--hosted").arg(&server.socket),
            MountTransport::Tcp => command.args(["--tcp", &server.address]),
        };
        let log = File::create(path.with_extension("log"))?;
        let child = command
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting guest-driver")?;
        let mut mount = GuestMount {
            child: Some(child),
            path,
            transport,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&mount.path) {
            let child = mount.child.as_mut().expect("just started");
            if let Some(status) = child.try_wait()? {
                mount.child = None;
                bail!("guest-driver exited before mounting: {status}");
            }
            if Instant::now() > deadline {
                bail!("no mount at {} after 20 s", mount.path.display());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(mount)
    }

    /// Unmounts with SIGTERM; the daemon must exit cleanly.
    ///
    /// # Errors
    /// When it does not, or the mount point stays mounted.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = terminate(&mut child, Duration::from_secs(20))?;
        if is_mounted(&self.path) {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
            bail!(
                "{} still mounted after the daemon exited",
                self.path.display()
            );
        }
        if !status.success() {
            bail!("guest-driver exited with {status}");
        }
        Ok(())
    }
}

impl Drop for GuestMount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = terminate(&mut child, Duration::from_secs(10));
        }
        if is_mounted(&self.path) {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
