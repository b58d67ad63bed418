//! `attach`, `detach` and `list` against a xenstore connection.
//!
//! Each command resolves the domains first, then changes xenstore in one
//! transaction (run again on `EAGAIN`); `detach` then waits for the guest
//! to let go. The node plan itself is [`crate::plan`].

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use vrpc::xenstore::{ERROR, EXPORT, STATE};
use xen_linux::xenstore::Transaction;
use xen_linux::{Xenstore, XenstoreError};

use crate::plan::{
    attach_plan, backend_guest_path, backend_path, backend_root, check_export, first_free_device,
    frontend_let_go, frontend_path, frontend_root, state_name, Attachment, BACKEND_ID, FRONTEND,
};

/// A domain as named on the command line: an id or a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainSpec {
    /// A domain id (0 is dom0).
    Id(u16),
    /// A domain name (`/local/domain/<id>/name`).
    Name(String),
}

impl FromStr for DomainSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<DomainSpec, String> {
        if text.is_empty() {
            return Err("empty domain name".to_owned());
        }
        if text.bytes().all(|byte| byte.is_ascii_digit()) {
            return text
                .parse()
                .map(DomainSpec::Id)
                .map_err(|_| format!("domain id {text} is out of range (0-65535)"));
        }
        Ok(DomainSpec::Name(text.to_owned()))
    }
}

impl fmt::Display for DomainSpec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainSpec::Id(id) => write!(formatter, "{id}"),
            DomainSpec::Name(name) => write!(formatter, "{name}"),
        }
    }
}

/// A running domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    /// Its id.
    pub id: u16,
    /// Its name, when it has one.
    pub name: Option<String>,
}

impl fmt::Display for Domain {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(formatter, "{name} (id {})", self.id),
            None => write!(formatter, "domain {}", self.id),
        }
    }
}

