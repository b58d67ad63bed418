//! The VRPC backend's decisions, without Xen: which devices exist, what a
//! frontend's xenstore keys say, and what each device does next.
//!
//! Design: the platform (`platform/vrpc_backend.rs`) reads xenstore and
//! makes the hypercalls; everything it decides is here, host-tested:
//!
//! - [`DeviceId::parse`] and [`BackendKeys::parse`]: the device directories
//!   `backend/vrpc/<guest>/<n>` and the dom0 tool's keys in them;
//! - [`admit`]: whether the export exists and admits the guest
//!   (`ExportConfig::admits(ClientAddress::Domain(guest))`), with the
//!   refusal's text for the `error` key;
//! - [`ConnectPlan::parse`]: the frontend's keys, read once at Initialised
//!   and validated against the backend's [`Limits`] (`docs/vrpc.md`, "Xen
//!   handshake");
//! - [`pool_references`] and [`directory_pages`]: the grant directories;
//! - [`decide`]: the state machine of `/work/notes/contract.md`.
//!
//! Every value here came from another domain (the guest, or the dom0
//! tool): nothing panics on any of it; bad values become errors.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use nfs_server::{ClientAddress, ExportConfig};
use vrpc::xenstore::{
    parse_number, pool_directory_pages, EVENT_CHANNEL, POOL_DIRECTORY_PAGES,
    POOL_DIRECTORY_REFERENCE_PREFIX, POOL_PAGES, REFERENCES_PER_DIRECTORY_PAGE, RING_PAGES,
    RING_REFERENCE_PREFIX, SLOT_COUNT, SLOT_SIZE, VERSION,
};
use vrpc::RingParameters;
use xen_abi::xenbus::XenbusState;

/// The layout version the frontend must write.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest domain id of a guest (`DOMID_FIRST_RESERVED - 1`).
pub const MAX_GUEST_DOMAIN: u32 = 0x7fef;

/// Connected devices at once: `SCHEDOP_poll` takes 128 ports, two are
/// xenstore's and netfront's.
pub const MAX_CONNECTED: usize = 126;

/// One device: `backend/vrpc/<guest>/<number>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId {
    /// The guest's domain id.
    pub guest: u16,
    /// The device number under the guest.
    pub number: u32,
}

impl DeviceId {
    /// The device named by the directory entries `guest` and `number`;
    /// `None` for names that are not plain decimal numbers in range (such
    /// a directory is ignored).
    pub fn parse(guest: &str, number: &str) -> Option<DeviceId> {
        let guest = parse_number(guest.as_bytes()).filter(|id| *id <= MAX_GUEST_DOMAIN)?;
        Some(DeviceId {
            guest: guest as u16,
            number: parse_number(number.as_bytes())?,
        })
    }

    /// The backend directory, relative to our domain's directory.
    pub fn backend_path(&self) -> String {
        format!("backend/vrpc/{}/{}", self.guest, self.number)
    }

    /// The frontend directory the dom0 tool must have named.
    pub fn frontend_path(&self) -> String {
        format!("/local/domain/{}/device/vrpc/{}", self.guest, self.number)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "domain {} device {}", self.guest, self.number)
    }
}

