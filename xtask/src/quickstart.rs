//! `cargo xtask quickstart`: what the storage domain can do today, on a
//! fresh disk image.
//!
//! Builds `storage-domain-hosted`, formats a disk image with the storage
//! domain's own file system (once; later runs reuse it), checks it with
//! `fsck` and lists it. Serving it over NFS and mounting it with
//! guest-driver are the next milestones; this task grows into the full
//! "serve and mount" quick start when they land.

use crate::process::{cargo, execute};
use std::path::PathBuf;
use std::process::Command;

/// Arguments of `cargo xtask quickstart`.
#[derive(Debug, clap::Args)]
pub struct QuickstartArgs {
    /// Directory for the disk image.
    #[arg(long, default_value = "quickstart-data")]
    pub directory: PathBuf,
    /// Size of the image when it is created.
    #[arg(long, default_value = "1G")]
    pub size: String,
}

/// Run the quick start.
///
/// # Errors
/// When the build or a tool fails.
pub fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    execute(cargo().current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "storage-domain-hosted",
    ]))?;
    let tool = crate::target_dir().join("release/storage-domain-hosted");
    std::fs::create_dir_all(&args.directory)?;
    let image = args.directory.join("disk.img");
    if image.exists() {
        println!("using the existing image {}", image.display());
    } else {
        execute(
            Command::new(&tool)
                .arg("mkfs")
                .arg(&image)
                .args(["--size", &args.size]),
        )?;
    }
    execute(Command::new(&tool).arg("fsck").arg(&image))?;
    execute(Command::new(&tool).arg("ls").arg(&image))?;
    println!();
    println!(
        "The disk image {} holds a fresh storage-domain file system.",
        image.display()
    );
    println!(
        "Inspect it with: {} ls|get|fsck {}",
        tool.display(),
        image.display()
    );
    println!(
        "Serving it over NFSv3 and mounting it with guest-driver are not built yet (see README)."
    );
    Ok(())
}
