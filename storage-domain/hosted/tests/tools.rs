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
fn mkfs_sizes_as_people_write_them() {
    let directory = scratch("sizes");
    let image = directory.join("disk.img");
    let image_text = image.to_str().unwrap();
    for (size, bytes) in [
        ("512KiB", 512 << 10),
        ("1M", 1 << 20),
        ("2 MiB", 2 << 20),
        ("1MB", 1_000_000 - 1_000_000 % 4096),
        ("262144", 262_144),
    ] {
        let made = tool(&["mkfs", image_text, "--size", size, "--force"]);
        assert!(made.status.success(), "{size}: {}", text(&made));
        assert_eq!(std::fs::metadata(&image).unwrap().len(), bytes, "{size}");
        assert!(tool(&["fsck", image_text]).status.success(), "{size}");
    }
    std::fs::remove_file(&image).unwrap();

    // Refused before anything is created: nothing is left behind.
    for (size, message) in [
        (
            "10",
            "a size of 10 bytes is too small for a file system: the smallest is 256 KiB (262144 bytes)",
        ),
        ("262143", "the smallest is 256 KiB"),
        ("1.5G", "fractions are not accepted"),
        ("12Q", "unknown unit"),
        ("", "no size given"),
        ("-1", "whole decimal number"),
        ("99999999999T", "too large"),
        ("16777215T", "larger than any file can be"),
    ] {
        let refused = tool(&["mkfs", image_text, &format!("--size={size}")]);
        assert!(!refused.status.success(), "{size:?} accepted");
        assert!(text(&refused).contains(message), "{size:?}: {}", text(&refused));
        assert!(!image.exists(), "{size:?} left {} behind", image.display());
    }

    // A size refused over an existing image leaves it as it was.
    assert!(tool(&["mkfs", image_text, "--size", "1M"]).status.success());
    let before = std::fs::read(&image).unwrap();
    let refused = tool(&["mkfs", image_text, "--size", "4K", "--force"]);
    assert!(!refused.status.success());
    assert_eq!(std::fs::read(&image).unwrap(), before);

    let help = text(&tool(&["mkfs", "--help"]));
    assert!(
        help.contains("KiB, MiB, GiB, TiB are powers of 1024; KB, MB, GB, TB are powers of 1000"),
        "{help}"
    );
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
        text(&duplicate).contains("a snapshot named \"empty\" exists already"),
        "{}",
        text(&duplicate)
    );
    let bad = tool(&["snapshot", "create", image_text, "a/b"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("bad snapshot name"), "{}", text(&bad));
    let absent = tool(&["snapshot", "delete", image_text, "absent"]);
    assert!(!absent.status.success());
    assert!(
        text(&absent).contains("no snapshot named \"absent\""),
        "{}",
        text(&absent)
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

/// `get` is the administrator's backup path: a populated image (nested
/// directories, a name that is not UTF-8, a sparse file, a symlink, a hard
/// link) comes out byte for byte with modes and times, and `--snapshot`
/// copies the tree as it was when the snapshot was taken.
#[test]
fn get_copies_a_populated_tree_exactly() {
    use sdfs::device::MemoryDevice;
    use sdfs::{FormatOptions, Volume};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use vfs::{FileSystem, NewNode, Ownership, SetAttributes, StepClock};

    let directory = scratch("get");
    let mut device = MemoryDevice::new(2048);
    let options = FormatOptions {
        uuid: [1; 16],
        handle_secret: [2; 32],
    };
    Volume::format(&mut device, options, &StepClock::new(1_700_000_000)).unwrap();
    let mut volume =
        Volume::open(device, Box::new(StepClock::new(1_700_000_000)), 1 << 20).unwrap();
    let owner = |mode| Ownership {
        mode,
        uid: 0,
        gid: 0,
    };
    let root = volume.root();
    let sub = volume
        .create(root, b"sub", &NewNode::Directory, &owner(0o750))
        .unwrap()
        .inode;
    let odd_name: &[u8] = b"caf\xe9-\xff";
    let odd = volume
        .create(sub, odd_name, &NewNode::Regular, &owner(0o600))
        .unwrap()
        .inode;
    let contents: Vec<u8> = (0..20_000u32).map(|index| (index % 251) as u8).collect();
    volume.write(odd, 0, &contents).unwrap();
    let sparse = volume
        .create(root, b"sparse", &NewNode::Regular, &owner(0o644))
        .unwrap()
        .inode;
    volume.write(sparse, 3 << 20, b"tail").unwrap();
    volume
        .create(
            root,
            b"link",
            &NewNode::Symlink(b"sub/x\xfe".to_vec()),
            &owner(0o777),
        )
        .unwrap();
    volume.link(odd, root, b"hard").unwrap();
    volume
        .setattr(
            odd,
            &SetAttributes {
                mtime: vfs::SetTime::Client(vfs::Timestamp {
                    seconds: 1_600_000_000,
                    nanoseconds: 123_456_789,
                }),
                ..Default::default()
            },
        )
        .unwrap();
    volume.snapshot_create(b"before").unwrap();
    volume.write(odd, 0, b"changed").unwrap();
    volume.commit().unwrap();
    let image = directory.join("disk.img");
    std::fs::write(&image, volume.into_device().to_image()).unwrap();
    let image_text = image.to_str().unwrap();

    let out = directory.join("out");
    let copied = tool(&["get", image_text, "/", out.to_str().unwrap()]);
    assert!(copied.status.success(), "{}", text(&copied));
    let odd_path = out.join("sub").join(std::ffi::OsStr::from_bytes(odd_name));
    let mut expected = contents.clone();
    expected[..7].copy_from_slice(b"changed");
    assert_eq!(std::fs::read(&odd_path).unwrap(), expected);
    assert_eq!(std::fs::read(out.join("hard")).unwrap(), expected);
    let metadata = std::fs::metadata(&odd_path).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o7777, 0o600);
    let sub_metadata = std::fs::metadata(out.join("sub")).unwrap();
    assert_eq!(sub_metadata.permissions().mode() & 0o7777, 0o750);
    let sparse_copy = std::fs::read(out.join("sparse")).unwrap();
    assert_eq!(sparse_copy.len(), (3 << 20) + 4);
    assert!(sparse_copy[..3 << 20].iter().all(|&byte| byte == 0));
    assert_eq!(&sparse_copy[3 << 20..], b"tail");
    assert_eq!(
        std::fs::read_link(out.join("link"))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"sub/x\xfe"
    );

    let old = directory.join("old");
    let from_snapshot = tool(&[
        "get",
        image_text,
        "/sub",
        old.to_str().unwrap(),
        "--snapshot",
        "before",
    ]);
    assert!(from_snapshot.status.success(), "{}", text(&from_snapshot));
    let old_path = old.join(std::ffi::OsStr::from_bytes(odd_name));
    assert_eq!(std::fs::read(&old_path).unwrap(), contents);
    let old_metadata = std::fs::metadata(&old_path).unwrap();
    assert_eq!(
        (old_metadata.mtime(), old_metadata.mtime_nsec()),
        (1_600_000_000, 123_456_789)
    );
    let _ = std::fs::remove_dir_all(&directory);
}
