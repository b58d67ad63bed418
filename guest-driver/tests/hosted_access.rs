//! Who may use the hosted VRPC socket. Its file mode and group decide who
//! may connect at all (`serve --vrpc-socket-mode`, default 0660, and
//! `--vrpc-socket-group`); the export's `allow=uid:N` / `allow=gid:N`
//! filters decide, from the credentials the kernel reports for the socket
//! (SO_PEERCRED), which connected users may mount it. A refused user gets
//! a message from guest-driver that says which of the two refused it.
//!
//! The other user is `nobody` (65534), reached with `setpriv`; the test
//! needs root and `setpriv`, and says why it skips otherwise.

mod common;

use common::{driver_binary, server_binary, Server};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const NOBODY: u32 = 65534;

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root (the test switches to another user)".into());
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return Some("setpriv (util-linux) is missing".into());
    }
    if !server_binary().is_file() {
        return Some(format!("{} is not built", server_binary().display()));
    }
    if !common::server_has_vrpc() {
        return Some("the server binary has no --vrpc-socket".into());
    }
    None
}

/// `guest-driver ping --hosted SOCKET` as `uid`/`gid` (no supplementary
/// groups).
fn ping_as(uid: u32, gid: u32, socket: &Path) -> Output {
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(driver_binary())
        .args(["ping", "--count", "3", "--hosted"])
        .arg(socket)
        .output()
        .expect("running setpriv")
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn refused_saying(output: &Output, says: &str) {
    let text = describe(output);
    assert!(!output.status.success(), "not refused: {text}");
    assert!(text.contains(says), "expected {says:?}: {text}");
}

fn served(output: &Output) {
    assert!(output.status.success(), "refused: {}", describe(output));
}

/// A scratch directory other users can reach the socket in.
fn scratch() -> tempfile::TempDir {
    let directory = tempfile::tempdir().unwrap();
    std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    directory
}

#[test]
fn the_socket_mode_keeps_other_users_out_by_default() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let directory = scratch();
    let server =
        Server::start_with_arguments(directory.path(), true, &["--export", "/,allow=local"]);
    let socket = server.socket.clone().unwrap();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the default mode");
    refused_saying(&ping_as(NOBODY, NOBODY, &socket), "permission denied: ");
    refused_saying(
        &ping_as(NOBODY, NOBODY, &socket),
        "--vrpc-socket-mode and --vrpc-socket-group decide",
    );
    served(&ping_as(0, 0, &socket));
    server.stop_and_check();
}

#[test]
fn the_export_admits_users_by_uid_and_group() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    // Anyone may connect; only root may mount.
    let directory = scratch();
    let server = Server::start_with_arguments(
        directory.path(),
        true,
        &["--vrpc-socket-mode", "666", "--export", "/,allow=uid:0"],
    );
    let socket = server.socket.clone().unwrap();
    refused_saying(
        &ping_as(NOBODY, NOBODY, &socket),
        "does not admit this user (uid 65534, gid 65534) to export /",
    );
    served(&ping_as(0, 0, &socket));
    server.stop_and_check();

    // Only nobody's uid; root is refused in turn.
    let directory = scratch();
    let server = Server::start_with_arguments(
        directory.path(),
        true,
        &[
            "--vrpc-socket-mode",
            "0666",
            "--export",
            "/,allow=uid:65534",
        ],
    );
    let socket = server.socket.clone().unwrap();
    served(&ping_as(NOBODY, NOBODY, &socket));
    refused_saying(&ping_as(0, 0, &socket), "does not admit this user (uid 0");
    server.stop_and_check();

    // The socket's group lets the group in; the export admits the group.
    let directory = scratch();
    let server = Server::start_with_arguments(
        directory.path(),
        true,
        &[
            "--vrpc-socket-group",
            "65534",
            "--export",
            "/,allow=gid:65534",
        ],
    );
    let socket = server.socket.clone().unwrap();
    let metadata = std::fs::metadata(&socket).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&metadata), NOBODY);
    served(&ping_as(NOBODY, NOBODY, &socket));
    // Another user outside the group cannot even connect.
    refused_saying(
        &ping_as(NOBODY - 1, NOBODY - 1, &socket),
        "permission denied",
    );
    server.stop_and_check();
}
