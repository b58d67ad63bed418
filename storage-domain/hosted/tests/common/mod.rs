//! Shared harness of the end-to-end tests: the real `storage-domain-hosted
//! serve` on a fresh image at port 0, clients of the independent
//! `nfs3_client` crate, raw RPC records over a plain `TcpStream`, and the
//! closing `fsck`.
//!
//! Nothing here uses the project's own `nfs3` or `xdr` crates: a call the
//! tests send is encoded by `nfs3_types` (what `nfs3_client` is built on)
//! or written out byte by byte, so an encoding mistake shared by our
//! client and our server cannot hide.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nfs3_client::nfs3_types::nfs3::{nfs_fh3, nfsstat3, Nfs3Result};
use nfs3_client::nfs3_types::rpc::{
    auth_unix, call_body, msg_body, opaque_auth, rpc_msg, RPC_VERSION_2,
};
use nfs3_client::nfs3_types::xdr_codec::{Opaque, Pack};
use nfs3_client::tokio::TokioIo;
use nfs3_client::{MountClient, Nfs3Client, PortmapperClient};

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_storage-domain-hosted");

/// How long a server may take to say it is ready (a debug build formatting
/// a fresh image on a loaded 2-core CI machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A client connection of `nfs3_client` over tokio.
pub type Io = TokioIo<tokio::net::TcpStream>;

/// A scratch directory removed when dropped.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sd-e2e-")
        .tempdir()
        .expect("create a scratch directory")
}

/// A running `storage-domain-hosted serve`.
pub struct ServerProcess {
    child: Option<Child>,
    /// The port NFS, MOUNT and PORTMAP answer on.
    pub port: u16,
    /// The image served.
    pub image: PathBuf,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// Serve `image` (formatted at `size` when missing) with `arguments`
    /// added to the command line, and wait for the ready line.
    pub fn start(image: &Path, size: &str, arguments: &[&str]) -> ServerProcess {
        match Self::try_start(image, size, arguments) {
            Ok(server) => server,
            Err(output) => panic!("serve did not become ready:\n{output}"),
        }
    }

    /// As [`ServerProcess::start`], but a server that exits before it is
    /// ready gives back its exit status and stderr.
    pub fn try_start(
        image: &Path,
        size: &str,
        arguments: &[&str],
    ) -> Result<ServerProcess, String> {
        let mut child = Command::new(BINARY)
            .arg("serve")
            .arg("--disk")
            .arg(image)
            .args(["--size", size, "--listen", "127.0.0.1:0"])
            .args(["--commit-interval", "1"])
            .args(arguments)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start storage-domain-hosted serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready, port) = mpsc::channel();
        let stderr_reader = {
            let pipe = child.stderr.take().expect("piped stderr");
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut ready = Some(ready);
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(port) = ready_port(&line) {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(port);
                        }
                    }
                    let mut text = stderr.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            })
        };
        match port.recv_timeout(READY_TIMEOUT) {
            Ok(port) => Ok(ServerProcess {
                child: Some(child),
                port,
                image: image.to_path_buf(),
                stderr,
                stderr_reader: Some(stderr_reader),
            }),
            Err(_) => {
                let status = child.wait_timeout_or_kill();
                // The reader ends when the process's stderr closes.
                let _ = stderr_reader.join();
                let text = stderr.lock().unwrap().clone();
                Err(format!("{status}\n{text}"))
            }
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("poll serve").is_none(),
            None => false,
        }
    }

    /// SIGTERM, wait for a clean exit (status 0), and return the log.
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().expect("server already stopped");
        let pid = i32::try_from(child.id()).expect("a pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("send SIGTERM");
        let status = wait_with_timeout(&mut child, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("serve did not stop on SIGTERM:\n{}", self.log()));
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        let log = self.log();
        assert!(status.success(), "serve exited with {status}:\n{log}");
        assert!(log.contains("stopped cleanly"), "{log}");
        log
    }

    /// SIGKILL: the process dies wherever it is (a crash or power cut, as
    /// far as the image can tell).
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("server already stopped");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap serve");
    }

    /// Stop the server, then check the image is clean.
    pub fn stop_and_fsck(self) -> String {
        let image = self.image.clone();
        let log = self.stop();
        fsck(&image);
        log
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

trait WaitOrKill {
    fn wait_timeout_or_kill(&mut self) -> String;
}

impl WaitOrKill for Child {
    fn wait_timeout_or_kill(&mut self) -> String {
        match wait_with_timeout(self, Duration::from_secs(5)) {
            Some(status) => format!("exited: {status}"),
            None => {
                let _ = self.kill();
                let _ = self.wait();
                "killed: no ready line in time".to_string()
            }
        }
    }
}

/// Wait up to `timeout` for `child` to exit.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The port in `ready: NFSv3, MOUNT v3 and PORTMAP v2 on 127.0.0.1:PORT, ...`.
fn ready_port(line: &str) -> Option<u16> {
    let rest = line.split_once("ready: ")?.1;
    let address = rest.split_once(" on ")?.1.split(',').next()?;
    address
        .parse::<SocketAddr>()
        .ok()
        .map(|address| address.port())
}

/// `storage-domain-hosted fsck IMAGE` must exit 0 and say "clean".
pub fn fsck(image: &Path) {
    let output = tool(&["fsck".as_ref(), image.as_os_str()]);
    let text = text(&output);
    assert!(output.status.success(), "fsck failed:\n{text}");
    assert!(text.contains("clean"), "fsck did not say clean:\n{text}");
}

/// Run the binary with `arguments`.
pub fn tool(arguments: &[&std::ffi::OsStr]) -> Output {
    Command::new(BINARY)
        .args(arguments)
        .output()
        .expect("run storage-domain-hosted")
}

/// stdout and stderr of `output`.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Run `future` to completion on a one-thread tokio runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// A TCP connection to the server from `source` (any 127.0.0.0/8 address
/// reaches a listener on 127.0.0.1).
pub async fn connect_from(server: SocketAddr, source: Ipv4Addr) -> Io {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind the client address");
    let stream = socket.connect(server).await.expect("connect to serve");
    stream.set_nodelay(true).expect("nodelay");
    TokioIo::new(stream)
}

/// An AUTH_SYS credential.
pub fn unix_credential(uid: u32, gid: u32) -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix {
        stamp: 7,
        machinename: Opaque::owned(b"e2e-client".to_vec()),
        uid,
        gid,
        gids: vec![gid],
    })
}

