//! The client against a fake xenstored on a socket pair.

use super::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use xen_abi::xs_wire::{MessageHeader, HEADER_SIZE};

/// The daemon's end: reads requests, writes replies and events.
struct FakeDaemon {
    stream: UnixStream,
}

/// A request as the daemon saw it.
#[derive(Debug)]
struct Seen {
    header: MessageHeader,
    payload: Vec<u8>,
}

impl FakeDaemon {
    fn receive(&mut self) -> Seen {
        let mut head = [0u8; HEADER_SIZE];
        self.stream.read_exact(&mut head).unwrap();
        let header = MessageHeader::decode(&head).unwrap();
        let mut payload = vec![0u8; header.len as usize];
        self.stream.read_exact(&mut payload).unwrap();
        Seen { header, payload }
    }

    /// Receives a request and checks its type, transaction and payload.
    fn expect(&mut self, message_type: MessageType, transaction: u32, payload: &[u8]) -> Seen {
        let seen = self.receive();
        assert_eq!(
            MessageType::from_number(seen.header.message_type),
            message_type
        );
        assert_eq!(seen.header.transaction_id, transaction);
        assert_eq!(
            seen.payload,
            payload,
            "payload {:?}",
            String::from_utf8_lossy(&seen.payload)
        );
        seen
    }

    fn send(&mut self, message_type: u32, request_id: u32, payload: &[u8]) {
        let header = MessageHeader {
            message_type,
            request_id,
            transaction_id: 0,
            len: payload.len() as u32,
        };
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(payload);
        self.stream.write_all(&bytes).unwrap();
    }

    fn reply(&mut self, to: &Seen, payload: &[u8]) {
        self.send(to.header.message_type, to.header.request_id, payload);
    }

    fn error(&mut self, to: &Seen, name: &str) {
        self.send(
            MessageType::Error.number(),
            to.header.request_id,
            &nul_terminated(name),
        );
    }

    /// Stays connected until the client hangs up.
    fn wait_for_hangup(&mut self) {
        let mut byte = [0u8; 1];
        assert_eq!(self.stream.read(&mut byte).unwrap(), 0);
    }

    fn event(&mut self, path: &str, token: &str) {
        let mut payload = nul_terminated(path);
        payload.extend(nul_terminated(token));
        self.send(MessageType::WatchEvent.number(), 0, &payload);
    }
}

/// A client and a daemon thread running `script`.
fn with_daemon(
    script: impl FnOnce(&mut FakeDaemon) + Send + 'static,
) -> (Xenstore, thread::JoinHandle<()>) {
    let (client, daemon) = UnixStream::pair().unwrap();
    let handle = thread::spawn(move || script(&mut FakeDaemon { stream: daemon }));
    (Xenstore::from_connection(client.into()), handle)
}

#[test]
fn read_write_mkdir_remove_directory_are_framed_and_matched() {
    let (store, daemon) = with_daemon(|daemon| {
        let seen = daemon.expect(MessageType::Read, 0, b"/a/b\0");
        assert_eq!(seen.header.request_id, 1);
        daemon.reply(&seen, b"value");
        let seen = daemon.expect(MessageType::Read, 0, b"/a/missing\0");
        assert_eq!(seen.header.request_id, 2);
        daemon.error(&seen, "ENOENT");
        let seen = daemon.expect(MessageType::Write, 0, b"/a/b\0new");
        daemon.reply(&seen, b"OK\0");
        let seen = daemon.expect(MessageType::MakeDirectory, 0, b"/a/dir\0");
        daemon.reply(&seen, b"OK\0");
        let seen = daemon.expect(MessageType::Remove, 0, b"/a/dir\0");
        daemon.reply(&seen, b"OK\0");
        let seen = daemon.expect(MessageType::Directory, 0, b"/a\0");
        daemon.reply(&seen, b"b\0dir\0");
    });
    assert_eq!(store.read_string("/a/b").unwrap().as_deref(), Some("value"));
    assert_eq!(store.read_string("/a/missing").unwrap(), None);
    store.write("/a/b", b"new").unwrap();
    store.mkdir("/a/dir").unwrap();
    store.remove("/a/dir").unwrap();
    assert_eq!(store.directory("/a").unwrap(), ["b", "dir"]);
    daemon.join().unwrap();
}

