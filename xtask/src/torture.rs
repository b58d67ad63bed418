//! `cargo xtask torture`: the kill campaign. Clients of three kinds write
//! at once to a hosted server (guest-driver over hosted VRPC, guest-driver
//! over TCP, the independent `nfs3_client` crate); the server is SIGKILLed
//! at seeded random moments and started again on the same image. After
//! each kill: fsck of the image while the server is down, then, once it is
//! back, every acknowledged durable write and name checked byte for byte
//! against the clients' ledgers, and nothing that no client wrote.

use crate::hosted::{self, GuestMount, MountTransport, Server};
use crate::workload::check::check_tree;
use crate::workload::client::{Client, Settings};
use crate::workload::mount_client::MountFiles;
use crate::workload::nfs_client::{read_tree, NfsFiles};
use crate::workload::{ClientLedger, Control, Measurements, Mix, NameDurability, Random};
use anyhow::{bail, Context};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Arguments of `cargo xtask torture`.
#[derive(Debug, clap::Args)]
pub struct TortureArgs {
    /// How many times the server is SIGKILLed and restarted.
    #[arg(long, default_value_t = 5)]
    pub kills: u32,
    /// Seed of the clients' operations and of the kill moments.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds of workload in all (the clients are paused while the server
    /// is checked); the kills fall at random moments in it [default: 2
    /// per kill].
    #[arg(long)]
    pub duration: Option<f64>,
}

/// A scratch directory removed when dropped (after the mounts in it are
/// gone: drop it last).
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new directory under the system's temporary directory.
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn new(prefix: &str) -> anyhow::Result<Scratch> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One client thread and its ledger.
pub struct Running {
    /// What the client did.
    pub ledger: Arc<Mutex<ClientLedger>>,
    /// The thread; it returns the client's figures.
    pub thread: thread::JoinHandle<Measurements>,
}

/// Starts a client on `mount` (or the NFS client when `None`).
///
/// # Errors
/// When the NFS client cannot mount.
pub fn start_client(
    number: u32,
    mount: Option<(&GuestMount, Option<&Path>)>,
    server: &Server,
    settings: Settings,
    control: &Arc<Control>,
) -> anyhow::Result<Running> {
    let control = Arc::clone(control);
    let (label, names) = match mount {
        Some((mount, _)) => match mount.transport {
            MountTransport::Vrpc => (
                format!("client {number} (VRPC mount {})", mount.path.display()),
                NameDurability::OnDirectorySync,
            ),
            MountTransport::Tcp => (
                format!("client {number} (TCP mount {})", mount.path.display()),
                NameDurability::OnReply,
            ),
        },
        None => (
            format!("client {number} (NFS client)"),
            NameDurability::OnReply,
        ),
    };
    let ledger = Arc::new(Mutex::new(ClientLedger::new(number, label, names)));
    let thread = match mount {
        Some((mount, peer)) => {
            let files = MountFiles::new(
                mount.path.clone(),
                mount.transport,
                peer.map(Path::to_path_buf),
            );
            let client = Client::new(files, Arc::clone(&ledger), settings, peer.is_some());
            thread::spawn(move || client.run(&control))
        }
        None => {
            let files = NfsFiles::new(&server.address, settings.seed)?;
            let client = Client::new(files, Arc::clone(&ledger), settings, false);
            thread::spawn(move || client.run(&control))
        }
    };
    Ok(Running { ledger, thread })
}

/// Stops the clients and joins them, returning their figures together.
pub fn stop_clients(control: &Control, clients: Vec<Running>) -> Measurements {
    control.stop();
    let mut total = Measurements::default();
    for client in clients {
        match client.thread.join() {
            Ok(measurements) => total.merge(measurements),
            Err(_) => total.unexpected.push("a client thread panicked".into()),
        }
    }
    total
}

