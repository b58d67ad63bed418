//! The VRPC backend on Xen: guests' rings served inside the kernel's poll
//! loop, and the per-export metadata tables they map read-only.
//!
//! Design (`/work/notes/contract.md`, `docs/vrpc.md`, `docs/xen.md`): a
//! watch on `backend/vrpc` (our own domain's directory, where the dom0 tool
//! creates `<guest>/<n>`) and on each offered frontend's `state` marks the
//! service dirty; [`VrpcService::settle`] then rescans every device and
//! walks the state machine of `crate::vrpc_device::decide`. Nothing waits
//! for one guest: each step is a few synchronous xenstore requests.
//!
//! - **Offer** (InitWait): the export must exist and admit
//!   `ClientAddress::Domain(guest)`; the table pages and a directory of
//!   their grant references are granted read-only to the guest.
//! - **Connect** (frontend Initialised): the ring is mapped over our heap
//!   (`GNTMAP_host_map`), the pool's directory copied once
//!   (`GNTTABOP_copy`), the event channel bound; the pool itself is only
//!   ever copied ([`GrantCopyPool`]).
//! - **Serve** ([`VrpcService::serve`], `crate::vrpc_serve`): every
//!   connected guest's ready requests (at most a ring's worth per pass, so
//!   no guest starves the others) go through `Server::handle`; replies that
//!   need a commit wait for one `Server::finish` shared by all guests
//!   (group commit).
//! - **Detach**: unmap the ring, close the port, end the grants (a grant
//!   the guest still maps is retried on later passes), Closed (or Closing
//!   with `error` after a protocol error). A failure drops only that guest.

use super::events;
use super::grants::{self, GrantError};
use super::hypercall;
use super::memory::{self, Page};
use super::vrpc_memory::{CopyFailure, EventDoorbell, GrantCopyPool, MappedRing, TablePages};
use super::xenbus;
use super::xenstore::{Transaction, Xenstore, XenstoreError};
use crate::println;
use crate::vrpc_device::{
    admit, decide, directory_pages, pool_references, Action, BackendKeys, ConnectPlan,
    DetachReason, DeviceCounters, DeviceError, DeviceId, FrontendView, Limits, Phase,
    MAX_CONNECTED,
};
use crate::vrpc_serve::{release_durable, retry_parked, serve_pass, GuestRing};
use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use nfs_server::table::TablePublisher;
use nfs_server::{ClientAddress, ExportConfig, Server};
use vfs::FileSystem;
use vrpc::xenstore::{
    BACKEND_DIRECTORY, ERROR, MAX_POOL_PAGES, MAX_SLOT_COUNT, MAX_SLOT_SIZE, METATAB_BYTES,
    METATAB_DIRECTORY_PAGES, METATAB_DIRECTORY_REFERENCE_PREFIX,
};
use vrpc::Backend;
use xen_abi::xenbus::XenbusState;
use xen_abi::{DomainId, EventChannelPort, GrantRef, MachineFrame, PAGE_SIZE};

/// The token of every watch this service sets.
pub const TOKEN: &str = "vrpc";

/// Grant entries kept free for blkfront and netfront reconnections.
const GRANT_RESERVE: usize = 64;

/// How often grants a guest still maps are retried while nothing else
/// wakes the loop.
const LINGER_RETRY_MS: u64 = 1000;

/// How long after a failed rescan the next one runs.
const RESCAN_RETRY_MS: u64 = 1000;

/// How long shutdown waits for guests to unmap the tables.
const SHUTDOWN_LINGER_MS: u64 = 2000;

/// Devices whose counters are kept after they are forgotten.
const HISTORY: usize = 256;

/// One export's metadata table.
#[derive(Debug)]
struct ExportTable {
    /// The publisher holds the other reference.
    pages: Arc<TablePages>,
    frames: Vec<MachineFrame>,
}

#[derive(Debug)]
struct Export {
    config: ExportConfig,
    table: Option<ExportTable>,
}

/// A grant we gave a guest, with the page it owns (directory pages; the
/// table pages belong to the export).
#[derive(Debug)]
struct HeldGrant {
    reference: GrantRef,
    page: Option<Page>,
}