/// Why a device cannot be served. The `Display` text goes into the
/// backend's `error` key and the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// A key the protocol needs is absent.
    MissingKey(&'static str),
    /// A key's value does not parse or is out of range.
    BadValue(&'static str),
    /// `frontend` does not name this device's frontend directory.
    WrongFrontend(String),
    /// `frontend-id` is not the guest the directory names.
    WrongFrontendId,
    /// No export of that name.
    NoSuchExport(String),
    /// The export exists but does not admit the guest.
    NotAdmitted {
        /// The export's name.
        export: String,
        /// The guest.
        guest: u16,
    },
    /// The frontend's `version` is not ours.
    Version(u32),
    /// Ring or pool parameters invalid or beyond our limits.
    Parameters,
    /// `ring-pages` disagrees with the parameters.
    RingPages,
    /// `pool-directory-pages` disagrees with `pool-pages`.
    DirectoryPages,
    /// Too many devices connected already.
    TooManyConnections,
    /// A resource of ours ran out, or a hypercall failed.
    Local(String),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::MissingKey(key) => write!(formatter, "missing key {key}"),
            DeviceError::BadValue(key) => write!(formatter, "bad value of {key}"),
            DeviceError::WrongFrontend(path) => {
                write!(formatter, "frontend {path} is not this device's")
            }
            DeviceError::WrongFrontendId => {
                formatter.write_str("frontend-id is not the device's domain")
            }
            DeviceError::NoSuchExport(name) => write!(formatter, "no export {name}"),
            DeviceError::NotAdmitted { export, guest } => {
                write!(formatter, "export {export} does not admit domain:{guest}")
            }
            DeviceError::Version(version) => {
                write!(
                    formatter,
                    "version {version} not supported (want {PROTOCOL_VERSION})"
                )
            }
            DeviceError::Parameters => {
                formatter.write_str("ring parameters invalid or beyond max-* limits")
            }
            DeviceError::RingPages => {
                formatter.write_str("ring-pages disagrees with the ring size")
            }
            DeviceError::DirectoryPages => {
                formatter.write_str("pool-directory-pages disagrees with pool-pages")
            }
            DeviceError::TooManyConnections => write!(
                formatter,
                "too many devices connected (at most {MAX_CONNECTED})"
            ),
            DeviceError::Local(what) => formatter.write_str(what),
        }
    }
}

/// The dom0 tool's keys in our backend directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendKeys {
    /// The frontend directory (checked to be the device's own).
    pub frontend: String,
    /// The export asked for, normalised (`//a/` is `/a`).
    pub export: String,
}

impl BackendKeys {
    /// Check the values of `frontend`, `frontend-id` and `export`.
    ///
    /// # Errors
    /// [`DeviceError`] naming the bad key.
    pub fn parse(
        device: DeviceId,
        frontend: &[u8],
        frontend_id: &[u8],
        export: &[u8],
    ) -> Result<BackendKeys, DeviceError> {
        let frontend = core::str::from_utf8(frontend)
            .map_err(|_| DeviceError::BadValue("frontend"))?
            .trim_end_matches('\0');
        if frontend != device.frontend_path() {
            return Err(DeviceError::WrongFrontend(String::from(
                frontend.get(..frontend.len().min(128)).unwrap_or(""),
            )));
        }
        let id = parse_number(trim(frontend_id)).ok_or(DeviceError::BadValue("frontend-id"))?;
        if id != u32::from(device.guest) {
            return Err(DeviceError::WrongFrontendId);
        }
        let export = trim(export);
        if export.first() != Some(&b'/') || export.len() > 1024 {
            return Err(DeviceError::BadValue("export"));
        }
        let export = String::from_utf8(nfs_server::config::normalize_path(export))
            .map_err(|_| DeviceError::BadValue("export"))?;
        Ok(BackendKeys {
            frontend: String::from(frontend),
            export,
        })
    }
}

fn trim(value: &[u8]) -> &[u8] {
    value.strip_suffix(b"\0").unwrap_or(value)
}

/// The index of the export named `name` among `exports` if it admits
/// `guest`.
///
/// # Errors
/// [`DeviceError::NoSuchExport`] or [`DeviceError::NotAdmitted`].
pub fn admit<'a>(
    exports: impl IntoIterator<Item = &'a ExportConfig>,
    name: &str,
    guest: u16,
) -> Result<usize, DeviceError> {
    let (index, export) = exports
        .into_iter()
        .enumerate()
        .find(|(_, export)| export.name == name)
        .ok_or_else(|| DeviceError::NoSuchExport(String::from(name)))?;
    if export.admits(&ClientAddress::Domain(u32::from(guest))) {
        Ok(index)
    } else {
        Err(DeviceError::NotAdmitted {
            export: String::from(name),
            guest,
        })
    }
}

/// What the backend accepts (published as `max-slot-count`,
/// `max-slot-size`, `max-pool-pages`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest ring and pool.
    pub parameters: RingParameters,
}

impl Limits {
    /// The storage domain's limits: the ring is mapped over our heap, so it
    /// is kept small (at most 64 slots of 4 KiB: 65 pages); the pool costs
    /// only its directory (4 bytes a page), so up to 16384 pages (64 MiB).
    pub const XEN: Limits = Limits {
        parameters: RingParameters {
            slot_count: 64,
            slot_size: 4096,
            pool_pages: 16384,
        },
    };
}

