//! The Xen VRPC transport: NFS calls over grant-table rings to the storage
//! domain, and its metadata table mapped read-only (spec: `docs/vrpc.md`,
//! "Xen handshake"; keys: `docs/xenstore.md`).
//!
//! Design: dom0's `storage-domain-ctl attach` creates this guest's device
//! directory `device/vrpc/<n>`; the driver walks the split-driver
//! handshake there: it waits for the backend in InitWait, grants the ring,
//! the data pool and the pool's grant directory (gntalloc), allocates an
//! event channel, publishes them and waits for Connected, then maps the
//! export's metadata table read-only (gntdev). Calls go through
//! `vrpc::client::RingClient`, the same client the hosted transport uses,
//! over a [`XenLink`]: the event channel to sleep on, and the backend's
//! xenstore state, which a watcher thread follows so that a dead or
//! detached storage domain fails calls (EIO) instead of hanging them.
//!
//! When the storage domain goes away (destroyed, or the device detached),
//! a supervisor thread tears the connection down (Closing, waits for the
//! backend's Closed or disappearance, only then ends the grants) and waits
//! for a backend to appear again in the device directory: dom0 re-attaching
//! after restarting the storage domain brings the same mount back, open
//! files included (file handles are keyed by the volume, not the boot).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nfs3::FileHandle;
use vrpc::client::{Link, RingClient, Wake};
use vrpc::xenstore as keys;
use vrpc::{Frontend, RingParameters};
use xen_abi::xenbus::XenbusState;
use xen_linux::evtchn::EventChannel;
use xen_linux::gntalloc::GrantedPages;
use xen_linux::gntdev::ForeignPages;
use xen_linux::xenstore::Xenstore;

use super::transport::{Call, Transport, TransportError};
use crate::fs::table::{AttributeTable, Changed, Cursor, TableEntry};

/// Ring parameters on Xen: 32 slots of 2 KiB (17 ring pages) and a pool of
/// 480 pages, so that one mount holds 17 + 480 + 1 grants and two mounts
/// fit Linux's default gntalloc limit of 1,024 grants.
pub const XEN_PARAMETERS: RingParameters = RingParameters {
    slot_count: 32,
    slot_size: 2048,
    pool_pages: 480,
};

/// How long the first connection may take (the storage domain may still
/// be booting, or dom0 may attach this guest just after creating it).
const FIRST_CONNECT: Duration = Duration::from_secs(120);
/// How long the backend may take to confirm Closed at teardown.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Where the driver's device lives in xenstore.
#[derive(Debug, Clone)]
pub struct Device {
    /// `/local/domain/<self>/device/vrpc/<n>`.
    pub frontend: String,
    /// The export dom0 attached this device to.
    pub export: String,
}

