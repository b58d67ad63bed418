//! RPC-level behaviour: rejections, MOUNT and PORTMAP, the duplicate
//! request cache, durability and group commit, a failing commit, a full
//! disk, and restarts.

mod common;

use common::{status, Client};
use nfs3::mount::Mount3;
use nfs3::portmap::{Mapping, Portmap2, PROTOCOL_TCP};
use nfs3::procedures::remove::RemoveArguments;
use nfs3::{Arguments, Nfs3, NfsError, Results, StableHow};
use nfs_server::{ClientAddress, Server};
use vfs::{
    Attributes, DirectoryPage, FileSystem, FsError, InodeId, NewNode, Ownership, SetAttributes,
    StatFs,
};
use xdr::{AcceptedStatus, AuthStatus, Encode, Encoder, OpaqueAuth, RejectedReply, ReplyBody};

fn reply_body(bytes: &[u8]) -> ReplyBody {
    let mut decoder = xdr::Decoder::new(bytes);
    xdr::ReplyHeader::decode(&mut decoder).expect("reply").body
}

fn accepted_status(bytes: &[u8]) -> AcceptedStatus {
    match reply_body(bytes) {
        ReplyBody::Accepted(reply) => reply.status,
        other => panic!("{other:?}"),
    }
}

/// A call header with chosen numbers and an empty body.
fn call(xid: u32, rpc_version: u32, program: u32, version: u32, procedure: u32) -> Vec<u8> {
    let mut encoder = Encoder::new();
    for word in [xid, 0, rpc_version, program, version, procedure] {
        encoder.u32(word);
    }
    OpaqueAuth::none().encode(&mut encoder);
    OpaqueAuth::none().encode(&mut encoder);
    encoder.into_bytes()
}

#[test]
fn rejections() {
    let mut client = Client::new(common::memfs(), &["/"]);
    let reply = client.raw(&call(1, 2, 100_099, 1, 0)).unwrap();
    assert_eq!(accepted_status(&reply), AcceptedStatus::ProgramUnavailable);
    let reply = client.raw(&call(2, 2, nfs3::PROGRAM, 4, 0)).unwrap();
    assert_eq!(
        accepted_status(&reply),
        AcceptedStatus::ProgramMismatch { low: 3, high: 3 }
    );
    let reply = client.raw(&call(3, 2, nfs3::PROGRAM, 3, 22)).unwrap();
    assert_eq!(
        accepted_status(&reply),
        AcceptedStatus::ProcedureUnavailable
    );
    // GETATTR without its handle.
    let reply = client.raw(&call(4, 2, nfs3::PROGRAM, 3, 1)).unwrap();
    assert_eq!(accepted_status(&reply), AcceptedStatus::GarbageArguments);
    let reply = client.raw(&call(5, 3, nfs3::PROGRAM, 3, 0)).unwrap();
    assert_eq!(
        reply_body(&reply),
        ReplyBody::Denied(RejectedReply::RpcMismatch { low: 2, high: 2 })
    );
    // AUTH_DH is not accepted.
    let mut record = call(6, 2, nfs3::PROGRAM, 3, 0);
    record[24..28].copy_from_slice(&3u32.to_be_bytes());
    assert_eq!(
        reply_body(&client.raw(&record).unwrap()),
        ReplyBody::Denied(RejectedReply::AuthError(AuthStatus::BadCredential))
    );
    // A reply, or bytes without an xid, gets nothing.
    let mut not_a_call = call(7, 2, nfs3::PROGRAM, 3, 0);
    not_a_call[7] = 1;
    assert!(client.raw(&not_a_call).is_none());
    assert!(client.raw(&[1, 2]).is_none());
    // Trailing garbage after valid arguments.
    let mut padded = call(8, 2, nfs3::PROGRAM, 3, 0);
    padded.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(
        accepted_status(&client.raw(&padded).unwrap()),
        AcceptedStatus::GarbageArguments
    );
    // The server still answers.
    assert_eq!(status(&client.nfs(Arguments::Null(()))), Ok(()));
    assert!(client.server.statistics().rejected >= 7);
}

