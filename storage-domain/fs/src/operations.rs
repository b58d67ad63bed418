//! [`vfs::FileSystem`] for [`Volume`]: the POSIX rules, over the volume's
//! inode cache and copy-on-write data blocks.
//!
//! Every mutating operation first reserves the blocks its commit will need
//! ([`Volume::reserve`]), so a full disk fails the operation cleanly with
//! `NoSpace` before anything changes, and a commit can always complete.
//! An operation refused so, when a commit would give blocks back (blocks
//! removed files held become free only once their removal is committed),
//! commits and tries once more ([`Volume::with_room`]): a file removed on
//! a full disk makes room for the next write at once.

use crate::layout::{LeafSlot, BLOCK_SIZE, RECORD_PAYLOAD};
use crate::record::{Content, Directory, Entry, Inode};
use crate::volume::{SpaceUse, Volume, PENDING};
use crate::BlockDevice;
use alloc::boxed::Box;
use alloc::vec::Vec;
use vfs::{
    validate_name, Attributes, DirectoryEntry, DirectoryPage, FileSystem, FileType, FsError,
    Generation, InodeId, NewNode, Ownership, SetAttributes, SnapshotListing, SnapshotSummary,
    StatFs, LINK_MAX, MAX_FILE_SIZE, SYMLINK_MAX,
};

const BLOCK: u64 = BLOCK_SIZE as u64;

fn wrong_kind(file_type: FileType) -> FsError {
    match file_type {
        FileType::Directory => FsError::IsDirectory,
        _ => FsError::Invalid,
    }
}

impl<D: BlockDevice> Volume<D> {
    fn inode(&mut self, number: u64) -> Result<&mut Inode, FsError> {
        Ok(&mut self.cached(number)?.inode)
    }

    /// Inode `number` for changing: marked dirty before it is handed out,
    /// so no cache eviction can drop the change.
    fn inode_mut(&mut self, number: u64) -> Result<&mut Inode, FsError> {
        self.cached(number)?;
        self.mark_dirty(number);
        Ok(&mut self.cached(number)?.inode)
    }

    fn directory_mut(&mut self, number: u64) -> Result<&mut Directory, FsError> {
        match &mut self.inode_mut(number)?.content {
            Content::Directory(directory) => Ok(directory),
            _ => Err(FsError::NotDirectory),
        }
    }

    fn directory(&mut self, number: u64) -> Result<&mut Directory, FsError> {
        match &mut self.inode(number)?.content {
            Content::Directory(directory) => Ok(directory),
            _ => Err(FsError::NotDirectory),
        }
    }

    /// Bump ctime (and mtime) and the change counter, and mark dirty.
    fn touch(&mut self, number: u64, data: bool) {
        let now = self.clock.now();
        if let Ok(entry) = self.cached(number) {
            entry.inode.attributes.ctime = now;
            if data {
                entry.inode.attributes.mtime = now;
            }
            entry.inode.attributes.change += 1;
        }
        self.mark_dirty(number);
    }

    fn done(&mut self) {
        self.applied += 1;
    }

    /// Release an inode whose last link is gone.
    fn free_inode(&mut self, number: u64) {
        let Some(entry) = self.cache.remove(&number) else {
            return;
        };
        self.cache_bytes = self.cache_bytes.saturating_sub(entry.size);
        self.dirty.remove(&number);
        for block in entry.chain {
            self.release(block);
        }
        for (first, length) in entry.inode.data_runs() {
            self.release_run(first, length);
        }
        let generation = entry.inode.attributes.generation.0;
        self.set_slot(
            number,
            LeafSlot {
                record: 0,
                generation,
            },
        );
        self.free_numbers.insert(number);
        self.live_inodes -= 1;
    }

    /// Drop one link to a non-directory; free it at zero.
    fn drop_link(&mut self, number: u64) -> Result<(), FsError> {
        let inode = self.inode_mut(number)?;
        inode.attributes.nlink = inode.attributes.nlink.saturating_sub(1);
        if inode.attributes.nlink == 0 {
            self.free_inode(number);
        } else {
            self.touch(number, false);
        }
        Ok(())
    }

