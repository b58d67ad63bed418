//! The binary against an in-memory xenstored on a unix socket: exit codes,
//! output, and what lands in xenstore.

use std::path::PathBuf;
use std::process::{Command, Output};

use xen_linux::xenstore::fake::FakeXenstored;

fn daemon(name: &str) -> (FakeXenstored, PathBuf) {
    let daemon = FakeXenstored::new();
    daemon.add_domain(0, "Domain-0");
    daemon.add_domain(1, "storage-domain");
    daemon.add_domain(5, "vm5");
    let path = std::env::temp_dir().join(format!(
        "storage-domain-ctl-{}-{name}.socket",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    daemon.listen(&path, 0).unwrap();
    (daemon, path)
}

fn run(socket: &PathBuf, arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_storage-domain-ctl"))
        .arg("--xenstore")
        .arg(socket)
        .args(arguments)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn attach_list_detach() {
    let (daemon, socket) = daemon("cycle");
    let output = run(&socket, &["attach", "vm5", "--export", "/data"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "attached vm5 (id 5) as vrpc device 0 of storage domain storage-domain (id 1), export /data\n"
    );
    assert_eq!(
        daemon
            .value("/local/domain/1/backend/vrpc/5/0/export")
            .as_deref(),
        Some("/data")
    );

    let output = run(&socket, &["list"]);
    assert!(output.status.success());
    let listing = text(&output.stdout);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    let columns: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "vm5",
            "5",
            "0",
            "/data",
            "Initialising",
            "Initialising",
            "-"
        ]
    );

    let output = run(&socket, &["attach", "5", "--device", "0"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        "storage-domain-ctl: vm5 (id 5) already has vrpc device 0 (detach it first, or leave out --device)\n"
    );

    let output = run(&socket, &["detach", "vm5"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "detached vrpc device 0 of vm5 (id 5): the guest had not connected\n"
    );
    assert!(daemon
        .paths_below("/local/domain/5/device/vrpc/0")
        .is_empty());
    assert!(daemon
        .paths_below("/local/domain/1/backend/vrpc/5")
        .is_empty());
    let output = run(&socket, &["list"]);
    assert!(output.status.success());
    assert!(output.stdout.is_empty());
    let _ = std::fs::remove_file(&socket);
}

#[test]
fn failures_exit_1_with_one_line() {
    let (_daemon, socket) = daemon("failures");
    for (arguments, message) in [
        (
            &["attach", "nobody"][..],
            "storage-domain-ctl: unknown domain nobody: no running domain has that name or id\n",
        ),
        (
            &["attach", "vm5", "--backend", "sd2"][..],
            "storage-domain-ctl: storage domain sd2 is not running\n",
        ),
        (
            &["detach", "vm5"][..],
            "storage-domain-ctl: vm5 (id 5) has no vrpc device on storage domain storage-domain (id 1)\n",
        ),
    ] {
        let output = run(&socket, arguments);
        assert_eq!(output.status.code(), Some(1), "{arguments:?}");
        assert_eq!(text(&output.stderr), message);
        assert!(output.stdout.is_empty());
    }
    let output = run(&socket, &["attach"]);
    assert_eq!(output.status.code(), Some(1));
    let output = run(&socket, &["--help"]);
    assert!(output.status.success());
    assert!(text(&output.stdout).contains("attach"));
    let _ = std::fs::remove_file(&socket);
}

#[test]
fn no_xenstore_is_a_clear_failure() {
    let output = run(&PathBuf::from("/nonexistent/xenstored.socket"), &["list"]);
    assert_eq!(output.status.code(), Some(1));
    let message = text(&output.stderr);
    assert_eq!(
        message,
        "storage-domain-ctl: cannot reach xenstore at /nonexistent/xenstored.socket: \
         No such file or directory (os error 2)\n"
    );
}
