//! The hosted VRPC transport: calls over shared-memory rings to a storage
//! domain running as a Linux process (crate `vrpc-hosted`, spec in
//! `docs/vrpc.md`).
//!
//! Design: `vrpc_hosted::Client` already multiplexes calls from many
//! threads and matches replies; this adapter only maps its errors. WRITE
//! data and READ/READDIRPLUS replies travel in the connection's data pages
//! ([`Call::write_payload`], [`Call::read_capacity`]); the records stay
//! standard ONC RPC. The connection also brings the export's metadata
//! table, which [`HostedTransport::client`] exposes to the file system.

use std::path::Path;
use std::sync::Arc;

use super::transport::{Call, Transport, TransportError};

/// NFS, MOUNT and the metadata table over one hosted VRPC connection.
#[derive(Debug, Clone)]
pub struct HostedTransport {
    client: Arc<vrpc_hosted::Client>,
}

impl HostedTransport {
    /// Connects to the storage domain's socket for `export`.
    ///
    /// # Errors
    /// When the handshake fails or the server refuses the export; a
    /// refusal of this user (the socket's permissions, or the export's
    /// `allow=` options) says so.
    pub fn connect(socket: &Path, export: &str) -> anyhow::Result<Self> {
        Ok(HostedTransport {
            client: Arc::new(connect_explained(socket, export)?),
        })
    }

    /// The underlying connection (for its metadata table).
    pub fn client(&self) -> Arc<vrpc_hosted::Client> {
        Arc::clone(&self.client)
    }

    /// Checks every `interval` whether the server hung up (no RPC: the
    /// connection's socket tells). Without calls, `stat`s answered from
    /// the (still mapped, now frozen) metadata table would go on
    /// succeeding after the server died; once the check sees it gone, the
    /// table is no longer used and calls fail with EIO.
    pub fn spawn_liveness_probe(&self, interval: std::time::Duration) {
        let transport = self.clone();
        let spawned = std::thread::Builder::new()
            .name("vrpc-liveness".into())
            .spawn(move || {
                while transport.client.is_connected() {
                    std::thread::sleep(interval);
                }
                log::warn!("the storage domain closed the connection");
            });
        if let Err(error) = spawned {
            log::warn!("no liveness probe ({error}): a dead server is noticed by the next call");
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
        self.client
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
        assert!(transport.client().metadata_table().is_none());
        transport.client().close();
        server.join().unwrap();
    }
}