#[test]
fn errors_carry_the_errno_name_operation_and_path() {
    let (store, daemon) = with_daemon(|daemon| {
        let seen = daemon.expect(MessageType::Write, 0, b"/local/domain/3/x\0v");
        daemon.error(&seen, "EACCES");
        let seen = daemon.expect(MessageType::Directory, 0, b"/nope\0");
        daemon.error(&seen, "ENOENT");
        let seen = daemon.expect(MessageType::Read, 0, b"/odd\0");
        daemon.error(&seen, "EWHATEVER");
    });
    let error = store.write("/local/domain/3/x", b"v").unwrap_err();
    assert_eq!(error.errno(), Some(&XenstoreErrno::PermissionDenied));
    assert_eq!(
        error.to_string(),
        "xenstore write /local/domain/3/x: EACCES (permission denied)"
    );
    let error = store.directory("/nope").unwrap_err();
    assert!(error.is_not_found());
    let error = store.read_string("/odd").unwrap_err();
    assert_eq!(
        error.errno(),
        Some(&XenstoreErrno::Other("EWHATEVER".into()))
    );
    assert!(error.to_string().contains("EWHATEVER"));
    daemon.join().unwrap();
}

#[test]
fn errno_names_round_trip() {
    for name in [
        "EINVAL",
        "EACCES",
        "EEXIST",
        "EISDIR",
        "ENOENT",
        "ENOMEM",
        "ENOSPC",
        "EIO",
        "ENOTEMPTY",
        "ENOSYS",
        "EROFS",
        "EBUSY",
        "EAGAIN",
        "EISCONN",
        "E2BIG",
        "EPERM",
    ] {
        let errno = XenstoreErrno::from_name(name);
        assert!(!matches!(errno, XenstoreErrno::Other(_)), "{name}");
        assert_eq!(errno.name(), name);
    }
}

#[test]
fn permissions_are_encoded_and_parsed() {
    let (store, daemon) = with_daemon(|daemon| {
        let seen = daemon.expect(MessageType::SetPermissions, 0, b"/p\0n5\0r1\0");
        daemon.reply(&seen, b"OK\0");
        let seen = daemon.expect(MessageType::GetPermissions, 0, b"/p\0");
        daemon.reply(&seen, b"n5\0r1\0");
        let seen = daemon.expect(MessageType::GetPermissions, 0, b"/bad\0");
        daemon.reply(&seen, b"q5\0");
    });
    let permissions = [
        Permission {
            domain: 5,
            access: Access::None,
        },
        Permission {
            domain: 1,
            access: Access::Read,
        },
    ];
    store.set_permissions("/p", &permissions).unwrap();
    assert_eq!(store.get_permissions("/p").unwrap(), permissions);
    assert!(matches!(
        store.get_permissions("/bad"),
        Err(XenstoreError::Protocol(ProtocolError::MalformedPermissions))
    ));
    daemon.join().unwrap();
}

