//! Server configuration: the export table and the identities behind it.
//!
//! Design: an export is written as one line of comma-separated options, the
//! same text on the hosted command line (`--export`), in a hosted exports
//! file, and on the Xen domain's `extra=` line, so the parser lives here in
//! the no_std core:
//!
//! ```text
//! /data,path=/srv/data,rw,root_squash,anonuid=65534,anongid=65534,allow=10.0.0.0/8,allow=127.0.0.1
//! ```
//!
//! The first field is the export's name (the path a client passes to
//! MOUNT); `path=` is the directory inside the file system (default: the
//! name). Options: `rw` (default) or `ro`; `sync` (default) or `async`;
//! `vrpc=local` (default) or `vrpc=sync` (how calls over VRPC rings are
//! answered, see [`ExportConfig::vrpc_local`]); `root_squash` (default),
//! `no_root_squash`, `all_squash`; `anonuid=`, `anongid=` (default 65534);
//! `allow=` a client address, network (`ADDR/PREFIX`), `*` (any client, the
//! default when no `allow=` is given), `local` (hosted unix-socket peers),
//! `uid:N` / `gid:N` (hosted unix-socket peers whose user / primary group
//! id, as the kernel reports it for the socket, is N) or `domain:N` (Xen
//! guest domain N).

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;

/// Who is calling: the transport's view of the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAddress {
    /// A TCP peer.
    Ip(IpAddr),
    /// A peer on the hosted unix socket (VRPC between local processes).
    Local(LocalPeer),
    /// A Xen guest domain attached over VRPC.
    Domain(u32),
}

/// A process connected to the hosted unix socket: its connection's number
/// and the credentials the kernel vouches for (`SO_PEERCRED`, taken when
/// it connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalPeer {
    /// Numbered per connection: each guest-driver connection numbers its
    /// calls' xids on its own, so the duplicate request cache must tell
    /// connections apart.
    pub connection: u64,
    /// The peer's user id.
    pub uid: u32,
    /// The peer's (primary) group id.
    pub gid: u32,
}

impl fmt::Display for ClientAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddress::Ip(address) => write!(formatter, "{address}"),
            ClientAddress::Local(peer) => write!(
                formatter,
                "local:{} (uid {}, gid {})",
                peer.connection, peer.uid, peer.gid
            ),
            ClientAddress::Domain(domain) => write!(formatter, "domain:{domain}"),
        }
    }
}

/// Which clients an export admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFilter {
    /// Every client.
    Any,
    /// Peers on the hosted unix socket.
    Local,
    /// Peers on the hosted unix socket running as this user id.
    LocalUid(u32),
    /// Peers on the hosted unix socket whose primary group is this id.
    LocalGid(u32),
    /// One Xen guest domain.
    Domain(u32),
    /// An IP network: address and prefix length (a host is a full-length
    /// prefix).
    Network {
        /// Network address.
        address: IpAddr,
        /// Prefix length in bits.
        prefix: u8,
    },
}

impl ClientFilter {
    /// Whether `client` is admitted by this filter.
    pub fn admits(&self, client: &ClientAddress) -> bool {
        match (self, client) {
            (ClientFilter::Any, _) => true,
            (ClientFilter::Local, ClientAddress::Local(_)) => true,
            (ClientFilter::LocalUid(uid), ClientAddress::Local(peer)) => peer.uid == *uid,
            (ClientFilter::LocalGid(gid), ClientAddress::Local(peer)) => peer.gid == *gid,
            (ClientFilter::Domain(wanted), ClientAddress::Domain(domain)) => wanted == domain,
            (ClientFilter::Network { address, prefix }, ClientAddress::Ip(client)) => {
                in_network(*address, *prefix, *client)
            }
            (
                ClientFilter::Local
                | ClientFilter::LocalUid(_)
                | ClientFilter::LocalGid(_)
                | ClientFilter::Domain(_)
                | ClientFilter::Network { .. },
                _,
            ) => false,
        }
    }

    fn parse(text: &str) -> Result<Self, ConfigError> {
        let invalid = || ConfigError::InvalidClient(text.to_string());
        if text == "*" {
            return Ok(ClientFilter::Any);
        }
        if text == "local" {
            return Ok(ClientFilter::Local);
        }
        if let Some(uid) = text.strip_prefix("uid:") {
            return uid
                .parse()
                .map(ClientFilter::LocalUid)
                .map_err(|_| invalid());
        }
        if let Some(gid) = text.strip_prefix("gid:") {
            return gid
                .parse()
                .map(ClientFilter::LocalGid)
                .map_err(|_| invalid());
        }
        if let Some(domain) = text.strip_prefix("domain:") {
            return domain
                .parse()
                .map(ClientFilter::Domain)
                .map_err(|_| invalid());
        }
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| invalid())?;
        let full = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| invalid())?,
            None => full,
        };
        if prefix > full {
            return Err(invalid());
        }
        Ok(ClientFilter::Network { address, prefix })
    }
}