#[derive(Debug)]
struct Connection {
    ring: GuestRing<MappedRing, GrantCopyPool, EventDoorbell>,
    port: EventChannelPort,
    copy_failure: CopyFailure,
}

#[derive(Debug)]
struct Device {
    id: DeviceId,
    phase: Phase,
    export: String,
    /// The frontend's `state` is watched.
    watching: bool,
    grants: Vec<HeldGrant>,
    connection: Option<Connection>,
    counters: DeviceCounters,
    /// Set while serving (no xenstore there); acted on by `settle`.
    failure: Option<DetachReason>,
}

/// The VRPC backend of every guest.
#[derive(Debug)]
pub struct VrpcService {
    exports: Vec<Export>,
    metatab_slots: u32,
    devices: Vec<Device>,
    /// Grants whose guest still mapped them when the device went.
    lingering: Vec<HeldGrant>,
    /// A watch fired since the last rescan.
    dirty: bool,
    /// A failed rescan is retried at this system time.
    rescan_after: Option<u64>,
    /// Counters of forgotten devices.
    history: Vec<(DeviceId, DeviceCounters)>,
    /// Server sessions of devices torn down, to end (their locks go) at
    /// the next pass.
    ended_sessions: Vec<u64>,
}

/// Gives back the room of a list that grew for many guests at once and
/// now holds a quarter of it or less.
fn shrink_when_sparse<T>(list: &mut Vec<T>) {
    if list.len() <= list.capacity() / 4 {
        list.shrink_to_fit();
    }
}

fn report_table_error(export: nfs_server::ExportId, file_id: u64, error: metatab::TableError) {
    println!(
        "metatab: export {:#x}: cannot update inode {file_id}: {error}",
        export.0
    );
}

impl VrpcService {
    /// A table of `metatab_slots` slots per export (none when 0), written
    /// by a publisher installed as `server`'s attribute observer.
    ///
    /// # Errors
    /// When the heap cannot hold the tables.
    pub fn new<F: FileSystem>(
        server: &mut Server<F>,
        metatab_slots: u32,
        boot_id: u64,
    ) -> Result<VrpcService, String> {
        let mut publisher = TablePublisher::new().with_error_report(report_table_error);
        let mut exports = Vec::new();
        for (config, id) in server.exports() {
            let table = if metatab_slots == 0 {
                None
            } else {
                let bytes = metatab::layout::table_bytes(metatab_slots);
                let pages = TablePages::new(bytes / PAGE_SIZE).ok_or_else(|| {
                    format!(
                        "metadata table of export {}: no heap for {} KiB",
                        config.name,
                        bytes >> 10
                    )
                })?;
                let pages = Arc::new(pages);
                let writer = metatab::Writer::create(Arc::clone(&pages), metatab_slots, boot_id)
                    .map_err(|error| format!("metadata table of {}: {error}", config.name))?;
                publisher.insert(id, writer);
                Some(ExportTable {
                    frames: pages.frames(),
                    pages,
                })
            };
            exports.push(Export {
                config: config.clone(),
                table,
            });
        }
        server.set_observer(Box::new(publisher));
        Ok(VrpcService {
            exports,
            metatab_slots,
            devices: Vec::new(),
            lingering: Vec::new(),
            dirty: true,
            rescan_after: None,
            history: Vec::new(),
            ended_sessions: Vec::new(),
        })
    }

    /// Watch `backend/vrpc` (fires at once: the first scan).
    ///
    /// # Errors
    /// When xenstore refuses the watch.
    pub fn start(&mut self, xenstore: &mut Xenstore) -> Result<(), XenstoreError> {
        xenstore.watch(BACKEND_DIRECTORY, TOKEN)?;
        println!(
            "vrpc: serving guests on {BACKEND_DIRECTORY} (metadata table {} slots per export)",
            self.metatab_slots
        );
        Ok(())
    }

    /// A watch with [`TOKEN`] fired.
    pub fn watch_fired(&mut self) {
        self.dirty = true;
    }

    /// Whether a rescan or a teardown is waiting for [`VrpcService::settle`].
    pub fn needs_settle(&self) -> bool {
        self.dirty
            || self
                .rescan_after
                .is_some_and(|deadline| events::system_time_ns() >= deadline)
            || self.devices.iter().any(|device| device.failure.is_some())
    }

