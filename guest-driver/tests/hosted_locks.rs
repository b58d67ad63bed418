//! Locks across mounts (`docs/guest-driver.md`, "Locks"): `fcntl` byte
//! ranges and `flock` taken through one mount exclude processes on every
//! other mount of the export (two hosted VRPC mounts and a TCP mount of one
//! server), a waiting lock wakes when the holder lets go, and locks go when
//! their process dies and when their guest-driver dies.
//!
//! The contending processes are this test binary run again as a helper
//! (`GD_LOCK_HELPER`), and util-linux's `flock(1)`.

mod common;

use common::{Mount, Server};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// `F_SETLK`, `F_SETLKW` or `F_GETLK` of `kind` over `[start, start + length)`
/// on `file`; the kernel's answer (for F_GETLK, the conflicting lock).
fn fcntl_lock(
    file: &File,
    command: libc::c_int,
    kind: libc::c_int,
    start: i64,
    length: i64,
) -> Result<libc::flock, std::io::Error> {
    // SAFETY: flock is plain data; zero is a valid value of every field.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = start;
    lock.l_len = length;
    // SAFETY: the descriptor is open and `lock` outlives the call.
    let result = unsafe { libc::fcntl(file.as_raw_fd(), command, &mut lock) };
    if result == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(lock)
    }
}

/// The helper process: `GD_LOCK_HELPER=PATH,wait|try,read|write,START,LENGTH`
/// takes the lock, prints `granted` or `denied ERRNO`, then holds it until
/// its stdin closes.
#[test]
fn lock_helper() {
    let Ok(spec) = std::env::var("GD_LOCK_HELPER") else {
        return;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(parts[0])
        .unwrap();
    let command = if parts[1] == "wait" {
        libc::F_SETLKW
    } else {
        libc::F_SETLK
    };
    let kind = if parts[2] == "write" {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    };
    let start: i64 = parts[3].parse().unwrap();
    let length: i64 = parts[4].parse().unwrap();
    match fcntl_lock(&file, command, kind, start, length) {
        Ok(_) => println!("granted"),
        Err(error) => println!("denied {}", error.raw_os_error().unwrap_or(0)),
    }
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// A helper process taking a lock on `path`; its first line is read by
/// [`answer`].
fn helper(path: &Path, spec: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lock_helper", "--nocapture", "--test-threads=1"])
        .env("GD_LOCK_HELPER", format!("{},{spec}", path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The helper's answer (`granted`, `denied N`), skipping the harness's
/// own lines.
fn answer(child: &mut Child) -> String {
    let stdout = child.stdout.as_mut().unwrap();
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            return "exited".into();
        }
        // The harness may print its `test lock_helper ... ` first.
        for word in ["granted", "denied"] {
            if let Some(at) = line.find(word) {
                return line[at..].trim().to_string();
            }
        }
    }
}

/// Takes a lock through a helper and lets it go at once.
fn try_once(path: &Path, spec: &str) -> String {
    let mut child = helper(path, spec);
    let said = answer(&mut child);
    drop(child.stdin.take());
    child.wait().unwrap();
    said
}

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within 10 s");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn locks_exclude_across_mounts_wait_and_go_with_their_holders() {
    require_mounts!();
    if !common::server_has_vrpc() {
        eprintln!("skipped: the server binary has no --vrpc-socket");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start_with(scratch.path(), true);
    let first = Mount::start_hosted(&server, scratch.path(), "first", &[]);
    let second = Mount::start_hosted(&server, scratch.path(), "second", &[]);
    let tcp = Mount::start(&server, scratch.path(), "tcp", &[]);
    fs::write(first.path.join("shared"), b"0123456789").unwrap();
    let on = |mount: &Mount| mount.path.join("shared");

    // This process holds bytes 0..100 for writing through the first mount.
    let mine = OpenOptions::new()
        .read(true)
        .write(true)
        .open(on(&first))
        .unwrap();
    fcntl_lock(&mine, libc::F_SETLK, libc::F_WRLCK, 0, 100).unwrap();
    let denied = format!("denied {}", libc::EAGAIN);
    assert_eq!(try_once(&on(&second), "try,write,50,10"), denied);
    assert_eq!(try_once(&on(&second), "try,read,0,1"), denied);
    assert_eq!(try_once(&on(&tcp), "try,read,99,1"), denied);
    assert_eq!(try_once(&on(&second), "try,write,100,0"), "granted");
    // F_GETLK through another mount names the holder's range and kind.
    let theirs = File::open(on(&second)).unwrap();
    let conflict = fcntl_lock(&theirs, libc::F_GETLK, libc::F_RDLCK, 10, 5).unwrap();
    assert_eq!(i32::from(conflict.l_type), libc::F_WRLCK);
    assert_eq!((conflict.l_start, conflict.l_len), (0, 100));
    assert_eq!(conflict.l_pid as u32, std::process::id());

    // A split: unlocking the middle frees it for others, not the ends.
    fcntl_lock(&mine, libc::F_SETLK, libc::F_UNLCK, 40, 20).unwrap();
    assert_eq!(try_once(&on(&second), "try,write,45,10"), "granted");
    assert_eq!(try_once(&on(&second), "try,write,35,10"), denied);
    // A downgrade: readers may share it now, writers may not.
    fcntl_lock(&mine, libc::F_SETLK, libc::F_RDLCK, 0, 40).unwrap();
    assert_eq!(try_once(&on(&tcp), "try,read,0,40"), "granted");
    assert_eq!(try_once(&on(&tcp), "try,write,0,40"), denied);

    // A waiting lock on the second mount wakes when this process lets go.
    let mut waiter = helper(&on(&second), "wait,write,0,0");
    thread::sleep(Duration::from_millis(300));
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "the waiter gave up early"
    );
    drop(mine); // close: every lock of this process on the file goes
    assert_eq!(answer(&mut waiter), "granted");
    // Held by the waiter now; its death (its close) releases it.
    assert_eq!(try_once(&on(&first), "try,read,0,1"), denied);
    waiter.kill().unwrap();
    waiter.wait().unwrap();
    eventually("a dead process's lock released", || {
        try_once(&on(&first), "try,write,0,0") == "granted"
    });

    // flock(1) through two mounts: exclusive, then free.
    // `-o`: the lock is flock's own, not inherited by its `sleep`.
    let mut holder = Command::new("flock")
        .args(["-o", "-x"])
        .arg(on(&first))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    eventually("flock taken", || {
        !Command::new("flock")
            .args(["-n", "-x"])
            .arg(on(&second))
            .arg("true")
            .status()
            .unwrap()
            .success()
    });
    holder.kill().unwrap();
    holder.wait().unwrap();
    eventually("flock released by its holder's death", || {
        Command::new("flock")
            .args(["-n", "-x"])
            .arg(on(&second))
            .arg("true")
            .status()
            .unwrap()
            .success()
    });

    // A guest-driver that dies takes its locks with it (its VRPC session
    // ends), so another mount gets them.
    let mut orphan = helper(&on(&second), "try,write,0,0");
    assert_eq!(answer(&mut orphan), "granted");
    assert_eq!(try_once(&on(&first), "try,write,0,1"), denied);
    second.kill();
    eventually("a dead guest-driver's locks released", || {
        try_once(&on(&first), "try,write,0,0") == "granted"
    });
    let _ = orphan.kill();
    let _ = orphan.wait();

    tcp.stop();
    first.stop();
    server.stop_and_check();
}