/// Runs the campaign.
///
/// # Errors
/// When anything was lost, an image was not clean, a client met an
/// unexpected error, or the harness failed.
pub fn run(args: TortureArgs) -> anyhow::Result<()> {
    if let Some(reason) = hosted::mount_skip_reason() {
        eprintln!("torture: skipped: {reason}");
        return Ok(());
    }
    let binaries = hosted::build_binaries()?;
    let started = Instant::now();
    let scratch = Scratch::new("xtask-torture")?;
    let mut server = Server::start(&binaries, &scratch.0, "256M")?;
    let mounts = [
        GuestMount::start(
            &binaries,
            &server,
            MountTransport::Vrpc,
            &scratch.0.join("vrpc-a"),
        )?,
        GuestMount::start(
            &binaries,
            &server,
            MountTransport::Vrpc,
            &scratch.0.join("vrpc-b"),
        )?,
        GuestMount::start(
            &binaries,
            &server,
            MountTransport::Tcp,
            &scratch.0.join("tcp"),
        )?,
    ];
    let outcome = campaign(&args, &binaries, &mut server, &mounts);
    let mut mounts = mounts;
    for mount in &mut mounts {
        if let Err(error) = mount.stop() {
            eprintln!("torture: {error:#}");
        }
    }
    drop(mounts);
    let mut summary = outcome?;
    for violation in &summary.measurements.violations {
        eprintln!("torture: LOST (seen by a client's read): {violation}");
    }
    summary.lost += summary.measurements.violations.len();
    server.stop()?;
    let final_fsck = server.fsck()?;
    eprintln!(
        "torture: {} s wall, {} operations ({} failed with EIO while the server was down), \
         seed {}",
        started.elapsed().as_secs(),
        summary.measurements.operations,
        summary.measurements.io_failures,
        args.seed
    );
    eprint!("{}", summary.measurements.percentile_report());
    println!(
        "{} kills, {} clean, {} lost",
        args.kills, summary.clean, summary.lost
    );
    if let Err(report) = final_fsck {
        bail!("fsck after the final clean stop:\n{report}");
    }
    if summary.lost > 0 || summary.clean < args.kills || !summary.measurements.unexpected.is_empty()
    {
        for problem in &summary.measurements.unexpected {
            eprintln!("torture: unexpected: {problem}");
        }
        bail!(
            "{} violations, {} unclean images, {} unexpected client errors (seed {})",
            summary.lost,
            args.kills - summary.clean,
            summary.measurements.unexpected.len(),
            args.seed
        );
    }
    Ok(())
}

struct Summary {
    clean: u32,
    lost: usize,
    measurements: Measurements,
}

fn campaign(
    args: &TortureArgs,
    _binaries: &Path,
    server: &mut Server,
    mounts: &[GuestMount],
) -> anyhow::Result<Summary> {
    let mut random = Random::new(args.seed);
    let control = Arc::new(Control::default());
    let mix = Mix::default();
    let mut setup = NfsFiles::new(&server.address, args.seed)?;
    let mut clients = Vec::new();
    let layout: [Option<&GuestMount>; 4] =
        [Some(&mounts[0]), Some(&mounts[1]), Some(&mounts[2]), None];
    for (number, mount) in layout.iter().enumerate() {
        let number = number as u32;
        setup.make_directory(number)?;
        let settings = Settings {
            seed: args.seed.wrapping_mul(1000).wrapping_add(u64::from(number)),
            mix,
            exact: false,
        };
        clients.push(start_client(
            number,
            mount.map(|mount| (mount, None)),
            server,
            settings,
            &control,
        )?);
    }
    let result = kill_loop(args, &mut random, server, &control, &clients);
    let measurements = stop_clients(&control, clients);
    let (clean, lost) = result?;
    Ok(Summary {
        clean,
        lost,
        measurements,
    })
}