    fn child(&mut self, directory: u64, name: &[u8]) -> Result<Entry, FsError> {
        self.directory(directory)?
            .get(name)
            .cloned()
            .ok_or(FsError::NotFound)
    }

    fn is_ancestor(&mut self, ancestor: u64, mut number: u64) -> Result<bool, FsError> {
        for _ in 0..=self.live_inodes {
            if number == ancestor {
                return Ok(true);
            }
            let parent = self.directory(number)?.parent;
            if parent == number {
                return Ok(false);
            }
            number = parent;
        }
        Err(FsError::Corrupt("directory parent chain loops".into()))
    }

    /// Change a regular file's size, freeing blocks past the end and
    /// zeroing the tail of a kept partial block.
    fn resize(&mut self, number: u64, size: u64) -> Result<(), FsError> {
        if size > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let inode = self.inode_mut(number)?;
        let Content::File(blocks) = &mut inode.content else {
            return Err(wrong_kind(inode.attributes.file_type));
        };
        if size >= inode.attributes.size {
            inode.attributes.size = size;
            return Ok(());
        }
        let keep = size.div_ceil(BLOCK);
        let removed = blocks.truncate(keep);
        let tail = blocks
            .get(size / BLOCK)
            .filter(|_| !size.is_multiple_of(BLOCK));
        inode.attributes.size = size;
        for (first, length) in removed {
            self.release_run(first, length);
        }
        if let Some(physical) = tail {
            let mut data = self.read_data(physical)?;
            data[(size % BLOCK) as usize..].fill(0);
            let target = self.writable(number, size / BLOCK, physical)?;
            self.write_data(target, &data)?;
        }
        self.update_used(number)
    }

    /// The block to write file block `logical` (now at `physical`) to:
    /// itself when fresh, otherwise a new block swapped into the map.
    fn writable(&mut self, number: u64, logical: u64, physical: u64) -> Result<u64, FsError> {
        if self.fresh.get(physical) {
            return Ok(physical);
        }
        let new_block = self.allocate()?;
        if let Content::File(blocks) = &mut self.inode_mut(number)?.content {
            blocks.insert(logical, new_block);
        }
        self.release(physical);
        Ok(new_block)
    }

    fn update_used(&mut self, number: u64) -> Result<(), FsError> {
        let inode = self.inode_mut(number)?;
        if let Content::File(blocks) = &inode.content {
            inode.attributes.used = blocks.mapped_blocks() * BLOCK;
        }
        Ok(())
    }

    fn new_inode(&mut self, attributes: Attributes, content: Content) -> u64 {
        let number = attributes.inode.0;
        let inode = Inode {
            attributes,
            content,
        };
        let size = inode.memory_size();
        self.cache_bytes += size;
        self.cache.insert(
            number,
            crate::volume::Cached {
                inode,
                chain: Vec::new(),
                dirty: true,
                last_used: self.tick,
                size,
            },
        );
        self.dirty.insert(number);
        self.live_inodes += 1;
        self.set_slot(
            number,
            LeafSlot {
                record: PENDING,
                generation: attributes.generation.0,
            },
        );
        number
    }

    fn allocate_number(&mut self) -> Result<(u64, u64), FsError> {
        if self.live_inodes >= self.inode_capacity() {
            return Err(FsError::NoSpace);
        }
        let number = match self.free_numbers.first() {
            Some(&number) => number,
            None => self.next_number,
        };
        let generation = self.slot(number).map_or(0, |slot| slot.generation) + 1;
        if !self.free_numbers.remove(&number) {
            self.next_number += 1;
        }
        Ok((number, generation))
    }
}

impl<D: BlockDevice> Volume<D> {
    /// A change that failed on the device (or met a damaged record) may
    /// have been applied in part: the volume then refuses every further
    /// change, so that part never reaches a commit.
    fn settle<T>(&mut self, result: Result<T, FsError>) -> Result<T, FsError> {
        if matches!(result, Err(FsError::Io | FsError::Corrupt(_))) {
            self.failed = true;
        }
        result
    }

