//! Snapshots on request from dom0: the storage domain's half of
//! `storage-domain-ctl snapshot` (`docs/xenstore.md`, "Snapshots").
//!
//! dom0 writes a request to `control/snapshot` in the storage domain's
//! xenstore directory ([`vrpc::xenstore::SNAPSHOT_REQUEST`]); the kernel
//! watches it, runs the request here on the server (so guests see the
//! snapshot under `.snapshots` at once, as on the hosted server), writes
//! the answer to `control/snapshot-result` and empties the request. This
//! module is the part without xenstore: it turns a request value into the
//! answer's text, so the host tests run it on a real file system.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use nfs_server::Server;
use vfs::{FileSystem, FsError};
use vrpc::xenstore::SnapshotRequest;

/// Longest answer: a xenstore write carries at most 4096 bytes
/// (`XENSTORE_PAYLOAD_MAX`) with the node's path.
pub const MAX_ANSWER: usize = 3584;

/// The answer to the request `value` (what dom0 wrote): `ok` or `error`,
/// a newline, then the text to show, at most [`MAX_ANSWER`] bytes (a long
/// listing ends with how many snapshots it leaves out). `None` for an
/// empty value (the node's first watch event, or its own clearing).
pub fn answer<F: FileSystem>(server: &mut Server<F>, value: &[u8]) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let Some(request) = SnapshotRequest::parse(value) else {
        return Some(format!(
            "error\nnot a snapshot request: {:?} (create NAME, delete NAME or list)",
            String::from_utf8_lossy(value)
        ));
    };
    Some(match request {
        SnapshotRequest::Create(name) => match server.create_snapshot(name) {
            Ok(taken) => format!(
                "ok\nsnapshot {:?} of commit {}\n",
                String::from_utf8_lossy(name),
                taken.id
            ),
            Err(error) => format!("error\n{}", explain(name, &error)),
        },
        SnapshotRequest::Delete(name) => match server.delete_snapshot(name) {
            Ok(()) => format!("ok\ndeleted snapshot {:?}\n", String::from_utf8_lossy(name)),
            Err(error) => format!("error\n{}", explain(name, &error)),
        },
        SnapshotRequest::List => match server.snapshots() {
            Ok(listing) => {
                let mut text = String::from("ok\n");
                let count = listing.snapshots.len();
                for (index, snapshot) in listing.snapshots.iter().enumerate() {
                    let line = format!(
                        "{}\tcommit {}\ttaken {}\n",
                        String::from_utf8_lossy(&snapshot.name),
                        snapshot.id,
                        snapshot.created.seconds
                    );
                    // Room for the line and the notice after the last one.
                    if text.len() + line.len() + 80 > MAX_ANSWER {
                        text.push_str(&format!(
                            "... and {} more (an answer is limited to {MAX_ANSWER} bytes)\n",
                            count - index
                        ));
                        break;
                    }
                    text.push_str(&line);
                }
                text
            }
            Err(error) => format!("error\n{}", explain(b"", &error)),
        },
    })
}

/// A snapshot error as the administrator should read it (the hosted
/// server's words).
fn explain(name: &[u8], error: &FsError) -> String {
    let name = String::from_utf8_lossy(name);
    match error {
        FsError::Exists => format!("a snapshot named {name:?} exists already"),
        FsError::NotFound => format!("no snapshot named {name:?}"),
        FsError::InvalidName => format!(
            "bad snapshot name {name:?}: a name has 1 to 255 bytes, no '/' or NUL, and is not '.' or '..'"
        ),
        FsError::NameTooLong => format!("bad snapshot name {name:?}: longer than 255 bytes"),
        FsError::NoSpace => format!(
            "snapshot {name:?}: no space left on the file system (or {} snapshots exist already)",
            sdfs::MAX_SNAPSHOTS
        ),
        FsError::NotSupported => "this file system has no snapshots".into(),
        other => format!("snapshot {name:?}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfs_server::{ExportConfig, ServerConfig};
    use sdfs::device::MemoryDevice;
    use sdfs::{FormatOptions, Volume};
    use vfs::StepClock;

    fn server() -> Server<Volume<MemoryDevice>> {
        let mut device = MemoryDevice::new(1024);
        let options = FormatOptions {
            uuid: [1; 16],
            handle_secret: [2; 32],
        };
        Volume::format(&mut device, options, &StepClock::new(1_700_000_000)).unwrap();
        let volume =
            Volume::open(device, Box::new(StepClock::new(1_700_000_100)), 1 << 20).unwrap();
        let config = ServerConfig {
            exports: vec![ExportConfig::parse("/").unwrap()],
            handle_secret: [2; 32],
            write_verifier: [3; 8],
            file_system_id: 1,
            port: 2049,
        };
        Server::new(volume, config).unwrap()
    }

    #[test]
    fn requests_are_answered_with_their_outcome() {
        let mut server = server();
        assert_eq!(answer(&mut server, b""), None);
        assert_eq!(
            answer(&mut server, b"create nightly").unwrap(),
            "ok\nsnapshot \"nightly\" of commit 1\n"
        );
        assert_eq!(server.snapshots().unwrap().snapshots.len(), 1);
        let again = answer(&mut server, b"create nightly").unwrap();
        assert!(again.starts_with("error\na snapshot named \"nightly\" exists already"));
        let bad = answer(&mut server, b"create a/b").unwrap();
        assert!(bad.starts_with("error\nbad snapshot name"), "{bad}");
        let listed = answer(&mut server, b"list").unwrap();
        assert!(
            listed.starts_with("ok\nnightly\tcommit 1\ttaken "),
            "{listed}"
        );
        let garbage = answer(&mut server, b"format everything").unwrap();
        assert!(
            garbage.starts_with("error\nnot a snapshot request"),
            "{garbage}"
        );
        assert_eq!(
            answer(&mut server, b"delete nightly").unwrap(),
            "ok\ndeleted snapshot \"nightly\"\n"
        );
        let missing = answer(&mut server, b"delete nightly").unwrap();
        assert!(missing.starts_with("error\nno snapshot named"), "{missing}");
        assert_eq!(answer(&mut server, b"list").unwrap(), "ok\n");
        let device = server.into_filesystem().into_device();
        assert!(sdfs::fsck(device, Box::new(StepClock::new(1_700_000_200))).is_clean());
    }

    #[test]
    fn a_long_listing_fits_one_xenstore_write() {
        let mut server = server();
        let count = 40;
        for index in 0..count {
            let name = format!("{index:03}-{}", "n".repeat(200));
            assert!(answer(&mut server, format!("create {name}").as_bytes())
                .unwrap()
                .starts_with("ok\n"));
        }
        let listed = answer(&mut server, b"list").unwrap();
        assert!(listed.len() <= MAX_ANSWER, "{}", listed.len());
        let shown = listed
            .lines()
            .filter(|line| line.contains("\tcommit "))
            .count();
        assert!(shown > 0 && shown < count);
        assert!(
            listed.ends_with(&format!(
                "... and {} more (an answer is limited to {MAX_ANSWER} bytes)\n",
                count - shown
            )),
            "{listed}"
        );
    }
}