    /// The xenstore half of the loop: tear down devices that failed while
    /// serving, rescan after a watch fired (or a failed rescan's retry
    /// time came).
    pub fn settle(&mut self, xenstore: &mut Xenstore) {
        if self
            .rescan_after
            .is_some_and(|deadline| events::system_time_ns() >= deadline)
        {
            self.rescan_after = None;
            self.dirty = true;
        }
        for index in 0..self.devices.len() {
            if let Some(reason) = self.devices[index].failure.take() {
                self.detach(index, reason, xenstore, true);
            }
        }
        if self.dirty {
            self.dirty = false;
            self.rescan(xenstore);
        }
    }

    /// The deadline (system time) by which the loop should wake to retry
    /// lingering grants, if any linger.
    pub fn deadline(&self) -> Option<u64> {
        let linger =
            (!self.lingering.is_empty()).then(|| events::deadline_after_ms(LINGER_RETRY_MS));
        match (linger, self.rescan_after) {
            (Some(linger), Some(rescan)) => Some(linger.min(rescan)),
            (linger, rescan) => linger.or(rescan),
        }
    }

    /// The bound ports of connected guests (at most [`MAX_CONNECTED`]).
    pub fn ports(&self) -> impl Iterator<Item = EventChannelPort> + '_ {
        self.devices
            .iter()
            .filter_map(|device| device.connection.as_ref().map(|connection| connection.port))
    }

    /// Guests connected now.
    pub fn connected(&self) -> usize {
        self.devices
            .iter()
            .filter(|device| device.connection.is_some())
            .count()
    }

    fn list_devices(xenstore: &mut Xenstore) -> Result<BTreeSet<DeviceId>, XenstoreError> {
        let mut present = BTreeSet::new();
        // Only ENOENT means "nothing there": any other failure must not
        // make live devices look removed.
        let guests = match xenstore.directory(Transaction::NONE, BACKEND_DIRECTORY) {
            Ok(guests) => guests,
            Err(XenstoreError::Errno(name)) if name == "ENOENT" => return Ok(present),
            Err(error) => return Err(error),
        };
        for guest in guests {
            let path = format!("{BACKEND_DIRECTORY}/{guest}");
            let numbers = match xenstore.directory(Transaction::NONE, &path) {
                Ok(numbers) => numbers,
                Err(XenstoreError::Errno(name)) if name == "ENOENT" => continue,
                Err(error) => return Err(error),
            };
            present.extend(
                numbers
                    .iter()
                    .filter_map(|number| DeviceId::parse(&guest, number)),
            );
        }
        Ok(present)
    }

    fn frontend_view(xenstore: &mut Xenstore, id: DeviceId) -> FrontendView {
        match xenstore.read(Transaction::NONE, &format!("{}/state", id.frontend_path())) {
            Ok(value) => {
                XenbusState::parse(&value).map_or(FrontendView::Unreadable, FrontendView::State)
            }
            // A destroyed guest's whole directory is gone, and xenstored
            // then answers from the nearest existing ancestor: EACCES
            // (`/local/domain` is not readable by a domU), not ENOENT. A
            // live guest that made its state unreadable to us cannot be
            // served either.
            Err(XenstoreError::Errno(name)) if name == "ENOENT" || name == "EACCES" => {
                FrontendView::Gone
            }
            Err(_) => FrontendView::Unreadable,
        }
    }

    fn rescan(&mut self, xenstore: &mut Xenstore) {
        let present = match Self::list_devices(xenstore) {
            Ok(present) => present,
            Err(error) => {
                // Try again in a while (not at once: a broken xenstore
                // would keep the loop spinning).
                println!("vrpc: listing {BACKEND_DIRECTORY}: {error}; retrying");
                self.rescan_after = Some(events::deadline_after_ms(RESCAN_RETRY_MS));
                return;
            }
        };
        // Devices whose backend directory went: tear down and forget.
        let mut index = 0;
        while index < self.devices.len() {
            if present.contains(&self.devices[index].id) {
                index += 1;
                continue;
            }
            debug_assert_eq!(
                decide(self.devices[index].phase, false, FrontendView::Gone),
                Action::Forget
            );
            self.detach(index, DetachReason::BackendRemoved, xenstore, false);
            let device = self.devices.swap_remove(index);
            shrink_when_sparse(&mut self.devices);
            if device.watching {
                let _ = xenstore.unwatch(&format!("{}/state", device.id.frontend_path()), TOKEN);
            }
            self.remember(device.id, device.counters);
        }
        for id in present {
            if !self.devices.iter().any(|device| device.id == id) {
                self.devices.push(Device {
                    id,
                    phase: Phase::New,
                    export: String::new(),
                    watching: false,
                    grants: Vec::new(),
                    connection: None,
                    counters: DeviceCounters::default(),
                    failure: None,
                });
            }
        }
        for index in 0..self.devices.len() {
            let device = &self.devices[index];
            let view = Self::frontend_view(xenstore, device.id);
            match decide(device.phase, true, view) {
                Action::Wait => {}
                Action::Orphan => self.devices[index].phase = Phase::Orphaned,
                Action::Offer => self.offer(index, xenstore),
                Action::Connect => self.connect(index, xenstore),
                Action::Detach(reason) => self.detach(index, reason, xenstore, true),
                // The backend directory is present (checked above).
                Action::Forget => {}
            }
        }
    }

    fn remember(&mut self, id: DeviceId, counters: DeviceCounters) {
        if counters == DeviceCounters::default() {
            return;
        }
        if let Some((_, total)) = self.history.iter_mut().find(|(known, _)| *known == id) {
            total.add(&counters);
        } else if self.history.len() < HISTORY {
            self.history.push((id, counters));
        }
    }

    /// Refuse: `error` and Closing in the backend directory.
    fn refuse(&mut self, index: usize, error: &DeviceError, xenstore: &mut Xenstore) {
        let device = &mut self.devices[index];
        let id = device.id;
        println!("vrpc: {id} refused: {error}");
        device.phase = Phase::Refused;
        write_failure(xenstore, id, &format!("{error}"));
    }

    fn offer(&mut self, index: usize, xenstore: &mut Xenstore) {
        let id = self.devices[index].id;
        let backend = id.backend_path();
        let mut key = |name: &str| xenstore.read(Transaction::NONE, &format!("{backend}/{name}"));
        let (frontend, frontend_id, export) =
            match (key("frontend"), key("frontend-id"), key("export")) {
                (Ok(frontend), Ok(frontend_id), Ok(export)) => (frontend, frontend_id, export),
                // Not written yet: the dom0 tool's write fires the watch again.
                _ => return,
            };
        let keys = match BackendKeys::parse(id, &frontend, &frontend_id, &export) {
            Ok(keys) => keys,
            Err(error) => return self.refuse(index, &error, xenstore),
        };
        let export_index = match admit(
            self.exports.iter().map(|export| &export.config),
            &keys.export,
            id.guest,
        ) {
            Ok(export_index) => export_index,
            Err(error) => return self.refuse(index, &error, xenstore),
        };
        let guest = DomainId(id.guest);
        let granted = match &self.exports[export_index].table {
            Some(table) => grant_table(guest, &table.frames),
            None => Ok(Vec::new()),
        };
        let (grants, directory) = match granted {
            Ok(grants) => grants
                .into_iter()
                .partition::<Vec<_>, _>(|grant| grant.page.is_none()),
            Err(error) => return self.refuse(index, &error, xenstore),
        };
        let table_bytes = if self.exports[export_index].table.is_some() {
            metatab::layout::table_bytes(self.metatab_slots)
        } else {
            0
        };
        let limits = Limits::XEN.parameters;
        let mut values: Vec<(String, String)> = vec![
            (
                String::from(MAX_SLOT_COUNT),
                format!("{}", limits.slot_count),
            ),
            (String::from(MAX_SLOT_SIZE), format!("{}", limits.slot_size)),
            (
                String::from(MAX_POOL_PAGES),
                format!("{}", limits.pool_pages),
            ),
            (String::from(METATAB_BYTES), format!("{table_bytes}")),
            (
                String::from(METATAB_DIRECTORY_PAGES),
                format!("{}", directory.len()),
            ),
        ];
        for (page, grant) in directory.iter().enumerate() {
            values.push((
                format!("{METATAB_DIRECTORY_REFERENCE_PREFIX}{page}"),
                format!("{}", grant.reference.0),
            ));
        }
        let device = &mut self.devices[index];
        device.grants = grants;
        device.grants.extend(directory);
        if let Err(error) = write_in_transaction(xenstore, &backend, &values, XenbusState::InitWait)
        {
            let reason = DeviceError::Local(format!("publishing the limits: {error}"));
            self.release_grants(index);
            return self.refuse(index, &reason, xenstore);
        }
        let device = &mut self.devices[index];
        device.export = keys.export;
        device.phase = Phase::Offered;
        if !device.watching {
            device.watching = xenstore
                .watch(&format!("{}/state", id.frontend_path()), TOKEN)
                .is_ok();
        }
    }

    fn connect(&mut self, index: usize, xenstore: &mut Xenstore) {
        let id = self.devices[index].id;
        let result = if self.connected() >= MAX_CONNECTED {
            Err(DeviceError::TooManyConnections)
        } else {
            open_connection(id, xenstore)
        };
        let (connection, parameters) = match result {
            Ok(opened) => opened,
            Err(error) => {
                self.release_grants(index);
                self.devices[index].phase = Phase::Closed;
                println!("vrpc: {id} refused: {error}");
                write_failure(xenstore, id, &format!("{error}"));
                return;
            }
        };
        let device = &mut self.devices[index];
        device.connection = Some(connection);
        device.phase = Phase::Connected;
        device.counters.connections += 1;
        if let Err(error) = xenbus::switch_state(
            xenstore,
            Transaction::NONE,
            &id.backend_path(),
            XenbusState::Connected,
        ) {
            // The guest never sees Connected: give up on it.
            let reason = DetachReason::ProtocolError(format!("writing state Connected: {error}"));
            return self.detach(index, reason, xenstore, true);
        }
        let (heap_used, _) = memory::heap_usage();
        println!(
            "vrpc: {id} connected to export {} (ring {} pages, pool {} pages), heap {} KiB used",
            self.devices[index].export,
            parameters.ring_bytes() / PAGE_SIZE,
            parameters.pool_pages,
            heap_used >> 10
        );
    }

    /// End the device's grants; those the guest still maps linger.
    fn release_grants(&mut self, index: usize) {
        let grants = core::mem::take(&mut self.devices[index].grants);
        for grant in grants {
            match grants::end(grant.reference) {
                Ok(()) => drop(grant.page),
                Err(_) => self.lingering.push(grant),
            }
        }
    }

    fn retry_lingering(&mut self) {
        if self.lingering.is_empty() {
            return;
        }
        self.lingering
            .retain(|grant| match grants::end(grant.reference) {
                Ok(()) => false,
                Err(GrantError::InUse) => true,
                Err(_) => false,
            });
        // Every guest's table grants land here when many detach at once
        // (259 a guest by default, 16 bytes each): give the room back once
        // they are ended, or it stays as a high-water mark of the heap.
        shrink_when_sparse(&mut self.lingering);
    }

    /// Tear the device down: unmap the ring, close the port, end the
    /// grants; then Closed (or Closing with `error` for a failure) when
    /// `write_state`.
    fn detach(
        &mut self,
        index: usize,
        reason: DetachReason,
        xenstore: &mut Xenstore,
        write_state: bool,
    ) {
        let device = &mut self.devices[index];
        let id = device.id;
        let held = device.connection.is_some() || !device.grants.is_empty();
        if let Some(connection) = device.connection.take() {
            device.counters.requests += connection.ring.requests;
            device.counters.replies += connection.ring.replies;
            let port = connection.port;
            if connection.ring.session != nfs_server::locks::NO_SESSION {
                self.ended_sessions.push(connection.ring.session);
            }
            // Dropping the backend unmaps the ring and restores the heap
            // pages' own mappings (or leaks them if Xen refuses).
            drop(connection);
            hypercall::close(port);
        }
        if matches!(reason, DetachReason::ProtocolError(_)) {
            device.counters.protocol_errors += 1;
        }
        let was = device.phase;
        device.phase = Phase::Closed;
        self.release_grants(index);
        if write_state {
            if reason.is_failure() {
                write_failure(xenstore, id, &format!("{reason}"));
            } else {
                let _ = xenbus::switch_state(
                    xenstore,
                    Transaction::NONE,
                    &id.backend_path(),
                    XenbusState::Closed,
                );
            }
        }
        if held || matches!(was, Phase::Offered | Phase::Connected) {
            let (heap_used, _) = memory::heap_usage();
            println!(
                "vrpc: {id} detached ({reason}), heap {} KiB used",
                heap_used >> 10
            );
        }
    }

    /// Serve every connected guest: at most a ring's worth of requests
    /// each (`crate::vrpc_serve::serve_pass`); replies that need a commit
    /// are held until [`VrpcService::release`]. Returns whether any guest
    /// may have more work right away.
    pub fn serve<F: FileSystem + vfs::WaitControl>(
        &mut self,
        server: &mut Server<F>,
        reads: &mut crate::disk_reads::DiskReads,
    ) -> bool {
        // Guests gone since the last pass lose their locks.
        for session in self.ended_sessions.drain(..) {
            server.end_session(session);
        }
        // Grants guests still mapped when their device went (no xenstore
        // needed: only the grant entries are looked at).
        self.retry_lingering();
        // Cleared before any ring is looked at: a doorbell rung from now
        // on makes the next poll return at once.
        for connection in self
            .devices
            .iter()
            .filter_map(|device| device.connection.as_ref())
        {
            events::clear_pending(connection.port);
        }
        let rings = self
            .devices
            .iter_mut()
            .filter(|device| device.failure.is_none())
            .filter_map(|device| device.connection.as_mut())
            .map(|connection| &mut connection.ring);
        let busy = serve_pass(rings, server, reads);
        self.collect_failures();
        busy
    }

    /// Try again the parked calls whose blocks have been read (right
    /// after a fill).
    pub fn retry_parked<F: FileSystem + vfs::WaitControl>(
        &mut self,
        server: &mut Server<F>,
        reads: &mut crate::disk_reads::DiskReads,
    ) {
        let rings = self
            .devices
            .iter_mut()
            .filter(|device| device.failure.is_none())
            .filter_map(|device| device.connection.as_mut())
            .map(|connection| &mut connection.ring);
        retry_parked(rings, server, reads);
        self.collect_failures();
    }

    /// Calls parked for the disk, over every guest.
    pub fn parked(&self) -> usize {
        self.devices
            .iter()
            .filter_map(|device| device.connection.as_ref())
            .map(|connection| connection.ring.parked())
            .sum()
    }

    /// Replies held for a commit, over every guest.
    pub fn held(&self) -> usize {
        self.devices
            .iter()
            .filter_map(|device| device.connection.as_ref())
            .map(|connection| connection.ring.held())
            .sum()
    }

    /// Answer the held replies the last commit made durable (all of them,
    /// as NFS3ERR_IO, when `commit_failed`); returns how many are still
    /// held.
    pub fn release<F: FileSystem>(&mut self, server: &Server<F>, commit_failed: bool) -> usize {
        let rings = self
            .devices
            .iter_mut()
            .filter_map(|device| device.connection.as_mut())
            .map(|connection| &mut connection.ring);
        let held = release_durable(rings, server, commit_failed);
        self.collect_failures();
        held
    }

    /// Turn failed rings into device failures (acted on by `settle`).
    fn collect_failures(&mut self) {
        for device in &mut self.devices {
            let Some(connection) = device.connection.as_ref() else {
                continue;
            };
            if device.failure.is_none() {
                if let Some(error) = connection.ring.failure() {
                    device.failure = Some(protocol_failure(error, &connection.copy_failure));
                }
            }
        }
    }

    /// The final check before sleeping (`RING_FINAL_CHECK_FOR_REQUESTS` on
    /// every ring): whether a request arrived, a guest failed, or xenstore
    /// work is waiting since the last [`VrpcService::serve`].
    pub fn final_check(&mut self) -> bool {
        let mut busy = false;
        for connection in self
            .devices
            .iter_mut()
            .filter_map(|device| device.connection.as_mut())
        {
            busy |= connection.ring.final_check();
        }
        self.collect_failures();
        busy || self.needs_settle()
    }

    /// Detach every device (Closed), print the counters, wait a little
    /// for guests to unmap the tables, and leak what they still map.
    pub fn shutdown(mut self, xenstore: &mut Xenstore) {
        for index in 0..self.devices.len() {
            if matches!(self.devices[index].phase, Phase::Offered | Phase::Connected) {
                self.detach(index, DetachReason::Shutdown, xenstore, true);
            }
        }
        let devices = core::mem::take(&mut self.devices);
        for device in devices {
            if device.watching {
                let _ = xenstore.unwatch(&format!("{}/state", device.id.frontend_path()), TOKEN);
            }
            self.remember(device.id, device.counters);
        }
        let _ = xenstore.unwatch(BACKEND_DIRECTORY, TOKEN);
        for (id, counters) in &self.history {
            println!(
                "vrpc: {id}: {} connections, {} requests, {} replies, {} protocol errors",
                counters.connections, counters.requests, counters.replies, counters.protocol_errors
            );
        }
        let deadline = events::deadline_after_ms(SHUTDOWN_LINGER_MS);
        self.retry_lingering();
        while !self.lingering.is_empty() && events::system_time_ns() < deadline {
            events::wait(&[xenstore.port()], events::deadline_after_ms(50));
            self.retry_lingering();
        }
        if !self.lingering.is_empty() {
            println!(
                "vrpc: {} grants still mapped by guests; their pages stay allocated",
                self.lingering.len()
            );
            // Pages a guest may still read must never be reused.
            core::mem::forget(core::mem::take(&mut self.lingering));
            for export in &self.exports {
                if let Some(table) = &export.table {
                    core::mem::forget(Arc::clone(&table.pages));
                }
            }
        }
    }
}