    /// Runs `change`; when it is refused for space (having changed
    /// nothing) and a commit would give blocks back, commits and runs it
    /// once more.
    fn with_room<T>(
        &mut self,
        change: impl Fn(&mut Self) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        let result = change(self);
        if !matches!(result, Err(FsError::NoSpace)) || !self.commit_would_free() {
            return self.settle(result);
        }
        self.commit_volume()?;
        let result = change(self);
        self.settle(result)
    }

    fn apply_setattr(
        &mut self,
        inode: InodeId,
        changes: &SetAttributes,
    ) -> Result<Attributes, FsError> {
        let number = inode.0;
        let file_type = self.inode(number)?.attributes.file_type;
        if changes.size.is_some() && file_type != FileType::Regular {
            return Err(wrong_kind(file_type));
        }
        let current = self.inode(number)?.attributes.size;
        let space = match changes.size {
            Some(size) if size > current => SpaceUse::Grows,
            _ => SpaceUse::Keeps,
        };
        self.reserve(&[number], 1, 1, space)?;
        if let Some(size) = changes.size {
            self.resize(number, size)?;
        }
        let now = self.clock.now();
        let attributes = &mut self.inode_mut(number)?.attributes;
        changes.apply(attributes, now);
        let result = *attributes;
        self.mark_dirty(number);
        self.done();
        Ok(result)
    }

    fn apply_write(
        &mut self,
        inode: InodeId,
        offset: u64,
        data: &[u8],
    ) -> Result<Attributes, FsError> {
        let number = inode.0;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        self.cached(number)?;
        let entry = &self.cache.get(&number).ok_or(FsError::Stale)?.inode;
        let Content::File(blocks) = &entry.content else {
            return Err(wrong_kind(entry.attributes.file_type));
        };
        let mut new_blocks = 0u64;
        if !data.is_empty() {
            for logical in offset / BLOCK..=(end - 1) / BLOCK {
                match blocks.get(logical) {
                    Some(physical) if self.fresh.get(physical) => {}
                    _ => new_blocks += 1,
                }
            }
        }
        // Each block placed anew can split a run into three (two more runs).
        let growth = (new_blocks * 48).div_ceil(RECORD_PAYLOAD as u64) + 1;
        self.reserve(&[number], new_blocks, growth, SpaceUse::Grows)?;
        // Runs of consecutive device blocks, as (first block, start in
        // `gathered`), each written at once below.
        let mut runs: Vec<(u64, usize)> = Vec::new();
        let mut gathered = core::mem::take(&mut self.write_scratch);
        gathered.clear();
        if !data.is_empty() {
            let span = (end - 1) / BLOCK - offset / BLOCK + 1;
            gathered.reserve(
                usize::try_from(span)
                    .unwrap_or(0)
                    .saturating_mul(BLOCK_SIZE),
            );
        }
        let mut done = 0usize;
        while done < data.len() {
            let position = offset + done as u64;
            let logical = position / BLOCK;
            let within = (position % BLOCK) as usize;
            let count = (BLOCK_SIZE - within).min(data.len() - done);
            let mapped = match &self.inode(number)?.content {
                Content::File(blocks) => blocks.get(logical),
                _ => None,
            };
            let mut block = match mapped {
                Some(physical) if count < BLOCK_SIZE => self.read_data(physical)?,
                _ => crate::layout::zeroed(),
            };
            block[within..within + count].copy_from_slice(&data[done..done + count]);
            let target = match mapped {
                Some(physical) => self.writable(number, logical, physical)?,
                None => {
                    let new_block = self.allocate()?;
                    if let Content::File(blocks) = &mut self.inode_mut(number)?.content {
                        blocks.insert(logical, new_block);
                    }
                    new_block
                }
            };
            // Gather consecutive device blocks and write each run at once.
            match runs.last() {
                Some(&(first, start))
                    if first + ((gathered.len() - start) / BLOCK_SIZE) as u64 == target => {}
                _ => runs.push((target, gathered.len())),
            }
            gathered.extend_from_slice(&block[..]);
            done += count;
        }
        let mut written = Ok(());
        for (index, &(first, start)) in runs.iter().enumerate() {
            let end = runs
                .get(index + 1)
                .map_or(gathered.len(), |&(_, next)| next);
            written = self.write_run(first, &gathered[start..end]);
            if written.is_err() {
                break;
            }
        }
        if gathered.capacity() <= crate::volume::WRITE_SCRATCH_KEPT {
            self.write_scratch = gathered;
        }
        written?;
        let attributes = &mut self.inode_mut(number)?.attributes;
        if end > attributes.size {
            attributes.size = end;
        }
        self.update_used(number)?;
        self.touch(number, true);
        self.done();
        self.getattr(inode)
    }