/// Everything the backend needs to connect, read once from the frontend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectPlan {
    /// Ring and pool parameters, validated within the limits.
    pub parameters: RingParameters,
    /// Grant references of the ring pages, in order.
    pub ring_references: Vec<u32>,
    /// Grant references of the pool directory pages, in order.
    pub directory_references: Vec<u32>,
    /// The guest's unbound event channel port.
    pub event_channel: u32,
}

impl ConnectPlan {
    /// Read and check the frontend's keys. `read(key)` returns the value
    /// of `<frontend>/<key>`, or `None` when it is absent.
    ///
    /// # Errors
    /// [`DeviceError`] naming what is wrong.
    pub fn parse(
        mut read: impl FnMut(&str) -> Option<Vec<u8>>,
        limits: Limits,
    ) -> Result<ConnectPlan, DeviceError> {
        let mut number = |key: &'static str| -> Result<u32, DeviceError> {
            let value = read(key).ok_or(DeviceError::MissingKey(key))?;
            parse_number(trim(&value)).ok_or(DeviceError::BadValue(key))
        };
        let version = number(VERSION)?;
        if version != PROTOCOL_VERSION {
            return Err(DeviceError::Version(version));
        }
        let slot_count = number(SLOT_COUNT)?;
        let slot_size = number(SLOT_SIZE)?;
        let pool_pages = number(POOL_PAGES)?;
        let ring_pages = number(RING_PAGES)?;
        let directory_pages = number(POOL_DIRECTORY_PAGES)?;
        let event_channel = number(EVENT_CHANNEL)?;
        let parameters = RingParameters {
            slot_count,
            slot_size,
            pool_pages,
        }
        .validate()
        .ok()
        .filter(|parameters| {
            let limits = limits.parameters;
            parameters.slot_count <= limits.slot_count
                && parameters.slot_size <= limits.slot_size
                && parameters.pool_pages <= limits.pool_pages
        })
        .ok_or(DeviceError::Parameters)?;
        if ring_pages as usize * vrpc::PAGE_SIZE != parameters.ring_bytes() {
            return Err(DeviceError::RingPages);
        }
        if directory_pages != pool_directory_pages(parameters.pool_pages) {
            return Err(DeviceError::DirectoryPages);
        }
        if event_channel == 0 {
            return Err(DeviceError::BadValue(EVENT_CHANNEL));
        }
        // Both counts are bounded by the validated parameters now.
        let ring_references = references(&mut read, RING_REFERENCE_PREFIX, ring_pages)?;
        let directory_references =
            references(&mut read, POOL_DIRECTORY_REFERENCE_PREFIX, directory_pages)?;
        Ok(ConnectPlan {
            parameters,
            ring_references,
            directory_references,
            event_channel,
        })
    }
}

fn references(
    read: &mut impl FnMut(&str) -> Option<Vec<u8>>,
    prefix: &'static str,
    count: u32,
) -> Result<Vec<u32>, DeviceError> {
    let mut buffer = [0u8; 40];
    (0..count)
        .map(|index| {
            let key = vrpc::xenstore::indexed_key(prefix, index, &mut buffer)
                .ok_or(DeviceError::BadValue(prefix))?;
            let value = read(key).ok_or(DeviceError::MissingKey(prefix))?;
            parse_number(trim(&value)).ok_or(DeviceError::BadValue(prefix))
        })
        .collect()
}

/// The pool's grant references from the copied directory pages: the first
/// `pool_pages` little-endian `u32`s.
///
/// # Errors
/// [`DeviceError::DirectoryPages`] when `directory` is too short.
pub fn pool_references(directory: &[u8], pool_pages: u32) -> Result<Vec<u32>, DeviceError> {
    let needed = pool_pages as usize * 4;
    let bytes = directory.get(..needed).ok_or(DeviceError::DirectoryPages)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|word| u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
        .collect())
}

/// The pages of a grant directory listing `references` (1024 little-endian
/// `u32` per page, zero-padded): the metadata table's directory.
pub fn directory_pages(references: &[u32]) -> Vec<Vec<u8>> {
    references
        .chunks(REFERENCES_PER_DIRECTORY_PAGE as usize)
        .map(|chunk| {
            let mut page = vec![0u8; vrpc::PAGE_SIZE];
            for (slot, reference) in page.chunks_exact_mut(4).zip(chunk) {
                slot.copy_from_slice(&reference.to_le_bytes());
            }
            page
        })
        .collect()
}