/// An NFSv3 client calling as `uid`/`gid` (AUTH_SYS) from 127.0.0.1.
pub async fn nfs(server: &ServerProcess, uid: u32, gid: u32) -> Nfs3Client<Io> {
    nfs_from(server, Ipv4Addr::LOCALHOST, uid, gid).await
}

/// An NFSv3 client calling as `uid`/`gid` from `source`.
pub async fn nfs_from(
    server: &ServerProcess,
    source: Ipv4Addr,
    uid: u32,
    gid: u32,
) -> Nfs3Client<Io> {
    Nfs3Client::new_with_auth(
        connect_from(server.address(), source).await,
        unix_credential(uid, gid),
        opaque_auth::default(),
    )
}

/// A MOUNT client from `source` (AUTH_SYS as root, as mount(8) calls).
pub async fn mount_client(server: &ServerProcess, source: Ipv4Addr) -> MountClient<Io> {
    MountClient::new_with_auth(
        connect_from(server.address(), source).await,
        unix_credential(0, 0),
        opaque_auth::default(),
    )
}

/// A PORTMAP client.
pub async fn portmap_client(server: &ServerProcess) -> PortmapperClient<Io> {
    PortmapperClient::new(connect_from(server.address(), Ipv4Addr::LOCALHOST).await)
}

/// MNT `export` from 127.0.0.1 and return its root handle.
pub async fn mount_root(server: &ServerProcess, export: &str) -> nfs_fh3 {
    let mut mount = mount_client(server, Ipv4Addr::LOCALHOST).await;
    let mounted = mount
        .mnt(nfs3_client::nfs3_types::mount::dirpath(Opaque::borrowed(
            export.as_bytes(),
        )))
        .await
        .unwrap_or_else(|error| panic!("MNT {export}: {error:?}"));
    nfs_fh3 {
        data: Opaque::owned(mounted.fhandle.0.to_vec()),
    }
}

/// The status of an NFSv3 result (NFS3_OK for success).
pub fn status<T, E>(result: &Nfs3Result<T, E>) -> nfsstat3 {
    match result {
        Nfs3Result::Ok(_) => nfsstat3::NFS3_OK,
        Nfs3Result::Err((status, _)) => *status,
    }
}