    fn apply_create(
        &mut self,
        directory: InodeId,
        name: &[u8],
        node: &NewNode,
        owner: &Ownership,
    ) -> Result<Attributes, FsError> {
        let parent = directory.0;
        validate_name(name)?;
        if self.directory(parent)?.get(name).is_some() {
            return Err(FsError::Exists);
        }
        if let NewNode::Symlink(target) = node {
            if target.is_empty() || target.len() > SYMLINK_MAX {
                return Err(FsError::Invalid);
            }
        }
        let is_directory = matches!(node, NewNode::Directory);
        if is_directory && self.inode(parent)?.attributes.nlink >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        let record_blocks = match node {
            NewNode::Symlink(target) => (target.len() as u64).div_ceil(RECORD_PAYLOAD as u64) + 3,
            _ => 3,
        };
        self.reserve(&[parent], 0, record_blocks + 1, SpaceUse::Grows)?;
        let (number, generation) = self.allocate_number()?;
        let now = self.clock.now();
        let (file_type, content) = match node {
            NewNode::Regular => (FileType::Regular, Content::File(Default::default())),
            NewNode::Directory => (
                FileType::Directory,
                Content::Directory(Directory::new(parent)),
            ),
            NewNode::Symlink(target) => (FileType::Symlink, Content::Symlink(target.clone())),
            NewNode::BlockDevice(_) => (FileType::BlockDevice, Content::Special),
            NewNode::CharacterDevice(_) => (FileType::CharacterDevice, Content::Special),
            NewNode::Fifo => (FileType::Fifo, Content::Special),
            NewNode::Socket => (FileType::Socket, Content::Special),
        };
        let attributes = Attributes {
            inode: InodeId(number),
            generation: Generation(generation),
            file_type,
            mode: owner.mode & 0o7777,
            nlink: if is_directory { 2 } else { 1 },
            uid: owner.uid,
            gid: owner.gid,
            size: match node {
                NewNode::Symlink(target) => target.len() as u64,
                _ => 0,
            },
            used: 0,
            rdev: match node {
                NewNode::BlockDevice(rdev) | NewNode::CharacterDevice(rdev) => *rdev,
                _ => Default::default(),
            },
            atime: now,
            mtime: now,
            ctime: now,
            change: 1,
        };
        self.new_inode(attributes, content);
        self.directory_mut(parent)?.insert(Entry {
            name: name.to_vec(),
            inode: number,
            file_type,
        });
        if is_directory {
            self.inode_mut(parent)?.attributes.nlink += 1;
        }
        self.touch(parent, true);
        self.done();
        Ok(attributes)
    }

    fn apply_unlink(&mut self, directory: InodeId, name: &[u8]) -> Result<(), FsError> {
        validate_name(name)?;
        let entry = self.child(directory.0, name)?;
        if entry.file_type == FileType::Directory {
            return Err(FsError::IsDirectory);
        }
        let last_link = self.inode(entry.inode)?.attributes.nlink <= 1;
        if last_link {
            // The inode is freed, its record never written again: only
            // its leaf slot changes (the leaf and its interior node).
            self.reserve(&[directory.0], 0, 2, SpaceUse::Keeps)?;
        } else {
            self.reserve(&[directory.0, entry.inode], 0, 0, SpaceUse::Keeps)?;
        }
        self.directory_mut(directory.0)?.remove(name);
        self.drop_link(entry.inode)?;
        self.touch(directory.0, true);
        self.done();
        Ok(())
    }

