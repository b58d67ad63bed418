//! `serve --vrpc-socket`: NFS calls over the hosted shared-memory rings, the
//! metadata table filled by the server, bulk data through the data pages,
//! refused exports, and a clean shutdown with a clean image.

use nfs3::procedures::create::{CreateArguments, CreateHow};
use nfs3::procedures::data::{CommitArguments, ReadArguments, WriteArguments};
use nfs3::procedures::inspect::GetAttributesArguments;
use nfs3::{Arguments, DirectoryOperationArguments, FileHandle, Nfs3, Results, StableHow};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xdr::{AuthSys, OpaqueAuth};

const BINARY: &str = env!("CARGO_BIN_EXE_storage-domain-hosted");

struct Server {
    child: Child,
    image: PathBuf,
    socket: PathBuf,
    _directory: tempfile::TempDir,
}

impl Server {
    fn start(exports: &[&str]) -> Server {
        Server::start_with(exports, &[])
    }

    /// As [`Server::start`], with more arguments for `serve`.
    fn start_with(exports: &[&str], more: &[&str]) -> Server {
        let directory = tempfile::tempdir().unwrap();
        let image = directory.path().join("disk.img");
        let socket = directory.path().join("vrpc.sock");
        let mut command = Command::new(BINARY);
        command
            .arg("serve")
            .arg("--disk")
            .arg(&image)
            .args([
                "--size",
                "64M",
                "--listen",
                "127.0.0.1:0",
                "--metatab-slots",
                "1024",
            ])
            .arg("--vrpc-socket")
            .arg(&socket)
            .args(more)
            .stderr(Stdio::piped());
        for export in exports {
            command.args(["--export", export]);
        }
        let mut child = command.spawn().expect("start the server");
        let stderr = child.stderr.take().unwrap();
        let (ready, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("server: {line}");
                if line.contains("ready:") {
                    let _ = ready.send(());
                }
            }
        });
        wait.recv_timeout(Duration::from_secs(60))
            .expect("the server's ready line");
        Server {
            child,
            image,
            socket,
            _directory: directory,
        }
    }

    /// SIGTERM, a clean exit, then fsck.
    fn stop_and_check(mut self) {
        self.stop_and_check_inner();
    }

    fn stop_and_check_inner(&mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "server exited with {status}");
        assert!(!self.socket.exists(), "the socket is removed on exit");
        let fsck = Command::new(BINARY)
            .arg("fsck")
            .arg(&self.image)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "fsck: {}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    }
}

impl Drop for Server {
    /// A test that failed midway must not leave its server running.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn credential() -> OpaqueAuth {
    OpaqueAuth::sys(&AuthSys {
        stamp: 0,
        machine_name: b"vrpc-test".to_vec(),
        uid: 0,
        gid: 0,
        gids: vec![],
    })
}

/// One call, with xid 7 (every call of these tests but those made while
/// another is in flight: the duplicate request cache test needs the same
/// xid on two connections).
fn call(
    client: &vrpc_hosted::Client,
    arguments: Arguments,
    payload: &[u8],
    read: usize,
) -> Results {
    call_with_xid(client, 7, arguments, payload, read)
}

fn call_with_xid(
    client: &vrpc_hosted::Client,
    xid: u32,
    arguments: Arguments,
    payload: &[u8],
    read: usize,
) -> Results {
    let procedure = arguments.procedure().to_u32();
    let record = nfs3::message::encode_call::<Nfs3>(xid, credential(), &arguments);
    let reply = client.call(&record, payload, read).expect("a reply");
    nfs3::message::decode_reply::<Nfs3>(&reply, procedure)
        .expect("a successful RPC")
        .1
}

