//! Inode records: an inode's attributes and content, as held in memory and
//! as encoded into its record chain.
//!
//! A regular file's content is its block map (file block -> device block),
//! stored as runs of consecutive blocks; a directory's is its entries keyed
//! by a cookie assigned from a per-directory counter that never goes back,
//! which is what keeps readdir cookies valid while the directory changes.

use crate::codec::{Reader, Writer};
use crate::file_map::{FileMap, Run};
use crate::layout::BLOCK_SIZE;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;
use vfs::{
    validate_name, Attributes, DeviceNumber, FileType, FsError, Generation, InodeId, Timestamp,
    MAX_FILE_SIZE, SYMLINK_MAX,
};

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name.
    pub name: Vec<u8>,
    /// The inode it names.
    pub inode: u64,
    /// That inode's type (so readdir needs no inode reads).
    pub file_type: FileType,
}

/// A directory's entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    /// The parent directory (the root's parent is itself).
    pub parent: u64,
    /// The next cookie to assign; never decreases.
    pub next_cookie: u64,
    /// Entries by cookie (readdir order).
    pub by_cookie: BTreeMap<u64, Entry>,
    /// Cookies by name.
    pub by_name: BTreeMap<Vec<u8>, u64>,
}

impl Directory {
    /// An empty directory under `parent`.
    pub fn new(parent: u64) -> Self {
        Directory {
            parent,
            next_cookie: 1,
            ..Directory::default()
        }
    }

    /// The entry called `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.by_name
            .get(name)
            .and_then(|cookie| self.by_cookie.get(cookie))
    }

    /// Add an entry (the caller has checked the name is free).
    pub fn insert(&mut self, entry: Entry) {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.by_name.insert(entry.name.clone(), cookie);
        self.by_cookie.insert(cookie, entry);
    }

    /// Remove the entry called `name`.
    pub fn remove(&mut self, name: &[u8]) -> Option<Entry> {
        let cookie = self.by_name.remove(name)?;
        self.by_cookie.remove(&cookie)
    }
}

/// What an inode holds besides its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A regular file's block map: file block -> device block.
    File(FileMap),
    /// A directory.
    Directory(Directory),
    /// A symlink target.
    Symlink(Vec<u8>),
    /// Devices, FIFOs and sockets: attributes only.
    Special,
}

/// An inode in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    /// Its attributes.
    pub attributes: Attributes,
    /// Its content.
    pub content: Content,
}

fn type_code(file_type: FileType) -> u8 {
    match file_type {
        FileType::Regular => 1,
        FileType::Directory => 2,
        FileType::Symlink => 3,
        FileType::BlockDevice => 4,
        FileType::CharacterDevice => 5,
        FileType::Fifo => 6,
        FileType::Socket => 7,
    }
}

fn type_from_code(code: u8) -> Option<FileType> {
    Some(match code {
        1 => FileType::Regular,
        2 => FileType::Directory,
        3 => FileType::Symlink,
        4 => FileType::BlockDevice,
        5 => FileType::CharacterDevice,
        6 => FileType::Fifo,
        7 => FileType::Socket,
        _ => return None,
    })
}

fn put_time(writer: &mut Writer, time: Timestamp) {
    writer.i64(time.seconds);
    writer.u32(time.nanoseconds);
}

fn get_time(reader: &mut Reader<'_>) -> Result<Timestamp, FsError> {
    let seconds = reader.i64()?;
    let nanoseconds = reader.u32()?;
    if nanoseconds >= 1_000_000_000 {
        return Err(reader.corrupt("nanoseconds out of range"));
    }
    Ok(Timestamp {
        seconds,
        nanoseconds,
    })
}

impl Inode {
    /// Approximate bytes this inode occupies in memory (for the cache budget).
    pub fn memory_size(&self) -> usize {
        160 + match &self.content {
            Content::File(blocks) => blocks.run_count() * 64,
            Content::Directory(directory) => directory
                .by_cookie
                .values()
                .map(|entry| 2 * entry.name.len() + 96)
                .sum(),
            Content::Symlink(target) => target.len(),
            Content::Special => 0,
        }
    }

