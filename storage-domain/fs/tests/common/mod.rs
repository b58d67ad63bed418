//! Shared test machinery: a seeded generator, a tree dump that compares
//! any two `FileSystem`s, and a random operation driver.
#![allow(dead_code)] // each test binary uses a different part

use sdfs::device::MemoryDevice;
use sdfs::{FormatOptions, Volume};
use std::collections::BTreeMap;
use vfs::{
    Attributes, DeviceNumber, FileSystem, FileType, FsError, InodeId, NewNode, Ownership,
    SetAttributes, StepClock,
};

/// splitmix64: small, seedable, good enough for test workloads.
pub struct Random(pub u64);

impl Random {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, limit: u64) -> u64 {
        if limit == 0 {
            0
        } else {
            self.next() % limit
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

pub const OPTIONS: FormatOptions = FormatOptions {
    uuid: [7; 16],
    handle_secret: [9; 32],
};

pub fn formatted(blocks: u64) -> MemoryDevice {
    let mut device = MemoryDevice::new(blocks);
    Volume::format(&mut device, OPTIONS, &StepClock::new(1_700_000_000)).expect("format");
    device
}

pub fn clock() -> Box<StepClock> {
    Box::new(StepClock::new(1_700_000_000))
}

/// Attributes that must agree between implementations (times and the
/// storage-specific `used`/directory `size` excluded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub inode: u64,
    pub generation: u64,
    pub file_type: FileType,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: Option<u64>,
    pub rdev: DeviceNumber,
}

pub fn summary(attributes: &Attributes) -> Summary {
    Summary {
        inode: attributes.inode.0,
        generation: attributes.generation.0,
        file_type: attributes.file_type,
        mode: attributes.mode,
        nlink: attributes.nlink,
        uid: attributes.uid,
        gid: attributes.gid,
        size: (attributes.file_type != FileType::Directory).then_some(attributes.size),
        rdev: attributes.rdev,
    }
}

/// A whole tree: path -> (attributes, readdir cookie, content).
pub type Tree = BTreeMap<Vec<u8>, (Summary, u64, Vec<u8>)>;

pub fn dump(fs: &mut dyn FileSystem) -> Tree {
    let mut tree = Tree::new();
    let root = fs.root();
    let attributes = fs.getattr(root).expect("root getattr");
    tree.insert(b"/".to_vec(), (summary(&attributes), 0, Vec::new()));
    let mut pending = vec![(b"".to_vec(), root)];
    while let Some((path, directory)) = pending.pop() {
        let mut cookie = 0;
        loop {
            let page = fs.readdir(directory, cookie, 7).expect("readdir");
            for entry in &page.entries {
                let mut child_path = path.clone();
                child_path.push(b'/');
                child_path.extend_from_slice(&entry.name);
                let attributes = fs.getattr(entry.inode).expect("getattr of an entry");
                assert_eq!(
                    attributes.file_type, entry.file_type,
                    "entry type of {child_path:?}"
                );
                let content = match attributes.file_type {
                    FileType::Regular => {
                        let mut buffer = vec![0u8; attributes.size as usize];
                        let read = fs.read(entry.inode, 0, &mut buffer).expect("read");
                        assert_eq!(read as u64, attributes.size);
                        buffer
                    }
                    FileType::Symlink => fs.readlink(entry.inode).expect("readlink"),
                    FileType::Directory => {
                        pending.push((child_path.clone(), entry.inode));
                        Vec::new()
                    }
                    _ => Vec::new(),
                };
                tree.insert(child_path, (summary(&attributes), entry.cookie, content));
            }
            match page.entries.last() {
                Some(last) if !page.end => cookie = last.cookie,
                _ => break,
            }
        }
    }
    tree
}

/// Apply one random operation to a file system; the returned value is
/// what must agree between the model and the file system under test.
pub fn random_operation(
    fs: &mut dyn FileSystem,
    random: &mut Random,
    directories: &[InodeId],
    files: &[InodeId],
) -> String {
    let names: [&[u8]; 6] = [b"a", b"b", b"c", b"dir", b"long-name-for-a-file", b"z"];
    let first_name = names[random.below(names.len() as u64) as usize];
    let second_name = names[random.below(names.len() as u64) as usize];
    let directory = directories[random.below(directories.len() as u64) as usize];
    let file = files
        .get(random.below(files.len().max(1) as u64) as usize)
        .copied()
        .unwrap_or(InodeId(1));
    let owner = Ownership {
        mode: 0o640 | random.below(8) as u32,
        uid: random.below(3) as u32,
        gid: 7,
    };
    let describe_attributes =
        |result: Result<Attributes, FsError>| format!("{:?}", result.map(|a| summary(&a)));
    match random.below(100) {
        0..=11 => {
            let n = first_name;
            describe_attributes(fs.create(directory, n, &NewNode::Regular, &owner))
        }
        12..=17 => {
            let n = first_name;
            describe_attributes(fs.create(directory, n, &NewNode::Directory, &owner))
        }
        18..=19 => {
            let n = first_name;
            describe_attributes(fs.create(
                directory,
                n,
                &NewNode::Symlink(b"target/of/link".to_vec()),
                &owner,
            ))
        }
        20 => {
            let n = first_name;
            describe_attributes(fs.create(
                directory,
                n,
                &NewNode::CharacterDevice(DeviceNumber { major: 1, minor: 3 }),
                &owner,
            ))
        }
        21 => {
            let n = first_name;
            describe_attributes(fs.create(directory, n, &NewNode::Fifo, &owner))
        }
        22..=41 => {
            let offset = random.below(300_000);
            let limit = if random.chance(20) { 40_000 } else { 5_000 };
            let length = random.below(limit);
            let byte = random.below(255) as u8 + 1;
            let data: Vec<u8> = (0..length)
                .map(|index| byte.wrapping_add(index as u8))
                .collect();
            describe_attributes(fs.write(file, offset, &data))
        }
        42..=49 => {
            let size = random.below(350_000);
            describe_attributes(fs.setattr(
                file,
                &SetAttributes {
                    size: Some(size),
                    ..Default::default()
                },
            ))
        }
        50..=53 => describe_attributes(fs.setattr(
            file,
            &SetAttributes {
                mode: Some(0o600 | random.below(0o100) as u32),
                uid: Some(random.below(5) as u32),
                ..Default::default()
            },
        )),
        54..=65 => {
            let to = directories[random.below(directories.len() as u64) as usize];
            let (from_name, to_name) = (first_name, second_name);
            format!("{:?}", fs.rename(directory, from_name, to, to_name))
        }
        66..=71 => {
            let n = first_name;
            describe_attributes(fs.link(file, directory, n))
        }
        72..=83 => {
            let n = first_name;
            format!("{:?}", fs.unlink(directory, n))
        }
        84..=89 => {
            let n = first_name;
            format!("{:?}", fs.rmdir(directory, n))
        }
        90..=94 => {
            let n = first_name;
            describe_attributes(fs.lookup(directory, n))
        }
        _ => {
            let mut buffer = vec![0u8; random.below(9000) as usize];
            let offset = random.below(300_000);
            // Half the reads hand their bytes over in pieces (`read_to`),
            // which must come in order, each byte once.
            let result = if offset.is_multiple_of(2) {
                fs.read(file, offset, &mut buffer)
                    .map(|count| buffer[..count].to_vec())
            } else {
                let mut pieces = Vec::new();
                fs.read_to(file, offset, buffer.len(), &mut |at, bytes| {
                    assert_eq!(at, pieces.len(), "a piece out of order");
                    pieces.extend_from_slice(bytes);
                })
                .map(|count| {
                    assert_eq!(count, pieces.len(), "pieces and count disagree");
                    pieces
                })
            };
            format!("{result:?}")
        }
    }
}

/// Directories and regular files of a tree, as inode ids.
pub fn targets(tree: &Tree) -> (Vec<InodeId>, Vec<InodeId>) {
    let mut directories = vec![InodeId(1)];
    let mut files = Vec::new();
    for (summary, _, _) in tree.values() {
        match summary.file_type {
            FileType::Directory if summary.inode != 1 => directories.push(InodeId(summary.inode)),
            FileType::Regular => files.push(InodeId(summary.inode)),
            _ => {}
        }
    }
    directories.sort();
    directories.dedup();
    files.sort();
    files.dedup();
    // Sometimes aim at a non-directory or a freed inode, to exercise errors.
    directories.extend(files.first().copied());
    files.push(InodeId(4242));
    (directories, files)
}

/// Panic with the first difference between two trees (not the whole dump).
pub fn assert_same_tree(actual: &Tree, expected: &Tree, context: &str) {
    for (path, value) in expected {
        match actual.get(path) {
            None => panic!("{context}: {} missing", String::from_utf8_lossy(path)),
            Some(found) if found.0 != value.0 || found.1 != value.1 => panic!(
                "{context}: {} differs: {:?} cookie {} vs expected {:?} cookie {}",
                String::from_utf8_lossy(path),
                found.0,
                found.1,
                value.0,
                value.1
            ),
            Some(found) if found.2 != value.2 => {
                let at = found
                    .2
                    .iter()
                    .zip(&value.2)
                    .position(|(a, b)| a != b)
                    .unwrap_or(found.2.len().min(value.2.len()));
                panic!(
                    "{context}: {} content differs at byte {at} (lengths {} and {})",
                    String::from_utf8_lossy(path),
                    found.2.len(),
                    value.2.len()
                )
            }
            Some(_) => {}
        }
    }
    for path in actual.keys() {
        assert!(
            expected.contains_key(path),
            "{context}: {} unexpected",
            String::from_utf8_lossy(path)
        );
    }
}

/// Recompute every checksum in `image` (both superblocks and every block
/// that starts with a sealed-block magic), so damage reaches the decoders
/// behind the checksums: a forged image, not a torn one.
pub fn reseal(image: &mut [u8]) {
    const SUPERBLOCK_CHECKSUM_AT: usize = 120;
    const SEALED: [&[u8; 4]; 4] = [b"SDIX", b"SDLF", b"SDRC", b"SDST"];
    for block in image.chunks_mut(sdfs::BLOCK_SIZE) {
        if block.len() < sdfs::BLOCK_SIZE {
            continue;
        }
        if block.starts_with(b"SDFSv001") {
            let checksum = sdfs::crc32c(&block[..SUPERBLOCK_CHECKSUM_AT]);
            block[SUPERBLOCK_CHECKSUM_AT..SUPERBLOCK_CHECKSUM_AT + 4]
                .copy_from_slice(&checksum.to_le_bytes());
        } else if SEALED.iter().any(|magic| block.starts_with(&magic[..])) {
            block[4..8].fill(0);
            let checksum = sdfs::crc32c(block);
            block[4..8].copy_from_slice(&checksum.to_le_bytes());
        }
    }
}

/// Cuts `recording` at every flush and at as many random points, each
/// with a random subset of the unflushed writes kept, and checks every
/// crash image: `fsck` clean, and the tree of one of the `following`
/// commits from the last one finished at the cut (`commits[k]` = events
/// recorded when commit `k` finished, and its tree). Returns the cuts
/// checked.
pub fn check_crash_cuts(
    recording: &sdfs::device::RecordingDevice,
    commits: &[(usize, Tree)],
    random: &mut Random,
    seed: u64,
    following: usize,
) -> u64 {
    let mut cuts: Vec<usize> = recording
        .flush_points()
        .iter()
        .map(|&index| index + 1)
        .collect();
    for _ in 0..cuts.len() {
        cuts.push(random.below(recording.events.len() as u64 + 1) as usize);
    }
    let mut checked = 0;
    for cut in cuts {
        let mut keep_random = Random(random.next());
        let image = recording.crash_image(cut, |_| keep_random.chance(50));
        let report = sdfs::fsck(image.clone(), clock());
        assert!(
            report.is_clean(),
            "seed {seed} cut {cut}: fsck: {:?}",
            report.problems
        );
        let mut reopened = sdfs::Volume::open(image, clock(), 1 << 20).expect("reopen after crash");
        let recovered = dump(&mut reopened);
        let last_done = commits
            .iter()
            .rposition(|(events, _)| *events <= cut)
            .unwrap_or(0);
        assert!(
            commits[last_done..]
                .iter()
                .take(following)
                .any(|(_, tree)| *tree == recovered),
            "seed {seed} cut {cut}: recovered tree matches none of the {following} commits from {last_done} on"
        );
        checked += 1;
    }
    checked
}
