//! `mount.guest-driver`: the helper `mount(8)` runs for file systems of
//! type `guest-driver`, so `mount -t guest-driver` and `/etc/fstab` work.
//!
//! Design: the helper is this same binary called through a link named
//! `mount.guest-driver` (the package installs `/sbin/mount.guest-driver`).
//! It parses the calling convention of mount helpers (mount(8), "EXTERNAL
//! HELPERS": `mount.TYPE SPEC DIR [-sfnv] [-N NAMESPACE] [-o OPTIONS]`),
//! turns the options into the arguments of `guest-driver mount`, starts
//! that daemon in its own process group and returns once the mount is live
//! (exit 0) or the daemon failed (exit 32, with the daemon's own error on
//! standard error). The daemon tells the helper by closing its standard
//! error once the FUSE mount exists (`--detach-output`): nothing that
//! reads the output of `mount` is held until the file system is unmounted.
//! `SPEC` becomes the mount's source in `/proc/mounts`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use clap::Parser;
use fuser::MountOption;

/// The file-system type this helper serves: `mount -t guest-driver`.
pub const FILE_SYSTEM_TYPE: &str = "guest-driver";

/// Exit codes of mount(8) ("RETURN CODES") that a helper uses.
const EXIT_USAGE: u8 = 1;
const EXIT_SYSTEM: u8 = 2;
const EXIT_MOUNT_FAILURE: u8 = 32;

/// The mount helper calling convention.
#[derive(Debug, Parser)]
#[command(
    name = "mount.guest-driver",
    version,
    about = "Mount helper for file systems of type guest-driver (called by mount(8))",
    after_help = "OPTIONS (-o, comma-separated): one of hosted=SOCKET, xen, tcp=HOST:PORT; \
                  export=PATH, backend=NAME|DOMID, device=N, mount-port=PORT, \
                  attr-timeout=S, entry-timeout=S, negative-timeout=S, threads=N, read-ahead=SIZE, \
                  no-metadata-table, server-permissions, close-commit, no-close-commit, \
                  no-write-behind; the kernel flags ro, rw, nosuid, suid, nodev, dev, \
                  noexec, exec, noatime, atime, sync, async, dirsync. Ignored: defaults, \
                  auto, noauto, nofail, _netdev, user, nouser, users, owner, group, \
                  comment=..., x-*. See docs/operations.md."
)]
struct HelperArgs {
    /// What /proc/mounts shows as the mount's source (any word, e.g.
    /// storage-domain).
    spec: String,
    /// The mount point.
    dir: PathBuf,
    /// Sloppy: ignore options this helper does not know.
    #[arg(short = 's')]
    sloppy: bool,
    /// Fake: check everything, but do not mount.
    #[arg(short = 'f')]
    fake: bool,
    /// No mtab: accepted (this helper never writes /etc/mtab).
    #[arg(short = 'n')]
    no_mtab: bool,
    /// Verbose: print the daemon's command line.
    #[arg(short = 'v')]
    verbose: bool,
    /// Mount options, comma-separated (repeatable).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// The type mount(8) was given (guest-driver).
    #[arg(short = 't', value_name = "TYPE")]
    file_system_type: Option<String>,
    /// A mount namespace (not supported: refused).
    #[arg(short = 'N', value_name = "NAMESPACE")]
    namespace: Option<String>,
}

/// Options mount(8) and fstab use for themselves: accepted and ignored.
fn is_ignored(name: &str) -> bool {
    matches!(
        name,
        "defaults"
            | "auto"
            | "noauto"
            | "nofail"
            | "_netdev"
            | "user"
            | "nouser"
            | "users"
            | "owner"
            | "group"
            | "comment"
    ) || name.starts_with("x-")
}

/// guest-driver options that take a value (`NAME=VALUE` -> `--NAME VALUE`).
const VALUE_OPTIONS: &[&str] = &[
    "hosted",
    "tcp",
    "export",
    "backend",
    "device",
    "mount-port",
    "attr-timeout",
    "entry-timeout",
    "negative-timeout",
    "threads",
    "read-ahead",
];

