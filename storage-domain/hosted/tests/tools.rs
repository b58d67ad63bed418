//! The offline image tools, driven through the real binary: mkfs, fsck, ls,
//! get, and the refusal to format over an existing file system.

use std::path::Path;
use std::process::{Command, Output};

fn tool(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_storage-domain-hosted"))
        .args(arguments)
        .output()
        .expect("run storage-domain-hosted")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn scratch(name: &str) -> std::path::PathBuf {
    let directory = std::env::temp_dir().join(format!("sdfs-tools-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

#[test]
fn mkfs_fsck_ls_get_round_trip() {
    let directory = scratch("round-trip");
    let image = directory.join("disk.img");
    let image_text = image.to_str().unwrap();
    let made = tool(&["mkfs", image_text, "--size", "8M"]);
    assert!(made.status.success(), "{}", text(&made));
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 8 << 20);

    let again = tool(&["mkfs", image_text, "--size", "8M"]);
    assert!(
        !again.status.success(),
        "mkfs overwrote a file system without --force"
    );
    assert!(text(&again).contains("--force"), "{}", text(&again));

    let checked = tool(&["fsck", image_text]);
    assert!(checked.status.success(), "{}", text(&checked));
    assert!(text(&checked).contains("clean"), "{}", text(&checked));

    let listed = tool(&["ls", image_text]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "",
        "a fresh image lists empty"
    );

    let copied = tool(&[
        "get",
        image_text,
        "/",
        directory.join("out").to_str().unwrap(),
    ]);
    assert!(copied.status.success(), "{}", text(&copied));
    assert!(directory.join("out").is_dir());
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn fsck_names_damage_and_exits_non_zero() {
    let directory = scratch("damage");
    let image = directory.join("disk.img");
    let image_text = image.to_str().unwrap();
    assert!(tool(&["mkfs", image_text, "--size", "1M"]).status.success());
    // Damage the root directory's record (block 2 of a fresh image).
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[2 * 4096 + 100] ^= 0xFF;
    std::fs::write(&image, &bytes).unwrap();
    let checked = tool(&["fsck", image_text]);
    assert_eq!(checked.status.code(), Some(1), "{}", text(&checked));
    assert!(
        text(&checked).contains("checksum mismatch"),
        "{}",
        text(&checked)
    );

    std::fs::write(&image, vec![0x55u8; 1 << 20]).unwrap();
    let foreign = tool(&["ls", image_text]);
    assert!(!foreign.status.success());
    assert!(
        text(&foreign).contains("not an sdfs image"),
        "{}",
        text(&foreign)
    );
    assert!(!Path::new(&directory.join("nothing")).exists());
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn snapshots_from_the_command_line() {
    let directory = scratch("snapshots");
    let image = directory.join("disk.img");
    let image_text = image.to_str().unwrap();
    assert!(tool(&["mkfs", image_text, "--size", "4M"]).status.success());
    let made = tool(&["snapshot", "create", image_text, "empty"]);
    assert!(made.status.success(), "{}", text(&made));
    let duplicate = tool(&["snapshot", "create", image_text, "empty"]);
    assert!(!duplicate.status.success());
    assert!(
        text(&duplicate).contains("file exists"),
        "{}",
        text(&duplicate)
    );
    let listed = tool(&["snapshot", "list", image_text]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).starts_with("empty\tcommit "),
        "{}",
        text(&listed)
    );
    let in_snapshot = tool(&["ls", image_text, "--snapshot", "empty"]);
    assert!(in_snapshot.status.success(), "{}", text(&in_snapshot));
    let missing = tool(&["ls", image_text, "--snapshot", "nope"]);
    assert!(
        text(&missing).contains("no snapshot named"),
        "{}",
        text(&missing)
    );
    assert!(tool(&["snapshot", "delete", image_text, "empty"])
        .status
        .success());
    assert_eq!(
        String::from_utf8_lossy(&tool(&["snapshot", "list", image_text]).stdout),
        ""
    );
    let checked = tool(&["fsck", image_text]);
    assert!(checked.status.success(), "{}", text(&checked));
    let _ = std::fs::remove_dir_all(&directory);
}
