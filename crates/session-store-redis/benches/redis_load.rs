//! Load benchmark of `RedisStore` against its own data model done by hand with
//! fred, plain single commands, and `tower-sessions-redis-store`, at 1 and 64
//! concurrent tasks on one dedicated loopback redis-server.
//!
//! `cargo bench -p session-store-redis --bench redis_load`. `BENCH_POOL_SIZES`
//! (default `1,4`) picks the fred pool sizes to run; `BENCH_OPS` (default all)
//! the operations, by name, comma-separated (`get,touch`), and `BENCH_ROWS`
//! the rows, by label (`get,peer load`: for a profiler); every row is bounded
//! in operations and time, so the whole run takes a few minutes at most.

mod common;
mod load;

use std::{sync::Arc, time::Duration};

use common::{
    measure::{measure, Bounds},
    server::DedicatedRedis,
};
use load::{report, rows, Fixture, TASKS};

/// 1 task: bounded by count, sequential round trips are slow.
const SINGLE: Bounds = Bounds {
    warmup_ops: 500,
    warmup_time: Duration::from_millis(300),
    ops: 10_000,
    time: Duration::from_millis(1_500),
};

/// 64 tasks: enough operations to reach a steady state.
const CONCURRENT: Bounds = Bounds {
    warmup_ops: 2_000,
    warmup_time: Duration::from_millis(500),
    ops: 30_000,
    time: Duration::from_secs(2),
};

fn main() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let server = DedicatedRedis::start()?;
    let pool_sizes = pool_sizes()?;
    let missed = runtime.block_on(async {
        let mut missed = 0;
        for &pool_size in &pool_sizes {
            missed += run_pool_size(&server.url(), pool_size).await?;
        }
        Ok::<usize, String>(missed)
    })?;
    println!("\n{missed} target(s) missed in total");
    drop(server);
    Ok(())
}

fn pool_sizes() -> Result<Vec<usize>, String> {
    let text = std::env::var("BENCH_POOL_SIZES").unwrap_or_else(|_| "1,4".to_owned());
    text.split(',')
        .map(|n| {
            n.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("BENCH_POOL_SIZES: `{n}` is not a pool size"))
        })
        .collect()
}

async fn run_pool_size(url: &str, pool_size: usize) -> Result<usize, String> {
    println!("\n== pool_size {pool_size} (store, raw fred and peer each on a pool of {pool_size})");
    let fixture = Arc::new(Fixture::new(url, pool_size).await?);
    let chosen = |var: &str, name: &str| {
        std::env::var(var)
            .ok()
            .is_none_or(|only| only.split(',').any(|n| n.trim() == name))
    };
    let specs: Vec<_> = rows::specs(&fixture)
        .into_iter()
        .filter(|spec| chosen("BENCH_OPS", spec.op.name()) && chosen("BENCH_ROWS", spec.label))
        .collect();
    let task_counts = [1, TASKS];
    let mut results = Vec::new();
    for tasks in task_counts {
        let bounds = if tasks == 1 { SINGLE } else { CONCURRENT };
        for spec in &specs {
            let row = measure(spec.label, tasks, bounds, spec.operation.clone()).await?;
            results.push(report::Measured {
                op: spec.op,
                variant: spec.variant,
                row,
            });
        }
    }
    Ok(report::print(pool_size, &results, &task_counts))
}
