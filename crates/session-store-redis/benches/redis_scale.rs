//! Scale run of `RedisStore` on one dedicated loopback redis-server: 100,000
//! sessions with 10 frames of 1 KiB each; list every page, count, expire a tenth
//! and purge it, and what a session costs in Redis memory.
//!
//! `cargo bench -p session-store-redis --bench redis_scale`. Every phase is
//! bounded in count and time; a check that fails ends the run with an error.
//!
//! Environment: `SCALE_SESSIONS` (default 100,000; the issue's scale run is
//! 1,000,000) and `SCALE_FRAMES` (frames per session, default 10; 0 leaves every
//! session idle, so the memory figures are the meta and index alone):
//!
//! ```text
//! SCALE_SESSIONS=1000000 SCALE_FRAMES=0 cargo bench -p session-store-redis --bench redis_scale
//! ```

mod common;

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{
    raw::{self, integer, number, reply_text, text},
    server::DedicatedRedis,
};
use fred::clients::Pool;
use session_store_core::{
    Clock, Cursor, Direction, Frame, ManualClock, NewSession, SessionId, SessionStore,
    StoreSettings,
};
use session_store_redis::{RedisConfig, RedisStore, Topology};

/// Sessions when `SCALE_SESSIONS` is not set.
const DEFAULT_SESSIONS: usize = 100_000;
/// Frames per session when `SCALE_FRAMES` is not set.
const DEFAULT_FRAMES: usize = 10;
/// Most sessions the run accepts (memory of the bench process and the server).
const MAX_SESSIONS: usize = 5_000_000;
const PAYLOAD_BYTES: usize = 1024;
const FILL_TASKS: usize = 64;
const PAGE_SIZE: usize = 500;
const MEMORY_SAMPLES: usize = 100;
const TTL: Duration = Duration::from_secs(3_600);
/// Bound on filling the server per 100,000 sessions; the run fails rather than
/// overstay.
const FILL_LIMIT: Duration = Duration::from_secs(240);
/// Bound on walking every page, per 100,000 sessions.
const LIST_LIMIT: Duration = Duration::from_secs(60);

/// How big the run is.
#[derive(Clone, Copy)]
struct Scale {
    sessions: usize,
    /// Created first, then left to expire: exactly this many must be purged (a tenth).
    expired: usize,
    frames: usize,
}

impl Scale {
    fn from_env() -> Result<Scale, String> {
        let read = |name: &str, default: usize| -> Result<usize, String> {
            match std::env::var(name) {
                Ok(value) => value
                    .trim()
                    .replace('_', "")
                    .parse()
                    .map_err(|_| format!("{name}={value}: expected a whole number")),
                Err(_) => Ok(default),
            }
        };
        let sessions = read("SCALE_SESSIONS", DEFAULT_SESSIONS)?;
        if !(10..=MAX_SESSIONS).contains(&sessions) {
            return Err(format!(
                "SCALE_SESSIONS={sessions}: expected 10 to {MAX_SESSIONS}"
            ));
        }
        Ok(Scale {
            sessions,
            expired: sessions / 10,
            frames: read("SCALE_FRAMES", DEFAULT_FRAMES)?,
        })
    }

    /// `limit` per 100,000 sessions, at least `limit`.
    fn bound(self, limit: Duration) -> Duration {
        limit * u32::try_from(self.sessions.div_ceil(100_000)).unwrap_or(u32::MAX)
    }
}

fn main() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let scale = Scale::from_env()?;
    let server = DedicatedRedis::start()?;
    let result = runtime.block_on(run(&server.url(), scale));
    drop(server);
    result
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {}", what()))
    }
}

