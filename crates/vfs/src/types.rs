//! Object-model types: inode ids, attributes, errors.

use alloc::vec::Vec;
use core::fmt;

/// Longest name in a directory, in bytes (NFSv3 PATHCONF `name_max`).
pub const NAME_MAX: usize = 255;

/// Longest symlink target, in bytes (Linux `PATH_MAX` minus the NUL).
pub const SYMLINK_MAX: usize = 4095;

/// Largest file size the file systems accept: 2^62 bytes.
pub const MAX_FILE_SIZE: u64 = 1 << 62;

/// Most hard links to one inode (NFSv3 PATHCONF `linkmax`).
pub const LINK_MAX: u32 = 65_000;

/// An inode number: the NFS `fileid3`. Never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InodeId(pub u64);

/// Bumped every time an inode number is reused, so an old file handle to a
/// reused inode is detected as stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u64);

/// A point in time: seconds since the Unix epoch and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub seconds: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanoseconds: u32,
}

/// The kind of object an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A block device node.
    BlockDevice,
    /// A character device node.
    CharacterDevice,
    /// A named pipe.
    Fifo,
    /// A Unix socket node.
    Socket,
}

/// Major and minor numbers of a device node (NFS `specdata3`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeviceNumber {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

/// Everything an NFS `fattr3` needs, plus the generation and change counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// Inode number (NFS fileid).
    pub inode: InodeId,
    /// Generation of this inode number.
    pub generation: Generation,
    /// Object kind.
    pub file_type: FileType,
    /// Permission bits and set-id/sticky bits (`0o7777`); no type bits.
    pub mode: u32,
    /// Hard links; a directory counts `.`, its entry in the parent, and the
    /// `..` of each subdirectory (POSIX).
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (for a symlink: the target length; for a directory: an
    /// implementation-defined figure that changes when entries do).
    pub size: u64,
    /// Bytes of storage used by this inode's data.
    pub used: u64,
    /// Device numbers for device nodes, zero otherwise.
    pub rdev: DeviceNumber,
    /// Last access.
    pub atime: Timestamp,
    /// Last data change.
    pub mtime: Timestamp,
    /// Last attribute or data change.
    pub ctime: Timestamp,
    /// Incremented on every change to this inode's data or attributes
    /// (published in the metadata table; never decreases).
    pub change: u64,
}

/// How SETATTR sets a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SetTime {
    /// Leave it.
    #[default]
    Unchanged,
    /// Set it to the file system's clock.
    ServerTime,
    /// Set it to this value.
    Client(Timestamp),
}

/// The changes of one SETATTR; `None` leaves a field as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttributes {
    /// New permission bits (`0o7777`).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (regular files only).
    pub size: Option<u64>,
    /// New access time.
    pub atime: SetTime,
    /// New modification time.
    pub mtime: SetTime,
}

impl SetAttributes {
    /// Apply everything but the size (which the file system applies to the
    /// data first) to `attributes`: mode, owner, group, times; a size
    /// change without an explicit mtime sets mtime to `now`; ctime becomes
    /// `now` and the change counter moves.
    pub fn apply(&self, attributes: &mut Attributes, now: Timestamp) {
        if let Some(mode) = self.mode {
            attributes.mode = mode & 0o7777;
        }
        if let Some(uid) = self.uid {
            attributes.uid = uid;
        }
        if let Some(gid) = self.gid {
            attributes.gid = gid;
        }
        match self.atime {
            SetTime::Unchanged => {}
            SetTime::ServerTime => attributes.atime = now,
            SetTime::Client(time) => attributes.atime = time,
        }
        match self.mtime {
            SetTime::Unchanged => {}
            SetTime::ServerTime => attributes.mtime = now,
            SetTime::Client(time) => attributes.mtime = time,
        }
        if self.size.is_some() && self.mtime == SetTime::Unchanged {
            attributes.mtime = now;
        }
        attributes.ctime = now;
        attributes.change += 1;
    }
}

/// Owner and permissions of a new object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// What [`crate::FileSystem::create`] makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewNode {
    /// An empty regular file.
    Regular,
    /// An empty directory.
    Directory,
    /// A symbolic link to this target (1..=[`SYMLINK_MAX`] bytes).
    Symlink(Vec<u8>),
    /// A block device node.
    BlockDevice(DeviceNumber),
    /// A character device node.
    CharacterDevice(DeviceNumber),
    /// A named pipe.
    Fifo,
    /// A socket node.
    Socket,
}

