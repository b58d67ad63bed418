//! `fsck`: check every checksum and invariant of an image.
//!
//! Opening a volume already verifies every checksum, that every block is
//! in range and referenced exactly once, and that every record decodes.
//! This adds the structure: every live inode reachable from the root,
//! directories reachable once with consistent parent pointers, link counts
//! (directories counted the POSIX way), entry types matching inodes, file
//! blocks inside the file size, `used` figures, and the superblock's
//! counts against the walk.

use crate::record::Content;
use crate::volume::Volume;
use crate::{layout::BLOCK_SIZE, BlockDevice};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use vfs::{Clock, FileType};

/// What fsck found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// Every problem, in words; empty means clean.
    pub problems: Vec<String>,
    /// Live inodes.
    pub inodes: u64,
    /// Blocks in use.
    pub used_blocks: u64,
    /// Blocks in the file system.
    pub total_blocks: u64,
    /// Sequence number of the commit checked.
    pub sequence: u64,
}

impl FsckReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Check the file system on `device`.
pub fn fsck<D: BlockDevice>(device: D, clock: Box<dyn Clock>) -> FsckReport {
    let mut report = FsckReport::default();
    let mut volume = match Volume::open(device, clock, 0) {
        Ok(volume) => volume,
        Err(error) => {
            report.problems.push(format!("cannot open: {error}"));
            return report;
        }
    };
    report.inodes = volume.live_inodes;
    report.used_blocks = volume.used.count();
    report.total_blocks = volume.superblock.block_count;
    report.sequence = volume.superblock.sequence;
    if volume.superblock.used_blocks != report.used_blocks {
        report.problems.push(format!(
            "superblock says {} blocks in use, the walk found {}",
            volume.superblock.used_blocks, report.used_blocks
        ));
    }
    if volume.superblock.inode_count != report.inodes {
        report.problems.push(format!(
            "superblock says {} inodes, the index holds {}",
            volume.superblock.inode_count, report.inodes
        ));
    }
    check_tree(&mut volume, &mut report.problems);
    let snapshots = volume.snapshots.clone();
    let mut device = volume.into_device();
    for snapshot in snapshots {
        let name = String::from_utf8_lossy(&snapshot.name).into_owned();
        match Volume::open_at(
            &mut device,
            Box::new(crate::snapshot::NoClock),
            0,
            Some(snapshot.index_root),
        ) {
            Ok(mut view) => {
                let mut problems = Vec::new();
                check_tree(&mut view, &mut problems);
                report.problems.extend(
                    problems
                        .into_iter()
                        .map(|problem| format!("snapshot {name:?}: {problem}")),
                );
            }
            Err(error) => report.problems.push(format!("snapshot {name:?}: {error}")),
        }
    }
    report
}

fn check_tree<D: BlockDevice>(volume: &mut Volume<D>, problems: &mut Vec<String>) {
    // links[inode] = (entries naming it, subdirectories it holds)
    let mut links: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut visited_directories = BTreeMap::new();
    let mut queue = VecDeque::from([1u64]);
    links.insert(1, (1, 0));
    while let Some(directory) = queue.pop_front() {
        if visited_directories.insert(directory, ()).is_some() {
            problems.push(format!("directory {directory} is reachable more than once"));
            continue;
        }
        let entries: Vec<_> = match volume
            .cached(directory)
            .map(|entry| entry.inode.content.clone())
        {
            Ok(Content::Directory(listing)) => listing.by_cookie.into_values().collect(),
            Ok(_) => continue,
            Err(error) => {
                problems.push(format!("directory {directory}: {error}"));
                continue;
            }
        };
        for entry in entries {
            let name = String::from_utf8_lossy(&entry.name);
            let child = match volume.cached(entry.inode) {
                Ok(child) => child.inode.clone(),
                Err(error) => {
                    problems.push(format!(
                        "entry {name:?} in directory {directory} names inode {}: {error}",
                        entry.inode
                    ));
                    continue;
                }
            };
            if child.attributes.file_type != entry.file_type {
                problems.push(format!(
                    "entry {name:?} in directory {directory}: type differs from inode {}",
                    entry.inode
                ));
            }
            links.entry(entry.inode).or_default().0 += 1;
            if let Content::Directory(listing) = &child.content {
                links.entry(directory).or_default().1 += 1;
                if listing.parent != directory {
                    problems.push(format!(
                        "directory {} has parent {} but is listed in {directory}",
                        entry.inode, listing.parent
                    ));
                }
                queue.push_back(entry.inode);
            }
        }
    }
    let numbers: Vec<u64> = volume
        .leaves
        .iter()
        .flat_map(|(&leaf, slots)| {
            slots
                .slots
                .iter()
                .enumerate()
                .filter(|(_, slot)| slot.record != 0)
                .map(move |(index, _)| leaf * crate::layout::LEAF_SLOTS + index as u64)
        })
        .collect();
    for number in numbers {
        let inode = match volume.cached(number) {
            Ok(entry) => entry.inode.clone(),
            Err(error) => {
                problems.push(format!("inode {number}: {error}"));
                continue;
            }
        };
        let Some(&(names, subdirectories)) = links.get(&number) else {
            problems.push(format!(
                "inode {number} is allocated but no directory names it"
            ));
            continue;
        };
        let expected = match inode.attributes.file_type {
            FileType::Directory => {
                if names != 1 {
                    problems.push(format!("directory {number} has {names} names"));
                }
                2 + subdirectories
            }
            _ => names,
        };
        if inode.attributes.nlink as u64 != expected {
            problems.push(format!(
                "inode {number}: link count {} but {expected} links found",
                inode.attributes.nlink
            ));
        }
        if let Content::File(blocks) = &inode.content {
            let limit = inode.attributes.size.div_ceil(BLOCK_SIZE as u64);
            if blocks.end() > limit {
                problems.push(format!(
                    "inode {number}: blocks mapped past the end of the file"
                ));
            }
            if inode.attributes.used != blocks.mapped_blocks() * BLOCK_SIZE as u64 {
                problems.push(format!(
                    "inode {number}: used is {} but {} blocks are mapped",
                    inode.attributes.used,
                    blocks.mapped_blocks()
                ));
            }
        }
    }
}
