//! The workloads: what is measured, at which scale, and how.
//!
//! Workloads come in groups that share one session (and its data): the
//! Apache build and a cold walk of the tree it leaves; the stat storm,
//! cold then warm; postmark; and the large file, written, read back and
//! then read at random. Setting up (creating the files a stat storm
//! stats) is never timed; "cold" means [`Session::make_cold`]: every
//! process of the system restarted and the kernel's caches dropped.

use super::cleanup;
use super::system::{Environment, Session};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Whether a smaller or a larger value is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Times.
    Lower,
    /// Rates.
    Higher,
}

/// One measured quantity.
#[derive(Debug)]
pub struct Metric {
    /// Key in JSON.
    pub key: &'static str,
    /// Row label.
    pub label: &'static str,
    /// Unit of the value.
    pub unit: &'static str,
    /// Direction.
    pub better: Better,
}

/// Every metric, in the order the doc shows them.
pub const METRICS: &[Metric] = &[
    Metric {
        key: "apache-build",
        label: "Apache build (extract, configure, make -j2)",
        unit: "s",
        better: Better::Lower,
    },
    Metric {
        key: "tree-walk",
        label: "tree walk, cold (find | xargs stat)",
        unit: "s",
        better: Better::Lower,
    },
    Metric {
        key: "stat-cold",
        label: "stat storm, cold",
        unit: "stat/s",
        better: Better::Higher,
    },
    Metric {
        key: "stat-warm",
        label: "stat storm, warm",
        unit: "stat/s",
        better: Better::Higher,
    },
    Metric {
        key: "postmark",
        label: "postmark small-file transactions",
        unit: "s",
        better: Better::Lower,
    },
    Metric {
        key: "seq-write",
        label: "sequential write (durable)",
        unit: "MB/s",
        better: Better::Higher,
    },
    Metric {
        key: "seq-read",
        label: "sequential read, cold",
        unit: "MB/s",
        better: Better::Higher,
    },
    Metric {
        key: "rand-read",
        label: "4 KiB random read, QD1 (fio)",
        unit: "IOPS",
        better: Better::Higher,
    },
    Metric {
        key: "mixed-alone",
        label: "4 readers, p99 read latency (fio)",
        unit: "us",
        better: Better::Lower,
    },
    Metric {
        key: "mixed-writer",
        label: "4 readers + an fsyncing writer, p99 read latency",
        unit: "us",
        better: Better::Lower,
    },
];

/// The metric named `key`.
pub fn metric(key: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|metric| metric.key == key)
}

/// Workloads that share a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// The Apache build, then a cold walk of its tree.
    Apache,
    /// Stat storm, cold and warm.
    Stat,
    /// postmark.
    Postmark,
    /// Sequential write and read, then random reads, of one large file.
    LargeFile,
    /// Four readers of separate files, without and then with a writer
    /// that fsyncs every write.
    Mixed,
}

impl Group {
    /// Every group, in run order.
    pub const ALL: [Group; 5] = [
        Group::Apache,
        Group::Stat,
        Group::Postmark,
        Group::LargeFile,
        Group::Mixed,
    ];

    /// Key for `--workloads` and logs.
    pub fn key(self) -> &'static str {
        match self {
            Group::Apache => "apache",
            Group::Stat => "stat",
            Group::Postmark => "postmark",
            Group::LargeFile => "large-file",
            Group::Mixed => "mixed",
        }
    }
}

/// How big the workloads are.
#[derive(Debug, Clone)]
pub struct Scale {
    /// Run `make -j2` after configure (the full build of the configured
    /// module set); without it the Apache workload ends after configure.
    pub apache_make: bool,
    /// Files in the stat storm.
    pub stat_files: usize,
    /// Warm passes over the stat storm's files.
    pub stat_warm_passes: usize,
    /// postmark: initial files.
    pub postmark_files: usize,
    /// postmark: transactions.
    pub postmark_transactions: usize,
    /// Size of the large file.
    pub large_file_bytes: u64,
    /// Seconds fio reads at random, at most (it stops earlier after
    /// reading a quarter of the file's blocks, each once).
    pub fio_seconds: u64,
    /// Size of each of the mixed workload's four files.
    pub mixed_file_bytes: u64,
    /// Seconds each half of the mixed workload runs, at most.
    pub mixed_seconds: u64,
}

