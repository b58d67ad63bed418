//! `cargo xtask bench`: the same workloads on local ext4, guest-driver over
//! VRPC (with and without the metadata table), guest-driver over TCP to our
//! hosted server and to nfs-ganesha, and bindfs, in one run on one machine.
//!
//! Design: one loop-mounted ext4 image is the local file system (a), and
//! the backing store of ganesha (e) and bindfs (f); the hosted server's
//! systems (b, c, d) each get a fresh image per session. Each round runs
//! every workload group on every system, the systems in a rotated order
//! per round and group so that drift on a busy machine hits all of them
//! alike; the results are medians over rounds, shown as ratios to (a).
//! A system whose pieces are missing (not built yet, not installed) is a
//! row that says "skipped: REASON". Everything set up is torn down on
//! success, error and Ctrl-C ([`cleanup`]).

mod apache_source;
mod cleanup;
mod report;
mod system;
mod workload;

use crate::process::{cargo, execute};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use system::{Binaries, Environment, Session, SystemKind};
use workload::{Group, Inputs, Scale};

/// Arguments of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Smaller workloads and one round (under 5 minutes): checks that
    /// every system works, not how fast.
    #[arg(long)]
    pub quick: bool,
    /// Rounds; each system runs each workload once per round [default: 3,
    /// 1 with --quick].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Only these systems, by letter or key (a/local, b/vrpc,
    /// c/vrpc-no-table, d/tcp, e/ganesha, f/bindfs), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub systems: Vec<String>,
    /// Only these workload groups (apache, stat, postmark, large-file).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Images, mount points, logs and the cached Apache source [default:
    /// TARGET/bench].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Take guest-driver and storage-domain-hosted from this directory
    /// instead of building them.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where results.json, chart.svg and the table go [default:
    /// docs/benchmarks (whose table in docs/benchmarks.md is then
    /// updated); TARGET/bench/quick-results with --quick].
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// A note recorded with the results (e.g. what else ran meanwhile).
    #[arg(long)]
    pub note: Option<String>,
    /// An extra argument for every `guest-driver mount` (b to e), e.g.
    /// `--guest-driver-arg=--attr-timeout=1` (repeatable; recorded in the
    /// results' command).
    #[arg(long, allow_hyphen_values = true)]
    pub guest_driver_arg: Vec<String>,
    /// Do not run scripts/bootstrap.sh bench to install missing tools.
    #[arg(long)]
    pub no_install: bool,
}

/// A system's state in this run.
#[derive(Debug)]
struct SystemState {
    kind: SystemKind,
    skipped: Option<String>,
}

/// Run the bench.
///
/// # Errors
/// When not root, when the setup fails, or when writing the results fails.
/// A system or workload that fails is recorded in the results instead.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the bench mounts file systems and drops caches: run it as root");
    }
    cleanup::install_signal_handler()?;
    let root = crate::workspace_root();
    let started_at = utc_now();
    let started = Instant::now();
    let load_before = load_average();
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| crate::target_dir().join("bench"));
    std::fs::create_dir_all(&work)?;
    let work = work.canonicalize()?;
    let docs_output = root.join("docs/benchmarks");
    let output = args.output.clone().unwrap_or_else(|| {
        if args.quick {
            work.join("quick-results")
        } else {
            docs_output.clone()
        }
    });

    if !args.no_install {
        execute(
            Command::new("bash")
                .arg(root.join("scripts/bootstrap.sh"))
                .arg("bench"),
        )?;
    }
    let binaries = binaries(&args, &root)?;
    let groups = selected_groups(&args.workloads)?;
    let mut systems: Vec<SystemState> = selected_systems(&args.systems)?
        .into_iter()
        .map(|kind| SystemState {
            kind,
            skipped: system::unavailable(kind, &binaries),
        })
        .collect();
    let scale = if args.quick {
        Scale::quick()
    } else {
        Scale::full()
    };
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let inputs = Inputs {
        apache_tarball: if groups.contains(&Group::Apache) {
            apache_source::tarball(&work)
        } else {
            Err("the apache workload was not selected".into())
        },
        scale: scale.clone(),
    };
    let (ext4_size, image_size) = if args.quick {
        ("3G", "3G")
    } else {
        ("6G", "6G")
    };
    let mut environment = Environment::new(&work, binaries, ext4_size, image_size)?;
    environment
        .guest_driver_args
        .clone_from(&args.guest_driver_arg);
    let environment = environment;

    for state in &systems {
        if let Some(reason) = &state.skipped {
            eprintln!(
                "bench: ({}) {}: skipped: {reason}",
                state.kind.letter(),
                state.kind.key()
            );
        }
    }
    let mut measurements = Vec::new();
    let mut failures = Vec::new();
    let mut counters = Vec::new();
    for round in 0..rounds {
        for (group_index, group) in groups.iter().enumerate() {
            let order = rotated(&systems, round + group_index);
            for index in order {
                let kind = systems[index].kind;
                if systems[index].skipped.is_some() {
                    continue;
                }
                eprintln!(
                    "bench: round {}/{rounds}, {} on ({}) {} [{:.0} s]",
                    round + 1,
                    group.key(),
                    kind.letter(),
                    kind.key(),
                    started.elapsed().as_secs_f64()
                );
                let mut session = match Session::start(kind, &environment) {
                    Ok(session) => session,
                    Err(error) => {
                        let reason = format!("{error:#}");
                        eprintln!(
                            "bench: ({}) {}: skipped: {reason}",
                            kind.letter(),
                            kind.key()
                        );
                        systems[index].skipped = Some(reason);
                        continue;
                    }
                };
                let outcome = workload::run(*group, &mut session, &environment, &inputs);
                for (phase, text) in session.phase_counters() {
                    counters.push(json!({
                        "system": kind.key(),
                        "phase": phase,
                        "round": round + 1,
                        "stats": text,
                    }));
                }
                session.stop();
                match outcome {
                    Ok(samples) => {
                        for sample in samples {
                            eprintln!(
                                "bench:   {} = {:.3} {}",
                                sample.metric,
                                sample.value,
                                workload::metric(sample.metric).map_or("", |metric| metric.unit)
                            );
                            measurements.push(json!({
                                "system": kind.key(),
                                "metric": sample.metric,
                                "round": round + 1,
                                "value": sample.value,
                                "detail": sample.detail,
                            }));
                        }
                    }
                    Err(error) => {
                        eprintln!("bench:   {} failed: {error:#}", group.key());
                        failures.push(json!({
                            "system": kind.key(),
                            "group": group.key(),
                            "round": round + 1,
                            "error": format!("{error:#}"),
                        }));
                    }
                }
            }
        }
    }
    drop(environment);

    let command = std::iter::once("cargo xtask bench".to_owned())
        .chain(std::env::args().skip(2))
        .collect::<Vec<_>>()
        .join(" ");
    let results = json!({
        "command": command,
        "started": started_at,
        "finished": utc_now(),
        "elapsed_s": started.elapsed().as_secs_f64(),
        "quick": args.quick,
        "rounds": rounds,
        "scale": scale.to_json(),
        "note": args.note,
        "machine": machine(load_before),
        "source": source_version(&root),
        "systems": systems.iter().map(|state| json!({
            "key": state.kind.key(),
            "letter": state.kind.letter().to_string(),
            "label": state.kind.label(),
            "skipped": state.skipped,
        })).collect::<Vec<Value>>(),
        "measurements": measurements,
        "failures": failures,
        "counters": counters,
    });
    let update_docs = output == docs_output;
    report::write(
        &results,
        &output,
        update_docs.then(|| root.join("docs/benchmarks.md")),
    )?;
    eprintln!(
        "bench: done in {:.0} s; results in {}",
        started.elapsed().as_secs_f64(),
        output.display()
    );
    Ok(())
}

