//! `cargo xtask test`: every check CI runs, in one command.
//!
//! Each step runs even when an earlier one failed, so one CI run reports
//! every problem; the summary at the end names the failures and the command
//! exits non-zero if there were any.

use crate::process::{self, cargo, execute};
use anyhow::bail;
use std::process::Command;
use std::time::Instant;

/// The no_std library crates: each must build for the bare-metal target.
const NO_STD_PACKAGES: &[&str] = &[
    "byte-size",
    "xdr",
    "nfs3",
    "vfs",
    "vrpc",
    "metatab",
    "xen-abi",
    "sdfs",
    "nfs-server",
];

/// Arguments of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Skip the Xen boot test under QEMU (it needs root and takes minutes).
    #[arg(long)]
    pub skip_qemu: bool,
    /// Seconds each fuzz target runs (0 skips fuzzing).
    #[arg(long, default_value_t = 20)]
    pub fuzz_seconds: u64,
}

struct Step {
    name: &'static str,
    seconds: f64,
    outcome: anyhow::Result<()>,
}

/// Run every step and summarise.
///
/// # Errors
/// When any step failed.
pub fn run(args: TestArgs) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    std::env::set_current_dir(&root)?;
    let mut steps = Vec::new();
    let mut step = |name: &'static str, body: &dyn Fn() -> anyhow::Result<()>| {
        eprintln!("\n=== {name}");
        let started = Instant::now();
        let outcome = body();
        if let Err(error) = &outcome {
            eprintln!("=== {name}: FAILED: {error:#}");
        }
        steps.push(Step {
            name,
            seconds: started.elapsed().as_secs_f64(),
            outcome,
        });
    };

    step("format", &|| {
        execute(cargo().args(["fmt", "--all", "--check"]))
    });
    step("clippy", &|| {
        execute(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    });
    step("no_std builds", &|| {
        let mut command = cargo();
        command.args(["build", "--target", "x86_64-unknown-none"]);
        for package in NO_STD_PACKAGES {
            command.args(["-p", package]);
        }
        execute(&mut command)
    });
    // The PV kernel: its platform code only compiles for bare metal (the
    // host build above is a stub main). Run from its directory so its
    // .cargo/config.toml (static relocation model) applies.
    step("xen kernel (bare metal)", &|| {
        let kernel = || {
            let mut command = cargo();
            command.current_dir("storage-domain/xen");
            command
        };
        execute(kernel().args([
            "clippy",
            "--release",
            "--target",
            "x86_64-unknown-none",
            "--",
            "-D",
            "warnings",
        ]))?;
        execute(kernel().args(["build", "--release", "--target", "x86_64-unknown-none"]))
    });
    step("docs", &|| {
        execute(
            cargo()
                .args([
                    "doc",
                    "--workspace",
                    "--no-deps",
                    "--document-private-items",
                ])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )
    });
    step("tests", &|| {
        execute(cargo().args(["test", "--workspace", "--no-fail-fast"]))
    });
    // Bounded forms of the long runs (docs/reliability.md); each prints
    // why and passes when not root or without /dev/fuse.
    step("kill campaign (5 kills)", &|| {
        crate::torture::run(crate::torture::TortureArgs {
            kills: 5,
            seed: 1,
            duration: None,
        })
    });
    step("soak (8 VRPC + 2 TCP mounts, 25 s)", &|| {
        crate::soak::run(crate::soak::SoakArgs {
            mounts: 8,
            tcp_clients: 2,
            duration: std::time::Duration::from_secs(25),
            seed: 1,
            rss_growth_mib: 64,
        })
    });
    step("full disk (4 writers, 64 MiB, 1 round)", &|| {
        crate::fill::run(crate::fill::FillArgs {
            size: "64M".into(),
            rounds: 1,
            hold: 2.0,
            file_bytes: 1 << 20,
        })
    });
    if args.fuzz_seconds > 0 {
        step("fuzz", &|| {
            crate::fuzz::run(crate::fuzz::FuzzArgs {
                seconds: args.fuzz_seconds,
                minimum_runs: 0,
                sanitizer: "none".into(),
                update_corpus: false,
                targets: Vec::new(),
            })
        });
    }
    // Installs the guest package and edits /etc/fstab (restored after);
    // prints why and passes when not root or not on Debian.
    step("debian package", &crate::package_test::run);
    // Not a pass: the summary lists it as skipped, with the reason.
    let skipped_qemu = if args.skip_qemu {
        Some("--skip-qemu was given")
    } else if !crate::workspace_root().join("qemu-tests/run.sh").is_file() {
        Some("the Xen PV kernel and qemu-tests/run.sh are not built yet")
    } else {
        step("xen boot under qemu", &qemu_test);
        None
    };

    eprintln!("\n=== summary");
    let mut failed = Vec::new();
    for step in &steps {
        let verdict = if step.outcome.is_ok() { "ok" } else { "FAILED" };
        eprintln!("{:>8.1} s  {verdict:<6}  {}", step.seconds, step.name);
        if step.outcome.is_err() {
            failed.push(step.name);
        }
    }
    if let Some(reason) = skipped_qemu {
        eprintln!("{:>8}    SKIPPED xen boot under qemu: {reason}", "-");
    }
    if !failed.is_empty() {
        bail!("failed steps: {}", failed.join(", "));
    }
    Ok(())
}

/// The Xen boot test: the project's script under `qemu-tests/`.
///
/// # Errors
/// When the script is missing, cannot run, or reports a failed check.
pub fn qemu_test() -> anyhow::Result<()> {
    let script = crate::workspace_root().join("qemu-tests/run.sh");
    if !script.is_file() {
        bail!("{} is missing", script.display());
    }
    if !process::on_path("qemu-system-x86_64") {
        bail!("qemu-system-x86_64 is not installed (run ./test.sh, which installs it)");
    }
    execute(Command::new("bash").arg(script))
}