#[test]
fn mount_and_portmap() {
    let mut client = Client::new(
        common::memfs(),
        &["/", "/backup,path=/,ro,allow=10.0.0.0/8"],
    );
    let _ = client.root();
    use nfs3::mount::{Arguments as M, Results as R};
    match client.mount_call(M::Dump(())) {
        R::Dump(list) => {
            assert_eq!(list.entries.len(), 1);
            assert_eq!(list.entries[0].directory, b"/");
            assert_eq!(list.entries[0].host_name, b"127.0.0.1");
        }
        other => panic!("{other:?}"),
    }
    match client.mount_call(M::Export(())) {
        R::Export(list) => {
            let names: Vec<_> = list.exports.iter().map(|e| e.directory.clone()).collect();
            assert_eq!(names, [b"/".to_vec(), b"/backup".to_vec()]);
            assert_eq!(list.exports[1].groups[0].name, b"10.0.0.0/8");
        }
        other => panic!("{other:?}"),
    }
    client.mount_call(M::Unmount(nfs3::mount::DirectoryPath {
        path: b"/".to_vec(),
    }));
    match client.mount_call(M::Dump(())) {
        R::Dump(list) => assert!(list.entries.is_empty()),
        other => panic!("{other:?}"),
    }
    let _ = client.root();
    client.mount_call(M::UnmountAll(()));
    match client.mount_call(M::Dump(())) {
        R::Dump(list) => assert!(list.entries.is_empty()),
        other => panic!("{other:?}"),
    }
    // PORTMAP answers with the server's own port for NFS and MOUNT.
    let mut portmap = |arguments: nfs3::portmap::Arguments| {
        let procedure = <Portmap2 as nfs3::RpcProgram>::procedure_number(&arguments);
        let record = nfs3::message::encode_call::<Portmap2>(9, OpaqueAuth::none(), &arguments);
        let reply = client.raw(&record).unwrap();
        nfs3::message::decode_reply::<Portmap2>(&reply, procedure)
            .unwrap()
            .1
    };
    let get = |program, version| {
        nfs3::portmap::Arguments::GetPort(Mapping {
            program,
            version,
            protocol: PROTOCOL_TCP,
            port: 0,
        })
    };
    assert_eq!(
        portmap(get(nfs3::PROGRAM, 3)),
        nfs3::portmap::Results::GetPort(2049)
    );
    assert_eq!(
        portmap(get(nfs3::mount::PROGRAM, 3)),
        nfs3::portmap::Results::GetPort(2049)
    );
    // NLM v4 (locks) on the same port; NLM's older versions not at all.
    assert_eq!(
        portmap(get(100_021, 4)),
        nfs3::portmap::Results::GetPort(2049)
    );
    assert_eq!(portmap(get(100_021, 1)), nfs3::portmap::Results::GetPort(0));
    match portmap(nfs3::portmap::Arguments::Dump(())) {
        nfs3::portmap::Results::Dump(list) => assert_eq!(list.mappings.len(), 4),
        other => panic!("{other:?}"),
    }
    let _ = Mount3;
}

#[test]
fn duplicate_requests_are_replayed_not_rerun() {
    let mut client = Client::new(common::memfs(), &["/,no_root_squash"]);
    let root = client.root();
    client.create(&root, b"once").unwrap();
    let record = client.nfs_record(&Arguments::Remove(RemoveArguments {
        object: common::location(&root, b"once"),
    }));
    let first = client.raw(&record).unwrap();
    let second = client.raw(&record).unwrap();
    assert_eq!(first, second, "the retransmission gets the same reply");
    let (_, results) = nfs3::message::decode_reply::<Nfs3>(&second, 12).unwrap();
    assert_eq!(status(&results), Ok(()));
    assert_eq!(client.server.statistics().duplicates, 1);
    // The same xid with other arguments is a new call.
    let mut other = record.clone();
    let last = other.len() - 1;
    other[last] ^= 1;
    let reply = client.raw(&other).unwrap();
    let (_, results) = nfs3::message::decode_reply::<Nfs3>(&reply, 12).unwrap();
    assert_eq!(status(&results), Err(NfsError::NoEntry));
}

