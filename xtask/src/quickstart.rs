//! `cargo xtask quickstart`: the hosted storage domain, mounted, in one go.
//!
//! Builds the two binaries, starts `storage-domain-hosted serve` on a disk
//! image (formatted on first use), mounts its export with `guest-driver`,
//! copies a file in and back out to show the path works, and then keeps the
//! share mounted until Ctrl-C. Shutdown unmounts first, then stops the
//! server (which commits), then runs `fsck` on the image.

use crate::process::{cargo, describe, execute};
use anyhow::{bail, Context};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `cargo xtask quickstart`.
#[derive(Debug, clap::Args)]
pub struct QuickstartArgs {
    /// Directory for the disk image, the socket and the mount point.
    #[arg(long, default_value = "quickstart-data")]
    pub directory: PathBuf,
    /// Size of the image when it is created.
    #[arg(long, default_value = "1G")]
    pub size: String,
    /// How guest-driver reaches the server: `vrpc` (shared-memory rings) or `tcp`.
    #[arg(long, default_value = "vrpc", value_parser = ["vrpc", "tcp"])]
    pub transport: String,
    /// Unmount and stop right after the demonstration copy (for scripts and CI).
    #[arg(long)]
    pub demo_only: bool,
}

/// Run the quick start.
///
/// # Errors
/// When a build, the server, the mount or the demonstration copy fails.
pub fn quickstart(args: QuickstartArgs) -> anyhow::Result<()> {
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
    let _ = std::fs::remove_file(&socket);
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");

    let mut server_command = Command::new(&server_binary);
    server_command
        .arg("serve")
        .arg("--disk")
        .arg(&image)
        .args(["--size", &args.size, "--listen", &listen]);
    if args.transport == "vrpc" {
        server_command.arg("--vrpc-socket").arg(&socket);
    }
    eprintln!("+ {}", describe(&server_command));
    let server = Guard::new(server_command.spawn().context("cannot start the server")?);
    wait_for(Duration::from_secs(60), "the server to listen", || {
        Ok(TcpStream::connect(&listen).is_ok())
    })?;

    let mut driver_command = Command::new(&driver_binary);
    driver_command.arg("mount");
    if args.transport == "vrpc" {
        driver_command.arg("--hosted").arg(&socket);
    } else {
        driver_command.args(["--tcp", &listen]);
    }
    driver_command.arg(&mount_point);
    eprintln!("+ {}", describe(&driver_command));
    let driver = Guard::new(
        driver_command
            .spawn()
            .context("cannot start guest-driver")?,
    );
    wait_for(Duration::from_secs(30), "the mount to appear", || {
        is_mounted(&mount_point)
    })?;

    demonstrate(&mount_point, &directory)?;
    println!();
    println!("Your share is mounted at {}", mount_point.display());
    println!(
        "(storage domain: {listen}, disk image: {})",
        image.display()
    );

    if !args.demo_only {
        println!("Put your own files there. Press Ctrl-C to unmount and stop.");
        let interrupted = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&interrupted);
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;
        while !interrupted.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!();
    }
    eprintln!("unmounting {}", mount_point.display());
    driver.stop()?;
    eprintln!("stopping the storage domain");
    server.stop()?;
    execute(Command::new(&server_binary).arg("fsck").arg(&image))?;
    Ok(())
}

/// Entry point named like the other tasks.
///
/// # Errors
/// See [`quickstart`].
pub fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    quickstart(args)
}

/// Copy a file into the share and back out, and compare.
fn demonstrate(mount_point: &Path, scratch: &Path) -> anyhow::Result<()> {
    let mut payload = Vec::with_capacity(4 << 20);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while payload.len() < 4 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        payload.extend_from_slice(&state.to_le_bytes());
    }
    let source = scratch.join("demo-source.bin");
    let inside = mount_point.join("quickstart-demo.bin");
    let back = scratch.join("demo-copied-back.bin");
    std::fs::write(&source, &payload)?;
    std::fs::copy(&source, &inside).context("copy into the share")?;
    std::fs::copy(&inside, &back).context("copy out of the share")?;
    if std::fs::read(&back)? != payload {
        bail!("the file copied out of the share differs from the one copied in");
    }
    println!(
        "copied {} bytes into {} and back out: identical",
        payload.len(),
        inside.display()
    );
    let _ = std::fs::remove_file(source);
    let _ = std::fs::remove_file(back);
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_mounted(mount_point: &Path) -> anyhow::Result<bool> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    let wanted = mount_point.to_string_lossy();
    Ok(table
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_ref())))
}

fn wait_for(
    limit: Duration,
    what: &str,
    mut ready: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if ready()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out after {limit:?} waiting for {what}")
}

/// A child process stopped with SIGTERM when dropped or asked to.
struct Guard(Option<Child>);

impl Guard {
    fn new(child: Child) -> Self {
        Guard(Some(child))
    }

    /// SIGTERM, then wait up to 20 s; fail if it exits non-zero.
    fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.0.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("process {} exited with {status}", child.id());
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        bail!("process {} did not stop within 20 s of SIGTERM", child.id())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}
