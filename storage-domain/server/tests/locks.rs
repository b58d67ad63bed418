//! NLM v4 through the server's dispatch: records in, records out, as a TCP
//! or VRPC client sends them (`storage-domain/server/src/locks.rs`).

mod common;

use common::Client;
use nfs3::nlm::{self, Nlm4, NlmStatus, TestReply};
use nfs3::{FileHandle, RpcProgram};
use nfs_server::Server;
use vfs::FileSystem;

fn lock_of(name: &[u8], handle: &FileHandle, svid: i32, offset: u64, length: u64) -> nlm::Lock {
    nlm::Lock {
        caller_name: name.to_vec(),
        handle: handle.0.clone(),
        owner: svid.to_be_bytes().to_vec(),
        svid,
        offset,
        length,
    }
}

/// One NLM call in `session`; its results.
fn call<F: FileSystem>(
    client: &mut Client<F>,
    session: u64,
    arguments: nlm::Arguments,
) -> nlm::Results {
    let procedure = Nlm4::procedure_number(&arguments);
    let xid = client.next_xid();
    let record = nfs3::message::encode_call::<Nlm4>(xid, client.credential.clone(), &arguments);
    let reply = client
        .server
        .handle_in_session(&record, client.client, session)
        .expect("a reply");
    let bytes = client.server.finish(reply);
    nfs3::message::decode_reply::<Nlm4>(&bytes, procedure)
        .expect("a successful RPC")
        .1
}

fn lock<F: FileSystem>(
    client: &mut Client<F>,
    session: u64,
    lock: nlm::Lock,
    exclusive: bool,
    block: bool,
) -> NlmStatus {
    match call(
        client,
        session,
        nlm::Arguments::Lock(nlm::LockArguments {
            cookie: vec![7, 7],
            block,
            exclusive,
            lock,
            reclaim: false,
            state: 1,
        }),
    ) {
        nlm::Results::Lock(result) => {
            assert_eq!(result.cookie, [7, 7], "the cookie comes back");
            result.status
        }
        other => panic!("{other:?}"),
    }
}

fn test<F: FileSystem>(client: &mut Client<F>, lock: nlm::Lock, exclusive: bool) -> TestReply {
    match call(
        client,
        0,
        nlm::Arguments::Test(nlm::TestArguments {
            cookie: Vec::new(),
            exclusive,
            lock,
        }),
    ) {
        nlm::Results::Test(result) => result.reply,
        other => panic!("{other:?}"),
    }
}

fn unlock<F: FileSystem>(client: &mut Client<F>, lock: nlm::Lock) -> NlmStatus {
    match call(
        client,
        0,
        nlm::Arguments::Unlock(nlm::UnlockArguments {
            cookie: Vec::new(),
            lock,
        }),
    ) {
        nlm::Results::Unlock(result) => result.status,
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_clients_exclude_each_other_until_unlock_session_end_or_free_all() {
    let mut client = Client::new(common::volume(4096), &["/,no_root_squash"]);
    let root = client.root();
    let file = client.create(&root, b"shared").unwrap();
    let first = client.server.begin_session();
    let second = client.server.begin_session();
    assert_ne!(first, second);

    // A writes 0..100; B cannot have any of it, shared or exclusive.
    let a = |offset, length| lock_of(b"guest-a", &file, 10, offset, length);
    let b = |offset, length| lock_of(b"guest-b", &file, 20, offset, length);
    assert_eq!(
        lock(&mut client, first, a(0, 100), true, false),
        NlmStatus::Granted
    );
    assert_eq!(
        lock(&mut client, second, b(50, 10), false, false),
        NlmStatus::Denied
    );
    // A blocking request is told to wait (and asks again).
    assert_eq!(
        lock(&mut client, second, b(50, 10), true, true),
        NlmStatus::Blocked
    );
    match test(&mut client, b(99, 0), false) {
        TestReply::Denied(holder) => {
            assert!(holder.exclusive);
            assert_eq!(holder.svid, 10);
            assert_eq!((holder.offset, holder.length), (0, 100));
            assert_eq!(holder.owner, 10i32.to_be_bytes());
        }
        other => panic!("{other:?}"),
    }
    // Beyond A's range B is free; A's own TEST sees no conflict.
    assert_eq!(
        lock(&mut client, second, b(100, 0), true, false),
        NlmStatus::Granted
    );
    assert_eq!(
        test(&mut client, a(0, 100), true),
        TestReply::Status(NlmStatus::Granted)
    );

    // A unlocks part: B gets that part only.
    assert_eq!(unlock(&mut client, a(0, 50)), NlmStatus::Granted);
    assert_eq!(
        lock(&mut client, second, b(0, 50), true, false),
        NlmStatus::Granted
    );
    assert_eq!(
        lock(&mut client, second, b(50, 10), true, false),
        NlmStatus::Denied
    );

    // A's session ends (the guest went): its locks go, B's stay.
    client.server.end_session(first);
    assert_eq!(
        lock(&mut client, second, b(50, 10), true, false),
        NlmStatus::Granted
    );
    // B's 0..50 and 50..60 merged; 100.. stays apart.
    let mut held: Vec<_> = client
        .server
        .locks()
        .iter()
        .map(|held| (held.start, held.end))
        .collect();
    held.sort();
    assert_eq!(held, [(0, 60), (100, u64::MAX)]);

    // FREE_ALL of B's host releases B's locks, whatever the session.
    let free = call(
        &mut client,
        0,
        nlm::Arguments::FreeAll(nlm::Notify {
            name: b"guest-b".to_vec(),
            state: 2,
        }),
    );
    assert_eq!(free, nlm::Results::FreeAll(()));
    assert!(client.server.locks().is_empty());
    assert_eq!(client.server.statistics().lock_calls, 11);
}

#[test]
fn stale_and_foreign_handles_are_refused() {
    let mut client = Client::new(common::volume(4096), &["/,no_root_squash"]);
    let root = client.root();
    let file = client.create(&root, b"gone").unwrap();
    client.remove(&root, b"gone").unwrap();
    let session = client.server.begin_session();
    assert_eq!(
        lock(
            &mut client,
            session,
            lock_of(b"g", &file, 1, 0, 0),
            true,
            false
        ),
        NlmStatus::StaleHandle
    );
    let forged = FileHandle(vec![0u8; 32]);
    assert_eq!(
        lock(
            &mut client,
            session,
            lock_of(b"g", &forged, 1, 0, 0),
            true,
            false
        ),
        NlmStatus::StaleHandle
    );
    assert!(client.server.locks().is_empty());
    let _: Option<&Server<sdfs::Volume<sdfs::device::MemoryDevice>>> = None;
}
