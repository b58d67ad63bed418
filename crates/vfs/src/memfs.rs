//! `MemFs`: the in-memory reference implementation of [`FileSystem`].
//!
//! Written to be obviously right rather than fast: it is the model the disk
//! file system's randomized tests compare against after every step, and the
//! in-memory backend of server tests. Its conventions are the ones the disk
//! file system follows too, so the two can be compared field by field:
//!
//! - the root is inode 1, generation 1;
//! - a new inode takes the *smallest* free inode number, with a generation
//!   one past the last generation that number had (1 for a fresh number);
//! - readdir cookies are assigned per directory from a counter starting at 1
//!   that never goes back, so a cookie stays a valid resume point forever;
//! - data is held in 4 KiB chunks, so sparse files cost nothing for holes.

use crate::{
    validate_name, Attributes, Clock, DirectoryEntry, DirectoryPage, FileSystem, FileType, FsError,
    Generation, InodeId, NewNode, Ownership, SetAttributes, StatFs, Timestamp, LINK_MAX,
    MAX_FILE_SIZE, SYMLINK_MAX,
};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

const CHUNK: u64 = 4096;

/// The root directory's inode number in every file system of this project.
pub const ROOT_INODE: InodeId = InodeId(1);

/// Capacity limits of a [`MemFs`], so tests can exercise NoSpace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemFsLimits {
    /// Data chunks (4 KiB each) the file system may hold.
    pub blocks: u64,
    /// Inodes, the root included.
    pub inodes: u64,
}

impl Default for MemFsLimits {
    fn default() -> Self {
        MemFsLimits {
            blocks: 1 << 20,
            inodes: 1 << 20,
        }
    }
}

#[derive(Clone, Debug)]
enum Content {
    File(BTreeMap<u64, Vec<u8>>),
    Directory(Directory),
    Symlink(Vec<u8>),
    Special,
}

#[derive(Clone, Debug, Default)]
struct Directory {
    parent: u64,
    by_name: BTreeMap<Vec<u8>, u64>,
    by_cookie: BTreeMap<u64, (Vec<u8>, u64)>,
    next_cookie: u64,
}

#[derive(Clone, Debug)]
struct Node {
    attributes: Attributes,
    content: Content,
}

/// An in-memory file system; see the module documentation.
pub struct MemFs {
    clock: Box<dyn Clock>,
    nodes: BTreeMap<u64, Node>,
    last_generation: BTreeMap<u64, u64>,
    limits: MemFsLimits,
    used_chunks: u64,
    applied: u64,
    durable: u64,
}

impl core::fmt::Debug for MemFs {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("MemFs")
            .field("inodes", &self.nodes.len())
            .field("used_chunks", &self.used_chunks)
            .field("applied", &self.applied)
            .finish()
    }
}

impl MemFs {
    /// An empty file system with a root directory owned by root, mode 0755.
    pub fn new(clock: Box<dyn Clock>, limits: MemFsLimits) -> Self {
        let now = clock.now();
        let mut file_system = MemFs {
            clock,
            nodes: BTreeMap::new(),
            last_generation: BTreeMap::new(),
            limits,
            used_chunks: 0,
            applied: 0,
            durable: 0,
        };
        let mut root_attributes = new_attributes(1, 1, FileType::Directory, 0o755, 0, 0, now);
        root_attributes.nlink = 2;
        let root = Node {
            attributes: root_attributes,
            content: Content::Directory(Directory {
                parent: 1,
                next_cookie: 1,
                ..Directory::default()
            }),
        };
        file_system.nodes.insert(1, root);
        file_system.last_generation.insert(1, 1);
        file_system
    }

    fn node(&self, inode: InodeId) -> Result<&Node, FsError> {
        self.nodes.get(&inode.0).ok_or(FsError::Stale)
    }

    fn node_mut(&mut self, inode: InodeId) -> Result<&mut Node, FsError> {
        self.nodes.get_mut(&inode.0).ok_or(FsError::Stale)
    }

    fn directory(&self, inode: InodeId) -> Result<&Directory, FsError> {
        match &self.node(inode)?.content {
            Content::Directory(directory) => Ok(directory),
            _ => Err(FsError::NotDirectory),
        }
    }