fn protocol_failure(error: vrpc::ProtocolError, copy_failure: &CopyFailure) -> DetachReason {
    DetachReason::ProtocolError(match copy_failure.take() {
        Some(copy) => format!("{error} ({copy})"),
        None => format!("{error}"),
    })
}

/// `error` then Closing in the device's backend directory.
fn write_failure(xenstore: &mut Xenstore, id: DeviceId, reason: &str) {
    let backend = id.backend_path();
    let _ = xenstore.write(
        Transaction::NONE,
        &format!("{backend}/{ERROR}"),
        reason.as_bytes(),
    );
    let _ = xenbus::switch_state(xenstore, Transaction::NONE, &backend, XenbusState::Closing);
}

/// Write `values` under `directory` and switch to `state`, in one
/// transaction (retried while xenstore says EAGAIN).
fn write_in_transaction(
    xenstore: &mut Xenstore,
    directory: &str,
    values: &[(String, String)],
    state: XenbusState,
) -> Result<(), xenbus::XenbusError> {
    for _ in 0..8 {
        let transaction = xenstore.transaction_start()?;
        let mut written = Ok(());
        for (key, value) in values {
            written = xenstore.write(transaction, &format!("{directory}/{key}"), value.as_bytes());
            if written.is_err() {
                break;
            }
        }
        let written = written
            .map_err(xenbus::XenbusError::from)
            .and_then(|()| xenbus::switch_state(xenstore, transaction, directory, state));
        if let Err(error) = written {
            let _ = xenstore.transaction_end(transaction, false);
            return Err(error);
        }
        if xenstore.transaction_end(transaction, true)? {
            return Ok(());
        }
    }
    Err(xenbus::XenbusError::Xenstore(XenstoreError::Errno(
        String::from("EAGAIN"),
    )))
}