/// The binaries: built in release mode, or from `--bin-dir`.
fn binaries(args: &BenchArgs, root: &Path) -> anyhow::Result<Binaries> {
    let directory = match &args.bin_dir {
        Some(directory) => directory.clone(),
        None => {
            execute(cargo().current_dir(root).args([
                "build",
                "--release",
                "-p",
                "guest-driver",
                "-p",
                "storage-domain-hosted",
            ]))?;
            crate::target_dir().join("release")
        }
    };
    let binaries = Binaries {
        hosted: directory.join("storage-domain-hosted"),
        guest_driver: directory.join("guest-driver"),
    };
    for binary in [&binaries.hosted, &binaries.guest_driver] {
        if !binary.is_file() {
            bail!("{} is missing", binary.display());
        }
    }
    Ok(binaries)
}

fn selected_systems(names: &[String]) -> anyhow::Result<Vec<SystemKind>> {
    if names.is_empty() {
        return Ok(SystemKind::ALL.to_vec());
    }
    let mut kinds: Vec<SystemKind> = names
        .iter()
        .map(|name| SystemKind::parse(name).with_context(|| format!("no system called {name:?}")))
        .collect::<anyhow::Result<_>>()?;
    // Ratios are to (a): it always runs.
    if !kinds.contains(&SystemKind::Local) {
        kinds.insert(0, SystemKind::Local);
    }
    Ok(kinds)
}

fn selected_groups(names: &[String]) -> anyhow::Result<Vec<Group>> {
    if names.is_empty() {
        return Ok(Group::ALL.to_vec());
    }
    names
        .iter()
        .map(|name| {
            Group::ALL
                .into_iter()
                .find(|group| group.key() == name)
                .with_context(|| format!("no workload group called {name:?}"))
        })
        .collect()
}

/// Indices of `systems`, starting at `offset` and wrapping around.
fn rotated(systems: &[SystemState], offset: usize) -> Vec<usize> {
    let count = systems.len();
    (0..count).map(|index| (index + offset) % count).collect()
}

/// The time now, as ISO 8601 UTC.
fn utc_now() -> String {
    command_output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The machine: CPU, cores, memory, kernel, load before and after.
fn machine(load_before: String) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, name)| name.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| (kib / 1048576.0 * 10.0).round() / 10.0);
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|cores| cores.get()).ok(),
        "memory_gib": memory_gib,
        "kernel": command_output(Command::new("uname").arg("-r")),
        "load_before": load_before,
        "load_after": load_average(),
    })
}

/// The commit measured, `+dirty` when the tree has changes.
fn source_version(root: &Path) -> String {
    let commit = command_output(Command::new("git").arg("-C").arg(root).args([
        "rev-parse",
        "--short",
        "HEAD",
    ]));
    let dirty = !command_output(Command::new("git").arg("-C").arg(root).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .is_empty();
    if dirty {
        format!("{commit}+dirty")
    } else {
        commit
    }
}

fn command_output(command: &mut Command) -> String {
    command
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}