    fn apply_rmdir(&mut self, directory: InodeId, name: &[u8]) -> Result<(), FsError> {
        if name == b"." || name == b".." {
            return Err(FsError::Invalid);
        }
        validate_name(name)?;
        let entry = self.child(directory.0, name)?;
        if entry.file_type != FileType::Directory {
            return Err(FsError::NotDirectory);
        }
        if !self.directory(entry.inode)?.by_name.is_empty() {
            return Err(FsError::NotEmpty);
        }
        // The freed directory's leaf slot changes too (its leaf and
        // interior node).
        self.reserve(&[directory.0], 0, 2, SpaceUse::Keeps)?;
        self.directory_mut(directory.0)?.remove(name);
        self.free_inode(entry.inode);
        self.inode_mut(directory.0)?.attributes.nlink -= 1;
        self.touch(directory.0, true);
        self.done();
        Ok(())
    }

    fn apply_rename(
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
        let (from, to) = (from_directory.0, to_directory.0);
        self.directory(to)?;
        let source = self.child(from, from_name)?;
        let source_is_directory = source.file_type == FileType::Directory;
        if source_is_directory && self.is_ancestor(source.inode, to)? {
            return Err(FsError::Invalid);
        }
        let existing = self.directory(to)?.get(to_name).cloned();
        if existing
            .as_ref()
            .is_some_and(|target| target.inode == source.inode)
        {
            return Ok(());
        }
        if let Some(target) = &existing {
            match (source_is_directory, target.file_type == FileType::Directory) {
                (false, true) => return Err(FsError::IsDirectory),
                (true, false) => return Err(FsError::NotDirectory),
                (true, true) if !self.directory(target.inode)?.by_name.is_empty() => {
                    return Err(FsError::NotEmpty)
                }
                _ => {}
            }
        }
        let moves_directory = source_is_directory && from != to;
        if moves_directory && existing.is_none() && self.inode(to)?.attributes.nlink >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        let mut touched = Vec::from([from, to, source.inode]);
        if let Some(target) = &existing {
            self.cached(target.inode)?;
            touched.push(target.inode);
        }
        self.cached(source.inode)?;
        self.reserve(&touched, 0, 1, SpaceUse::Keeps)?;
        if let Some(target) = existing {
            self.directory_mut(to)?.remove(to_name);
            if source_is_directory {
                self.free_inode(target.inode);
                self.inode_mut(to)?.attributes.nlink -= 1;
            } else {
                self.drop_link(target.inode)?;
            }
        }
        self.directory_mut(from)?.remove(from_name);
        self.directory_mut(to)?.insert(Entry {
            name: to_name.to_vec(),
            ..source.clone()
        });
        if source_is_directory {
            self.directory_mut(source.inode)?.parent = to;
            if moves_directory {
                self.inode_mut(from)?.attributes.nlink -= 1;
                self.inode_mut(to)?.attributes.nlink += 1;
            }
        }
        self.touch(source.inode, false);
        self.touch(from, true);
        if to != from {
            self.touch(to, true);
        }
        self.done();
        Ok(())
    }

    fn apply_link(
        &mut self,
        inode: InodeId,
        directory: InodeId,
        name: &[u8],
    ) -> Result<Attributes, FsError> {
        validate_name(name)?;
        let attributes = self.inode(inode.0)?.attributes;
        if attributes.file_type == FileType::Directory {
            return Err(FsError::IsDirectory);
        }
        if attributes.nlink >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        if self.directory(directory.0)?.get(name).is_some() {
            return Err(FsError::Exists);
        }
        self.reserve(&[inode.0, directory.0], 0, 1, SpaceUse::Grows)?;
        self.directory_mut(directory.0)?.insert(Entry {
            name: name.to_vec(),
            inode: inode.0,
            file_type: attributes.file_type,
        });
        self.inode_mut(inode.0)?.attributes.nlink += 1;
        self.touch(inode.0, false);
        self.touch(directory.0, true);
        self.done();
        self.getattr(inode)
    }
}

impl<D: BlockDevice> FileSystem for Volume<D> {
    fn root(&self) -> InodeId {
        InodeId(1)
    }

    fn getattr(&mut self, inode: InodeId) -> Result<Attributes, FsError> {
        Ok(self.inode(inode.0)?.attributes)
    }

    fn setattr(&mut self, inode: InodeId, changes: &SetAttributes) -> Result<Attributes, FsError> {
        self.with_room(|volume| volume.apply_setattr(inode, changes))
    }

