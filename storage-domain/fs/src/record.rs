//! Inode records: an inode's attributes and content, as held in memory and
//! as encoded into its record chain.
//!
//! A regular file's content is its block map (file block -> device block),
//! stored as runs of consecutive blocks; a directory's is its entries keyed
//! by a cookie assigned from a per-directory counter that never goes back,
//! which is what keeps readdir cookies valid while the directory changes.

use crate::codec::{Reader, Writer};
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
    File(BTreeMap<u64, u64>),
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
            Content::File(blocks) => blocks.len() * 48,
            Content::Directory(directory) => directory
                .by_cookie
                .values()
                .map(|entry| 2 * entry.name.len() + 96)
                .sum(),
            Content::Symlink(target) => target.len(),
            Content::Special => 0,
        }
    }

    /// Device blocks holding this inode's data.
    pub fn data_blocks(&self) -> impl Iterator<Item = u64> + '_ {
        let blocks = match &self.content {
            Content::File(blocks) => Some(blocks.values().copied()),
            _ => None,
        };
        blocks.into_iter().flatten()
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
                let mut runs: Vec<(u64, u64, u64)> = Vec::new();
                for (&logical, &physical) in blocks {
                    match runs.last_mut() {
                        Some((start, first, length))
                            if *start + *length == logical && *first + *length == physical =>
                        {
                            *length += 1
                        }
                        _ => runs.push((logical, physical, 1)),
                    }
                }
                writer.u64(runs.len() as u64);
                for (logical, physical, length) in runs {
                    writer.u64(logical);
                    writer.u64(physical);
                    writer.u64(length);
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
                let mut blocks = BTreeMap::new();
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
                    if blocks.len() as u64 + length > (payload.len() as u64) * 1024 {
                        return Err(reader.corrupt("block map larger than possible"));
                    }
                    for step in 0..length {
                        if blocks.insert(logical + step, physical + step).is_some() {
                            return Err(reader.corrupt("overlapping block runs"));
                        }
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