async fn run(url: &str, scale: Scale) -> Result<(), String> {
    let Scale {
        sessions,
        expired,
        frames,
    } = scale;
    let clock = ManualClock::starting_now();
    let config = RedisConfig {
        topology: Topology::Standalone {
            url: url.to_owned(),
        },
        command_timeout: Duration::from_secs(10),
        key_prefix: "scale".to_owned(),
        ..RedisConfig::default()
    };
    let settings = StoreSettings {
        ttl: TTL,
        ..StoreSettings::default()
    };
    let store = Arc::new(
        RedisStore::connect(config, settings, Arc::new(clock.clone()))
            .await
            .map_err(|e| format!("connecting the store: {e}"))?,
    );
    let admin = raw::connect_pool(url, 1).await?;
    println!(
        "redis_scale: {sessions} sessions x {frames} frames of {PAYLOAD_BYTES} B, \
         {FILL_TASKS} tasks, pool_size {}, index_shards {}",
        RedisConfig::default().pool_size,
        RedisConfig::default().index_shards
    );

    let ids: Arc<Vec<SessionId>> = Arc::new(
        (0..sessions)
            .map(|_| SessionId::random().map_err(|e| format!("session id: {e}")))
            .collect::<Result<_, _>>()?,
    );
    let used_before = used_memory(&admin).await?;

    // The first tenth is created a little over ttl/2 before the rest, so one
    // later jump of the clock expires exactly those.
    let started = Instant::now();
    let deadline = started + scale.bound(FILL_LIMIT);
    fill(&store, &clock, &ids, 0..expired, frames, deadline).await?;
    clock.advance(TTL / 2 + Duration::from_secs(60));
    fill(&store, &clock, &ids, expired..sessions, frames, deadline).await?;
    let fill_time = started.elapsed();
    let used_after = used_memory(&admin).await?;
    println!(
        "create + {frames} appends each: {:.1} s ({:.0} sessions/s, {:.0} appends/s)",
        fill_time.as_secs_f64(),
        sessions as f64 / fill_time.as_secs_f64(),
        (sessions * frames) as f64 / fill_time.as_secs_f64()
    );

    report_memory(&admin, &ids, frames, used_before, used_after).await?;
    list_all(&store, &ids, scale.bound(LIST_LIMIT)).await?;

    let counted = timed_count(&store).await?;
    check(counted == sessions as u64, || {
        format!("count is {counted}, expected {sessions}")
    })?;

    // Past the first tenth's expiry (created at t0, expiring t0 + ttl), before
    // the rest's (t0 + ttl/2 + 60 s + ttl).
    clock.advance(TTL / 2 + Duration::from_secs(60));
    let purge_started = Instant::now();
    let removed = store
        .purge_expired()
        .await
        .map_err(|e| format!("purge_expired: {e}"))?;
    let purge_time = purge_started.elapsed();
    println!(
        "purge_expired: removed {removed} in {:.2} s",
        purge_time.as_secs_f64()
    );
    check(removed == expired as u64, || {
        format!("purge removed {removed}, expected {expired}")
    })?;
    let after_purge = timed_count(&store).await?;
    check(after_purge == (sessions - expired) as u64, || {
        format!(
            "count after purge is {after_purge}, expected {}",
            sessions - expired
        )
    })?;
    let survivors_alive = survivors_remain(&store, &ids[..expired], &ids[expired..]).await?;
    println!("purge check: {survivors_alive}");
    let used_purged = used_memory(&admin).await?;
    println!(
        "used_memory after purge: {:.1} MiB (freed {:.0} B per purged session)",
        mib(used_purged),
        used_after.saturating_sub(used_purged) as f64 / expired as f64
    );
    println!("all checks passed");
    Ok(())
}