impl Scale {
    /// The full bench (about 30 minutes on 2 cores).
    pub fn full() -> Scale {
        Scale {
            apache_make: true,
            stat_files: 10_000,
            stat_warm_passes: 3,
            postmark_files: 500,
            postmark_transactions: 2_000,
            large_file_bytes: 1 << 30,
            fio_seconds: 8,
            mixed_file_bytes: 64 << 20,
            mixed_seconds: 6,
        }
    }

    /// `--quick` (under 5 minutes).
    pub fn quick() -> Scale {
        Scale {
            apache_make: false,
            stat_files: 2_000,
            stat_warm_passes: 3,
            postmark_files: 200,
            postmark_transactions: 500,
            large_file_bytes: 128 << 20,
            fio_seconds: 3,
            mixed_file_bytes: 16 << 20,
            mixed_seconds: 2,
        }
    }

    /// The scale as JSON, for the results file.
    pub fn to_json(&self) -> Value {
        json!({
            "apache": if self.apache_make {
                "extract + configure --enable-mods-shared=few + make -j2"
            } else {
                "extract + configure --enable-mods-shared=few (no make)"
            },
            "stat_files": self.stat_files,
            "stat_warm_passes": self.stat_warm_passes,
            "postmark_files": self.postmark_files,
            "postmark_transactions": self.postmark_transactions,
            "large_file_bytes": self.large_file_bytes,
            "fio_seconds": self.fio_seconds,
            "mixed_file_bytes": self.mixed_file_bytes,
            "mixed_seconds": self.mixed_seconds,
        })
    }
}

/// One measured value.
#[derive(Debug)]
pub struct Sample {
    /// [`Metric::key`].
    pub metric: &'static str,
    /// In the metric's unit.
    pub value: f64,
    /// Phases, counts, the tool's own report.
    pub detail: Value,
}

/// Inputs the workloads need from outside.
#[derive(Debug)]
pub struct Inputs {
    /// The Apache source tarball, or why it is missing.
    pub apache_tarball: Result<PathBuf, String>,
    /// The scale.
    pub scale: Scale,
}

/// Run `group` on `session`.
///
/// # Errors
/// When a step fails; the samples measured before it are lost with it.
pub fn run(
    group: Group,
    session: &mut Session<'_>,
    environment: &Environment,
    inputs: &Inputs,
) -> anyhow::Result<Vec<Sample>> {
    match group {
        Group::Apache => apache(session, environment, inputs),
        Group::Stat => stat_storm(session, &inputs.scale),
        Group::Postmark => postmark(session, environment, &inputs.scale),
        Group::LargeFile => large_file(session, &inputs.scale),
        Group::Mixed => mixed(session, &inputs.scale),
    }
}

fn apache(
    session: &mut Session<'_>,
    environment: &Environment,
    inputs: &Inputs,
) -> anyhow::Result<Vec<Sample>> {
    let tarball = match &inputs.apache_tarball {
        Ok(tarball) => tarball,
        Err(reason) => bail!("no Apache source: {reason}"),
    };
    let dir = session.dir().to_owned();
    let log = environment.log_path(&format!("{}-apache", session.kind().key()));
    let started = Instant::now();
    logged(
        Command::new("tar")
            .arg("xzf")
            .arg(tarball)
            .current_dir(&dir),
        &log,
    )?;
    let extracted = started.elapsed().as_secs_f64();
    let source = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("httpd-"))
        })
        .context("the tarball holds no httpd-* directory")?;
    logged(
        Command::new("./configure")
            .arg("--enable-mods-shared=few")
            .current_dir(&source),
        &log,
    )?;
    let configured = started.elapsed().as_secs_f64();
    if inputs.scale.apache_make {
        logged(Command::new("make").arg("-j2").current_dir(&source), &log)?;
    }
    let total = started.elapsed().as_secs_f64();
    let build = Sample {
        metric: "apache-build",
        value: total,
        detail: json!({
            "extract_s": extracted,
            "configure_s": configured - extracted,
            "make_s": inputs.scale.apache_make.then_some(total - configured),
        }),
    };

    session.make_cold("apache-build")?;
    let started = Instant::now();
    let output = cleanup::run_workload(
        "find | xargs stat",
        Command::new("sh")
            .args(["-c", "find . -print0 | xargs -0 stat --format=%i | wc -l"])
            .current_dir(session.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )?;
    let walked = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!("find | xargs stat failed ({})", output.status);
    }
    let entries: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    session.end_phase("tree-walk");
    Ok(vec![
        build,
        Sample {
            metric: "tree-walk",
            value: walked,
            detail: json!({ "entries": entries }),
        },
    ])
}

