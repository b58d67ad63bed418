//! End to end with libnfs's command-line tools (Debian `libnfs-utils`):
//! `nfs-cp` in and out, `nfs-cat`, `nfs-ls`, against the real `serve`
//! process; the files are then checked offline in the image with `get`,
//! and the image with `fsck`. Skipped, with the reason printed, when the
//! tools are not installed.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{scratch, ServerProcess};

/// Whether every libnfs tool the tests run is installed.
fn libnfs_tools_missing() -> Option<String> {
    for tool in ["nfs-cp", "nfs-cat", "nfs-ls"] {
        if let Err(error) = Command::new(tool).arg("--help").output() {
            return Some(format!(
                "{tool}: {error} (install Debian's libnfs-utils; scripts/bootstrap.sh does)"
            ));
        }
    }
    None
}

/// An `nfs://` URL for `path` under export `/` of `server`.
fn url(server: &ServerProcess, path: &str) -> String {
    format!(
        "nfs://127.0.0.1/{path}?version=3&nfsport={port}&mountport={port}",
        port = server.port
    )
}

/// Run a libnfs tool with a time limit; a hung client fails the test
/// instead of the CI run.
fn run(program: &str, arguments: &[&str]) -> Output {
    let mut child = Command::new(program)
        .args(arguments)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("run {program}: {error}"));
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || read_all(stdout));
    let stderr = std::thread::spawn(move || read_all(stderr));
    let status =
        common::wait_with_timeout(&mut child, Duration::from_secs(60)).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("{program} {arguments:?} hung");
        });
    let output = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    assert!(
        output.status.success(),
        "{program} {arguments:?}: {}\n{}",
        output.status,
        common::text(&output)
    );
    output
}

fn read_all(mut pipe: impl std::io::Read) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = pipe.read_to_end(&mut bytes);
    bytes
}

