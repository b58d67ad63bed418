//! `cargo xtask`: the project's build, test and demo orchestration.
//!
//! The Rust convention for project tasks that outgrow a Makefile: plain Rust,
//! no extra tools. `./test.sh` and `./quickstart.sh` install system packages
//! and then call into here.
#![forbid(unsafe_code)]

mod bench;
mod deb;
mod fill;
mod fuzz;
mod hosted;
mod package_test;
mod process;
mod quickstart;
mod soak;
mod test;
mod torture;
mod workload;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Project tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every check CI runs: fmt, clippy, no_std builds, docs, tests, fuzz, QEMU.
    Test(test::TestArgs),
    /// Start the hosted storage domain on a fresh image and mount it with guest-driver.
    Quickstart(quickstart::QuickstartArgs),
    /// Run the cargo-fuzz targets for a bounded time each.
    Fuzz(fuzz::FuzzArgs),
    /// Boot Xen, a dom0 and the storage domain under QEMU and check it.
    QemuTest,
    /// Side-by-side benchmarks: local ext4, VRPC, TCP, nfs-ganesha, bindfs (root).
    Bench(bench::BenchArgs),
    /// Build the Debian packages (guest and dom0) into target/deb/.
    Deb(deb::DebArgs),
    /// Install the guest package here and mount through /etc/fstab (root).
    PackageTest,
    /// Kill campaign: SIGKILL the hosted server under mixed clients, check every durable write.
    Torture(torture::TortureArgs),
    /// Many guests, long: VRPC and TCP mounts under mixed clients; errors, RSS, coherence, latency.
    Soak(soak::SoakArgs),
    /// Full disk: many writers over VRPC and TCP fill a small image; NOSPC, nothing lost, room again.
    Fill(fill::FillArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test(args) => test::run(args),
        Command::Quickstart(args) => quickstart::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::QemuTest => test::qemu_test(),
        Command::Bench(args) => bench::run(args),
        Command::Deb(args) => deb::run(args).map(|_| ()),
        Command::PackageTest => package_test::run(),
        Command::Torture(args) => torture::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Fill(args) => fill::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's directory).
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The cargo target directory the workspace builds into.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}
