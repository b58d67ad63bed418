//! Running commands with echo, timing and clear failures.

use anyhow::{bail, Context};
use std::process::Command;
use std::time::Instant;

/// Run `command`, echoing it first; fail with its exit status.
///
/// # Errors
/// When the command cannot start or exits non-zero.
pub fn execute(command: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {}", describe(command));
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("cannot start {}", describe(command)))?;
    if !status.success() {
        bail!(
            "{} failed ({status}) after {:.1} s",
            describe(command),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `cargo` as the current toolchain names it.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Whether an executable is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths).any(|directory| directory.join(program).is_file())
        })
        .unwrap_or(false)
}

/// A shell-like rendering of a command for logs.
pub fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for argument in command.get_args() {
        text.push(' ');
        text.push_str(&argument.to_string_lossy());
    }
    text
}
