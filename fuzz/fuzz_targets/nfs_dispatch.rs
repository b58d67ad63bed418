//! The whole NFS dispatch path: arbitrary records through
//! `nfs_server::Server::handle` and `finish` over a fresh in-memory sdfs
//! volume per input. Panics are bugs, and so are: a reply whose xid is not
//! the call's, a reply that does not decode as an RPC reply, the reply of
//! a well-formed call that does not decode as that procedure's results,
//! and a file system that `fsck` finds damaged after the calls (checked
//! when the calls committed anything: otherwise the image is the
//! template's, which is clean).
//!
//! The volume is small (128 blocks) and nearly full: a file `big` leaves
//! about 8 blocks (32 KiB) for new data, so WRITE, CREATE and SETATTR meet
//! NFS3ERR_NOSPC and the full-disk paths (the release reserve, the commit
//! that makes room) are explored, while REMOVE of `big` makes room. Each
//! input reopens the template image (a few blocks: cheap), so runs stay
//! reproducible.
//!
//! Input: one flags byte, then records, each a big-endian `u16` length and
//! that many bytes (the last may be cut short).
//!
//! - flags bit 0, structured mode: every `@FH0`..`@FH4` in a record starts
//!   a 40-byte window replaced by a real file handle (the root of `/`,
//!   `dir`, `dir/file`, `link`, the root of the read-only export `/ro`), so
//!   fuzzed calls get past the handle checks. The seeds
//!   (`corpus/nfs_dispatch/`) are calls of every NFSv3, MOUNT and PORTMAP
//!   procedure encoded by `nfs3::message::encode_call`, with those
//!   placeholders as handles.
//!   Every `@FS0`..`@FS4` starts a 48-byte window replaced by a handle
//!   under `.snapshots` (snapshot `before`, taken of the same tree: the
//!   `.snapshots` directory of `/`, the snapshot's root, `dir`,
//!   `dir/file`, `link`), so the snapshot paths (reads, and the
//!   ROFS answers to changes) are fuzzed too; seeds `nfs-snapshot-*`.
//! - flags bit 1: the caller is 10.9.9.9, which `/ro` does not admit,
//!   instead of 127.0.0.1.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nfs3::message::{decode_call, decode_reply};
use nfs3::mount::Mount3;
use nfs3::portmap::Portmap2;
use nfs3::{Nfs3, RpcProgram};
use nfs_server::{
    ClientAddress, ExportConfig, ExportId, HandleContents, HandleKey, Server, ServerConfig, Tree,
};
use sdfs::device::MemoryDevice;
use sdfs::{FormatOptions, Volume};
use vfs::{FileSystem, NewNode, Ownership, StepClock};
use xdr::{Decoder, ReplyHeader};

const START: i64 = 1_700_000_000;
const EXPORTS: [&str; 2] = ["/,no_root_squash", "/ro,path=/ro,ro,allow=127.0.0.1"];
const HANDLE_SIZE: usize = 40;
const SNAPSHOT_HANDLE_SIZE: usize = 48;
const MARKER: &[u8; 3] = b"@FH";
const SNAPSHOT_MARKER: &[u8; 3] = b"@FS";
const MAXIMUM_RECORDS: usize = 64;
/// Blocks of the volume, and those left free for new data.
const BLOCKS: u64 = 128;
const FREE_BLOCKS: u64 = 8;

