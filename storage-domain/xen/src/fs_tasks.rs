//! What the domain does with its file system at boot: the self-check and
//! the boot-test actions, written against the `vfs::FileSystem` trait so
//! the host tests run them on the `MemFs` model.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use vfs::{FileSystem, FsError, InodeId, NewNode, Ownership, SetAttributes};

/// Result of the boot self-check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelfCheck {
    /// Inodes reachable from the root after the check (the probe file is
    /// gone again), at most [`INODE_COUNT_LIMIT`].
    pub inodes_in_use: u64,
    /// Free blocks after the check.
    pub free_blocks: u64,
}

/// Why a boot task failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskError {
    /// The file system refused an operation.
    FileSystem(&'static str, FsError),
    /// Data read back differs from what was written.
    Mismatch(String),
}

impl core::fmt::Display for TaskError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TaskError::FileSystem(step, error) => write!(formatter, "{step}: {error:?}"),
            TaskError::Mismatch(what) => write!(formatter, "mismatch: {what}"),
        }
    }
}

fn step<T>(name: &'static str, result: Result<T, FsError>) -> Result<T, TaskError> {
    result.map_err(|error| TaskError::FileSystem(name, error))
}

const FILE_OWNER: Ownership = Ownership {
    mode: 0o644,
    uid: 0,
    gid: 0,
};
const DIRECTORY_OWNER: Ownership = Ownership {
    mode: 0o755,
    uid: 0,
    gid: 0,
};

/// Name of the self-check's probe file in the root directory.
pub const PROBE_NAME: &[u8] = b".storage-domain-self-check";

/// Write a probe file (several blocks), read it back, remove it, commit,
/// and report the totals.
///
/// # Errors
/// [`TaskError`] naming the failed step or the mismatch.
pub fn self_check(fs: &mut dyn FileSystem) -> Result<SelfCheck, TaskError> {
    let root = fs.root();
    // A probe left by a crash during an earlier self-check is removed first.
    match fs.unlink(root, PROBE_NAME) {
        Ok(()) | Err(FsError::NotFound) => {}
        Err(error) => return Err(TaskError::FileSystem("remove stale probe", error)),
    }
    let probe = step(
        "create probe",
        fs.create(root, PROBE_NAME, &NewNode::Regular, &FILE_OWNER),
    )?;
    let data = pattern(3 * 4096 + 123, 0x5d);
    step("write probe", fs.write(probe.inode, 0, &data))?;
    step("commit probe", fs.commit())?;
    let mut back = vec![0u8; data.len() + 10];
    let read = step("read probe", fs.read(probe.inode, 0, &mut back))?;
    if read != data.len() || back[..read] != data[..] {
        return Err(TaskError::Mismatch(format!(
            "probe read back {read} bytes, wrote {}",
            data.len()
        )));
    }
    step("remove probe", fs.unlink(root, PROBE_NAME))?;
    step("commit", fs.commit())?;
    let totals = step("statfs", fs.statfs())?;
    Ok(SelfCheck {
        inodes_in_use: count_inodes(fs, INODE_COUNT_LIMIT)?,
        free_blocks: totals.free_blocks,
    })
}

/// The self-check stops counting inodes here, to keep boot quick on a
/// big file system.
pub const INODE_COUNT_LIMIT: u64 = 100_000;

/// Distinct inodes reachable from the root (the root included), counted
/// up to `limit`.
///
/// # Errors
/// [`TaskError`] when a directory cannot be listed.
pub fn count_inodes(fs: &mut dyn FileSystem, limit: u64) -> Result<u64, TaskError> {
    let mut seen = alloc::collections::BTreeSet::new();
    let mut directories = vec![fs.root()];
    seen.insert(fs.root());
    while let Some(directory) = directories.pop() {
        let mut cookie = 0;
        loop {
            let page = step("readdir", fs.readdir(directory, cookie, 256))?;
            for entry in &page.entries {
                if seen.len() as u64 >= limit {
                    return Ok(limit);
                }
                if seen.insert(entry.inode) && entry.file_type == vfs::FileType::Directory {
                    directories.push(entry.inode);
                }
                cookie = entry.cookie;
            }
            if page.end || page.entries.is_empty() {
                break;
            }
        }
    }
    Ok(seen.len() as u64)
}

/// Deterministic bytes: `seed` then a simple recurrence.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut value = seed;
    (0..len)
        .map(|index| {
            value = value.wrapping_mul(31).wrapping_add(index as u8);
            value
        })
        .collect()
}

/// Directory of the known files the boot test checks from the host.
pub const KNOWN_DIRECTORY: &[u8] = b"known";
/// `/known/hello.txt`.
pub const HELLO_NAME: &[u8] = b"hello.txt";
/// Contents of `/known/hello.txt`.
pub const HELLO_TEXT: &[u8] = b"hello from the storage domain\n";
/// `/known/lines.txt`: `line 000000\n` .. `line 019999\n` (240,000 bytes,
/// what `seq -f 'line %06g' 0 19999` prints).
pub const LINES_NAME: &[u8] = b"lines.txt";
/// Lines in `/known/lines.txt`.
pub const LINES_COUNT: usize = 20_000;

