//! `cargo xtask bench proxy`: the proxy overhead benchmark
//! (`crates/mcp-proxy/benches/proxy_overhead.rs`) with a Redis server of its own
//! and nginx for the reference row, so the side-by-side table needs no setup.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{bail, Context, Result};

use crate::integration;
use crate::npm;
use crate::process;
use crate::redis::{RedisServer, Role};
use crate::test_redis;

pub const HELP: &str = "\
cargo xtask bench proxy [-- <benchmark args>]

Starts a redis-server on a free 127.0.0.1 port (from PATH; without it the Redis
rows are skipped), installs nginx with apt-get when it is missing and xtask runs
as root (without it the nginx rows are skipped), then runs

  cargo bench --package mcp-proxy --bench proxy_overhead

with TEST_REDIS_URL pointing at the server, and stops it. The benchmark
(release build) starts the upstream, nginx as a plain reverse proxy (config in
target/), and mcp-proxy on memory and on Redis, on free ports, and times
tools/call echo round trips direct to the upstream and through each, with 1 and
16 concurrent clients (each its own session), in interleaved rounds (direct,
nginx, memory, Redis, repeated) bounded by a call count and a time limit per
row. It prints p50, p99, calls/s, the latency each adds over direct, the
proxy's CPU time per 1,000 calls (/proc/<pid>/stat), and the issue's targets
as ratios to nginx, each met or not.

Benchmark args (after --):
  --calls N         tools/call requests per row, all rounds (default 2000)
  --seconds S       time limit per row, all rounds (default 20)
  --clients LIST    concurrency levels, comma-separated (default 1,16)
  --rounds R        interleaved rounds (default 3)
  --upstream NAME   demo (demo-upstream, default) or everything
                    (@modelcontextprotocol/server-everything; xtask installs
                    it with npm into target/npm-mcp and sets TEST_MCP_NPM_DIR)
  --baseline-proxy PATH
                    another mcp-proxy build as a further memory row
                    (`memory, baseline`): before/after a change in one run
  --worker-threads LIST
                    [proxy] worker_threads values, each a further memory row
                    (`memory, N wkr`), e.g. 1,2

Results and how to read them: docs/performance.md, \"mcp-proxy overhead\".
";

/// Longest `apt-get update && apt-get install -y nginx` may take.
const NGINX_INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// `cargo xtask bench <target>`.
pub fn run(target: &str, bench_args: &[String]) -> Result<()> {
    if target != "proxy" {
        bail!("unknown benchmark `{target}`; the one there is: `cargo xtask bench proxy`");
    }
    let redis = match process::find_on_path("redis-server") {
        Some(binary) => Some(
            RedisServer::start(&binary, Role::Standalone)
                .context("starting redis-server for the benchmark")?,
        ),
        None => {
            eprintln!(
                "xtask bench: redis-server is not on PATH; the Redis rows are skipped \
                 (apt-get install -y redis-server)"
            );
            None
        }
    };
    ensure_nginx();
    let mut command = Command::new(integration::cargo());
    command.current_dir(crate::workspace_root()).args([
        "bench",
        "--package",
        "mcp-proxy",
        "--bench",
        "proxy_overhead",
    ]);
    if !bench_args.is_empty() {
        command.arg("--").args(bench_args);
    }
    command.env_remove(test_redis::URL_VAR);
    if let Some(redis) = &redis {
        println!("xtask bench: redis {} at {}", redis.version()?, redis.url());
        command.env(test_redis::URL_VAR, redis.url());
    }
    if wants_everything(bench_args) {
        let npm_dir = npm::ensure_packages()?;
        command.env(npm::NPM_DIR_VAR, &npm_dir);
    }
    println!("xtask bench: {}", process::display(&command));
    let outcome = process::run_checked(&mut command);
    drop(redis);
    outcome
}

/// Whether the benchmark args ask for server-everything as the upstream.
fn wants_everything(bench_args: &[String]) -> bool {
    bench_args
        .windows(2)
        .any(|pair| pair[0] == "--upstream" && pair[1] == "everything")
}

/// Installs nginx from Debian (`apt-get`) when it is on neither PATH nor
/// /usr/sbin and xtask runs as root; otherwise says the nginx rows are skipped.
fn ensure_nginx() {
    if process::find_on_path("nginx").is_some() || Path::new("/usr/sbin/nginx").is_file() {
        return;
    }
    if !running_as_root() {
        eprintln!(
            "xtask bench: nginx is missing and xtask is not root; the nginx rows are \
             skipped (apt-get install -y nginx)"
        );
        return;
    }
    println!("xtask bench: installing nginx (apt-get update && apt-get install -y nginx)");
    let mut install = Command::new("sh");
    install
        .args([
            "-c",
            "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive");
    match process::run_captured(&mut install, NGINX_INSTALL_TIMEOUT) {
        Ok(captured) if captured.status.success() => {}
        Ok(captured) => eprintln!(
            "xtask bench: installing nginx failed ({}); the nginx rows are skipped:\n{}",
            captured.status, captured.text
        ),
        Err(error) => {
            eprintln!(
                "xtask bench: installing nginx failed: {error:#}; the nginx rows are skipped"
            );
        }
    }
}

/// Whether the effective user id is 0 (from `/proc/self/status`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_whitespace()
                .nth(2)
                .map(|effective| effective == "0")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_proxy_benchmark_exists() {
        let error = run("database", &[]).unwrap_err().to_string();
        assert!(error.contains("`database`"), "{error}");
        assert!(error.contains("cargo xtask bench proxy"), "{error}");
    }

    #[test]
    fn server_everything_is_asked_for_by_the_upstream_flag() {
        let args = |list: &[&str]| list.iter().map(|arg| arg.to_string()).collect::<Vec<_>>();
        assert!(wants_everything(&args(&[
            "--calls",
            "10",
            "--upstream",
            "everything"
        ])));
        assert!(!wants_everything(&args(&["--upstream", "demo"])));
        assert!(!wants_everything(&args(&["everything"])));
    }
}
