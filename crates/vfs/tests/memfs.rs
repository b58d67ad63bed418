//! The reference model's own rules, checked directly.

use vfs::memfs::{MemFs, MemFsLimits, ROOT_INODE};
use vfs::{
    FileSystem, FileType, FsError, Generation, NewNode, Ownership, SetAttributes, StepClock,
};

fn fresh() -> MemFs {
    MemFs::new(
        Box::new(StepClock::new(1_700_000_000)),
        MemFsLimits::default(),
    )
}

const OWNER: Ownership = Ownership {
    mode: 0o644,
    uid: 1000,
    gid: 1000,
};

#[test]
fn sparse_file_reads_zeros_after_shrink_and_grow() {
    let mut fs = fresh();
    let file = fs
        .create(ROOT_INODE, b"f", &NewNode::Regular, &OWNER)
        .unwrap()
        .inode;
    fs.write(file, 0, &[7u8; 10_000]).unwrap();
    fs.setattr(
        file,
        &SetAttributes {
            size: Some(100),
            ..Default::default()
        },
    )
    .unwrap();
    fs.setattr(
        file,
        &SetAttributes {
            size: Some(10_000),
            ..Default::default()
        },
    )
    .unwrap();
    let mut buffer = vec![1u8; 10_000];
    assert_eq!(fs.read(file, 0, &mut buffer).unwrap(), 10_000);
    assert!(buffer[..100].iter().all(|&b| b == 7));
    assert!(buffer[100..].iter().all(|&b| b == 0));
    fs.write(file, 1 << 40, b"far").unwrap();
    assert_eq!(fs.getattr(file).unwrap().size, (1 << 40) + 3);
    assert_eq!(
        fs.write(file, vfs::MAX_FILE_SIZE, b"x"),
        Err(FsError::FileTooBig)
    );
}

#[test]
fn directory_link_counts_follow_posix() {
    let mut fs = fresh();
    let a = fs
        .create(ROOT_INODE, b"a", &NewNode::Directory, &OWNER)
        .unwrap()
        .inode;
    let b = fs
        .create(ROOT_INODE, b"b", &NewNode::Directory, &OWNER)
        .unwrap()
        .inode;
    assert_eq!(fs.getattr(ROOT_INODE).unwrap().nlink, 4);
    fs.rename(ROOT_INODE, b"b", a, b"b").unwrap();
    assert_eq!(fs.getattr(ROOT_INODE).unwrap().nlink, 3);
    assert_eq!(fs.getattr(a).unwrap().nlink, 3);
    assert_eq!(fs.lookup(b, b"..").unwrap().inode, a);
    assert_eq!(fs.rename(ROOT_INODE, b"a", b, b"x"), Err(FsError::Invalid));
    assert_eq!(fs.rmdir(ROOT_INODE, b"a"), Err(FsError::NotEmpty));
    fs.rmdir(a, b"b").unwrap();
    fs.rmdir(ROOT_INODE, b"a").unwrap();
    assert_eq!(fs.getattr(ROOT_INODE).unwrap().nlink, 2);
}

