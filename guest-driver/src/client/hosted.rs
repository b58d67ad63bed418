//! The hosted VRPC transport: calls over shared-memory rings to a storage
//! domain running as a Linux process (crate `vrpc-hosted`, spec in
//! `docs/vrpc.md`).
//!
//! Design: `vrpc_hosted::Client` already multiplexes calls from many
//! threads and matches replies; this adapter maps its errors and keeps a
//! mount alive across server restarts. WRITE data and READ/READDIRPLUS
//! replies travel in the connection's data pages ([`Call::write_payload`],
//! [`Call::read_capacity`]); the records stay standard ONC RPC. The
//! connection also brings the export's metadata table, which
//! [`HostedTransport::table`] exposes to the file system.
//!
//! Restarts: a supervisor thread (started by
//! [`HostedTransport::spawn_supervisor`]) checks the connection every
//! 100 ms without an RPC (the socket hangs up when the server dies). When
//! it is gone, calls in flight fail with EIO and are never sent again (the
//! server's duplicate request cache died with it, so a CREATE or REMOVE
//! resent to the new server could run twice), new calls fail with EIO at
//! once, the frozen table is no longer read, and the supervisor connects
//! again every 200 ms. Once the server is back, the same mount works again:
//! file handles name the volume, not the server's run, so open files keep
//! working (as the Xen transport's supervisor does).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use nfs3::FileHandle;

use super::transport::{Call, Transport, TransportError};
use crate::fs::table::{AttributeTable, Changed, Cursor, TableEntry};

/// How long the supervisor waits between attempts to reconnect.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug)]
struct Shared {
    socket: PathBuf,
    export: String,
    /// The live connection; `None` while the server is away.
    current: Mutex<Option<Arc<vrpc_hosted::Client>>>,
    stopping: AtomicBool,
}

impl Shared {
    fn current(&self) -> Option<Arc<vrpc_hosted::Client>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(
        &self,
        client: Option<Arc<vrpc_hosted::Client>>,
    ) -> Option<Arc<vrpc_hosted::Client>> {
        std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(PoisonError::into_inner),
            client,
        )
    }
}

/// NFS, MOUNT and the metadata table over hosted VRPC connections to one
/// socket: one at a time, a new one after the server restarts.
#[derive(Debug, Clone)]
pub struct HostedTransport {
    shared: Arc<Shared>,
}

impl HostedTransport {
    /// Connects to the storage domain's socket for `export`.
    ///
    /// # Errors
    /// When the handshake fails or the server refuses the export; a
    /// refusal of this user (the socket's permissions, or the export's
    /// `allow=` options) says so.
    pub fn connect(socket: &Path, export: &str) -> anyhow::Result<Self> {
        let client = connect_explained(socket, export)?;
        Ok(HostedTransport {
            shared: Arc::new(Shared {
                socket: socket.to_path_buf(),
                export: export.to_string(),
                current: Mutex::new(Some(Arc::new(client))),
                stopping: AtomicBool::new(false),
            }),
        })
    }

    /// Whether the export shares a metadata table now.
    pub fn has_table(&self) -> bool {
        self.shared
            .current()
            .is_some_and(|client| client.metadata_table().is_some())
    }

    /// The metadata table of whichever connection is live.
    pub fn table(&self) -> Arc<dyn AttributeTable> {
        Arc::new(HostedTable(Arc::clone(&self.shared)))
    }

    /// Follows the connection every `interval` (no RPC: the socket tells)
    /// and connects again when the server comes back; see the module
    /// documentation.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn spawn_supervisor(&self, interval: Duration) -> std::io::Result<()> {
        let shared = Arc::clone(&self.shared);
        thread::Builder::new()
            .name("vrpc-hosted-supervisor".into())
            .spawn(move || supervise(&shared, interval))?;
        Ok(())
    }

    /// Disconnects for good (unmount): the supervisor stops, calls fail.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(client) = self.shared.replace(None) {
            client.close();
        }
    }
}

/// The supervisor: drops a dead connection, makes a new one when the
/// server is back.
fn supervise(shared: &Shared, interval: Duration) {
    let mut announced_failure = false;
    while !shared.stopping.load(Ordering::SeqCst) {
        match shared.current() {
            Some(client) if client.is_connected() => thread::sleep(interval),
            Some(_) => {
                log::warn!("the storage domain closed the connection");
                eprintln!("guest-driver: the storage domain went away; calls fail with EIO until it is back");
                if let Some(client) = shared.replace(None) {
                    client.close();
                }
            }
            None => match connect_explained(&shared.socket, &shared.export) {
                Ok(client) => {
                    if shared.stopping.load(Ordering::SeqCst) {
                        client.close();
                        return;
                    }
                    shared.replace(Some(Arc::new(client)));
                    announced_failure = false;
                    log::warn!(
                        "reconnected to the storage domain ({})",
                        shared.socket.display()
                    );
                    eprintln!("guest-driver: reconnected to the storage domain");
                }
                Err(error) => {
                    if !announced_failure {
                        log::info!("not reconnected yet: {error:#}");
                        announced_failure = true;
                    }
                    thread::sleep(RECONNECT_INTERVAL);
                }
            },
        }
    }
}