/// Why a command failed; each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Talking to xenstore failed.
    #[error(transparent)]
    Store(#[from] XenstoreError),
    /// `--xenstore PATH` could not be opened.
    #[error("cannot reach xenstore at {path}: {error}")]
    XenstoreUnreachable {
        /// The path given.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The guest does not exist.
    #[error("unknown domain {0}: no running domain has that name or id")]
    UnknownDomain(DomainSpec),
    /// The storage domain does not exist.
    #[error("storage domain {0} is not running")]
    StorageDomainNotRunning(DomainSpec),
    /// Guest and storage domain are one domain.
    #[error("{0} cannot be a client of itself")]
    SameDomain(Domain),
    /// The export path is unusable.
    #[error("{0}")]
    BadExport(String),
    /// The device number is taken.
    #[error("{guest} already has vrpc device {device} (detach it first, or leave out --device)")]
    AlreadyAttached {
        /// The guest.
        guest: Domain,
        /// The device.
        device: u32,
    },
    /// Nothing to detach.
    #[error("{guest} has no vrpc device{} on storage domain {storage_domain}", device.map(|device| format!(" {device}")).unwrap_or_default())]
    NotAttached {
        /// The guest.
        guest: Domain,
        /// The device asked for, if any.
        device: Option<u32>,
        /// The storage domain.
        storage_domain: Domain,
    },
    /// The storage domain refused a snapshot request (its reason).
    #[error("{0}")]
    Snapshot(String),
    /// An earlier snapshot request is still waiting for the storage domain.
    #[error("{0} has a snapshot request pending; try again when it is answered")]
    SnapshotPending(Domain),
    /// The storage domain did not answer a snapshot request in time.
    #[error("{storage_domain} did not answer the snapshot request within {seconds} s (the request is withdrawn; a storage domain built before snapshot requests never answers)")]
    SnapshotTimeout {
        /// The storage domain.
        storage_domain: Domain,
        /// The time waited.
        seconds: f64,
    },
    /// The storage domain has published no statistics.
    #[error("{0} publishes no statistics (yet: they appear within 5 s of its start; a storage domain built before they were published never does)")]
    NoStatistics(Domain),
    /// `detach` without `--device` or `--all` on a guest with several.
    #[error("{guest} has vrpc devices {devices}: name one with --device N, or use --all")]
    SeveralDevices {
        /// The guest.
        guest: Domain,
        /// The device numbers, comma-separated.
        devices: String,
    },
}

/// Looks a domain up; `None` when it is not running.
///
/// # Errors
/// [`XenstoreError`] from the lookups.
pub fn resolve(store: &Xenstore, spec: &DomainSpec) -> Result<Option<Domain>, XenstoreError> {
    let id = match spec {
        DomainSpec::Id(id) => {
            if store.read(&format!("/local/domain/{id}"))?.is_none() {
                return Ok(None);
            }
            *id
        }
        DomainSpec::Name(name) => match store.domain_id_by_name(name)? {
            Some(id) => id,
            None => return Ok(None),
        },
    };
    let name = store.read_string(&format!("/local/domain/{id}/name"))?;
    Ok(Some(Domain { id, name }))
}

fn resolve_pair(
    store: &Xenstore,
    guest: &DomainSpec,
    backend: &DomainSpec,
) -> Result<(Domain, Domain), CtlError> {
    let storage_domain = resolve(store, backend)?
        .ok_or_else(|| CtlError::StorageDomainNotRunning(backend.clone()))?;
    let guest = resolve(store, guest)?.ok_or_else(|| CtlError::UnknownDomain(guest.clone()))?;
    if guest.id == storage_domain.id {
        return Err(CtlError::SameDomain(guest));
    }
    Ok((guest, storage_domain))
}

/// Whether the frontend directory `frontend` names a backend that no longer
/// exists (its storage domain was destroyed): such a device may be
/// attached again.
fn is_stale(transaction: &Transaction<'_>, frontend: &str) -> Result<bool, XenstoreError> {
    let Some(backend) = transaction.read(&format!("{frontend}/{}", crate::plan::BACKEND))? else {
        return Ok(true);
    };
    let backend = String::from_utf8_lossy(&backend).into_owned();
    Ok(backend.is_empty() || transaction.read(&backend)?.is_none())
}

/// Listing a directory, inside a transaction or not.
trait Nodes {
    fn directory(&self, path: &str) -> Result<Vec<String>, XenstoreError>;
}

impl Nodes for Xenstore {
    fn directory(&self, path: &str) -> Result<Vec<String>, XenstoreError> {
        Xenstore::directory(self, path)
    }
}

impl Nodes for Transaction<'_> {
    fn directory(&self, path: &str) -> Result<Vec<String>, XenstoreError> {
        Transaction::directory(self, path)
    }
}

/// Children of `path`, empty when it does not exist.
fn children(nodes: &impl Nodes, path: &str) -> Result<Vec<String>, XenstoreError> {
    match nodes.directory(path) {
        Ok(names) => Ok(names),
        Err(error) if error.is_not_found() => Ok(Vec::new()),
        Err(error) => Err(error),
    }
}

/// What `attach` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachRequest {
    /// The client domain.
    pub guest: DomainSpec,
    /// The storage domain.
    pub backend: DomainSpec,
    /// The export the guest may mount.
    pub export: String,
    /// The device number; `None`: the first free one.
    pub device: Option<u32>,
}

/// What `attach` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// The guest.
    pub guest: Domain,
    /// The storage domain.
    pub storage_domain: Domain,
    /// The device number.
    pub device: u32,
    /// The export.
    pub export: String,
}

impl fmt::Display for Attached {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "attached {} as vrpc device {} of storage domain {}, export {}",
            self.guest, self.device, self.storage_domain, self.export
        )
    }
}