#[test]
fn changes_wait_for_a_commit_that_concurrent_calls_share() {
    let mut client = Client::new(common::volume(2048), &["/,no_root_squash"]);
    let root = client.root();
    let file = client.create(&root, b"file").unwrap();
    let commits_before = client.server.statistics().commits;
    let unstable = client.nfs_record(&Arguments::Write(nfs3::procedures::data::WriteArguments {
        file: file.clone(),
        offset: 0,
        count: 4,
        stable: StableHow::Unstable,
        data: b"data".to_vec(),
    }));
    let reply = client.server.handle(&unstable, client.client).unwrap();
    assert!(!reply.needs_commit(), "UNSTABLE writes reply at once");
    // Two changes applied before either is finished: one commit for both.
    let first = client.nfs_record(&Arguments::MakeDirectory(
        nfs3::procedures::create::MakeDirectoryArguments {
            location: common::location(&root, b"one"),
            attributes: Default::default(),
        },
    ));
    let second = client.nfs_record(&Arguments::MakeDirectory(
        nfs3::procedures::create::MakeDirectoryArguments {
            location: common::location(&root, b"two"),
            attributes: Default::default(),
        },
    ));
    let first = client.server.handle(&first, client.client).unwrap();
    let second = client.server.handle(&second, client.client).unwrap();
    assert!(first.needs_commit() && second.needs_commit());
    client.server.finish(first);
    client.server.finish(second);
    assert_eq!(client.server.statistics().commits, commits_before + 1);
    let durable = client.server.filesystem().durable_sequence();
    assert_eq!(durable, client.server.filesystem().applied_sequence());
}

/// MemFs whose commits can be made to fail.
struct FailingCommits {
    inner: vfs::memfs::MemFs,
    fail: bool,
}

impl FileSystem for FailingCommits {
    fn root(&self) -> InodeId {
        self.inner.root()
    }
    fn getattr(&mut self, inode: InodeId) -> Result<Attributes, FsError> {
        self.inner.getattr(inode)
    }
    fn setattr(&mut self, inode: InodeId, changes: &SetAttributes) -> Result<Attributes, FsError> {
        self.inner.setattr(inode, changes)
    }
    fn lookup(&mut self, directory: InodeId, name: &[u8]) -> Result<Attributes, FsError> {
        self.inner.lookup(directory, name)
    }
    fn read(&mut self, inode: InodeId, offset: u64, buffer: &mut [u8]) -> Result<usize, FsError> {
        self.inner.read(inode, offset, buffer)
    }
    fn write(&mut self, inode: InodeId, offset: u64, data: &[u8]) -> Result<Attributes, FsError> {
        self.inner.write(inode, offset, data)
    }
    fn readlink(&mut self, inode: InodeId) -> Result<Vec<u8>, FsError> {
        self.inner.readlink(inode)
    }
    fn create(
        &mut self,
        directory: InodeId,
        name: &[u8],
        node: &NewNode,
        owner: &Ownership,
    ) -> Result<Attributes, FsError> {
        self.inner.create(directory, name, node, owner)
    }
    fn unlink(&mut self, directory: InodeId, name: &[u8]) -> Result<(), FsError> {
        self.inner.unlink(directory, name)
    }
    fn rmdir(&mut self, directory: InodeId, name: &[u8]) -> Result<(), FsError> {
        self.inner.rmdir(directory, name)
    }
    fn rename(
        &mut self,
        from_directory: InodeId,
        from_name: &[u8],
        to_directory: InodeId,
        to_name: &[u8],
    ) -> Result<(), FsError> {
        self.inner
            .rename(from_directory, from_name, to_directory, to_name)
    }
    fn link(
        &mut self,
        inode: InodeId,
        directory: InodeId,
        name: &[u8],
    ) -> Result<Attributes, FsError> {
        self.inner.link(inode, directory, name)
    }
    fn readdir(
        &mut self,
        directory: InodeId,
        cookie: u64,
        max_entries: usize,
    ) -> Result<DirectoryPage, FsError> {
        self.inner.readdir(directory, cookie, max_entries)
    }
    fn statfs(&mut self) -> Result<StatFs, FsError> {
        self.inner.statfs()
    }
    fn applied_sequence(&self) -> u64 {
        self.inner.applied_sequence()
    }
    fn durable_sequence(&self) -> u64 {
        self.inner.durable_sequence()
    }
    fn commit(&mut self) -> Result<(), FsError> {
        if self.fail {
            return Err(FsError::Io);
        }
        self.inner.commit()
    }
}

#[test]
fn a_failed_commit_turns_the_reply_into_an_io_error() {
    let filesystem = FailingCommits {
        inner: common::memfs(),
        fail: false,
    };
    let mut client = Client::new(filesystem, &["/,no_root_squash"]);
    let root = client.root();
    client.server.filesystem().fail = true;
    assert_eq!(client.create(&root, b"lost"), Err(NfsError::Io));
}