/// A populated image, made once per process, and the handles into it.
struct Template {
    device: MemoryDevice,
    /// The commit the image holds.
    sequence: u64,
    secret: [u8; 32],
    handles: Vec<[u8; HANDLE_SIZE]>,
    snapshot_handles: Vec<Vec<u8>>,
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let mut device = MemoryDevice::new(BLOCKS);
        let options = FormatOptions {
            uuid: [7; 16],
            handle_secret: [0x42; 32],
        };
        Volume::format(&mut device, options, &StepClock::new(START)).expect("format");
        let mut volume =
            Volume::open(device, Box::new(StepClock::new(START)), 1 << 20).expect("open");
        let owner = |mode, uid| Ownership {
            mode,
            uid,
            gid: uid,
        };
        let root = volume.root();
        let directory = volume
            .create(root, b"dir", &NewNode::Directory, &owner(0o777, 1000))
            .expect("dir");
        let file = volume
            .create(
                directory.inode,
                b"file",
                &NewNode::Regular,
                &owner(0o644, 1000),
            )
            .expect("file");
        volume
            .write(file.inode, 0, &[0x5a; 10_000])
            .expect("write file");
        let link = volume
            .create(
                root,
                b"link",
                &NewNode::Symlink(b"dir/file".to_vec()),
                &owner(0o777, 0),
            )
            .expect("link");
        let read_only = volume
            .create(root, b"ro", &NewNode::Directory, &owner(0o755, 0))
            .expect("ro");
        let readme = volume
            .create(
                read_only.inode,
                b"readme",
                &NewNode::Regular,
                &owner(0o644, 0),
            )
            .expect("readme");
        volume.write(readme.inode, 0, b"read only").expect("readme");
        volume.commit().expect("commit");
        let snapshot = volume.create_snapshot(b"before").expect("snapshot").id;
        let big = volume
            .create(root, b"big", &NewNode::Regular, &owner(0o666, 1000))
            .expect("big");
        // Most of it in one write (one run of blocks: a short record to
        // read at every open), the rest a block at a time.
        let free = volume.statfs().expect("statfs").free_blocks;
        let first = free.saturating_sub(FREE_BLOCKS + 16) * 4096;
        volume
            .write(big.inode, 0, &vec![0xb1; first as usize])
            .expect("filling big");
        volume.commit().expect("commit");
        let mut size = first;
        while volume.statfs().expect("statfs").free_blocks > FREE_BLOCKS {
            volume
                .write(big.inode, size, &[0xb1; 4096])
                .expect("filling big");
            size += 4096;
            volume.commit().expect("commit");
        }
        let secret = volume.handle_secret();
        let key = HandleKey::new(&secret);
        let mut handle = |export: &str, inode: vfs::InodeId| {
            let attributes = volume.getattr(inode).expect("getattr");
            key.make(&HandleContents {
                export: ExportId::of_name(export),
                inode: attributes.inode,
                generation: attributes.generation,
            })
        };
        let handles = vec![
            handle("/", root),
            handle("/", directory.inode),
            handle("/", file.inode),
            handle("/", link.inode),
            handle("/ro", read_only.inode),
        ];
        // The snapshot holds the same inodes as the live tree then.
        let mut in_snapshot = |tree: Tree, inode: vfs::InodeId| {
            let (inode, generation) = match tree {
                Tree::SnapshotDirectory => (vfs::InodeId(0), vfs::Generation(0)),
                Tree::Live | Tree::Snapshot(_) => {
                    let attributes = volume.getattr(inode).expect("getattr");
                    (attributes.inode, attributes.generation)
                }
            };
            key.make_in(
                tree,
                &HandleContents {
                    export: ExportId::of_name("/"),
                    inode,
                    generation,
                },
            )
        };
        let snapshot_handles = vec![
            in_snapshot(Tree::SnapshotDirectory, root),
            in_snapshot(Tree::Snapshot(snapshot), root),
            in_snapshot(Tree::Snapshot(snapshot), directory.inode),
            in_snapshot(Tree::Snapshot(snapshot), file.inode),
            in_snapshot(Tree::Snapshot(snapshot), link.inode),
        ];
        Template {
            sequence: volume.commit_sequence(),
            device: volume.into_device(),
            secret,
            handles,
            snapshot_handles,
        }
    })
}

fn server(template: &Template) -> Server<Volume<MemoryDevice>> {
    let volume = Volume::open(
        template.device.clone(),
        Box::new(StepClock::new(START + 100)),
        1 << 20,
    )
    .expect("the template opens");
    let config = ServerConfig {
        exports: EXPORTS
            .iter()
            .map(|line| ExportConfig::parse(line).expect("export"))
            .collect(),
        handle_secret: template.secret,
        write_verifier: *b"fuzzverf",
        file_system_id: 1,
        port: 2049,
    };
    Server::new(volume, config).expect("server")
}