/// guest-driver options without a value (`NAME` -> `--NAME`).
const FLAG_OPTIONS: &[&str] = &[
    "xen",
    "no-metadata-table",
    "server-permissions",
    "close-commit",
    "no-close-commit",
    "no-write-behind",
];

/// The kernel's generic mount flags, passed to the FUSE mount.
pub const KERNEL_FLAGS: [(&str, MountOption); 13] = [
    ("ro", MountOption::RO),
    ("rw", MountOption::RW),
    ("nosuid", MountOption::NoSuid),
    ("suid", MountOption::Suid),
    ("nodev", MountOption::NoDev),
    ("dev", MountOption::Dev),
    ("noexec", MountOption::NoExec),
    ("exec", MountOption::Exec),
    ("noatime", MountOption::NoAtime),
    ("atime", MountOption::Atime),
    ("sync", MountOption::Sync),
    ("async", MountOption::Async),
    ("dirsync", MountOption::DirSync),
];

/// The fuser option of kernel flag `name`.
pub fn kernel_flag(name: &str) -> Option<MountOption> {
    KERNEL_FLAGS
        .iter()
        .find(|(flag, _)| *flag == name)
        .map(|(_, option)| option.clone())
}

/// Why an option list was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum OptionError {
    /// Not an option of this helper (and not sloppy).
    Unknown(String),
    /// `NAME` given without its `=VALUE`, or a flag given one.
    Value(String),
    /// No transport, or more than one.
    Transport,
}

impl std::fmt::Display for OptionError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionError::Unknown(option) => write!(
                formatter,
                "unknown option `{option}` (see mount.guest-driver --help; -s ignores unknown options)"
            ),
            OptionError::Value(option) => write!(
                formatter,
                "option `{option}`: {}",
                if VALUE_OPTIONS.contains(&option.split('=').next().unwrap_or_default()) {
                    "wants a value (NAME=VALUE)"
                } else {
                    "takes no value"
                }
            ),
            OptionError::Transport => formatter
                .write_str("give exactly one transport: hosted=SOCKET, xen or tcp=HOST:PORT"),
        }
    }
}

/// The `guest-driver mount` arguments for mount options `options` (as
/// mount(8) passes them: comma-separated), without the mount point.
///
/// # Errors
/// An unknown option (unless `sloppy`), a value missing or misplaced, no
/// transport or several.
pub fn daemon_arguments(options: &[String], sloppy: bool) -> Result<Vec<String>, OptionError> {
    let mut arguments = Vec::new();
    let mut transports = 0;
    for option in options
        .iter()
        .flat_map(|list| list.split(','))
        .filter(|option| !option.is_empty())
    {
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (option, None),
        };
        if is_ignored(name) {
            continue;
        }
        // fstab writers use both spellings: attr_timeout and attr-timeout.
        let name = name.replace('_', "-");
        let name = name.as_str();
        if matches!(name, "hosted" | "tcp" | "xen") {
            transports += 1;
        }
        if VALUE_OPTIONS.contains(&name) {
            let value = value
                .filter(|value| !value.is_empty())
                .ok_or_else(|| OptionError::Value(option.to_owned()))?;
            arguments.push(format!("--{name}"));
            arguments.push(value.to_owned());
        } else if FLAG_OPTIONS.contains(&name) {
            if value.is_some() {
                return Err(OptionError::Value(option.to_owned()));
            }
            arguments.push(format!("--{name}"));
        } else if kernel_flag(name).is_some() && value.is_none() {
            arguments.push("--kernel-option".into());
            arguments.push(name.to_owned());
        } else if !sloppy {
            return Err(OptionError::Unknown(option.to_owned()));
        }
    }
    if transports != 1 {
        return Err(OptionError::Transport);
    }
    Ok(arguments)
}

/// Whether this process was called as the mount helper.
pub fn called_as_helper() -> bool {
    std::env::args_os()
        .next()
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_name)
        .is_some_and(|name| name == format!("mount.{FILE_SYSTEM_TYPE}").as_str())
}