#[test]
fn a_full_disk_is_nospc_and_space_comes_back() {
    let mut client = Client::new(common::volume(256), &["/,no_root_squash"]);
    let root = client.root();
    let file = client.create(&root, b"big").unwrap();
    let chunk = vec![0xabu8; 64 * 1024];
    let mut offset = 0u64;
    let error = loop {
        match client.write(&file, offset, &chunk, StableHow::FileSync) {
            Ok(_) => offset += chunk.len() as u64,
            Err(error) => break error,
        }
        assert!(offset < 2 << 20, "a 1 MiB disk never filled");
    };
    assert_eq!(error, NfsError::NoSpace);
    // What was written is intact, and removing the file frees the space.
    assert_eq!(client.read(&file, 0, 16).unwrap().data, &chunk[..16]);
    client.remove(&root, b"big").unwrap();
    let again = client.create(&root, b"again").unwrap();
    client
        .write(&again, 0, &chunk, StableHow::FileSync)
        .unwrap();
    let volume = Server::into_filesystem(client.server);
    let report = sdfs::fsck(volume.into_device(), common_clock());
    assert!(report.is_clean(), "{report:?}");
}

fn common_clock() -> Box<vfs::StepClock> {
    Box::new(vfs::StepClock::new(1_800_000_000))
}

#[test]
fn data_and_handles_survive_a_restart() {
    let mut client = Client::new(common::volume(1024), &["/,no_root_squash"]);
    let root = client.root();
    let file = client.create(&root, b"kept").unwrap();
    client
        .write(&file, 0, b"durable bytes", StableHow::FileSync)
        .unwrap();
    let device = Server::into_filesystem(client.server).into_device();
    let volume = sdfs::Volume::open(device, common_clock(), 1 << 20).unwrap();
    let mut client = Client::new(volume, &["/,no_root_squash"]);
    assert_eq!(client.root(), root);
    assert_eq!(client.read(&file, 0, 100).unwrap().data, b"durable bytes");
}

/// What an observer heard: (inode, size, change) or a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Heard {
    Updated { inode: u64, size: u64, change: u64 },
    Removed(u64),
}

struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<Heard>>>);

impl nfs_server::AttributeObserver for Recorder {
    fn updated(
        &mut self,
        _export: nfs_server::ExportId,
        handle: &[u8],
        change: u64,
        attributes: &nfs3::FileAttributes,
    ) {
        assert_eq!(handle.len(), nfs_server::handle::HANDLE_SIZE);
        self.0.lock().unwrap().push(Heard::Updated {
            inode: attributes.file_id,
            size: attributes.size,
            change,
        });
    }

    fn removed(&mut self, _export: nfs_server::ExportId, inode: InodeId) {
        self.0.lock().unwrap().push(Heard::Removed(inode.0));
    }
}

#[test]
fn every_change_is_published_to_the_observer() {
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut client = Client::new(common::memfs(), &["/,no_root_squash"]);
    client
        .server
        .set_observer(Box::new(Recorder(std::sync::Arc::clone(&heard))));
    let root = client.root();
    let file = client.create(&root, b"watched").unwrap();
    let inode = client.getattr(&file).unwrap().file_id;
    heard.lock().unwrap().clear();
    client
        .write(&file, 0, b"12345", StableHow::Unstable)
        .unwrap();
    let updates: Vec<_> = heard.lock().unwrap().drain(..).collect();
    let last = updates
        .iter()
        .rev()
        .find_map(|heard| match heard {
            Heard::Updated {
                inode: found,
                size,
                change,
            } if *found == inode => Some((*size, *change)),
            _ => None,
        })
        .expect("the write was published");
    assert_eq!(last.0, 5);
    client.write(&file, 5, b"6", StableHow::Unstable).unwrap();
    let after = heard.lock().unwrap().drain(..).collect::<Vec<_>>();
    assert!(after.iter().any(|heard| matches!(
        heard,
        Heard::Updated { inode: found, size: 6, change } if *found == inode && *change > last.1
    )));
    client.remove(&root, b"watched").unwrap();
    assert!(heard.lock().unwrap().contains(&Heard::Removed(inode)));
}

