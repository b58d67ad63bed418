//! Hosted VRPC: memfd rings, eventfd doorbells and a unix-socket handshake.
//!
//! Design: the hosted storage domain and guest-driver talk exactly as on Xen
//! (`vrpc` rings, `metatab` table) but share memfds instead of granted pages,
//! ring eventfds instead of event channels, and pass those files over a
//! unix socket (`SCM_RIGHTS`) instead of publishing grant references in
//! xenstore. The socket stays open for the connection's life: its closing
//! is how each side learns the other died. Specified in `docs/vrpc.md`.
//!
//! Server (storage domain):
//!
//! ```no_run
//! use std::time::Duration;
//! let (table, mut writer) = vrpc_hosted::create_metadata_table(4096, 1).unwrap();
//! let listener = vrpc_hosted::Listener::bind("/tmp/vrpc.sock").unwrap();
//! let pending = listener.accept().unwrap().handshake(Duration::from_secs(5)).unwrap();
//! assert_eq!(pending.export(), "/export");
//! let connection = pending.accept(Some(&table), vrpc::DEFAULT_MAX_RECORD).unwrap();
//! // Usually on a thread per connection:
//! connection.serve(|call| Some(call.to_vec())).unwrap();
//! ```
//!
//! Client (guest-driver), usable from many threads at once:
//!
//! ```no_run
//! let client = vrpc_hosted::connect("/tmp/vrpc.sock", "/export").unwrap();
//! # let call_record: Vec<u8> = Vec::new();
//! let reply = client.call(&call_record, &[], 0).unwrap();
//! if let Some(table) = client.metadata_table() {
//!     let _ = table.lookup(42, metatab::handle_digest(b"handle bytes"));
//! }
//! ```
//!
//! The only `unsafe` is in [`region`] (the mapping) and one line of
//! [`handshake`] (adopting received file descriptors).

pub mod client;
pub mod doorbell;
pub mod handshake;
pub mod region;
pub mod server;

pub use client::{connect, CallError, Client, ConnectError};
pub use doorbell::Waker;
pub use region::MappedRegion;
pub use server::{
    Connection, ConnectionError, HostedReplyPages, Incoming, Listener, PeerCredentials,
    PendingConnection,
};
pub use vrpc::Request;

/// Creates an export's metadata table: a memfd of
/// [`metatab::layout::table_bytes`]`(slot_count)` bytes, formatted for a
/// server that booted with `boot_id`, sealed so that guests it is handed to
/// can only map it read-only. Hand the region to
/// [`PendingConnection::accept`]; keep the writer to publish attributes.
///
/// # Errors
/// The system call that failed, or the slot count being invalid
/// (`InvalidInput`).
pub fn create_metadata_table(
    slot_count: u32,
    boot_id: u64,
) -> std::io::Result<(
    std::sync::Arc<MappedRegion>,
    metatab::Writer<std::sync::Arc<MappedRegion>>,
)> {
    let region = std::sync::Arc::new(MappedRegion::create(
        "vrpc-metatab",
        metatab::layout::table_bytes(slot_count),
    )?);
    let writer = metatab::Writer::create(std::sync::Arc::clone(&region), slot_count, boot_id)
        .map_err(|error| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, error.to_string())
        })?;
    region.seal_for_readers()?;
    Ok((region, writer))
}
