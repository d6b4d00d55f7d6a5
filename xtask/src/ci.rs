//! `cargo xtask ci`: every check CI runs, in order, stopping at the first failure.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::demo;
use crate::integration;
use crate::process;

pub const HELP: &str = "\
cargo xtask ci

Runs, in order, stopping at the first failure:
  fmt          cargo fmt --all -- --check
  clippy       cargo clippy --workspace --exclude xtask --all-targets --all-features -- -D warnings
               cargo clippy --package xtask --all-targets -- -D warnings
  doc          cargo doc --workspace --exclude xtask --all-features --no-deps
               cargo doc --package xtask --no-deps
               (RUSTDOCFLAGS=\"-D warnings\": a broken or redundant link fails)
  test         cargo test --workspace --exclude xtask --all-features   (unit, integration, doc)
               cargo test --package xtask
  deny         cargo deny check bans licenses sources   (skipped when cargo-deny is
               not installed; advisories need network: cargo deny check advisories)
  integration  cargo xtask integration, the #[ignore]d tests only (real Redis; the
               others ran in `test`; see its --help)
  demo         cargo xtask demo, then cargo xtask demo --storage redis   (the
               README's first command, end to end)

xtask is checked without --all-features: its `containers` feature pulls in the
Docker client, which CI never needs to compile.
";

/// What a step ended as, when it did not fail.
enum Outcome {
    Passed,
    Skipped(&'static str),
}

struct Step {
    name: &'static str,
    run: fn() -> Result<Outcome>,
}

const STEPS: &[Step] = &[
    Step {
        name: "fmt",
        run: fmt,
    },
    Step {
        name: "clippy",
        run: clippy,
    },
    Step {
        name: "doc",
        run: doc,
    },
    Step {
        name: "test",
        run: test,
    },
    Step {
        name: "deny",
        run: deny,
    },
    Step {
        name: "integration",
        run: integration,
    },
    Step {
        name: "demo",
        run: demo,
    },
];

/// Runs every step, printing each one's name and duration.
pub fn run() -> Result<()> {
    let started = Instant::now();
    let mut report = Vec::new();
    for (index, step) in STEPS.iter().enumerate() {
        println!(
            "\nxtask ci: ==> [{}/{}] {}",
            index + 1,
            STEPS.len(),
            step.name
        );
        let step_started = Instant::now();
        let outcome = (step.run)();
        let elapsed = step_started.elapsed();
        match outcome {
            Ok(Outcome::Passed) => {
                println!("xtask ci: <== {} passed in {}", step.name, seconds(elapsed));
                report.push(format!("{:<12} passed   {}", step.name, seconds(elapsed)));
            }
            Ok(Outcome::Skipped(reason)) => {
                println!("xtask ci: <== {} skipped: {reason}", step.name);
                report.push(format!("{:<12} skipped  ({reason})", step.name));
            }
            Err(error) => {
                report.push(format!("{:<12} FAILED   {}", step.name, seconds(elapsed)));
                print_report(&report, started.elapsed());
                return Err(error).with_context(|| {
                    format!(
                        "ci stopped at step `{}` after {}",
                        step.name,
                        seconds(elapsed)
                    )
                });
            }
        }
    }
    print_report(&report, started.elapsed());
    Ok(())
}

fn print_report(report: &[String], total: Duration) {
    println!("\nxtask ci: summary");
    for line in report {
        println!("  {line}");
    }
    println!("  total        {}", seconds(total));
}

fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(integration::cargo());
    command.current_dir(crate::workspace_root()).args(args);
    command
}

fn run_all(commands: &mut [Command]) -> Result<Outcome> {
    for command in commands {
        println!("xtask ci: {}", process::display(command));
        process::run_checked(command)?;
    }
    Ok(Outcome::Passed)
}

fn fmt() -> Result<Outcome> {
    run_all(&mut [cargo(&["fmt", "--all", "--", "--check"])])
}

fn clippy() -> Result<Outcome> {
    run_all(&mut [
        cargo(&[
            "clippy",
            "--workspace",
            "--exclude",
            "xtask",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
        cargo(&[
            "clippy",
            "--package",
            "xtask",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    ])
}

/// The API docs of every crate, every rustdoc warning an error. About a minute
/// when a crate changed, a second when nothing did.
fn doc() -> Result<Outcome> {
    let mut commands = [
        cargo(&[
            "doc",
            "--workspace",
            "--exclude",
            "xtask",
            "--all-features",
            "--no-deps",
        ]),
        cargo(&["doc", "--package", "xtask", "--no-deps"]),
    ];
    for command in &mut commands {
        command.env("RUSTDOCFLAGS", "-D warnings");
    }
    run_all(&mut commands)
}

fn test() -> Result<Outcome> {
    run_all(&mut [
        cargo(&[
            "test",
            "--workspace",
            "--exclude",
            "xtask",
            "--all-features",
        ]),
        cargo(&["test", "--package", "xtask"]),
    ])
}

fn deny() -> Result<Outcome> {
    let installed =
        process::succeeds_within(&mut cargo(&["deny", "--version"]), Duration::from_secs(30));
    if !installed {
        return Ok(Outcome::Skipped(
            "cargo-deny is not installed; `cargo install --locked cargo-deny` enables it",
        ));
    }
    // advisories would fetch the RustSec database, which needs network access.
    run_all(&mut [cargo(&["deny", "check", "bans", "licenses", "sources"])])
}

fn integration() -> Result<Outcome> {
    integration::run_selected(&[], integration::Selection::IgnoredOnly)?;
    Ok(Outcome::Passed)
}

fn demo() -> Result<Outcome> {
    demo::run(demo::Storage::Memory)?;
    demo::run(demo::Storage::Redis)?;
    Ok(Outcome::Passed)
}
