//! A bounded measurement: `tasks` tokio tasks share a fixed number of operations
//! and stop at a time limit, whichever comes first; each operation's latency is
//! kept so p50, p95 and p99 come from the sorted samples.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// One operation, given the index of the task running it.
pub type Operation =
    Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Wraps a closure returning a future as an [`Operation`].
pub fn operation<F, Fut>(f: F) -> Operation
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move |task| Box::pin(f(task)))
}

/// How long a row runs: at most `ops` operations and at most `time`, after a
/// warm-up of at most `warmup_ops` operations and `warmup_time`.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub warmup_ops: u64,
    pub warmup_time: Duration,
    pub ops: u64,
    pub time: Duration,
}

/// What one row measured.
#[derive(Clone, Debug)]
pub struct Row {
    pub label: String,
    pub tasks: usize,
    pub completed: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
}

impl Row {
    /// Completed operations per second of wall time.
    pub fn ops_per_sec(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `op` on `tasks` tasks within `bounds`; the first failing operation fails
/// the row (a benchmark of errors measures nothing).
pub async fn measure(
    label: &str,
    tasks: usize,
    bounds: Bounds,
    op: Operation,
) -> Result<Row, String> {
    run(tasks, bounds.warmup_ops, bounds.warmup_time, op.clone())
        .await
        .map_err(|e| format!("{label} ({tasks} tasks) warm-up: {e}"))?;
    let started = Instant::now();
    let mut samples = run(tasks, bounds.ops, bounds.time, op)
        .await
        .map_err(|e| format!("{label} ({tasks} tasks): {e}"))?;
    let elapsed = started.elapsed();
    samples.sort_unstable();
    let row = Row {
        label: label.to_owned(),
        tasks,
        completed: samples.len() as u64,
        elapsed,
        p50: percentile(&samples, 0.50),
        p95: percentile(&samples, 0.95),
        p99: percentile(&samples, 0.99),
    };
    println!(
        "  {:<34} {:>3} tasks  {:>7} ops  p50 {:>8.1} us  p99 {:>8.1} us  {:>9.0} ops/s",
        row.label,
        row.tasks,
        row.completed,
        micros(row.p50),
        micros(row.p99),
        row.ops_per_sec()
    );
    Ok(row)
}

/// The latencies of every operation the tasks completed.
async fn run(
    tasks: usize,
    ops: u64,
    time: Duration,
    op: Operation,
) -> Result<Vec<Duration>, String> {
    let claimed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + time;
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (claimed, op) = (claimed.clone(), op.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline && claimed.fetch_add(1, Ordering::Relaxed) < ops {
                    let start = Instant::now();
                    op(task).await?;
                    latencies.push(start.elapsed());
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.map_err(|e| format!("task failed: {e}"))??);
    }
    Ok(all)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration in microseconds, for printing.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
