//! The pjdfstest POSIX suite (its Rust rewrite) against a real mount of
//! the hosted server: over hosted VRPC with the metadata table when the
//! server offers it, else over TCP. Results and every known failure are in
//! `docs/pjdfstest.md`; `tests/pjdfstest.toml` lists the one expected
//! failure, so the suite must exit 0.
//!
//! Skips (with the reason) without root, /dev/fuse, the `pjdfstest`
//! binary (`scripts/bootstrap.sh test` installs it) or its dummy users.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Mount, Server};

fn missing_prerequisite() -> Option<String> {
    let found = Command::new("pjdfstest").arg("--version").output();
    if !found.is_ok_and(|output| output.status.success()) {
        return Some("pjdfstest is not installed (scripts/bootstrap.sh test)".into());
    }
    for user in ["nobody", "tests"] {
        let known = Command::new("id").arg(user).output();
        if !known.is_ok_and(|output| output.status.success()) {
            return Some(format!(
                "user {user} is missing (scripts/bootstrap.sh test)"
            ));
        }
    }
    None
}

#[test]
fn pjdfstest_passes_on_a_mount() {
    require_mounts!();
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipped: {reason}");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let hosted = common::server_has_vrpc();
    let server = Server::start_with(scratch.path(), hosted);
    let mount = if hosted {
        Mount::start_hosted(&server, scratch.path(), "mnt", &[])
    } else {
        Mount::start(&server, scratch.path(), "mnt", &[])
    };
    // pjdfstest switches to unprivileged users inside its directory.
    let directory = mount.path.join("pjdfstest");
    std::fs::create_dir(&directory).unwrap();
    Command::new("chmod")
        .arg("0777")
        .arg(&directory)
        .status()
        .unwrap();
    // A second file system for the EXDEV cases.
    let secondary = scratch.path().join("secondary");
    std::fs::create_dir(&secondary).unwrap();
    let configuration = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pjdfstest.toml");
    let output = Command::new("pjdfstest")
        .arg("-c")
        .arg(&configuration)
        .arg("-p")
        .arg(&directory)
        .arg("-s")
        .arg(&secondary)
        .current_dir(&directory)
        .output()
        .expect("running pjdfstest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = stdout
        .lines()
        .chain(stderr.lines())
        .find(|line| line.starts_with("Summary:"))
        .unwrap_or("no summary")
        .to_string();
    eprintln!(
        "pjdfstest over {}: {summary}",
        if hosted { "hosted VRPC" } else { "TCP" }
    );
    let failures: Vec<&str> = stdout
        .lines()
        .filter(|line| line.trim_end().ends_with("FAILED"))
        .collect();
    assert!(
        output.status.success(),
        "pjdfstest failed: {summary}\n{}\n{stderr}",
        failures.join("\n")
    );
    mount.stop();
    server.stop_and_check();
}
