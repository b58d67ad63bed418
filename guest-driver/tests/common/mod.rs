//! Harness for the mount tests: the real hosted server binary, real
//! guest-driver mounts, clean shutdown and an offline fsck at the end.
//!
//! Tests need root and /dev/fuse (CI has both); without them they print
//! why and return. The server binary is the workspace's
//! `storage-domain-hosted`, which `cargo test --workspace` builds next to
//! this test (its package has integration tests of its own).

#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Why the mount tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0");
    if !root {
        return Some("not root (mounting for every uid needs root)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    if !server_binary().is_file() {
        return Some(format!(
            "{} is not built (cargo build -p storage-domain-hosted)",
            server_binary().display()
        ));
    }
    None
}

/// Returns early from a test, saying why, when mounts cannot run here.
#[macro_export]
macro_rules! require_mounts {
    () => {
        if let Some(reason) = common::skip_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

/// `target/<profile>/` of this build.
fn binary_directory() -> PathBuf {
    let executable = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    executable
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf()
}

/// The hosted storage domain binary.
pub fn server_binary() -> PathBuf {
    binary_directory().join("storage-domain-hosted")
}

/// The guest-driver binary.
pub fn driver_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_guest-driver"))
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} ignored SIGTERM for 20 s", child.id());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the server binary can serve hosted VRPC (`--vrpc-socket`).
pub fn server_has_vrpc() -> bool {
    Command::new(server_binary())
        .args(["serve", "--help"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).contains("--vrpc-socket"))
        .unwrap_or(false)
}

/// A running `storage-domain-hosted serve`.
pub struct Server {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// The hosted VRPC socket, when served.
    pub socket: Option<PathBuf>,
    /// The disk image.
    pub image: PathBuf,
    /// What `serve` was given besides the disk, size and address.
    arguments: Vec<String>,
    /// The size of a fresh image.
    size: String,
}

impl Server {
    /// Serves a fresh image in `directory` on a free port.
    pub fn start(directory: &Path) -> Server {
        Server::start_with(directory, false)
    }

    /// Serves a fresh image on a free port and, if `vrpc`, on a hosted
    /// VRPC socket in `directory` too.
    pub fn start_with(directory: &Path, vrpc: bool) -> Server {
        Server::start_with_arguments(directory, vrpc, &["--export", "/,no_root_squash"])
    }

    /// As [`Server::start_with`], with `arguments` (exports included)
    /// instead of the default export.
    pub fn start_with_arguments(directory: &Path, vrpc: bool, arguments: &[&str]) -> Server {
        Server::start_sized(directory, vrpc, "256M", arguments)
    }

    /// As [`Server::start_with_arguments`], on a fresh image of `size`.
    pub fn start_sized(directory: &Path, vrpc: bool, size: &str, arguments: &[&str]) -> Server {
        let arguments: Vec<String> = arguments.iter().map(|text| text.to_string()).collect();
        Server::launch(directory, vrpc, "127.0.0.1:0", arguments, size.to_string())
    }

    /// Stops the server cleanly (SIGTERM) and serves the same image on the
    /// same address again.
    pub fn restart(mut self, directory: &Path) -> Server {
        let mut child = self.child.take().expect("running");
        let status = terminate(&mut child);
        assert!(status.success(), "server exit: {status}");
        let arguments = std::mem::take(&mut self.arguments);
        let size = std::mem::take(&mut self.size);
        Server::launch(
            directory,
            self.socket.is_some(),
            &self.address,
            arguments,
            size,
        )
    }

    /// Kills the server (SIGKILL: nothing is committed on the way out) and
    /// serves the same image on the same address again.
    pub fn kill_and_restart(mut self, directory: &Path) -> Server {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let arguments = std::mem::take(&mut self.arguments);
        let size = std::mem::take(&mut self.size);
        Server::launch(
            directory,
            self.socket.is_some(),
            &self.address,
            arguments,
            size,
        )
    }

    fn launch(
        directory: &Path,
        vrpc: bool,
        listen: &str,
        arguments: Vec<String>,
        size: String,
    ) -> Server {
        let image = directory.join("disk.img");
        let socket = vrpc.then(|| directory.join("vrpc.sock"));
        let mut command = Command::new(server_binary());
        command
            .args(["serve", "--disk"])
            .arg(&image)
            .args(["--size", &size, "--listen", listen])
            .args(&arguments);
        if let Some(socket) = &socket {
            command.arg("--vrpc-socket").arg(socket);
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting storage-domain-hosted");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[server] {line}");
                if let Some(rest) = line
                    .split(" on ")
                    .nth(1)
                    .filter(|_| line.contains("ready:"))
                {
                    let address = rest
                        .split([',', ' '])
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = sender.send(address);
                }
            }
        });
        let address = receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("the server never said it was ready");
        Server {
            child: Some(child),
            address,
            socket,
            image,
            arguments,
            size,
        }
    }

    /// Stops the server (SIGTERM) and checks the image offline.
    pub fn stop_and_check(mut self) {
        let mut child = self.child.take().expect("running");
        let status = terminate(&mut child);
        assert!(status.success(), "server exit: {status}");
        let fsck = Command::new(server_binary())
            .arg("fsck")
            .arg(&self.image)
            .output()
            .expect("running fsck");
        assert!(
            fsck.status.success(),
            "fsck failed: {}\n{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
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

/// A running `guest-driver mount`.
pub struct Mount {
    child: Option<Child>,
    /// The mount point.
    pub path: PathBuf,
}

impl Mount {
    /// Mounts the server's `/` over TCP at a new directory `name` under
    /// `parent`.
    pub fn start(server: &Server, parent: &Path, name: &str, extra: &[&str]) -> Mount {
        Mount::start_with(&["--tcp", &server.address], parent, name, extra)
    }

    /// Mounts the server's `/` over hosted VRPC.
    pub fn start_hosted(server: &Server, parent: &Path, name: &str, extra: &[&str]) -> Mount {
        let socket = server
            .socket
            .as_ref()
            .expect("server without --vrpc-socket");
        let socket = socket.to_str().expect("UTF-8 socket path");
        Mount::start_with(&["--hosted", socket], parent, name, extra)
    }

    fn start_with(transport: &[&str], parent: &Path, name: &str, extra: &[&str]) -> Mount {
        let path = parent.join(name);
        std::fs::create_dir_all(&path).expect("mount point");
        let path = path.canonicalize().expect("canonical mount point");
        let mut child = Command::new(driver_binary())
            .arg("mount")
            .args(transport)
            .args(extra)
            .arg(&path)
            .spawn()
            .expect("starting guest-driver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&path) {
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("guest-driver exited before mounting: {status}");
            }
            assert!(Instant::now() < deadline, "no mount after 20 s");
            thread::sleep(Duration::from_millis(20));
        }
        Mount {
            child: Some(child),
            path,
        }
    }

    /// The daemon's counters (`guest-driver stats`), by name.
    pub fn stats(&self) -> std::collections::HashMap<String, u64> {
        let output = Command::new(driver_binary())
            .arg("stats")
            .arg(&self.path)
            .output()
            .expect("running guest-driver stats");
        assert!(output.status.success(), "guest-driver stats failed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// The daemon dies (SIGKILL); the dead mount is detached lazily.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }

    /// Unmounts with SIGTERM and checks the daemon exited cleanly.
    pub fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let status = terminate(&mut child);
        assert!(status.success(), "guest-driver exit: {status}");
        assert!(!is_mounted(&self.path), "still mounted after exit");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            if is_mounted(&self.path) {
                let _ = Command::new("umount").arg("-l").arg(&self.path).status();
            }
        }
    }
}

/// `struct cachestat` of Linux's `cachestat(2)`: pages cached, and pages
/// the kernel reclaimed (they leave a shadow entry; an invalidation
/// does not).
#[repr(C)]
#[derive(Debug, Default)]
pub struct CacheStat {
    pub nr_cache: u64,
    pub nr_dirty: u64,
    pub nr_writeback: u64,
    pub nr_evicted: u64,
    pub nr_recently_evicted: u64,
}

/// What the page cache holds of the first `length` bytes of `file`:
/// `cachestat(2)`, `None` where the kernel lacks it (before 6.5).
pub fn page_cache(file: &std::fs::File, length: u64) -> Option<CacheStat> {
    use std::os::fd::AsRawFd;
    /// The system call's number in the generic table (x86_64 and most
    /// architectures; alpha numbers it apart).
    const SYS_CACHESTAT: libc::c_long = 451;
    #[repr(C)]
    struct Range {
        offset: u64,
        length: u64,
    }
    let range = Range { offset: 0, length };
    let mut state = CacheStat::default();
    // SAFETY: both pointers are to live values of the layouts the call
    // reads and writes; the descriptor is open.
    let result = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut state as *mut CacheStat,
            0u32,
        )
    };
    if result == 0 {
        return Some(state);
    }
    let error = std::io::Error::last_os_error();
    assert_eq!(
        error.raw_os_error(),
        Some(libc::ENOSYS),
        "cachestat failed: {error}"
    );
    None
}