/// One ONC RPC call record (no record mark), encoded by `nfs3_types`.
pub fn call_record(
    xid: u32,
    program: u32,
    version: u32,
    procedure: u32,
    credential: &opaque_auth<'static>,
    arguments: &impl Pack,
) -> Vec<u8> {
    let message = rpc_msg {
        xid,
        body: msg_body::CALL(call_body {
            rpcvers: RPC_VERSION_2,
            prog: program,
            vers: version,
            proc: procedure,
            cred: credential.borrow(),
            verf: opaque_auth::default(),
        }),
    };
    let mut record = Vec::new();
    message.pack(&mut record).expect("pack the call header");
    arguments.pack(&mut record).expect("pack the arguments");
    record
}

/// A blocking raw connection: records in, records out.
pub struct RawConnection {
    /// The socket.
    pub stream: TcpStream,
}

impl RawConnection {
    /// Connect to the server.
    pub fn open(server: &ServerProcess) -> RawConnection {
        let stream = TcpStream::connect(server.address()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        stream.set_nodelay(true).expect("nodelay");
        RawConnection { stream }
    }

    /// Send `record` as one last fragment.
    pub fn send(&mut self, record: &[u8]) {
        let mark = 0x8000_0000u32 | u32::try_from(record.len()).expect("record size");
        let mut framed = mark.to_be_bytes().to_vec();
        framed.extend_from_slice(record);
        self.stream.write_all(&framed).expect("send a record");
    }

    /// Send bytes as they are (record marks included).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send bytes");
    }

    /// Read one reply record (a single last fragment, as the server sends).
    pub fn receive(&mut self) -> Vec<u8> {
        self.try_receive().expect("a reply record")
    }

    /// Read one reply record, or the error that ended the stream.
    pub fn try_receive(&mut self) -> std::io::Result<Vec<u8>> {
        let mut mark = [0u8; 4];
        self.stream.read_exact(&mut mark)?;
        let mark = u32::from_be_bytes(mark);
        assert!(mark & 0x8000_0000 != 0, "replies are single fragments");
        let mut record = vec![0u8; (mark & 0x7fff_ffff) as usize];
        self.stream.read_exact(&mut record)?;
        Ok(record)
    }

    /// The server must have closed this connection (end of stream or a
    /// reset, not a read timeout).
    pub fn assert_closed(&mut self) {
        match self.try_receive() {
            Ok(reply) => panic!("a reply on a connection that should be closed: {reply:02x?}"),
            Err(error) => assert!(
                matches!(
                    error.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                ),
                "the connection is still open: {error}"
            ),
        }
    }

    /// Send `record` and read the reply.
    pub fn call(&mut self, record: &[u8]) -> Vec<u8> {
        self.send(record);
        self.receive()
    }
}

/// Big-endian word `index` of a record.
pub fn word(record: &[u8], index: usize) -> u32 {
    let bytes: [u8; 4] = record[index * 4..index * 4 + 4].try_into().expect("a word");
    u32::from_be_bytes(bytes)
}

/// An NFS NULL call record from AUTH_NONE.
pub fn null_call(xid: u32) -> Vec<u8> {
    call_record(
        xid,
        NFS_PROGRAM,
        3,
        0,
        &opaque_auth::default(),
        &nfs3_client::nfs3_types::xdr_codec::Void,
    )
}

/// RPC program numbers (RFC 1813, RFC 1833).
pub const NFS_PROGRAM: u32 = 100_003;
/// MOUNT.
pub const MOUNT_PROGRAM: u32 = 100_005;
/// PORTMAP.
pub const PORTMAP_PROGRAM: u32 = 100_000;

/// The server still answers a fresh connection (NULL over raw bytes).
pub fn assert_serving(server: &ServerProcess) {
    let mut connection = RawConnection::open(server);
    let reply = connection.call(&null_call(0x5e41_0001));
    // xid, REPLY, MSG_ACCEPTED, verifier AUTH_NONE (flavor, length), SUCCESS.
    let words: Vec<u32> = (0..reply.len() / 4)
        .map(|index| word(&reply, index))
        .collect();
    assert_eq!(words, [0x5e41_0001, 1, 0, 0, 0, 0], "NULL accepted");
}