/// The stat storm's files: `count` empty files, 100 per directory.
fn storm_paths(root: &Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|index| {
            root.join(format!("d{:03}", index / 100))
                .join(format!("f{:05}", index))
        })
        .collect()
}

fn stat_storm(session: &mut Session<'_>, scale: &Scale) -> anyhow::Result<Vec<Sample>> {
    let root = session.dir().join("storm");
    let paths = storm_paths(&root, scale.stat_files);
    // Setup is not timed: create in parallel so that servers that commit
    // each creation share commits and setup stays short.
    let directories: Vec<PathBuf> = paths
        .chunks(100)
        .filter_map(|chunk| chunk.first()?.parent().map(Path::to_owned))
        .collect();
    for directory in &directories {
        std::fs::create_dir_all(directory)?;
    }
    let creators = 4;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..creators)
            .map(|worker| {
                let paths = &paths;
                scope.spawn(move || -> anyhow::Result<()> {
                    for path in paths.iter().skip(worker).step_by(creators) {
                        File::create(path)
                            .with_context(|| format!("creating {}", path.display()))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a creating thread panicked"))??;
        }
        Ok(())
    })?;
    session.make_cold("stat-setup")?;
    let stat_all = |paths: &[PathBuf]| -> anyhow::Result<f64> {
        let started = Instant::now();
        for path in paths {
            std::fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
        }
        Ok(started.elapsed().as_secs_f64())
    };
    let cold = stat_all(&paths)?;
    let mut warm = 0.0;
    for _ in 0..scale.stat_warm_passes {
        warm += stat_all(&paths)?;
    }
    session.end_phase("stat-cold-and-warm");
    let count = paths.len() as f64;
    let passes = scale.stat_warm_passes as f64;
    Ok(vec![
        Sample {
            metric: "stat-cold",
            value: count / cold,
            detail: json!({ "files": paths.len(), "seconds": cold }),
        },
        Sample {
            metric: "stat-warm",
            value: count * passes / warm,
            detail: json!({ "files": paths.len(), "passes": scale.stat_warm_passes, "seconds": warm }),
        },
    ])
}

fn postmark(
    session: &mut Session<'_>,
    environment: &Environment,
    scale: &Scale,
) -> anyhow::Result<Vec<Sample>> {
    let location = session.dir().join("postmark");
    std::fs::create_dir_all(&location)?;
    let config = environment.work.join("postmark.cfg");
    std::fs::write(
        &config,
        format!(
            "set location {}\nset number {}\nset transactions {}\nset size 500 10000\n\
             set subdirectories 10\nset seed 42\nset read 4096\nset write 4096\n\
             set buffering false\nrun\nquit\n",
            location.display(),
            scale.postmark_files,
            scale.postmark_transactions
        ),
    )?;
    let started = Instant::now();
    let output = cleanup::run_workload(
        "postmark",
        Command::new("postmark")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    session.end_phase("postmark");
    if !output.status.success() {
        bail!(
            "postmark failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let report: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("pm>"))
        .map(str::to_owned)
        .collect();
    Ok(vec![Sample {
        metric: "postmark",
        value: seconds,
        detail: json!({
            "files": scale.postmark_files,
            "transactions": scale.postmark_transactions,
            "report": report,
        }),
    }])
}

fn large_file(session: &mut Session<'_>, scale: &Scale) -> anyhow::Result<Vec<Sample>> {
    const CHUNK: usize = 1 << 20;
    let path = session.dir().join("large.dat");
    let chunks = scale.large_file_bytes.div_ceil(CHUNK as u64);
    let bytes = chunks * CHUNK as u64;
    let megabytes = bytes as f64 / 1e6;
    let pattern: Vec<u8> = (0..CHUNK).map(|index| (index * 7 + 13) as u8).collect();

    let gibibytes = bytes as f64 / f64::from(1u32 << 30);
    let cpu_before = session.cpu_seconds();
    let started = Instant::now();
    let mut file = File::create(&path)?;
    for _ in 0..chunks {
        file.write_all(&pattern)?;
    }
    file.sync_all()?;
    drop(file);
    let write = started.elapsed().as_secs_f64();
    let write_cpu = (session.cpu_seconds() - cpu_before) / gibibytes;

    session.make_cold("seq-write")?;
    let cpu_before = session.cpu_seconds();
    let started = Instant::now();
    let mut file = File::open(&path)?;
    let mut buffer = vec![0; CHUNK];
    let mut read_bytes = 0u64;
    loop {
        let count = file.read(&mut buffer)?;
        if count == 0 {
            break;
        }
        read_bytes += count as u64;
    }
    drop(file);
    let read = started.elapsed().as_secs_f64();
    let read_cpu = (session.cpu_seconds() - cpu_before) / gibibytes;
    if read_bytes != bytes {
        bail!("read {read_bytes} bytes back of {bytes}");
    }

    session.make_cold("seq-read")?;
    let mut fio = Command::new("fio");
    fio.args([
        "--name=randread",
        "--rw=randread",
        "--bs=4k",
        "--iodepth=1",
        "--ioengine=psync",
        "--invalidate=1",
        "--randrepeat=1",
        "--output-format=json",
    ])
    .arg(format!("--filename={}", path.display()))
    .arg(format!("--size={bytes}"))
    // Every read a block not read before (fio's random map), a quarter of
    // the file at most: each read misses the page cache. The time limit
    // ends it first on slow systems.
    .arg(format!("--io_size={}", bytes / 4))
    .arg(format!("--runtime={}", scale.fio_seconds))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let output = cleanup::run_workload("fio", &mut fio)?;
    if !output.status.success() {
        bail!(
            "fio failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    session.end_phase("rand-read");
    let text = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(text.get(text.find('{').unwrap_or(0)..).unwrap_or(""))
        .context("fio's JSON report")?;
    let job = &report["jobs"][0]["read"];
    let iops = job["iops"].as_f64().context("fio reported no read IOPS")?;
    let mean_latency_us = job["clat_ns"]["mean"].as_f64().map(|ns| ns / 1e3);
    Ok(vec![
        Sample {
            metric: "seq-write",
            value: megabytes / write,
            detail: json!({
                "bytes": bytes,
                "seconds": write,
                "system_cpu_s_per_gib": write_cpu,
            }),
        },
        Sample {
            metric: "seq-read",
            value: megabytes / read,
            detail: json!({
                "bytes": bytes,
                "seconds": read,
                "system_cpu_s_per_gib": read_cpu,
            }),
        },
        Sample {
            metric: "rand-read",
            value: iops,
            detail: json!({
                "reads": job["total_ios"].as_u64(),
                "runtime_ms": job["runtime"].as_u64(),
                "mean_latency_us": mean_latency_us,
                "file_bytes": bytes,
            }),
        },
    ])
}

/// Four readers of separate files at random (4 KiB, QD1, each block once,
/// so every read misses the page cache), for at most the scale's seconds:
/// alone, then beside a writer of a fifth file that fsyncs every 4 KiB
/// write. The readers' p50 and p99 completion latencies of both halves.
fn mixed(session: &mut Session<'_>, scale: &Scale) -> anyhow::Result<Vec<Sample>> {
    const READERS: usize = 4;
    const CHUNK: usize = 1 << 20;
    let dir = session.dir().to_owned();
    let pattern: Vec<u8> = (0..CHUNK).map(|index| (index * 11 + 3) as u8).collect();
    for reader in 0..READERS {
        let mut file = File::create(dir.join(format!("reader{reader}.dat")))?;
        for _ in 0..scale.mixed_file_bytes.div_ceil(CHUNK as u64) {
            file.write_all(&pattern)?;
        }
        file.sync_all()?;
    }
    let halves = [("mixed-alone", false), ("mixed-writer", true)];
    let mut samples = Vec::new();
    for (metric, writer) in halves {
        session.make_cold(if writer { "mixed-alone" } else { "mixed-setup" })?;
        let mut fio = Command::new("fio");
        fio.args([
            "--output-format=json",
            "--ioengine=psync",
            "--iodepth=1",
            "--bs=4k",
            "--randrepeat=1",
        ]);
        for reader in 0..READERS {
            fio.arg(format!("--name=reader{reader}"))
                .arg(format!(
                    "--filename={}",
                    dir.join(format!("reader{reader}.dat")).display()
                ))
                .args(["--rw=randread", "--invalidate=1"])
                .arg(format!("--size={}", scale.mixed_file_bytes))
                .arg(format!("--io_size={}", scale.mixed_file_bytes / 4))
                .arg(format!("--runtime={}", scale.mixed_seconds));
        }
        if writer {
            fio.arg("--name=writer")
                .arg(format!("--filename={}", dir.join("writer.dat").display()))
                .args(["--rw=write", "--fsync=1", "--time_based"])
                .arg(format!("--size={}", 16 << 20))
                .arg(format!("--runtime={}", scale.mixed_seconds));
        }
        fio.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = cleanup::run_workload("fio (mixed)", &mut fio)?;
        if !output.status.success() {
            bail!(
                "fio failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let report: Value =
            serde_json::from_str(text.get(text.find('{').unwrap_or(0)..).unwrap_or(""))
                .context("fio's JSON report")?;
        let jobs = report["jobs"].as_array().context("fio reported no jobs")?;
        let percentile = |job: &Value, which: &str| {
            job["read"]["clat_ns"]["percentile"][which]
                .as_f64()
                .map(|ns| ns / 1e3)
        };
        let readers: Vec<&Value> = jobs
            .iter()
            .filter(|job| {
                job["jobname"]
                    .as_str()
                    .is_some_and(|name| name.starts_with("reader"))
            })
            .collect();
        // The worst reader's p99, the readers' mean p50.
        let p99 = readers
            .iter()
            .filter_map(|job| percentile(job, "99.000000"))
            .fold(f64::NAN, f64::max);
        let p50s: Vec<f64> = readers
            .iter()
            .filter_map(|job| percentile(job, "50.000000"))
            .collect();
        if p99.is_nan() || p50s.len() != READERS {
            bail!("fio reported no read latency percentiles");
        }
        let writes = jobs
            .iter()
            .find(|job| job["jobname"] == "writer")
            .and_then(|job| job["write"]["total_ios"].as_u64());
        samples.push(Sample {
            metric,
            value: p99,
            detail: json!({
                "readers_p50_us": p50s.iter().sum::<f64>() / p50s.len() as f64,
                "readers_p99_us": p99,
                "reads": readers.iter().filter_map(|job| job["read"]["total_ios"].as_u64()).sum::<u64>(),
                "fsynced_writes": writes,
            }),
        });
    }
    session.end_phase("mixed-writer");
    Ok(samples)
}

/// Run a command with its output appended to `log`; fail quoting the log.
fn logged(command: &mut Command, log: &Path) -> anyhow::Result<()> {
    let file = File::options().create(true).append(true).open(log)?;
    let status = cleanup::run_workload(
        &crate::process::describe(command),
        command
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("CARGO_MAKEFLAGS")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file),
    )?
    .status;
    if !status.success() {
        bail!(
            "{} failed ({status}); see {}",
            crate::process::describe(command),
            log.display()
        );
    }
    Ok(())
}