fn mount(client: &vrpc_hosted::Client, export: &str) -> FileHandle {
    use nfs3::mount::{Arguments as M, Mount3, MountResult, Results as R};
    let arguments = M::Mount(nfs3::mount::DirectoryPath {
        path: export.as_bytes().to_vec(),
    });
    let record = nfs3::message::encode_call::<Mount3>(1, credential(), &arguments);
    let reply = client.call(&record, &[], 0).expect("a MOUNT reply");
    match nfs3::message::decode_reply::<Mount3>(&reply, 1).unwrap().1 {
        R::Mount(MountResult::Ok(ok)) => ok.handle,
        other => panic!("{other:?}"),
    }
}

/// CREATE (unchecked) of `name` in `directory`: the new file's handle.
fn create(client: &vrpc_hosted::Client, directory: &FileHandle, name: &[u8]) -> FileHandle {
    match call(
        client,
        Arguments::Create(CreateArguments {
            location: DirectoryOperationArguments {
                directory: directory.clone(),
                name: name.to_vec(),
            },
            how: CreateHow::Unchecked(Default::default()),
        }),
        &[],
        0,
    ) {
        Results::Create(result) => result.into_result().unwrap().object.unwrap(),
        other => panic!("{other:?}"),
    }
}

/// A READ of `count` bytes at `offset` of `file` that must succeed, with
/// its own `xid` (calls in flight at once need distinct ones): its data.
fn read(
    client: &vrpc_hosted::Client,
    xid: u32,
    file: &FileHandle,
    offset: usize,
    count: usize,
) -> Vec<u8> {
    match call_with_xid(
        client,
        xid,
        Arguments::Read(ReadArguments {
            file: file.clone(),
            offset: offset as u64,
            count: count as u32,
        }),
        &[],
        count + 4096,
    ) {
        Results::Read(result) => result.into_result().unwrap().data,
        other => panic!("{other:?}"),
    }
}

/// A WRITE of `data` at `offset` of `file` (the data in the data pages)
/// that must succeed.
fn write(
    client: &vrpc_hosted::Client,
    file: &FileHandle,
    offset: u64,
    data: &[u8],
    stable: StableHow,
) {
    match call(
        client,
        Arguments::Write(WriteArguments {
            file: file.clone(),
            offset,
            count: data.len() as u32,
            stable,
            data: Vec::new(),
        }),
        data,
        0,
    ) {
        Results::Write(result) => assert!(result.into_result().is_ok()),
        other => panic!("{other:?}"),
    }
}

/// A GETATTR of `object` that must succeed.
fn getattr(client: &vrpc_hosted::Client, object: &FileHandle) {
    match call(
        client,
        Arguments::GetAttributes(GetAttributesArguments {
            object: object.clone(),
        }),
        &[],
        0,
    ) {
        Results::GetAttributes(result) => assert!(result.into_result().is_ok()),
        other => panic!("{other:?}"),
    }
}

fn connect(socket: &Path, export: &str) -> vrpc_hosted::Client {
    vrpc_hosted::connect(socket, export).expect("connect")
}