#[test]
fn watch_events_between_replies_are_queued() {
    let (store, daemon) = with_daemon(|daemon| {
        let seen = daemon.expect(MessageType::Watch, 0, b"/w\0tok\0");
        daemon.reply(&seen, b"OK\0");
        daemon.event("/w", "tok");
        let seen = daemon.expect(MessageType::Read, 0, b"/w/state\0");
        // Two events, split across writes, before the reply.
        daemon.event("/w/state", "tok");
        daemon.event("/other", "other-token");
        daemon.reply(&seen, b"4");
        let seen = daemon.expect(MessageType::Unwatch, 0, b"/other\0other-token\0");
        daemon.event("/other/x", "other-token");
        daemon.reply(&seen, b"OK\0");
        daemon.wait_for_hangup();
    });
    store.watch("/w", "tok").unwrap();
    assert_eq!(store.read_string("/w/state").unwrap().as_deref(), Some("4"));
    let first = store
        .next_watch_event(Some("tok"), Some(Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    assert_eq!(first.path, "/w");
    let second = store
        .next_watch_event(Some("tok"), Some(Duration::ZERO))
        .unwrap()
        .unwrap();
    assert_eq!(second.path, "/w/state");
    assert_eq!(
        store
            .next_watch_event(Some("tok"), Some(Duration::from_millis(50)))
            .unwrap(),
        None
    );
    // Unwatching drops the token's queued events.
    store.unwatch("/other", "other-token").unwrap();
    assert_eq!(
        store
            .next_watch_event(None, Some(Duration::from_millis(50)))
            .unwrap(),
        None
    );
    drop(store);
    daemon.join().unwrap();
}

#[test]
fn a_waiter_sees_an_event_another_thread_took_off_the_connection() {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (store, daemon) = with_daemon(move |daemon| {
        released.recv().unwrap();
        let seen = daemon.expect(MessageType::Read, 0, b"/x\0");
        daemon.event("/watched", "t");
        daemon.reply(&seen, b"1");
    });
    let store = std::sync::Arc::new(store);
    let waiter = {
        let store = std::sync::Arc::clone(&store);
        thread::spawn(move || store.next_watch_event(Some("t"), Some(Duration::from_secs(10))))
    };
    thread::sleep(Duration::from_millis(20));
    release.send(()).unwrap();
    assert_eq!(store.read_string("/x").unwrap().as_deref(), Some("1"));
    let event = waiter.join().unwrap().unwrap().unwrap();
    assert_eq!(event.path, "/watched");
    daemon.join().unwrap();
}

#[test]
fn transaction_runs_again_on_eagain_and_aborts_on_error() {
    let (store, daemon) = with_daemon(|daemon| {
        for (id, commit_answer) in [(11, Some("EAGAIN")), (12, None)] {
            let seen = daemon.expect(MessageType::TransactionStart, 0, b"\0");
            daemon.reply(&seen, format!("{id}\0").as_bytes());
            let seen = daemon.expect(MessageType::Write, id, b"/t\0v");
            daemon.reply(&seen, b"OK\0");
            let seen = daemon.expect(MessageType::TransactionEnd, id, b"T\0");
            match commit_answer {
                Some(name) => daemon.error(&seen, name),
                None => daemon.reply(&seen, b"OK\0"),
            }
        }
        let seen = daemon.expect(MessageType::TransactionStart, 0, b"\0");
        daemon.reply(&seen, b"13\0");
        let seen = daemon.expect(MessageType::TransactionEnd, 13, b"F\0");
        daemon.reply(&seen, b"OK\0");
    });
    let mut runs = 0;
    let value = store
        .transaction(|transaction| -> std::result::Result<u32, XenstoreError> {
            runs += 1;
            transaction.write("/t", b"v")?;
            Ok(transaction.id())
        })
        .unwrap();
    assert_eq!((runs, value), (2, 12));
    #[derive(Debug)]
    enum Refusal {
        Store,
        AlreadyThere,
    }
    impl From<XenstoreError> for Refusal {
        fn from(_: XenstoreError) -> Self {
            Refusal::Store
        }
    }
    let refused =
        store.transaction(|_| -> std::result::Result<(), Refusal> { Err(Refusal::AlreadyThere) });
    assert!(matches!(refused, Err(Refusal::AlreadyThere)));
    daemon.join().unwrap();
}

#[test]
fn domain_helpers() {
    let (store, daemon) = with_daemon(|daemon| {
        let seen = daemon.expect(MessageType::Read, 0, b"domid\0");
        daemon.reply(&seen, b"3");
        let seen = daemon.expect(MessageType::GetDomainPath, 0, b"7\0");
        daemon.reply(&seen, b"/local/domain/7\0");
        let seen = daemon.expect(MessageType::Directory, 0, b"/local/domain\0");
        daemon.reply(&seen, b"0\x003\x007\0");
        let seen = daemon.expect(MessageType::Read, 0, b"/local/domain/0/name\0");
        daemon.reply(&seen, b"Domain-0");
        let seen = daemon.expect(MessageType::Read, 0, b"/local/domain/3/name\0");
        daemon.error(&seen, "ENOENT");
        let seen = daemon.expect(MessageType::Read, 0, b"/local/domain/7/name\0");
        daemon.reply(&seen, b"storage-domain");
    });
    assert_eq!(store.domain_id().unwrap(), 3);
    assert_eq!(store.domain_path(7).unwrap(), "/local/domain/7");
    assert_eq!(store.domain_id_by_name("storage-domain").unwrap(), Some(7));
    daemon.join().unwrap();
}

#[test]
fn protocol_breaks_are_errors_not_hangs() {
    let (store, daemon) = with_daemon(|daemon| {
        let seen = daemon.expect(MessageType::Read, 0, b"/a\0");
        daemon.send(seen.header.message_type, seen.header.request_id + 5, b"x");
        // The next request: answered with the wrong type.
        let seen = daemon.receive();
        daemon.send(MessageType::Write.number(), seen.header.request_id, b"OK\0");
        // Then the daemon goes away.
        let _ = daemon.receive();
    });
    assert!(matches!(
        store.read_string("/a"),
        Err(XenstoreError::Protocol(
            ProtocolError::UnexpectedRequestId { .. }
        ))
    ));
    assert!(matches!(
        store.read_string("/b"),
        Err(XenstoreError::Protocol(
            ProtocolError::UnexpectedType { .. }
        ))
    ));
    let closed = store.read_string("/c");
    daemon.join().unwrap();
    assert!(matches!(closed, Err(XenstoreError::Closed)), "{closed:?}");
}

#[test]
fn oversize_requests_are_refused_before_sending() {
    let (store, daemon) = with_daemon(|_| {});
    let long = "v".repeat(5000);
    let error = store.write("/k", long.as_bytes()).unwrap_err();
    assert!(matches!(error, XenstoreError::RequestTooLong { .. }));
    assert!(error
        .to_string()
        .starts_with("xenstore write /k: request too long"));
    daemon.join().unwrap();
}