/// Which device to use, from the command line.
#[derive(Debug, Clone, Default)]
pub struct DeviceChoice {
    /// `--device N`.
    pub device: Option<u32>,
    /// `--backend NAME|DOMID`.
    pub backend: Option<String>,
    /// `--export PATH` when given explicitly.
    pub export: Option<String>,
    /// `--pool-pages N`: pages granted as the data pool (at most what the
    /// backend allows) [default: [`XEN_PARAMETERS`]'s].
    pub pool_pages: Option<u32>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read_string(store: &Xenstore, path: &str) -> anyhow::Result<Option<String>> {
    Ok(store
        .read(path)
        .with_context(|| format!("reading {path}"))?
        .map(|value| String::from_utf8_lossy(&value).into_owned()))
}

fn read_number(store: &Xenstore, path: &str) -> anyhow::Result<Option<u32>> {
    match store
        .read(path)
        .with_context(|| format!("reading {path}"))?
    {
        None => Ok(None),
        Some(value) => keys::parse_number(&value).map(Some).ok_or_else(|| {
            anyhow!(
                "{path} holds {:?}, not a number",
                String::from_utf8_lossy(&value)
            )
        }),
    }
}

fn read_state(store: &Xenstore, directory: &str) -> Option<XenbusState> {
    store
        .read(&format!("{directory}/{}", keys::STATE))
        .ok()
        .flatten()
        .and_then(|value| XenbusState::parse(&value))
}

fn write_state(store: &Xenstore, directory: &str, state: XenbusState) -> anyhow::Result<()> {
    store
        .write(
            &format!("{directory}/{}", keys::STATE),
            state.number().to_string().as_bytes(),
        )
        .with_context(|| format!("writing {directory}/state"))?;
    Ok(())
}

/// Finds this guest's VRPC device, waiting up to `wait` for dom0 to
/// attach one.
///
/// # Errors
/// None attached in time, or several and nothing to choose by.
pub fn find_device(
    store: &Xenstore,
    choice: &DeviceChoice,
    wait: Duration,
) -> anyhow::Result<Device> {
    let own = store.domain_id().context("reading this domain's id")?;
    let directory = format!("/local/domain/{own}/{}", keys::FRONTEND_DIRECTORY);
    let backend_id = match &choice.backend {
        None => None,
        Some(text) => Some(match text.parse::<u16>() {
            Ok(id) => id,
            Err(_) => store
                .domain_id_by_name(text)
                .with_context(|| format!("looking up domain {text}"))?
                .ok_or_else(|| anyhow!("no domain named {text}"))?,
        }),
    };
    let deadline = Instant::now() + wait;
    let mut announced = false;
    loop {
        let mut candidates = Vec::new();
        for name in store.directory(&directory).unwrap_or_default() {
            let Ok(number) = name.parse::<u32>() else {
                continue;
            };
            if choice.device.is_some_and(|wanted| wanted != number) {
                continue;
            }
            let frontend = format!("{directory}/{name}");
            let export =
                read_string(store, &format!("{frontend}/{}", keys::EXPORT))?.unwrap_or_default();
            if choice
                .export
                .as_ref()
                .is_some_and(|wanted| *wanted != export)
            {
                continue;
            }
            if let Some(wanted) = backend_id {
                let id = read_number(store, &format!("{frontend}/backend-id"))?;
                if id != Some(u32::from(wanted)) {
                    continue;
                }
            }
            candidates.push(Device { frontend, export });
        }
        match candidates.len() {
            1 => return Ok(candidates.remove(0)),
            0 if Instant::now() < deadline => {
                if !announced {
                    eprintln!(
                        "guest-driver: waiting for dom0 to attach this domain (storage-domain-ctl attach {own} ...)"
                    );
                    announced = true;
                }
                thread::sleep(Duration::from_millis(250));
            }
            0 => bail!(
                "no VRPC device in {directory} matches (attach this domain from dom0: storage-domain-ctl attach {own} --export PATH)"
            ),
            _ => bail!(
                "{} VRPC devices in {directory} match: choose one with --device N or --export PATH",
                candidates.len()
            ),
        }
    }
}

/// The platform link of one Xen connection.
#[derive(Debug)]
pub struct XenLink {
    channel: Arc<EventChannel>,
    gone: AtomicBool,
    /// Wakes a caller asleep on the event channel when the backend goes.
    waker: nix::sys::eventfd::EventFd,
}

impl XenLink {
    fn new(channel: Arc<EventChannel>) -> std::io::Result<Self> {
        let waker = nix::sys::eventfd::EventFd::from_flags(
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .map_err(|error| std::io::Error::from_raw_os_error(error as i32))?;
        Ok(Self {
            channel,
            gone: AtomicBool::new(false),
            waker,
        })
    }

    fn mark_gone(&self) {
        self.gone.store(true, Ordering::SeqCst);
        let _ = self.waker.write(1);
    }
}

impl Link for XenLink {
    fn wait(&self, timeout: Option<Duration>) -> std::io::Result<Wake> {
        use std::os::fd::AsFd;
        if self.gone.load(Ordering::SeqCst) {
            return Ok(Wake::PeerGone);
        }
        let woken = self.channel.wait(timeout, self.waker.as_fd())?;
        if self.gone.load(Ordering::SeqCst) {
            return Ok(Wake::PeerGone);
        }
        Ok(if woken.timed_out() {
            Wake::TimedOut
        } else {
            Wake::Rang
        })
    }

    fn is_alive(&self) -> bool {
        !self.gone.load(Ordering::SeqCst)
    }