/// The contents of `/known/lines.txt`.
pub fn lines_text() -> Vec<u8> {
    let mut text = Vec::with_capacity(LINES_COUNT * 12);
    for line in 0..LINES_COUNT {
        text.extend_from_slice(format!("line {line:06}\n").as_bytes());
    }
    text
}

fn lookup_or_create(
    fs: &mut dyn FileSystem,
    directory: InodeId,
    name: &[u8],
    node: &NewNode,
    owner: &Ownership,
) -> Result<InodeId, TaskError> {
    match fs.lookup(directory, name) {
        Ok(attributes) => Ok(attributes.inode),
        Err(FsError::NotFound) => {
            Ok(step("create", fs.create(directory, name, node, owner))?.inode)
        }
        Err(error) => Err(TaskError::FileSystem("lookup", error)),
    }
}

fn write_whole(fs: &mut dyn FileSystem, inode: InodeId, data: &[u8]) -> Result<(), TaskError> {
    let truncate = SetAttributes {
        size: Some(0),
        ..SetAttributes::default()
    };
    step("truncate", fs.setattr(inode, &truncate))?;
    // In 64 KiB writes, as an NFS client would send them.
    for (index, chunk) in data.chunks(65536).enumerate() {
        step("write", fs.write(inode, (index * 65536) as u64, chunk))?;
    }
    Ok(())
}

/// Create (or rewrite) the known files and commit.
///
/// # Errors
/// [`TaskError`] naming the failed step.
pub fn seed_known_files(fs: &mut dyn FileSystem) -> Result<(), TaskError> {
    let root = fs.root();
    let directory = lookup_or_create(
        fs,
        root,
        KNOWN_DIRECTORY,
        &NewNode::Directory,
        &DIRECTORY_OWNER,
    )?;
    let hello = lookup_or_create(fs, directory, HELLO_NAME, &NewNode::Regular, &FILE_OWNER)?;
    write_whole(fs, hello, HELLO_TEXT)?;
    let lines = lookup_or_create(fs, directory, LINES_NAME, &NewNode::Regular, &FILE_OWNER)?;
    write_whole(fs, lines, &lines_text())?;
    step("commit", fs.commit())
}

/// Directory of [`seed_many_files`].
pub const MANY_DIRECTORY: &[u8] = b"many";
/// Files [`seed_many_files`] creates.
pub const MANY_FILES: u32 = 1000;

/// Create `/many/f0` .. `/many/f999` (empty; existing ones are kept) and
/// commit once.
///
/// # Errors
/// [`TaskError`] naming the failed step.
pub fn seed_many_files(fs: &mut dyn FileSystem) -> Result<(), TaskError> {
    let root = fs.root();
    let directory = lookup_or_create(
        fs,
        root,
        MANY_DIRECTORY,
        &NewNode::Directory,
        &DIRECTORY_OWNER,
    )?;
    for index in 0..MANY_FILES {
        let name = format!("f{index}");
        lookup_or_create(
            fs,
            directory,
            name.as_bytes(),
            &NewNode::Regular,
            &FILE_OWNER,
        )?;
    }
    step("commit", fs.commit())
}

fn read_whole(
    fs: &mut dyn FileSystem,
    directory: InodeId,
    name: &[u8],
) -> Result<Vec<u8>, TaskError> {
    let attributes = step("lookup known file", fs.lookup(directory, name))?;
    let size = usize::try_from(attributes.size).unwrap_or(usize::MAX);
    if size > 16 << 20 {
        return Err(TaskError::Mismatch(format!("known file of {size} bytes")));
    }
    let mut data = vec![0u8; size];
    let read = step("read known file", fs.read(attributes.inode, 0, &mut data))?;
    data.truncate(read);
    Ok(data)
}

/// Check the known files against what [`seed_known_files`] wrote.
///
/// # Errors
/// [`TaskError`] naming the missing file or the first difference.
pub fn verify_known_files(fs: &mut dyn FileSystem) -> Result<(), TaskError> {
    let root = fs.root();
    let directory = step("lookup /known", fs.lookup(root, KNOWN_DIRECTORY))?.inode;
    if read_whole(fs, directory, HELLO_NAME)? != HELLO_TEXT {
        return Err(TaskError::Mismatch("/known/hello.txt".into()));
    }
    if read_whole(fs, directory, LINES_NAME)? != lines_text() {
        return Err(TaskError::Mismatch("/known/lines.txt".into()));
    }
    Ok(())
}

/// `/churn.log`: one `commit N\n` line per churn step.
pub const CHURN_LOG: &[u8] = b"churn.log";
/// `/churn.blob`: rewritten in 64 KiB pieces by each churn step.
pub const CHURN_BLOB: &[u8] = b"churn.blob";

