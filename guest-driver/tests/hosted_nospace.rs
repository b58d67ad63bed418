//! A full disk under a hosted VRPC mount, whose writes are answered once
//! queued (write-behind): the WRITE that the server refuses with
//! NFS3ERR_NOSPC must be reported as ENOSPC by the file's next `fsync`
//! through **any** descriptor, as Linux reports a writeback error to
//! every descriptor open on the file (and to a new one while nobody has
//! seen it), and by the writer's own `close`; never a 0 from an `fsync`
//! for data the server does not hold. And the refused bytes must not be
//! read back on this guest: the kernel put them in its page cache when
//! the write was answered, and the driver drops those pages.
//!
//! Found while building `cargo xtask fill` (docs/reliability.md, "Full
//! disk"), by reading the write-behind code: the error used to be kept
//! per descriptor, so `fsync` of another descriptor (`sync FILE`, a
//! second open) returned 0 for data the server had refused; and an
//! overwrite the server refused read back as the new bytes from the page
//! cache while the server (and every other guest) held the old ones.

mod common;

use common::{Mount, Server};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::IntoRawFd;
use std::path::Path;

/// Fills the disk in `directory` (files `filler-N`): passes of 64 KiB
/// writes, then of 4 KiB writes, each until the disk refuses and ending
/// with an `fsync` (the commit gives back what the pass reserved beyond
/// its needs), until a pass of 4 KiB writes or a creation fits nothing.
/// Returns the bytes acknowledged.
fn fill(directory: &Path) -> u64 {
    let mut total = 0u64;
    let mut chunk = 64 * 1024;
    let mut pass = 0;
    loop {
        let mut file = match File::create(directory.join(format!("filler-{pass}"))) {
            Ok(file) => file,
            // Not even a file fits (a creation reserves a few blocks).
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => return total,
            Err(error) => panic!("filling: {error}"),
        };
        let data = vec![0x5Au8; chunk];
        let mut written = 0u64;
        loop {
            match file.write_all(&data) {
                Ok(()) => written += chunk as u64,
                Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(error) => panic!("filling: {error}"),
            }
            assert!(written < 64 << 20, "a 16 MiB image took 64 MiB");
        }
        // Writes queued before the refused one was reported may have
        // failed since: the fsync and close may report them.
        let synced = file.sync_all();
        assert!(
            synced.is_ok() || synced.as_ref().unwrap_err().raw_os_error() == Some(libc::ENOSPC),
            "{synced:?}"
        );
        let closed = close(file);
        assert!(matches!(closed, Ok(()) | Err(libc::ENOSPC)), "{closed:?}");
        total += written;
        if written == 0 {
            if chunk == 4096 {
                return total;
            }
            chunk = 4096;
        }
        pass += 1;
        assert!(pass < 1000, "the disk never filled");
    }
}

/// One `write(2)` of 128 KiB (one FUSE write: queued, so it returns at
/// once, and no error can be reported to it).
fn write_once(file: &mut File, byte: u8) {
    let written = file.write(&vec![byte; 128 * 1024]).unwrap();
    assert_eq!(written, 128 * 1024, "a short write");
}

/// `close(2)` with its result (dropping a `File` ignores it).
fn close(file: File) -> Result<(), i32> {
    let descriptor = file.into_raw_fd();
    nix::unistd::close(descriptor).map_err(|errno| errno as i32)
}

#[test]
fn a_refused_queued_write_is_reported_by_fsync_of_any_descriptor() {
    require_mounts!();
    if !common::server_has_vrpc() {
        eprintln!("skipped: the server binary has no --vrpc-socket");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start_sized(
        scratch.path(),
        true,
        "16M",
        &["--export", "/,no_root_squash"],
    );
    let mount = Mount::start_hosted(&server, scratch.path(), "mnt", &[]);
    let victim = mount.path.join("victim");
    let other = mount.path.join("other");
    fs::write(&victim, b"").unwrap();
    fs::write(&other, b"").unwrap();
    let kept = mount.path.join("kept");
    fs::write(&kept, vec![b'A'; 128 * 1024]).unwrap();
    File::open(&kept).unwrap().sync_all().unwrap();
    assert!(fill(&mount.path) > 0);

    // An overwrite the full disk refuses (copy on write needs new
    // blocks): the old bytes stay, on the server and in what this guest
    // reads (its page cache held the new ones).
    let mut overwriter = OpenOptions::new().write(true).open(&kept).unwrap();
    write_once(&mut overwriter, b'B');
    assert_eq!(
        overwriter.sync_all().map_err(|error| error.kind()),
        Err(ErrorKind::StorageFull),
        "fsync after a refused overwrite"
    );
    close(overwriter).unwrap();
    let read = fs::read(&kept).unwrap();
    assert!(
        read == vec![b'A'; 128 * 1024],
        "after a refused overwrite the file reads {} bytes B of {}",
        read.iter().filter(|&&byte| byte == b'B').count(),
        read.len()
    );

    // Write through one descriptor (queued: the write returns at once),
    // fsync through another opened before.
    let mut writer = OpenOptions::new().write(true).open(&victim).unwrap();
    let reader = File::open(&victim).unwrap();
    write_once(&mut writer, 1);
    let synced = reader.sync_all();
    let on_server = fs::metadata(&victim).unwrap().len();
    assert_eq!(
        synced.as_ref().map_err(std::io::Error::kind),
        Err(ErrorKind::StorageFull),
        "fsync of another descriptor after a refused queued write (the file holds {on_server} \
         bytes)"
    );
    // Reported once to each descriptor: the writer's close reports it too,
    // the reader's fsync not again.
    assert_eq!(close(writer), Err(libc::ENOSPC), "the writer's close");
    reader.sync_all().unwrap();
    close(reader).unwrap();
    // The refused bytes are nowhere: not on the server, not in this
    // guest's page cache.
    assert_eq!(
        fs::read(&victim).unwrap(),
        b"",
        "the refused write is visible"
    );

    // Nobody saw the error yet: a descriptor opened afterwards reports it
    // (as `sync FILE` would after a program that ignored its errors).
    let mut writer = OpenOptions::new().write(true).open(&other).unwrap();
    write_once(&mut writer, 2);
    // Wait for the queued write without reporting it: a stat drains the
    // file's queue.
    let _ = fs::metadata(&other).unwrap();
    let later = File::open(&other).unwrap();
    let synced = later.sync_all();
    let on_server = fs::metadata(&other).unwrap().len();
    assert_eq!(
        synced.map_err(|error| error.kind()),
        Err(ErrorKind::StorageFull),
        "fsync of a descriptor opened after a refused queued write nobody saw (the file holds \
         {on_server} bytes)"
    );
    // Seen now: the writer's close still reports it to its own
    // descriptor, which had not seen it.
    assert_eq!(close(writer), Err(libc::ENOSPC));
    later.sync_all().unwrap();
    close(later).unwrap();

    // Space again: everything works.
    fs::remove_file(mount.path.join("filler-0")).unwrap();
    let mut again = OpenOptions::new().write(true).open(&victim).unwrap();
    again.write_all(b"room again").unwrap();
    again.sync_all().unwrap();
    close(again).unwrap();
    mount.stop();
    server.stop_and_check();
}