#[test]
fn async_exports_reply_before_committing_but_honour_commit() {
    let mut client = Client::new(common::volume(1024), &["/,no_root_squash,async"]);
    let root = client.root();
    let create = client.nfs_record(&Arguments::MakeDirectory(
        nfs3::procedures::create::MakeDirectoryArguments {
            location: common::location(&root, b"quick"),
            attributes: Default::default(),
        },
    ));
    let reply = client.server.handle(&create, client.client).unwrap();
    assert!(!reply.needs_commit(), "async: no commit before the reply");
    client.server.finish(reply);
    let file = client.create(&root, b"file").unwrap();
    let written = client
        .write(&file, 0, b"data", StableHow::FileSync)
        .unwrap();
    assert_eq!(
        written.committed,
        StableHow::Unstable,
        "an async export never claims a durable write"
    );
    let durable = client.server.filesystem().durable_sequence();
    assert!(durable < client.server.filesystem().applied_sequence());
    let commit = client.nfs_record(&Arguments::Commit(
        nfs3::procedures::data::CommitArguments {
            file,
            offset: 0,
            count: 0,
        },
    ));
    let reply = client.server.handle(&commit, client.client).unwrap();
    assert!(reply.needs_commit(), "COMMIT is always honoured");
    client.server.finish(reply);
    let filesystem = client.server.filesystem();
    assert_eq!(filesystem.durable_sequence(), filesystem.applied_sequence());
}

