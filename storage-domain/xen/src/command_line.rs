//! The domain's configuration, parsed from the `extra=` command line.
//!
//! Whitespace-separated `key=value` words (`xl` puts `extra=` into
//! `start_info.cmd_line`, at most 1024 bytes):
//!
//! - `export=LINE`, repeatable: an export in the NFS server's export-line
//!   syntax (`nfs_server::ExportConfig::parse`: `/data,path=/srv,ro,
//!   allow=domain:3`, no spaces); default: `/`, read-write, root squashed.
//! - `cache=SIZE`: bytes of file-system metadata cache (default 4M); the
//!   sizes of `byte_size::parse_size` (`8M`, `8MiB`: powers of 1024; `8MB`:
//!   of 1000).
//! - `data_cache=SIZE`: bytes of data block cache with read-ahead (default
//!   1M; 0: none), taken from the heap at boot and at most a quarter of
//!   what is free then.
//! - `ip=A.B.C.D/PREFIX`: the network interface's static IPv4 address, or
//!   `ip=dhcp`: an address leased by DHCPv4 (no `ip=`: the interface stays
//!   down and nothing is served over TCP).
//! - `gw=A.B.C.D`: the default IPv4 gateway with a static `ip=` (none by
//!   default: only the local subnet is reachable; DHCP names its own).
//! - `port=N`: the TCP port of NFS, MOUNT and PORTMAP (default 2049).
//! - `connections=N`: TCP clients served at once, 1 to 65536 (default 64;
//!   lowered at boot to what the heap holds). A further client closes the
//!   connection idle longest.
//! - `disk_segments=N`: most pages (4 KiB segments) in one disk request,
//!   1 to 512 (default 256): beyond 11 blkfront sends indirect requests
//!   when the backend offers them (`feature-max-indirect-segments`, and
//!   never more than it offers); 11 or less: plain requests only.
//! - `metatab=SLOTS`: slots of each export's metadata table, a power of two
//!   up to 131072, or 0 for no tables (default 8192: 1 MiB + 4 KiB each).
//! - `test=ACTION[,ACTION...]`: boot-test actions for `qemu-tests/`
//!   (`seed`, `verify`, `churn`, `panic`, `fault`, `many`, `diskbench`; see
//!   `docs/xen.md`).
//!
//! The bytes come from the toolstack's configuration: nothing here panics
//! on them; unknown or malformed words become warnings the banner prints.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use nfs_server::ExportConfig;

/// The largest `connections=`: far beyond any heap, only a sanity bound.
pub const MAX_CONNECTIONS: usize = 65536;

/// How the interface gets its address (`ip=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Address {
    /// `ip=A.B.C.D/PREFIX`.
    Static(Ipv4Addr, u8),
    /// `ip=dhcp`.
    Dhcp,
}

/// A boot-test action (`test=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestAction {
    /// Write the known files (`/known/...`) and commit.
    Seed,
    /// Check the known files and print the verdict.
    Verify,
    /// Append and commit forever, printing each commit, until shut down
    /// or destroyed (the crash-recovery test).
    Churn,
    /// Panic after the self-check (the crash-reporting test).
    Panic,
    /// Touch an unmapped page after the self-check (the fault-report test).
    Fault,
    /// Create `/many/f0` .. `/many/f999` (empty) in one commit, for the
    /// guests' stat passes.
    Many,
    /// Before opening the file system, read the disk with plain and with
    /// indirect requests side by side and print the ratio.
    DiskBench,
}

/// The parsed configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Exports, in command-line order.
    pub exports: Vec<ExportConfig>,
    /// Metadata cache size handed to the file system.
    pub cache_bytes: usize,
    /// Data block cache size (`data_cache=`).
    pub data_cache_bytes: u64,
    /// The IPv4 address (`ip=`).
    pub address: Option<Address>,
    /// The default gateway (`gw=`).
    pub gateway: Option<Ipv4Addr>,
    /// The TCP port served (`port=`).
    pub port: u16,
    /// TCP clients served at once (`connections=`; `None`: the default).
    pub max_connections: Option<usize>,
    /// Slots of each export's metadata table (`metatab=`; 0: none).
    pub metatab_slots: u32,
    /// Most segments in one disk request (`disk_segments=`).
    pub disk_segments: usize,
    /// Boot-test actions, in command-line order.
    pub tests: Vec<TestAction>,
    /// Words that were not understood, for the banner.
    pub warnings: Vec<String>,
}

