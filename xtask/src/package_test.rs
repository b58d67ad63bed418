//! `cargo xtask package-test`: the guest package installed on this
//! machine, mounting through `/etc/fstab`.
//!
//! Builds `storage-domain-guest`, installs it with `dpkg -i`, starts a
//! hosted server on a scratch image, adds one line to `/etc/fstab` (type
//! `guest-driver`, options `hosted=SOCKET,export=/` and a marker option
//! `x-storage-domain-package-test` that `mount -a -O` selects, so no other
//! line is touched), runs `mount -a -t guest-driver -O MARKER`, checks that
//! a file round-trips, unmounts, mounts again with `mount DIR` (the fstab
//! line found by its mount point) and reads the file back, unmounts, and
//! purges the package. Whatever happens, a guard puts `/etc/fstab` back
//! byte for byte, unmounts, stops the daemons and the server, and purges.
//!
//! It needs root and dpkg; without them it says so and skips.

use crate::deb::{self, DebArgs, Package};
use crate::process::{cargo, execute, on_path};
use anyhow::{bail, Context};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const FSTAB: &str = "/etc/fstab";
/// The option that marks the test's fstab line (`x-` options are for
/// userspace: mount(8) keeps them, the helper ignores them).
const MARKER: &str = "x-storage-domain-package-test";
/// The fstab line's first field: the mount's source in /proc/mounts.
const SPEC: &str = "storage-domain-package-test";

/// Run the test, or say why it is skipped.
///
/// # Errors
/// When a step fails (the guard has cleaned up by then).
pub fn run() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED package test: not root (dpkg -i, /etc/fstab and mount need root)");
        return Ok(());
    }
    if !on_path("dpkg") || !on_path("dpkg-deb") {
        println!("SKIPPED package test: dpkg or dpkg-deb is missing (not a Debian machine)");
        return Ok(());
    }
    let package = Package::Guest.name();
    if installed(package) {
        bail!("{package} is already installed here; this test would purge it: `dpkg --purge {package}` first");
    }
    // The daemon mount.guest-driver starts outlives the helper; as the
    // subreaper this process inherits it, can wait for it to end and
    // leaves no zombie behind (whatever init does with orphans).
    nix::sys::prctl::set_child_subreaper(true).context("PR_SET_CHILD_SUBREAPER")?;
    let debs = deb::run(DebArgs {
        packages: vec![Package::Guest],
    })?;
    execute(cargo().args(["build", "-p", "storage-domain-hosted"]))?;
    let server_binary = crate::target_dir().join("debug/storage-domain-hosted");

    let directory = std::env::temp_dir().join(format!("sd-package-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(directory.join("mnt"))?;
    let mut guard = Guard {
        directory: directory.clone(),
        mount_point: directory.join("mnt"),
        fstab: None,
        installed: false,
        daemons: Vec::new(),
        server: None,
    };
    let socket = directory.join("vrpc.sock");
    let (server, _port) = crate::quickstart::start_server(
        &server_binary,
        &directory.join("disk.img"),
        64 << 20,
        &socket,
        &directory,
    )?;
    guard.server = Some(server);
    let outcome = steps(&mut guard, &debs[0], &socket);
    let cleaned = guard.clean();
    outcome.and(cleaned)?;
    println!("package test ok: installed, mounted through /etc/fstab, round-trip, purged");
    Ok(())
}

fn steps(guard: &mut Guard, deb: &Path, socket: &Path) -> anyhow::Result<()> {
    let mount_point = guard.mount_point.clone();
    execute(Command::new("dpkg").arg("-i").arg(deb))?;
    guard.installed = true;
    let helper = std::fs::read_link("/sbin/mount.guest-driver")
        .context("the package installs /sbin/mount.guest-driver")?;
    if helper != Path::new("/usr/bin/guest-driver") {
        bail!("/sbin/mount.guest-driver points at {}", helper.display());
    }
    if on_path("systemd-analyze") {
        execute(Command::new("systemd-analyze").args([
            "verify",
            "--man=no",
            "/lib/systemd/system/guest-driver@.service",
        ]))
        .context("the packaged unit does not verify")?;
    }

    let original = std::fs::read(FSTAB).with_context(|| format!("cannot read {FSTAB}"))?;
    let mut edited = original.clone();
    if !edited.is_empty() && !edited.ends_with(b"\n") {
        edited.push(b'\n');
    }
    let line = format!(
        "{SPEC} {} guest-driver defaults,_netdev,nofail,{MARKER},hosted={},export=/ 0 0\n",
        mount_point.display(),
        socket.display()
    );
    edited.extend_from_slice(line.as_bytes());
    guard.fstab = Some(original);
    std::fs::write(FSTAB, &edited).with_context(|| format!("cannot write {FSTAB}"))?;

    // 1. mount -a, selecting the test's line by its marker.
    execute(Command::new("mount").args(["-a", "-t", "guest-driver", "-O", MARKER]))?;
    guard.daemons = daemons(&mount_point);
    if guard.daemons.len() != 1 {
        bail!(
            "{} guest-driver daemons serve the mount, not 1",
            guard.daemons.len()
        );
    }
    let mounted = mount_line(&mount_point).context("mount -a mounted nothing")?;
    if !mounted.starts_with(&format!("{SPEC} ")) || !mounted.contains(" fuse.guest-driver ") {
        bail!("unexpected mount: {mounted}");
    }
    let file = mount_point.join("package-test.txt");
    let content = format!(
        "written through the fstab mount by {}\n",
        std::process::id()
    );
    std::fs::write(&file, &content).context("writing through the mount")?;
    if std::fs::read_to_string(&file)? != content {
        bail!("the file read back differs");
    }
    // Again: mount(8) sees the line mounted (same source, same mount
    // point) and does nothing.
    let again = Command::new("mount")
        .args(["-a", "-t", "guest-driver", "-O", MARKER])
        .output()?;
    if !again.status.success() {
        bail!(
            "a second mount -a failed ({}): {}",
            again.status,
            String::from_utf8_lossy(&again.stderr).trim()
        );
    }
    let mounts = mount_count(&mount_point);
    if mounts != 1 {
        bail!(
            "a second mount -a left {mounts} mounts at {} ({})",
            mount_point.display(),
            String::from_utf8_lossy(&again.stderr)
        );
    }
    unmount(guard)?;

    // 2. mount DIR: mount(8) finds the line by its mount point.
    execute(Command::new("mount").arg(&mount_point))?;
    guard.daemons = daemons(&mount_point);
    if guard.daemons.len() != 1 {
        bail!(
            "{} guest-driver daemons serve the mount, not 1",
            guard.daemons.len()
        );
    }
    if std::fs::read_to_string(&file).context("reading after a remount")? != content {
        bail!("the file did not survive the remount");
    }
    unmount(guard)?;
    Ok(())
}

/// `umount DIR`, then wait for the daemon to finish.
fn unmount(guard: &mut Guard) -> anyhow::Result<()> {
    execute(Command::new("umount").arg(&guard.mount_point))?;
    for pid in std::mem::take(&mut guard.daemons) {
        match wait_for(pid, Duration::from_secs(20)) {
            Some(WaitStatus::Exited(_, 0)) => {}
            Some(status) => bail!("guest-driver {pid} ended badly: {status:?}"),
            None => {
                guard.daemons.push(pid);
                bail!("guest-driver {pid} still runs 20 s after umount");
            }
        }
    }
    if mount_count(&guard.mount_point) != 0 {
        bail!("{} is still mounted", guard.mount_point.display());
    }
    Ok(())
}

/// Wait for a child (an adopted daemon) to end, at most `timeout`.
fn wait_for(pid: Pid, timeout: Duration) -> Option<WaitStatus> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(50)),
            Ok(status) => return Some(status),
            // Not our child (never adopted): poll /proc instead.
            Err(_) if Path::new(&format!("/proc/{pid}")).exists() => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(_) => return Some(WaitStatus::Exited(pid, 0)),
        }
    }
    None
}

