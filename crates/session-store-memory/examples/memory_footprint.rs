//! Bytes of resident memory per session in a `MemoryStore`, measured from the
//! process's VmRSS (Linux `/proc/self/status`) before and after filling the store.
//!
//! Run: `cargo run --release -p session-store-memory --example memory_footprint`
//! Optional arguments: `<sessions> <frames per session> <frame bytes>`
//! (default 100000 10 1024). The run is bounded by those counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{env, fs, time::Instant};

use session_store_core::{
    Direction, Frame, NewSession, SessionId, SessionStore, StoreSettings, Timestamp,
};
use session_store_memory::MemoryStore;

/// Resident set size of this process in bytes, from `/proc/self/status`.
fn resident_bytes() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux only)");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line in /proc/self/status");
    kib * 1024
}

fn argument(position: usize, default: usize) -> usize {
    env::args()
        .nth(position)
        .map(|raw| {
            raw.parse()
                .expect("arguments are counts: <sessions> <frames> <frame bytes>")
        })
        .unwrap_or(default)
}

fn percentile(sorted: &[u64], fraction: f64) -> u64 {
    let rank = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[rank]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let sessions = argument(1, 100_000);
    let frames_per_session = argument(2, 10);
    let frame_bytes = argument(3, 1024);
    let payload = vec![b'x'; frame_bytes];
    let ids: Vec<SessionId> = (0..sessions)
        .map(|_| SessionId::random().unwrap())
        .collect();
    let store = MemoryStore::new(StoreSettings::default()).unwrap();

    let before = resident_bytes();
    let mut checkpoints = Vec::new();
    let mut create_micros = Vec::with_capacity(sessions);
    let started = Instant::now();
    for (n, id) in ids.iter().enumerate() {
        let new = NewSession::new(id.clone())
            .with_protocol_version("2025-06-18")
            .with_tag("tenant", "acme");
        let timer = Instant::now();
        store.create(new).await.unwrap();
        create_micros.push(timer.elapsed().as_micros() as u64);
        for _ in 0..frames_per_session {
            let frame = Frame::new(
                Direction::ClientToServer,
                Timestamp::from_millis(0),
                payload.clone(),
            );
            store.append_frame(id, frame).await.unwrap();
        }
        if (n + 1) % (sessions / 10).max(1) == 0 {
            checkpoints.push((n + 1, resident_bytes()));
        }
    }
    let elapsed = started.elapsed();
    let after = resident_bytes();

    let count = store.count().await.unwrap();
    assert_eq!(count as usize, sessions);
    let grown = after.saturating_sub(before);
    let per_session = grown / sessions.max(1) as u64;
    let payload_per_session = (frames_per_session * frame_bytes) as u64;
    println!(
        "{sessions} sessions x {frames_per_session} frames of {frame_bytes} B, filled in {:.2?}",
        elapsed
    );
    println!(
        "VmRSS before {:.1} MiB, after {:.1} MiB, grown {:.1} MiB",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        grown as f64 / 1048576.0
    );
    println!(
        "bytes per session: {per_session} (payload {payload_per_session}, overhead {})",
        per_session.saturating_sub(payload_per_session)
    );
    let mut marginal: Vec<u64> = checkpoints
        .windows(2)
        .map(|w| (w[1].1.saturating_sub(w[0].1)) / (w[1].0 - w[0].0) as u64)
        .collect();
    marginal.sort_unstable();
    if !marginal.is_empty() {
        println!(
            "bytes per session per tenth of the fill: min {} median {} max {}",
            marginal[0],
            percentile(&marginal, 0.5),
            marginal[marginal.len() - 1]
        );
    }
    create_micros.sort_unstable();
    println!(
        "create latency (with the store filling): p50 {} us, p99 {} us, max {} us",
        percentile(&create_micros, 0.5),
        percentile(&create_micros, 0.99),
        create_micros[create_micros.len() - 1]
    );
}
