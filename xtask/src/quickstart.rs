//! `cargo xtask quickstart`: the hosted storage domain on a fresh disk
//! image, mounted through guest-driver, until Ctrl-C.
//!
//! 1. builds `storage-domain-hosted` and `guest-driver` (release);
//! 2. starts `storage-domain-hosted serve` on `quickstart-data/disk.img`
//!    (formatted at `--size` the first time, reused afterwards), serving
//!    NFSv3 on a free loopback TCP port and VRPC on a unix socket;
//! 3. shows a real, independent NFS client (libnfs `nfs-cp`) copying a file
//!    in and out over TCP;
//! 4. mounts the share with guest-driver at `quickstart-data/mnt` and
//!    waits; Ctrl-C unmounts (guest-driver flushes first), stops the
//!    server (which commits), and checks the image with `fsck`.
//!
//! The children run in their own process group so that Ctrl-C reaches only
//! this task, which then stops them in the right order: the mount first,
//! so its last writes reach a running server.

use crate::process::{cargo, describe, execute, on_path};
use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Arguments of `cargo xtask quickstart`.
#[derive(Debug, clap::Args)]
pub struct QuickstartArgs {
    /// Directory for the disk image, the mount point and the logs.
    #[arg(long, default_value = "quickstart-data")]
    pub directory: PathBuf,
    /// Size of the image when it is created, e.g. 4G, 512MiB, 10GB. K, M,
    /// G, T and KiB, MiB, GiB, TiB are powers of 1024; KB, MB, GB, TB are
    /// powers of 1000.
    #[arg(long, default_value = "1G", value_parser = byte_size::parse_size)]
    pub size: u64,
    /// Run the demonstration, then unmount and stop at once instead of
    /// waiting for Ctrl-C (for scripted checks of the quick start).
    #[arg(long)]
    pub exit_after_demo: bool,
}

/// A child process stopped with SIGTERM when dropped.
pub(crate) struct Running {
    name: &'static str,
    child: Child,
}

impl Running {
    pub(crate) fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > timeout {
                let _ = self.child.kill();
                bail!("{} did not stop within {timeout:?}; killed", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.terminate(Duration::from_secs(10));
    }
}

/// Run the quick start.
///
/// # Errors
/// When a build, the server, the demonstration or the mount fails.
pub fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    execute(cargo().current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "storage-domain-hosted",
        "-p",
        "guest-driver",
    ]))?;
    let release = crate::target_dir().join("release");
    let server_binary = release.join("storage-domain-hosted");
    let driver_binary = release.join("guest-driver");
    std::fs::create_dir_all(&args.directory)?;
    let directory = args.directory.canonicalize()?;
    let image = directory.join("disk.img");
    let socket = directory.join("vrpc.sock");
    let mount_point = directory.join("mnt");
    std::fs::create_dir_all(&mount_point)?;
    if is_mounted(&mount_point) {
        bail!(
            "{} is already mounted (another quick start running?); `fusermount3 -u {}` frees it",
            mount_point.display(),
            mount_point.display()
        );
    }

    let (interrupts, interrupted) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = interrupts.send(());
    })
    .context("cannot handle Ctrl-C")?;

    let (mut server, port) = start_server(&server_binary, &image, args.size, &socket, &directory)?;
    demonstrate(port, &directory)?;
    let mut mount = start_mount(&driver_binary, &socket, &mount_point, &directory)?;

    println!();
    println!(
        "The storage domain's share is mounted at {}",
        mount_point.display()
    );
    println!("  - served from the disk image {}", image.display());
    println!("  - through guest-driver over VRPC (shared-memory rings and the metadata table)");
    println!("  - also reachable over NFSv3 at 127.0.0.1:{port} (export /)");
    println!(
        "Put your own files there. Counters: {} stats {}",
        driver_binary.display(),
        mount_point.display()
    );
    println!(
        "Logs: {}/server.log, {}/guest-driver.log",
        directory.display(),
        directory.display()
    );
    if args.exit_after_demo {
        println!("--exit-after-demo: stopping now");
        check_mount(&mount_point)?;
    } else {
        println!("Press Ctrl-C to unmount and stop.");
        let _ = interrupted.recv();
        println!();
    }

    println!("unmounting {}", mount_point.display());
    let status = mount.terminate(Duration::from_secs(30))?;
    if !status.success() {
        eprintln!("guest-driver exited with {status}");
    }
    println!("stopping the server (it commits everything first)");
    let status = server.terminate(Duration::from_secs(60))?;
    if !status.success() {
        bail!(
            "the server exited with {status}; see {}/server.log",
            directory.display()
        );
    }
    execute(Command::new(&server_binary).arg("fsck").arg(&image))?;
    println!("The image is clean. Run ./quickstart.sh again to mount it again.");
    Ok(())
}

fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|mounts| {
            mounts
                .lines()
                .any(|line| line.split(' ').nth(1) == Some(&*path.to_string_lossy()))
        })
        .unwrap_or(false)
}

/// Start the server and wait for its ready line; returns its TCP port.
pub(crate) fn start_server(
    binary: &Path,
    image: &Path,
    size: u64,
    socket: &Path,
    directory: &Path,
) -> anyhow::Result<(Running, u16)> {
    if image.exists() {
        println!("using the existing image {}", image.display());
    }
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg("--disk")
        .arg(image)
        .arg("--size")
        .arg(size.to_string())
        .args(["--listen", "127.0.0.1:0"])
        .arg("--vrpc-socket")
        .arg(socket)
        // The quick start is a local share for the machine's own users,
        // root included.
        .args(["--export", "/,no_root_squash"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    eprintln!("+ {}", describe(&command));
    let mut child = command.spawn().context("cannot start the server")?;
    let stderr = child.stderr.take().context("no server stderr")?;
    let running = Running {
        name: "storage-domain-hosted serve",
        child,
    };
    let log_path = directory.join("server.log");
    let (ready, port) = mpsc::channel();
    std::thread::spawn(move || {
        let mut log = std::fs::File::create(&log_path).ok();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(log) = log.as_mut() {
                use std::io::Write;
                let _ = writeln!(log, "{line}");
            }
            if let Some(port) = ready_port(&line) {
                let _ = ready.send(Ok(port));
            } else if line.contains("storage-domain-hosted:") {
                let _ = ready.send(Err(line));
            }
        }
    });
    match port.recv_timeout(Duration::from_secs(120)) {
        Ok(Ok(port)) => Ok((running, port)),
        Ok(Err(line)) => bail!("the server did not start: {line}"),
        Err(_) => bail!(
            "the server did not say it was ready; see {}/server.log",
            directory.display()
        ),
    }
}

/// The port in `ready: ... on 127.0.0.1:PORT, ...`.
fn ready_port(line: &str) -> Option<u16> {
    let rest = line.split("ready: ").nth(1)?;
    let address = rest.split(" on ").nth(1)?.split(',').next()?;
    address.rsplit(':').next()?.parse().ok()
}

/// Copy a file in and out with libnfs over TCP, and compare.
fn demonstrate(port: u16, directory: &Path) -> anyhow::Result<()> {
    if !on_path("nfs-cp") {
        println!("(libnfs-utils is not installed: skipping the nfs-cp demonstration)");
        return Ok(());
    }
    let original = crate::workspace_root().join("README.md");
    let copy = directory.join("README.copied-back.md");
    let url =
        |path: &str| format!("nfs://127.0.0.1/{path}?version=3&nfsport={port}&mountport={port}");
    println!();
    println!("demonstration: an independent NFSv3 client (libnfs) copies README.md in and out");
    execute(Command::new("nfs-cp").arg(&original).arg(url("/README.md")))?;
    let _ = std::fs::remove_file(&copy);
    execute(Command::new("nfs-cp").arg(url("/README.md")).arg(&copy))?;
    if std::fs::read(&original)? != std::fs::read(&copy)? {
        bail!("the copy read back over NFS differs from the original");
    }
    println!("the copy read back over NFS is identical");
    Ok(())
}

fn start_mount(
    binary: &Path,
    socket: &Path,
    mount_point: &Path,
    directory: &Path,
) -> anyhow::Result<Running> {
    let log = std::fs::File::create(directory.join("guest-driver.log"))?;
    let mut command = Command::new(binary);
    command
        .arg("mount")
        .arg("--hosted")
        .arg(socket)
        .arg(mount_point)
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0);
    eprintln!("+ {}", describe(&command));
    let mut running = Running {
        name: "guest-driver",
        child: command.spawn().context("cannot start guest-driver")?,
    };
    let started = Instant::now();
    while !is_mounted(mount_point) {
        if let Some(status) = running.child.try_wait()? {
            bail!(
                "guest-driver exited with {status}; see {}/guest-driver.log",
                directory.display()
            );
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the mount did not appear within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(running)
}

/// With --exit-after-demo: the mount shows the demonstration's file and
/// takes a new one.
fn check_mount(mount_point: &Path) -> anyhow::Result<()> {
    let original = std::fs::read(crate::workspace_root().join("README.md"))?;
    let seen = std::fs::read(mount_point.join("README.md"))
        .context("README.md copied in over NFS is not visible in the mount")?;
    if seen != original {
        bail!("README.md differs through the mount");
    }
    let probe = mount_point.join("quickstart-probe.txt");
    std::fs::write(&probe, b"written through guest-driver\n")?;
    if std::fs::read(&probe)? != b"written through guest-driver\n" {
        bail!("a file written through the mount reads back differently");
    }
    println!("the mount shows README.md and takes new files");
    Ok(())
}
