//! `cargo xtask integration` and `cargo xtask redis`: real Redis for the suites
//! that are `#[ignore]`d without it, handed to them by environment variables.

use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::npm;
use crate::process;
use crate::python;
use crate::redis::{RedisCluster, RedisServer, Role};
use crate::test_redis::TestRedis;

pub const HELP: &str = "\
cargo xtask integration [-- <cargo test args> [-- <test binary args>]]

Starts one standalone Redis and a 3-master Redis Cluster on free 127.0.0.1 ports,
then runs

  cargo test --workspace --exclude xtask --all-features --no-fail-fast --tests -- --include-ignored --show-output

with TEST_REDIS_URL, TEST_REDIS_CLUSTER_NODES and TEST_REDIS_SERVER set, and
TEST_MCP_PYTHON naming a venv (target/py-mcp) with the Python MCP SDK
mcp==2.3.0, which pip installs from PyPI when missing, and TEST_MCP_NPM_DIR
naming target/npm-mcp with the TypeScript SDK 1.x and server-everything
pinned by xtask/npm/package-lock.json (npm ci when missing); and stops every server
afterwards, also on failure or Ctrl-C. Doc tests are left to `cargo xtask ci`:
--include-ignored would try to compile doc examples marked `ignore`.

The session browser test (e2e_browser) starts chromedriver from PATH, or from
TEST_CHROMEDRIVER when set, with Chromium from PATH or TEST_CHROMIUM (Debian:
apt-get install chromium chromium-driver; .ci/run does it when missing).

Redis comes from redis-server on PATH or, in an xtask built with
`--features containers`, from Docker containers.

Target flags (--test <name>, --lib, --bins, --all-targets, ...) replace --tests,
so one suite can run alone.

Examples:
  cargo xtask integration -- conformance            # tests whose name matches
  cargo xtask integration -- -p session-store-redis -- --nocapture
  cargo xtask integration -- -p session-store --test fallback_start
  cargo xtask integration -- --test e2e_store_down with_fallback
";

pub const REDIS_HELP: &str = "\
cargo xtask redis

Starts the same Redis servers as `cargo xtask integration`, prints the
environment exports for them, and waits for Ctrl-C, then stops them. Handy for
running one test by hand in another terminal.
";

const INSTALL_REDIS: &str = "apt-get update && apt-get install -y redis-server";

/// Starts Redis for the suites: local processes when redis-server is on PATH,
/// else containers when Docker answers (feature `containers`), else an error
/// with the command that installs Redis.
pub fn start_test_redis() -> Result<TestRedis> {
    if let Some(server_binary) = process::find_on_path("redis-server") {
        return start_local(server_binary);
    }
    let mut docker_info = Command::new("docker");
    docker_info.arg("info");
    if process::succeeds_within(&mut docker_info, Duration::from_secs(30)) {
        return start_in_docker();
    }
    bail!(
        "redis-server is not on PATH and no Docker engine answers `docker info`.\n\
         Install Redis with:\n    {INSTALL_REDIS}"
    )
}

#[cfg(feature = "containers")]
fn start_in_docker() -> Result<TestRedis> {
    crate::containers::start()
}

#[cfg(not(feature = "containers"))]
fn start_in_docker() -> Result<TestRedis> {
    bail!(
        "redis-server is not on PATH; a Docker engine answers, but this xtask was built \
         without the `containers` feature. Re-run with:\n    \
         cargo run --quiet --package xtask --features containers -- integration\n\
         or install Redis with:\n    {INSTALL_REDIS}"
    )
}