    fn directory_mut(&mut self, inode: InodeId) -> Result<&mut Directory, FsError> {
        match &mut self.node_mut(inode)?.content {
            Content::Directory(directory) => Ok(directory),
            _ => Err(FsError::NotDirectory),
        }
    }

    fn child(&self, directory: InodeId, name: &[u8]) -> Result<u64, FsError> {
        let directory = self.directory(directory)?;
        let cookie = directory.by_name.get(name).ok_or(FsError::NotFound)?;
        directory
            .by_cookie
            .get(cookie)
            .map(|(_, inode)| *inode)
            .ok_or(FsError::Corrupt("model directory maps disagree".into()))
    }

    fn touch(&mut self, inode: u64, data: bool) {
        let now = self.clock.now();
        if let Some(node) = self.nodes.get_mut(&inode) {
            node.attributes.ctime = now;
            if data {
                node.attributes.mtime = now;
            }
            node.attributes.change += 1;
        }
    }

    fn next_operation(&mut self) {
        self.applied += 1;
    }

    fn insert_entry(&mut self, directory: InodeId, name: &[u8], inode: u64) -> Result<(), FsError> {
        let directory = self.directory_mut(directory)?;
        let cookie = directory.next_cookie;
        directory.next_cookie += 1;
        directory.by_name.insert(name.to_vec(), cookie);
        directory.by_cookie.insert(cookie, (name.to_vec(), inode));
        Ok(())
    }

    fn remove_entry(&mut self, directory: InodeId, name: &[u8]) -> Result<u64, FsError> {
        let directory = self.directory_mut(directory)?;
        let cookie = directory.by_name.remove(name).ok_or(FsError::NotFound)?;
        directory
            .by_cookie
            .remove(&cookie)
            .map(|(_, inode)| inode)
            .ok_or(FsError::Corrupt("model directory maps disagree".into()))
    }

    /// Drop one link; free the inode when none remain.
    fn drop_link(&mut self, inode: u64) {
        let free = match self.nodes.get_mut(&inode) {
            Some(node) => {
                node.attributes.nlink = node.attributes.nlink.saturating_sub(1);
                node.attributes.nlink == 0
            }
            None => false,
        };
        if free {
            if let Some(node) = self.nodes.remove(&inode) {
                if let Content::File(chunks) = node.content {
                    self.used_chunks -= chunks.len() as u64;
                }
            }
        } else {
            self.touch(inode, false);
        }
    }

    fn allocate_inode(&mut self) -> Result<(u64, u64), FsError> {
        if self.nodes.len() as u64 >= self.limits.inodes {
            return Err(FsError::NoSpace);
        }
        let mut number = 1;
        for &used in self.nodes.keys() {
            if used != number {
                break;
            }
            number += 1;
        }
        let generation = self.last_generation.get(&number).map_or(1, |g| g + 1);
        self.last_generation.insert(number, generation);
        Ok((number, generation))
    }

    /// Whether `ancestor` is `inode` or one of its ancestors.
    fn is_ancestor(&self, ancestor: u64, mut inode: u64) -> bool {
        for _ in 0..=self.nodes.len() {
            if inode == ancestor {
                return true;
            }
            let parent = match &self.nodes.get(&inode).map(|node| &node.content) {
                Some(Content::Directory(directory)) => directory.parent,
                _ => return false,
            };
            if parent == inode {
                return false;
            }
            inode = parent;
        }
        false
    }

    fn resize(&mut self, inode: InodeId, size: u64) -> Result<(), FsError> {
        if size > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let node = self.node_mut(inode)?;
        let old_size = node.attributes.size;
        let Content::File(chunks) = &mut node.content else {
            return Err(match node.attributes.file_type {
                FileType::Directory => FsError::IsDirectory,
                _ => FsError::Invalid,
            });
        };
        if size < old_size {
            let keep = size.div_ceil(CHUNK);
            let removed: Vec<u64> = chunks.range(keep..).map(|(index, _)| *index).collect();
            for index in &removed {
                chunks.remove(index);
            }
            if !size.is_multiple_of(CHUNK) {
                if let Some(chunk) = chunks.get_mut(&(size / CHUNK)) {
                    let from = (size % CHUNK) as usize;
                    chunk[from..].fill(0);
                }
            }
            let used = chunks.len() as u64 * CHUNK;
            node.attributes.size = size;
            node.attributes.used = used;
            self.used_chunks -= removed.len() as u64;
        } else {
            node.attributes.size = size;
        }
        Ok(())
    }
}

