//! Offline image tools: `mkfs`, `fsck`, `ls`, `get` and `snapshot`.
//!
//! `ls` and `get` open the image read-only, so an administrator on dom0 can
//! list and copy files out of a storage domain's disk for a backup without
//! any risk to it (stop the storage domain first: the image then holds its
//! last commit).

use crate::image::{random_bytes, ImageFile, SystemClock};
use anyhow::{bail, Context};
use byte_size::{parse_size, ByteSize};
use sdfs::{FormatOptions, Volume, BLOCK_SIZE, MIN_BLOCKS};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vfs::{FileSystem, FileType, InodeId};

/// Inode cache for the offline tools.
const TOOL_CACHE_BYTES: usize = 64 << 20;

/// Arguments of `mkfs`.
#[derive(Debug, clap::Args)]
pub struct MkfsArgs {
    /// The image file to create.
    pub image: PathBuf,
    /// Size of the image, e.g. 1G, 512MiB, 10GB (at least 256K). K, M, G,
    /// T and KiB, MiB, GiB, TiB are powers of 1024; KB, MB, GB, TB are
    /// powers of 1000.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub size: u64,
    /// Overwrite an image that already holds a file system.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `fsck`.
#[derive(Debug, clap::Args)]
pub struct FsckArgs {
    /// The image file to check (opened read-only).
    pub image: PathBuf,
}

/// Arguments of `ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The image file (opened read-only).
    pub image: PathBuf,
    /// The directory to list, from the file system's root.
    #[arg(default_value = "/")]
    pub path: String,
    /// List this snapshot instead of the live file system.
    #[arg(long)]
    pub snapshot: Option<String>,
}

/// Arguments of `get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The image file (opened read-only).
    pub image: PathBuf,
    /// The file or directory to copy out, from the file system's root.
    pub path: String,
    /// Where to put it on the host (must not exist yet).
    pub destination: PathBuf,
    /// Copy from this snapshot instead of the live file system.
    #[arg(long)]
    pub snapshot: Option<String>,
}

/// Snapshot subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Take a read-only snapshot of the whole file system.
    Create {
        /// The image file.
        image: PathBuf,
        /// The snapshot's name.
        name: String,
    },
    /// List snapshots: name, commit, time taken, inodes.
    List {
        /// The image file (opened read-only).
        image: PathBuf,
    },
    /// Delete a snapshot and free the space only it held.
    Delete {
        /// The image file.
        image: PathBuf,
        /// The snapshot's name.
        name: String,
    },
}

/// The smallest image [`format_image`] accepts, in bytes.
pub const MIN_IMAGE_BYTES: u64 = MIN_BLOCKS * BLOCK_SIZE as u64;

/// Refuse an image size no file system fits in, or no file can have.
///
/// # Errors
/// Below [`MIN_IMAGE_BYTES`] (the message names the minimum), or above
/// the largest file Linux can address (`i64::MAX` bytes).
pub fn check_image_size(size: u64) -> anyhow::Result<()> {
    if size / (BLOCK_SIZE as u64) < MIN_BLOCKS {
        bail!(
            "a size of {} is too small for a file system: the smallest is {} ({MIN_IMAGE_BYTES} bytes)",
            ByteSize(size),
            ByteSize(MIN_IMAGE_BYTES)
        );
    }
    if i64::try_from(size).is_err() {
        bail!(
            "a size of {} is larger than any file can be (at most {} bytes)",
            ByteSize(size),
            i64::MAX
        );
    }
    Ok(())
}