/// Mount points of `fuse.guest-driver` mounts, from `/proc/self/mountinfo`.
fn guest_driver_mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let separator = fields.iter().position(|field| *field == "-")?;
            let file_system_type = fields.get(separator + 1)?;
            (*file_system_type == format!("fuse.{FILE_SYSTEM_TYPE}").as_str())
                .then_some(fields.get(4)?)
                .map(|dir| PathBuf::from(unescape_mountinfo(dir)))
        })
        .collect()
}

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let octal = bytes
            .get(index + 1..index + 4)
            .filter(|digits| bytes[index] == b'\\' && digits.iter().all(u8::is_ascii_digit))
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                index += 4;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("mount.{FILE_SYSTEM_TYPE}: {message}");
    ExitCode::from(code)
}

/// Run as `mount.guest-driver`.
pub fn run() -> ExitCode {
    let arguments = match HelperArgs::try_parse() {
        Ok(arguments) => arguments,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    if arguments.namespace.is_some() {
        return fail(EXIT_USAGE, "-N (mount namespaces) is not supported");
    }
    if let Some(file_system_type) = &arguments.file_system_type {
        if file_system_type != FILE_SYSTEM_TYPE {
            return fail(
                EXIT_USAGE,
                format!("type {file_system_type} is not {FILE_SYSTEM_TYPE}"),
            );
        }
    }
    let daemon = match daemon_arguments(&arguments.options, arguments.sloppy) {
        Ok(daemon) => daemon,
        Err(error) => return fail(EXIT_USAGE, error),
    };
    let dir = match arguments.dir.canonicalize() {
        Ok(dir) if dir.is_dir() => dir,
        Ok(dir) => return fail(EXIT_USAGE, format!("{}: not a directory", dir.display())),
        Err(error) => {
            return fail(
                EXIT_USAGE,
                format!("mount point {}: {error}", arguments.dir.display()),
            )
        }
    };
    if guest_driver_mounts().contains(&dir) {
        return fail(
            EXIT_MOUNT_FAILURE,
            format!("{} is already a guest-driver mount", dir.display()),
        );
    }
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(error) => return fail(EXIT_SYSTEM, format!("cannot find guest-driver: {error}")),
    };
    let mut command = Command::new(program);
    command
        .arg("mount")
        .args(&daemon)
        .arg("--source")
        .arg(&arguments.spec)
        .arg("--detach-output")
        .arg(&dir);
    if arguments.verbose || arguments.fake {
        let words: Vec<OsString> = std::iter::once(command.get_program().to_owned())
            .chain(command.get_args().map(ToOwned::to_owned))
            .collect();
        eprintln!(
            "mount.{FILE_SYSTEM_TYPE}: {}",
            words
                .iter()
                .map(|word| word.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if arguments.fake {
        return ExitCode::SUCCESS;
    }
    start_daemon(command, &dir)
}

/// Start the daemon detached and wait until its mount is live or it exits.
fn start_daemon(mut command: Command, dir: &Path) -> ExitCode {
    // Its own process group: a Ctrl-C meant for mount(8) or the shell does
    // not reach it, and it outlives the helper.
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return fail(EXIT_SYSTEM, format!("cannot start guest-driver: {error}")),
    };
    // Relay the daemon's messages until it closes its standard error:
    // it does so once mounted, or by exiting.
    if let Some(pipe) = child.stderr.take() {
        let mut stderr = std::io::stderr();
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(stderr, "{line}");
        }
    }
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return fail(
                    EXIT_MOUNT_FAILURE,
                    format!(
                        "guest-driver ended ({status}) before {} was mounted",
                        dir.display()
                    ),
                )
            }
            Ok(None) if guest_driver_mounts().iter().any(|mount| mount == dir) => {
                return ExitCode::SUCCESS
            }
            // The output is closed just after the mount is made: give the
            // kernel's mount table (or the daemon's exit) a moment.
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(error) => return fail(EXIT_SYSTEM, format!("waiting for guest-driver: {error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| word.to_string()).collect()
    }

    #[test]
    fn fstab_options_become_daemon_arguments() {
        let options = strings(&[
            "defaults,_netdev,nofail,noauto,x-systemd.automount,comment=x,hosted=/run/sd.sock,export=/data,ro,nosuid,attr_timeout=5,entry-timeout=2.5,threads=8,read_ahead=4M,no-write-behind,rw,user",
        ]);
        assert_eq!(
            daemon_arguments(&options, false),
            Ok(strings(&[
                "--hosted",
                "/run/sd.sock",
                "--export",
                "/data",
                "--kernel-option",
                "ro",
                "--kernel-option",
                "nosuid",
                "--attr-timeout",
                "5",
                "--entry-timeout",
                "2.5",
                "--threads",
                "8",
                "--read-ahead",
                "4M",
                "--no-write-behind",
                "--kernel-option",
                "rw",
            ]))
        );
        assert_eq!(
            daemon_arguments(
                &strings(&["xen,backend=storage-domain,device=0", "negative_timeout=0"]),
                false
            ),
            Ok(strings(&[
                "--xen",
                "--backend",
                "storage-domain",
                "--device",
                "0",
                "--negative-timeout",
                "0",
            ]))
        );
        assert_eq!(
            daemon_arguments(&strings(&["tcp=10.0.0.2:2049,mount_port=635"]), false),
            Ok(strings(&["--tcp", "10.0.0.2:2049", "--mount-port", "635"]))
        );
    }

    #[test]
    fn bad_options_are_refused_with_the_reason() {
        let refused = |options: &str, sloppy| daemon_arguments(&strings(&[options]), sloppy);
        assert_eq!(
            refused("hosted=/s,colour=blue", false),
            Err(OptionError::Unknown("colour=blue".into()))
        );
        assert_eq!(
            refused("hosted=/s,colour=blue", true),
            Ok(strings(&["--hosted", "/s"]))
        );
        assert_eq!(
            refused("hosted", false),
            Err(OptionError::Value("hosted".into()))
        );
        assert_eq!(
            refused("hosted=", false),
            Err(OptionError::Value("hosted=".into()))
        );
        assert_eq!(
            refused("xen=1", false),
            Err(OptionError::Value("xen=1".into()))
        );
        assert_eq!(
            refused("ro=1,xen", false),
            Err(OptionError::Unknown("ro=1".into()))
        );
        assert_eq!(refused("export=/", false), Err(OptionError::Transport));
        assert_eq!(refused("", false), Err(OptionError::Transport));
        assert_eq!(refused("xen,tcp=h:1", false), Err(OptionError::Transport));
        assert_eq!(
            OptionError::Transport.to_string(),
            "give exactly one transport: hosted=SOCKET, xen or tcp=HOST:PORT"
        );
        assert_eq!(
            OptionError::Value("hosted".into()).to_string(),
            "option `hosted`: wants a value (NAME=VALUE)"
        );
        assert_eq!(
            OptionError::Value("xen=1".into()).to_string(),
            "option `xen=1`: takes no value"
        );
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/mnt/my\\040share"), "/mnt/my share");
        assert_eq!(unescape_mountinfo("/mnt/a\\134b"), "/mnt/a\\b");
        assert_eq!(unescape_mountinfo("/plain\\"), "/plain\\");
    }

    #[test]
    fn the_helper_follows_the_mount_calling_convention() {
        let parsed = HelperArgs::try_parse_from([
            "mount.guest-driver",
            "storage-domain",
            "/mnt/share",
            "-n",
            "-o",
            "hosted=/run/sd.sock,export=/",
            "-v",
        ])
        .unwrap();
        assert_eq!(parsed.spec, "storage-domain");
        assert_eq!(parsed.dir, PathBuf::from("/mnt/share"));
        assert!(parsed.no_mtab && parsed.verbose && !parsed.fake && !parsed.sloppy);
        assert_eq!(parsed.options, ["hosted=/run/sd.sock,export=/"]);
        let combined = HelperArgs::try_parse_from([
            "mount.guest-driver",
            "s",
            "/m",
            "-sfv",
            "-t",
            "guest-driver",
        ])
        .unwrap();
        assert!(combined.sloppy && combined.fake && combined.verbose);
        assert!(HelperArgs::try_parse_from(["mount.guest-driver", "only-spec"]).is_err());
    }
}
