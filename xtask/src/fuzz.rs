//! `cargo xtask fuzz`: bounded runs of every cargo-fuzz target.
//!
//! Targets are the `[[bin]]` sections of `fuzz/Cargo.toml`; each starts from
//! its committed corpus (`fuzz/corpus/NAME`) and writes what it finds to a
//! scratch corpus under the target directory, so runs never dirty the tree
//! (`--update-corpus` merges the inputs that add coverage back into the
//! committed corpus, minimised). cargo-fuzz needs unstable compiler flags;
//! on a stable toolchain they are enabled with `RUSTC_BOOTSTRAP=1`, which
//! changes nothing else.
//!
//! Sanitizer: none by default. Every crate the targets reach forbids
//! `unsafe` code (xdr, nfs3, vrpc, metatab, vfs, sdfs, nfs-server), so
//! AddressSanitizer finds nothing there that Rust's own checks do not,
//! and it cost 4 to 8 times the executions (its checks of every byte
//! loaded, traced as comparisons). `--sanitizer address` builds with it
//! (the one dependency with `unsafe`, siphasher, is then checked too).
//! Each sanitizer builds into its own directory, so both stay warm.

use crate::process::{cargo, execute, on_path};
use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Executions each target must reach: after `--seconds`, a target
    /// below this count runs on until it reaches it (the long form is 10
    /// million executions or an hour, whichever is longer).
    #[arg(long, default_value_t = 0)]
    pub minimum_runs: u64,
    /// `none` or `address` (cargo-fuzz's `--sanitizer`).
    #[arg(long, default_value = "none")]
    pub sanitizer: String,
    /// Merge what the run found that adds coverage into the committed
    /// corpus `fuzz/corpus/TARGET` (libFuzzer's `-set_cover_merge=1`: a
    /// small set of inputs covering what the committed corpus does not).
    #[arg(long)]
    pub update_corpus: bool,
    /// Targets to run (default: all).
    pub targets: Vec<String>,
}

/// What one libFuzzer run reported.
#[derive(Debug, Default)]
struct RunFigures {
    executions: u64,
    executions_per_second: u64,
}

/// Run the fuzz targets.
///
/// # Errors
/// When cargo-fuzz cannot be installed, a target fails to build, or a target
/// finds a crash.
pub fn run(args: FuzzArgs) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let fuzz_directory = root.join("fuzz");
    let mut targets = args.targets.clone();
    if targets.is_empty() {
        targets = list_targets(&fuzz_directory.join("Cargo.toml"))?;
    }
    if targets.is_empty() {
        bail!("fuzz/Cargo.toml declares no targets");
    }
    if !matches!(args.sanitizer.as_str(), "none" | "address") {
        bail!("--sanitizer {}: expected none or address", args.sanitizer);
    }
    if !on_path("cargo-fuzz") {
        execute(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let build_directory = crate::target_dir().join(format!("fuzz-{}", args.sanitizer));
    let mut summary = Vec::new();
    for target in &targets {
        let scratch = crate::target_dir().join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&scratch)?;
        let seeds = fuzz_directory.join("corpus").join(target);
        let mut total = RunFigures::default();
        let mut limits = vec![format!("-max_total_time={}", args.seconds)];
        loop {
            let figures = run_once(
                &fuzz_directory,
                &build_directory,
                &args.sanitizer,
                target,
                &[scratch.as_path(), seeds.as_path()],
                &limits,
            )
            .with_context(|| format!("fuzz target {target}"))?;
            if figures.executions == 0 {
                bail!("fuzz target {target}: libFuzzer reported no executions");
            }
            total.executions += figures.executions;
            total.executions_per_second = figures.executions_per_second;
            if total.executions >= args.minimum_runs {
                break;
            }
            limits = vec![format!("-runs={}", args.minimum_runs - total.executions)];
        }
        if args.update_corpus {
            std::fs::create_dir_all(&seeds)?;
            let merge = [String::from("-set_cover_merge=1")];
            run_once(
                &fuzz_directory,
                &build_directory,
                &args.sanitizer,
                target,
                &[seeds.as_path(), scratch.as_path()],
                &merge,
            )
            .with_context(|| format!("merging the corpus of {target}"))?;
        }
        summary.push(format!(
            "{target}: {} executions, {} a second (last run)",
            total.executions, total.executions_per_second
        ));
    }
    eprintln!("fuzz: sanitizer {}", args.sanitizer);
    for line in summary {
        eprintln!("fuzz: {line}");
    }
    Ok(())
}

/// One `cargo fuzz run` of `target` on `corpora` (the first collects new
/// inputs) with libFuzzer `options`; its output is passed through and its
/// final figures returned.
fn run_once(
    fuzz_directory: &Path,
    build_directory: &Path,
    sanitizer: &str,
    target: &str,
    corpora: &[&Path],
    options: &[String],
) -> anyhow::Result<RunFigures> {
    let mut command = cargo();
    command
        .current_dir(fuzz_directory)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", "--release", "--sanitizer", sanitizer])
        .arg("--target-dir")
        .arg(build_directory)
        .arg(target);
    for corpus in corpora {
        if corpus.is_dir() {
            command.arg(corpus);
        }
    }
    command
        .arg("--")
        .args(options)
        .args(["-rss_limit_mb=2048", "-print_final_stats=1"])
        .stderr(Stdio::piped());
    eprintln!("+ {command:?}");
    let mut child = command.spawn().context("running cargo fuzz")?;
    let mut figures = RunFigures::default();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let mut words = line.split_whitespace();
            let (Some(name), Some(value)) = (words.next(), words.next()) else {
                continue;
            };
            let value = value.parse().unwrap_or(0);
            match name {
                "stat::number_of_executed_units:" => figures.executions = value,
                "stat::average_exec_per_sec:" => figures.executions_per_second = value,
                _ => {}
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo fuzz run {target} failed: {status}");
    }
    Ok(figures)
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