fn new_attributes(
    inode: u64,
    generation: u64,
    file_type: FileType,
    mode: u32,
    uid: u32,
    gid: u32,
    now: Timestamp,
) -> Attributes {
    Attributes {
        inode: InodeId(inode),
        generation: Generation(generation),
        file_type,
        mode: mode & 0o7777,
        nlink: 1,
        uid,
        gid,
        size: 0,
        used: 0,
        rdev: Default::default(),
        atime: now,
        mtime: now,
        ctime: now,
        change: 1,
    }
}

/// Everything is in memory: no read ever waits.
impl crate::WaitControl for MemFs {
    fn refuse_waits(&mut self, refuse: bool) {
        let _ = refuse;
    }

    fn wants_blocks(&self) -> bool {
        false
    }

    fn take_wanted(&mut self) -> Option<(u64, u64)> {
        None
    }
}

impl FileSystem for MemFs {
    fn root(&self) -> InodeId {
        ROOT_INODE
    }

    fn getattr(&mut self, inode: InodeId) -> Result<Attributes, FsError> {
        Ok(self.node(inode)?.attributes)
    }

    fn setattr(&mut self, inode: InodeId, changes: &SetAttributes) -> Result<Attributes, FsError> {
        self.node(inode)?;
        if let Some(size) = changes.size {
            self.resize(inode, size)?;
        }
        let now = self.clock.now();
        let node = self.node_mut(inode)?;
        let attributes = &mut node.attributes;
        changes.apply(attributes, now);
        let result = *attributes;
        self.next_operation();
        Ok(result)
    }

    fn lookup(&mut self, directory: InodeId, name: &[u8]) -> Result<Attributes, FsError> {
        let target = match name {
            b"." => {
                self.directory(directory)?;
                directory.0
            }
            b".." => self.directory(directory)?.parent,
            _ => {
                validate_name(name)?;
                self.child(directory, name)?
            }
        };
        self.getattr(InodeId(target))
    }

    fn read(&mut self, inode: InodeId, offset: u64, buffer: &mut [u8]) -> Result<usize, FsError> {
        let node = self.node(inode)?;
        let Content::File(chunks) = &node.content else {
            return Err(match node.attributes.file_type {
                FileType::Directory => FsError::IsDirectory,
                _ => FsError::Invalid,
            });
        };
        let size = node.attributes.size;
        if offset >= size {
            return Ok(0);
        }
        let length = (size - offset).min(buffer.len() as u64) as usize;
        for (done, byte) in buffer[..length].iter_mut().enumerate() {
            let position = offset + done as u64;
            *byte = chunks
                .get(&(position / CHUNK))
                .map_or(0, |chunk| chunk[(position % CHUNK) as usize]);
        }
        Ok(length)
    }