/// A COMMIT of a directory makes the names made before it durable (the
/// `fsync` of a directory on an export that answers before committing);
/// it answers with the write verifier, as a COMMIT of a file does.
#[test]
fn commit_of_a_directory_makes_names_durable() {
    let mut client = Client::new(common::volume(1024), &["/,no_root_squash,async"]);
    let root = client.root();
    client.create(&root, b"name").unwrap();
    let filesystem = client.server.filesystem();
    assert!(filesystem.durable_sequence() < filesystem.applied_sequence());
    let commit = client.nfs_record(&Arguments::Commit(
        nfs3::procedures::data::CommitArguments {
            file: root.clone(),
            offset: 0,
            count: 0,
        },
    ));
    let reply = client.server.handle(&commit, client.client).unwrap();
    assert!(reply.needs_commit(), "a COMMIT of a directory waits too");
    let bytes = client.server.finish(reply);
    let filesystem = client.server.filesystem();
    assert_eq!(filesystem.durable_sequence(), filesystem.applied_sequence());
    let file = client.create(&root, b"file").unwrap();
    let written = client.write(&file, 0, b"x", StableHow::Unstable).unwrap();
    let committed = match client.nfs(Arguments::Commit(nfs3::procedures::data::CommitArguments {
        file: root,
        offset: 0,
        count: 0,
    })) {
        Results::Commit(result) => result.into_result().expect("COMMIT of a directory"),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(committed.verifier, written.verifier);
    assert!(!bytes.is_empty());
}

/// `vrpc=local` (the default): a VRPC guest's changes are answered before
/// the commit, a TCP client's are not; `vrpc=sync` gives VRPC guests NFS's
/// rules. COMMIT always waits.
#[test]
fn vrpc_guests_get_local_durability_unless_the_export_says_sync() {
    let mkdir = |client: &mut Client<_>, name: &[u8]| {
        let root = client.root();
        let record = client.nfs_record(&Arguments::MakeDirectory(
            nfs3::procedures::create::MakeDirectoryArguments {
                location: common::location(&root, name),
                attributes: Default::default(),
            },
        ));
        let reply = client.server.handle(&record, client.client).unwrap();
        let waits = reply.needs_commit();
        client.server.finish(reply);
        waits
    };
    let mut client = Client::new(common::volume(1024), &["/,no_root_squash"]);
    assert!(
        mkdir(&mut client, b"tcp"),
        "a TCP client on a sync export waits"
    );
    for guest in [
        ClientAddress::Local(nfs_server::LocalPeer {
            connection: 7,
            uid: 0,
            gid: 0,
        }),
        ClientAddress::Domain(3),
    ] {
        client.client = guest;
        assert!(
            !mkdir(&mut client, format!("{guest}").as_bytes()),
            "{guest}"
        );
    }
    let root = client.root();
    let file = client.create(&root, b"file").unwrap();
    let written = client
        .write(&file, 0, b"data", StableHow::FileSync)
        .unwrap();
    assert_eq!(written.committed, StableHow::Unstable);
    assert!(client.server.has_uncommitted());
    client.server.sync().unwrap();
    assert!(!client.server.has_uncommitted());

    let mut client = Client::new(common::volume(1024), &["/,no_root_squash,vrpc=sync"]);
    client.client = ClientAddress::Domain(3);
    assert!(mkdir(&mut client, b"guest"), "vrpc=sync: NFS rules");
}

/// A READ reply names its data's range: the bytes there are the file's,
/// for lengths that are and are not multiples of four, short reads at the
/// end of the file and empty reads; other replies name none.
#[test]
fn read_replies_name_the_range_of_their_data() {
    let mut client = Client::new(common::memfs(), &["/,no_root_squash"]);
    let root = client.root();
    let file = client.create(&root, b"data").unwrap();
    let contents: Vec<u8> = (0..9000u32).map(|index| (index % 251) as u8).collect();
    client
        .write(&file, 0, &contents, nfs3::StableHow::FileSync)
        .unwrap();
    for (offset, count) in [(0, 0), (0, 1), (3, 5), (0, 4096), (100, 8191), (8990, 64)] {
        let arguments = nfs3::Arguments::Read(nfs3::procedures::data::ReadArguments {
            file: file.clone(),
            offset,
            count,
        });
        let call = client.nfs_record(&arguments);
        let reply = client.server.handle(&call, client.client).unwrap();
        let record = client.server.finish_record(reply);
        let start = offset as usize;
        let end = (start + count as usize).min(contents.len());
        let segment = record.segment.clone().expect("a READ reply has a segment");
        assert_eq!(&record.bytes[segment], &contents[start..end]);
        let (head, payload, tail) = record.pieces();
        assert_eq!([head, payload, tail].concat(), record.bytes);
        let (_, results) = nfs3::message::decode_reply::<nfs3::Nfs3>(&record.bytes, 6).unwrap();
        match results {
            nfs3::Results::Read(nfs3::ProcedureResult::Ok(ok)) => {
                assert_eq!(ok.data, &contents[start..end]);
                assert_eq!(ok.count as usize, end - start);
                assert_eq!(ok.end_of_file, end == contents.len());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let getattr = client.nfs_record(&nfs3::Arguments::GetAttributes(
        nfs3::procedures::inspect::GetAttributesArguments { object: file },
    ));
    let reply = client.server.handle(&getattr, client.client).unwrap();
    assert_eq!(client.server.finish_record(reply).segment, None);
}

/// A READ reply record handed back (`recycle_reply`) is built in again by
/// a later large READ, which then makes byte for byte the reply it makes
/// in a new record (none of the longer reply's bytes left behind).
#[test]
fn a_recycled_reply_record_makes_the_same_reply() {
    let mut client = Client::new(common::memfs(), &["/,no_root_squash"]);
    client.server.keep_reply_records(4);
    let root = client.root();
    let file = client.create(&root, b"data").unwrap();
    let contents: Vec<u8> = (0..200_000u32).map(|index| (index % 251) as u8).collect();
    client
        .write(&file, 0, &contents, nfs3::StableHow::FileSync)
        .unwrap();
    let read = |client: &mut Client<_>, offset: u64, count: u32| {
        client.nfs_record(&nfs3::Arguments::Read(
            nfs3::procedures::data::ReadArguments {
                file: file.clone(),
                offset,
                count,
            },
        ))
    };
    let long = read(&mut client, 0, 150_000);
    let short = read(&mut client, 1_000, 100_000);
    let plain = client.raw(&short).expect("a reply");
    let reply = client.server.handle(&long, client.client).unwrap();
    let record = client.server.finish_record(reply);
    let buffer = record.bytes.as_ptr();
    client.server.recycle_reply(record.bytes);
    let reply = client.server.handle(&short, client.client).unwrap();
    let record = client.server.finish_record(reply);
    assert_eq!(record.bytes, plain);
    assert_eq!(
        record.bytes.as_ptr(),
        buffer,
        "built in the record handed back"
    );
}

/// A record whose range does not lie within it comes apart as the whole
/// record, without a panic; an empty range at its end splits nothing off.
#[test]
fn a_reply_record_with_a_range_outside_it_is_one_piece() {
    #[allow(clippy::reversed_empty_ranges)]
    for segment in [0..5, 3..2, 4..4, usize::MAX..usize::MAX] {
        let record = nfs_server::ReplyRecord {
            bytes: vec![1, 2, 3, 4],
            segment: Some(segment),
            placed: 0,
        };
        assert_eq!(record.pieces(), (&[1, 2, 3, 4][..], &[][..], &[][..]));
    }
    let record = nfs_server::ReplyRecord {
        bytes: vec![1, 2, 3, 4],
        segment: Some(1..3),
        placed: 0,
    };
    assert_eq!(record.pieces(), (&[1][..], &[2, 3][..], &[4][..]));
}

/// A read destination over a shared buffer, as a transport's data pages.
struct Pages {
    bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    refuse: bool,
}

impl nfs_server::ReadDestination for Pages {
    fn capacity(&self) -> usize {
        self.bytes.lock().unwrap().len()
    }

    fn put(&mut self, at: usize, bytes: &[u8]) -> bool {
        if self.refuse {
            return false;
        }
        self.bytes.lock().unwrap()[at..at + bytes.len()].copy_from_slice(bytes);
        true
    }
}

/// A READ given a destination puts its data there, and its record with
/// the data put back where `segment` says is byte for byte the record of
/// a READ without one; holes, partial blocks, runs, end of file and
/// reads past it included, on the volume and on the in-memory file
/// system. A destination too small, one that refuses, or one given to a
/// call that is not a READ leaves the data in the record.
#[test]
fn a_read_into_a_destination_makes_the_same_reply() {
    fn check<F: FileSystem>(mut client: Client<F>) {
        let root = client.root();
        let file = client.create(&root, b"f").expect("create");
        let data: Vec<u8> = (0..20_000u32).map(|index| (index * 13 + 5) as u8).collect();
        client
            .write(&file, 0, &data, StableHow::FileSync)
            .expect("write");
        // A hole from 20,000 to 70,000.
        client
            .write(&file, 70_000, &data[..3_001], StableHow::FileSync)
            .expect("write");
        let read = |client: &mut Client<F>, offset: u64, count: u32| {
            client.nfs_record(&Arguments::Read(nfs3::procedures::data::ReadArguments {
                file: file.clone(),
                offset,
                count,
            }))
        };
        for (offset, count) in [
            (0, 4096),
            (0, 20_000),
            (1, 8191),
            (4095, 2),
            (10_000, 65_536),
            (69_999, 10_000),
            (73_000, 10),
            (73_001, 10),
            (100_000, 10),
            (5, 0),
        ] {
            let call = read(&mut client, offset, count);
            let plain = client.raw(&call).expect("a reply");
            for (room, refuse) in [(count as usize, false), (count as usize + 7, false)] {
                let bytes = std::sync::Arc::new(std::sync::Mutex::new(vec![0xee; room]));
                client.server.direct_next_read(Box::new(Pages {
                    bytes: bytes.clone(),
                    refuse,
                }));
                let reply = client.server.handle(&call, client.client).expect("a reply");
                let record = client.server.finish_record(reply);
                let segment = record.segment.clone().expect("a READ's segment");
                assert!(segment.is_empty(), "the data is left out of the record");
                let mut whole = record.bytes[..segment.start].to_vec();
                whole.extend_from_slice(&bytes.lock().unwrap()[..record.placed]);
                whole.extend_from_slice(&record.bytes[segment.start..]);
                assert_eq!(whole, plain, "READ of {count} at {offset}");
            }
            // Too small, refusing, or handed to another call first: the
            // data stays in the record.
            let given = u64::from(count).min(73_001u64.saturating_sub(offset)) as usize;
            if given > 0 {
                for (room, refuse) in [(given - 1, false), (given, true)] {
                    let bytes = std::sync::Arc::new(std::sync::Mutex::new(vec![0; room]));
                    client
                        .server
                        .direct_next_read(Box::new(Pages { bytes, refuse }));
                    let reply = client.server.handle(&call, client.client).expect("a reply");
                    let record = client.server.finish_record(reply);
                    assert_eq!(record.placed, 0);
                    assert_eq!(record.bytes, plain);
                }
            }
            let bytes = std::sync::Arc::new(std::sync::Mutex::new(vec![0; 1 << 20]));
            client.server.direct_next_read(Box::new(Pages {
                bytes: bytes.clone(),
                refuse: false,
            }));
            client.getattr(&file).expect("getattr");
            assert_eq!(client.raw(&call).expect("a reply"), plain);
            assert!(bytes.lock().unwrap().iter().all(|&byte| byte == 0));
        }
    }
    check(Client::new(common::volume(4096), &["/,no_root_squash"]));
    check(Client::new(common::memfs(), &["/,no_root_squash"]));
}