/// Creates the sessions `range` of `ids` with their frames on `FILL_TASKS` tasks.
async fn fill(
    store: &Arc<RedisStore>,
    clock: &ManualClock,
    ids: &Arc<Vec<SessionId>>,
    range: std::ops::Range<usize>,
    frames: usize,
    deadline: Instant,
) -> Result<(), String> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let frame = Frame::new(
        Direction::ServerToClient,
        clock.now(),
        vec![b'a'; PAYLOAD_BYTES],
    );
    let workers: Vec<_> = (0..FILL_TASKS)
        .map(|_| {
            let (store, ids, next, frame) =
                (store.clone(), ids.clone(), next.clone(), frame.clone());
            let end = range.end;
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= end {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        return Err("filling took longer than its bound".to_owned());
                    }
                    let id = &ids[index];
                    let new = NewSession::new(id.clone())
                        .with_protocol_version("2025-06-18")
                        .with_tag("tenant", "bench");
                    store
                        .create(new)
                        .await
                        .map_err(|e| format!("create: {e}"))?;
                    for _ in 0..frames {
                        store
                            .append_frame(id, frame.clone())
                            .await
                            .map_err(|e| format!("append: {e}"))?;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.map_err(|e| format!("fill task: {e}"))??;
    }
    Ok(())
}

/// Walks every page and checks each session appears exactly once.
async fn list_all(store: &RedisStore, ids: &[SessionId], limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    let mut seen: HashSet<SessionId> = HashSet::with_capacity(ids.len());
    let mut repeated = 0usize;
    let mut pages = 0usize;
    let mut cursor: Option<Cursor> = None;
    // Enough pages for every session plus one empty tail per index shard.
    let max_pages = ids.len() / PAGE_SIZE + 1 + usize::from(RedisConfig::default().index_shards);
    loop {
        check(pages <= max_pages, || {
            format!("list did not end within {max_pages} pages")
        })?;
        check(started.elapsed() < limit, || {
            format!("list took longer than {limit:?}")
        })?;
        let page = store
            .list(cursor.as_ref(), PAGE_SIZE)
            .await
            .map_err(|e| format!("list page {pages}: {e}"))?;
        pages += 1;
        for session in page.items {
            if !seen.insert(session.id) {
                repeated += 1;
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let missed = ids.iter().filter(|id| !seen.contains(*id)).count();
    let elapsed = started.elapsed();
    println!(
        "list, page size {PAGE_SIZE}: {} sessions in {pages} pages, {:.2} s ({:.0} sessions/s); \
         missed {missed}, repeated {repeated}",
        seen.len(),
        elapsed.as_secs_f64(),
        seen.len() as f64 / elapsed.as_secs_f64()
    );
    check(
        missed == 0 && repeated == 0 && seen.len() == ids.len(),
        || {
            format!(
                "list saw {} sessions, missed {missed}, repeated {repeated}",
                seen.len()
            )
        },
    )
}

/// Checks a sample of the purged sessions is gone and of the rest is still there.
async fn survivors_remain(
    store: &RedisStore,
    purged: &[SessionId],
    kept: &[SessionId],
) -> Result<String, String> {
    let sample = |ids: &[SessionId]| -> Vec<SessionId> {
        let step = (ids.len() / MEMORY_SAMPLES).max(1);
        ids.iter()
            .step_by(step)
            .take(MEMORY_SAMPLES)
            .cloned()
            .collect()
    };
    let gone = store
        .get_many(&sample(purged))
        .await
        .map_err(|e| format!("get_many: {e}"))?;
    check(gone.iter().all(Option::is_none), || {
        "a purged session is still there".to_owned()
    })?;
    let there = store
        .get_many(&sample(kept))
        .await
        .map_err(|e| format!("get_many: {e}"))?;
    check(there.iter().all(Option::is_some), || {
        "an unexpired session was purged".to_owned()
    })?;
    Ok(format!(
        "{MEMORY_SAMPLES} purged sessions sampled are gone, {MEMORY_SAMPLES} unexpired ones remain"
    ))
}

async fn timed_count(store: &RedisStore) -> Result<u64, String> {
    let started = Instant::now();
    let counted = store.count().await.map_err(|e| format!("count: {e}"))?;
    println!(
        "count: {counted} in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(counted)
}

/// Bytes per session from `MEMORY USAGE` (sampled) and from `used_memory`.
async fn report_memory(
    admin: &Pool,
    ids: &[SessionId],
    frames_per_session: usize,
    used_before: u64,
    used_after: u64,
) -> Result<(), String> {
    let step = (ids.len() / MEMORY_SAMPLES).max(1);
    let mut meta = Vec::with_capacity(MEMORY_SAMPLES);
    let mut frames = Vec::with_capacity(MEMORY_SAMPLES);
    for id in ids.iter().step_by(step).take(MEMORY_SAMPLES) {
        meta.push(memory_usage(admin, &format!("scale:{{{id}}}:meta")).await?);
        if frames_per_session > 0 {
            frames.push(memory_usage(admin, &format!("scale:{{{id}}}:frames")).await?);
        }
    }
    let (meta_max, meta) = (meta.iter().copied().max().unwrap_or(0), median(&mut meta));
    let per_session = used_after.saturating_sub(used_before) as f64 / ids.len() as f64;
    if frames_per_session > 0 {
        let frames = median(&mut frames);
        println!(
            "MEMORY USAGE, median of {MEMORY_SAMPLES} sessions: meta hash {meta} B (max {meta_max} B); \
             frames stream {frames} B = {:.0} B per {PAYLOAD_BYTES} B frame",
            frames as f64 / frames_per_session as f64
        );
    } else {
        println!(
            "MEMORY USAGE, {MEMORY_SAMPLES} idle sessions: meta hash median {meta} B, max {meta_max} B \
             (target: at most 400 B)"
        );
    }
    println!(
        "used_memory: {:.1} MiB before, {:.1} MiB after = {per_session:.0} B per session \
         ({:.0} B beyond the {} B of frame payload)",
        mib(used_before),
        mib(used_after),
        per_session - (frames_per_session * PAYLOAD_BYTES) as f64,
        frames_per_session * PAYLOAD_BYTES
    );
    Ok(())
}

/// `MEMORY USAGE key SAMPLES 0`: every element counted, not an estimate.
async fn memory_usage(admin: &Pool, key: &str) -> Result<u64, String> {
    let reply = raw::single(
        admin,
        (
            "MEMORY",
            vec![text("USAGE"), text(key), text("SAMPLES"), number(0)],
        ),
    )
    .await?;
    integer(&reply)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| format!("MEMORY USAGE {key}: no such key"))
}

async fn used_memory(admin: &Pool) -> Result<u64, String> {
    let info = raw::single(admin, ("INFO", vec![text("memory")]))
        .await
        .map(reply_text)?
        .ok_or("INFO memory: not text")?;
    raw::info_field(&info, "used_memory").ok_or_else(|| "INFO memory: no used_memory".to_owned())
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
