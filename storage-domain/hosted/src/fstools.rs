//! Offline image tools: mkfs, fsck, ls, get, snapshot. (Being written.)

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `mkfs`.
#[derive(Debug, clap::Args)]
pub struct MkfsArgs {
    /// The image file to create or overwrite.
    pub image: PathBuf,
}
/// Arguments of `fsck`.
#[derive(Debug, clap::Args)]
pub struct FsckArgs {
    /// The image file to check.
    pub image: PathBuf,
}
/// Arguments of `ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The image file.
    pub image: PathBuf,
}
/// Arguments of `get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The image file.
    pub image: PathBuf,
}
/// Snapshot subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots.
    List {
        /// The image file.
        image: PathBuf,
    },
}

pub fn mkfs(_args: MkfsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("mkfs is not built yet")
}
pub fn fsck(_args: FsckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("fsck is not built yet")
}
pub fn ls(_args: LsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("ls is not built yet")
}
pub fn get(_args: GetArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("get is not built yet")
}
pub fn snapshot(_command: SnapshotCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("snapshots are not built yet")
}