/// Format a new image at `path` of `size` bytes.
///
/// A size too small for a file system is refused before anything is
/// created. When `path` did not exist, a failure removes the file this
/// call created, so a failed start never leaves an empty image behind
/// that the next start would refuse as damaged.
///
/// # Errors
/// When `size` is below [`MIN_IMAGE_BYTES`], the image holds a file system
/// and `force` is not set, or the file cannot be written.
pub fn format_image(path: &Path, size: u64, force: bool) -> anyhow::Result<()> {
    check_image_size(size)?;
    let options = FormatOptions {
        uuid: random_bytes()?,
        handle_secret: random_bytes()?,
    };
    let fresh = std::fs::symlink_metadata(path).is_err();
    if !fresh && !force {
        if let Ok(device) = ImageFile::open_read_only(path) {
            if Volume::open(device, Box::new(SystemClock), 0).is_ok() {
                bail!(
                    "{} already holds a file system; pass --force to overwrite it",
                    path.display()
                );
            }
        }
    }
    let mut device = if fresh {
        ImageFile::create_new(path, size)
    } else {
        ImageFile::create(path, size)
    }
    .with_context(|| format!("cannot create {}", path.display()))?;
    let formatted = Volume::format(&mut device, options, &SystemClock)
        .map_err(|error| anyhow::anyhow!("cannot format {}: {error}", path.display()));
    drop(device);
    if formatted.is_err() && fresh {
        let _ = std::fs::remove_file(path);
    }
    formatted
}