    fn lookup(&mut self, directory: InodeId, name: &[u8]) -> Result<Attributes, FsError> {
        let target = match name {
            b"." => {
                self.directory(directory.0)?;
                directory.0
            }
            b".." => self.directory(directory.0)?.parent,
            _ => {
                validate_name(name)?;
                self.child(directory.0, name)?.inode
            }
        };
        self.getattr(InodeId(target))
    }

    fn read(&mut self, inode: InodeId, offset: u64, buffer: &mut [u8]) -> Result<usize, FsError> {
        let (length, plan) = self.read_plan(inode, offset, buffer.len())?;
        for Piece {
            at,
            within,
            count,
            block,
        } in plan
        {
            let target = &mut buffer[at..at + count];
            match block {
                Some(block) if within == 0 && count % BLOCK_SIZE == 0 => {
                    self.read_run(block, target)?
                }
                Some(block) => {
                    target.copy_from_slice(&self.read_data(block)?[within..within + count])
                }
                None => target.fill(0),
            }
        }
        Ok(length)
    }

    fn read_to(
        &mut self,
        inode: InodeId,
        offset: u64,
        length: usize,
        sink: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<usize, FsError> {
        let (length, plan) = self.read_plan(inode, offset, length)?;
        for Piece {
            at,
            within,
            count,
            block,
        } in plan
        {
            match block {
                Some(block) if within == 0 && count % BLOCK_SIZE == 0 => {
                    self.read_run_to(block, count, &mut |piece_at, bytes| {
                        sink(at + piece_at, bytes)
                    })?
                }
                Some(block) => sink(at, &self.read_data(block)?[within..within + count]),
                None => sink(at, &ZERO_BLOCK[..count]),
            }
        }
        Ok(length)
    }

    fn write(&mut self, inode: InodeId, offset: u64, data: &[u8]) -> Result<Attributes, FsError> {
        self.with_room(|volume| volume.apply_write(inode, offset, data))
    }

    fn readlink(&mut self, inode: InodeId) -> Result<Vec<u8>, FsError> {
        match &self.inode(inode.0)?.content {
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
        self.with_room(|volume| volume.apply_create(directory, name, node, owner))
    }

    fn unlink(&mut self, directory: InodeId, name: &[u8]) -> Result<(), FsError> {
        self.with_room(|volume| volume.apply_unlink(directory, name))
    }

    fn rmdir(&mut self, directory: InodeId, name: &[u8]) -> Result<(), FsError> {
        self.with_room(|volume| volume.apply_rmdir(directory, name))
    }

    fn rename(
        &mut self,
        from_directory: InodeId,
        from_name: &[u8],
        to_directory: InodeId,
        to_name: &[u8],
    ) -> Result<(), FsError> {
        self.with_room(|volume| {
            volume.apply_rename(from_directory, from_name, to_directory, to_name)
        })
    }

    fn link(
        &mut self,
        inode: InodeId,
        directory: InodeId,
        name: &[u8],
    ) -> Result<Attributes, FsError> {
        self.with_room(|volume| volume.apply_link(inode, directory, name))
    }

    fn readdir(
        &mut self,
        directory: InodeId,
        cookie: u64,
        max_entries: usize,
    ) -> Result<DirectoryPage, FsError> {
        let listing = self.directory(directory.0)?;
        if cookie != 0 && cookie >= listing.next_cookie {
            return Err(FsError::BadCookie);
        }
        let mut range = listing.by_cookie.range(cookie.saturating_add(1)..);
        let entries: Vec<DirectoryEntry> = range
            .by_ref()
            .take(max_entries)
            .map(|(&cookie, entry)| DirectoryEntry {
                name: entry.name.clone(),
                inode: InodeId(entry.inode),
                file_type: entry.file_type,
                cookie,
            })
            .collect();
        let end = range.next().is_none();
        Ok(DirectoryPage { entries, end })
    }

    fn statfs(&mut self) -> Result<StatFs, FsError> {
        // A snapshot view takes nothing more: it reports no free space.
        let free_blocks = if self.read_only {
            0
        } else {
            self.available_blocks()
        };
        let total_inodes = self.inode_capacity();
        Ok(StatFs {
            block_size: BLOCK_SIZE as u32,
            total_blocks: self.block_count(),
            free_blocks,
            total_inodes,
            free_inodes: (total_inodes - self.live_inodes.min(total_inodes)).min(free_blocks / 2),
        })
    }

    fn applied_sequence(&self) -> u64 {
        self.applied
    }

    fn durable_sequence(&self) -> u64 {
        self.durable
    }

    fn commit(&mut self) -> Result<(), FsError> {
        self.commit_volume()
    }

    fn commit_begin(&mut self) -> Result<Option<Box<dyn vfs::CommitFlush>>, FsError> {
        Volume::commit_begin(self)
    }

    fn commit_continue(
        &mut self,
        token: u64,
        flushed: Result<(), FsError>,
    ) -> Result<Option<Box<dyn vfs::CommitFlush>>, FsError> {
        Volume::commit_continue(self, token, flushed)
    }

    fn commit_advance(&mut self) -> Result<bool, FsError> {
        Volume::commit_advance(self)
    }

    fn list_snapshots(&mut self) -> Result<SnapshotListing, FsError> {
        if self.read_only {
            return Err(FsError::NotSupported);
        }
        Ok(SnapshotListing {
            snapshots: self
                .snapshots()
                .iter()
                .map(|snapshot| SnapshotSummary {
                    id: snapshot.sequence,
                    name: snapshot.name.clone(),
                    created: snapshot.created,
                })
                .collect(),
            changed: self.snapshots_changed(),
        })
    }

    fn create_snapshot(&mut self, name: &[u8]) -> Result<SnapshotSummary, FsError> {
        let taken = self.snapshot_create(name)?;
        Ok(SnapshotSummary {
            id: taken.sequence,
            name: taken.name,
            created: taken.created,
        })
    }

    fn delete_snapshot(&mut self, name: &[u8]) -> Result<(), FsError> {
        self.snapshot_delete(name)
    }

    fn in_snapshot(
        &mut self,
        id: u64,
        body: &mut dyn FnMut(&mut dyn FileSystem),
    ) -> Result<(), FsError> {
        self.with_snapshot(id, |view| body(view))
    }
}

impl<D: BlockDevice> Volume<D> {
    /// How a read of up to `wanted` bytes of `inode` from `offset` is
    /// made: the bytes it gives, and its pieces.
    fn read_plan(
        &mut self,
        inode: InodeId,
        offset: u64,
        wanted: usize,
    ) -> Result<(usize, Vec<Piece>), FsError> {
        let entry = self.inode(inode.0)?;
        let Content::File(blocks) = &entry.content else {
            return Err(wrong_kind(entry.attributes.file_type));
        };
        let size = entry.attributes.size;
        if offset >= size {
            return Ok((0, Vec::new()));
        }
        let length = (size - offset).min(wanted as u64) as usize;
        // Split the range into pieces: holes, partial blocks, and runs of
        // whole blocks that are consecutive on the device (one request each).
        let mut plan: Vec<Piece> = Vec::new();
        let mut done = 0usize;
        while done < length {
            let position = offset + done as u64;
            let within = (position % BLOCK) as usize;
            let count = (BLOCK_SIZE - within).min(length - done);
            let physical = blocks.get(position / BLOCK);
            match (plan.last_mut(), physical) {
                (
                    Some(Piece {
                        within: 0,
                        count: run,
                        block: Some(previous),
                        ..
                    }),
                    Some(next),
                ) if within == 0
                    && count == BLOCK_SIZE
                    && *run % BLOCK_SIZE == 0
                    && *previous + (*run / BLOCK_SIZE) as u64 == next =>
                {
                    *run += BLOCK_SIZE
                }
                _ => plan.push(Piece {
                    at: done,
                    within,
                    count,
                    block: physical,
                }),
            }
            done += count;
        }
        Ok((length, plan))
    }
}

/// A piece of a read: `count` bytes at `at` of the read, from `within`
/// of `block` (`None`: a hole). A run of whole blocks consecutive on the
/// device is one piece.
struct Piece {
    at: usize,
    within: usize,
    count: usize,
    block: Option<u64>,
}

/// The bytes of a hole.
static ZERO_BLOCK: [u8; BLOCK_SIZE] = [0; BLOCK_SIZE];