fn start_local(server_binary: PathBuf) -> Result<TestRedis> {
    let cli_binary = process::find_on_path("redis-cli")
        .or_else(|| {
            let sibling = server_binary.with_file_name("redis-cli");
            process::is_executable(&sibling).then_some(sibling)
        })
        .with_context(|| {
            format!("redis-cli is not on PATH (Debian package redis-tools): {INSTALL_REDIS}")
        })?;
    println!("xtask: starting redis from {}", server_binary.display());
    let standalone = RedisServer::start(&server_binary, Role::Standalone)
        .context("starting the standalone redis-server")?;
    let cluster = RedisCluster::start(&server_binary, &cli_binary)
        .context("starting the 3-master redis cluster")?;
    let version = standalone.version()?;
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        eprintln!("xtask: warning: redis {version} is older than 7; the suites target 7+");
    }
    let description = format!(
        "standalone redis {version} at {}, 3-master cluster (redis {}) at {}",
        standalone.url(),
        cluster.version()?,
        cluster.nodes_list()
    );
    Ok(TestRedis::new(
        standalone.url(),
        cluster.nodes_list(),
        Some(server_binary),
        description,
        (standalone, cluster),
    ))
}

/// Which tests `cargo xtask integration` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every test, the `#[ignore]`d ones included (`cargo xtask integration`).
    All,
    /// Only the `#[ignore]`d ones: `cargo xtask ci` has already run the rest in its
    /// `test` step, so running them again would only cost time.
    IgnoredOnly,
}

/// Everything the `#[ignore]`d suites need: Redis servers, the Python MCP SDK's
/// venv and the npm MCP packages; dropping it stops the servers.
pub struct TestServices {
    /// The Redis servers.
    pub redis: TestRedis,
    python: PathBuf,
    npm_dir: PathBuf,
}

impl TestServices {
    /// Installs the pinned Python and npm packages when missing and starts Redis.
    pub fn start() -> Result<Self> {
        let python = python::ensure_sdk()?;
        let npm_dir = npm::ensure_packages()?;
        let redis = start_test_redis()?;
        Ok(Self {
            redis,
            python,
            npm_dir,
        })
    }

    /// The environment the suites read.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = self.redis.env();
        env.push((python::PYTHON_VAR, self.python.display().to_string()));
        env.push((npm::NPM_DIR_VAR, self.npm_dir.display().to_string()));
        env
    }
}

/// `cargo xtask integration`: the whole workspace's tests, ignored ones included,
/// against fresh Redis servers.
pub fn run(cargo_test_args: &[String]) -> Result<()> {
    run_selected(cargo_test_args, Selection::All)
}

/// Like [`run`], with the choice of tests.
pub fn run_selected(cargo_test_args: &[String], selection: Selection) -> Result<()> {
    let services = TestServices::start()?;
    let description = &services.redis.description;
    println!("xtask: running integration suites against: {description}");
    let mut command = cargo_test_command(cargo_test_args, selection);
    command.envs(services.env());
    println!("xtask: {}", process::display(&command));
    let outcome = process::run_checked(&mut command);
    let verdict = if outcome.is_ok() { "passed" } else { "FAILED" };
    println!("xtask: integration suites {verdict}; they ran against: {description}");
    drop(services);
    outcome
}

/// `cargo test` with the user's extra arguments: before their own `--` they go to
/// cargo (a test-name filter, `-p <crate>`), after it to the test binaries.
fn cargo_test_command(extra: &[String], selection: Selection) -> Command {
    let (cargo_args, binary_args) = match extra.iter().position(|arg| arg == "--") {
        Some(index) => (&extra[..index], &extra[index + 1..]),
        None => (extra, &[][..]),
    };
    let picks_packages = cargo_args
        .iter()
        .any(|arg| arg.starts_with("-p") || arg.starts_with("--package"));
    let picks_targets = cargo_args.iter().any(|arg| is_target_flag(arg));
    let mut command = Command::new(cargo());
    command.current_dir(crate::workspace_root()).arg("test");
    if !picks_packages {
        // xtask is excluded: --all-features would compile its Docker dependencies.
        command.args(["--workspace", "--exclude", "xtask"]);
    }
    // Every suite runs and reports, even after one fails.
    command.args(["--all-features", "--no-fail-fast"]);
    if !picks_targets {
        // Every test target; a target the user names replaces them.
        command.arg("--tests");
    }
    command
        .args(cargo_args)
        // --show-output: the fault and scale tests print the figures they measured.
        .args([
            "--",
            match selection {
                Selection::All => "--include-ignored",
                Selection::IgnoredOnly => "--ignored",
            },
            "--show-output",
        ])
        .args(binary_args);
    command
}