impl fmt::Display for ClientFilter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientFilter::Any => formatter.write_str("*"),
            ClientFilter::Local => formatter.write_str("local"),
            ClientFilter::LocalUid(uid) => write!(formatter, "uid:{uid}"),
            ClientFilter::LocalGid(gid) => write!(formatter, "gid:{gid}"),
            ClientFilter::Domain(domain) => write!(formatter, "domain:{domain}"),
            ClientFilter::Network { address, prefix } => write!(formatter, "{address}/{prefix}"),
        }
    }
}

fn in_network(network: IpAddr, prefix: u8, client: IpAddr) -> bool {
    // An IPv4 client reached over an IPv6 socket arrives as ::ffff:a.b.c.d.
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(client),
        IpAddr::V4(_) => client,
    };
    match (network, client) {
        (IpAddr::V4(network), IpAddr::V4(client)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(network) & mask == u32::from(client) & mask
        }
        (IpAddr::V6(network), IpAddr::V6(client)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(network) & mask == u128::from(client) & mask
        }
        (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => false,
    }
}

/// How AUTH_SYS identities are mapped (the `exports(5)` squash options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Squash {
    /// Identities are used as sent.
    None,
    /// uid 0 and gid 0 become the anonymous ids.
    Root,
    /// Every identity becomes the anonymous ids.
    All,
}

/// One export as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// The path clients pass to MOUNT, e.g. `/` or `/data`.
    pub name: String,
    /// The directory inside the file system, e.g. `/srv/data`.
    pub path: String,
    /// Refuse every change.
    pub read_only: bool,
    /// Reply to changes before they are committed (`async`): a crash of
    /// the storage domain may lose the changes of the last commit interval
    /// (never consistency: the file system commits atomically). WRITE
    /// replies then say UNSTABLE, so clients that want durability still
    /// send COMMIT, which is always honoured.
    pub asynchronous: bool,
    /// Calls over VRPC rings (guest-driver in a guest: `local` and `domain`
    /// clients) get a local file system's durability (`vrpc=local`, the
    /// default): changes are answered before they are committed, and
    /// COMMIT (a guest's fsync) waits for the commit, which the server also
    /// makes every commit interval. `vrpc=sync`: VRPC calls follow the
    /// export's `sync`/`async` like TCP clients.
    pub vrpc_local: bool,
    /// Identity mapping.
    pub squash: Squash,
    /// uid given to squashed and AUTH_NONE callers.
    pub anonymous_uid: u32,
    /// gid given to squashed and AUTH_NONE callers.
    pub anonymous_gid: u32,
    /// Clients admitted (any one match admits).
    pub clients: Vec<ClientFilter>,
}

/// The anonymous id default (`nobody` / `nogroup` on Debian).
pub const ANONYMOUS_ID: u32 = 65_534;

impl ExportConfig {
    /// The whole file system, read-write, root squashed, any client.
    pub fn whole_file_system() -> Self {
        ExportConfig {
            name: "/".to_string(),
            path: "/".to_string(),
            read_only: false,
            asynchronous: false,
            vrpc_local: true,
            squash: Squash::Root,
            anonymous_uid: ANONYMOUS_ID,
            anonymous_gid: ANONYMOUS_ID,
            clients: alloc::vec![ClientFilter::Any],
        }
    }

