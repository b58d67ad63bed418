//! `storage-domain-ctl`: attach Xen guests to the storage domain (run in dom0).
//!
//! Creates and removes the xenstore directories of a VRPC device
//! (`docs/xenstore.md`): the dom0 half of the PV split-driver handshake,
//! as `xl block-attach` is for disks. Everything else (grants, rings, the
//! export check) happens between the guest and the storage domain.
#![forbid(unsafe_code)]

mod commands;
mod plan;
mod snapshot;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use xen_linux::Xenstore;

use commands::{AttachRequest, CtlError, DetachRequest, DeviceChoice, DomainSpec};

/// Attach Xen guests to the storage domain's file service (VRPC), in dom0.
#[derive(Debug, Parser)]
#[command(name = "storage-domain-ctl", version)]
struct Cli {
    /// Xenstore to use: xenstored's socket or the xenbus device [default:
    /// /dev/xen/xenbus, then /run/xenstored/socket]
    #[arg(long, global = true, value_name = "PATH")]
    xenstore: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Give a guest a VRPC device served by the storage domain
    Attach(AttachArgs),
    /// Remove a guest's VRPC device(s)
    Detach(DetachArgs),
    /// List the storage domain's VRPC devices
    List(ListArgs),
    /// Take, delete or list snapshots of the storage domain's file system
    /// while it runs (guests read them under `.snapshots/NAME`)
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Print the storage domain's statistics: guests, calls per procedure,
    /// commits, caches, space, heap (refreshed every 5 s)
    Stats(BackendArg),
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Take snapshot NAME of everything written so far
    Create(SnapshotArgs),
    /// Delete snapshot NAME and free the space only it held
    Delete(SnapshotArgs),
    /// List the snapshots: name, commit, time taken
    List(SnapshotListArgs),
}

#[derive(Debug, Args)]
struct SnapshotArgs {
    /// The snapshot's name
    #[arg(value_name = "NAME")]
    name: String,

    #[command(flatten)]
    wait: SnapshotWait,
}

#[derive(Debug, Args)]
struct SnapshotListArgs {
    #[command(flatten)]
    wait: SnapshotWait,
}

#[derive(Debug, Args)]
struct SnapshotWait {
    /// Seconds to wait for the storage domain's answer
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,

    #[command(flatten)]
    backend: BackendArg,
}

#[derive(Debug, Args)]
struct BackendArg {
    /// Storage domain serving the device (name or id)
    #[arg(long, value_name = "NAME|DOMID", default_value = "storage-domain")]
    backend: DomainSpec,
}

#[derive(Debug, Args)]
struct AttachArgs {
    /// Client domain (name or id; 0 is dom0 itself)
    #[arg(value_name = "GUEST")]
    guest: DomainSpec,

    /// Export the guest may mount (an absolute path in the storage domain)
    #[arg(long, value_name = "PATH", default_value = "/")]
    export: String,

    /// Device number [default: the first free one]
    #[arg(long, value_name = "N")]
    device: Option<u32>,

    #[command(flatten)]
    backend: BackendArg,
}

#[derive(Debug, Args)]
struct DetachArgs {
    /// Client domain (name or id)
    #[arg(value_name = "GUEST")]
    guest: DomainSpec,

    /// Device number [default: the guest's only device]
    #[arg(long, value_name = "N", conflicts_with = "all")]
    device: Option<u32>,

    /// Detach every device of the guest on this storage domain
    #[arg(long)]
    all: bool,

    /// Seconds to wait for the guest to close each device before removing
    /// its keys anyway
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    timeout: u64,

    #[command(flatten)]
    backend: BackendArg,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    backend: BackendArg,
}

fn connect(path: Option<&str>) -> Result<Xenstore, CtlError> {
    match path {
        None => Ok(Xenstore::open()?),
        Some(path) => Xenstore::open_path(path).map_err(|error| CtlError::XenstoreUnreachable {
            path: path.to_owned(),
            error,
        }),
    }
}

