//! The file-system object model and the `FileSystem` trait.
//!
//! This crate is the contract between the storage engine (`storage-domain/fs`,
//! the real backend) and the NFSv3 server (`storage-domain/server`). It also
//! holds [`memfs::MemFs`], a plain in-memory implementation that is the
//! reference model for randomized tests of both sides.
//!
//! The trait is structural: it enforces POSIX rules about the shape of the
//! tree (rename rules, non-empty directories, link counts, name limits) but
//! no permissions. Access control (AUTH_SYS credentials, squashing, mode
//! bits, read-only exports) belongs to the server, which sees the
//! credentials; the file system only stores `mode`, `uid` and `gid`.
//!
//! Time is never read here: implementations are handed a [`Clock`].
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod memfs;
mod types;

pub use types::*;

use alloc::boxed::Box;
use alloc::vec::Vec;

/// The source of "now" for ctime/mtime/atime updates.
///
/// Handed to a file system when it is opened; the hosted binary passes the
/// system clock, the Xen kernel its PV clock, tests a deterministic counter.
pub trait Clock: Send + Sync {
    /// The current wall-clock time.
    fn now(&self) -> Timestamp;
}

/// A deterministic clock for tests: each reading is one microsecond after
/// the previous one, starting at `start`.
#[derive(Debug)]
pub struct StepClock {
    ticks: core::sync::atomic::AtomicU64,
    start: i64,
}

impl StepClock {
    /// A clock whose first reading is `start` seconds after the epoch.
    pub fn new(start: i64) -> Self {
        StepClock {
            ticks: core::sync::atomic::AtomicU64::new(0),
            start,
        }
    }
}

impl Clock for StepClock {
    fn now(&self) -> Timestamp {
        let tick = self
            .ticks
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        Timestamp {
            seconds: self.start + (tick / 1_000_000) as i64,
            nanoseconds: ((tick % 1_000_000) * 1000) as u32,
        }
    }
}

/// The slow step of a staged commit ([`FileSystem::commit_begin`]): a
/// device flush, run without the file system.
pub trait CommitFlush: Send {
    /// Which step this is: hand it back to [`FileSystem::commit_continue`].
    fn token(&self) -> u64;

    /// Run the step.
    ///
    /// # Errors
    /// [`FsError::Io`] when the device fails.
    fn run(&mut self) -> Result<(), FsError>;
}

/// Reads that must not wait for the device, for a server that serves
/// everyone from one thread (the Xen domain) and reads the disk while it
/// serves others.
pub trait WaitControl {
    /// Refuse (`true`) or allow again reads the file system cannot answer
    /// from memory. A refused read fails its operation with
    /// [`FsError::Io`]; only operations that change nothing may run while
    /// reads are refused.
    fn refuse_waits(&mut self, refuse: bool);

    /// Whether a read was refused and its blocks are still wanted (the
    /// caller reads them and makes the operation again).
    fn wants_blocks(&self) -> bool;

    /// The blocks the last refused read needed (first, count), once.
    fn take_wanted(&mut self) -> Option<(u64, u64)>;
}

/// A file system as the NFS server sees it.
///
/// Every mutating method applies its change in memory and assigns it the next
/// operation sequence number; nothing is durable until [`FileSystem::commit`]
/// returns. One commit covers every operation applied before it (group
/// commit): a server that needs operation `s` durable calls `commit` only if
/// [`FileSystem::durable_sequence`] is still below `s`.
///
/// Names are byte strings: never empty, never `.` or `..`, no `/` or NUL, at
/// most [`NAME_MAX`] bytes; otherwise [`FsError::InvalidName`] or
/// [`FsError::NameTooLong`].
pub trait FileSystem {
    /// The root directory of the whole file system.
    fn root(&self) -> InodeId;

    /// Attributes of a live inode.
    ///
    /// # Errors
    /// [`FsError::Stale`] when `inode` is not allocated.
    fn getattr(&mut self, inode: InodeId) -> Result<Attributes, FsError>;

    /// Attributes of `inode` if it is allocated *and* still has `generation`;
    /// the check behind every NFS file handle.
    ///
    /// # Errors
    /// [`FsError::Stale`] when the inode is free or has been reused.
    fn getattr_checked(
        &mut self,
        inode: InodeId,
        generation: Generation,
    ) -> Result<Attributes, FsError> {
        let attributes = self.getattr(inode)?;
        if attributes.generation == generation {
            Ok(attributes)
        } else {
            Err(FsError::Stale)
        }
    }

    /// Change attributes. A `size` change truncates or extends with zeros.
    /// Changing anything updates ctime and the change counter; a size change
    /// also updates mtime.
    ///
    /// # Errors
    /// [`FsError::IsDirectory`] for a size change on a directory,
    /// [`FsError::Invalid`] for a size change on anything but a regular file,
    /// [`FsError::FileTooBig`] past [`MAX_FILE_SIZE`], [`FsError::NoSpace`].
    fn setattr(&mut self, inode: InodeId, changes: &SetAttributes) -> Result<Attributes, FsError>;

