//! `storage-domain-hosted`: the storage domain as an ordinary Linux process.
//!
//! The same file system and NFS server as the Xen unikernel, over an image
//! file instead of blkfront and std TCP instead of netfront: `serve`, plus
//! the administrator's offline tools for images: mkfs, fsck, listing and
//! copying out, and snapshots.

mod cold_reads;
mod control;
mod fstools;
mod group_commit;
mod image;
mod serve;
mod status;
mod vrpc_serve;

use clap::{Parser, Subcommand};

/// The storage domain, hosted as a Linux process.
#[derive(Debug, Parser)]
#[command(name = "storage-domain-hosted", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve an image over NFSv3 (with MOUNT and PORTMAP on the same port).
    Serve(serve::ServeArgs),
    /// Format an image file with an empty file system.
    Mkfs(fstools::MkfsArgs),
    /// Check an image: every checksum and invariant. Exit 0 only when clean.
    Fsck(fstools::FsckArgs),
    /// List a directory of an image (offline, read-only).
    Ls(fstools::LsArgs),
    /// Copy a file or tree out of an image (offline, read-only).
    Get(fstools::GetArgs),
    /// Print the figures of the running server of IMAGE: connections,
    /// attached guests, calls per procedure, commits, cache, space.
    Stats {
        /// The image the server serves (its --disk).
        image: std::path::PathBuf,
    },
    /// Create, list or delete snapshots of an image: through its running
    /// server when one serves it (guests see them at once under
    /// `.snapshots/NAME`), offline otherwise.
    #[command(subcommand)]
    Snapshot(fstools::SnapshotCommand),
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Mkfs(args) => fstools::mkfs(args),
        Command::Fsck(args) => fstools::fsck(args),
        Command::Ls(args) => fstools::ls(args),
        Command::Get(args) => fstools::get(args),
        Command::Snapshot(command) => fstools::snapshot(command),
        Command::Stats { image } => image
            .canonicalize()
            .map_err(|error| anyhow::anyhow!("{}: {error}", image.display()))
            .and_then(|image| {
                status::fetch(&image).map_err(|error| {
                    anyhow::anyhow!("no server of {} runs here: {error}", image.display())
                })
            })
            .map(|text| {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("storage-domain-hosted: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