/// The daemons serving `mount_point`: guest-driver processes whose
/// command line names it.
fn daemons(mount_point: &Path) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let wanted = mount_point.as_os_str().as_encoded_bytes();
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mut words = command_line.split(|byte| *byte == 0);
            words
                .next()
                .is_some_and(|program| program.ends_with(b"guest-driver"))
                && words.any(|word| word == wanted)
        })
        .map(Pid::from_raw)
        .collect()
}

fn mount_line(mount_point: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let target = format!(" {} ", mount_point.display());
    mounts
        .lines()
        .find(|line| line.contains(&target))
        .map(str::to_owned)
}

fn mount_count(mount_point: &Path) -> usize {
    let target = format!(" {} ", mount_point.display());
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(&target))
        .count()
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", package])
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("installed"))
}

/// What the test changed, put back by [`Guard::clean`] (or on drop).
struct Guard {
    directory: PathBuf,
    mount_point: PathBuf,
    /// `/etc/fstab` as it was, once the test has changed it.
    fstab: Option<Vec<u8>>,
    installed: bool,
    daemons: Vec<Pid>,
    /// The hosted server, stopped after the unmount.
    server: Option<crate::quickstart::Running>,
}

impl Guard {
    /// Undo everything; the first problem is returned after all steps ran.
    fn clean(&mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if let Some(original) = self.fstab.take() {
            if let Err(error) = std::fs::write(FSTAB, &original) {
                problems.push(format!("restoring {FSTAB}: {error}"));
            }
        }
        if mount_count(&self.mount_point) > 0 {
            let _ = Command::new("umount").arg(&self.mount_point).status();
            if mount_count(&self.mount_point) > 0 {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.mount_point)
                    .status();
            }
        }
        for pid in std::mem::take(&mut self.daemons) {
            if wait_for(pid, Duration::from_secs(5)).is_none() {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = wait_for(pid, Duration::from_secs(5));
            }
        }
        if self.installed {
            self.installed = false;
            let purged = Command::new("dpkg")
                .args(["--purge", Package::Guest.name()])
                .status();
            if !purged.is_ok_and(|status| status.success()) {
                problems.push(format!("dpkg --purge {} failed", Package::Guest.name()));
            }
            if std::fs::symlink_metadata("/sbin/mount.guest-driver").is_ok() {
                problems.push("/sbin/mount.guest-driver is left after the purge".into());
            }
        }
        if let Some(mut server) = self.server.take() {
            if let Err(error) = server.terminate(Duration::from_secs(20)) {
                problems.push(format!("stopping the server: {error}"));
            }
        }
        let _ = std::fs::remove_dir_all(&self.directory);
        match problems.first() {
            Some(problem) => bail!("cleaning up: {problem}"),
            None => Ok(()),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.clean();
    }
}
