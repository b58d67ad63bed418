//! `cargo xtask fuzz`: bounded runs of every cargo-fuzz target.
//!
//! Targets are the `[[bin]]` sections of `fuzz/Cargo.toml`; each starts from
//! its committed seed corpus (`fuzz/corpus/NAME`) and writes what it finds to
//! a scratch corpus under the target directory, so runs never dirty the tree.
//! cargo-fuzz needs unstable compiler flags; on a stable toolchain they are
//! enabled with `RUSTC_BOOTSTRAP=1`, which changes nothing else.

use crate::process::{cargo, execute, on_path};
use anyhow::{bail, Context};
use std::path::Path;

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Targets to run (default: all).
    pub targets: Vec<String>,
}

/// Run the fuzz targets.
///
/// # Errors
/// When cargo-fuzz cannot be installed, a target fails to build, or a target
/// finds a crash.
pub fn run(args: FuzzArgs) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let fuzz_directory = root.join("fuzz");
    let mut targets = args.targets;
    if targets.is_empty() {
        targets = list_targets(&fuzz_directory.join("Cargo.toml"))?;
    }
    if targets.is_empty() {
        bail!("fuzz/Cargo.toml declares no targets");
    }
    if !on_path("cargo-fuzz") {
        execute(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    for target in &targets {
        let scratch = crate::target_dir().join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&scratch)?;
        let seeds = fuzz_directory.join("corpus").join(target);
        let mut command = cargo();
        command
            .current_dir(&fuzz_directory)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "--release", target])
            .arg(&scratch);
        if seeds.is_dir() {
            command.arg(&seeds);
        }
        command.args([
            "--",
            &format!("-max_total_time={}", args.seconds),
            "-rss_limit_mb=2048",
        ]);
        execute(&mut command).with_context(|| format!("fuzz target {target}"))?;
    }
    Ok(())
}

/// The `name = "..."` of every `[[bin]]` section.
fn list_targets(manifest: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let mut targets = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin {
            if let Some(value) = line.strip_prefix("name") {
                let name = value
                    .trim_start()
                    .trim_start_matches('=')
                    .trim()
                    .trim_matches('"');
                targets.push(name.to_owned());
            }
        }
    }
    Ok(targets)
}
