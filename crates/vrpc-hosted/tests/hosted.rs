//! The hosted transport end to end: real memfds, eventfds and a unix
//! socket between threads (and processes, for the peer-death tests).

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use metatab::{handle_digest, Lookup};
use vrpc::layout::{HEADER_SIZE, REQUEST_PRODUCER, REQUEST_RECORD_LENGTH};
use vrpc::{RingParameters, SharedMemory, DEFAULT_MAX_RECORD};
use vrpc_hosted::doorbell::EventDoorbell;
use vrpc_hosted::handshake::{receive_welcome, send_hello, Status};
use vrpc_hosted::{connect, CallError, Client, ConnectionError, Listener, MappedRegion};

fn socket_path(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let number = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "vrpc-test-{}-{name}-{number}.sock",
        std::process::id()
    ))
}

/// A minimal call record: xid, CALL, RPC 2, program 7, version 1,
/// procedure, AUTH_NONE twice, then `body`.
fn call_record(xid: u32, procedure: u32, body: &[u8]) -> Vec<u8> {
    let mut record = Vec::new();
    for word in [xid, 0, 2, 7, 1, procedure, 0, 0, 0, 0] {
        record.extend_from_slice(&word.to_be_bytes());
    }
    record.extend_from_slice(body);
    record
}

/// The test server's answer: "REPLY" marker, then the call's body, then
/// `procedure` extra bytes (so a caller can ask for a big reply).
fn answer(call: &[u8]) -> Vec<u8> {
    let mut reply = call.to_vec();
    reply[4..8].copy_from_slice(&1u32.to_be_bytes());
    let extra = u32::from_be_bytes([call[20], call[21], call[22], call[23]]) as usize;
    reply.extend((0..extra).map(|i| (i % 251) as u8));
    reply
}

