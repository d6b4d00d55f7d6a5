//! Project automation, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! Plain Rust instead of shell scripts or a Makefile: the same code runs on a
//! developer's machine and in CI, and it is type-checked with the rest of the
//! workspace. `main` is one `match` on the subcommand; each arm parses only its
//! own flags and calls one function in the module that owns the command.

mod ci;
#[cfg(feature = "containers")]
mod containers;
mod integration;
mod process;
mod redis;
mod resp;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};

const HELP: &str = "\
cargo xtask <command> [flags]

Commands:
  ci            fmt, clippy, tests, cargo-deny (when installed), then the
                integration suites against real Redis; stops at the first failure
  integration   start Redis (standalone + 3-master cluster), run every test
                including the ignored ones that need Redis, tear Redis down
  redis         start the same Redis servers, print the env exports to run one
                test by hand, and wait for Ctrl-C
  help          this text

`cargo xtask <command> --help` describes one command.
";

fn main() -> ExitCode {
    process::install_interrupt_handler();
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: VecDeque<String>) -> Result<()> {
    let mut args = Args::new(args);
    let Some(command) = args.next() else {
        print!("{HELP}");
        bail!("no command given");
    };
    match command.as_str() {
        "ci" => {
            if args.wants_help() {
                print!("{}", ci::HELP);
                return Ok(());
            }
            args.finish("ci")?;
            ci::run()
        }
        "integration" => {
            if args.wants_help() {
                print!("{}", integration::HELP);
                return Ok(());
            }
            let cargo_test_args = args.take_after_double_dash();
            args.finish("integration")?;
            integration::run(&cargo_test_args)
        }
        "redis" => {
            if args.wants_help() {
                print!("{}", integration::REDIS_HELP);
                return Ok(());
            }
            args.finish("redis")?;
            integration::serve_until_interrupted()
        }
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => {
            print!("{HELP}");
            bail!("unknown command `{other}`")
        }
    }
}

/// The command line after the subcommand, consumed by the arm that owns it.
struct Args {
    remaining: VecDeque<String>,
}

impl Args {
    fn new(remaining: VecDeque<String>) -> Self {
        Self { remaining }
    }

    fn next(&mut self) -> Option<String> {
        self.remaining.pop_front()
    }

    /// True when `--help`/`-h` appears before any `--`.
    fn wants_help(&self) -> bool {
        self.remaining
            .iter()
            .take_while(|arg| arg.as_str() != "--")
            .any(|arg| arg == "--help" || arg == "-h")
    }

    /// Removes and returns everything after the first `--` (the `--` itself is dropped).
    fn take_after_double_dash(&mut self) -> Vec<String> {
        match self.remaining.iter().position(|arg| arg == "--") {
            Some(index) => {
                let tail = self.remaining.split_off(index);
                tail.into_iter().skip(1).collect()
            }
            None => Vec::new(),
        }
    }

    /// Fails on anything the command did not consume, naming it.
    fn finish(self, command: &str) -> Result<()> {
        match self.remaining.front() {
            None => Ok(()),
            Some(unknown) => bail!(
                "unknown argument `{unknown}` for `cargo xtask {command}`; \
                 see `cargo xtask {command} --help`"
            ),
        }
    }
}

/// The workspace root, where every cargo command runs.
fn workspace_root() -> PathBuf {
    let xtask_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().map(PathBuf::from).unwrap_or(xtask_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::new(list.iter().map(|arg| arg.to_string()).collect())
    }

    #[test]
    fn unknown_flag_is_rejected_with_the_command_name() {
        let error = args(&["--fast"]).finish("ci").unwrap_err().to_string();
        assert!(error.contains("`--fast`"), "{error}");
        assert!(error.contains("cargo xtask ci --help"), "{error}");
    }

    #[test]
    fn everything_after_double_dash_is_passed_through() {
        let mut parsed = args(&["--", "-p", "session-store-redis", "--", "--nocapture"]);
        let tail = parsed.take_after_double_dash();
        assert_eq!(tail, ["-p", "session-store-redis", "--", "--nocapture"]);
        assert!(parsed.finish("integration").is_ok());
    }

    #[test]
    fn help_after_double_dash_belongs_to_cargo_test() {
        assert!(!args(&["--", "--help"]).wants_help());
        assert!(args(&["--help"]).wants_help());
    }

    #[test]
    fn unknown_command_is_an_error() {
        let error = run(["deploy".to_string()].into()).unwrap_err().to_string();
        assert!(error.contains("`deploy`"), "{error}");
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("xtask").is_dir());
    }
}
