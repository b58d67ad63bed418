//! End-to-end: the real hosted server, real FUSE mounts, std::fs
//! operations, clean unmount, and an offline fsck of the image.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{Mount, Server};

/// Deterministic bytes that differ at every offset.
fn pattern(length: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn errno(error: &std::io::Error) -> i32 {
    error.raw_os_error().unwrap_or(0)
}

#[test]
fn file_operations_through_a_mount_leave_a_clean_image() {
    require_mounts!();
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start(scratch.path());
    let mount = Mount::start(&server, scratch.path(), "mnt", &[]);
    let root = mount.path.clone();

    // Files: small, multi-megabyte (several 1 MiB WRITEs and READs), append.
    fs::write(root.join("small"), b"hello, storage domain\n").unwrap();
    assert_eq!(
        fs::read(root.join("small")).unwrap(),
        b"hello, storage domain\n"
    );
    let big = pattern(3 * 1024 * 1024 + 12_345, 7);
    fs::write(root.join("big"), &big).unwrap();
    assert_eq!(fs::read(root.join("big")).unwrap(), big);
    let mut file = OpenOptions::new()
        .append(true)
        .open(root.join("small"))
        .unwrap();
    file.write_all(b"more\n").unwrap();
    file.sync_all().unwrap();
    drop(file);
    assert_eq!(
        fs::read_to_string(root.join("small")).unwrap(),
        "hello, storage domain\nmore\n"
    );

    // Random access and truncation.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.join("big"))
        .unwrap();
    file.seek(SeekFrom::Start(1_000_000)).unwrap();
    file.write_all(b"XYZ").unwrap();
    file.set_len(1_000_002).unwrap();
    drop(file);
    let data = fs::read(root.join("big")).unwrap();
    assert_eq!(data.len(), 1_000_002);
    assert_eq!(&data[..1_000_000], &big[..1_000_000]);
    assert_eq!(&data[1_000_000..], b"XY");

    // Directories, rename, hard and symbolic links, modes.
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::rename(root.join("small"), root.join("a/b/c/moved")).unwrap();
    assert!(!root.join("small").exists());
    fs::hard_link(root.join("a/b/c/moved"), root.join("a/link")).unwrap();
    let original = fs::metadata(root.join("a/b/c/moved")).unwrap();
    let linked = fs::metadata(root.join("a/link")).unwrap();
    assert_eq!(original.ino(), linked.ino(), "hard links share an inode");
    assert_eq!(linked.nlink(), 2);
    std::os::unix::fs::symlink("b/c/moved", root.join("a/symbolic")).unwrap();
    assert_eq!(
        fs::read_link(root.join("a/symbolic")).unwrap(),
        std::path::Path::new("b/c/moved")
    );
    assert_eq!(
        fs::read_to_string(root.join("a/symbolic")).unwrap(),
        "hello, storage domain\nmore\n"
    );
    fs::set_permissions(root.join("a/link"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        fs::metadata(root.join("a/b/c/moved")).unwrap().mode() & 0o7777,
        0o600
    );

    // A directory listed over many READDIRPLUS / FUSE buffers.
    fs::create_dir(root.join("many")).unwrap();
    for index in 0..600 {
        File::create(root.join(format!("many/file-with-a-longish-name-{index:04}"))).unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(root.join("many"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let expected: Vec<String> = (0..600)
        .map(|index| format!("file-with-a-longish-name-{index:04}"))
        .collect();
    assert_eq!(names, expected);

    // Errors arrive as the right errno.
    let error = fs::read(root.join("missing")).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
    let error = fs::create_dir(root.join("a")).unwrap_err();
    assert_eq!(errno(&error), libc::EEXIST);
    let error = fs::remove_dir(root.join("a")).unwrap_err();
    assert_eq!(errno(&error), libc::ENOTEMPTY);
    let error = fs::read_dir(root.join("big")).unwrap_err();
    assert_eq!(errno(&error), libc::ENOTDIR);
    let error = File::create(root.join("x".repeat(256))).unwrap_err();
    assert_eq!(errno(&error), libc::ENAMETOOLONG);

    // An open file survives its unlink (silly rename) and goes at close.
    let mut open = File::open(root.join("a/b/c/moved")).unwrap();
    fs::remove_file(root.join("a/b/c/moved")).unwrap();
    fs::remove_file(root.join("a/link")).unwrap();
    assert_eq!(open.metadata().unwrap().nlink(), 0);
    let mut text = String::new();
    open.read_to_string(&mut text).unwrap();
    assert_eq!(text, "hello, storage domain\nmore\n");
    drop(open);
    let left: Vec<_> = fs::read_dir(root.join("a/b/c")).unwrap().collect();
    assert!(left.is_empty(), "hidden file left behind: {left:?}");

    // Removal of everything.
    fs::remove_dir_all(root.join("many")).unwrap();
    fs::remove_dir_all(root.join("a")).unwrap();
    fs::remove_file(root.join("big")).unwrap();
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0);

    // The counters are readable by the stats command.
    let stats = mount.stats();
    assert!(stats["rpc.WRITE"] >= 4, "{stats:?}");
    assert!(stats["rpc.COMMIT"] >= 1, "{stats:?}");
    assert!(stats["rpc.READDIRPLUS"] >= 2, "{stats:?}");
    assert_eq!(stats["metatab.hits"], 0, "TCP maps no table");

    mount.stop();
    server.stop_and_check();
}

/// Polls `check` for up to `window` (once when zero).
fn within(window: std::time::Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + window;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not visible within {window:?}"
        );
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
}

/// Writes through one mount, checks through the other, both ways: sizes
/// and mtimes must show within `window` (zero: at once), contents at once
/// on the next open (close-to-open).
fn check_coherence(first: &Mount, second: &Mount, window: std::time::Duration) {
    let in_first = first.path.join("shared");
    let in_second = second.path.join("shared");
    for round in 0..20u32 {
        // Lengths and contents change every round, often within one
        // second, so a stale size, mtime or page cache shows.
        let content = pattern(1000 + (round as usize * 7919) % 50_000, round);
        fs::write(&in_first, &content).unwrap();
        let written = fs::metadata(&in_first).unwrap();
        within(window, &format!("round {round}: size and mtime"), || {
            let seen = fs::metadata(&in_second).unwrap();
            seen.len() == content.len() as u64
                && (seen.mtime(), seen.mtime_nsec()) == (written.mtime(), written.mtime_nsec())
        });
        assert_eq!(fs::read(&in_second).unwrap(), content, "round {round}");
        // The other direction, with the first mount's pages cached.
        let reply = pattern(500 + round as usize, round + 1000);
        fs::write(&in_second, &reply).unwrap();
        assert_eq!(fs::read(&in_first).unwrap(), reply, "round {round} back");
        within(window, &format!("round {round}: size back"), || {
            fs::metadata(&in_first).unwrap().len() == reply.len() as u64
        });
    }
    // Names: a directory made in one mount is found in the other.
    let made = format!(
        "made-in-{}",
        first.path.file_name().unwrap().to_string_lossy()
    );
    fs::create_dir(first.path.join(&made)).unwrap();
    within(window, "a new directory", || {
        second.path.join(&made).is_dir()
    });
}

/// Two TCP mounts of one export (no metadata table): what one writes and
/// closes, the other sees at once through stat and read.
#[test]
fn a_second_mount_sees_closed_writes_at_once() {
    require_mounts!();
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start(scratch.path());
    let first = Mount::start(&server, scratch.path(), "first", &[]);
    let second = Mount::start(&server, scratch.path(), "second", &[]);
    check_coherence(&first, &second, std::time::Duration::ZERO);
    first.stop();
    second.stop();
    server.stop_and_check();
}

/// The same over hosted VRPC, attributes from the shared metadata table:
/// the table must be coherent across guests, and actually used.
#[test]
fn hosted_mounts_answer_stat_from_the_shared_table_coherently() {
    require_mounts!();
    if !common::server_has_vrpc() {
        eprintln!("skipped: the server binary has no --vrpc-socket");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start_with(scratch.path(), true);
    // Default settings: the kernel caches, the watcher invalidates (within
    // milliseconds; 2 s allowed on a loaded machine).
    let first = Mount::start_hosted(&server, scratch.path(), "first", &[]);
    let second = Mount::start_hosted(&server, scratch.path(), "second", &[]);
    check_coherence(&first, &second, std::time::Duration::from_secs(2));
    // Without kernel caching every stat reads the table: current at once.
    let uncached = ["--attr-timeout", "0", "--entry-timeout", "0"];
    let fourth = Mount::start_hosted(&server, scratch.path(), "fourth", &uncached);
    let fifth = Mount::start_hosted(&server, scratch.path(), "fifth", &uncached);
    check_coherence(&fourth, &fifth, std::time::Duration::ZERO);
    fourth.stop();
    // A TCP mount beside them sees the same.
    let third = Mount::start(&server, scratch.path(), "third", &[]);
    let seen = fs::read(third.path.join("shared")).unwrap();
    assert_eq!(seen, fs::read(first.path.join("shared")).unwrap());

    let before = fifth.stats();
    for _ in 0..50 {
        fs::metadata(fifth.path.join("shared")).unwrap();
    }
    let after = fifth.stats();
    assert!(
        after["metatab.hits"] >= before["metatab.hits"] + 50,
        "{before:?} -> {after:?}"
    );
    assert_eq!(
        after["rpc.GETATTR"], before["rpc.GETATTR"],
        "stat of a file in the table made GETATTR calls"
    );

    // With the table turned off, the same stats cost GETATTRs.
    let plain = Mount::start_hosted(&server, scratch.path(), "plain", &["--no-metadata-table"]);
    for _ in 0..10 {
        fs::metadata(plain.path.join("shared")).unwrap();
    }
    let stats = plain.stats();
    assert_eq!(stats["metatab.hits"], 0);
    assert!(stats["rpc.GETATTR"] >= 10, "{stats:?}");

    plain.stop();
    fifth.stop();
    third.stop();
    first.stop();
    second.stop();
    server.stop_and_check();
}

/// Long attribute caching with the metadata table: the kernel answers
/// `stat` itself, and the table watcher makes a change by another mount
/// visible within a bounded time (a few milliseconds; 2 s allowed here for
/// a loaded machine).
#[test]
fn hosted_mounts_with_long_attribute_caching_converge_quickly() {
    require_mounts!();
    if !common::server_has_vrpc() {
        eprintln!("skipped: the server binary has no --vrpc-socket");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start_with(scratch.path(), true);
    let options = ["--attr-timeout", "60"];
    let first = Mount::start_hosted(&server, scratch.path(), "first", &options);
    let second = Mount::start_hosted(&server, scratch.path(), "second", &options);
    let in_first = first.path.join("file");
    let in_second = second.path.join("file");
    fs::write(&in_first, b"one").unwrap();
    assert_eq!(fs::read(&in_second).unwrap(), b"one");

    // Cached: many stats, (almost) no requests reach the driver.
    let before = second.stats();
    for _ in 0..200 {
        fs::metadata(&in_second).unwrap();
    }
    let after = second.stats();
    let asked = after["metatab.hits"] + after["rpc.GETATTR"]
        - before["metatab.hits"]
        - before["rpc.GETATTR"];
    assert!(asked < 20, "{asked} of 200 stats reached the driver");

    for round in 0..10usize {
        let content = pattern(100 + round * 37, round as u32);
        fs::write(&in_first, &content).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let seen = fs::metadata(&in_second).unwrap().len();
            if seen == content.len() as u64 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: still size {seen} after 2 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Close-to-open: the data is current as soon as the size is.
        assert_eq!(fs::read(&in_second).unwrap(), content, "round {round}");
    }

    first.stop();
    second.stop();
    server.stop_and_check();
}

/// A server that dies leaves the mount answering EIO, never hanging, and
/// the daemon still unmounts cleanly.
#[test]
fn a_dead_server_gives_eio_and_a_clean_unmount() {
    require_mounts!();
    for hosted in [false, true] {
        if hosted && !common::server_has_vrpc() {
            eprintln!("skipped hosted: the server binary has no --vrpc-socket");
            continue;
        }
        let scratch = tempfile::tempdir().unwrap();
        let server = Server::start_with(scratch.path(), hosted);
        let mount = if hosted {
            Mount::start_hosted(&server, scratch.path(), "mnt", &[])
        } else {
            Mount::start(&server, scratch.path(), "mnt", &[])
        };
        let file = mount.path.join("file");
        fs::write(&file, b"data").unwrap();
        // Dropping the server kills it (SIGKILL). Within a moment (the
        // kernel's clock tick, during which attributes may be reused even
        // with a zero timeout, and the hosted supervisor's 100 ms), stat
        // must fail with EIO; no stat may hang.
        drop(server);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let error = loop {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let (sender, receiver) = std::sync::mpsc::channel();
            let path = file.clone();
            std::thread::spawn(move || {
                let _ = sender.send(fs::metadata(&path).map(|_| ()));
            });
            let result = receiver
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("stat hung on a dead server");
            match result {
                Err(error) => break error,
                Ok(()) => assert!(
                    std::time::Instant::now() < deadline,
                    "stat still succeeds 10 s after the server died (hosted {hosted})"
                ),
            }
        };
        assert_eq!(errno(&error), libc::EIO, "hosted {hosted}: {error}");
        // The counters stay readable.
        assert!(mount.stats()["rpc.GETATTR"] >= 1);
        mount.stop();
    }
}

/// A TCP mount outlives a server restart: calls fail with EIO while the
/// server is down and work again, on a new connection, once it is back.
#[test]
fn a_tcp_mount_reconnects_after_a_server_restart() {
    require_mounts!();
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start(scratch.path());
    let mount = Mount::start(&server, scratch.path(), "mnt", &[]);
    let file = mount.path.join("file");
    fs::write(&file, b"before").unwrap();
    let server = server.restart(scratch.path());
    // The first call after the restart may still meet the old connection.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let content = loop {
        std::thread::sleep(std::time::Duration::from_millis(20));
        match fs::read(&file) {
            Ok(content) => break content,
            Err(error) => {
                assert_eq!(errno(&error), libc::EIO, "{error}");
                assert!(std::time::Instant::now() < deadline, "no reconnection");
            }
        }
    };
    assert_eq!(content, b"before");
    fs::write(mount.path.join("after"), b"after").unwrap();
    assert_eq!(fs::read(mount.path.join("after")).unwrap(), b"after");
    mount.stop();
    server.stop_and_check();
}

/// `--no-close-commit`: close does not COMMIT (the data is on the server
/// and visible to other mounts at once); fsync does.
#[test]
fn without_close_commit_only_fsync_commits() {
    require_mounts!();
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start(scratch.path());
    let mount = Mount::start(&server, scratch.path(), "quick", &["--no-close-commit"]);
    let other = Mount::start(&server, scratch.path(), "other", &[]);
    let path = mount.path.join("closed");
    std::fs::write(&path, b"visible without a commit").unwrap();
    assert_eq!(mount.stats().get("rpc.COMMIT").copied().unwrap_or(0), 0);
    assert_eq!(
        std::fs::read(other.path.join("closed")).unwrap(),
        b"visible without a commit"
    );
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    use std::io::Write;
    (&file).write_all(b"!").unwrap();
    file.sync_all().unwrap();
    assert_eq!(mount.stats().get("rpc.COMMIT").copied().unwrap_or(0), 1);
    drop(file);
    mount.stop();
    other.stop();
    server.stop_and_check();
}

/// Local-disk durability over hosted VRPC (the defaults: the export's
/// `vrpc=local`, no COMMIT on close): SIGKILL the server in the middle of a
/// workload. Every file whose fsync returned is intact; the image passes
/// fsck; and the rest is at a commit point: the files present are a prefix
/// of the ones written, each whole, except that the last may be empty
/// (created, its data not yet committed).
#[test]
fn a_killed_server_keeps_every_fsynced_file_and_a_commit_point() {
    require_mounts!();
    if !common::server_has_vrpc() {
        eprintln!("skipped: the server binary has no --vrpc-socket");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start_with(scratch.path(), true);
    let mount = Mount::start_hosted(&server, scratch.path(), "mnt", &[]);
    fs::create_dir(mount.path.join("work")).unwrap();
    let content = |index: usize| pattern(100 + (index * 613) % 20_000, index as u32);
    let synced = std::sync::Arc::new(std::sync::Mutex::new(None::<usize>));
    let writer = {
        let directory = mount.path.join("work");
        let synced = std::sync::Arc::clone(&synced);
        std::thread::spawn(move || {
            for index in 0.. {
                let path = directory.join(format!("f{index:05}"));
                let Ok(mut file) = fs::File::create(&path) else {
                    return index;
                };
                use std::io::Write;
                if file.write_all(&content(index)).is_err() {
                    return index;
                }
                // Every seventh file is made durable.
                if index % 7 == 6 {
                    if file.sync_all().is_err() {
                        return index;
                    }
                    *synced.lock().unwrap() = Some(index);
                }
            }
            unreachable!()
        })
    };
    // Long enough for several fsyncs and, usually, a background commit.
    std::thread::sleep(std::time::Duration::from_millis(
        1500 + 1000 * (pattern(1, 7)[0] as u64 % 5),
    ));
    let server = server.kill_and_restart(scratch.path());
    let written = writer.join().unwrap();
    let synced = synced
        .lock()
        .unwrap()
        .expect("no fsync returned before the kill");
    mount.stop();
    let check = Mount::start_hosted(&server, scratch.path(), "check", &[]);
    let mut present: Vec<String> = fs::read_dir(check.path.join("work"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    present.sort();
    let count = present.len();
    eprintln!("{written} files written, fsync returned up to {synced}, {count} survived");
    assert!(
        count > synced,
        "an fsynced file was lost: {count} survived, fsync up to {synced}"
    );
    for (index, name) in present.iter().enumerate() {
        assert_eq!(*name, format!("f{index:05}"), "not a prefix: {present:?}");
        let data = fs::read(check.path.join("work").join(name)).unwrap();
        let last = index + 1 == count;
        assert!(
            data == content(index) || (last && index > synced && data.is_empty()),
            "{name}: {} bytes, not what was written ({} bytes)",
            data.len(),
            content(index).len()
        );
    }
    check.stop();
    server.stop_and_check();
}

/// The mount's read-ahead (its backing device's `read_ahead_kb`): FUSE
/// leaves 128 KiB; the driver sets `--read-ahead` (8 MiB by default),
/// and `--read-ahead 0` keeps the kernel's value.
#[test]
fn the_driver_sets_the_mounts_read_ahead() {
    require_mounts!();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: read_ahead_kb can only be written by root");
        return;
    }
    fn read_ahead_kb(mount: &Mount) -> u64 {
        let device = fs::metadata(&mount.path).unwrap().dev();
        let knob = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            nix::sys::stat::major(device),
            nix::sys::stat::minor(device)
        );
        fs::read_to_string(&knob)
            .unwrap_or_else(|error| panic!("{knob}: {error}"))
            .trim()
            .parse()
            .unwrap()
    }
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start(scratch.path());
    let default = Mount::start(&server, scratch.path(), "default", &[]);
    let chosen = Mount::start(&server, scratch.path(), "chosen", &["--read-ahead", "2M"]);
    let kept = Mount::start(&server, scratch.path(), "kept", &["--read-ahead", "0"]);
    assert_eq!(read_ahead_kb(&default), 8192);
    assert_eq!(read_ahead_kb(&chosen), 2048);
    assert_eq!(read_ahead_kb(&kept), 128, "FUSE's own read-ahead");
    default.stop();
    chosen.stop();
    kept.stop();
    server.stop_and_check();
}
