//! `cargo xtask bench proxy`: the proxy overhead benchmark
//! (`crates/mcp-proxy/benches/proxy_overhead.rs`) with a Redis server of its own,
//! so the Redis rows need no setup.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::integration;
use crate::process;
use crate::redis::{RedisServer, Role};

pub const HELP: &str = "\
cargo xtask bench proxy [-- <benchmark args>]

Starts a redis-server on a free 127.0.0.1 port (from PATH; without it the Redis
rows are skipped), then runs

  cargo bench --package mcp-proxy --bench proxy_overhead

with TEST_REDIS_URL pointing at it, and stops the server. The
benchmark (release build) starts demo-upstream and mcp-proxy (memory, then
Redis) on free ports and times tools/call round trips direct to the upstream
and through each proxy, with 1 and 32 concurrent clients (each its own session),
bounded by a call count and a time limit per configuration. It prints p50, p99,
ops/s and the latency the proxy adds over direct.

Benchmark args (after --):
  --calls N       tools/call requests per configuration (default 2000)
  --seconds S     time limit per configuration (default 20)
  --clients LIST  concurrency levels, comma-separated (default 1,32)

Results and how to read them: docs/performance.md, \"mcp-proxy overhead\".
";

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
    command.env_remove(integration::URL_VAR);
    if let Some(redis) = &redis {
        println!("xtask bench: redis {} at {}", redis.version()?, redis.url());
        command.env(integration::URL_VAR, redis.url());
    }
    println!("xtask bench: {}", process::display(&command));
    let outcome = process::run_checked(&mut command);
    drop(redis);
    outcome
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
}
