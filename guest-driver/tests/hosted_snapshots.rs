//! Live snapshots through real mounts: `storage-domain-hosted snapshot`
//! against the running server, two guest-driver mounts, the old tree
//! read under `.snapshots/NAME` of the other mount while the first
//! changes the live one, EROFS for every change there, and the
//! snapshot's files going away (ENOENT/ESTALE) once it is deleted; the
//! image passes fsck afterwards.
//!
//! Needs root and /dev/fuse, like `mount.rs`; each test says why it skips.

mod common;

use std::fs;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Mount, Server};

/// How long a change may take to show in the other mount.
const WINDOW: Duration = Duration::from_secs(5);

const EROFS: i32 = 30;
const ESTALE: i32 = 116;

fn snapshot(server: &Server, arguments: &[&str]) -> Output {
    let (operation, rest) = arguments.split_first().expect("an operation");
    Command::new(common::server_binary())
        .args(["snapshot", operation])
        .arg(&server.image)
        .args(rest)
        .output()
        .expect("running storage-domain-hosted snapshot")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Polls `check` until it holds, failing after [`WINDOW`].
fn within(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < WINDOW, "{what}: not after {WINDOW:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn assert_read_only(result: std::io::Result<()>, what: &str) {
    match result {
        Err(error) if error.raw_os_error() == Some(EROFS) => {}
        other => panic!("{what}: expected EROFS, got {other:?}"),
    }
}

fn names(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("read_dir {}: {error}", directory.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `Err` of stat-like calls on a deleted snapshot: gone (ENOENT) or stale.
fn gone(result: std::io::Result<fs::Metadata>) -> bool {
    match result {
        Err(error) => error.kind() == ErrorKind::NotFound || error.raw_os_error() == Some(ESTALE),
        Ok(_) => false,
    }
}

fn run(scratch: &Path, second_over_tcp: bool) {
    let server = Server::start_with(scratch, true);
    let first = Mount::start_hosted(&server, scratch, "first", &[]);
    let second = if second_over_tcp {
        Mount::start(&server, scratch, "second", &[])
    } else {
        Mount::start_hosted(&server, scratch, "second", &[])
    };
    let a = first.path.clone();
    let b = second.path.clone();

    fs::write(a.join("notes.txt"), b"version 1").unwrap();
    fs::create_dir(a.join("dir")).unwrap();
    fs::write(a.join("dir/inner"), b"inner 1").unwrap();
    // The second mount has it cached before the snapshot is taken.
    within("the file in the second mount", || {
        fs::read(b.join("notes.txt")).ok().as_deref() == Some(&b"version 1"[..])
    });

    // The second mount looks for the snapshot before it exists (and may
    // cache "not found", and the empty listing).
    assert!(gone(fs::metadata(b.join(".snapshots/before"))));
    assert!(names(&b.join(".snapshots")).is_empty());

    // Taken through the running server (the image is locked by it).
    let taken = snapshot(&server, &["create", "before"]);
    assert!(taken.status.success(), "{}", text(&taken.stderr));
    assert!(text(&taken.stdout).contains("snapshot \"before\""));
    let again = snapshot(&server, &["create", "before"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("exists already"),
        "{}",
        text(&again.stderr)
    );
    let bad = snapshot(&server, &["create", "a/b"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("bad snapshot name"));
    let missing = snapshot(&server, &["delete", "nothing"]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("no snapshot named \"nothing\""));
    let listed = snapshot(&server, &["list"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(text(&listed.stdout).starts_with("before\t"));

    // The second mount sees it by name at once: the "not found" its
    // kernel cached is dropped (nothing else changed that would drop it).
    let old = b.join(".snapshots/before");
    within("the snapshot in the second mount", || old.is_dir());

    // The first mount changes the live tree.
    fs::write(a.join("notes.txt"), b"version 2, longer").unwrap();
    fs::remove_file(a.join("dir/inner")).unwrap();
    fs::write(a.join("later"), b"after the snapshot").unwrap();

    // The second mount reads the old tree under `.snapshots`, hidden from
    // the root's listing but found by name.
    assert!(!names(&b).contains(&".snapshots".to_string()));
    assert_eq!(names(&b.join(".snapshots")), ["before"]);
    assert_eq!(names(&old), ["dir", "notes.txt"]);
    assert_eq!(fs::read(old.join("notes.txt")).unwrap(), b"version 1");
    assert_eq!(fs::read(old.join("dir/inner")).unwrap(), b"inner 1");
    assert!(gone(fs::metadata(old.join("later"))));
    within("the live change in the second mount", || {
        fs::read(b.join("notes.txt")).ok().as_deref() == Some(&b"version 2, longer"[..])
    });
    // Still the old bytes, after the live file changed under the same
    // inode number.
    assert_eq!(fs::read(old.join("notes.txt")).unwrap(), b"version 1");
    if !second_over_tcp {
        // Snapshot files never change: with the metadata table the kernel
        // keeps their pages (and their names), so reading again sends no
        // READ or LOOKUP. The watcher first looks once at `.snapshots`,
        // which the lookups above handed to the kernel, and may drop what
        // the kernel held of the snapshot then (on a busy machine after
        // the reads above): let it, and read once more, before counting.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(fs::read(old.join("notes.txt")).unwrap(), b"version 1");
        assert_eq!(fs::read(old.join("dir/inner")).unwrap(), b"inner 1");
        let before = second.stats();
        // A page the machine's memory management reclaimed meanwhile is
        // read again; cachestat tells those (see `common::page_cache`).
        let mut reclaimed = 0;
        for _ in 0..3 {
            for (name, expected) in [("notes.txt", &b"version 1"[..]), ("dir/inner", b"inner 1")] {
                let mut file = fs::File::open(old.join(name)).unwrap();
                reclaimed += common::page_cache(&file, 4096).map_or(0, |state| state.nr_evicted);
                let mut read = Vec::new();
                file.read_to_end(&mut read).unwrap();
                assert_eq!(read, expected, "{name}");
            }
        }
        let after = second.stats();
        assert_eq!(
            after["rpc.LOOKUP"], before["rpc.LOOKUP"],
            "rpc.LOOKUP sent again"
        );
        assert!(
            after["rpc.READ"] - before["rpc.READ"] <= reclaimed,
            "rpc.READ sent again: {} calls, {reclaimed} pages reclaimed",
            after["rpc.READ"] - before["rpc.READ"]
        );
    }
    assert_ne!(
        fs::metadata(old.join("notes.txt")).unwrap().ino(),
        fs::metadata(b.join("notes.txt")).unwrap().ino()
    );

    // Every change there is EROFS.
    assert_read_only(
        fs::write(old.join("notes.txt"), b"x"),
        "write into a snapshot file",
    );
    assert_read_only(
        fs::OpenOptions::new()
            .append(true)
            .open(old.join("notes.txt"))
            .map(|_| ()),
        "open a snapshot file for writing",
    );
    assert_read_only(fs::write(old.join("new"), b"x"), "create in a snapshot");
    assert_read_only(fs::create_dir(old.join("new")), "mkdir in a snapshot");
    assert_read_only(
        fs::remove_file(old.join("notes.txt")),
        "unlink in a snapshot",
    );
    assert_read_only(fs::remove_dir(old.join("dir")), "rmdir in a snapshot");
    assert_read_only(
        std::os::unix::fs::symlink("notes.txt", old.join("link")),
        "symlink in a snapshot",
    );
    assert_read_only(
        fs::rename(old.join("notes.txt"), b.join("moved")),
        "rename out of a snapshot",
    );
    assert_read_only(
        fs::rename(b.join("later"), old.join("later")),
        "rename into a snapshot",
    );
    assert_read_only(
        fs::hard_link(b.join("later"), old.join("linked")),
        "link into a snapshot",
    );
    assert_read_only(
        fs::set_permissions(
            old.join("notes.txt"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        ),
        "chmod in a snapshot",
    );
    assert_read_only(
        fs::create_dir(b.join(".snapshots/new")),
        "mkdir in .snapshots",
    );
    assert_eq!(fs::read(old.join("notes.txt")).unwrap(), b"version 1");
    assert!(gone(fs::metadata(b.join("moved"))));

    // Held open across the deletion.
    let mut open = fs::File::open(old.join("notes.txt")).unwrap();
    let mut held = String::new();
    open.read_to_string(&mut held).unwrap();
    assert_eq!(held, "version 1");

    let deleted = snapshot(&server, &["delete", "before"]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    within("the deleted snapshot's name", || {
        gone(fs::metadata(&old)) && names(&b.join(".snapshots")).is_empty()
    });
    within("the deleted snapshot's file by path", || {
        gone(fs::metadata(old.join("notes.txt")))
    });
    // The open file: its handle is stale at the server.
    within("the deleted snapshot's open file", || {
        open.seek(SeekFrom::Start(0)).unwrap();
        let mut buffer = Vec::new();
        let read = open.read_to_end(&mut buffer);
        let attributes = open.metadata();
        matches!(&attributes, Err(error) if error.raw_os_error() == Some(ESTALE))
            || matches!(&read, Err(error) if error.raw_os_error() == Some(ESTALE))
    });
    drop(open);

    // The live tree is whole, in both mounts.
    assert_eq!(fs::read(a.join("notes.txt")).unwrap(), b"version 2, longer");
    assert_eq!(fs::read(b.join("later")).unwrap(), b"after the snapshot");
    let listed = snapshot(&server, &["list"]);
    assert!(listed.status.success());
    assert!(text(&listed.stdout).is_empty(), "{}", text(&listed.stdout));

    first.stop();
    second.stop();
    server.stop_and_check();
}

/// Both mounts over hosted VRPC (long kernel caching kept coherent by the
/// metadata table).
#[test]
fn a_live_snapshot_is_read_by_another_vrpc_mount_and_goes_away_when_deleted() {
    require_mounts!();
    if !common::server_has_vrpc() {
        eprintln!("skipped: the server binary has no --vrpc-socket");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    run(scratch.path(), false);
}

/// The reading mount over TCP (no metadata table).
#[test]
fn a_live_snapshot_is_read_by_a_tcp_mount_and_goes_away_when_deleted() {
    require_mounts!();
    if !common::server_has_vrpc() {
        eprintln!("skipped: the server binary has no --vrpc-socket");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    run(scratch.path(), true);
}