#[test]
fn calls_data_pages_and_the_metadata_table() {
    let server = Server::start(&["/,no_root_squash"]);
    let client = connect(&server.socket, "/");
    let root = mount(&client, "/");
    let created = match call(
        &client,
        Arguments::Create(CreateArguments {
            location: DirectoryOperationArguments {
                directory: root.clone(),
                name: b"over-rings".to_vec(),
            },
            how: CreateHow::Unchecked(Default::default()),
        }),
        &[],
        0,
    ) {
        Results::Create(result) => result.into_result().unwrap(),
        other => panic!("{other:?}"),
    };
    let file = created.object.unwrap();
    // A 300 KiB WRITE whose data travels in the data pages.
    let data: Vec<u8> = (0..300 * 1024).map(|index| (index % 251) as u8).collect();
    match call(
        &client,
        Arguments::Write(WriteArguments {
            file: file.clone(),
            offset: 0,
            count: data.len() as u32,
            stable: StableHow::FileSync,
            data: Vec::new(),
        }),
        &data,
        0,
    ) {
        Results::Write(result) => {
            assert_eq!(result.into_result().unwrap().count as usize, data.len())
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(read(&client, 7, &file, 0, data.len()), data);
    // GETATTR published the file's attributes: the table answers with
    // the same size and the handle's digest.
    let attributes = match call(
        &client,
        Arguments::GetAttributes(GetAttributesArguments {
            object: file.clone(),
        }),
        &[],
        0,
    ) {
        Results::GetAttributes(result) => result.into_result().unwrap().attributes,
        other => panic!("{other:?}"),
    };
    let table = client.metadata_table().expect("the server shares a table");
    match table
        .lookup(attributes.file_id, metatab::handle_digest(&file.0))
        .unwrap()
    {
        metatab::Lookup::Hit(entry) => {
            assert_eq!(entry.attributes, attributes);
            assert_eq!(entry.attributes.size, data.len() as u64);
        }
        other => panic!("expected a table hit, got {other:?}"),
    }
    // Another handle digest for the same file id is a miss.
    assert!(matches!(
        table.lookup(attributes.file_id, 12345).unwrap(),
        metatab::Lookup::Miss
    ));
    drop(client);
    server.stop_and_check();
}

/// A guest's `fsync` does not hold up its other calls: the COMMIT's reply
/// is held while the commit runs (each of its two flushes made 400 ms
/// slow), and a GETATTR the same guest sends meanwhile, on the same ring,
/// is answered at once. The COMMIT's reply comes when the commit ends, and
/// the data is then durable (read back, fsck after a clean stop).
#[test]
fn a_guests_fsync_does_not_hold_up_its_other_calls() {
    let server = Server::start_with(&["/,no_root_squash"], &["--flush-delay-ms", "400"]);
    let client = connect(&server.socket, "/");
    let root = mount(&client, "/");
    let file = create(&client, &root, b"durable");
    let data = vec![0x5a_u8; 64 * 1024];
    write(&client, &file, 0, &data, StableHow::Unstable);
    let started = Instant::now();
    let (commit_done, getattr_done) = std::thread::scope(|scope| {
        let committer = scope.spawn(|| {
            match call_with_xid(
                &client,
                8,
                Arguments::Commit(CommitArguments {
                    file: file.clone(),
                    offset: 0,
                    count: 0,
                }),
                &[],
                0,
            ) {
                Results::Commit(result) => assert!(result.into_result().is_ok()),
                other => panic!("{other:?}"),
            }
            started.elapsed()
        });
        // The COMMIT is on the ring and its commit under way (800 ms of
        // flushes); now a call that needs no commit.
        std::thread::sleep(Duration::from_millis(150));
        getattr(&client, &root);
        let getattr_done = started.elapsed();
        (committer.join().unwrap(), getattr_done)
    });
    assert!(
        commit_done >= Duration::from_millis(800),
        "the COMMIT was answered after {commit_done:?}, before its two 400 ms flushes \
         could have run"
    );
    assert!(
        getattr_done < commit_done,
        "the GETATTR ({getattr_done:?}) waited for the COMMIT ({commit_done:?})"
    );
    assert_eq!(read(&client, 7, &file, 0, data.len()), data);
    drop(client);
    server.stop_and_check();
}

/// A guest's READ of cold blocks does not hold up its other calls once
/// they are there: each read of the disk is made 400 ms slow. READ A comes
/// alone and is finished by the connection thread (nothing else to answer
/// meanwhile); READ B and then a GETATTR arrive while it is read. B is
/// handed to a read worker, which reads its blocks without the server's
/// lock, because the GETATTR waits behind it on the ring: the GETATTR is
/// answered as soon as A is, before B. Both READs give the right bytes.
#[test]
fn a_guests_cold_read_does_not_hold_up_its_other_calls() {
    let server = Server::start_with(
        &["/,no_root_squash"],
        &["--read-delay-ms", "400", "--data-cache", "4M"],
    );
    let client = connect(&server.socket, "/");
    let root = mount(&client, "/");
    let file = create(&client, &root, b"cold");
    // Blocks written are not put in the data cache, so reading them is
    // cold, except where the read-ahead of the reads made at open had
    // brought the free blocks after the metadata in (up to 1 MiB): the
    // READs are made past that.
    let data: Vec<u8> = (0..4 << 20).map(|index| (index % 253) as u8).collect();
    for (index, chunk) in data.chunks(1 << 20).enumerate() {
        write(
            &client,
            &file,
            (index << 20) as u64,
            chunk,
            StableHow::FileSync,
        );
    }
    let started = Instant::now();
    // Two reads far apart in the file (neither continues the other).
    let read = |xid: u32, offset: usize| {
        assert_eq!(
            read(&client, xid, &file, offset, 16 * 1024),
            &data[offset..offset + 16 * 1024],
            "the READ's bytes at {offset}"
        );
        started.elapsed()
    };
    let (first_done, second_done, getattr_done) = std::thread::scope(|scope| {
        let first = scope.spawn(|| read(8, 2 << 20));
        std::thread::sleep(Duration::from_millis(100));
        let second = scope.spawn(|| read(9, 7 << 19));
        std::thread::sleep(Duration::from_millis(100));
        getattr(&client, &root);
        let getattr_done = started.elapsed();
        (first.join().unwrap(), second.join().unwrap(), getattr_done)
    });
    let parked = stats(&server.image)
        .get("disk.parked_calls")
        .and_then(|value| value.parse::<u64>().ok())
        .expect("disk.parked_calls");
    assert!(
        parked >= 2,
        "the READs were not read without the lock ({parked} parked calls; {first_done:?} {second_done:?} {getattr_done:?})"
    );
    assert!(
        first_done >= Duration::from_millis(400) && second_done >= Duration::from_millis(800),
        "the READs were answered after {first_done:?} and {second_done:?}: faster than \
         two 400 ms reads one after the other, so the test did not set up what it tests"
    );
    assert!(
        getattr_done < second_done,
        "the GETATTR ({getattr_done:?}) waited for the second READ ({second_done:?})"
    );
    drop(client);
    server.stop_and_check();
}

#[test]
fn exports_a_guest_may_not_use_are_refused() {
    let server = Server::start(&["/,no_root_squash", "/lan,path=/lan,allow=10.0.0.0/8"]);
    assert!(vrpc_hosted::connect(&server.socket, "/lan").is_err());
    assert!(vrpc_hosted::connect(&server.socket, "/nothing").is_err());
    // The refused guests cost nothing to the others.
    let client = connect(&server.socket, "/");
    let root = mount(&client, "/");
    assert!(!root.0.is_empty());
    drop(client);
    server.stop_and_check();
}

/// Two guest connections number their xids independently: identical call
/// bytes from the second are a new call, never a replay of the first's.
#[test]
fn connections_have_their_own_duplicate_request_cache_entries() {
    use nfs3::procedures::inspect::SetAttributesArguments;
    let server = Server::start(&["/,no_root_squash"]);
    let first = connect(&server.socket, "/");
    let root = mount(&first, "/");
    let file = match call(
        &first,
        Arguments::Create(CreateArguments {
            location: DirectoryOperationArguments {
                directory: root.clone(),
                name: b"shared".to_vec(),
            },
            how: CreateHow::Unchecked(Default::default()),
        }),
        &[],
        0,
    ) {
        Results::Create(result) => result.into_result().unwrap().object.unwrap(),
        other => panic!("{other:?}"),
    };
    let write = |client: &vrpc_hosted::Client, data: &[u8]| {
        let results = call(
            client,
            Arguments::Write(WriteArguments {
                file: file.clone(),
                offset: 0,
                count: data.len() as u32,
                stable: StableHow::FileSync,
                data: data.to_vec(),
            }),
            &[],
            0,
        );
        assert!(matches!(results, Results::Write(ref result) if result.status().is_ok()));
    };
    let truncate = |client: &vrpc_hosted::Client| match call(
        client,
        Arguments::SetAttributes(SetAttributesArguments {
            object: file.clone(),
            new_attributes: nfs3::SettableAttributes {
                size: Some(0),
                ..Default::default()
            },
            guard: None,
        }),
        &[],
        0,
    ) {
        Results::SetAttributes(result) => {
            result.into_result().unwrap().object_wcc.after.unwrap().size
        }
        other => panic!("{other:?}"),
    };
    // Calls 1-4 on the first connection: MNT, CREATE, WRITE, SETATTR.
    write(&first, b"first data");
    assert_eq!(truncate(&first), 0);
    // Calls 1-4 on the second: MNT, GETATTR, WRITE (other bytes), then the
    // very same SETATTR bytes with the same xid as the first's call 4.
    let second = connect(&server.socket, "/");
    let _ = mount(&second, "/");
    let _ = call(
        &second,
        Arguments::GetAttributes(GetAttributesArguments {
            object: file.clone(),
        }),
        &[],
        0,
    );
    write(&second, b"other data");
    truncate(&second);
    // A replayed reply would say size 0 too: ask the file itself.
    let size = match call(
        &second,
        Arguments::GetAttributes(GetAttributesArguments {
            object: file.clone(),
        }),
        &[],
        0,
    ) {
        Results::GetAttributes(result) => result.into_result().unwrap().attributes.size,
        other => panic!("{other:?}"),
    };
    assert_eq!(size, 0, "the second truncate ran, it was not replayed");
    drop((first, second));
    server.stop_and_check();
}

/// `name value` lines of `storage-domain-hosted stats IMAGE`, as a map.
fn stats(image: &Path) -> std::collections::BTreeMap<String, String> {
    let output = Command::new(BINARY)
        .arg("stats")
        .arg(image)
        .output()
        .expect("run stats");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (name, value) = line.split_once(' ').expect("name value");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn stats_shows_guests_calls_commits_cache_and_space() {
    // vrpc=sync: the FILE_SYNC writes commit before their replies.
    let server = Server::start(&[
        "/,no_root_squash,vrpc=sync",
        "/data,path=/data,no_root_squash",
    ]);
    let before = stats(&server.image);
    assert_eq!(before["connections.vrpc"], "0");
    assert_eq!(before["rpc.CREATE"], "0");
    let first = connect(&server.socket, "/");
    let second = connect(&server.socket, "/data");
    let root = mount(&first, "/");
    let created = match call(
        &first,
        Arguments::Create(CreateArguments {
            location: DirectoryOperationArguments {
                directory: root.clone(),
                name: b"counted".to_vec(),
            },
            how: CreateHow::Unchecked(Default::default()),
        }),
        &[],
        0,
    ) {
        Results::Create(result) => result.into_result().unwrap(),
        other => panic!("{other:?}"),
    };
    let file = created.object.unwrap();
    let data = vec![7u8; 1 << 20];
    for _ in 0..2 {
        write(&first, &file, 0, &data, StableHow::FileSync);
    }
    // Read twice: the second is answered by the data cache.
    for _ in 0..2 {
        match call(
            &first,
            Arguments::Read(ReadArguments {
                file: file.clone(),
                offset: 0,
                count: 256 << 10,
            }),
            &[],
            (256 << 10) + 4096,
        ) {
            Results::Read(result) => {
                assert!(result.into_result().unwrap().data == data[..256 << 10])
            }
            other => panic!("{other:?}"),
        }
    }
    let during = stats(&server.image);
    let data_hits: u64 = during["data_cache.hits"].parse().unwrap();
    assert!(data_hits >= 64, "{during:?}");
    assert!(
        during["data_cache.hit_ratio"].parse::<f64>().unwrap() > 0.0,
        "{during:?}"
    );
    assert_eq!(during["connections.vrpc"], "2", "{during:?}");
    assert_eq!(during["guests./"], "1", "{during:?}");
    assert_eq!(during["guests./data"], "1", "{during:?}");
    assert_eq!(during["rpc.CREATE"], "1", "{during:?}");
    assert_eq!(during["rpc.WRITE"], "2", "{during:?}");
    assert_eq!(during["rpc.READ"], "2", "{during:?}");
    assert_eq!(during["locks.held"], "0", "{during:?}");
    assert_eq!(during["nlm.calls"], "0", "{during:?}");
    assert_eq!(during["mount.calls"], "1", "{during:?}");
    let commits: u64 = during["commits"].parse().unwrap();
    assert!(commits >= 2, "FILE_SYNC writes commit: {during:?}");
    assert!(
        during["commit.mean_us"].parse::<f64>().unwrap() > 0.0,
        "{during:?}"
    );
    let hits: u64 = during["cache.hits"].parse().unwrap();
    assert!(hits > 0, "{during:?}");
    let ratio: f64 = during["cache.hit_ratio"].parse().unwrap();
    assert!(ratio > 0.0 && ratio <= 1.0, "{during:?}");
    let used: u64 = during["space.used_bytes"].parse().unwrap();
    let used_before: u64 = before["space.used_bytes"].parse().unwrap();
    assert!(used >= used_before + (1 << 20), "{before:?} {during:?}");
    assert_eq!(during["space.total_bytes"], (64u64 << 20).to_string());
    drop(first);
    drop(second);
    // The guests' threads notice the closed rings within moments.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stats(&server.image)["connections.vrpc"] != "0" {
        assert!(std::time::Instant::now() < deadline, "guests still counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop_and_check();
    // An image no server serves.
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("idle.img");
    std::fs::write(&image, b"").unwrap();
    let gone = Command::new(BINARY)
        .arg("stats")
        .arg(&image)
        .output()
        .unwrap();
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("no server of"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}

/// `snapshot create|list|delete` while the server runs go through its
/// control socket (the image is locked by the server); changing snapshots
/// is refused to other users, listing is not.
#[test]
fn snapshots_through_the_running_server() {
    let server = Server::start(&["/,no_root_squash"]);
    let snapshot = |arguments: &[&str]| {
        let (operation, rest) = arguments.split_first().unwrap();
        Command::new(BINARY)
            .args(["snapshot", operation])
            .arg(&server.image)
            .args(rest)
            .output()
            .unwrap()
    };
    let taken = snapshot(&["create", "first"]);
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    assert_eq!(stats(&server.image)["snapshots"], "1");
    let listed = snapshot(&["list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).starts_with("first\tcommit "));
    let again = snapshot(&["create", "first"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    // Another user (when this test runs as root and setpriv exists).
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"));
    if root && Path::new("/usr/bin/setpriv").exists() {
        use std::os::unix::fs::PermissionsExt;
        let directory = server.image.parent().unwrap();
        std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o755)).unwrap();
        let as_nobody = |operation: &str| {
            Command::new("/usr/bin/setpriv")
                .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                .arg(BINARY)
                .args(["snapshot", operation])
                .arg(&server.image)
                .args((operation != "list").then_some("first"))
                .output()
                .unwrap()
        };
        let refused = as_nobody("delete");
        assert!(!refused.status.success());
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("may not change snapshots"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
        let listed = as_nobody("list");
        assert!(
            String::from_utf8_lossy(&listed.stdout).starts_with("first\t"),
            "{}",
            String::from_utf8_lossy(&listed.stderr)
        );
    } else {
        eprintln!("not root or no setpriv: the other-user check is skipped");
    }

    let deleted = snapshot(&["delete", "first"]);
    assert!(deleted.status.success());
    assert_eq!(stats(&server.image)["snapshots"], "0");
    assert!(snapshot(&["list"]).stdout.is_empty());
    server.stop_and_check();
}