/// Whether `arg` is a `cargo test` flag choosing targets (`--test <name>`,
/// `--lib`, `--bins`, ...), which would otherwise add to `--tests` rather than
/// narrow it.
fn is_target_flag(arg: &str) -> bool {
    const FLAGS: [&str; 11] = [
        "--lib",
        "--bin",
        "--bins",
        "--example",
        "--examples",
        "--test",
        "--tests",
        "--bench",
        "--benches",
        "--all-targets",
        "--doc",
    ];
    let name = arg.split_once('=').map_or(arg, |(name, _)| name);
    FLAGS.contains(&name)
}

/// The cargo that runs xtask, so nested builds use the same toolchain.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// `cargo xtask redis`: the servers stay up until Ctrl-C.
pub fn serve_until_interrupted() -> Result<()> {
    let redis = start_test_redis()?;
    println!("xtask: running {}", redis.description);
    println!("# paste into another shell, then run e.g. `cargo test -p session-store-redis -- --include-ignored`:");
    for (name, value) in redis.env() {
        println!("export {name}={value}");
    }
    println!("xtask: press Ctrl-C to stop the servers");
    while !process::interrupted() {
        thread::sleep(Duration::from_millis(100));
    }
    drop(redis);
    println!("xtask: servers stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::args_of;

    #[test]
    fn without_extra_args_every_crate_but_xtask_runs_ignored_tests_too() {
        let args = args_of(&cargo_test_command(&[], Selection::All));
        assert_eq!(
            args,
            [
                "test",
                "--workspace",
                "--exclude",
                "xtask",
                "--all-features",
                "--no-fail-fast",
                "--tests",
                "--",
                "--include-ignored",
                "--show-output"
            ]
        );
    }

    #[test]
    fn a_filter_goes_to_cargo_and_args_after_a_second_double_dash_to_the_binaries() {
        let extra = ["conformance", "--", "--nocapture"].map(String::from);
        let args = args_of(&cargo_test_command(&extra, Selection::All));
        let tail = &args[args.len() - 6..];
        assert_eq!(
            tail,
            [
                "--tests",
                "conformance",
                "--",
                "--include-ignored",
                "--show-output",
                "--nocapture"
            ]
        );
    }

    #[test]
    fn ci_runs_only_the_ignored_tests() {
        let args = args_of(&cargo_test_command(&[], Selection::IgnoredOnly));
        assert!(args.contains(&"--ignored".to_string()), "{args:?}");
        assert!(!args.contains(&"--include-ignored".to_string()), "{args:?}");
    }

    #[test]
    fn naming_a_test_target_runs_only_that_suite() {
        for extra in [
            &["--test", "e2e_store_down", "with_fallback"][..],
            &["-p", "session-store", "--test=fallback_start"][..],
            &["--lib"][..],
        ] {
            let extra = extra.iter().map(|arg| arg.to_string()).collect::<Vec<_>>();
            let args = args_of(&cargo_test_command(&extra, Selection::All));
            assert!(!args.contains(&"--tests".to_string()), "{args:?}");
            let at = args.iter().position(|arg| arg == "--").unwrap();
            assert_eq!(args[at - extra.len()..at], extra[..], "{args:?}");
        }
    }

    #[test]
    fn picking_a_package_replaces_the_workspace() {
        let extra = ["-p", "session-store-redis"].map(String::from);
        let args = args_of(&cargo_test_command(&extra, Selection::All));
        assert!(!args.contains(&"--workspace".to_string()), "{args:?}");
        assert!(args.contains(&"session-store-redis".to_string()));
    }
}