/// Replace every marked 40-byte window with the handle it names, and
/// every marked 48-byte window with the snapshot handle it names.
fn splice(record: &mut [u8], template: &Template) {
    let mut at = 0;
    while at + 4 <= record.len() {
        let index = usize::from(record[at + 3].wrapping_sub(b'0'));
        if &record[at..at + 3] == MARKER && at + HANDLE_SIZE <= record.len() {
            let handle = &template.handles[index % template.handles.len()];
            record[at..at + HANDLE_SIZE].copy_from_slice(handle);
            at += HANDLE_SIZE;
        } else if &record[at..at + 3] == SNAPSHOT_MARKER
            && at + SNAPSHOT_HANDLE_SIZE <= record.len()
        {
            let handle = &template.snapshot_handles[index % template.snapshot_handles.len()];
            record[at..at + SNAPSHOT_HANDLE_SIZE].copy_from_slice(handle);
            at += SNAPSHOT_HANDLE_SIZE;
        } else {
            at += 1;
        }
    }
}

/// If `record` is a well-formed call to `P`, its reply must decode as that
/// procedure's results (or be an RPC rejection, e.g. of the credential).
fn check_results<P: RpcProgram>(record: &[u8], reply: &[u8]) {
    let Ok((header, arguments)) = decode_call::<P>(record) else {
        return;
    };
    let procedure = P::procedure_number(&arguments);
    let mut decoder = Decoder::new(reply);
    let reply_header = ReplyHeader::decode(&mut decoder).expect("a reply header");
    if matches!(
        reply_header.body,
        xdr::ReplyBody::Accepted(xdr::AcceptedReply {
            status: xdr::AcceptedStatus::Success,
            ..
        })
    ) {
        if let Err(error) = decode_reply::<P>(reply, procedure) {
            panic!(
                "the reply to procedure {procedure} of program {} does not decode: {error:?}\n\
                 call {header:?}",
                P::PROGRAM
            );
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, mut rest)) = input.split_first() else {
        return;
    };
    let template = template();
    let mut server = server(template);
    let client = if flags & 2 == 0 {
        ClientAddress::Ip([127, 0, 0, 1].into())
    } else {
        ClientAddress::Ip([10, 9, 9, 9].into())
    };
    let mut records = 0;
    while rest.len() >= 2 && records < MAXIMUM_RECORDS {
        records += 1;
        let length = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let body = &rest[2..];
        let (record, tail) = body.split_at(length.min(body.len()));
        rest = tail;
        let mut record = record.to_vec();
        if flags & 1 != 0 {
            splice(&mut record, template);
        }
        let Some(reply) = server.handle(&record, client) else {
            continue;
        };
        let record_out = if reply.needs_commit() {
            server.finish_record(reply)
        } else {
            reply.into_record_unchecked_durability()
        };
        // The bulk data's range lies inside the reply, and for a READ it is
        // the data the reply decodes to.
        if let Some(segment) = &record_out.segment {
            assert!(segment.start <= segment.end && segment.end <= record_out.bytes.len());
            let read = matches!(
                decode_call::<Nfs3>(&record),
                Ok((_, nfs3::Arguments::Read(_)))
            );
            if read {
                let (_, _, range) = nfs3::message::decode_read_reply(&record_out.bytes)
                    .expect("a READ reply with data decodes");
                assert_eq!(&range, segment, "the READ data's range");
            }
        }
        let reply = record_out.bytes;
        let header = ReplyHeader::decode(&mut Decoder::new(&reply)).expect("a reply header");
        assert_eq!(
            Some(header.xid),
            xdr::rpc::peek_xid(&record),
            "the reply's xid"
        );
        check_results::<Nfs3>(&record, &reply);
        check_results::<Mount3>(&record, &reply);
        check_results::<Portmap2>(&record, &reply);
    }
    server.sync().expect("the final commit");
    let volume = server.into_filesystem();
    if volume.commit_sequence() == template.sequence {
        return;
    }
    let device = volume.into_device();
    let report = sdfs::fsck(device, Box::new(StepClock::new(START + 200)));
    assert!(
        report.is_clean(),
        "fsck after the calls: {:?}",
        report.problems
    );
});