/// One directory entry from [`crate::FileSystem::readdir`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// The entry's name.
    pub name: Vec<u8>,
    /// The inode it names.
    pub inode: InodeId,
    /// Its kind.
    pub file_type: FileType,
    /// Resume point just after this entry; never 0.
    pub cookie: u64,
}

/// One page of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryPage {
    /// Entries in cookie order.
    pub entries: Vec<DirectoryEntry>,
    /// No entries follow the last one returned.
    pub end: bool,
}

/// One snapshot, as [`crate::FileSystem::list_snapshots`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// Names the snapshot for as long as it exists, and never another one
    /// (sdfs: the commit it preserves; never 0). A snapshot deleted and
    /// taken again under the same name gets another id.
    pub id: u64,
    /// Its name (the rules of a file name).
    pub name: Vec<u8>,
    /// When it was taken.
    pub created: Timestamp,
}

/// The snapshots of a file system.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotListing {
    /// Oldest first (ids increase).
    pub snapshots: Vec<SnapshotSummary>,
    /// When a snapshot was last taken or deleted (since the file system
    /// was opened; before that, when the newest was taken).
    pub changed: Timestamp,
}

/// File-system totals for NFS FSSTAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    /// Block size in bytes.
    pub block_size: u32,
    /// Blocks in the file system.
    pub total_blocks: u64,
    /// Free blocks.
    pub free_blocks: u64,
    /// Inodes the file system can hold.
    pub total_inodes: u64,
    /// Inodes that can still be created.
    pub free_inodes: u64,
}

/// Why a file-system operation failed.
///
/// Each variant maps to exactly one `nfsstat3` in the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsError {
    /// No such entry (ENOENT).
    NotFound,
    /// The name already exists (EEXIST).
    Exists,
    /// A directory was needed (ENOTDIR).
    NotDirectory,
    /// A non-directory was needed (EISDIR).
    IsDirectory,
    /// The directory is not empty (ENOTEMPTY).
    NotEmpty,
    /// A name is longer than [`NAME_MAX`] (ENAMETOOLONG).
    NameTooLong,
    /// A name is empty, `.`/`..` where not allowed, or holds `/` or NUL.
    InvalidName,
    /// The operation is not valid for this object or these arguments
    /// (EINVAL), e.g. a directory renamed into its own subtree.
    Invalid,
    /// The inode no longer exists or has been reused (ESTALE).
    Stale,
    /// Out of blocks or inodes (ENOSPC); nothing was changed.
    NoSpace,
    /// A file would grow past [`MAX_FILE_SIZE`] (EFBIG).
    FileTooBig,
    /// Too many hard links (EMLINK).
    TooManyLinks,
    /// The file system (or snapshot) is read-only (EROFS).
    ReadOnly,
    /// A readdir cookie this directory cannot resume from.
    BadCookie,
    /// The operation is not supported by this file system.
    NotSupported,
    /// The block device failed.
    Io,
    /// The image is damaged; the text names what is wrong.
    Corrupt(alloc::string::String),
}

impl fmt::Display for FsError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsError::NotFound => formatter.write_str("no such file or directory"),
            FsError::Exists => formatter.write_str("file exists"),
            FsError::NotDirectory => formatter.write_str("not a directory"),
            FsError::IsDirectory => formatter.write_str("is a directory"),
            FsError::NotEmpty => formatter.write_str("directory not empty"),
            FsError::NameTooLong => formatter.write_str("file name too long"),
            FsError::InvalidName => formatter.write_str("invalid file name"),
            FsError::Invalid => formatter.write_str("invalid argument"),
            FsError::Stale => formatter.write_str("stale file handle"),
            FsError::NoSpace => formatter.write_str("no space left on device"),
            FsError::FileTooBig => formatter.write_str("file too large"),
            FsError::TooManyLinks => formatter.write_str("too many links"),
            FsError::ReadOnly => formatter.write_str("read-only file system"),
            FsError::BadCookie => formatter.write_str("bad directory cookie"),
            FsError::NotSupported => formatter.write_str("operation not supported"),
            FsError::Io => formatter.write_str("input/output error"),
            FsError::Corrupt(what) => write!(formatter, "corrupt file system: {what}"),
        }
    }
}

impl core::error::Error for FsError {}

/// Check a name against the rules every [`crate::FileSystem`] enforces.
///
/// # Errors
/// [`FsError::NameTooLong`] past [`NAME_MAX`] bytes; [`FsError::InvalidName`]
/// for an empty name, `.`, `..`, or one holding `/` or NUL.
pub fn validate_name(name: &[u8]) -> Result<(), FsError> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.iter().any(|&b| b == b'/' || b == 0)
    {
        return Err(FsError::InvalidName);
    }
    Ok(())
}