/// Where a device is, on our side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Just discovered: nothing granted, nothing written.
    New,
    /// The frontend directory is gone (a destroyed guest): nothing held;
    /// waits for the backend directory to go.
    Orphaned,
    /// Refused (`error` + Closing written): waits for the backend
    /// directory to go.
    Refused,
    /// Limits and table grants published, InitWait: waits for the
    /// frontend's Initialised.
    Offered,
    /// Serving.
    Connected,
    /// Torn down (Closed, or Closing with `error` after a failure):
    /// offered again when the frontend restarts (Initialising).
    Closed,
}

/// What the frontend's `state` read gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontendView {
    /// The node (or the whole frontend directory) is gone: ENOENT, or
    /// EACCES once the guest's domain directory is gone (xenstored answers
    /// from the nearest existing ancestor, which a domU may not read).
    Gone,
    /// A state.
    State(XenbusState),
    /// Present but unreadable or not a state.
    Unreadable,
}

/// Why a device was torn down (the console's `detached (...)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DetachReason {
    /// The backend directory was removed (dom0 detached the device).
    BackendRemoved,
    /// The frontend directory vanished (the guest was destroyed).
    DomainGone,
    /// The frontend went to Closing or Closed.
    FrontendClosed,
    /// The frontend went back to an earlier state while connected.
    FrontendReset(XenbusState),
    /// The guest broke the protocol (ring or pool), or a copy failed.
    ProtocolError(String),
    /// The storage domain is shutting down.
    Shutdown,
}

impl DetachReason {
    /// Whether the backend writes `error` and stays in Closing (a failure)
    /// instead of going to Closed.
    pub fn is_failure(&self) -> bool {
        match self {
            DetachReason::ProtocolError(_) => true,
            DetachReason::BackendRemoved
            | DetachReason::DomainGone
            | DetachReason::FrontendClosed
            | DetachReason::FrontendReset(_)
            | DetachReason::Shutdown => false,
        }
    }
}

impl fmt::Display for DetachReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DetachReason::BackendRemoved => formatter.write_str("backend removed"),
            DetachReason::DomainGone => formatter.write_str("domain gone"),
            DetachReason::FrontendClosed => formatter.write_str("frontend closed"),
            DetachReason::FrontendReset(state) => {
                write!(formatter, "frontend reset to state {}", state.number())
            }
            DetachReason::ProtocolError(what) => write!(formatter, "protocol error: {what}"),
            DetachReason::Shutdown => formatter.write_str("shutdown"),
        }
    }
}

/// What to do with a device now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the next change.
    Wait,
    /// Check the export, grant the table, publish limits, InitWait.
    Offer,
    /// Nothing is held and the frontend is gone: become [`Phase::Orphaned`].
    Orphan,
    /// Read the frontend's keys, map, bind, Connected.
    Connect,
    /// Tear down what is held; Closed (or Closing with `error`).
    Detach(DetachReason),
    /// The backend directory is gone: tear down and forget the device.
    Forget,
}

/// The state machine: given where the device is, whether our backend
/// directory still exists and what the frontend shows, what to do.
pub fn decide(phase: Phase, backend_present: bool, frontend: FrontendView) -> Action {
    if !backend_present {
        return Action::Forget;
    }
    match (phase, frontend) {
        (Phase::New, FrontendView::Gone) => Action::Orphan,
        (Phase::New, _) => Action::Offer,
        (Phase::Orphaned, FrontendView::Gone) => Action::Wait,
        (Phase::Orphaned, _) => Action::Offer,
        (Phase::Refused, _) => Action::Wait,
        (Phase::Offered, FrontendView::State(XenbusState::Initialised)) => Action::Connect,
        (Phase::Offered, FrontendView::Gone) => Action::Detach(DetachReason::DomainGone),
        // Anything else (a frontend still Closed from an earlier
        // connection, or not started yet) may still initialise.
        (Phase::Offered, FrontendView::State(_) | FrontendView::Unreadable) => Action::Wait,
        (Phase::Connected, FrontendView::State(XenbusState::Initialised))
        | (Phase::Connected, FrontendView::State(XenbusState::Connected)) => Action::Wait,
        (Phase::Connected, FrontendView::State(XenbusState::Closing))
        | (Phase::Connected, FrontendView::State(XenbusState::Closed)) => {
            Action::Detach(DetachReason::FrontendClosed)
        }
        (Phase::Connected, FrontendView::State(state)) => {
            Action::Detach(DetachReason::FrontendReset(state))
        }
        (Phase::Connected, FrontendView::Gone) => Action::Detach(DetachReason::DomainGone),
        // A read that failed for another reason than ENOENT says nothing
        // about the guest: keep serving, look again at the next change.
        (Phase::Connected, FrontendView::Unreadable) => Action::Wait,
        (Phase::Closed, FrontendView::State(XenbusState::Initialising)) => Action::Offer,
        (Phase::Closed, _) => Action::Wait,
    }
}

