//! A client working through a guest-driver mount point with ordinary
//! system calls. `close` is called explicitly so its error is seen (a
//! dropped `File` ignores it): it reports queued writes that failed, and
//! on a TCP mount it commits.

use super::client::{Files, Step};
use super::{Failure, FileKey};
use crate::hosted::MountTransport;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long another mount may take to show a change (the metadata
/// table's watcher polls every 2 to 10 ms; a loaded 2-core machine needs
/// far more than that now and then).
pub const VISIBILITY_LIMIT: Duration = Duration::from_secs(2);

/// Files under a mount point.
pub struct MountFiles {
    root: PathBuf,
    transport: MountTransport,
    /// Another mount of the same export, for visibility checks.
    peer: Option<PathBuf>,
}

impl MountFiles {
    /// Files under `root`, a mount over `transport`; `peer` is another
    /// mount point of the same export.
    pub fn new(root: PathBuf, transport: MountTransport, peer: Option<PathBuf>) -> MountFiles {
        MountFiles {
            root,
            transport,
            peer,
        }
    }

    fn path(&self, key: FileKey) -> PathBuf {
        self.root.join(key.path())
    }

    fn close(&self, file: File) -> Step {
        let result = nix::unistd::close(file).map_err(|errno| Failure::from_io(&errno.into()));
        match self.transport {
            // Commit on close, the default over TCP.
            MountTransport::Tcp => Step::Synced("close", result.map(|()| None)),
            MountTransport::Vrpc => Step::Closed(result),
        }
    }
}

fn sync(file: &File, data_only: bool) -> Result<Option<[u8; 8]>, Failure> {
    let result = if data_only {
        file.sync_data()
    } else {
        file.sync_all()
    };
    result
        .map(|()| None)
        .map_err(|error| Failure::from_io(&error))
}

fn sync_name(data_only: bool) -> &'static str {
    if data_only {
        "fdatasync"
    } else {
        "fsync"
    }
}

impl Files for MountFiles {
    fn create(&mut self, key: FileKey) -> Result<(), Failure> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path(key))
            .map_err(|error| Failure::from_io(&error))?;
        nix::unistd::close(file).map_err(|errno| Failure::from_io(&errno.into()))
    }

    fn write(
        &mut self,
        key: FileKey,
        offset: u64,
        data: &[u8],
        sync_after: Option<bool>,
    ) -> Vec<Step> {
        let file = match OpenOptions::new().write(true).open(self.path(key)) {
            Ok(file) => file,
            Err(error) => return vec![Step::Wrote(Err(Failure::from_io(&error)))],
        };
        let mut steps = vec![Step::Wrote(
            file.write_all_at(data, offset)
                .map(|()| (None, None))
                .map_err(|error| Failure::from_io(&error)),
        )];
        if let Some(data_only) = sync_after {
            steps.push(Step::Synced(sync_name(data_only), sync(&file, data_only)));
        }
        steps.push(self.close(file));
        steps
    }

    fn sync(&mut self, key: FileKey, data_only: bool) -> Vec<Step> {
        // A new read-only descriptor, as `sync FILE` does.
        let file = match File::open(self.path(key)) {
            Ok(file) => file,
            Err(error) => {
                return vec![Step::Synced(
                    sync_name(data_only),
                    Err(Failure::from_io(&error)),
                )]
            }
        };
        vec![
            Step::Synced(sync_name(data_only), sync(&file, data_only)),
            self.close(file),
        ]
    }

    fn sync_directory(&mut self, client: u32) -> Option<Result<(), Failure>> {
        let directory = match File::open(self.root.join(format!("c{client}"))) {
            Ok(directory) => directory,
            Err(error) => return Some(Err(Failure::from_io(&error))),
        };
        let synced = directory
            .sync_all()
            .map_err(|error| Failure::from_io(&error));
        let closed = nix::unistd::close(directory).map_err(|errno| Failure::from_io(&errno.into()));
        Some(synced.and(closed))
    }

    fn remove(&mut self, key: FileKey) -> Result<(), Failure> {
        std::fs::remove_file(self.path(key)).map_err(|error| Failure::from_io(&error))
    }

    fn read(&mut self, key: FileKey) -> Result<Vec<u8>, Failure> {
        std::fs::read(self.path(key)).map_err(|error| Failure::from_io(&error))
    }

    fn visible(&mut self, key: FileKey, expected: &[u8]) -> Option<Result<(), Failure>> {
        let peer = self.peer.as_ref()?.join(key.path());
        let own = match std::fs::metadata(self.path(key)) {
            Ok(own) => own,
            Err(error) => return Some(Err(Failure::from_io(&error))),
        };
        let wanted = (own.len(), own.mtime(), own.mtime_nsec());
        let deadline = Instant::now() + VISIBILITY_LIMIT;
        let mut seen = None;
        while Instant::now() < deadline {
            match std::fs::metadata(&peer) {
                // Not there yet: a file this mount made a moment ago may
                // still be unknown to the other (its driver answers names
                // from a listing of the directory until its watcher sees
                // the change), within the same window as its attributes.
                Err(error) if error.raw_os_error() == Some(nix::libc::ENOENT) => {
                    seen = None;
                }
                Ok(metadata) => {
                    let state = (metadata.len(), metadata.mtime(), metadata.mtime_nsec());
                    if state == wanted {
                        return Some(match std::fs::read(&peer) {
                            Ok(bytes) if bytes == expected => Ok(()),
                            Ok(bytes) => Err(Failure::Unexpected(format!(
                                "{} shows the size and mtime written here, but {} of its {} \
                                 bytes differ",
                                peer.display(),
                                bytes
                                    .iter()
                                    .zip(expected)
                                    .filter(|(found, wanted)| found != wanted)
                                    .count()
                                    + bytes.len().abs_diff(expected.len()),
                                bytes.len()
                            ))),
                            Err(error) => Err(Failure::from_io(&error)),
                        });
                    }
                    seen = Some(state);
                }
                Err(error) => return Some(Err(Failure::from_io(&error))),
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Some(Err(Failure::Unexpected(match seen {
            Some(seen) => format!(
                "{} still shows (size, mtime) {seen:?} {} s after this mount saw {wanted:?}",
                peer.display(),
                VISIBILITY_LIMIT.as_secs()
            ),
            None => format!(
                "{} is still missing {} s after this mount saw it",
                peer.display(),
                VISIBILITY_LIMIT.as_secs()
            ),
        })))
    }
}