/// Open an image (or one of its snapshots) read-only.
///
/// # Errors
/// When the file cannot be opened or holds no valid file system.
pub fn open_read_only(path: &Path, snapshot: Option<&str>) -> anyhow::Result<Volume<ImageFile>> {
    let device = ImageFile::open_read_only(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let clock = Box::new(SystemClock);
    match snapshot {
        None => Volume::open(device, clock, TOOL_CACHE_BYTES),
        Some(name) => Volume::open_snapshot(device, clock, TOOL_CACHE_BYTES, name.as_bytes()),
    }
    .map_err(|error| match (error, snapshot) {
        (vfs::FsError::NotFound, Some(name)) => {
            anyhow::anyhow!("{}: no snapshot named {name:?}", path.display())
        }
        (error, _) => anyhow::anyhow!("{}: {error}", path.display()),
    })
}

/// `snapshot create|list|delete`: through the running server of the
/// image when there is one (its control socket, `control.rs`), offline
/// otherwise.
///
/// # Errors
/// When the image cannot be opened or the snapshot operation fails.
pub fn snapshot(command: SnapshotCommand) -> anyhow::Result<ExitCode> {
    let (image, request) = match &command {
        SnapshotCommand::Create { image, name } => (
            image,
            crate::control::Request::Create(name.as_bytes().to_vec()),
        ),
        SnapshotCommand::Delete { image, name } => (
            image,
            crate::control::Request::Delete(name.as_bytes().to_vec()),
        ),
        SnapshotCommand::List { image } => (image, crate::control::Request::List),
    };
    let canonical = image
        .canonicalize()
        .with_context(|| format!("cannot open {}", image.display()))?;
    match crate::control::request(&canonical, &request) {
        Ok(Some(Ok(text))) => {
            print!("{text}");
            return Ok(ExitCode::SUCCESS);
        }
        Ok(Some(Err(text))) => bail!("{text} (server of {})", image.display()),
        Ok(None) => {}
        Err(error) => bail!("the server of {} did not answer: {error}", image.display()),
    }
    let open_writable = |path: &Path| -> anyhow::Result<Volume<ImageFile>> {
        let device =
            ImageFile::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Volume::open(device, Box::new(SystemClock), TOOL_CACHE_BYTES)
            .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))
    };
    match command {
        SnapshotCommand::Create { image, name } => {
            let mut volume = open_writable(&image)?;
            let taken = volume.snapshot_create(name.as_bytes()).map_err(|error| {
                anyhow::anyhow!(crate::control::explain(name.as_bytes(), &error))
            })?;
            println!(
                "snapshot {name:?} of commit {} ({} inodes)",
                taken.sequence, taken.inodes
            );
        }
        SnapshotCommand::List { image } => {
            let volume = open_read_only(&image, None)?;
            print!("{}", crate::control::listing(&volume));
        }
        SnapshotCommand::Delete { image, name } => {
            let mut volume = open_writable(&image)?;
            volume.snapshot_delete(name.as_bytes()).map_err(|error| {
                anyhow::anyhow!(crate::control::explain(name.as_bytes(), &error))
            })?;
            println!("deleted snapshot {name:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `mkfs`.
///
/// # Errors
/// See [`format_image`].
pub fn mkfs(args: MkfsArgs) -> anyhow::Result<ExitCode> {
    format_image(&args.image, args.size, args.force)?;
    let volume = open_read_only(&args.image, None)?;
    println!(
        "{}: sdfs, {} blocks of {} bytes, uuid {}",
        args.image.display(),
        volume.block_count(),
        sdfs::BLOCK_SIZE,
        hex(&volume.uuid())
    );
    Ok(ExitCode::SUCCESS)
}

/// `fsck`: exit 0 when clean, 1 when problems were found.
///
/// # Errors
/// When the image file cannot be opened at all.
pub fn fsck(args: FsckArgs) -> anyhow::Result<ExitCode> {
    let device = ImageFile::open_read_only(&args.image)
        .with_context(|| format!("cannot open {}", args.image.display()))?;
    let report = sdfs::fsck(device, Box::new(SystemClock));
    for problem in &report.problems {
        println!("{}: {problem}", args.image.display());
    }
    if report.is_clean() {
        println!(
            "{}: clean, commit {}, {} inodes, {}/{} blocks used",
            args.image.display(),
            report.sequence,
            report.inodes,
            report.used_blocks,
            report.total_blocks
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{}: {} problems found",
            args.image.display(),
            report.problems.len()
        );
        Ok(ExitCode::from(1))
    }
}

/// Resolve a slash-separated path from the root (symlinks are not followed).
fn resolve(volume: &mut Volume<ImageFile>, path: &str) -> anyhow::Result<InodeId> {
    let mut inode = volume.root();
    for component in path.split('/').filter(|component| !component.is_empty()) {
        inode = volume
            .lookup(inode, component.as_bytes())
            .map_err(|error| anyhow::anyhow!("{path}: {component}: {error}"))?
            .inode;
    }
    Ok(inode)
}

fn type_letter(file_type: FileType) -> char {
    match file_type {
        FileType::Regular => '-',
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::BlockDevice => 'b',
        FileType::CharacterDevice => 'c',
        FileType::Fifo => 'p',
        FileType::Socket => 's',
    }
}

/// Every entry of a directory, following cookies to the end.
fn list(
    volume: &mut Volume<ImageFile>,
    directory: InodeId,
) -> anyhow::Result<Vec<vfs::DirectoryEntry>> {
    let mut entries = Vec::new();
    let mut cookie = 0;
    loop {
        let page = volume
            .readdir(directory, cookie, 512)
            .map_err(|error| anyhow::anyhow!("readdir: {error}"))?;
        let last = page.entries.last().map(|entry| entry.cookie);
        entries.extend(page.entries);
        match last {
            Some(next) if !page.end => cookie = next,
            _ => return Ok(entries),
        }
    }
}

/// `ls`: one line per entry, like `ls -l`.
///
/// # Errors
/// When the image or the path cannot be read.
pub fn ls(args: LsArgs) -> anyhow::Result<ExitCode> {
    let mut volume = open_read_only(&args.image, args.snapshot.as_deref())?;
    let directory = resolve(&mut volume, &args.path)?;
    for entry in list(&mut volume, directory)? {
        let attributes = volume
            .getattr(entry.inode)
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let mut line = format!(
            "{}{:04o} {:>3} {:>5} {:>5} {:>12} {}",
            type_letter(attributes.file_type),
            attributes.mode,
            attributes.nlink,
            attributes.uid,
            attributes.gid,
            attributes.size,
            String::from_utf8_lossy(&entry.name)
        );
        if attributes.file_type == FileType::Symlink {
            let target = volume
                .readlink(entry.inode)
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            line.push_str(" -> ");
            line.push_str(&String::from_utf8_lossy(&target));
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `get`: copy a file or a whole tree out of the image.
///
/// # Errors
/// When the image, the path or the destination cannot be used.
pub fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    if args.destination.symlink_metadata().is_ok() {
        bail!("{} already exists", args.destination.display());
    }
    let mut volume = open_read_only(&args.image, args.snapshot.as_deref())?;
    let source = resolve(&mut volume, &args.path)?;
    let mut copy = Copy::default();
    copy.out(&mut volume, source, &args.destination)?;
    eprintln!(
        "copied {} bytes to {}",
        copy.bytes,
        args.destination.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// State of one `get`: bytes copied, and the directories already entered
/// (a damaged image could list a directory inside itself; it is refused
/// rather than followed).
#[derive(Default)]
struct Copy {
    bytes: u64,
    entered: BTreeSet<u64>,
}

impl Copy {
    /// Copy `inode` to `destination`: names and symlink targets byte for
    /// byte, mode, owner (when permitted) and times. Hard links become
    /// separate copies; devices, FIFOs and sockets are skipped with a note.
    fn out(
        &mut self,
        volume: &mut Volume<ImageFile>,
        inode: InodeId,
        destination: &Path,
    ) -> anyhow::Result<()> {
        let attributes = volume
            .getattr(inode)
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let context = || format!("cannot write {}", destination.display());
        match attributes.file_type {
            FileType::Regular => {
                let mut file = std::fs::File::create(destination).with_context(context)?;
                let mut buffer = vec![0u8; 1 << 20];
                let mut offset = 0;
                while offset < attributes.size {
                    let count = volume
                        .read(inode, offset, &mut buffer)
                        .map_err(|error| anyhow::anyhow!("read: {error}"))?;
                    if count == 0 {
                        break;
                    }
                    std::io::Write::write_all(&mut file, &buffer[..count]).with_context(context)?;
                    offset += count as u64;
                }
                self.bytes += offset;
            }
            FileType::Directory => {
                if !self.entered.insert(inode.0) {
                    bail!(
                        "{}: directory {} is listed twice in the image (run fsck)",
                        destination.display(),
                        inode.0
                    );
                }
                std::fs::create_dir(destination).with_context(context)?;
                for entry in list(volume, inode)? {
                    let name = OsStr::from_bytes(&entry.name);
                    self.out(volume, entry.inode, &destination.join(name))?;
                }
            }
            FileType::Symlink => {
                let target = volume
                    .readlink(inode)
                    .map_err(|error| anyhow::anyhow!("{error}"))?;
                symlink(OsStr::from_bytes(&target), destination).with_context(context)?;
                keep_owner(destination, &attributes)?;
                return Ok(());
            }
            other => {
                eprintln!(
                    "skipping {} ({other:?} nodes are not copied)",
                    destination.display()
                );
                return Ok(());
            }
        }
        // Times first: with the image's mode in place the copy might no
        // longer be openable.
        let times = std::fs::FileTimes::new()
            .set_accessed(system_time(attributes.atime))
            .set_modified(system_time(attributes.mtime));
        std::fs::File::open(destination)
            .and_then(|file| file.set_times(times))
            .with_context(context)?;
        std::fs::set_permissions(
            destination,
            std::fs::Permissions::from_mode(attributes.mode),
        )
        .with_context(context)?;
        keep_owner(destination, &attributes)
    }
}

/// Give `path` the image's owner; without the privilege to (not root),
/// the copy keeps the caller's.
fn keep_owner(path: &Path, attributes: &vfs::Attributes) -> anyhow::Result<()> {
    match lchown(path, Some(attributes.uid), Some(attributes.gid)) {
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        other => other.with_context(|| format!("cannot chown {}", path.display())),
    }
}

fn system_time(time: vfs::Timestamp) -> SystemTime {
    let since_epoch = Duration::new(time.seconds.unsigned_abs(), time.nanoseconds);
    if time.seconds >= 0 {
        UNIX_EPOCH + since_epoch
    } else {
        UNIX_EPOCH.checked_sub(since_epoch).unwrap_or(UNIX_EPOCH)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