/// Creates the frontend and backend directories of one device.
///
/// # Errors
/// [`CtlError`]: unknown domains, a taken device number, xenstore failures.
pub fn attach(store: &Xenstore, request: &AttachRequest) -> Result<Attached, CtlError> {
    check_export(&request.export).map_err(CtlError::BadExport)?;
    let (guest, storage_domain) = resolve_pair(store, &request.guest, &request.backend)?;
    let device = store.transaction(|transaction| -> Result<u32, CtlError> {
        let device = match request.device {
            Some(device) => {
                let frontend = frontend_path(guest.id, device);
                let taken = (transaction.read(&frontend)?.is_some()
                    && !is_stale(transaction, &frontend)?)
                    || transaction
                        .read(&backend_path(storage_domain.id, guest.id, device))?
                        .is_some();
                if taken {
                    return Err(CtlError::AlreadyAttached {
                        guest: guest.clone(),
                        device,
                    });
                }
                device
            }
            None => {
                let root = frontend_root(guest.id);
                let mut used = Vec::new();
                let mut reusable = None;
                for name in children(transaction, &root)? {
                    let frontend = format!("{root}/{name}");
                    // A device whose storage domain is gone (destroyed and
                    // started again) is attached anew under the same
                    // number, so the guest's driver, which follows that
                    // device, reconnects.
                    let same_export = transaction
                        .read(&format!("{frontend}/{EXPORT}"))?
                        .as_deref()
                        == Some(request.export.as_bytes());
                    if reusable.is_none() && same_export && is_stale(transaction, &frontend)? {
                        reusable = name.parse::<u32>().ok();
                    }
                    used.push(name);
                }
                used.extend(children(
                    transaction,
                    &backend_guest_path(storage_domain.id, guest.id),
                )?);
                match reusable {
                    Some(device)
                        if transaction
                            .read(&backend_path(storage_domain.id, guest.id, device))?
                            .is_none() =>
                    {
                        device
                    }
                    _ => first_free_device(used.iter().map(String::as_str)),
                }
            }
        };
        // A stale device (its storage domain gone) is cleared first: the
        // keys its driver wrote carry the old storage domain's read
        // permission, and rewriting a node keeps its permissions, so the
        // new storage domain could not read them.
        let frontend = frontend_path(guest.id, device);
        if transaction.read(&frontend)?.is_some() {
            transaction.remove(&frontend)?;
        }
        let plan = attach_plan(&Attachment {
            guest: guest.id,
            storage_domain: storage_domain.id,
            device,
            export: request.export.clone(),
        });
        for node in &plan {
            match &node.value {
                None => transaction.mkdir(&node.path)?,
                Some(value) => transaction.write(&node.path, value.as_bytes())?,
            }
            transaction.set_permissions(&node.path, &node.permissions)?;
        }
        Ok(device)
    })?;
    Ok(Attached {
        guest,
        storage_domain,
        device,
        export: request.export.clone(),
    })
}

/// Which devices `detach` removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// This one.
    One(u32),
    /// Every device of the guest on this storage domain.
    All,
    /// The guest's only device (refused when it has several).
    Only,
}

/// What `detach` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetachRequest {
    /// The client domain.
    pub guest: DomainSpec,
    /// The storage domain.
    pub backend: DomainSpec,
    /// Which devices.
    pub devices: DeviceChoice,
    /// How long to wait for the guest to let go of each device.
    pub timeout: Duration,
}

/// How the guest's side ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontendEnd {
    /// It had not connected (or had already closed): nothing to wait for.
    NotConnected,
    /// It went to Closed after the backend directory was removed.
    Closed,
    /// Its directory vanished (the guest was destroyed, or someone removed it).
    Gone,
    /// It was still in this state when the timeout passed.
    TimedOut(String),
}

/// One detached device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detached {
    /// The guest.
    pub guest: Domain,
    /// The device.
    pub device: u32,
    /// How the frontend ended.
    pub frontend: FrontendEnd,
    /// The wait, for the timeout message.
    pub timeout: Duration,
}

impl fmt::Display for Detached {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "detached vrpc device {} of {}: ",
            self.device, self.guest
        )?;
        match &self.frontend {
            FrontendEnd::NotConnected => formatter.write_str("the guest had not connected"),
            FrontendEnd::Closed => formatter.write_str("the guest closed its side"),
            FrontendEnd::Gone => formatter.write_str("the guest's side was already gone"),
            FrontendEnd::TimedOut(state) => write!(
                formatter,
                "the guest's side was still {state} after {} s; its keys were removed anyway",
                self.timeout.as_secs_f64()
            ),
        }
    }
}