/// `vrpc_hosted::connect`, with the refusals of this user explained.
fn connect_explained(socket: &Path, export: &str) -> anyhow::Result<vrpc_hosted::Client> {
    let user = || {
        format!(
            "uid {}, gid {}",
            nix::unistd::geteuid(),
            nix::unistd::getegid()
        )
    };
    vrpc_hosted::connect(socket, export).map_err(|error| match error {
        vrpc_hosted::ConnectError::Io(io)
            if io.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            anyhow::anyhow!(
                "permission denied: {} does not let this user ({}) connect; the server's \
                 --vrpc-socket-mode and --vrpc-socket-group decide who may",
                socket.display(),
                user()
            )
        }
        vrpc_hosted::ConnectError::Refused(vrpc_hosted::handshake::Status::NotAdmitted) => {
            anyhow::anyhow!(
                "the storage domain does not admit this user ({}) to export {export}: \
                 the export's allow= options decide who may (allow=uid:N, allow=gid:N, allow=local)",
                user()
            )
        }
        other => anyhow::Error::new(other),
    })
}

impl Transport for HostedTransport {
    fn call(&self, call: Call<'_>) -> Result<Vec<u8>, TransportError> {
        let Some(client) = self.shared.current() else {
            return Err(TransportError::Disconnected(
                "the storage domain is away (reconnecting)".into(),
            ));
        };
        client
            .call(call.record, call.write_payload, call.read_capacity)
            .map_err(|error| match error {
                vrpc_hosted::CallError::Disconnected => {
                    TransportError::Disconnected("the storage domain went away".into())
                }
                vrpc_hosted::CallError::NoPayloadField => TransportError::NoPayloadField,
                vrpc_hosted::CallError::Submit(_)
                | vrpc_hosted::CallError::ReplyTooLarge
                | vrpc_hosted::CallError::NoReply => TransportError::Refused(error.to_string()),
            })
    }
}

/// The metadata table of the live connection.
#[derive(Debug)]
struct HostedTable(Arc<Shared>);

impl AttributeTable for HostedTable {
    fn lookup(&self, file_id: u64, handle: &FileHandle) -> Option<TableEntry> {
        let client = self.0.current()?;
        // A dead server's table stays mapped but is frozen: not an answer.
        if !client.is_connected() {
            return None;
        }
        let table = client.metadata_table()?;
        crate::fs::table::lookup_in(&table, file_id, handle)
    }

    fn changes(&self, since: Option<Cursor>, changed: &mut dyn FnMut(u32)) -> Option<Changed> {
        let client = self.0.current()?;
        if !client.is_connected() {
            return None;
        }
        crate::fs::table::changes_in(&client.metadata_table()?, since, changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A hosted server that echoes each call record back (payload spliced
    /// in), so the record, the payload and the xid are checked end to end.
    #[test]
    fn calls_and_payloads_cross_the_rings() {
        let directory = tempfile::tempdir().unwrap();
        let socket = directory.path().join("vrpc.sock");
        let listener = vrpc_hosted::Listener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let pending = listener
                .accept()
                .unwrap()
                .handshake(Duration::from_secs(5))
                .unwrap();
            assert_eq!(pending.export(), "/export");
            let connection = pending.accept(None, vrpc::DEFAULT_MAX_RECORD).unwrap();
            let _ = connection.serve(|call| Some(call.to_vec()));
        });
        let transport = HostedTransport::connect(&socket, "/export").unwrap();
        let threads: Vec<_> = (0..8u32)
            .map(|index| {
                let transport = transport.clone();
                std::thread::spawn(move || {
                    let xid = 0x1000 + index;
                    let mut record = xid.to_be_bytes().to_vec();
                    record.extend_from_slice(&[index as u8; 8]);
                    record.extend_from_slice(&[0; 4]);
                    let payload = vec![index as u8 ^ 0x5a; 3000 + index as usize];
                    let reply = transport
                        .call(Call {
                            xid,
                            record: &record,
                            write_payload: &payload,
                            read_capacity: 8192,
                        })
                        .unwrap();
                    let expected = super::super::transport::spliced_record(&Call {
                        xid,
                        record: &record,
                        write_payload: &payload,
                        read_capacity: 0,
                    })
                    .unwrap();
                    assert_eq!(reply, expected);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(!transport.has_table());
        transport.shutdown();
        server.join().unwrap();
    }
}