/// Default metadata cache: 4 MiB of a 32 MiB domain.
pub const DEFAULT_CACHE_BYTES: usize = 4 << 20;

/// Default data block cache: 1 MiB of the 16 MiB heap.
pub const DEFAULT_DATA_CACHE_BYTES: u64 = 1 << 20;

/// Default TCP port: NFS's registered port.
pub const DEFAULT_PORT: u16 = 2049;

/// Default most segments of a disk request: what Linux's blkback offers
/// (1 MiB), beyond any request the domain makes (88 blocks).
pub const DEFAULT_DISK_SEGMENTS: usize = 256;

/// The largest `disk_segments=`: one indirect page's segments.
pub const MAX_DISK_SEGMENTS: usize = 512;

/// Default metadata table slots per export (257 pages each).
pub const DEFAULT_METATAB_SLOTS: u32 = 8192;

impl Config {
    /// Parse a command line.
    pub fn parse(command_line: &[u8]) -> Config {
        let text = String::from_utf8_lossy(command_line);
        let mut config = Config {
            exports: Vec::new(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            data_cache_bytes: DEFAULT_DATA_CACHE_BYTES,
            address: None,
            gateway: None,
            port: DEFAULT_PORT,
            max_connections: None,
            metatab_slots: DEFAULT_METATAB_SLOTS,
            disk_segments: DEFAULT_DISK_SEGMENTS,
            tests: Vec::new(),
            warnings: Vec::new(),
        };
        for word in text.split_ascii_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                config
                    .warnings
                    .push(format!("ignored `{word}` (not key=value)"));
                continue;
            };
            match key {
                "export" => match ExportConfig::parse(value) {
                    Ok(export) => config.exports.push(export),
                    Err(error) => config
                        .warnings
                        .push(format!("ignored export `{value}`: {error}")),
                },
                "cache" => match byte_size::parse_size(value) {
                    Ok(bytes) => config.cache_bytes = usize::try_from(bytes).unwrap_or(usize::MAX),
                    Err(error) => config
                        .warnings
                        .push(format!("ignored cache size `{value}`: {error}")),
                },
                "data_cache" => match byte_size::parse_size(value) {
                    Ok(bytes) => config.data_cache_bytes = bytes,
                    Err(error) => config
                        .warnings
                        .push(format!("ignored data cache size `{value}`: {error}")),
                },
                "ip" if value == "dhcp" => config.address = Some(Address::Dhcp),
                "ip" => match parse_cidr(value) {
                    Some((address, prefix)) => {
                        config.address = Some(Address::Static(address, prefix))
                    }
                    None => config.warnings.push(format!(
                        "ignored address `{value}` (want A.B.C.D/PREFIX or dhcp)"
                    )),
                },
                "gw" => match value.parse::<Ipv4Addr>() {
                    Ok(gateway) => config.gateway = Some(gateway),
                    Err(_) => config.warnings.push(format!("ignored gateway `{value}`")),
                },
                "port" => match value.parse::<u16>() {
                    Ok(port) if port != 0 => config.port = port,
                    _ => config.warnings.push(format!("ignored port `{value}`")),
                },
                "connections" => match value.parse::<usize>() {
                    Ok(count) if (1..=MAX_CONNECTIONS).contains(&count) => {
                        config.max_connections = Some(count)
                    }
                    _ => config.warnings.push(format!(
                        "ignored connections `{value}` (want a number from 1 to {MAX_CONNECTIONS})"
                    )),
                },
                "metatab" => match value.parse::<u32>() {
                    Ok(slots)
                        if slots == 0
                            || (slots.is_power_of_two()
                                && (metatab::layout::WAYS..=metatab::layout::MAX_SLOT_COUNT)
                                    .contains(&slots)) =>
                    {
                        config.metatab_slots = slots
                    }
                    _ => config.warnings.push(format!(
                        "ignored metatab `{value}` (want 0 or a power of two from {} up to {})",
                        metatab::layout::WAYS,
                        metatab::layout::MAX_SLOT_COUNT
                    )),
                },
                "disk_segments" => match value.parse::<usize>() {
                    Ok(count) if (1..=MAX_DISK_SEGMENTS).contains(&count) => {
                        config.disk_segments = count
                    }
                    _ => config.warnings.push(format!(
                        "ignored disk_segments `{value}` (want a number from 1 to {MAX_DISK_SEGMENTS})"
                    )),
                },
                "test" => {
                    for action in value.split(',') {
                        match action {
                            "seed" => config.tests.push(TestAction::Seed),
                            "verify" => config.tests.push(TestAction::Verify),
                            "churn" => config.tests.push(TestAction::Churn),
                            "panic" => config.tests.push(TestAction::Panic),
                            "fault" => config.tests.push(TestAction::Fault),
                            "many" => config.tests.push(TestAction::Many),
                            "diskbench" => config.tests.push(TestAction::DiskBench),
                            other => config
                                .warnings
                                .push(format!("ignored test action `{other}`")),
                        }
                    }
                }
                other => config
                    .warnings
                    .push(format!("ignored unknown key `{other}`")),
            }
        }
        if config.exports.is_empty() {
            config.exports.push(ExportConfig::whole_file_system());
        }
        if config.address == Some(Address::Dhcp) {
            if let Some(gateway) = config.gateway.take() {
                config.warnings.push(format!(
                    "ignored gw={gateway}: with ip=dhcp the DHCP server names the router"
                ));
            }
        }
        config
    }

    /// Whether `action` was requested.
    pub fn wants(&self, action: TestAction) -> bool {
        self.tests.contains(&action)
    }
}

