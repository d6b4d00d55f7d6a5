//! The summary of one pool size: ratios of the store to its raw baseline and to
//! the peer, and one verdict line per target of the issue.

use std::time::Duration;

use super::ops::{Op, Variant};
use crate::common::measure::{micros, Row};

/// A measured row with what it measured.
pub struct Measured {
    pub op: Op,
    pub variant: Variant,
    pub row: Row,
}

/// Throughput at least this share of the raw baseline.
const MIN_RAW_RATIO: f64 = 0.8;
/// p99 at most this multiple of the raw baseline's p99.
const MAX_P99_RATIO: f64 = 1.5;
/// p99 under this.
const MAX_P99: Duration = Duration::from_millis(5);
/// Issue 14: p95 at most this multiple of the raw baseline's p95.
const MAX_P95_RATIO: f64 = 1.3;
/// Issue 14: p95 under this.
const MAX_P95: Duration = Duration::from_millis(5);
/// Issue 14: at 64 tasks, a get of a hot session through the near cache
/// (`near_cache_entries`) at least this multiple of the peer's `load`.
const MIN_GET_PEER_RATIO: f64 = 3.0;

fn find(results: &[Measured], op: Op, variant: Variant, tasks: usize) -> Option<&Row> {
    results
        .iter()
        .find(|m| m.op == op && m.variant == variant && m.row.tasks == tasks)
        .map(|m| &m.row)
}

/// Prints the ratio table and the verdicts; returns how many targets were missed.
pub fn print(pool_size: usize, results: &[Measured], task_counts: &[usize]) -> usize {
    println!("\nSummary, pool_size {pool_size} (ops/s; ratios are ours / other)");
    println!(
        "| {:<15} | {:>5} | {:>9} | {:>9} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>9} | {:>9} | {:>8} |",
        "operation", "tasks", "ours", "raw", "ours/raw", "p50 us", "p95 us", "raw p95", "p99 us", "p99/raw", "peer", "ours/peer"
    );
    println!("|{}|", ["-"; 12].map(|_| "---").join("|"));
    let mut missed = 0;
    let mut verdicts = Vec::new();
    for &tasks in task_counts {
        for op in Op::ALL {
            let Some(ours) = find(results, op, Variant::Ours, tasks) else {
                continue;
            };
            // create and update have no raw row: their verdicts are absolute.
            let raw = find(results, op, Variant::Raw, tasks);
            let ratio = raw.map(|raw| ours.ops_per_sec() / raw.ops_per_sec());
            let p99_ratio = raw.map(|raw| ours.p99.as_secs_f64() / raw.p99.as_secs_f64().max(1e-9));
            let p95_ratio = raw.map(|raw| ours.p95.as_secs_f64() / raw.p95.as_secs_f64().max(1e-9));
            let peer = find(results, op, Variant::Peer, tasks);
            let peer_ratio = peer.map(|p| ours.ops_per_sec() / p.ops_per_sec());
            let fixed = |value: Option<f64>, digits: usize| {
                value.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
            };
            println!(
                "| {:<15} | {:>5} | {:>9.0} | {:>9} | {:>8} | {:>8.1} | {:>8.1} | {:>8} | {:>8.1} | {:>9} | {:>9} | {:>8} |",
                op.name(),
                tasks,
                ours.ops_per_sec(),
                fixed(raw.map(Row::ops_per_sec), 0),
                fixed(ratio, 2),
                micros(ours.p50),
                micros(ours.p95),
                fixed(raw.map(|r| micros(r.p95)), 1),
                micros(ours.p99),
                fixed(p99_ratio, 2),
                fixed(peer.map(Row::ops_per_sec), 0),
                fixed(peer_ratio, 2),
            );
            if let (Some(ratio), Some(p99_ratio)) = (ratio, p99_ratio) {
                verdicts.push((
                    format!(
                        "{} at {tasks} tasks >= {MIN_RAW_RATIO}x raw throughput",
                        op.name()
                    ),
                    ratio >= MIN_RAW_RATIO,
                    format!("{ratio:.2}x"),
                ));
                verdicts.push((
                    format!(
                        "{} at {tasks} tasks p99 <= {MAX_P99_RATIO}x raw p99 and < 5 ms",
                        op.name()
                    ),
                    p99_ratio <= MAX_P99_RATIO && ours.p99 < MAX_P99,
                    format!("{p99_ratio:.2}x, {:.0} us", micros(ours.p99)),
                ));
            }
            if op != Op::Read {
                let (met, value, bound) = match p95_ratio {
                    Some(r) => (
                        r <= MAX_P95_RATIO && ours.p95 < MAX_P95,
                        format!("{r:.2}x, {:.0} us", micros(ours.p95)),
                        format!("p95 < 5 ms and <= {MAX_P95_RATIO}x raw p95"),
                    ),
                    None => (
                        ours.p95 < MAX_P95,
                        format!("{:.0} us (no raw row)", micros(ours.p95)),
                        "p95 < 5 ms".to_owned(),
                    ),
                };
                verdicts.push((
                    format!("issue 14: {} at {tasks} tasks {bound}", op.name()),
                    met,
                    value,
                ));
            }
            if tasks == 64 && op == Op::Touch {
                if let Some(r) = peer_ratio {
                    verdicts.push((
                        "touch at 64 tasks >= 1x peer save".to_owned(),
                        r >= 1.0,
                        format!("{r:.2}x"),
                    ));
                }
            }
            let near = find(results, op, Variant::NearCache, tasks);
            if let (64, Some(near), Some(peer)) = (tasks, near, peer) {
                let r = near.ops_per_sec() / peer.ops_per_sec();
                verdicts.push((
                    format!(
                        "get of a hot session (near cache) at 64 tasks >= {MIN_GET_PEER_RATIO}x peer load"
                    ),
                    r >= MIN_GET_PEER_RATIO,
                    format!("{r:.2}x, p95 {:.0} us", micros(near.p95)),
                ));
            }
        }
    }
    print_others(results, task_counts);
    println!("\nTargets, pool_size {pool_size}:");
    for (target, met, value) in verdicts {
        if !met {
            missed += 1;
        }
        println!(
            "  {:<6} {target}: {value}",
            if met { "MET" } else { "MISSED" }
        );
    }
    missed
}