fn run(cli: Cli) -> Result<(), CtlError> {
    let store = connect(cli.xenstore.as_deref())?;
    match cli.command {
        Command::Attach(args) => {
            let attached = commands::attach(
                &store,
                &AttachRequest {
                    guest: args.guest,
                    backend: args.backend.backend,
                    export: args.export,
                    device: args.device,
                },
            )?;
            println!("{attached}");
        }
        Command::Detach(args) => {
            let devices = match (args.device, args.all) {
                (Some(device), _) => DeviceChoice::One(device),
                (None, true) => DeviceChoice::All,
                (None, false) => DeviceChoice::Only,
            };
            let detached = commands::detach(
                &store,
                &DetachRequest {
                    guest: args.guest,
                    backend: args.backend.backend,
                    devices,
                    timeout: Duration::from_secs(args.timeout),
                },
            )?;
            for device in detached {
                println!("{device}");
            }
        }
        Command::List(args) => {
            let rows = commands::list(&store, &args.backend.backend)?;
            if !rows.is_empty() {
                print!("{}", commands::format_list(&rows));
            }
        }
        Command::Snapshot(command) => {
            use vrpc::xenstore::SnapshotRequest;
            let (request, wait) = match &command {
                SnapshotCommand::Create(args) => {
                    (SnapshotRequest::Create(args.name.as_bytes()), &args.wait)
                }
                SnapshotCommand::Delete(args) => {
                    (SnapshotRequest::Delete(args.name.as_bytes()), &args.wait)
                }
                SnapshotCommand::List(args) => (SnapshotRequest::List, &args.wait),
            };
            let text = snapshot::snapshot(
                &store,
                &wait.backend.backend,
                request,
                Duration::from_secs(wait.timeout),
            )?;
            print!("{text}");
        }
        Command::Stats(args) => print!("{}", snapshot::statistics(&store, &args.backend)?),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout and succeed; usage errors are
            // failures like any other (exit 1).
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("storage-domain-ctl: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(arguments: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("storage-domain-ctl").chain(arguments.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn attach_defaults_and_options() {
        let Command::Attach(args) = parse(&["attach", "vm1"]).unwrap().command else {
            panic!("not attach");
        };
        assert_eq!(args.guest, DomainSpec::Name("vm1".into()));
        assert_eq!(args.export, "/");
        assert_eq!(args.device, None);
        assert_eq!(
            args.backend.backend,
            DomainSpec::Name("storage-domain".into())
        );
        let cli = parse(&[
            "attach",
            "0",
            "--export",
            "/data",
            "--backend",
            "3",
            "--device",
            "2",
            "--xenstore",
            "/tmp/socket",
        ])
        .unwrap();
        assert_eq!(cli.xenstore.as_deref(), Some("/tmp/socket"));
        let Command::Attach(args) = cli.command else {
            panic!("not attach");
        };
        assert_eq!(args.guest, DomainSpec::Id(0));
        assert_eq!(args.export, "/data");
        assert_eq!(args.backend.backend, DomainSpec::Id(3));
        assert_eq!(args.device, Some(2));
    }

    #[test]
    fn detach_options() {
        let Command::Detach(args) = parse(&["detach", "vm1"]).unwrap().command else {
            panic!("not detach");
        };
        assert_eq!((args.device, args.all, args.timeout), (None, false, 10));
        let Command::Detach(args) = parse(&["detach", "7", "--all", "--timeout", "3"])
            .unwrap()
            .command
        else {
            panic!("not detach");
        };
        assert!(args.all);
        assert_eq!(args.timeout, 3);
        assert!(parse(&["detach", "vm1", "--all", "--device", "1"]).is_err());
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["attach"]).is_err());
        assert!(parse(&["attach", "70000"]).is_err());
        assert!(parse(&["attach", "vm1", "--device", "-1"]).is_err());
        assert!(parse(&["list", "extra"]).is_err());
        assert!(parse(&["list"]).is_ok());
        assert!(parse(&["snapshot", "create"]).is_err());
        assert!(parse(&["snapshot", "list", "extra"]).is_err());
    }

    #[test]
    fn snapshot_options() {
        let Command::Snapshot(SnapshotCommand::Create(args)) =
            parse(&["snapshot", "create", "nightly"]).unwrap().command
        else {
            panic!("not snapshot create");
        };
        assert_eq!(args.name, "nightly");
        assert_eq!(args.wait.timeout, 30);
        assert_eq!(
            args.wait.backend.backend,
            DomainSpec::Name("storage-domain".into())
        );
        let Command::Snapshot(SnapshotCommand::List(args)) =
            parse(&["snapshot", "list", "--backend", "4", "--timeout", "5"])
                .unwrap()
                .command
        else {
            panic!("not snapshot list");
        };
        assert_eq!(
            (args.wait.backend.backend, args.wait.timeout),
            (DomainSpec::Id(4), 5)
        );
    }
}