#[test]
fn rename_rules() {
    let mut fs = fresh();
    let file = fs
        .create(ROOT_INODE, b"file", &NewNode::Regular, &OWNER)
        .unwrap()
        .inode;
    let dir = fs
        .create(ROOT_INODE, b"dir", &NewNode::Directory, &OWNER)
        .unwrap()
        .inode;
    fs.create(ROOT_INODE, b"empty", &NewNode::Directory, &OWNER)
        .unwrap();
    fs.create(dir, b"inner", &NewNode::Regular, &OWNER).unwrap();
    assert_eq!(
        fs.rename(ROOT_INODE, b"file", ROOT_INODE, b"dir"),
        Err(FsError::IsDirectory)
    );
    assert_eq!(
        fs.rename(ROOT_INODE, b"dir", ROOT_INODE, b"file"),
        Err(FsError::NotDirectory)
    );
    assert_eq!(
        fs.rename(ROOT_INODE, b"empty", ROOT_INODE, b"dir"),
        Err(FsError::NotEmpty)
    );
    fs.rename(ROOT_INODE, b"dir", ROOT_INODE, b"empty").unwrap();
    assert_eq!(fs.lookup(ROOT_INODE, b"empty").unwrap().inode, dir);
    fs.link(file, ROOT_INODE, b"hard").unwrap();
    fs.rename(ROOT_INODE, b"file", ROOT_INODE, b"hard").unwrap();
    // Same inode under both names: POSIX says success and no other action.
    assert_eq!(fs.lookup(ROOT_INODE, b"file").unwrap().inode, file);
    assert_eq!(fs.getattr(file).unwrap().nlink, 2);
    let other = fs
        .create(ROOT_INODE, b"other", &NewNode::Regular, &OWNER)
        .unwrap()
        .inode;
    fs.rename(ROOT_INODE, b"other", ROOT_INODE, b"hard")
        .unwrap();
    assert_eq!(fs.lookup(ROOT_INODE, b"hard").unwrap().inode, other);
    assert_eq!(fs.getattr(file).unwrap().nlink, 1);
}

#[test]
fn reused_inode_gets_a_new_generation() {
    let mut fs = fresh();
    let first = fs
        .create(ROOT_INODE, b"x", &NewNode::Regular, &OWNER)
        .unwrap();
    fs.unlink(ROOT_INODE, b"x").unwrap();
    assert_eq!(fs.getattr(first.inode), Err(FsError::Stale));
    let second = fs.create(ROOT_INODE, b"y", &NewNode::Fifo, &OWNER).unwrap();
    assert_eq!(second.inode, first.inode);
    assert_eq!(second.generation, Generation(first.generation.0 + 1));
    assert_eq!(second.file_type, FileType::Fifo);
    assert_eq!(
        fs.getattr_checked(first.inode, first.generation),
        Err(FsError::Stale)
    );
}

#[test]
fn readdir_cookies_survive_changes() {
    let mut fs = fresh();
    for index in 0..10u8 {
        fs.create(ROOT_INODE, &[b'a' + index], &NewNode::Regular, &OWNER)
            .unwrap();
    }
    let first = fs.readdir(ROOT_INODE, 0, 4).unwrap();
    assert_eq!(first.entries.len(), 4);
    assert!(!first.end);
    fs.unlink(ROOT_INODE, &first.entries[3].name).unwrap();
    fs.unlink(ROOT_INODE, b"e").unwrap();
    let rest = fs
        .readdir(ROOT_INODE, first.entries[3].cookie, 100)
        .unwrap();
    assert!(rest.end);
    let names: Vec<_> = rest.entries.iter().map(|entry| entry.name[0]).collect();
    assert_eq!(names, b"fghij");
    assert_eq!(fs.readdir(ROOT_INODE, 999, 1), Err(FsError::BadCookie));
}

#[test]
fn limits_give_no_space_without_change() {
    let mut fs = MemFs::new(
        Box::new(StepClock::new(0)),
        MemFsLimits {
            blocks: 2,
            inodes: 2,
        },
    );
    let file = fs
        .create(ROOT_INODE, b"f", &NewNode::Regular, &OWNER)
        .unwrap()
        .inode;
    assert_eq!(
        fs.create(ROOT_INODE, b"g", &NewNode::Regular, &OWNER),
        Err(FsError::NoSpace)
    );
    assert_eq!(fs.write(file, 0, &[1; 3 * 4096]), Err(FsError::NoSpace));
    assert_eq!(fs.getattr(file).unwrap().size, 0);
    fs.write(file, 0, &[1; 2 * 4096]).unwrap();
    assert_eq!(fs.statfs().unwrap().free_blocks, 0);
}

#[test]
fn names_are_checked() {
    let mut fs = fresh();
    let long = vec![b'n'; 256];
    assert_eq!(
        fs.create(ROOT_INODE, &long, &NewNode::Regular, &OWNER),
        Err(FsError::NameTooLong)
    );
    for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
        assert_eq!(
            fs.create(ROOT_INODE, bad, &NewNode::Regular, &OWNER),
            Err(FsError::InvalidName)
        );
    }
}