    fn close(&self) {
        self.mark_gone();
    }
}

type XenRing = RingClient<GrantedPages, GrantedPages, Arc<EventChannel>, XenLink>;

/// One handshake's worth of connection.
#[derive(Debug)]
struct XenConnection {
    ring: XenRing,
    backend: String,
    /// The pool's grant directory: granted for the connection's life.
    _directory: GrantedPages,
    /// The export's metadata table, mapped read-only.
    table: Option<ForeignPages>,
}

/// Why a connection attempt failed.
#[derive(Debug)]
enum ConnectFailure {
    /// The storage domain refused this guest; the reason is its `error`.
    Refused(String),
    /// Anything else; worth retrying later.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for ConnectFailure {
    fn from(error: anyhow::Error) -> Self {
        Self::Other(error)
    }
}

/// Waits until `accept` likes the backend's state, or the backend refuses
/// (Closing with an `error` key), or `deadline` passes.
fn wait_backend(
    store: &Xenstore,
    backend: &str,
    deadline: Instant,
    accept: impl Fn(XenbusState) -> bool,
) -> Result<XenbusState, ConnectFailure> {
    loop {
        let state = read_state(store, backend);
        if let Some(state) = state {
            if accept(state) {
                return Ok(state);
            }
            if matches!(state, XenbusState::Closing | XenbusState::Closed) {
                if let Ok(Some(error)) = read_string(store, &format!("{backend}/{}", keys::ERROR)) {
                    return Err(ConnectFailure::Refused(error));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(ConnectFailure::Other(anyhow!(
                "the storage domain's backend {backend} stayed in state {state:?}"
            )));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// See [`XenTransport::largest_payload`].
fn largest_payload(pool_pages: u32) -> u32 {
    let bytes = pool_pages
        .saturating_sub(1)
        .saturating_mul(vrpc::PAGE_SIZE as u32);
    let power = match bytes.checked_ilog2() {
        Some(log) => 1u32 << log,
        None => 0,
    };
    power.clamp(4096, 1024 * 1024)
}

/// Runs the handshake once.
fn connect_once(
    store: &Xenstore,
    device: &Device,
    wanted: RingParameters,
    deadline: Instant,
) -> Result<XenConnection, ConnectFailure> {
    let frontend = &device.frontend;
    let backend = read_string(store, &format!("{frontend}/backend"))?
        .ok_or_else(|| anyhow!("{frontend} has no backend (is the device attached?)"))?;
    let backend_id = read_number(store, &format!("{frontend}/backend-id"))?
        .and_then(|id| u16::try_from(id).ok())
        .ok_or_else(|| anyhow!("{frontend} has no valid backend-id"))?;
    write_state(store, frontend, XenbusState::Initialising)?;
    wait_backend(store, &backend, deadline, |state| {
        state == XenbusState::InitWait
    })?;

    let limit = |key: &str, default: u32| -> anyhow::Result<u32> {
        Ok(read_number(store, &format!("{backend}/{key}"))?.unwrap_or(default))
    };
    let parameters = RingParameters {
        slot_count: wanted
            .slot_count
            .min(limit(keys::MAX_SLOT_COUNT, wanted.slot_count)?),
        slot_size: wanted
            .slot_size
            .min(limit(keys::MAX_SLOT_SIZE, wanted.slot_size)?),
        pool_pages: wanted
            .pool_pages
            .min(limit(keys::MAX_POOL_PAGES, wanted.pool_pages)?),
    }
    .validate()
    .map_err(|error| anyhow!("the backend's limits leave no usable ring: {error}"))?;

    let ring_pages = parameters.ring_bytes() / vrpc::PAGE_SIZE;
    let pool_pages = parameters.pool_pages as usize;
    let directory_pages = keys::pool_directory_pages(parameters.pool_pages) as usize;
    let ring = GrantedPages::allocate(backend_id, ring_pages, true).context("granting the ring")?;
    let pool = GrantedPages::allocate(backend_id, pool_pages.max(1), true)
        .context("granting the data pool")?;
    let directory = GrantedPages::allocate(backend_id, directory_pages.max(1), false)
        .context("granting the pool directory")?;
    let ring_references = ring.references().to_vec();
    let pool_references = pool.references().to_vec();
    let directory_references = directory.references().to_vec();
    {
        use vrpc::SharedMemory;
        let mut bytes = Vec::with_capacity(pool_references.len() * 4);
        for reference in &pool_references[..pool_pages] {
            bytes.extend_from_slice(&reference.to_le_bytes());
        }
        directory
            .write(0, &bytes)
            .map_err(|error| anyhow!("writing the pool directory: {error}"))?;
    }
    let channel =
        Arc::new(EventChannel::bind_unbound(backend_id).context("allocating an event channel")?);
    let port = channel.port();
    let frontend_ring = Frontend::new(ring, pool, Arc::clone(&channel), parameters)
        .map_err(|error| anyhow!("initialising the ring: {error}"))?;

    let mut writes: Vec<(String, String)> = vec![
        (keys::VERSION.into(), "1".into()),
        (keys::SLOT_COUNT.into(), parameters.slot_count.to_string()),
        (keys::SLOT_SIZE.into(), parameters.slot_size.to_string()),
        (keys::POOL_PAGES.into(), parameters.pool_pages.to_string()),
        (keys::RING_PAGES.into(), ring_pages.to_string()),
        (
            keys::POOL_DIRECTORY_PAGES.into(),
            directory_pages.to_string(),
        ),
        (keys::EVENT_CHANNEL.into(), port.to_string()),
    ];
    for (index, reference) in ring_references.iter().enumerate() {
        writes.push((
            format!("{}{index}", keys::RING_REFERENCE_PREFIX),
            reference.to_string(),
        ));
    }
    for (index, reference) in directory_references
        .iter()
        .take(directory_pages)
        .enumerate()
    {
        writes.push((
            format!("{}{index}", keys::POOL_DIRECTORY_REFERENCE_PREFIX),
            reference.to_string(),
        ));
    }
    writes.push((
        keys::STATE.into(),
        XenbusState::Initialised.number().to_string(),
    ));
    store
        .write_all_in_transaction(
            &writes
                .iter()
                .map(|(key, value)| (format!("{frontend}/{key}"), value.as_bytes().to_vec()))
                .collect::<Vec<_>>(),
        )
        .context("publishing the ring in xenstore")?;

    wait_backend(
        store,
        &backend,
        Instant::now() + Duration::from_secs(60),
        |state| state == XenbusState::Connected,
    )?;

    let table = map_table(store, &backend, backend_id)?;
    write_state(store, frontend, XenbusState::Connected)?;
    let link = XenLink::new(channel).context("creating the link's eventfd")?;
    Ok(XenConnection {
        ring: RingClient::new(frontend_ring, link),
        backend,
        _directory: directory,
        table,
    })
}

/// Maps the export's metadata table read-only through its grant directory.
fn map_table(
    store: &Xenstore,
    backend: &str,
    backend_id: u16,
) -> anyhow::Result<Option<ForeignPages>> {
    let bytes =
        read_number(store, &format!("{backend}/{}", keys::METATAB_BYTES))?.unwrap_or(0) as usize;
    if bytes == 0 {
        return Ok(None);
    }
    let pages = bytes.div_ceil(vrpc::PAGE_SIZE);
    let directory_pages = read_number(
        store,
        &format!("{backend}/{}", keys::METATAB_DIRECTORY_PAGES),
    )?
    .unwrap_or(0) as usize;
    if directory_pages != pages.div_ceil(keys::REFERENCES_PER_DIRECTORY_PAGE as usize) {
        bail!("the backend's metadata table directory has {directory_pages} pages for {pages} table pages");
    }
    let mut directory_references = Vec::with_capacity(directory_pages);
    for index in 0..directory_pages {
        let key = format!(
            "{backend}/{}{index}",
            keys::METATAB_DIRECTORY_REFERENCE_PREFIX
        );
        directory_references
            .push(read_number(store, &key)?.ok_or_else(|| anyhow!("{key} is missing"))?);
    }
    let directory = ForeignPages::map(backend_id, &directory_references, false)
        .context("mapping the metadata table's directory")?;
    let mut raw = vec![0u8; pages * 4];
    {
        use vrpc::SharedMemory;
        directory
            .read(0, &mut raw)
            .map_err(|error| anyhow!("reading the metadata table's directory: {error}"))?;
    }
    let references: Vec<u32> = raw
        .chunks_exact(4)
        .map(|chunk| u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect();
    drop(directory);
    let table =
        ForeignPages::map(backend_id, &references, false).context("mapping the metadata table")?;
    metatab::Reader::attach(&table).map_err(|error| anyhow!("unusable metadata table: {error}"))?;
    Ok(Some(table))
}

/// Closing; waits (bounded) for the backend to stop using our pages before
/// the grants end with the connection.
fn teardown(store: &Xenstore, device: &Device, connection: XenConnection) {
    connection.ring.close();
    let _ = write_state(store, &device.frontend, XenbusState::Closing);
    let deadline = Instant::now() + CLOSE_WAIT;
    while Instant::now() < deadline {
        match read_state(store, &connection.backend) {
            None | Some(XenbusState::Closed) => break,
            Some(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
    // Grants end here (gntalloc keeps a page the backend still maps until
    // it lets go, so a late backend cannot scribble over reused memory).
    drop(connection);
    let _ = write_state(store, &device.frontend, XenbusState::Closed);
}

#[derive(Debug)]
struct Shared {
    store: Xenstore,
    device: Device,
    /// The ring this guest asks for (the backend's limits may shrink it).
    wanted: RingParameters,
    current: Mutex<Option<Arc<XenConnection>>>,
    stopping: AtomicBool,
}

impl Shared {
    fn current(&self) -> Option<Arc<XenConnection>> {
        lock(&self.current).clone()
    }
}

/// NFS, MOUNT and the metadata table over Xen grant rings.
#[derive(Debug, Clone)]
pub struct XenTransport {
    shared: Arc<Shared>,
}

impl XenTransport {
    /// Finds this guest's device and connects.
    ///
    /// # Errors
    /// No device, the storage domain refused (its reason is in the error),
    /// or the handshake failed.
    pub fn connect(choice: &DeviceChoice) -> anyhow::Result<Self> {
        let store = Xenstore::open().context("opening xenstore (/dev/xen/xenbus)")?;
        let device = find_device(&store, choice, FIRST_CONNECT)?;
        let wanted = RingParameters {
            pool_pages: choice.pool_pages.unwrap_or(XEN_PARAMETERS.pool_pages),
            ..XEN_PARAMETERS
        };
        let connection = match connect_once(&store, &device, wanted, Instant::now() + FIRST_CONNECT)
        {
            Ok(connection) => connection,
            Err(ConnectFailure::Refused(reason)) => {
                let _ = write_state(&store, &device.frontend, XenbusState::Closed);
                bail!(
                    "the storage domain refused export {}: {reason}",
                    device.export
                )
            }
            Err(ConnectFailure::Other(error)) => {
                let _ = write_state(&store, &device.frontend, XenbusState::Closed);
                return Err(error.context(format!("connecting {}", device.frontend)));
            }
        };
        let shared = Arc::new(Shared {
            store,
            device,
            wanted,
            current: Mutex::new(Some(Arc::new(connection))),
            stopping: AtomicBool::new(false),
        });
        let supervisor = Arc::clone(&shared);
        thread::Builder::new()
            .name("vrpc-xen-supervisor".into())
            .spawn(move || supervise(&supervisor))
            .context("starting the connection supervisor")?;
        Ok(Self { shared })
    }

    /// The largest READ or WRITE payload to send or ask for: what the
    /// pool this guest asked for holds with a page to spare, rounded down
    /// to a power of two, at most 1 MiB (480 pages: 1 MiB; 16 pages:
    /// 32 KiB). A larger call could never be carried; calls of this size
    /// wait for each other's pages when several are in flight.
    pub fn largest_payload(&self) -> u32 {
        largest_payload(self.shared.wanted.pool_pages)
    }

    /// The export the device is attached to.
    pub fn export(&self) -> &str {
        &self.shared.device.export
    }

    /// The device's xenstore directory.
    pub fn frontend(&self) -> &str {
        &self.shared.device.frontend
    }

    /// The metadata table, as the file system reads it.
    pub fn table(&self) -> Arc<dyn AttributeTable> {
        Arc::new(XenTable(Arc::clone(&self.shared)))
    }

    /// Whether the export shares a metadata table now.
    pub fn has_table(&self) -> bool {
        self.shared
            .current()
            .is_some_and(|connection| connection.table.is_some())
    }

    /// Disconnects for good (unmount): Closing, then Closed once the
    /// backend let go.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let taken = lock(&self.shared.current).take();
        if let Some(connection) = taken {
            release(&self.shared, connection);
        }
    }
}

/// Closes `connection` and tears it down once the callers still inside
/// `call` (they return at once: the link is closed) have let go of it. A
/// caller that holds on past [`CLOSE_WAIT`] keeps the grants alive: they
/// are leaked rather than ended under a page it may still reach.
fn release(shared: &Shared, mut connection: Arc<XenConnection>) {
    connection.ring.link().mark_gone();
    connection.ring.close();
    let deadline = Instant::now() + CLOSE_WAIT;
    loop {
        match Arc::try_unwrap(connection) {
            Ok(owned) => return teardown(&shared.store, &shared.device, owned),
            Err(still) if Instant::now() < deadline => {
                connection = still;
                thread::sleep(Duration::from_millis(20));
            }
            Err(still) => {
                log::warn!("a caller still holds the old connection; its grants are kept");
                std::mem::forget(still);
                let _ = write_state(&shared.store, &shared.device.frontend, XenbusState::Closed);
                return;
            }
        }
    }
}

/// Follows the backend: marks the connection dead when the backend leaves
/// Connected (or vanishes), tears it down and connects again when dom0
/// attaches the device to a storage domain again.
fn supervise(shared: &Shared) {
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Some(connection) = shared.current() else {
            // Not connected: wait for a backend in InitWait and connect.
            match connect_once(
                &shared.store,
                &shared.device,
                shared.wanted,
                Instant::now() + Duration::from_secs(5),
            ) {
                Ok(connection) => {
                    if shared.stopping.load(Ordering::SeqCst) {
                        teardown(&shared.store, &shared.device, connection);
                        return;
                    }
                    log::warn!("reconnected to the storage domain ({})", connection.backend);
                    eprintln!("guest-driver: reconnected to the storage domain");
                    *lock(&shared.current) = Some(Arc::new(connection));
                }
                Err(ConnectFailure::Refused(reason)) => {
                    log::warn!("the storage domain refused the reconnection: {reason}");
                    thread::sleep(Duration::from_secs(1));
                }
                Err(ConnectFailure::Other(error)) => {
                    log::debug!("not reconnected yet: {error:#}");
                    thread::sleep(Duration::from_millis(200));
                }
            }
            continue;
        };
        let alive = connection.ring.is_connected()
            && read_state(&shared.store, &connection.backend) == Some(XenbusState::Connected);
        if alive {
            drop(connection);
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        log::warn!("the storage domain went away ({})", connection.backend);
        eprintln!("guest-driver: the storage domain went away; calls fail until it is back");
        drop(connection);
        let taken = lock(&shared.current).take();
        if let Some(connection) = taken {
            release(shared, connection);
        }
    }
}

impl Transport for XenTransport {
    fn call(&self, call: Call<'_>) -> Result<Vec<u8>, TransportError> {
        let Some(connection) = self.shared.current() else {
            return Err(TransportError::Disconnected(
                "the storage domain is not attached".into(),
            ));
        };
        connection
            .ring
            .call(call.record, call.write_payload, call.read_capacity)
            .map_err(|error| match error {
                vrpc::client::CallError::Disconnected => {
                    TransportError::Disconnected("the storage domain went away".into())
                }
                vrpc::client::CallError::NoPayloadField => TransportError::NoPayloadField,
                other => TransportError::Refused(other.to_string()),
            })
    }
}

/// The metadata table of the current connection.
#[derive(Debug)]
struct XenTable(Arc<Shared>);

impl AttributeTable for XenTable {
    fn lookup(&self, file_id: u64, handle: &FileHandle) -> Option<TableEntry> {
        let connection = self.0.current()?;
        // A dead backend's table stays mapped but is frozen: not an answer.
        if !connection.ring.is_connected() {
            return None;
        }
        let table = metatab::Reader::attach(connection.table.as_ref()?).ok()?;
        crate::fs::table::lookup_in(&table, file_id, handle)
    }

    fn changes(&self, since: Option<Cursor>, changed: &mut dyn FnMut(u32)) -> Option<Changed> {
        let connection = self.0.current()?;
        if !connection.ring.is_connected() {
            return None;
        }
        let table = metatab::Reader::attach(connection.table.as_ref()?).ok()?;
        crate::fs::table::changes_in(&table, since, changed)
    }
}

#[cfg(test)]
mod tests {
    use super::{largest_payload, XEN_PARAMETERS};

    #[test]
    fn the_largest_payload_fits_the_pool_with_a_page_to_spare() {
        assert_eq!(largest_payload(XEN_PARAMETERS.pool_pages), 1024 * 1024);
        assert_eq!(largest_payload(257), 1024 * 1024);
        assert_eq!(largest_payload(256), 512 * 1024);
        assert_eq!(largest_payload(16), 32 * 1024);
        assert_eq!(largest_payload(65536), 1024 * 1024);
        // Smaller than a page's worth: the smallest size FUSE accepts.
        assert_eq!(largest_payload(1), 4096);
        assert_eq!(largest_payload(2), 4096);
        assert_eq!(largest_payload(3), 8192);
    }
}
