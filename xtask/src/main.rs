//! Project automation, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! Plain Rust instead of shell scripts or a Makefile: the same code runs on a
//! developer's machine and in CI, and it is type-checked with the rest of the
//! workspace. `main` is one `match` on the subcommand; each arm parses only its
//! own flags and calls one function in the module that owns the command.

mod bench;
mod ci;
#[cfg(feature = "containers")]
mod containers;
mod coverage;
mod demo;
mod integration;
mod npm;
mod process;
mod python;
mod redis;
mod resp;
mod test_redis;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};

const HELP: &str = "\
cargo xtask <command> [flags]

Commands:
  demo          build the proxy, run a scripted MCP session through it and print
                what it recorded (--storage memory|redis; memory needs nothing)
  ci            fmt, clippy, tests, cargo-deny (when installed), the integration
                suites against real Redis, then the demo; stops at the first failure
  integration   start Redis (standalone + 3-master cluster), install the pinned
                Python MCP SDK in target/py-mcp when missing, run every test
                including the ignored ones that need them, tear Redis down
  redis         start the same Redis servers, print the env exports to run one
                test by hand, and wait for Ctrl-C
  coverage      line coverage per crate with cargo-tarpaulin (installed into
                target/tools when missing), Redis and end-to-end suites and
                the proxy binary they start included; report in target/coverage
  bench proxy   the proxy's added latency: tools/call direct vs through nginx
                and the proxy on memory and Redis, 1 and 16 clients (p50, p99,
                calls/s, CPU per 1,000 calls)
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
        "demo" => {
            if args.wants_help() {
                print!("{}", demo::HELP);
                return Ok(());
            }
            let storage = match args.take_value("--storage")? {
                Some(value) => demo::Storage::parse(&value)?,
                None => demo::Storage::Memory,
            };
            args.finish("demo")?;
            demo::run(storage)
        }
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
        "coverage" => {
            if args.wants_help() {
                print!("{}", coverage::HELP);
                return Ok(());
            }
            let tarpaulin_args = args.take_after_double_dash();
            let packages = args
                .take_value("--package")?
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|name| !name.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let skip_services = args.take_flag("--skip-services");
            args.finish("coverage")?;
            coverage::run(&coverage::Options {
                packages,
                skip_services,
                tarpaulin_args,
            })
        }
        "bench" => {
            if args.wants_help() {
                print!("{}", bench::HELP);
                return Ok(());
            }
            let bench_args = args.take_after_double_dash();
            let Some(target) = args.next() else {
                print!("{}", bench::HELP);
                bail!("`cargo xtask bench` needs a benchmark name, e.g. `cargo xtask bench proxy`");
            };
            args.finish("bench")?;
            bench::run(&target, &bench_args)
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

    /// Removes `flag VALUE` or `flag=VALUE` (before any `--`) and returns the value;
    /// fails when the flag is given without a value or more than once.
    fn take_value(&mut self, flag: &str) -> Result<Option<String>> {
        let prefix = format!("{flag}=");
        let mut value = None;
        let mut index = 0;
        while let Some(arg) = self.remaining.get(index).filter(|arg| *arg != "--") {
            let found = if arg == flag {
                let Some(next) = self.remaining.get(index + 1).filter(|next| *next != "--") else {
                    bail!("`{flag}` needs a value");
                };
                let next = next.clone();
                self.remaining.drain(index..index + 2);
                next
            } else if let Some(inline) = arg.strip_prefix(&prefix) {
                let inline = inline.to_string();
                self.remaining.remove(index);
                inline
            } else {
                index += 1;
                continue;
            };
            if value.replace(found).is_some() {
                bail!("`{flag}` given more than once");
            }
        }
        Ok(value)
    }

    /// Removes every `flag` (before any `--`); true when there was one.
    fn take_flag(&mut self, flag: &str) -> bool {
        let before = self.remaining.len();
        let end = self
            .remaining
            .iter()
            .position(|arg| arg == "--")
            .unwrap_or(before);
        let mut index = 0;
        self.remaining.retain(|arg| {
            index += 1;
            index > end || arg != flag
        });
        self.remaining.len() != before
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

/// cargo's target directory: `CARGO_TARGET_DIR` when set (relative to the
/// workspace root), else `<workspace>/target`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
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
    fn a_flag_value_is_taken_in_either_spelling() {
        let mut parsed = args(&["--storage", "redis"]);
        assert_eq!(
            parsed.take_value("--storage").unwrap().as_deref(),
            Some("redis")
        );
        assert!(parsed.finish("demo").is_ok());
        let mut parsed = args(&["--storage=memory"]);
        assert_eq!(
            parsed.take_value("--storage").unwrap().as_deref(),
            Some("memory")
        );
        assert!(parsed.finish("demo").is_ok());
        let mut absent = args(&[]);
        assert_eq!(absent.take_value("--storage").unwrap(), None);
        assert!(args(&["--storage"]).take_value("--storage").is_err());
        let twice = args(&["--storage", "redis", "--storage=memory"]).take_value("--storage");
        assert!(twice.is_err());
    }

    #[test]
    fn a_flag_is_taken_only_before_double_dash() {
        let mut parsed = args(&["--skip-services", "--", "--skip-services"]);
        assert!(parsed.take_flag("--skip-services"));
        assert!(!parsed.take_flag("--skip-services"));
        assert_eq!(parsed.take_after_double_dash(), ["--skip-services"]);
        assert!(parsed.finish("coverage").is_ok());
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