/// The guest's devices on this storage domain, sorted.
fn devices_of(
    store: &Xenstore,
    guest: &Domain,
    storage_domain: &Domain,
) -> Result<Vec<u32>, XenstoreError> {
    let mut devices: Vec<u32> = children(store, &backend_guest_path(storage_domain.id, guest.id))?
        .iter()
        .filter_map(|name| name.parse().ok())
        .collect();
    for name in children(store, &frontend_root(guest.id))? {
        let Ok(device) = name.parse::<u32>() else {
            continue;
        };
        let backend_id =
            store.read_string(&format!("{}/{BACKEND_ID}", frontend_path(guest.id, device)))?;
        if backend_id.as_deref() == Some(&storage_domain.id.to_string()) {
            devices.push(device);
        }
    }
    devices.sort_unstable();
    devices.dedup();
    Ok(devices)
}

/// Token of `detach`'s watch.
const DETACH_TOKEN: &str = "storage-domain-ctl-detach";

/// Removes devices: for each, the backend directory first (the storage
/// domain sees it vanish and tears the connection down), then waits up to
/// the timeout for the guest's side to close, then removes the frontend
/// directory (and the backend's again, should the storage domain have
/// written a last `state` into it meanwhile).
///
/// # Errors
/// [`CtlError`]: unknown domains, no such device, xenstore failures.
pub fn detach(store: &Xenstore, request: &DetachRequest) -> Result<Vec<Detached>, CtlError> {
    let (guest, storage_domain) = resolve_pair(store, &request.guest, &request.backend)?;
    let present = devices_of(store, &guest, &storage_domain)?;
    let not_attached = |device| CtlError::NotAttached {
        guest: guest.clone(),
        device,
        storage_domain: storage_domain.clone(),
    };
    let devices = match request.devices {
        DeviceChoice::One(device) if present.contains(&device) => vec![device],
        DeviceChoice::One(device) => return Err(not_attached(Some(device))),
        DeviceChoice::All | DeviceChoice::Only if present.is_empty() => {
            return Err(not_attached(None))
        }
        DeviceChoice::Only if present.len() > 1 => {
            let devices: Vec<String> = present.iter().map(u32::to_string).collect();
            return Err(CtlError::SeveralDevices {
                guest,
                devices: devices.join(", "),
            });
        }
        DeviceChoice::All | DeviceChoice::Only => present,
    };
    let mut detached = Vec::new();
    for device in devices {
        let frontend = detach_one(store, &guest, &storage_domain, device, request.timeout)?;
        detached.push(Detached {
            guest: guest.clone(),
            device,
            frontend,
            timeout: request.timeout,
        });
    }
    Ok(detached)
}

fn remove_backend(
    transaction: &Transaction<'_>,
    guest: &Domain,
    storage_domain: &Domain,
    device: u32,
) -> Result<(), XenstoreError> {
    let backend = backend_path(storage_domain.id, guest.id, device);
    if transaction.read(&backend)?.is_some() {
        transaction.remove(&backend)?;
    }
    // The per-guest directory goes with its last device.
    let guest_directory = backend_guest_path(storage_domain.id, guest.id);
    if transaction.read(&guest_directory)?.is_some()
        && transaction.directory(&guest_directory)?.is_empty()
    {
        transaction.remove(&guest_directory)?;
    }
    Ok(())
}

fn detach_one(
    store: &Xenstore,
    guest: &Domain,
    storage_domain: &Domain,
    device: u32,
    timeout: Duration,
) -> Result<FrontendEnd, CtlError> {
    let frontend = frontend_path(guest.id, device);
    let state_path = format!("{frontend}/{STATE}");
    let initial = store.read_string(&state_path)?;
    store.transaction(|transaction| remove_backend(transaction, guest, storage_domain, device))?;
    let end = if frontend_let_go(initial.as_deref()) {
        if initial.is_none() {
            FrontendEnd::Gone
        } else {
            FrontendEnd::NotConnected
        }
    } else {
        wait_for_frontend(store, &frontend, &state_path, timeout)?
    };
    store.transaction(|transaction| -> Result<(), XenstoreError> {
        if transaction.read(&frontend)?.is_some() {
            transaction.remove(&frontend)?;
        }
        remove_backend(transaction, guest, storage_domain, device)
    })?;
    Ok(end)
}