    /// Device blocks holding this inode's data, as (first block, length)
    /// runs.
    pub fn data_runs(&self) -> Vec<(u64, u64)> {
        match &self.content {
            Content::File(blocks) => blocks
                .runs()
                .map(|(_, run)| (run.physical, run.length))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Encode into a record payload.
    pub fn encode(&self) -> Vec<u8> {
        let attributes = &self.attributes;
        let mut writer = Writer::default();
        writer.u64(attributes.inode.0);
        writer.u64(attributes.generation.0);
        writer.u8(type_code(attributes.file_type));
        writer.u32(attributes.mode);
        writer.u32(attributes.nlink);
        writer.u32(attributes.uid);
        writer.u32(attributes.gid);
        writer.u64(attributes.size);
        writer.u64(attributes.used);
        writer.u32(attributes.rdev.major);
        writer.u32(attributes.rdev.minor);
        put_time(&mut writer, attributes.atime);
        put_time(&mut writer, attributes.mtime);
        put_time(&mut writer, attributes.ctime);
        writer.u64(attributes.change);
        match &self.content {
            Content::File(blocks) => {
                writer.u64(blocks.run_count() as u64);
                for (logical, run) in blocks.runs() {
                    writer.u64(logical);
                    writer.u64(run.physical);
                    writer.u64(run.length);
                }
            }
            Content::Directory(directory) => {
                writer.u64(directory.parent);
                writer.u64(directory.next_cookie);
                writer.u64(directory.by_cookie.len() as u64);
                for (&cookie, entry) in &directory.by_cookie {
                    writer.u64(cookie);
                    writer.u64(entry.inode);
                    writer.u8(type_code(entry.file_type));
                    writer.u8(entry.name.len() as u8);
                    writer.bytes(&entry.name);
                }
            }
            Content::Symlink(target) => {
                writer.u64(target.len() as u64);
                writer.bytes(target);
            }
            Content::Special => {}
        }
        writer.bytes
    }

    /// Decode a record payload, validating every field.
    ///
    /// # Errors
    /// [`FsError::Corrupt`] naming the problem.
    pub fn decode(payload: &[u8], expected: u64) -> Result<Self, FsError> {
        let mut reader = Reader::new(payload, "inode record");
        let inode = reader.u64()?;
        if inode != expected {
            return Err(FsError::Corrupt(format!(
                "inode record for {expected} names inode {inode}"
            )));
        }
        let generation = reader.u64()?;
        let file_type =
            type_from_code(reader.u8()?).ok_or_else(|| reader.corrupt("unknown file type"))?;
        let mode = reader.u32()?;
        if mode & !0o7777 != 0 {
            return Err(reader.corrupt("mode has type bits"));
        }
        let nlink = reader.u32()?;
        let uid = reader.u32()?;
        let gid = reader.u32()?;
        let size = reader.u64()?;
        let used = reader.u64()?;
        let rdev = DeviceNumber {
            major: reader.u32()?,
            minor: reader.u32()?,
        };
        let atime = get_time(&mut reader)?;
        let mtime = get_time(&mut reader)?;
        let ctime = get_time(&mut reader)?;
        let change = reader.u64()?;
        let attributes = Attributes {
            inode: InodeId(inode),
            generation: Generation(generation),
            file_type,
            mode,
            nlink,
            uid,
            gid,
            size,
            used,
            rdev,
            atime,
            mtime,
            ctime,
            change,
        };
        let content = match file_type {
            FileType::Regular => {
                if size > MAX_FILE_SIZE {
                    return Err(reader.corrupt("file size past the maximum"));
                }
                let runs = reader.count(24)?;
                let mut blocks = FileMap::default();
                let limit = MAX_FILE_SIZE / BLOCK_SIZE as u64;
                for _ in 0..runs {
                    let logical = reader.u64()?;
                    let physical = reader.u64()?;
                    let length = reader.u64()?;
                    let fits = logical.checked_add(length).is_some_and(|end| end <= limit)
                        && physical.checked_add(length).is_some();
                    if length == 0 || !fits {
                        return Err(reader.corrupt("bad block run"));
                    }
                    if blocks.push_run(logical, Run { physical, length }).is_err() {
                        return Err(reader.corrupt("overlapping or unordered block runs"));
                    }
                }
                Content::File(blocks)
            }
            FileType::Directory => {
                let parent = reader.u64()?;
                let next_cookie = reader.u64()?;
                let count = reader.count(19)?;
                let mut directory = Directory {
                    parent,
                    next_cookie,
                    ..Directory::default()
                };
                for _ in 0..count {
                    let cookie = reader.u64()?;
                    let child = reader.u64()?;
                    let child_type = type_from_code(reader.u8()?)
                        .ok_or_else(|| reader.corrupt("unknown entry type"))?;
                    let length = reader.u8()? as usize;
                    let name = reader.take(length)?.to_vec();
                    if validate_name(&name).is_err()
                        || cookie == 0
                        || cookie >= next_cookie
                        || child == 0
                    {
                        return Err(reader.corrupt("bad directory entry"));
                    }
                    if directory.by_name.insert(name.clone(), cookie).is_some()
                        || directory
                            .by_cookie
                            .insert(
                                cookie,
                                Entry {
                                    name,
                                    inode: child,
                                    file_type: child_type,
                                },
                            )
                            .is_some()
                    {
                        return Err(reader.corrupt("duplicate directory entry"));
                    }
                }
                Content::Directory(directory)
            }
            FileType::Symlink => {
                let length = reader.count(1)?;
                if length == 0 || length > SYMLINK_MAX {
                    return Err(reader.corrupt("bad symlink length"));
                }
                Content::Symlink(reader.take(length)?.to_vec())
            }
            _ => Content::Special,
        };
        if reader.remaining() != 0 {
            return Err(reader.corrupt("trailing bytes"));
        }
        Ok(Inode {
            attributes,
            content,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_map::Run;

    fn file_with(blocks: FileMap) -> Inode {
        Inode {
            attributes: Attributes {
                inode: InodeId(5),
                generation: Generation(3),
                file_type: FileType::Regular,
                mode: 0o644,
                nlink: 1,
                uid: 0,
                gid: 0,
                size: blocks.end() * BLOCK_SIZE as u64,
                used: blocks.mapped_blocks() * BLOCK_SIZE as u64,
                rdev: DeviceNumber::default(),
                atime: Timestamp::default(),
                mtime: Timestamp::default(),
                ctime: Timestamp::default(),
                change: 1,
            },
            content: Content::File(blocks),
        }
    }

    /// A large file written in order is one run: a few bytes of record,
    /// whatever its length (an earlier decoder refused block maps larger
    /// than 1,024 blocks per record byte, so a volume holding one
    /// sequentially written 600 MiB file no longer opened).
    #[test]
    fn a_terabyte_run_round_trips_in_one_small_record() {
        let mut blocks = FileMap::default();
        let run = Run {
            physical: 100,
            length: 1 << 28,
        };
        blocks.push_run(0, run).unwrap();
        let inode = file_with(blocks);
        let payload = inode.encode();
        assert!(payload.len() < 160, "record of {} bytes", payload.len());
        assert_eq!(Inode::decode(&payload, 5).unwrap(), inode);
        assert!(inode.memory_size() < 512);
    }

    #[test]
    fn out_of_order_or_overlapping_runs_are_corruption() {
        let mut blocks = FileMap::default();
        blocks
            .push_run(
                10,
                Run {
                    physical: 100,
                    length: 5,
                },
            )
            .unwrap();
        let mut payload = file_with(blocks).encode();
        // Append a second run that overlaps the first and fix the count.
        let count_at = payload.len() - 32;
        payload[count_at..count_at + 8].copy_from_slice(&2u64.to_le_bytes());
        for value in [12u64, 500, 1] {
            payload.extend_from_slice(&value.to_le_bytes());
        }
        assert!(matches!(
            Inode::decode(&payload, 5),
            Err(FsError::Corrupt(_))
        ));
    }
}
