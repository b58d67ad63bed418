//! Snapshots served under `.snapshots`: read-only, unchanged while the
//! live tree changes, handles that never alias live objects and go stale
//! when the snapshot is deleted, nothing published to the metadata table
//! but the `.snapshots` directory itself.

mod common;

use common::{location, Client};
use nfs3::procedures::create::{MakeDirectoryArguments, SymlinkArguments};
use nfs3::procedures::data::CommitArguments;
use nfs3::procedures::directory::{ReadDirectoryArguments, ReadDirectoryPlusArguments};
use nfs3::procedures::inspect::{
    AccessArguments, ReadLinkArguments, SetAttributesArguments, ACCESS_DELETE, ACCESS_EXECUTE,
    ACCESS_EXTEND, ACCESS_LOOKUP, ACCESS_MODIFY, ACCESS_READ,
};
use nfs3::procedures::remove::{LinkArguments, RenameArguments};
use nfs3::{Arguments, FileHandle, FileType, NfsError, Results, SettableAttributes, StableHow};
use nfs_server::snapshots::SNAPSHOT_DIRECTORY_FILE_ID;
use sdfs::device::MemoryDevice;
use sdfs::Volume;
use std::sync::{Arc, Mutex};
use vfs::{FsError, InodeId};

type SdfsClient = Client<Volume<MemoryDevice>>;

/// (name, cookie, file id) entries, end of file, cookie verifier.
type Page = (Vec<(Vec<u8>, u64, u64)>, bool, [u8; 8]);