/// One churn step: append `commit N\n` to `/churn.log`, rewrite a 64 KiB
/// piece of `/churn.blob`, commit. After a crash, `/churn.log` must hold
/// exactly the lines `commit 1` .. `commit K` for some K at least the last
/// step that returned.
///
/// # Errors
/// [`TaskError`] naming the failed step.
pub fn churn_step(fs: &mut dyn FileSystem, number: u64) -> Result<(), TaskError> {
    let root = fs.root();
    let log = lookup_or_create(fs, root, CHURN_LOG, &NewNode::Regular, &FILE_OWNER)?;
    let size = step("getattr churn log", fs.getattr(log))?.size;
    step(
        "append",
        fs.write(log, size, format!("commit {number}\n").as_bytes()),
    )?;
    let blob = lookup_or_create(fs, root, CHURN_BLOB, &NewNode::Regular, &FILE_OWNER)?;
    let piece = pattern(65536, number as u8);
    step("write blob", fs.write(blob, (number % 8) * 65536, &piece))?;
    step("commit", fs.commit())
}

/// Check `/churn.log` is `commit 1` .. `commit K`; returns K (0 if absent).
///
/// # Errors
/// [`TaskError::Mismatch`] at the first wrong line.
pub fn verify_churn_log(fs: &mut dyn FileSystem) -> Result<u64, TaskError> {
    let root = fs.root();
    let data = match read_whole(fs, root, CHURN_LOG) {
        Ok(data) => data,
        Err(TaskError::FileSystem(_, FsError::NotFound)) => return Ok(0),
        Err(error) => return Err(error),
    };
    let mut count = 0u64;
    for line in data
        .split(|&byte| byte == b'\n')
        .filter(|line| !line.is_empty())
    {
        count += 1;
        if line != format!("commit {count}").as_bytes() {
            return Err(TaskError::Mismatch(format!("churn.log line {count}")));
        }
    }
    if !data.is_empty() && data.last() != Some(&b'\n') {
        return Err(TaskError::Mismatch("churn.log ends mid-line".into()));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfs::memfs::MemFs;
    use vfs::StepClock;

    fn memfs() -> MemFs {
        MemFs::new(
            alloc::boxed::Box::new(StepClock::new(1_700_000_000)),
            vfs::memfs::MemFsLimits::default(),
        )
    }

    #[test]
    fn self_check_leaves_no_trace() {
        let mut fs = memfs();
        let first = self_check(&mut fs).unwrap();
        let second = self_check(&mut fs).unwrap();
        assert_eq!(first, second);
        assert_eq!(fs.lookup(fs.root(), PROBE_NAME), Err(FsError::NotFound));
    }

    #[test]
    fn inode_count_walks_the_tree_and_stops_at_the_limit() {
        let mut fs = memfs();
        assert_eq!(count_inodes(&mut fs, 100), Ok(1));
        seed_known_files(&mut fs).unwrap();
        let directory = fs.lookup(fs.root(), KNOWN_DIRECTORY).unwrap().inode;
        let hello = fs.lookup(directory, HELLO_NAME).unwrap().inode;
        let root = fs.root();
        fs.link(hello, root, b"again").unwrap();
        // root, /known, hello.txt (twice linked), lines.txt
        assert_eq!(count_inodes(&mut fs, 100), Ok(4));
        assert_eq!(self_check(&mut fs).unwrap().inodes_in_use, 4);
        assert_eq!(count_inodes(&mut fs, 2), Ok(2));
    }

    #[test]
    fn seeded_files_verify_and_damage_is_found() {
        let mut fs = memfs();
        assert!(verify_known_files(&mut fs).is_err());
        seed_known_files(&mut fs).unwrap();
        seed_known_files(&mut fs).unwrap();
        verify_known_files(&mut fs).unwrap();
        let directory = fs.lookup(fs.root(), KNOWN_DIRECTORY).unwrap().inode;
        let lines = fs.lookup(directory, LINES_NAME).unwrap().inode;
        fs.write(lines, 100, b"X").unwrap();
        assert!(matches!(
            verify_known_files(&mut fs),
            Err(TaskError::Mismatch(_))
        ));
        assert_eq!(lines_text().len(), 240_000);
        assert!(lines_text().ends_with(b"line 019999\n"));
    }

    #[test]
    fn many_files_are_seeded_once() {
        let mut fs = memfs();
        seed_many_files(&mut fs).unwrap();
        seed_many_files(&mut fs).unwrap();
        let directory = fs.lookup(fs.root(), MANY_DIRECTORY).unwrap().inode;
        assert!(fs.lookup(directory, b"f0").is_ok());
        assert!(fs.lookup(directory, b"f999").is_ok());
        assert_eq!(fs.lookup(directory, b"f1000"), Err(FsError::NotFound));
        assert_eq!(count_inodes(&mut fs, 10_000), Ok(1002));
    }

    #[test]
    fn churn_log_counts_and_detects_gaps() {
        let mut fs = memfs();
        assert_eq!(verify_churn_log(&mut fs), Ok(0));
        for number in 1..=5 {
            churn_step(&mut fs, number).unwrap();
        }
        assert_eq!(verify_churn_log(&mut fs), Ok(5));
        let log = fs.lookup(fs.root(), CHURN_LOG).unwrap();
        fs.write(log.inode, log.size, b"commit 7\n").unwrap();
        assert!(verify_churn_log(&mut fs).is_err());
    }
}