/// `A.B.C.D/PREFIX` with a prefix of 1 to 32 (a bare address means /24).
fn parse_cidr(value: &str) -> Option<(Ipv4Addr, u8)> {
    let (address, prefix) = match value.split_once('/') {
        Some((address, prefix)) => (address, prefix.parse::<u8>().ok()?),
        None => (value, 24),
    };
    let address = address.parse::<Ipv4Addr>().ok()?;
    ((1..=32).contains(&prefix) && !address.is_unspecified()).then_some((address, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_export_root_read_write() {
        let config = Config::parse(b"");
        assert_eq!(config.exports, [ExportConfig::whole_file_system()]);
        assert_eq!(config.cache_bytes, DEFAULT_CACHE_BYTES);
        assert!(config.tests.is_empty() && config.warnings.is_empty());
        assert_eq!(
            (config.address, config.gateway, config.port),
            (None, None, 2049)
        );
        assert_eq!(config.max_connections, None);
        assert_eq!(config.metatab_slots, 8192);
    }

    #[test]
    fn parses_metatab_slots() {
        assert_eq!(Config::parse(b"metatab=1024").metatab_slots, 1024);
        assert_eq!(Config::parse(b"metatab=131072").metatab_slots, 131_072);
        assert_eq!(Config::parse(b"metatab=0").metatab_slots, 0);
        let bad =
            Config::parse(b"metatab=1000 metatab=262144 metatab=-1 metatab= metatab=4k metatab=1");
        assert_eq!(bad.warnings.len(), 6, "{:?}", bad.warnings);
        assert_eq!(bad.metatab_slots, DEFAULT_METATAB_SLOTS);
    }

    #[test]
    fn parses_network_keys() {
        let config = Config::parse(b"ip=10.0.0.2/16 gw=10.0.0.1 port=12049");
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert_eq!(
            config.address,
            Some(Address::Static(Ipv4Addr::new(10, 0, 0, 2), 16))
        );
        assert_eq!(config.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(config.port, 12049);
        assert_eq!(
            Config::parse(b"ip=192.168.1.9").address,
            Some(Address::Static(Ipv4Addr::new(192, 168, 1, 9), 24))
        );
        let bad = Config::parse(b"ip=10.0.0.2/33 ip=10.0.0/24 ip=0.0.0.0/8 gw=x port=0 port=70000");
        assert_eq!(bad.warnings.len(), 6, "{:?}", bad.warnings);
        assert_eq!((bad.address, bad.gateway, bad.port), (None, None, 2049));
    }

    #[test]
    fn parses_dhcp_and_ignores_a_gateway_with_it() {
        let config = Config::parse(b"ip=dhcp");
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert_eq!(config.address, Some(Address::Dhcp));
        let config = Config::parse(b"gw=10.0.0.1 ip=dhcp");
        assert_eq!(
            (config.address, config.gateway),
            (Some(Address::Dhcp), None)
        );
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        assert!(config.warnings[0].contains("ip=dhcp"));
        let bad = Config::parse(b"ip=DHCP ip=dhcp4 ip=");
        assert_eq!(bad.warnings.len(), 3, "{:?}", bad.warnings);
        assert!(bad.warnings[0].contains("or dhcp"));
        assert_eq!(bad.address, None);
    }

    #[test]
    fn parses_the_connection_maximum() {
        assert_eq!(Config::parse(b"connections=1").max_connections, Some(1));
        assert_eq!(
            Config::parse(b"connections=65536").max_connections,
            Some(65536)
        );
        let bad = Config::parse(
            b"connections=0 connections=65537 connections=-1 connections= connections=64k connections=99999999999999999999999",
        );
        assert_eq!(bad.warnings.len(), 6, "{:?}", bad.warnings);
        assert!(bad.warnings[0].contains("want a number from 1 to 65536"));
        assert_eq!(bad.max_connections, None);
    }

    #[test]
    fn parses_every_key() {
        let config = Config::parse(
            b"export=/ export=/public,path=/srv/public,ro,allow=domain:3  cache=8M test=seed,churn,fault,many",
        );
        assert_eq!(config.exports.len(), 2);
        assert!(config.exports[1].read_only);
        assert_eq!(config.exports[1].name, "/public");
        assert_eq!(config.exports[1].path, "/srv/public");
        assert_eq!(config.cache_bytes, 8 << 20);
        assert_eq!(
            config.tests,
            [
                TestAction::Seed,
                TestAction::Churn,
                TestAction::Fault,
                TestAction::Many
            ]
        );
        assert!(config.wants(TestAction::Churn) && !config.wants(TestAction::Panic));
    }

    #[test]
    fn disk_segments_takes_1_to_512() {
        assert_eq!(Config::parse(b"").disk_segments, DEFAULT_DISK_SEGMENTS);
        assert_eq!(Config::parse(b"disk_segments=11").disk_segments, 11);
        assert_eq!(Config::parse(b"disk_segments=512").disk_segments, 512);
        for bad in [
            &b"disk_segments=0"[..],
            b"disk_segments=513",
            b"disk_segments=x",
        ] {
            let config = Config::parse(bad);
            assert_eq!(config.disk_segments, DEFAULT_DISK_SEGMENTS);
            assert!(
                config.warnings[0].contains("want a number from 1 to 512"),
                "{:?}",
                config.warnings
            );
        }
        assert_eq!(
            Config::parse(b"test=seed,diskbench").tests,
            [TestAction::Seed, TestAction::DiskBench]
        );
    }

    #[test]
    fn cache_takes_every_size_unit() {
        assert_eq!(Config::parse(b"cache=8MiB").cache_bytes, 8 << 20);
        assert_eq!(Config::parse(b"cache=8MB").cache_bytes, 8_000_000);
        assert_eq!(Config::parse(b"cache=512k").cache_bytes, 512 << 10);
        assert_eq!(Config::parse(b"data_cache=2M").data_cache_bytes, 2 << 20);
        assert_eq!(Config::parse(b"data_cache=0").data_cache_bytes, 0);
        let bad = Config::parse(b"data_cache=lots");
        assert_eq!(bad.data_cache_bytes, DEFAULT_DATA_CACHE_BYTES);
        assert_eq!(bad.warnings.len(), 1);
        let bad = Config::parse(b"cache=1.5M");
        assert_eq!(bad.cache_bytes, DEFAULT_CACHE_BYTES);
        assert!(bad.warnings[0].contains("fractions"), "{:?}", bad.warnings);
    }

    #[test]
    fn bad_words_become_warnings() {
        let config =
            Config::parse(b"bogus export=relative export=/a,xx cache=12Q test=fly =x \xff");
        assert_eq!(config.warnings.len(), 7, "{:?}", config.warnings);
        assert_eq!(config.exports[0].path, "/");
        assert_eq!(config.cache_bytes, DEFAULT_CACHE_BYTES);
        assert!(Config::parse(b"cache=99999999999999999999M").warnings.len() == 1);
        assert!(Config::parse(b"export=/a/../b").warnings.len() == 1);
        assert!(Config::parse(b"export=/a,allow=nowhere").warnings.len() == 1);
    }
}