fn names(client: &mut SdfsClient, directory: &FileHandle, plus: bool) -> Vec<Vec<u8>> {
    listing(client, directory, plus)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// Every entry's name and file id, through READDIR or READDIRPLUS pages.
fn listing(client: &mut SdfsClient, directory: &FileHandle, plus: bool) -> Vec<(Vec<u8>, u64)> {
    let mut listed = Vec::new();
    let mut cookie = 0;
    let mut verifier = [0; 8];
    loop {
        let (entries, end, next_verifier): Page = if plus {
            match client.nfs(Arguments::ReadDirectoryPlus(ReadDirectoryPlusArguments {
                directory: directory.clone(),
                cookie,
                cookie_verifier: verifier,
                directory_count: 4096,
                maximum_count: 700,
            })) {
                Results::ReadDirectoryPlus(result) => {
                    let ok = result.into_result().expect("readdirplus");
                    let entries = ok
                        .entries
                        .iter()
                        .map(|entry| {
                            // Attributes and handles, where given, match
                            // the entry's file id; `.` always has them.
                            if let Some(attributes) = &entry.attributes {
                                assert_eq!(attributes.file_id, entry.file_id);
                            }
                            if let Some(handle) = &entry.handle {
                                assert_eq!(client.getattr(handle).unwrap().file_id, entry.file_id);
                            }
                            if entry.name == b"." {
                                assert!(entry.attributes.is_some() && entry.handle.is_some());
                            }
                            (entry.name.clone(), entry.cookie, entry.file_id)
                        })
                        .collect();
                    (entries, ok.end_of_file, ok.cookie_verifier)
                }
                other => panic!("{other:?}"),
            }
        } else {
            match client.nfs(Arguments::ReadDirectory(ReadDirectoryArguments {
                directory: directory.clone(),
                cookie,
                cookie_verifier: verifier,
                count: 200,
            })) {
                Results::ReadDirectory(result) => {
                    let ok = result.into_result().expect("readdir");
                    let entries = ok
                        .entries
                        .iter()
                        .map(|entry| (entry.name.clone(), entry.cookie, entry.file_id))
                        .collect();
                    (entries, ok.end_of_file, ok.cookie_verifier)
                }
                other => panic!("{other:?}"),
            }
        };
        verifier = next_verifier;
        for (name, entry_cookie, file_id) in entries {
            listed.push((name, file_id));
            cookie = entry_cookie;
        }
        if end {
            return listed;
        }
    }
}

fn status_of(results: Results) -> Result<(), NfsError> {
    common::status(&results)
}

fn access(client: &mut SdfsClient, object: &FileHandle) -> u32 {
    let all = ACCESS_READ
        | ACCESS_LOOKUP
        | ACCESS_MODIFY
        | ACCESS_EXTEND
        | ACCESS_DELETE
        | ACCESS_EXECUTE;
    match client.nfs(Arguments::Access(AccessArguments {
        object: object.clone(),
        access: all,
    })) {
        Results::Access(result) => result.into_result().expect("access").access,
        other => panic!("{other:?}"),
    }
}

fn readlink(client: &mut SdfsClient, symlink: &FileHandle) -> Result<Vec<u8>, NfsError> {
    match client.nfs(Arguments::ReadLink(ReadLinkArguments {
        symlink: symlink.clone(),
    })) {
        Results::ReadLink(result) => result.into_result().map(|ok| ok.data),
        other => panic!("{other:?}"),
    }
}

fn symlink(client: &mut SdfsClient, directory: &FileHandle, name: &[u8]) -> Results {
    client.nfs(Arguments::Symlink(SymlinkArguments {
        location: location(directory, name),
        attributes: SettableAttributes::default(),
        target: b"f".to_vec(),
    }))
}

fn mkdir(client: &mut SdfsClient, directory: &FileHandle, name: &[u8]) -> Results {
    client.nfs(Arguments::MakeDirectory(MakeDirectoryArguments {
        location: location(directory, name),
        attributes: SettableAttributes::default(),
    }))
}

fn rename(
    client: &mut SdfsClient,
    from: &FileHandle,
    from_name: &[u8],
    to: &FileHandle,
    to_name: &[u8],
) -> Results {
    client.nfs(Arguments::Rename(RenameArguments {
        from: location(from, from_name),
        to: location(to, to_name),
    }))
}

fn link(
    client: &mut SdfsClient,
    file: &FileHandle,
    directory: &FileHandle,
    name: &[u8],
) -> Results {
    client.nfs(Arguments::Link(LinkArguments {
        file: file.clone(),
        link: location(directory, name),
    }))
}

fn content(client: &mut SdfsClient, file: &FileHandle) -> Result<Vec<u8>, NfsError> {
    client.read(file, 0, 1 << 16).map(|ok| ok.data)
}

/// Everything a guest does under `.snapshots` on one snapshot, from its
/// creation to its deletion.
#[test]
fn a_snapshot_is_served_read_only_unchanged_and_goes_stale_when_deleted() {
    let mut client = Client::new(common::volume(4096), &["/,no_root_squash"]);
    let root = client.root();
    let file = client.create(&root, b"f").unwrap();
    client.write(&file, 0, b"old", StableHow::FileSync).unwrap();
    let directory = client.mkdir(&root, b"d").unwrap();
    let inner = client.create(&directory, b"g").unwrap();
    client
        .write(&inner, 0, b"inner", StableHow::Unstable)
        .unwrap();
    status_of(symlink(&mut client, &root, b"l")).unwrap();
    // Taken while changes are not committed yet: it holds them.
    let taken = client.server.create_snapshot(b"s1").unwrap();
    assert_eq!(
        client.server.create_snapshot(b"s1").unwrap_err(),
        FsError::Exists
    );
    assert_eq!(
        client.server.create_snapshot(b"a/b").unwrap_err(),
        FsError::InvalidName
    );
    assert_eq!(
        client.server.create_snapshot(&[b'n'; 256]).unwrap_err(),
        FsError::NameTooLong
    );

    // The live tree moves on.
    client
        .write(&file, 0, b"new!", StableHow::FileSync)
        .unwrap();
    client.remove(&directory, b"g").unwrap();
    client.create(&root, b"after").unwrap();

    // `.snapshots` is found by name but hidden from the root's listing.
    let snapshots = client.lookup(&root, b".snapshots").unwrap();
    assert_eq!(snapshots.0.len(), nfs_server::handle::SNAPSHOT_HANDLE_SIZE);
    let attributes = client.getattr(&snapshots).unwrap();
    assert_eq!(attributes.file_type, FileType::Directory);
    assert_eq!(attributes.mode, 0o555);
    assert_eq!(attributes.file_id, SNAPSHOT_DIRECTORY_FILE_ID);
    for plus in [false, true] {
        let listed = names(&mut client, &root, plus);
        assert!(!listed.contains(&b".snapshots".to_vec()), "{listed:?}");
        assert_eq!(
            names(&mut client, &snapshots, plus),
            vec![b".".to_vec(), b"..".to_vec(), b"s1".to_vec()]
        );
    }
    assert_eq!(client.lookup(&snapshots, b"..").unwrap(), root);
    assert_eq!(client.lookup(&snapshots, b".").unwrap(), snapshots);
    assert_eq!(
        client.lookup(&snapshots, b"nope").unwrap_err(),
        NfsError::NoEntry
    );

    // The snapshot shows the tree of when it was taken.
    let snapshot_root = client.lookup(&snapshots, b"s1").unwrap();
    assert_eq!(client.lookup(&snapshot_root, b"..").unwrap(), snapshots);
    let old_file = client.lookup(&snapshot_root, b"f").unwrap();
    assert_eq!(content(&mut client, &old_file).unwrap(), b"old");
    assert_eq!(content(&mut client, &file).unwrap(), b"new!");
    let old_directory = client.lookup(&snapshot_root, b"d").unwrap();
    let old_inner = client.lookup(&old_directory, b"g").unwrap();
    assert_eq!(content(&mut client, &old_inner).unwrap(), b"inner");
    assert_eq!(
        client.lookup(&snapshot_root, b"after").unwrap_err(),
        NfsError::NoEntry
    );
    let old_link = client.lookup(&snapshot_root, b"l").unwrap();
    assert_eq!(readlink(&mut client, &old_link).unwrap(), b"f");
    for plus in [false, true] {
        // `..` of the snapshot's root is `.snapshots`.
        let dot_dot = listing(&mut client, &snapshot_root, plus)
            .into_iter()
            .find(|(name, _)| name == b"..")
            .map(|(_, file_id)| file_id);
        assert_eq!(dot_dot, Some(SNAPSHOT_DIRECTORY_FILE_ID));
        let mut listed = names(&mut client, &snapshot_root, plus);
        listed.sort();
        assert_eq!(
            listed,
            [&b"."[..], b"..", b"d", b"f", b"l"]
                .iter()
                .map(|name| name.to_vec())
                .collect::<Vec<_>>()
        );
    }

    // Its handles and file ids never alias live ones.
    assert_ne!(old_file, file);
    assert_eq!(old_file.0.len(), nfs_server::handle::SNAPSHOT_HANDLE_SIZE);
    let old_id = client.getattr(&old_file).unwrap().file_id;
    let live_id = client.getattr(&file).unwrap().file_id;
    assert_ne!(old_id, live_id);
    assert!(old_id >= 1 << 63 && live_id < 1 << 63);
    assert_ne!(
        client.getattr(&snapshot_root).unwrap().file_id,
        client.getattr(&root).unwrap().file_id
    );

    // ACCESS never grants a change there.
    assert_eq!(
        access(&mut client, &old_file) & (ACCESS_MODIFY | ACCESS_EXTEND),
        0
    );
    assert_eq!(
        access(&mut client, &snapshot_root) & (ACCESS_MODIFY | ACCESS_EXTEND | ACCESS_DELETE),
        0
    );
    assert_eq!(access(&mut client, &snapshots), ACCESS_READ | ACCESS_LOOKUP);
    assert_ne!(access(&mut client, &file) & ACCESS_MODIFY, 0);

    // Every change into, out of or inside it is ROFS.
    let rofs = Err(NfsError::ReadOnlyFileSystem);
    assert_eq!(
        client
            .write(&old_file, 0, b"x", StableHow::FileSync)
            .map(|_| ()),
        rofs
    );
    assert_eq!(
        status_of(client.nfs(Arguments::SetAttributes(SetAttributesArguments {
            object: old_file.clone(),
            new_attributes: SettableAttributes {
                mode: Some(0o600),
                ..SettableAttributes::default()
            },
            guard: None,
        }))),
        rofs
    );
    assert_eq!(client.create(&snapshot_root, b"new").map(|_| ()), rofs);
    assert_eq!(client.create(&snapshots, b"new").map(|_| ()), rofs);
    assert_eq!(status_of(mkdir(&mut client, &snapshot_root, b"new")), rofs);
    assert_eq!(
        status_of(symlink(&mut client, &old_directory, b"new")),
        rofs
    );
    assert_eq!(client.remove(&snapshot_root, b"f"), rofs);
    assert_eq!(client.remove(&snapshots, b"s1"), rofs);
    assert_eq!(
        status_of(rename(&mut client, &snapshot_root, b"f", &root, b"moved")),
        rofs
    );
    assert_eq!(
        status_of(rename(&mut client, &root, b"f", &snapshot_root, b"moved")),
        rofs
    );
    assert_eq!(
        status_of(link(&mut client, &file, &snapshot_root, b"x")),
        rofs
    );
    assert_eq!(status_of(link(&mut client, &old_file, &root, b"x")), rofs);
    // `.snapshots` itself is taken and read-only.
    assert_eq!(
        client.create(&root, b".snapshots").map(|_| ()),
        Err(NfsError::Exist)
    );
    assert_eq!(
        status_of(mkdir(&mut client, &root, b".snapshots")),
        Err(NfsError::Exist)
    );
    assert_eq!(client.remove(&root, b".snapshots"), rofs);
    assert_eq!(
        status_of(rename(&mut client, &root, b"f", &root, b".snapshots")),
        rofs
    );
    // COMMIT is answered.
    assert_eq!(
        status_of(client.nfs(Arguments::Commit(CommitArguments {
            file: old_file.clone(),
            offset: 0,
            count: 0,
        }))),
        Ok(())
    );
    // Nothing changed anywhere.
    assert_eq!(content(&mut client, &old_file).unwrap(), b"old");
    assert_eq!(content(&mut client, &file).unwrap(), b"new!");
    assert_eq!(
        client.lookup(&root, b"moved").unwrap_err(),
        NfsError::NoEntry
    );

    // Deleted: every handle into it is stale, the name is gone, and a new
    // snapshot of the same name does not revive old handles.
    client.server.delete_snapshot(b"s1").unwrap();
    assert_eq!(
        client.server.delete_snapshot(b"s1").unwrap_err(),
        FsError::NotFound
    );
    for handle in [
        &old_file,
        &old_directory,
        &old_inner,
        &old_link,
        &snapshot_root,
    ] {
        assert_eq!(client.getattr(handle).unwrap_err(), NfsError::Stale);
    }
    assert_eq!(
        content(&mut client, &old_file).unwrap_err(),
        NfsError::Stale
    );
    assert_eq!(
        client.lookup(&snapshot_root, b"f").unwrap_err(),
        NfsError::Stale
    );
    assert_eq!(
        client
            .write(&old_file, 0, b"x", StableHow::FileSync)
            .map(|_| ()),
        Err(NfsError::Stale)
    );
    assert_eq!(
        client.lookup(&snapshots, b"s1").unwrap_err(),
        NfsError::NoEntry
    );
    let again = client.server.create_snapshot(b"s1").unwrap();
    assert!(again.id > taken.id);
    assert_eq!(client.getattr(&old_file).unwrap_err(), NfsError::Stale);
    let new_root = client.lookup(&snapshots, b"s1").unwrap();
    let new_file = client.lookup(&new_root, b"f").unwrap();
    assert_ne!(new_file, old_file);
    assert_eq!(content(&mut client, &new_file).unwrap(), b"new!");
    client.server.delete_snapshot(b"s1").unwrap();
    assert_eq!(content(&mut client, &file).unwrap(), b"new!");

    // The image is clean.
    client.server.sync().unwrap();
    let device = client.server.into_filesystem().into_device();
    let report = sdfs::fsck(device, Box::new(vfs::StepClock::new(1_700_000_000)));
    assert!(report.is_clean(), "{:?}", report.problems);
}

/// An export of a subdirectory sees that directory in each snapshot, and
/// `..` never leads above it.
#[test]
fn a_subdirectory_export_shows_its_own_directory_in_the_snapshot() {
    let mut client = Client::new(common::volume(4096), &["/data,no_root_squash"]);
    let root = client.mount("/data").unwrap();
    let file = client.create(&root, b"inside").unwrap();
    client.write(&file, 0, b"v1", StableHow::FileSync).unwrap();
    client.server.create_snapshot(b"daily").unwrap();
    client.write(&file, 0, b"v2", StableHow::FileSync).unwrap();
    let snapshots = client.lookup(&root, b".snapshots").unwrap();
    let snapshot_root = client.lookup(&snapshots, b"daily").unwrap();
    let old = client.lookup(&snapshot_root, b"inside").unwrap();
    assert_eq!(content(&mut client, &old).unwrap(), b"v1");
    assert_eq!(client.lookup(&snapshot_root, b"..").unwrap(), snapshots);
    assert_eq!(client.lookup(&snapshots, b"..").unwrap(), root);
    assert_eq!(
        client.lookup(&snapshot_root, b"data").unwrap_err(),
        NfsError::NoEntry
    );
}

/// A file system without snapshots has no `.snapshots`: the name is an
/// ordinary one.
#[test]
fn without_snapshot_support_the_name_is_ordinary() {
    let mut client = Client::new(common::memfs(), &["/,no_root_squash"]);
    let root = client.root();
    assert_eq!(
        client.lookup(&root, b".snapshots").unwrap_err(),
        NfsError::NoEntry
    );
    client.create(&root, b".snapshots").unwrap();
    assert!(client.lookup(&root, b".snapshots").is_ok());
    assert_eq!(
        client.server.create_snapshot(b"s").unwrap_err(),
        FsError::NotSupported
    );
}

/// What an observer heard: file ids, and whether the handle was a
/// snapshot one.
#[derive(Default)]
struct Heard {
    updated: Vec<(u64, usize, u64)>,
    removed: Vec<u64>,
}

struct Recorder(Arc<Mutex<Heard>>);

impl nfs_server::AttributeObserver for Recorder {
    fn updated(
        &mut self,
        _export: nfs_server::ExportId,
        handle: &[u8],
        change: u64,
        attributes: &nfs3::FileAttributes,
    ) {
        self.0
            .lock()
            .unwrap()
            .updated
            .push((attributes.file_id, handle.len(), change));
    }

    fn removed(&mut self, _export: nfs_server::ExportId, inode: InodeId) {
        self.0.lock().unwrap().removed.push(inode.0);
    }
}

/// The metadata table hears `.snapshots` (its change counter moves with
/// every snapshot taken or deleted) and nothing inside a snapshot.
#[test]
fn only_the_snapshot_directory_is_published() {
    let heard = Arc::new(Mutex::new(Heard::default()));
    let mut client = Client::new(common::volume(4096), &["/,no_root_squash"]);
    client
        .server
        .set_observer(Box::new(Recorder(Arc::clone(&heard))));
    let root = client.root();
    let file = client.create(&root, b"f").unwrap();
    client.write(&file, 0, b"old", StableHow::FileSync).unwrap();
    client.server.create_snapshot(b"one").unwrap();
    let changes = |heard: &Arc<Mutex<Heard>>| -> Vec<u64> {
        heard
            .lock()
            .unwrap()
            .updated
            .iter()
            .filter(|(file_id, _, _)| *file_id == SNAPSHOT_DIRECTORY_FILE_ID)
            .map(|(_, _, change)| *change)
            .collect()
    };
    let after_create = changes(&heard);
    assert_eq!(after_create.len(), 1, "published when taken");
    heard.lock().unwrap().updated.clear();

    let snapshots = client.lookup(&root, b".snapshots").unwrap();
    let snapshot_root = client.lookup(&snapshots, b"one").unwrap();
    let old = client.lookup(&snapshot_root, b"f").unwrap();
    content(&mut client, &old).unwrap();
    client.getattr(&old).unwrap();
    names(&mut client, &snapshot_root, true);
    let _ = client.write(&old, 0, b"x", StableHow::FileSync);
    let _ = client.remove(&snapshot_root, b"f");
    {
        let heard = heard.lock().unwrap();
        for &(file_id, length, _) in &heard.updated {
            assert!(
                file_id == SNAPSHOT_DIRECTORY_FILE_ID || file_id < 1 << 63,
                "a snapshot object was published: {file_id:#x}"
            );
            assert_eq!(
                length == nfs_server::handle::SNAPSHOT_HANDLE_SIZE,
                file_id == SNAPSHOT_DIRECTORY_FILE_ID
            );
        }
        assert!(heard.removed.is_empty(), "{:?}", heard.removed);
    }
    heard.lock().unwrap().updated.clear();
    client.server.delete_snapshot(b"one").unwrap();
    let after_delete = changes(&heard);
    assert_eq!(after_delete.len(), 1, "published when deleted");
    assert_ne!(after_delete[0], after_create[0]);
}

/// `EXPORT/.snapshots/NAME` mounts as an export of its own (read-only),
/// and `EXPORT/.snapshots` lists them; unknown names and exports are
/// NOENT, and the snapshot's mount goes stale when it is deleted.
#[test]
fn a_snapshot_mounts_as_an_export_of_its_own() {
    let mut client = Client::new(common::volume(4096), &["/,no_root_squash", "/data"]);
    let root = client.root();
    let file = client.create(&root, b"f").unwrap();
    client
        .write(&file, 0, b"then", StableHow::FileSync)
        .unwrap();
    client.server.create_snapshot(b"weekly").unwrap();
    client
        .write(&file, 0, b"now!", StableHow::FileSync)
        .unwrap();
    let mounted = client.mount("/.snapshots/weekly").unwrap();
    let snapshots = client.lookup(&root, b".snapshots").unwrap();
    assert_eq!(mounted, client.lookup(&snapshots, b"weekly").unwrap());
    assert_eq!(client.mount("//.snapshots/weekly/").unwrap(), mounted);
    assert_eq!(client.mount("/.snapshots").unwrap(), snapshots);
    let old = client.lookup(&mounted, b"f").unwrap();
    assert_eq!(content(&mut client, &old).unwrap(), b"then");
    assert_eq!(
        client.create(&mounted, b"x").map(|_| ()),
        Err(NfsError::ReadOnlyFileSystem)
    );
    // The subdirectory export's own view of the same snapshot.
    let data = client.mount("/data/.snapshots/weekly").unwrap();
    assert_ne!(data, mounted);
    for missing in [
        "/.snapshots/none",
        "/nothing/.snapshots/weekly",
        "/.snapshots/weekly/f",
        "/f/.snapshots",
    ] {
        assert_eq!(
            client.mount(missing).unwrap_err(),
            nfs3::mount::MountError::NoEntry,
            "{missing}"
        );
    }
    client.server.delete_snapshot(b"weekly").unwrap();
    assert_eq!(client.getattr(&mounted).unwrap_err(), NfsError::Stale);
    assert_eq!(
        client.mount("/.snapshots/weekly").unwrap_err(),
        nfs3::mount::MountError::NoEntry
    );
}