fn kill_loop(
    args: &TortureArgs,
    random: &mut Random,
    server: &mut Server,
    control: &Control,
    clients: &[Running],
) -> anyhow::Result<(u32, usize)> {
    let duration = args.duration.unwrap_or(2.0 * f64::from(args.kills.max(1)));
    let mean_ms = (duration * 1000.0 / f64::from(args.kills + 1)) as u64;
    let mut reported = BTreeSet::new();
    let mut hidden = BTreeSet::new();
    let mut clean = 0;
    for kill in 1..=args.kills {
        let gap = random.range(mean_ms / 4, mean_ms * 7 / 4 + 1);
        thread::sleep(Duration::from_millis(gap));
        server.kill()?;
        let killed = Instant::now();
        control
            .pause(clients.len(), Duration::from_secs(60))
            .context("pausing the clients after the kill")?;
        let paused = killed.elapsed();
        for client in clients {
            client.ledger.lock().expect("ledger").server_restarted();
        }
        let fsck = server.fsck()?;
        let checked = killed.elapsed();
        server.restart()?;
        let restarted = killed.elapsed();
        let tree = read_tree(&server.address).context("reading the tree after the restart")?;
        eprintln!(
            "torture: kill {kill}: clients paused after {} ms, fsck done after {} ms, server \
             back after {} ms, tree read after {} ms",
            paused.as_millis(),
            checked.as_millis(),
            restarted.as_millis(),
            killed.elapsed().as_millis()
        );
        let ledgers: Vec<_> = clients
            .iter()
            .map(|client| client.ledger.lock().expect("ledger"))
            .collect();
        let views: Vec<&ClientLedger> = ledgers.iter().map(|ledger| &**ledger).collect();
        let report = check_tree(&views, &tree);
        drop(ledgers);
        let violations = report.violations;
        hidden.extend(report.hidden_leftovers);
        let files: usize = tree.values().map(|entries| entries.len()).sum();
        let new: Vec<String> = violations
            .into_iter()
            .filter(|violation| reported.insert(violation.clone()))
            .collect();
        match &fsck {
            Ok(()) => clean += 1,
            Err(report) => eprintln!("torture: kill {kill}: fsck NOT clean:\n{report}"),
        }
        eprintln!(
            "torture: kill {kill} after {gap} ms: fsck {}, {files} files checked, {} new violations",
            if fsck.is_ok() { "clean" } else { "FAILED" },
            new.len()
        );
        for violation in &new {
            eprintln!("torture: LOST: {violation}");
        }
        control.resume();
    }
    let gap = random.range(mean_ms / 4, mean_ms * 7 / 4 + 1);
    thread::sleep(Duration::from_millis(gap));
    // A last check with the server up and the clients paused.
    control.pause(clients.len(), Duration::from_secs(60))?;
    let tree = read_tree(&server.address)?;
    let ledgers: Vec<_> = clients
        .iter()
        .map(|client| client.ledger.lock().expect("ledger"))
        .collect();
    let views: Vec<&ClientLedger> = ledgers.iter().map(|ledger| &**ledger).collect();
    let report = check_tree(&views, &tree);
    let records = views.iter().flat_map(|ledger| ledger.files.values());
    let (mut durable_writes, mut durable_names) = (0, 0);
    for record in records {
        durable_writes += record.writes.iter().filter(|write| write.durable).count();
        durable_names += usize::from(record.create_durable) + usize::from(record.remove_durable);
    }
    eprintln!(
        "torture: acknowledged as durable during the run (each checked at every later kill \
         while its file lived): {durable_writes} writes, {durable_names} creations and removals"
    );
    for violation in report.violations {
        if reported.insert(violation.clone()) {
            eprintln!("torture: LOST (final check): {violation}");
        }
    }
    hidden.extend(report.hidden_leftovers);
    if !hidden.is_empty() {
        eprintln!(
            "torture: {} hidden names of files unlinked while open were left by kills: {}",
            hidden.len(),
            hidden.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok((clean, reported.len()))
}