/// Grant the table's pages read-only to `guest`, and the directory pages
/// listing those grants. The directory grants own their pages.
fn grant_table(guest: DomainId, frames: &[MachineFrame]) -> Result<Vec<HeldGrant>, DeviceError> {
    let references_per_page = vrpc::xenstore::REFERENCES_PER_DIRECTORY_PAGE as usize;
    let needed = frames.len() + frames.len().div_ceil(references_per_page);
    if grants::free_entries() < needed + GRANT_RESERVE {
        return Err(DeviceError::Local(format!(
            "out of grant entries ({} free, the table needs {needed} and {GRANT_RESERVE} stay in reserve)",
            grants::free_entries()
        )));
    }
    let mut held = Vec::with_capacity(needed);
    let failed = |held: Vec<HeldGrant>, what: String| {
        for grant in held {
            // Nobody has mapped them yet.
            let _ = grants::end(grant.reference);
        }
        Err(DeviceError::Local(what))
    };
    for frame in frames {
        match grants::grant(guest, *frame, true) {
            Ok(reference) => held.push(HeldGrant {
                reference,
                page: None,
            }),
            Err(error) => return failed(held, format!("granting the table: {error:?}")),
        }
    }
    let references: Vec<u32> = held.iter().map(|grant| grant.reference.0).collect();
    for contents in directory_pages(&references) {
        let Some(mut page) = Page::new() else {
            return failed(held, String::from("no heap for the table directory"));
        };
        page.write(0, &contents);
        match grants::grant(guest, page.machine_frame(), true) {
            Ok(reference) => held.push(HeldGrant {
                reference,
                page: Some(page),
            }),
            Err(error) => return failed(held, format!("granting the table directory: {error:?}")),
        }
    }
    Ok(held)
}