/// The `custom`, historical, alternative and floor rows against the raw row and
/// the store of their operation: raw / custom is what typed commands gained.
fn print_others(results: &[Measured], task_counts: &[usize]) {
    println!(
        "\n| {:<34} | {:>5} | {:>9} | {:>8} | {:>10} | {:>11} |",
        "other row", "tasks", "ops/s", "p99 us", "raw / this", "ours / this"
    );
    println!("|{}|", ["-"; 6].map(|_| "---").join("|"));
    for &tasks in task_counts {
        for op in Op::ALL {
            let raw = find(results, op, Variant::Raw, tasks);
            let ours = find(results, op, Variant::Ours, tasks);
            let others = results.iter().filter(|m| {
                m.op == op
                    && m.row.tasks == tasks
                    && matches!(
                        m.variant,
                        Variant::Custom
                            | Variant::Historical
                            | Variant::Alternative
                            | Variant::Floor
                            | Variant::NearCache
                    )
            });
            for other in others {
                let per_sec = other.row.ops_per_sec();
                let ratio = |row: Option<&Row>| {
                    row.map_or("-".to_owned(), |r| {
                        format!("{:.2}", r.ops_per_sec() / per_sec)
                    })
                };
                println!(
                    "| {:<34} | {:>5} | {:>9.0} | {:>8.1} | {:>10} | {:>11} |",
                    other.row.label,
                    tasks,
                    per_sec,
                    micros(other.row.p99),
                    ratio(raw),
                    ratio(ours),
                );
            }
        }
    }
}
