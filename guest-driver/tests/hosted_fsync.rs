//! What `fsync` promises on a hosted VRPC mount, whose calls the server
//! answers before committing them (`vrpc=local`), checked by SIGKILLing
//! the server right after the `fsync` returned:
//!
//! - `fsync` through a descriptor that wrote nothing (`sync FILE`, or a
//!   file written, closed and opened again) makes the file's data durable:
//!   it sends a COMMIT (it used to return at once);
//! - `fsync` of a directory makes the names made in it durable (it used to
//!   return at once);
//! - writes a restart lost are reported by the `fsync` of a descriptor
//!   opened after the writer closed (the verifiers are kept per file, not
//!   per descriptor), once.
//!
//! Found by `cargo xtask torture` (docs/reliability.md, "Kill campaign").

mod common;

use common::{Mount, Server};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Waits until the mount answers again after a restart: a `statfs`, which
/// the kernel never caches and the driver always asks the server (a
/// listing may come from the kernel's cache while the driver is still
/// reconnecting; the test's next open then failed with EIO, about once
/// in 30 runs).
fn wait_for_mount(mount: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !reaches_server(mount) {
        assert!(Instant::now() < deadline, "the mount did not come back");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a `statfs` of `mount` succeeds.
fn reaches_server(mount: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mount.as_os_str().as_bytes()).unwrap();
    let mut statistics = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `statistics` a
    // writable `struct statvfs`, both live for the call.
    unsafe { libc::statvfs(path.as_ptr(), statistics.as_mut_ptr()) == 0 }
}

fn commits(mount: &Mount) -> u64 {
    mount.stats()["rpc.COMMIT"]
}

#[test]
fn fsync_of_any_descriptor_and_of_a_directory_is_durable_across_a_kill() {
    require_mounts!();
    if !common::server_has_vrpc() {
        eprintln!("skipped: the server binary has no --vrpc-socket");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start_with(scratch.path(), true);
    let mount = Mount::start_hosted(&server, scratch.path(), "mnt", &[]);
    let data = mount.path.join("data");
    let names = mount.path.join("names");
    fs::create_dir(&names).unwrap();
    File::open(&mount.path).unwrap().sync_all().unwrap();

    // Written and closed, then synced through a new read-only descriptor.
    fs::write(&data, b"durable through another descriptor").unwrap();
    let before = commits(&mount);
    File::open(&data).unwrap().sync_all().unwrap();
    assert!(
        commits(&mount) > before,
        "fsync of a read-only descriptor sent no COMMIT"
    );
    // A name, made durable by the fsync of its directory alone.
    File::create(names.join("made")).unwrap();
    let before = commits(&mount);
    File::open(&names).unwrap().sync_all().unwrap();
    assert!(
        commits(&mount) > before,
        "fsync of a directory sent no COMMIT"
    );

    // The server dies before its background commit (5 s).
    let server = server.kill_and_restart(scratch.path());
    wait_for_mount(&mount.path);
    assert_eq!(
        fs::read(&data).unwrap(),
        b"durable through another descriptor"
    );
    assert!(
        names.join("made").exists(),
        "the name made durable by fsync of its directory is gone"
    );

    // Writes a restart loses, reported by a later descriptor's fsync, once.
    {
        let mut file = OpenOptions::new().write(true).open(&data).unwrap();
        file.write_all(b"LOST").unwrap();
        drop(file);
    }
    let server = server.kill_and_restart(scratch.path());
    wait_for_mount(&mount.path);
    let file = OpenOptions::new().write(true).open(&data).unwrap();
    let error = file
        .sync_all()
        .expect_err("the lost write was not reported");
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    file.sync_all().expect("the loss is reported once");
    drop(file);
    assert_eq!(
        fs::read(&data).unwrap(),
        b"durable through another descriptor"
    );
    mount.stop();
    server.stop_and_check();
}