    /// Parses one export line (see the module docs).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the bad field.
    pub fn parse(line: &str) -> Result<Self, ConfigError> {
        let mut fields = line.trim().split(',').map(str::trim);
        let name = fields.next().unwrap_or_default();
        check_path(name)?;
        let name = String::from_utf8_lossy(&normalize_path(name.as_bytes())).into_owned();
        let mut export = ExportConfig {
            name: name.clone(),
            path: name,
            clients: Vec::new(),
            ..ExportConfig::whole_file_system()
        };
        for field in fields {
            let (key, value) = match field.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (field, None),
            };
            match (key, value) {
                ("rw", None) => export.read_only = false,
                ("ro", None) => export.read_only = true,
                ("sync", None) => export.asynchronous = false,
                ("async", None) => export.asynchronous = true,
                ("vrpc", Some("local")) => export.vrpc_local = true,
                ("vrpc", Some("sync")) => export.vrpc_local = false,
                ("root_squash", None) => export.squash = Squash::Root,
                ("no_root_squash", None) => export.squash = Squash::None,
                ("all_squash", None) => export.squash = Squash::All,
                ("path", Some(path)) => {
                    check_path(path)?;
                    export.path = path.to_string();
                }
                ("anonuid", Some(id)) => export.anonymous_uid = parse_id(key, id)?,
                ("anongid", Some(id)) => export.anonymous_gid = parse_id(key, id)?,
                ("allow", Some(client)) => export.clients.push(ClientFilter::parse(client)?),
                _ => return Err(ConfigError::UnknownOption(field.to_string())),
            }
        }
        if export.clients.is_empty() {
            export.clients.push(ClientFilter::Any);
        }
        Ok(export)
    }

    /// Whether a change `client` makes is answered before it is committed
    /// (COMMIT always waits).
    pub fn answers_before_commit(&self, client: &ClientAddress) -> bool {
        self.asynchronous
            || (self.vrpc_local
                && matches!(client, ClientAddress::Local(_) | ClientAddress::Domain(_)))
    }

    /// Whether `client` may use this export.
    pub fn admits(&self, client: &ClientAddress) -> bool {
        self.clients.iter().any(|filter| filter.admits(client))
    }

    /// The path's components inside the file system.
    pub fn path_components(&self) -> impl Iterator<Item = &[u8]> {
        self.path
            .split('/')
            .filter(|component| !component.is_empty())
            .map(str::as_bytes)
    }
}

/// `path` with empty components dropped: `//a//b/` becomes `/a/b`, and an
/// empty path `/`.
pub fn normalize_path(path: &[u8]) -> Vec<u8> {
    let mut normalized = Vec::with_capacity(path.len() + 1);
    for component in path
        .split(|&byte| byte == b'/')
        .filter(|component| !component.is_empty())
    {
        normalized.push(b'/');
        normalized.extend_from_slice(component);
    }
    if normalized.is_empty() {
        normalized.push(b'/');
    }
    normalized
}

fn check_path(path: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::InvalidPath(path.to_string());
    if !path.starts_with('/') || path.len() > nfs3::mount::MAX_PATH as usize {
        return Err(bad());
    }
    let mut components = path.split('/').filter(|component| !component.is_empty());
    if components
        .any(|component| component == "." || component == ".." || component.len() > vfs::NAME_MAX)
    {
        return Err(bad());
    }
    Ok(())
}

fn parse_id(key: &str, value: &str) -> Result<u32, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::InvalidValue(alloc::format!("{key}={value}")))
}

/// Everything the server needs besides its file system.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The exports; at least one, names unique.
    pub exports: Vec<ExportConfig>,
    /// Key for the file-handle MACs: persistent for the file system, so
    /// handles survive restarts (`sdfs::Volume::handle_secret`).
    pub handle_secret: [u8; 32],
    /// Changes on every server start (RFC 1813 section 3.3.7: tells clients
    /// that unstable writes may have been lost).
    pub write_verifier: [u8; 8],
    /// Base of the `fsid` reported in attributes (from the volume UUID).
    pub file_system_id: u64,
    /// The TCP port PORTMAP GETPORT answers for NFS and MOUNT (0 when not
    /// served over TCP).
    pub port: u16,
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// An export name or path is not absolute, or holds `.`/`..` or an
    /// over-long component.
    InvalidPath(String),
    /// An `allow=` value is not an address, network, `*`, `local`,
    /// `uid:N`, `gid:N` or `domain:N`.
    InvalidClient(String),
    /// An option's value does not parse.
    InvalidValue(String),
    /// An option this server does not know.
    UnknownOption(String),
    /// Two exports share a name.
    DuplicateExport(String),
    /// No exports at all.
    NoExports,
    /// An export's path does not name a directory in the file system.
    ExportPath {
        /// The export's name.
        export: String,
        /// What the file system said.
        error: vfs::FsError,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidPath(path) => write!(
                formatter,
                "invalid export path {path:?}: it must be absolute, without . or .. components"
            ),
            ConfigError::InvalidClient(client) => write!(
                formatter,
                "invalid client {client:?}: expected an address, ADDRESS/PREFIX, *, local, uid:N, gid:N or domain:N"
            ),
            ConfigError::InvalidValue(option) => write!(formatter, "invalid value in {option:?}"),
            ConfigError::UnknownOption(option) => write!(
                formatter,
                "unknown export option {option:?} (known: path=, rw, ro, sync, async, \
                 root_squash, no_root_squash, all_squash, anonuid=, anongid=, allow=)"
            ),
            ConfigError::DuplicateExport(name) => write!(formatter, "export {name:?} is given twice"),
            ConfigError::NoExports => formatter.write_str("no exports configured"),
            ConfigError::ExportPath { export, error } => {
                write!(formatter, "export {export:?}: its path is unusable: {error}")
            }
        }
    }
}

impl core::error::Error for ConfigError {}