/// Read the frontend's keys, map the ring, copy the pool directory, bind
/// the event channel and attach a backend to the ring.
fn open_connection(
    id: DeviceId,
    xenstore: &mut Xenstore,
) -> Result<(Connection, vrpc::RingParameters), DeviceError> {
    let frontend = id.frontend_path();
    // A key that exists but cannot be read (EACCES: a node left with
    // another domain's permissions) is reported as such, not as missing.
    let mut unreadable: Option<String> = None;
    let plan = ConnectPlan::parse(
        |key| match xenstore.read(Transaction::NONE, &format!("{frontend}/{key}")) {
            Ok(value) => Some(value),
            Err(XenstoreError::Errno(name)) if name == "ENOENT" => None,
            Err(error) => {
                unreadable.get_or_insert_with(|| format!("cannot read {frontend}/{key}: {error}"));
                None
            }
        },
        Limits::XEN,
    )
    .map_err(|error| match (&error, unreadable.take()) {
        (DeviceError::MissingKey(_), Some(why)) => DeviceError::Local(why),
        _ => error,
    })?;
    let guest = DomainId(id.guest);
    let ring_references: Vec<GrantRef> =
        plan.ring_references.iter().map(|r| GrantRef(*r)).collect();
    let ring = MappedRing::map(guest, &ring_references)
        .map_err(|error| DeviceError::Local(format!("mapping the ring: {error}")))?;
    let directory_references: Vec<GrantRef> = plan
        .directory_references
        .iter()
        .map(|r| GrantRef(*r))
        .collect();
    let mut directory = vec![0u8; directory_references.len() * PAGE_SIZE];
    grants::copy_from_foreign(guest, &directory_references, 0, &mut directory)
        .map_err(|error| DeviceError::Local(format!("copying the pool directory: {error}")))?;
    let pool_references: Vec<GrantRef> = pool_references(&directory, plan.parameters.pool_pages)?
        .into_iter()
        .map(GrantRef)
        .collect();
    drop(directory);
    let (pool, copy_failure) = GrantCopyPool::new(guest, pool_references);
    let port = hypercall::bind_interdomain(guest, EventChannelPort(plan.event_channel)).map_err(
        |error| {
            DeviceError::Local(format!(
                "binding event channel {}: {error}",
                plan.event_channel
            ))
        },
    )?;
    let backend = match Backend::new(
        ring,
        pool,
        EventDoorbell { port },
        plan.parameters,
        nfs_server::MAX_RECORD_SIZE,
    ) {
        Ok(backend) => backend,
        Err(error) => {
            hypercall::close(port);
            return Err(DeviceError::Local(format!("ring: {error}")));
        }
    };
    let client = ClientAddress::Domain(u32::from(id.guest));
    Ok((
        Connection {
            ring: GuestRing::new(backend, client),
            port,
            copy_failure,
        },
        plan.parameters,
    ))
}