/// Deterministic bytes that do not compress or repeat per block.
fn pattern(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

#[test]
fn nfs_cp_cat_and_ls() {
    if let Some(reason) = libnfs_tools_missing() {
        println!("skipped: {reason}");
        return;
    }
    let directory = scratch();
    let image = directory.path().join("disk.img");
    // libnfs mounts the URL's directory part as the export, so files in
    // /dir are reached through an export of their own (created at start).
    let server = ServerProcess::start(
        &image,
        "32M",
        &[
            "--export",
            "/,no_root_squash",
            "--export",
            "/dir,path=/dir,no_root_squash",
        ],
    );
    // Sizes around the server's and libnfs's I/O units, and an empty file.
    let files: [(&str, usize, u64); 4] = [
        ("big", 3 * 1024 * 1024 + 123, 1),
        ("dir/exact", 1024 * 1024, 2),
        ("dir/small", 4097, 3),
        ("empty", 0, 4),
    ];
    for (name, length, seed) in files {
        let local = directory.path().join(name.replace('/', "-"));
        std::fs::write(&local, pattern(length, seed)).unwrap();
        let copied = run(
            "nfs-cp",
            &[path_text(&local), &url(&server, &format!("/{name}"))],
        );
        assert!(
            String::from_utf8_lossy(&copied.stdout).contains(&format!("copied {length} bytes")),
            "{}",
            common::text(&copied)
        );
        let back = directory
            .path()
            .join(format!("{}.back", name.replace('/', "-")));
        run(
            "nfs-cp",
            &[&url(&server, &format!("/{name}")), path_text(&back)],
        );
        assert!(
            std::fs::read(&back).unwrap() == pattern(length, seed),
            "{name} copied out differs"
        );
        let catted = run("nfs-cat", &[&url(&server, &format!("/{name}"))]);
        assert!(
            catted.stdout == pattern(length, seed),
            "nfs-cat {name} differs"
        );
    }

    let listed = run("nfs-ls", &[&url(&server, "/")]);
    let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
    let line = |name: &str| {
        listing
            .lines()
            .find(|line| line.split_whitespace().last() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in nfs-ls output:\n{listing}"))
            .to_string()
    };
    assert!(
        line("big").contains(&(3 * 1024 * 1024 + 123).to_string()),
        "{listing}"
    );
    assert!(line("dir").starts_with('d'), "{listing}");
    assert!(line("empty").starts_with('-'), "{listing}");
    let recursive = run("nfs-ls", &["-R", &url(&server, "/")]);
    let recursive = String::from_utf8_lossy(&recursive.stdout).into_owned();
    for name in ["exact", "small"] {
        assert!(
            recursive.contains(name),
            "nfs-ls -R misses {name}:\n{recursive}"
        );
    }
    server.stop_and_fsck();

    // What the image holds, read offline by the image tools.
    let out = directory.path().join("out");
    let got = common::tool(&[
        "get".as_ref(),
        image.as_os_str(),
        "/".as_ref(),
        out.as_os_str(),
    ]);
    assert!(got.status.success(), "{}", common::text(&got));
    for (name, length, seed) in files {
        assert!(
            std::fs::read(out.join(name)).unwrap() == pattern(length, seed),
            "{name} in the image differs"
        );
    }
}

/// Run a libnfs tool that must fail; its output.
fn run_failing(program: &str, arguments: &[&str]) -> String {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .unwrap_or_else(|error| panic!("run {program}: {error}"));
    assert!(
        !output.status.success(),
        "{program} {arguments:?} succeeded: {}",
        common::text(&output)
    );
    common::text(&output)
}

/// A snapshot taken through the running server, read by an independent
/// client (libnfs), hidden from the root's listing, read-only, and gone
/// once deleted. libnfs mounts the URL's directory part, so every path
/// here reaches the snapshot through MOUNT of `/.snapshots/NAME` or
/// `/.snapshots` (a snapshot as an export of its own); the way through
/// LOOKUP of `.snapshots` is tested by `nfs-server`'s tests and the
/// guest-driver mounts.
#[test]
fn snapshots_through_libnfs() {
    if let Some(reason) = libnfs_tools_missing() {
        println!("skipped: {reason}");
        return;
    }
    let directory = scratch();
    let image = directory.path().join("disk.img");
    let server = ServerProcess::start(&image, "32M", &["--export", "/,no_root_squash"]);
    let first = directory.path().join("first");
    let second = directory.path().join("second");
    std::fs::write(&first, b"taken before the snapshot").unwrap();
    std::fs::write(&second, b"written after").unwrap();
    run("nfs-cp", &[path_text(&first), &url(&server, "/f")]);
    let taken = common::tool(&[
        "snapshot".as_ref(),
        "create".as_ref(),
        image.as_os_str(),
        "daily".as_ref(),
    ]);
    assert!(taken.status.success(), "{}", common::text(&taken));
    run("nfs-cp", &[path_text(&second), &url(&server, "/g")]);

    let catted = run("nfs-cat", &[&url(&server, "/.snapshots/daily/f")]);
    assert_eq!(catted.stdout, b"taken before the snapshot");
    let names = |path: &str| -> Vec<String> {
        let listed = run("nfs-ls", &[&url(&server, path)]);
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().last().map(str::to_owned))
            .collect()
    };
    let root = names("/");
    assert!(root.contains(&"g".to_owned()), "{root:?}");
    assert!(!root.contains(&".snapshots".to_owned()), "{root:?}");
    assert_eq!(names("/.snapshots"), ["daily"]);
    assert_eq!(names("/.snapshots/daily"), ["f"]);
    let refused = run_failing(
        "nfs-cp",
        &[path_text(&second), &url(&server, "/.snapshots/daily/x")],
    );
    assert!(refused.contains("NFS3ERR_ROFS"), "{refused}");

    let deleted = common::tool(&[
        "snapshot".as_ref(),
        "delete".as_ref(),
        image.as_os_str(),
        "daily".as_ref(),
    ]);
    assert!(deleted.status.success(), "{}", common::text(&deleted));
    let gone = run_failing("nfs-cat", &[&url(&server, "/.snapshots/daily/f")]);
    assert!(gone.contains("MNT3ERR_NOENT"), "{gone}");
    server.stop_and_fsck();
}
