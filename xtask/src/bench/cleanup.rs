//! Everything the bench sets up is undone: on success, on error and on
//! Ctrl-C.
//!
//! Each process, mount, loop device and network namespace is registered
//! here when it is created and gets a [`Guard`]. Dropping the guard undoes
//! it (in any path out of a function, including `?`). A SIGINT, SIGTERM or
//! SIGHUP runs every registered undo, newest first, and exits: the signal
//! handler takes the registry's lock and never gives it back, so the main
//! thread cannot create anything new meanwhile.

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Something to undo.
#[derive(Debug)]
pub enum Resource {
    /// A child process: SIGTERM, then SIGKILL after a grace period. A
    /// workload's process leads a process group of its own, and the
    /// signals go to the whole group (make's compilers, xargs' stats).
    Process { pid: u32, name: String, group: bool },
    /// A mount point: lazily unmounted if still mounted.
    Mount(PathBuf),
    /// A loop device: detached.
    LoopDevice(PathBuf),
    /// A named network namespace: deleted.
    NetworkNamespace(String),
}

struct Registry {
    next: u64,
    entries: Vec<(u64, Resource)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 0,
    entries: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Undoes its resource when dropped (or at [`Guard::release`]).
#[derive(Debug)]
#[must_use = "dropping the guard undoes the resource at once"]
pub struct Guard {
    id: u64,
}

impl Guard {
    /// Undo the resource now.
    pub fn release(self) {
        drop(self);
    }

    /// Forget the resource without undoing it (it is gone already).
    pub fn disarm(self) {
        registry().entries.retain(|(id, _)| *id != self.id);
        std::mem::forget(self);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut registry = registry();
        if let Some(index) = registry.entries.iter().position(|(id, _)| *id == self.id) {
            let (_, resource) = registry.entries.remove(index);
            undo(&resource);
        }
    }
}

/// Register `resource` to be undone when the guard drops or on a signal.
pub fn register(resource: Resource) -> Guard {
    let mut registry = registry();
    let id = registry.next;
    registry.next += 1;
    registry.entries.push((id, resource));
    Guard { id }
}

/// Install the SIGINT/SIGTERM/SIGHUP handler that undoes everything and
/// exits with status 130.
///
/// # Errors
/// When a handler is installed already.
pub fn install_signal_handler() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        eprintln!("\nbench: interrupted; cleaning up");
        let mut registry = registry();
        while let Some((_, resource)) = registry.entries.pop() {
            undo(&resource);
        }
        eprintln!("bench: cleaned up");
        std::process::exit(130);
    })?;
    Ok(())
}

fn undo(resource: &Resource) {
    match resource {
        Resource::Process { pid, name, group } => stop_process(*pid, name, *group),
        Resource::Mount(path) => {
            if is_mounted(path) {
                eprintln!("bench: unmounting {}", path.display());
                quiet(Command::new("umount").arg("-l").arg(path));
            }
        }
        Resource::LoopDevice(device) => {
            quiet(Command::new("losetup").arg("-d").arg(device));
        }
        Resource::NetworkNamespace(name) => {
            quiet(Command::new("ip").args(["netns", "delete", name]));
        }
    }
}

/// Run a cleanup command, reporting but not failing on errors.
fn quiet(command: &mut Command) {
    match command.stdout(Stdio::null()).status() {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!(
            "bench: cleanup step {} exited with {status}",
            crate::process::describe(command)
        ),
        Err(error) => eprintln!(
            "bench: cleanup step {} did not start: {error}",
            crate::process::describe(command)
        ),
    }
}

/// SIGTERM, wait up to ten seconds, then SIGKILL; reaps the process.
fn stop_process(pid: u32, name: &str, group: bool) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    let pid = Pid::from_raw(raw);
    // A negative pid signals the process group the process leads.
    let target = if group { Pid::from_raw(-raw) } else { pid };
    if kill(target, Signal::SIGTERM) == Err(Errno::ESRCH) {
        let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            // Exited and reaped, or not our child any more.
            Ok(_) | Err(_) => {
                if group {
                    let _ = kill(target, Signal::SIGKILL);
                }
                return;
            }
        }
        if Instant::now() > deadline {
            eprintln!("bench: {name} ({pid}) ignored SIGTERM; killing it");
            let _ = kill(target, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Run a workload's command in a process group of its own, registered so
/// that Ctrl-C (which the terminal no longer delivers to it) stops the
/// whole group; wait for it and return its output.
///
/// # Errors
/// When it cannot start or cannot be waited for.
pub fn run_workload(name: &str, command: &mut Command) -> anyhow::Result<std::process::Output> {
    use std::os::unix::process::CommandExt as _;
    command.process_group(0);
    let mut process = ManagedProcess::spawn_inner(name, command, true)?;
    let child = process.child.take().context("process already waited for")?;
    let output = child.wait_with_output();
    if let Some(guard) = process.guard.take() {
        guard.disarm();
    }
    Ok(output?)
}

/// Whether `path` is a mount point now (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| unescape_mountinfo(mount_point) == wanted)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// A child process that is stopped when its guard drops.
#[derive(Debug)]
pub struct ManagedProcess {
    child: Option<Child>,
    guard: Option<Guard>,
    name: String,
}

impl ManagedProcess {
    /// Spawn `command` and register it.
    ///
    /// # Errors
    /// When it cannot start.
    pub fn spawn(name: &str, command: &mut Command) -> anyhow::Result<ManagedProcess> {
        ManagedProcess::spawn_inner(name, command, false)
    }

    fn spawn_inner(
        name: &str,
        command: &mut Command,
        group: bool,
    ) -> anyhow::Result<ManagedProcess> {
        // Hold the registry across the spawn so the signal handler cannot
        // run between the process starting and its registration.
        let mut registry = registry();
        let child = command.spawn().map_err(|error| {
            anyhow::anyhow!(
                "cannot start {}: {error}",
                crate::process::describe(command)
            )
        })?;
        let id = registry.next;
        registry.next += 1;
        registry.entries.push((
            id,
            Resource::Process {
                pid: child.id(),
                name: name.to_owned(),
                group,
            },
        ));
        drop(registry);
        let guard = Guard { id };
        Ok(ManagedProcess {
            child: Some(child),
            guard: Some(guard),
            name: name.to_owned(),
        })
    }

    /// The exit status if the process has exited (reaping it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        match self.child.as_mut()?.try_wait() {
            Ok(Some(status)) => {
                if let Some(guard) = self.guard.take() {
                    guard.disarm();
                }
                Some(status)
            }
            Ok(None) | Err(_) => None,
        }
    }

    /// SIGTERM (then SIGKILL after ten seconds) and reap.
    pub fn stop(mut self) {
        if let Some(guard) = self.guard.take() {
            guard.release();
        }
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// CPU seconds (user and system) process `pid` used so far, from
/// `/proc/PID/stat`; `None` when it is gone or the line is unreadable.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields count from after its `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // In USER_HZ, which Linux's user ABI fixes at 100 a second.
    Some(ticks as f64 / 100.0)
}