    /// Look `name` up in `directory`. `.` and `..` are answered too (`..` of
    /// the root is the root).
    ///
    /// # Errors
    /// [`FsError::NotFound`], [`FsError::NotDirectory`].
    fn lookup(&mut self, directory: InodeId, name: &[u8]) -> Result<Attributes, FsError>;

    /// Read from a regular file at `offset` into `buffer`; returns the number
    /// of bytes read (short only at end of file). Holes read as zeros.
    /// Does not update atime (the server decides whether to).
    ///
    /// # Errors
    /// [`FsError::IsDirectory`], [`FsError::Invalid`] for non-regular files.
    fn read(&mut self, inode: InodeId, offset: u64, buffer: &mut [u8]) -> Result<usize, FsError>;

    /// [`FileSystem::read`] of up to `length` bytes, handed to `sink` in
    /// order as pieces with their offset in the read instead of into a
    /// buffer: a file system that holds the data in memory hands its own
    /// copies over, so a caller whose bytes go elsewhere (a guest's data
    /// pages) saves a pass over them. Returns the bytes read, which `sink`
    /// was given exactly once each. The default reads into a buffer and
    /// hands it over whole.
    ///
    /// # Errors
    /// As [`FileSystem::read`]; `sink` may have been given part of the
    /// range.
    fn read_to(
        &mut self,
        inode: InodeId,
        offset: u64,
        length: usize,
        sink: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<usize, FsError> {
        let mut buffer = alloc::vec![0u8; length];
        let read = self.read(inode, offset, &mut buffer)?;
        sink(0, &buffer[..read]);
        Ok(read)
    }

    /// Write `data` to a regular file at `offset`, extending it if needed.
    /// Updates mtime, ctime and the change counter.
    ///
    /// # Errors
    /// [`FsError::FileTooBig`] when `offset + data.len()` passes
    /// [`MAX_FILE_SIZE`]; [`FsError::NoSpace`] with the file unchanged.
    fn write(&mut self, inode: InodeId, offset: u64, data: &[u8]) -> Result<Attributes, FsError>;

    /// The target of a symbolic link.
    ///
    /// # Errors
    /// [`FsError::Invalid`] when `inode` is not a symlink.
    fn readlink(&mut self, inode: InodeId) -> Result<Vec<u8>, FsError>;

    /// Create a new object named `name` in `directory`.
    /// A new directory gets nlink 2 and raises its parent's nlink by one.
    ///
    /// # Errors
    /// [`FsError::Exists`], [`FsError::NotDirectory`], [`FsError::NoSpace`],
    /// [`FsError::TooManyLinks`], name errors.
    fn create(
        &mut self,
        directory: InodeId,
        name: &[u8],
        node: &NewNode,
        owner: &Ownership,
    ) -> Result<Attributes, FsError>;

    /// Remove a non-directory entry; the inode is freed when its last link
    /// goes (its generation is bumped on reuse).
    ///
    /// # Errors
    /// [`FsError::NotFound`], [`FsError::IsDirectory`].
    fn unlink(&mut self, directory: InodeId, name: &[u8]) -> Result<(), FsError>;

    /// Remove an empty directory.
    ///
    /// # Errors
    /// [`FsError::NotFound`], [`FsError::NotDirectory`],
    /// [`FsError::NotEmpty`], [`FsError::Invalid`] for `.`/`..`.
    fn rmdir(&mut self, directory: InodeId, name: &[u8]) -> Result<(), FsError>;

    /// Rename with POSIX rules: an existing target is replaced atomically (a
    /// file by a file, a directory by a directory only when the target is
    /// empty); renaming onto the same inode is a no-op success; a directory
    /// may not move into its own subtree.
    ///
    /// # Errors
    /// [`FsError::NotFound`], [`FsError::IsDirectory`] (file over directory),
    /// [`FsError::NotDirectory`] (directory over file), [`FsError::NotEmpty`],
    /// [`FsError::Invalid`] (into own subtree, or `.`/`..`),
    /// [`FsError::TooManyLinks`].
    fn rename(
        &mut self,
        from_directory: InodeId,
        from_name: &[u8],
        to_directory: InodeId,
        to_name: &[u8],
    ) -> Result<(), FsError>;

    /// Add a hard link to a non-directory.
    ///
    /// # Errors
    /// [`FsError::Exists`], [`FsError::IsDirectory`] when `inode` is a
    /// directory, [`FsError::TooManyLinks`].
    fn link(
        &mut self,
        inode: InodeId,
        directory: InodeId,
        name: &[u8],
    ) -> Result<Attributes, FsError>;

    /// Directory entries after `cookie` (0 = from the start), at most
    /// `max_entries`. `.` and `..` are *not* returned (the server adds them).
    /// Cookies are stable: a cookie handed out stays a valid resume point
    /// while the directory changes (entries added or removed meanwhile may
    /// or may not appear, but no surviving entry is skipped or repeated).
    ///
    /// # Errors
    /// [`FsError::NotDirectory`], [`FsError::BadCookie`] for a cookie this
    /// directory never produced and cannot resume from.
    fn readdir(
        &mut self,
        directory: InodeId,
        cookie: u64,
        max_entries: usize,
    ) -> Result<DirectoryPage, FsError>;

    /// Totals for FSSTAT.
    fn statfs(&mut self) -> Result<StatFs, FsError>;

    /// Sequence number of the last operation applied (durable or not).
    fn applied_sequence(&self) -> u64;

    /// Sequence number of the last operation known durable.
    fn durable_sequence(&self) -> u64;

    /// Make every operation applied so far durable (one write barrier).
    ///
    /// # Errors
    /// [`FsError::Io`] when the device fails; the file system then refuses
    /// further changes rather than risk a torn state.
    fn commit(&mut self) -> Result<(), FsError>;

    /// Begin a staged commit of every operation applied so far: the work
    /// that needs the file system runs now; each slow step (a device flush)
    /// is handed back, to run without holding the file system, so other
    /// operations proceed meanwhile. Hand each step's outcome to
    /// [`FileSystem::commit_continue`] until it returns `None`; the commit
    /// is then durable ([`FileSystem::durable_sequence`] reaches what
    /// [`FileSystem::applied_sequence`] was at the start). One staged commit
    /// at a time; a plain [`FileSystem::commit`] meanwhile finishes it
    /// first. The default commits whole and returns `None`.
    ///
    /// # Errors
    /// As [`FileSystem::commit`].
    fn commit_begin(&mut self) -> Result<Option<Box<dyn CommitFlush>>, FsError> {
        self.commit().map(|()| None)
    }

    /// The next step of a staged commit, given how the last one ended.
    /// A step of a commit that was since finished otherwise (a plain
    /// [`FileSystem::commit`]) is ignored.
    ///
    /// # Errors
    /// [`FsError::Io`] when the step failed or the next write fails: the
    /// file system then refuses further changes.
    fn commit_continue(
        &mut self,
        token: u64,
        flushed: Result<(), FsError>,
    ) -> Result<Option<Box<dyn CommitFlush>>, FsError> {
        let _ = token;
        flushed.map(|()| None)
    }

    /// Move commits on without waiting for the device, for a caller that
    /// serves everything from one thread (the Xen domain): when no commit
    /// is in flight and operations wait to be made durable, one of them
    /// all begins (its blocks are written now, its flush is started);
    /// when a commit's flush has completed, its next step runs. Returns
    /// whether a commit is still in flight: call again later (after the
    /// device's completion event). [`FileSystem::durable_sequence`] tells
    /// what is durable. The default commits whole and returns `false`.
    ///
    /// # Errors
    /// As [`FileSystem::commit`]: a commit that fails leaves the file
    /// system refusing further changes.
    fn commit_advance(&mut self) -> Result<bool, FsError> {
        self.commit().map(|()| false)
    }

    /// The snapshots, oldest first.
    ///
    /// # Errors
    /// [`FsError::NotSupported`] (the default) for a file system without
    /// snapshots.
    fn list_snapshots(&mut self) -> Result<SnapshotListing, FsError> {
        Err(FsError::NotSupported)
    }

    /// Take a read-only snapshot of everything applied so far (this
    /// commits).
    ///
    /// # Errors
    /// [`FsError::Exists`] for a name in use, name errors,
    /// [`FsError::NoSpace`], [`FsError::Io`]; [`FsError::NotSupported`]
    /// (the default) for a file system without snapshots.
    fn create_snapshot(&mut self, name: &[u8]) -> Result<SnapshotSummary, FsError> {
        let _ = name;
        Err(FsError::NotSupported)
    }

    /// Delete a snapshot (this commits).
    ///
    /// # Errors
    /// [`FsError::NotFound`], [`FsError::Io`]; [`FsError::NotSupported`]
    /// (the default) for a file system without snapshots.
    fn delete_snapshot(&mut self, name: &[u8]) -> Result<(), FsError> {
        let _ = name;
        Err(FsError::NotSupported)
    }

    /// Run `body` on snapshot `id`, a read-only file system whose every
    /// change answers [`FsError::ReadOnly`] and whose inode numbers are its
    /// own (they may equal live ones).
    ///
    /// # Errors
    /// [`FsError::Stale`] when no snapshot has `id` (any more), errors
    /// opening it; [`FsError::NotSupported`] (the default) for a file
    /// system without snapshots.
    fn in_snapshot(
        &mut self,
        id: u64,
        body: &mut dyn FnMut(&mut dyn FileSystem),
    ) -> Result<(), FsError> {
        let _ = (id, body);
        Err(FsError::NotSupported)
    }
}