/// Serves every connection on its own thread; counts connections that
/// ended in a protocol error.
fn spawn_server(
    path: &PathBuf,
) -> (
    Arc<AtomicUsize>,
    Arc<MappedRegion>,
    metatab::Writer<Arc<MappedRegion>>,
) {
    let listener = Listener::bind(path).unwrap();
    let (table, writer) = vrpc_hosted::create_metadata_table(64, 0xb007).unwrap();
    let protocol_errors = Arc::new(AtomicUsize::new(0));
    let errors = Arc::clone(&protocol_errors);
    let shared_table = Arc::clone(&table);
    thread::spawn(move || loop {
        let Ok(incoming) = listener.accept() else {
            return;
        };
        let (errors, table) = (Arc::clone(&errors), Arc::clone(&shared_table));
        thread::spawn(move || {
            let Ok(pending) = incoming.handshake(Duration::from_secs(5)) else {
                errors.fetch_add(1, Ordering::SeqCst);
                return;
            };
            if pending.export() != "/export" {
                let _ = pending.refuse();
                return;
            }
            let connection = pending.accept(Some(&table), DEFAULT_MAX_RECORD).unwrap();
            match connection.serve(|call| Some(answer(call))) {
                Ok(()) => {}
                Err(_) => {
                    errors.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    });
    (protocol_errors, table, writer)
}

#[test]
fn calls_round_trip_with_payloads_and_the_metadata_table() {
    let path = socket_path("round-trip");
    let (_, _table, mut writer) = spawn_server(&path);
    let client = connect(&path, "/export").unwrap();
    // Small call; the caller's xid comes back.
    let call = call_record(0xdead_beef, 0, b"hello...");
    let reply = client.call(&call, &[], 0).unwrap();
    assert_eq!(reply, answer(&call));
    // A reply of 100 KiB: the tail comes back through the data pages.
    let call = call_record(5, 100_000, b"");
    let reply = client.call(&call, &[], 100_000).unwrap();
    assert_eq!(reply, answer(&call));
    // Too little read capacity: refused, the connection survives.
    assert_eq!(
        client.call(&call, &[], 10_000),
        Err(CallError::ReplyTooLarge)
    );
    // A 300 KiB write payload spliced into the trailing opaque.
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 31) as u8).collect();
    let call = call_record(6, 0, &[0, 0, 0, 0]);
    let reply = client.call(&call, &payload, 310_000).unwrap();
    let mut expected_call = call_record(6, 0, &(payload.len() as u32).to_be_bytes());
    expected_call.extend_from_slice(&payload);
    assert_eq!(reply, answer(&expected_call));
    assert_eq!(
        client.call(&call_record(7, 0, b"no opaque"), b"data", 0),
        Err(CallError::NoPayloadField)
    );
    // The metadata table is shared read-only.
    let table = client.metadata_table().expect("server shares a table");
    assert_eq!(table.boot_id(), 0xb007);
    let digest = handle_digest(b"handle");
    assert_eq!(table.lookup(9, digest).unwrap(), Lookup::Miss);
    let entry = metatab::Entry {
        file_id: 9,
        handle_digest: digest,
        attributes: nfs3::FileAttributes {
            file_type: nfs3::FileType::Regular,
            mode: 0o644,
            link_count: 1,
            uid: 1000,
            gid: 1000,
            size: 12,
            used: 4096,
            device: Default::default(),
            file_system_id: 1,
            file_id: 9,
            access_time: Default::default(),
            modify_time: Default::default(),
            change_time: Default::default(),
        },
        change: 1,
    };
    writer.publish(&entry).unwrap();
    assert_eq!(table.lookup(9, digest).unwrap(), Lookup::Hit(entry));
}

#[test]
fn unknown_export_is_refused() {
    let path = socket_path("refused");
    let _server = spawn_server(&path);
    match connect(&path, "/elsewhere") {
        Err(vrpc_hosted::ConnectError::Refused(Status::ExportRefused)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_server_learns_the_peers_credentials_and_may_refuse_them() {
    let path = socket_path("credentials");
    let listener = Listener::bind(&path).unwrap();
    let server = thread::spawn(move || {
        let pending = listener
            .accept()
            .unwrap()
            .handshake(Duration::from_secs(5))
            .unwrap();
        let peer = pending.peer();
        pending.refuse_peer().unwrap();
        peer
    });
    match connect(&path, "/export") {
        Err(vrpc_hosted::ConnectError::Refused(Status::NotAdmitted)) => {}
        other => panic!("expected a refusal of this user, got {other:?}"),
    }
    let peer = server.join().unwrap();
    assert_eq!(peer.pid, std::process::id() as i32);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = |key: &str| -> u32 {
        let line = status.lines().find(|line| line.starts_with(key)).unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    assert_eq!(peer.uid, effective("Uid:"));
    assert_eq!(peer.gid, effective("Gid:"));
    assert_eq!(
        Status::from_wire(Status::NotAdmitted.to_wire()),
        Some(Status::NotAdmitted)
    );
}

#[test]
fn many_threads_many_in_flight_out_of_order() {
    let path = socket_path("threads");
    let listener = Listener::bind(&path).unwrap();
    // A server that gathers what is in flight and answers newest first.
    let server = thread::spawn(move || {
        let pending = listener
            .accept()
            .unwrap()
            .handshake(Duration::from_secs(5))
            .unwrap();
        let mut connection = pending.accept(None, DEFAULT_MAX_RECORD).unwrap();
        let mut most_in_flight = 0;
        loop {
            let first = match connection.next_request(None) {
                Ok(Some(request)) => request,
                Ok(None) => continue,
                Err(ConnectionError::Closed) => return most_in_flight,
                Err(error) => panic!("{error}"),
            };
            // Let the other callers catch up, then take everything.
            thread::sleep(Duration::from_millis(1));
            let mut batch = vec![first];
            while let Some(request) = connection.try_next_request().unwrap() {
                batch.push(request);
            }
            most_in_flight = most_in_flight.max(batch.len());
            while let Some(request) = batch.pop() {
                let reply = answer(request.record());
                connection.respond(request, &reply, None).unwrap();
            }
        }
    });
    let parameters = RingParameters {
        slot_count: 8,
        slot_size: 512,
        pool_pages: 64,
    };
    let client = Client::connect(&path, "/export", parameters).unwrap();
    thread::scope(|scope| {
        for caller in 0..12u32 {
            let client = &client;
            scope.spawn(move || {
                for round in 0..150u32 {
                    let size = (caller * 977 + round * 131) % 20_000;
                    let call = call_record(caller << 16 | round, size, &caller.to_be_bytes());
                    let reply = client.call(&call, &[], 20_000).unwrap();
                    assert_eq!(reply, answer(&call), "caller {caller} round {round}");
                }
            });
        }
    });
    drop(client);
    let most_in_flight = server.join().unwrap();
    assert!(
        most_in_flight > 1,
        "several calls were in flight at once ({most_in_flight})"
    );
}

#[test]
fn client_sees_a_server_that_goes_away_mid_request() {
    let path = socket_path("server-dies");
    let listener = Listener::bind(&path).unwrap();
    let server = thread::spawn(move || {
        let pending = listener
            .accept()
            .unwrap()
            .handshake(Duration::from_secs(5))
            .unwrap();
        let mut connection = pending.accept(None, DEFAULT_MAX_RECORD).unwrap();
        let request = connection.next_request(None).unwrap().unwrap();
        // Dies holding the request: the connection (socket, mappings) goes.
        drop(request);
        drop(connection);
    });
    let client = connect(&path, "/export").unwrap();
    assert_eq!(
        client.call(&call_record(1, 0, b""), &[], 0),
        Err(CallError::Disconnected)
    );
    assert_eq!(
        client.call(&call_record(2, 0, b""), &[], 0),
        Err(CallError::Disconnected)
    );
    assert!(!client.is_connected());
    server.join().unwrap();
}

#[test]
fn server_sees_a_client_that_goes_away_mid_request() {
    let path = socket_path("client-dies");
    let listener = Listener::bind(&path).unwrap();
    let client_thread = {
        let path = path.clone();
        thread::spawn(move || {
            let client = Arc::new(connect(&path, "/export").unwrap());
            let caller = {
                let client = Arc::clone(&client);
                thread::spawn(move || client.call(&call_record(1, 0, b""), &[], 0))
            };
            thread::sleep(Duration::from_millis(100));
            client.close();
            caller.join().unwrap()
        })
    };
    let mut connection = accept_one(&listener);
    let request = connection.next_request(None).unwrap().unwrap();
    assert_eq!(client_thread.join().unwrap(), Err(CallError::Disconnected));
    // Answering a departed guest is harmless; the next wait reports it.
    connection.respond(request, b"late reply", None).unwrap();
    assert!(matches!(
        connection.next_request(Some(Duration::from_secs(10))),
        Err(ConnectionError::Closed)
    ));
}

/// The next guest of `listener`, handshake done and accepted.
fn accept_one(listener: &Listener) -> vrpc_hosted::Connection {
    let pending = listener
        .accept()
        .unwrap()
        .handshake(Duration::from_secs(5))
        .unwrap();
    pending.accept(None, DEFAULT_MAX_RECORD).unwrap()
}

/// A waker makes a waiting `next_request` return `Ok(None)` at once; a
/// request the guest publishes afterwards is still taken, and the guest's
/// own doorbell never reads as a wake.
#[test]
fn a_waker_ends_a_wait_without_losing_requests() {
    let path = socket_path("waker");
    let listener = Listener::bind(&path).unwrap();
    let (go, called) = std::sync::mpsc::channel::<()>();
    let client_thread = {
        let path = path.clone();
        thread::spawn(move || {
            let client = connect(&path, "/export").unwrap();
            called.recv().unwrap();
            client.call(&call_record(1, 0, b"after"), &[], 0)
        })
    };
    let mut connection = accept_one(&listener);
    let waker = connection.waker().unwrap();
    let started = std::time::Instant::now();
    let waking = {
        let waker = waker.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            waker.wake();
        })
    };
    assert!(matches!(
        connection.next_request(Some(Duration::from_secs(30))),
        Ok(None)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "woken, not timed out"
    );
    waking.join().unwrap();
    go.send(()).unwrap();
    let request = connection
        .next_request(Some(Duration::from_secs(30)))
        .unwrap()
        .expect("the guest's request, not a wake");
    assert_eq!(&request.record()[request.record().len() - 5..], b"after");
    connection.respond(request, b"reply", None).unwrap();
    assert_eq!(client_thread.join().unwrap().unwrap(), b"reply");
}

/// A guest driven by hand: real regions and doorbells, raw handshake.
struct RawGuest {
    stream: std::os::unix::net::UnixStream,
    ring: MappedRegion,
    _pool: MappedRegion,
    requests: EventDoorbell,
    _responses: EventDoorbell,
}

fn raw_guest(path: &PathBuf, parameters: RingParameters) -> Result<RawGuest, Status> {
    let stream = std::os::unix::net::UnixStream::connect(path).unwrap();
    let ring = MappedRegion::create("ring", parameters.ring_bytes()).unwrap();
    let pool = MappedRegion::create("pool", parameters.pool_bytes()).unwrap();
    let requests = EventDoorbell::new().unwrap();
    let responses = EventDoorbell::new().unwrap();
    // A proper header, so the handshake passes; the garbage comes later.
    let doorbell = vrpc::CountingDoorbell::new();
    drop(vrpc::Frontend::new(&ring, &pool, &doorbell, parameters).unwrap());
    send_hello(
        &stream,
        parameters,
        "/export",
        [ring.file(), pool.file(), requests.file(), responses.file()],
    )
    .unwrap();
    let (status, _) = receive_welcome(&stream).unwrap();
    if status != Status::Accepted {
        return Err(status);
    }
    Ok(RawGuest {
        stream,
        ring,
        _pool: pool,
        requests,
        _responses: responses,
    })
}

#[test]
fn hostile_guest_is_dropped_and_others_keep_being_served() {
    let path = socket_path("hostile");
    let (protocol_errors, _table, _writer) = spawn_server(&path);
    let honest = connect(&path, "/export").unwrap();
    let parameters = RingParameters {
        slot_count: 4,
        slot_size: 512,
        pool_pages: 4,
    };
    let garbage: [&dyn Fn(&MappedRegion); 4] = [
        &|ring| {
            ring.store_u32(REQUEST_PRODUCER, 77, Ordering::Release)
                .unwrap()
        },
        &|ring| {
            ring.store_u32(
                HEADER_SIZE + REQUEST_RECORD_LENGTH,
                u32::MAX,
                Ordering::Relaxed,
            )
            .unwrap();
            ring.store_u32(REQUEST_PRODUCER, 1, Ordering::Release)
                .unwrap();
        },
        &|ring| {
            // A descriptor far outside the 4-page pool.
            ring.store_u32(HEADER_SIZE + 20, 1, Ordering::Relaxed)
                .unwrap();
            ring.write(
                HEADER_SIZE + 32,
                &vrpc::Descriptor {
                    page: 1 << 30,
                    offset: 0,
                    length: 4096,
                }
                .to_bytes(),
            )
            .unwrap();
            ring.store_u32(HEADER_SIZE + 16, 4096, Ordering::Relaxed)
                .unwrap();
            ring.store_u32(REQUEST_PRODUCER, 1, Ordering::Release)
                .unwrap();
        },
        &|ring| {
            let mut state = 0x1234_5678_u32;
            for offset in (HEADER_SIZE..ring.size()).step_by(4) {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                ring.store_u32(offset, state, Ordering::Relaxed).unwrap();
            }
            ring.store_u32(REQUEST_PRODUCER, 3, Ordering::Release)
                .unwrap();
        },
    ];
    for (number, scribble) in garbage.iter().enumerate() {
        let guest = raw_guest(&path, parameters).unwrap();
        scribble(&guest.ring);
        vrpc::Doorbell::notify(&guest.requests);
        // The server hangs up on this guest: its socket reaches EOF.
        guest
            .stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            std::io::Read::read(&mut &guest.stream, &mut byte).unwrap(),
            0,
            "garbage {number}: server hung up"
        );
        // The server thread counts the error just after hanging up.
        let mut waited = 0;
        while protocol_errors.load(Ordering::SeqCst) < number + 1 && waited < 1000 {
            thread::sleep(Duration::from_millis(10));
            waited += 1;
        }
        assert_eq!(
            protocol_errors.load(Ordering::SeqCst),
            number + 1,
            "garbage {number}: a protocol error"
        );
        // The honest guest is still served.
        let call = call_record(number as u32, 3000, b"still here");
        assert_eq!(honest.call(&call, &[], 4096).unwrap(), answer(&call));
    }
}

#[test]
fn bad_handshakes_are_refused() {
    let path = socket_path("handshakes");
    let (_, _table, _writer) = spawn_server(&path);
    // Out-of-bounds parameters.
    let bad = RingParameters {
        slot_count: 3,
        slot_size: 512,
        pool_pages: 4,
    };
    let stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let region = MappedRegion::create("region", 8192).unwrap();
    let bell = EventDoorbell::new().unwrap();
    send_hello(
        &stream,
        bad,
        "/export",
        [region.file(), region.file(), bell.file(), bell.file()],
    )
    .unwrap();
    assert_eq!(receive_welcome(&stream).unwrap().0, Status::BadParameters);
    // Unsealed memfd: the guest could truncate it under the server.
    let parameters = RingParameters {
        slot_count: 4,
        slot_size: 512,
        pool_pages: 4,
    };
    let unsealed =
        nix::sys::memfd::memfd_create("unsealed", nix::sys::memfd::MFdFlags::empty()).unwrap();
    std::fs::File::from(unsealed.try_clone().unwrap())
        .set_len(65536)
        .unwrap();
    let stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    send_hello(
        &stream,
        parameters,
        "/export",
        [unsealed.as_fd(), region.file(), bell.file(), bell.file()],
    )
    .unwrap();
    assert_eq!(receive_welcome(&stream).unwrap().0, Status::BadRegions);
    // A doorbell that is not an eventfd.
    let (pipe_read, _pipe_write) = nix::unistd::pipe().unwrap();
    let ring = MappedRegion::create("ring", parameters.ring_bytes()).unwrap();
    let pool = MappedRegion::create("pool", parameters.pool_bytes()).unwrap();
    let stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    send_hello(
        &stream,
        parameters,
        "/export",
        [ring.file(), pool.file(), pipe_read.as_fd(), bell.file()],
    )
    .unwrap();
    assert_eq!(receive_welcome(&stream).unwrap().0, Status::BadRegions);
    // Regions smaller than the parameters say.
    let stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let big = RingParameters {
        slot_count: 64,
        slot_size: 4096,
        pool_pages: 4,
    };
    send_hello(
        &stream,
        big,
        "/export",
        [ring.file(), pool.file(), bell.file(), bell.file()],
    )
    .unwrap();
    assert_eq!(receive_welcome(&stream).unwrap().0, Status::BadRegions);
    // A ring without a header (the frontend never initialised it).
    let stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    send_hello(
        &stream,
        parameters,
        "/export",
        [ring.file(), pool.file(), bell.file(), bell.file()],
    )
    .unwrap();
    assert_eq!(receive_welcome(&stream).unwrap().0, Status::BadRegions);
    // Garbage instead of a hello, then silence: the server gives up on it.
    let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    std::io::Write::write_all(&mut stream, b"GET / HTTP/1.0\r\n").unwrap();
    drop(stream);
    // The server still works.
    let client = connect(&path, "/export").unwrap();
    let call = call_record(1, 0, b"");
    assert_eq!(client.call(&call, &[], 0).unwrap(), answer(&call));
}

#[test]
fn guests_cannot_write_the_metadata_table() {
    let (table, mut writer) = vrpc_hosted::create_metadata_table(16, 3).unwrap();
    let received = table.file().try_clone_to_owned().unwrap();
    // Mapping it writable is refused by the seal.
    assert!(MappedRegion::map_received(received.try_clone().unwrap(), table.size(), true).is_err());
    assert!(
        nix::unistd::write(&received, b"x").is_err(),
        "write(2) refused too"
    );
    let guest_view = MappedRegion::map_received(received, table.size(), false).unwrap();
    assert!(guest_view.store_u32(0, 1, Ordering::Relaxed).is_err());
    // The server's own mapping stays writable, and the guest sees updates.
    let reader = metatab::Reader::attach(&guest_view).unwrap();
    let entry = metatab::Entry {
        file_id: 1,
        handle_digest: 2,
        attributes: nfs3::FileAttributes {
            file_type: nfs3::FileType::Directory,
            mode: 0o755,
            link_count: 2,
            uid: 0,
            gid: 0,
            size: 4096,
            used: 4096,
            device: Default::default(),
            file_system_id: 1,
            file_id: 1,
            access_time: Default::default(),
            modify_time: Default::default(),
            change_time: Default::default(),
        },
        change: 5,
    };
    writer.publish(&entry).unwrap();
    assert_eq!(reader.lookup(1, 2).unwrap(), Lookup::Hit(entry));
}

#[test]
fn metadata_table_stress_across_two_mappings_never_tears() {
    let (table, mut writer) = vrpc_hosted::create_metadata_table(4, 9).unwrap();
    let guest_view = MappedRegion::map_received(
        table.file().try_clone_to_owned().unwrap(),
        table.size(),
        false,
    )
    .unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let hits = AtomicUsize::new(0);
    let entry = |file_id: u64, generation: u32| metatab::Entry {
        file_id,
        handle_digest: file_id * 3,
        attributes: nfs3::FileAttributes {
            file_type: nfs3::FileType::Regular,
            mode: generation,
            link_count: !generation,
            uid: generation.rotate_left(3),
            gid: generation ^ 0xffff,
            size: u64::from(generation) << 32 | u64::from(generation),
            used: u64::from(generation) * 7,
            device: Default::default(),
            file_system_id: 1,
            file_id,
            access_time: nfs3::Time {
                seconds: generation,
                nanoseconds: generation % 1000,
            },
            modify_time: Default::default(),
            change_time: Default::default(),
        },
        change: u64::from(generation),
    };
    thread::scope(|scope| {
        scope.spawn(|| {
            let reader = metatab::Reader::attach(&guest_view).unwrap();
            while !done.load(Ordering::Relaxed) {
                for file in 0..6u64 {
                    if let Lookup::Hit(found) = reader.lookup(file, file * 3).unwrap() {
                        assert_eq!(found, entry(file, found.attributes.mode), "torn slot");
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        // At least 200,000 updates, and on until the reader (maybe scheduled
        // late on a busy machine) has accepted some copies.
        let start = std::time::Instant::now();
        let mut generation = 0u32;
        while generation < 200_000
            || (hits.load(Ordering::Relaxed) < 1000 && start.elapsed().as_secs() < 60)
        {
            writer
                .publish(&entry(u64::from(generation % 6), generation))
                .unwrap();
            generation = generation.wrapping_add(1);
        }
        done.store(true, Ordering::Relaxed);
    });
    assert!(hits.load(Ordering::Relaxed) > 0);
}

/// Not a test by itself: the body of the child processes the two
/// `killed_*` tests start (it returns at once in a normal test run).
#[test]
fn child_process_role() {
    let Ok(path) = std::env::var("VRPC_TEST_CHILD_SOCKET") else {
        return;
    };
    match std::env::var("VRPC_TEST_CHILD_ROLE").as_deref() {
        Ok("client") => {
            let client = connect(&path, "/export").unwrap();
            // Blocks until the parent kills this process.
            let _ = client.call(&call_record(1, 0, b"from a child"), &[], 0);
            thread::sleep(Duration::from_secs(60));
        }
        Ok("server") => {
            let listener = Listener::bind(&path).unwrap();
            let pending = listener
                .accept()
                .unwrap()
                .handshake(Duration::from_secs(5))
                .unwrap();
            let mut connection = pending.accept(None, DEFAULT_MAX_RECORD).unwrap();
            let _request = connection.next_request(None).unwrap();
            // Holds the request until the parent kills this process.
            thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown child role {other:?}"),
    }
}

fn spawn_child(role: &str, path: &PathBuf) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_role",
            "--test-threads",
            "1",
            "--quiet",
        ])
        .env("VRPC_TEST_CHILD_SOCKET", path)
        .env("VRPC_TEST_CHILD_ROLE", role)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn killed_client_process_ends_only_its_connection() {
    let path = socket_path("killed-client");
    let listener = Listener::bind(&path).unwrap();
    let mut child = spawn_child("client", &path);
    let pending = listener
        .accept()
        .unwrap()
        .handshake(Duration::from_secs(30))
        .unwrap();
    let mut connection = pending.accept(None, DEFAULT_MAX_RECORD).unwrap();
    let request = connection
        .next_request(Some(Duration::from_secs(30)))
        .unwrap()
        .expect("the child's call");
    assert_eq!(&request.record()[40..], b"from a child");
    child.kill().unwrap();
    child.wait().unwrap();
    // The guest's memory stays mapped here: answering is harmless.
    connection.respond(request, b"too late", None).unwrap();
    assert!(matches!(
        connection.next_request(Some(Duration::from_secs(10))),
        Err(ConnectionError::Closed)
    ));
    // The listener serves the next guest.
    let path_for_client = path.clone();
    let client = thread::spawn(move || {
        let client = connect(&path_for_client, "/export").unwrap();
        client.call(&call_record(2, 0, b""), &[], 0)
    });
    let mut connection = accept_one(&listener);
    let request = connection.next_request(None).unwrap().unwrap();
    let reply = answer(request.record());
    connection.respond(request, &reply, None).unwrap();
    assert_eq!(
        client.join().unwrap().unwrap(),
        answer(&call_record(2, 0, b""))
    );
}

#[test]
fn killed_server_process_fails_pending_calls() {
    let path = socket_path("killed-server");
    let mut child = spawn_child("server", &path);
    let mut attempts = 0;
    let client = loop {
        match connect(&path, "/export") {
            Ok(client) => break Arc::new(client),
            Err(_) if attempts < 300 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("child server never listened: {error}"),
        }
    };
    let caller = {
        let client = Arc::clone(&client);
        thread::spawn(move || client.call(&call_record(1, 0, b""), &[], 0))
    };
    thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(caller.join().unwrap(), Err(CallError::Disconnected));
    assert_eq!(
        client.call(&call_record(2, 0, b""), &[], 0),
        Err(CallError::Disconnected)
    );
}

/// A server that dies while no call is waiting is noticed without a call.
#[test]
fn killed_server_is_noticed_without_a_call() {
    let path = socket_path("killed-idle-server");
    let mut child = spawn_child("server", &path);
    let mut attempts = 0;
    let client = loop {
        match connect(&path, "/export") {
            Ok(client) => break client,
            Err(_) if attempts < 300 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("child server never listened: {error}"),
        }
    };
    assert!(client.is_connected());
    child.kill().unwrap();
    child.wait().unwrap();
    // The kernel closes the dead process's socket at once.
    assert!(!client.is_connected());
}

/// The ring carries the caller's xid as it is (one owner of xids: the
/// caller), and a second call with the xid of one still in flight is
/// refused rather than mistaken for it.
#[test]
fn the_caller_numbers_its_calls_and_duplicates_in_flight_are_refused() {
    let path = socket_path("caller-xids");
    let listener = Listener::bind(&path).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = {
        let seen = Arc::clone(&seen);
        thread::spawn(move || {
            let pending = listener
                .accept()
                .unwrap()
                .handshake(Duration::from_secs(5))
                .unwrap();
            let connection = pending.accept(None, DEFAULT_MAX_RECORD).unwrap();
            let _ = connection.serve(|call| {
                seen.lock()
                    .unwrap()
                    .push(u32::from_be_bytes([call[0], call[1], call[2], call[3]]));
                if call.ends_with(b"slow") {
                    thread::sleep(Duration::from_millis(300));
                }
                Some(answer(call))
            });
        })
    };
    let client = Arc::new(connect(&path, "/export").unwrap());
    for xid in [0xdead_beef, 3, 0xffff_fff0] {
        let call = call_record(xid, 0, b"numbered");
        assert_eq!(client.call(&call, &[], 0).unwrap(), answer(&call));
    }
    let slow = {
        let client = Arc::clone(&client);
        thread::spawn(move || client.call(&call_record(9, 0, b"slow"), &[], 0))
    };
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        client.call(&call_record(9, 0, b"fast"), &[], 0),
        Err(CallError::Submit(vrpc::SubmitError::DuplicateXid))
    );
    assert_eq!(
        slow.join().unwrap().unwrap(),
        answer(&call_record(9, 0, b"slow"))
    );
    // Once answered, the xid is free again.
    let again = call_record(9, 0, b"again");
    assert_eq!(client.call(&again, &[], 0).unwrap(), answer(&again));
    assert_eq!(*seen.lock().unwrap(), [0xdead_beef, 3, 0xffff_fff0, 9, 9]);
    client.close();
    drop(client);
    server.join().unwrap();
}