fn wait_for_frontend(
    store: &Xenstore,
    frontend: &str,
    state_path: &str,
    timeout: Duration,
) -> Result<FrontendEnd, XenstoreError> {
    let deadline = Instant::now() + timeout;
    store.watch(frontend, DETACH_TOKEN)?;
    let end = loop {
        let state = store.read_string(state_path)?;
        if frontend_let_go(state.as_deref()) {
            break match state {
                None => FrontendEnd::Gone,
                Some(_) => FrontendEnd::Closed,
            };
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break FrontendEnd::TimedOut(state_name(state.as_deref()));
        }
        // Any event (or the timeout) means: look again.
        store.next_watch_event(Some(DETACH_TOKEN), Some(remaining))?;
    };
    store.unwatch(frontend, DETACH_TOKEN)?;
    Ok(end)
}

/// One row of `list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The guest's id.
    pub guest: u16,
    /// Its name, if it is running and named.
    pub guest_name: Option<String>,
    /// The device.
    pub device: u32,
    /// The export, from the backend directory.
    pub export: Option<String>,
    /// The backend's state value.
    pub backend_state: Option<String>,
    /// The frontend's state value.
    pub frontend_state: Option<String>,
    /// The backend's `error` key.
    pub error: Option<String>,
}

/// Every device of the storage domain, by guest id then device.
///
/// # Errors
/// [`CtlError`]: the storage domain is not running, xenstore failures.
pub fn list(store: &Xenstore, backend: &DomainSpec) -> Result<Vec<Listed>, CtlError> {
    let storage_domain = resolve(store, backend)?
        .ok_or_else(|| CtlError::StorageDomainNotRunning(backend.clone()))?;
    let mut rows = Vec::new();
    let mut guests: Vec<u16> = children(store, &backend_root(storage_domain.id))?
        .iter()
        .filter_map(|name| name.parse().ok())
        .collect();
    guests.sort_unstable();
    for guest in guests {
        let guest_name = store.read_string(&format!("/local/domain/{guest}/name"))?;
        let mut devices: Vec<u32> = children(store, &backend_guest_path(storage_domain.id, guest))?
            .iter()
            .filter_map(|name| name.parse().ok())
            .collect();
        devices.sort_unstable();
        for device in devices {
            let backend = backend_path(storage_domain.id, guest, device);
            let key = |name: &str| store.read_string(&format!("{backend}/{name}"));
            // The frontend path as the backend records it; the standard
            // place when the key is missing.
            let frontend = key(FRONTEND)?.unwrap_or_else(|| frontend_path(guest, device));
            rows.push(Listed {
                guest,
                guest_name: guest_name.clone(),
                device,
                export: key(EXPORT)?,
                backend_state: key(STATE)?,
                frontend_state: store.read_string(&format!("{frontend}/{STATE}"))?,
                error: key(ERROR)?,
            });
        }
    }
    Ok(rows)
}

/// `list`'s output: a header and one aligned line per device.
pub fn format_list(rows: &[Listed]) -> String {
    let mut table = vec![[
        "GUEST".to_owned(),
        "ID".to_owned(),
        "DEVICE".to_owned(),
        "EXPORT".to_owned(),
        "BACKEND".to_owned(),
        "FRONTEND".to_owned(),
        "ERROR".to_owned(),
    ]];
    for row in rows {
        table.push([
            row.guest_name.clone().unwrap_or_else(|| "-".to_owned()),
            row.guest.to_string(),
            row.device.to_string(),
            row.export.clone().unwrap_or_else(|| "-".to_owned()),
            state_name(row.backend_state.as_deref()),
            state_name(row.frontend_state.as_deref()),
            row.error
                .as_ref()
                .map_or_else(|| "-".to_owned(), |error| format!("{error:?}")),
        ]);
    }
    let mut widths = [0usize; 7];
    for line in &table {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut output = String::new();
    for line in &table {
        let mut text = String::new();
        for (index, (cell, width)) in line.iter().zip(widths).enumerate() {
            if index + 1 == line.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        output.push_str(text.trim_end());
        output.push('\n');
    }
    output
}

#[cfg(test)]
mod tests;
