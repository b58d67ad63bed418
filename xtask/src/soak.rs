//! `cargo xtask soak`: many guests for a long time. One hosted server,
//! several guest-driver mounts over hosted VRPC and over TCP, each with a
//! client running the mixed workload; no restarts, so every operation
//! must succeed and every read must return exactly what was written.
//! Each client also checks that another mount sees its files as its own
//! mount does (size and mtime, then the bytes) within
//! [`VISIBILITY_LIMIT`](crate::workload::mount_client::VISIBILITY_LIMIT).
//! Reported: operations and latency percentiles per kind, the server's
//! RSS at start, after the warm-up and at the end (the run fails if it
//! grew by more than `--rss-growth-mib` after the warm-up), and, once the
//! mounts are unmounted, the whole tree compared with the ledgers, then
//! fsck.

use crate::hosted::{self, GuestMount, MountTransport, Server};
use crate::torture::{start_client, stop_clients, Running, Scratch};
use crate::workload::client::{expected_content, Settings};
use crate::workload::nfs_client::{read_tree, NfsFiles};
use crate::workload::{ClientLedger, Control, Measurements, Mix};
use anyhow::bail;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Arguments of `cargo xtask soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// guest-driver mounts over hosted VRPC.
    #[arg(long, default_value_t = 8)]
    pub mounts: u32,
    /// guest-driver mounts over TCP.
    #[arg(long, default_value_t = 2)]
    pub tcp_clients: u32,
    /// How long the clients run: seconds, or with a unit (`90s`, `10m`).
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Seed of the clients' operations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Largest growth of the server's RSS allowed after the warm-up (the
    /// first quarter of the run, at most 2 minutes), in MiB.
    #[arg(long, default_value_t = 64)]
    pub rss_growth_mib: u64,
}

/// A client's ledger, shared with its thread.
type SharedLedger = Arc<Mutex<ClientLedger>>;

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number of seconds or e.g. 90s, 10m"))?;
    match unit {
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3600)),
        _ => Err(format!("`{text}`: the unit must be s, m or h")),
    }
}

/// Runs the soak.
///
/// # Errors
/// When a client met an error, a read or the final tree differed from what
/// was written, the RSS grew past the bound, or fsck failed.
pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    if let Some(reason) = hosted::mount_skip_reason() {
        eprintln!("soak: skipped: {reason}");
        return Ok(());
    }
    if args.mounts + args.tcp_clients < 2 {
        bail!("the soak needs at least two mounts (each checks what another sees)");
    }
    let binaries = hosted::build_binaries()?;
    let scratch = Scratch::new("xtask-soak")?;
    let mut server = Server::start(&binaries, &scratch.0, "1G")?;
    let rss_start = server.rss_kib()?;
    let mut mounts = Vec::new();
    for index in 0..args.mounts + args.tcp_clients {
        let (transport, name) = if index < args.mounts {
            (MountTransport::Vrpc, format!("vrpc-{index}"))
        } else {
            (MountTransport::Tcp, format!("tcp-{}", index - args.mounts))
        };
        mounts.push(GuestMount::start(
            &binaries,
            &server,
            transport,
            &scratch.0.join(name),
        )?);
    }
    let outcome = soak(&args, &server, &mounts, rss_start);
    for mount in &mut mounts {
        if let Err(error) = mount.stop() {
            eprintln!("soak: {error:#}");
        }
    }
    drop(mounts);
    let (mut problems, ledgers) = outcome?;
    // After the unmounts: every release (and the removal of a hidden name
    // it may owe) is done.
    problems.extend(check_final_tree(&server.address, &ledgers)?);
    server.stop()?;
    if let Err(text) = server.fsck()? {
        bail!("fsck after the soak:\n{text}");
    }
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("soak: {problem}");
        }
        bail!("{} problems", problems.len());
    }
    eprintln!("soak: fsck clean, no errors");
    Ok(())
}

fn soak(
    args: &SoakArgs,
    server: &Server,
    mounts: &[GuestMount],
    rss_start: u64,
) -> anyhow::Result<(Vec<String>, Vec<SharedLedger>)> {
    let control = Arc::new(Control::default());
    let mut setup = NfsFiles::new(&server.address, args.seed)?;
    let mut clients: Vec<Running> = Vec::new();
    let started = Instant::now();
    for (index, mount) in mounts.iter().enumerate() {
        let number = index as u32;
        setup.make_directory(number)?;
        let peer = &mounts[(index + 1) % mounts.len()];
        let settings = Settings {
            seed: args.seed.wrapping_mul(1000).wrapping_add(u64::from(number)),
            mix: Mix::default(),
            exact: true,
        };
        clients.push(start_client(
            number,
            Some((mount, Some(peer.path.as_path()))),
            server,
            settings,
            &control,
        )?);
    }
    let warm_up = (args.duration / 4).min(Duration::from_secs(120));
    let mut rss_warm = None;
    let mut rss_peak = rss_start;
    while started.elapsed() < args.duration {
        thread::sleep(Duration::from_secs(1).min(args.duration));
        let rss = server.rss_kib()?;
        rss_peak = rss_peak.max(rss);
        if rss_warm.is_none() && started.elapsed() >= warm_up {
            rss_warm = Some(rss);
        }
    }
    let rss_end = server.rss_kib()?;
    let ledgers: Vec<_> = clients
        .iter()
        .map(|client| Arc::clone(&client.ledger))
        .collect();
    let measurements = stop_clients(&control, clients);
    let rss_warm = rss_warm.unwrap_or(rss_end);
    let mut problems = measurements.unexpected.clone();
    problems.extend(measurements.violations.iter().cloned());
    report(
        args,
        &measurements,
        started.elapsed(),
        rss_start,
        rss_warm,
        rss_end,
        rss_peak,
    );
    let growth = rss_end.saturating_sub(rss_warm);
    if growth > args.rss_growth_mib * 1024 {
        problems.push(format!(
            "the server's RSS grew by {} MiB after the warm-up (bound {} MiB)",
            growth / 1024,
            args.rss_growth_mib
        ));
    }
    Ok((problems, ledgers))
}

/// Every file each client kept is on the server with exactly the bytes
/// written; every file it removed is gone; nothing else is there.
fn check_final_tree(address: &str, ledgers: &[SharedLedger]) -> anyhow::Result<Vec<String>> {
    let tree = read_tree(address)?;
    let mut problems = Vec::new();
    let mut expected_directories = 0;
    for ledger in ledgers {
        let ledger = ledger.lock().expect("ledger");
        let directory = format!("c{}", ledger.client);
        expected_directories += 1;
        let Some(entries) = tree.get(&directory) else {
            problems.push(format!("{}: /{directory} is missing", ledger.label));
            continue;
        };
        let mut kept = 0;
        for (file, record) in &ledger.files {
            let name = format!("f{file}");
            match (record.remove_attempted, entries.get(&name)) {
                (true, None) => {}
                (true, Some(_)) => problems.push(format!(
                    "{}: {} was removed but is still there",
                    ledger.label,
                    record.key.path()
                )),
                (false, None) => problems.push(format!(
                    "{}: {} is missing",
                    ledger.label,
                    record.key.path()
                )),
                (false, Some(bytes)) => {
                    kept += 1;
                    if *bytes != expected_content(record) {
                        problems.push(format!(
                            "{}: {} does not hold what was written",
                            ledger.label,
                            record.key.path()
                        ));
                    }
                }
            }
        }
        if entries.len() != kept {
            let unknown: Vec<&str> = entries
                .keys()
                .filter(|name| {
                    !name
                        .strip_prefix('f')
                        .and_then(|number| number.parse::<u32>().ok())
                        .is_some_and(|file| ledger.files.contains_key(&file))
                })
                .map(String::as_str)
                .collect();
            problems.push(format!(
                "{}: /{directory} holds {} entries, {kept} expected; nobody made {}",
                ledger.label,
                entries.len(),
                unknown.join(", ")
            ));
        }
    }
    if tree.len() != expected_directories {
        problems.push(format!(
            "the root holds {} entries, {expected_directories} expected",
            tree.len()
        ));
    }
    Ok(problems)
}

fn report(
    args: &SoakArgs,
    measurements: &Measurements,
    elapsed: Duration,
    rss_start: u64,
    rss_warm: u64,
    rss_end: u64,
    rss_peak: u64,
) {
    eprintln!(
        "soak: {} VRPC mounts + {} TCP mounts for {} s: {} operations, seed {}",
        args.mounts,
        args.tcp_clients,
        elapsed.as_secs(),
        measurements.operations,
        args.seed
    );
    eprint!("{}", measurements.percentile_report());
    eprintln!(
        "soak: server RSS {:.1} MiB at start, {:.1} MiB after the warm-up, {:.1} MiB at the end \
         (peak {:.1} MiB; bound: warm-up + {} MiB)",
        rss_start as f64 / 1024.0,
        rss_warm as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        args.rss_growth_mib
    );
}