    fn write(&mut self, inode: InodeId, offset: u64, data: &[u8]) -> Result<Attributes, FsError> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        let node = self.node(inode)?;
        let Content::File(chunks) = &node.content else {
            return Err(match node.attributes.file_type {
                FileType::Directory => FsError::IsDirectory,
                _ => FsError::Invalid,
            });
        };
        if !data.is_empty() {
            let new_chunks = (offset / CHUNK..=(end - 1) / CHUNK)
                .filter(|index| !chunks.contains_key(index))
                .count() as u64;
            if self.used_chunks + new_chunks > self.limits.blocks {
                return Err(FsError::NoSpace);
            }
            self.used_chunks += new_chunks;
        }
        let node = self.node_mut(inode)?;
        let Content::File(chunks) = &mut node.content else {
            return Err(FsError::Invalid);
        };
        for (done, byte) in data.iter().enumerate() {
            let position = offset + done as u64;
            let chunk = chunks
                .entry(position / CHUNK)
                .or_insert_with(|| vec![0; CHUNK as usize]);
            chunk[(position % CHUNK) as usize] = *byte;
        }
        node.attributes.used = chunks.len() as u64 * CHUNK;
        if end > node.attributes.size {
            node.attributes.size = end;
        }
        self.touch(inode.0, true);
        self.next_operation();
        self.getattr(inode)
    }

    fn readlink(&mut self, inode: InodeId) -> Result<Vec<u8>, FsError> {
        match &self.node(inode)?.content {
            Content::Symlink(target) => Ok(target.clone()),
            _ => Err(FsError::Invalid),
        }
    }

    fn create(
        &mut self,
        directory: InodeId,
        name: &[u8],
        node: &NewNode,
        owner: &Ownership,
    ) -> Result<Attributes, FsError> {
        validate_name(name)?;
        self.directory(directory)?;
        if self.child(directory, name).is_ok() {
            return Err(FsError::Exists);
        }
        if let NewNode::Symlink(target) = node {
            if target.is_empty() || target.len() > SYMLINK_MAX {
                return Err(FsError::Invalid);
            }
        }
        if matches!(node, NewNode::Directory) && self.node(directory)?.attributes.nlink >= LINK_MAX
        {
            return Err(FsError::TooManyLinks);
        }
        let (number, generation) = self.allocate_inode()?;
        let now = self.clock.now();
        let (file_type, content) = match node {
            NewNode::Regular => (FileType::Regular, Content::File(BTreeMap::new())),
            NewNode::Directory => (
                FileType::Directory,
                Content::Directory(Directory {
                    parent: directory.0,
                    next_cookie: 1,
                    ..Directory::default()
                }),
            ),
            NewNode::Symlink(target) => (FileType::Symlink, Content::Symlink(target.clone())),
            NewNode::BlockDevice(_) => (FileType::BlockDevice, Content::Special),
            NewNode::CharacterDevice(_) => (FileType::CharacterDevice, Content::Special),
            NewNode::Fifo => (FileType::Fifo, Content::Special),
            NewNode::Socket => (FileType::Socket, Content::Special),
        };
        let mut attributes = new_attributes(
            number, generation, file_type, owner.mode, owner.uid, owner.gid, now,
        );
        match node {
            NewNode::Directory => attributes.nlink = 2,
            NewNode::Symlink(target) => attributes.size = target.len() as u64,
            NewNode::BlockDevice(rdev) | NewNode::CharacterDevice(rdev) => attributes.rdev = *rdev,
            _ => {}
        }
        self.nodes.insert(
            number,
            Node {
                attributes,
                content,
            },
        );
        self.insert_entry(directory, name, number)?;
        if matches!(node, NewNode::Directory) {
            if let Ok(parent) = self.node_mut(directory) {
                parent.attributes.nlink += 1;
            }
        }
        self.touch(directory.0, true);
        self.next_operation();
        Ok(attributes)
    }

    fn unlink(&mut self, directory: InodeId, name: &[u8]) -> Result<(), FsError> {
        validate_name(name)?;
        let target = self.child(directory, name)?;
        if self.node(InodeId(target))?.attributes.file_type == FileType::Directory {
            return Err(FsError::IsDirectory);
        }
        self.remove_entry(directory, name)?;
        self.drop_link(target);
        self.touch(directory.0, true);
        self.next_operation();
        Ok(())
    }

    fn rmdir(&mut self, directory: InodeId, name: &[u8]) -> Result<(), FsError> {
        if name == b"." || name == b".." {
            return Err(FsError::Invalid);
        }
        validate_name(name)?;
        let target = self.child(directory, name)?;
        if !self.directory(InodeId(target))?.by_name.is_empty() {
            return Err(FsError::NotEmpty);
        }
        self.remove_entry(directory, name)?;
        self.nodes.remove(&target);
        if let Ok(parent) = self.node_mut(directory) {
            parent.attributes.nlink -= 1;
        }
        self.touch(directory.0, true);
        self.next_operation();
        Ok(())
    }

    fn rename(
        &mut self,
        from_directory: InodeId,
        from_name: &[u8],
        to_directory: InodeId,
        to_name: &[u8],
    ) -> Result<(), FsError> {
        for name in [from_name, to_name] {
            if name == b"." || name == b".." {
                return Err(FsError::Invalid);
            }
            validate_name(name)?;
        }
        self.directory(to_directory)?;
        let source = self.child(from_directory, from_name)?;
        let source_is_directory =
            self.node(InodeId(source))?.attributes.file_type == FileType::Directory;
        if source_is_directory && self.is_ancestor(source, to_directory.0) {
            return Err(FsError::Invalid);
        }
        let existing = match self.child(to_directory, to_name) {
            Ok(inode) => Some(inode),
            Err(FsError::NotFound) => None,
            Err(error) => return Err(error),
        };
        if existing == Some(source) {
            return Ok(());
        }
        if let Some(target) = existing {
            let target_is_directory =
                self.node(InodeId(target))?.attributes.file_type == FileType::Directory;
            match (source_is_directory, target_is_directory) {
                (false, true) => return Err(FsError::IsDirectory),
                (true, false) => return Err(FsError::NotDirectory),
                (true, true) if !self.directory(InodeId(target))?.by_name.is_empty() => {
                    return Err(FsError::NotEmpty)
                }
                _ => {}
            }
        }
        let moves_directory = source_is_directory && from_directory != to_directory;
        if moves_directory
            && existing.is_none()
            && self.node(to_directory)?.attributes.nlink >= LINK_MAX
        {
            return Err(FsError::TooManyLinks);
        }
        if let Some(target) = existing {
            self.remove_entry(to_directory, to_name)?;
            if source_is_directory {
                self.nodes.remove(&target);
                self.node_mut(to_directory)?.attributes.nlink -= 1;
            } else {
                self.drop_link(target);
            }
        }
        self.remove_entry(from_directory, from_name)?;
        self.insert_entry(to_directory, to_name, source)?;
        if source_is_directory {
            self.directory_mut(InodeId(source))?.parent = to_directory.0;
            if moves_directory {
                self.node_mut(from_directory)?.attributes.nlink -= 1;
                self.node_mut(to_directory)?.attributes.nlink += 1;
            }
        }
        self.touch(source, false);
        self.touch(from_directory.0, true);
        if to_directory != from_directory {
            self.touch(to_directory.0, true);
        }
        self.next_operation();
        Ok(())
    }

    fn link(
        &mut self,
        inode: InodeId,
        directory: InodeId,
        name: &[u8],
    ) -> Result<Attributes, FsError> {
        validate_name(name)?;
        let node = self.node(inode)?;
        if node.attributes.file_type == FileType::Directory {
            return Err(FsError::IsDirectory);
        }
        if node.attributes.nlink >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        self.directory(directory)?;
        if self.child(directory, name).is_ok() {
            return Err(FsError::Exists);
        }
        self.insert_entry(directory, name, inode.0)?;
        self.node_mut(inode)?.attributes.nlink += 1;
        self.touch(inode.0, false);
        self.touch(directory.0, true);
        self.next_operation();
        self.getattr(inode)
    }

    fn readdir(
        &mut self,
        directory: InodeId,
        cookie: u64,
        max_entries: usize,
    ) -> Result<DirectoryPage, FsError> {
        let listing = self.directory(directory)?;
        if cookie >= listing.next_cookie && cookie != 0 {
            return Err(FsError::BadCookie);
        }
        let mut entries = Vec::new();
        let mut range = listing.by_cookie.range(cookie + 1..);
        for (entry_cookie, (name, inode)) in range.by_ref().take(max_entries) {
            let file_type = self
                .nodes
                .get(inode)
                .map(|node| node.attributes.file_type)
                .ok_or(FsError::Corrupt("model entry names a missing inode".into()))?;
            entries.push(DirectoryEntry {
                name: name.clone(),
                inode: InodeId(*inode),
                file_type,
                cookie: *entry_cookie,
            });
        }
        let end = range.next().is_none();
        Ok(DirectoryPage { entries, end })
    }

    fn statfs(&mut self) -> Result<StatFs, FsError> {
        Ok(StatFs {
            block_size: CHUNK as u32,
            total_blocks: self.limits.blocks,
            free_blocks: self.limits.blocks - self.used_chunks,
            total_inodes: self.limits.inodes,
            free_inodes: self.limits.inodes - self.nodes.len() as u64,
        })
    }

    fn applied_sequence(&self) -> u64 {
        self.applied
    }

    fn durable_sequence(&self) -> u64 {
        self.durable
    }

    fn commit(&mut self) -> Result<(), FsError> {
        self.durable = self.applied;
        Ok(())
    }
}