/// Per-device counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// Requests taken off the ring.
    pub requests: u64,
    /// Responses written (replies, NO_REPLY and REPLY_TOO_LARGE).
    pub replies: u64,
    /// Protocol errors (each drops the connection).
    pub protocol_errors: u64,
    /// Connections made.
    pub connections: u64,
}

impl DeviceCounters {
    /// Add `other`'s counts.
    pub fn add(&mut self, other: &DeviceCounters) {
        self.requests += other.requests;
        self.replies += other.replies;
        self.protocol_errors += other.protocol_errors;
        self.connections += other.connections;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::string::ToString;

    const DEVICE: DeviceId = DeviceId {
        guest: 5,
        number: 0,
    };

    #[test]
    fn device_names() {
        assert_eq!(DeviceId::parse("5", "0"), Some(DEVICE));
        assert_eq!(DeviceId::parse("32751", "7").unwrap().guest, 0x7fef);
        for (guest, number) in [
            ("32752", "0"),
            ("-1", "0"),
            ("05", "0"),
            ("x", "0"),
            ("", "0"),
            ("5", ""),
            ("5", "4294967296"),
            ("5", "1 "),
        ] {
            assert_eq!(DeviceId::parse(guest, number), None, "{guest}/{number}");
        }
        assert_eq!(DEVICE.backend_path(), "backend/vrpc/5/0");
        assert_eq!(DEVICE.frontend_path(), "/local/domain/5/device/vrpc/0");
        assert_eq!(DEVICE.to_string(), "domain 5 device 0");
    }

    #[test]
    fn backend_keys() {
        let keys =
            BackendKeys::parse(DEVICE, b"/local/domain/5/device/vrpc/0", b"5", b"//data/").unwrap();
        assert_eq!(keys.export, "/data");
        assert_eq!(
            BackendKeys::parse(DEVICE, b"/local/domain/6/device/vrpc/0", b"5", b"/"),
            Err(DeviceError::WrongFrontend(
                "/local/domain/6/device/vrpc/0".into()
            ))
        );
        assert_eq!(
            BackendKeys::parse(DEVICE, b"/local/domain/5/device/vrpc/0", b"6", b"/"),
            Err(DeviceError::WrongFrontendId)
        );
        for bad_export in [&b""[..], b"data", b"/\xff", &[b'/'; 2000]] {
            assert_eq!(
                BackendKeys::parse(DEVICE, b"/local/domain/5/device/vrpc/0", b"5", bad_export),
                Err(DeviceError::BadValue("export"))
            );
        }
        assert!(BackendKeys::parse(DEVICE, b"\xff", b"5", b"/").is_err());
        assert!(BackendKeys::parse(DEVICE, &[b'a'; 5000], b"5", b"/").is_err());
        assert!(BackendKeys::parse(DEVICE, b"/local/domain/5/device/vrpc/0", b"x", b"/").is_err());
    }

    #[test]
    fn admission() {
        let exports = [
            ExportConfig::parse("/data,allow=domain:5").unwrap(),
            ExportConfig::parse("/other,allow=domain:6").unwrap(),
            ExportConfig::parse("/open").unwrap(),
        ];
        assert_eq!(admit(&exports, "/data", 5), Ok(0));
        assert_eq!(admit(&exports, "/open", 9), Ok(2));
        let refusal = admit(&exports, "/data", 6).unwrap_err();
        assert_eq!(refusal.to_string(), "export /data does not admit domain:6");
        assert_eq!(
            admit(&exports, "/nope", 5).unwrap_err().to_string(),
            "no export /nope"
        );
    }

    fn frontend_keys() -> BTreeMap<String, Vec<u8>> {
        let mut keys = BTreeMap::new();
        let mut put =
            |key: &str, value: &str| keys.insert(key.to_string(), value.as_bytes().to_vec());
        put("version", "1");
        put("slot-count", "32");
        put("slot-size", "2048");
        put("pool-pages", "480");
        put("ring-pages", "17");
        put("pool-directory-pages", "1");
        put("pool-directory-ref0", "900");
        put("event-channel", "12");
        for index in 0..17 {
            put(&format!("ring-ref{index}"), &format!("{}", 100 + index));
        }
        keys
    }

    fn plan(keys: &BTreeMap<String, Vec<u8>>) -> Result<ConnectPlan, DeviceError> {
        ConnectPlan::parse(|key| keys.get(key).cloned(), Limits::XEN)
    }

    #[test]
    fn connect_plan_from_good_keys() {
        let plan = plan(&frontend_keys()).unwrap();
        assert_eq!(plan.parameters.slot_count, 32);
        assert_eq!(plan.parameters.pool_pages, 480);
        assert_eq!(plan.ring_references, (100..117).collect::<Vec<_>>());
        assert_eq!(plan.directory_references, [900]);
        assert_eq!(plan.event_channel, 12);
        // A trailing NUL is tolerated.
        let mut keys = frontend_keys();
        keys.insert("event-channel".into(), b"12\0".to_vec());
        assert!(self::plan(&keys).is_ok());
        // An empty pool has no directory.
        keys.insert("pool-pages".into(), b"0".to_vec());
        keys.insert("pool-directory-pages".into(), b"0".to_vec());
        assert_eq!(self::plan(&keys).unwrap().directory_references, []);
    }

    #[test]
    fn connect_plan_refuses_hostile_keys() {
        let cases: &[(&str, Option<&str>, DeviceError)] = &[
            ("version", Some("2"), DeviceError::Version(2)),
            ("version", None, DeviceError::MissingKey("version")),
            ("slot-count", Some("33"), DeviceError::Parameters),
            ("slot-count", Some("128"), DeviceError::Parameters),
            ("slot-size", Some("65536"), DeviceError::Parameters),
            ("pool-pages", Some("16385"), DeviceError::Parameters),
            (
                "pool-pages",
                Some("99999999999"),
                DeviceError::BadValue("pool-pages"),
            ),
            ("ring-pages", Some("16"), DeviceError::RingPages),
            ("ring-pages", Some("4294967295"), DeviceError::RingPages),
            (
                "pool-directory-pages",
                Some("2"),
                DeviceError::DirectoryPages,
            ),
            (
                "pool-directory-pages",
                Some("4294967295"),
                DeviceError::DirectoryPages,
            ),
            (
                "event-channel",
                Some("0"),
                DeviceError::BadValue("event-channel"),
            ),
            (
                "event-channel",
                Some("-1"),
                DeviceError::BadValue("event-channel"),
            ),
            ("ring-ref16", None, DeviceError::MissingKey("ring-ref")),
            ("ring-ref3", Some("0x10"), DeviceError::BadValue("ring-ref")),
            (
                "pool-directory-ref0",
                Some(""),
                DeviceError::BadValue("pool-directory-ref"),
            ),
            (
                "slot-size",
                Some("\u{ff}"),
                DeviceError::BadValue("slot-size"),
            ),
        ];
        for (key, value, expected) in cases {
            let mut keys = frontend_keys();
            match value {
                Some(value) => keys.insert((*key).into(), value.as_bytes().to_vec()),
                None => keys.remove(*key),
            };
            assert_eq!(plan(&keys).as_ref(), Err(expected), "{key}={value:?}");
        }
    }

    #[test]
    fn directories() {
        let mut directory = vec![0u8; 4096];
        directory[..8].copy_from_slice(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(pool_references(&directory, 2).unwrap(), [1, u32::MAX]);
        assert_eq!(pool_references(&directory, 1024).unwrap().len(), 1024);
        assert!(pool_references(&directory, 1025).is_err());
        assert_eq!(pool_references(&[], 0).unwrap(), []);
        let references: Vec<u32> = (0..1025).collect();
        let pages = directory_pages(&references);
        assert_eq!(pages.len(), 2);
        assert!(pages.iter().all(|page| page.len() == 4096));
        assert_eq!(
            pool_references(&pages[0], 1024).unwrap(),
            &references[..1024]
        );
        assert_eq!(pool_references(&pages[1], 2).unwrap(), [1024, 0]);
        assert!(directory_pages(&[]).is_empty());
    }

    #[test]
    fn state_machine() {
        use FrontendView::{Gone, State, Unreadable};
        use XenbusState::*;
        // Backend directory gone: always forget.
        for phase in [
            Phase::New,
            Phase::Orphaned,
            Phase::Refused,
            Phase::Offered,
            Phase::Connected,
            Phase::Closed,
        ] {
            assert_eq!(decide(phase, false, State(Connected)), Action::Forget);
        }
        assert_eq!(decide(Phase::New, true, State(Initialising)), Action::Offer);
        // A frontend left Closed by an earlier storage domain is offered.
        assert_eq!(decide(Phase::New, true, State(Closed)), Action::Offer);
        assert_eq!(decide(Phase::New, true, Gone), Action::Orphan);
        assert_eq!(decide(Phase::Orphaned, true, Gone), Action::Wait);
        assert_eq!(
            decide(Phase::Orphaned, true, State(Initialising)),
            Action::Offer
        );
        assert_eq!(
            decide(Phase::Refused, true, State(Initialised)),
            Action::Wait
        );
        assert_eq!(
            decide(Phase::Offered, true, State(Initialised)),
            Action::Connect
        );
        for state in [Initialising, InitWait, Connected, Closing, Closed, Unknown] {
            assert_eq!(decide(Phase::Offered, true, State(state)), Action::Wait);
        }
        assert_eq!(
            decide(Phase::Offered, true, Gone),
            Action::Detach(DetachReason::DomainGone)
        );
        assert_eq!(decide(Phase::Offered, true, Unreadable), Action::Wait);
        assert_eq!(
            decide(Phase::Connected, true, State(Connected)),
            Action::Wait
        );
        assert_eq!(
            decide(Phase::Connected, true, State(Initialised)),
            Action::Wait
        );
        assert_eq!(
            decide(Phase::Connected, true, State(Closing)),
            Action::Detach(DetachReason::FrontendClosed)
        );
        assert_eq!(
            decide(Phase::Connected, true, State(Initialising)),
            Action::Detach(DetachReason::FrontendReset(Initialising))
        );
        assert_eq!(
            decide(Phase::Connected, true, Gone),
            Action::Detach(DetachReason::DomainGone)
        );
        assert_eq!(decide(Phase::Connected, true, Unreadable), Action::Wait);
        assert_eq!(decide(Phase::Closed, true, State(Closed)), Action::Wait);
        assert_eq!(decide(Phase::Closed, true, Gone), Action::Wait);
        assert_eq!(
            decide(Phase::Closed, true, State(Initialising)),
            Action::Offer
        );
        assert!(DetachReason::ProtocolError("x".into()).is_failure());
        assert!(!DetachReason::FrontendClosed.is_failure());
        assert_eq!(
            DetachReason::FrontendReset(Initialising).to_string(),
            "frontend reset to state 1"
        );
    }

    #[test]
    fn a_whole_connection_walks_the_states() {
        use FrontendView::{Gone, State};
        use XenbusState::*;
        let mut phase = Phase::New;
        let steps = [
            (State(Initialising), Action::Offer, Phase::Offered),
            (State(Initialising), Action::Wait, Phase::Offered),
            (State(Initialised), Action::Connect, Phase::Connected),
            (State(Connected), Action::Wait, Phase::Connected),
            (
                State(Closing),
                Action::Detach(DetachReason::FrontendClosed),
                Phase::Closed,
            ),
            (State(Closed), Action::Wait, Phase::Closed),
            (State(Initialising), Action::Offer, Phase::Offered),
            (
                Gone,
                Action::Detach(DetachReason::DomainGone),
                Phase::Closed,
            ),
            (Gone, Action::Wait, Phase::Closed),
        ];
        for (view, action, next) in steps {
            assert_eq!(decide(phase, true, view), action, "{phase:?} {view:?}");
            phase = next;
        }
        assert_eq!(decide(phase, false, Gone), Action::Forget);
    }
}
