//! The domain's configuration, parsed from the `extra=` command line.
//!
//! Whitespace-separated `key=value` words (`xl` puts `extra=` into
//! `start_info.cmd_line`, at most 1024 bytes):
//!
//! - `export=LINE`, repeatable: an export in the NFS server's export-line
//!   syntax (`nfs_server::ExportConfig::parse`: `/data,path=/srv,ro,
//!   allow=domain:3`, no spaces); default: `/`, read-write, root squashed.
//! - `cache=SIZE[K|M]`: bytes of file-system metadata cache (default 4M).
//! - `test=ACTION[,ACTION...]`: boot-test actions for `qemu-tests/`
//!   (`seed`, `verify`, `churn`, `panic`, `fault`; see `docs/xen.md`).
//!
//! The bytes come from the toolstack's configuration: nothing here panics
//! on them; unknown or malformed words become warnings the banner prints.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use nfs_server::ExportConfig;

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
}

/// The parsed configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Exports, in command-line order.
    pub exports: Vec<ExportConfig>,
    /// Metadata cache size handed to the file system.
    pub cache_bytes: usize,
    /// Boot-test actions, in command-line order.
    pub tests: Vec<TestAction>,
    /// Words that were not understood, for the banner.
    pub warnings: Vec<String>,
}

/// Default metadata cache: 4 MiB of a 32 MiB domain.
pub const DEFAULT_CACHE_BYTES: usize = 4 << 20;

impl Config {
    /// Parse a command line.
    pub fn parse(command_line: &[u8]) -> Config {
        let text = String::from_utf8_lossy(command_line);
        let mut config = Config {
            exports: Vec::new(),
            cache_bytes: DEFAULT_CACHE_BYTES,
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
                "cache" => match parse_size(value) {
                    Some(bytes) => config.cache_bytes = bytes,
                    None => config
                        .warnings
                        .push(format!("ignored cache size `{value}`")),
                },
                "test" => {
                    for action in value.split(',') {
                        match action {
                            "seed" => config.tests.push(TestAction::Seed),
                            "verify" => config.tests.push(TestAction::Verify),
                            "churn" => config.tests.push(TestAction::Churn),
                            "panic" => config.tests.push(TestAction::Panic),
                            "fault" => config.tests.push(TestAction::Fault),
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
        config
    }

    /// Whether `action` was requested.
    pub fn wants(&self, action: TestAction) -> bool {
        self.tests.contains(&action)
    }
}

fn parse_size(value: &str) -> Option<usize> {
    let (digits, multiplier) = match value.as_bytes().last()? {
        b'K' | b'k' => (&value[..value.len() - 1], 1usize << 10),
        b'M' | b'm' => (&value[..value.len() - 1], 1usize << 20),
        _ => (value, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(multiplier)
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
    }

    #[test]
    fn parses_every_key() {
        let config = Config::parse(
            b"export=/ export=/public,path=/srv/public,ro,allow=domain:3  cache=8M test=seed,churn,fault",
        );
        assert_eq!(config.exports.len(), 2);
        assert!(config.exports[1].read_only);
        assert_eq!(config.exports[1].name, "/public");
        assert_eq!(config.exports[1].path, "/srv/public");
        assert_eq!(config.cache_bytes, 8 << 20);
        assert_eq!(
            config.tests,
            [TestAction::Seed, TestAction::Churn, TestAction::Fault]
        );
        assert!(config.wants(TestAction::Churn) && !config.wants(TestAction::Panic));
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
