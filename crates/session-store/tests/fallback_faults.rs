//! Fault tests of `FallbackStore` against redis-server processes the test controls
//! (binary from TEST_REDIS_SERVER, else `redis-server` on PATH):
//! the server killed under load and restarted, a stalled connection through a
//! fault proxy, and the same kill with the fallback off. Each prints its figures.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use session_store::{
    BreakerState, Clock, Direction, Error, Frame, FrameId, NewSession, RedisStore, SessionId,
    SessionStore, SystemClock,
};
use support::{
    stores::{self, config, fallback_store, redis_store},
    Fault, FaultProxy, RedisProcess,
};

const TASKS: usize = 32;
/// Per task, whatever happens, so the load is bounded in count...
const MAX_OPS_PER_TASK: usize = 3_000;
/// ...and in time.
const MAX_LOAD_TIME: Duration = Duration::from_secs(60);
const PAUSE_BETWEEN_OPS: Duration = Duration::from_millis(5);
const ACTIVE_SESSIONS_PER_TASK: usize = 3;

const BEFORE: u8 = 0;
const OUTAGE: u8 = 1;
const AFTER: u8 = 2;

/// An append the store acknowledged.
#[derive(Clone, Debug)]
struct Ack {
    session: SessionId,
    seq: u64,
    frame_id: FrameId,
    phase: u8,
}

#[derive(Default)]
struct Record {
    attempted: [u64; 3],
    failures: Vec<(u8, &'static str, String)>,
    created: Vec<(SessionId, u8)>,
    appended: Vec<Ack>,
    slowest_failure: Duration,
}

/// 32 tasks creating sessions, appending frames and reading them back, each op
/// tagged with the phase it started in.
async fn run_load(
    store: Arc<dyn SessionStore>,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
) -> Record {
    let record = Arc::new(Mutex::new(Record::default()));
    let deadline = Instant::now() + MAX_LOAD_TIME;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (store, phase, stop, record) =
                (store.clone(), phase.clone(), stop.clone(), record.clone());
            tokio::spawn(async move {
                let mut active: VecDeque<(SessionId, u64)> = VecDeque::new();
                for i in 0..MAX_OPS_PER_TASK {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    let at = phase.load(Ordering::SeqCst);
                    let started = Instant::now();
                    let outcome: Result<(), (&'static str, Error)> =
                        if active.len() < ACTIVE_SESSIONS_PER_TASK || i % 40 == 0 {
                            let id = SessionId::random().unwrap();
                            match store.create(NewSession::new(id.clone())).await {
                                Ok(_) => {
                                    record.lock().created.push((id.clone(), at));
                                    active.push_back((id, 0));
                                    if active.len() > ACTIVE_SESSIONS_PER_TASK {
                                        active.pop_front();
                                    }
                                    Ok(())
                                }
                                Err(e) => Err(("create", e)),
                            }
                        } else {
                            let slot = i % active.len();
                            let (id, next) = &mut active[slot];
                            if i % 7 == 0 {
                                store.get(id).await.map(|_| ()).map_err(|e| ("get", e))
                            } else {
                                let seq = *next;
                                let payload = format!(r#"{{"task":{task},"seq":{seq}}}"#);
                                let frame = Frame::new(
                                    Direction::ClientToServer,
                                    SystemClock.now(),
                                    payload.into_bytes(),
                                );
                                match store.append_frame(id, frame).await {
                                    Ok(frame_id) => {
                                        *next += 1;
                                        record.lock().appended.push(Ack {
                                            session: id.clone(),
                                            seq,
                                            frame_id,
                                            phase: at,
                                        });
                                        Ok(())
                                    }
                                    Err(e) => Err(("append_frame", e)),
                                }
                            }
                        };
                    {
                        let mut record = record.lock();
                        record.attempted[usize::from(at)] += 1;
                        if let Err((op, error)) = outcome {
                            record.slowest_failure = record.slowest_failure.max(started.elapsed());
                            record.failures.push((at, op, error.to_string()));
                        }
                    }
                    tokio::time::sleep(PAUSE_BETWEEN_OPS).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(record)
        .map(Mutex::into_inner)
        .unwrap_or_default()
}

/// Checks Redis holds every session created and every frame acknowledged in the
/// given phases, in order, none twice. Returns (sessions, frames, id changes).
async fn verify_in_redis(
    redis: &RedisStore,
    record: &Record,
    phases: &[u8],
) -> (usize, usize, usize) {
    let created: Vec<_> = record
        .created
        .iter()
        .filter(|(_, at)| phases.contains(at))
        .collect();
    for (id, _) in &created {
        redis
            .get(id)
            .await
            .unwrap_or_else(|e| panic!("session {id} created during the outage: {e}"));
    }
    let mut wanted: BTreeMap<SessionId, Vec<&Ack>> = BTreeMap::new();
    for ack in record.appended.iter().filter(|a| phases.contains(&a.phase)) {
        wanted.entry(ack.session.clone()).or_default().push(ack);
    }
    let mut frames = 0;
    let mut moved = 0;
    for (id, acks) in &wanted {
        let stored = redis.read_frames(id, None, 10_000).await.unwrap();
        let mut by_seq: HashMap<u64, FrameId> = HashMap::new();
        let mut last_seq = None;
        for frame in &stored {
            let seq = stores::payload_seq(&frame.frame.payload);
            assert!(
                by_seq.insert(seq, frame.id).is_none(),
                "session {id}: frame {seq} stored twice"
            );
            assert!(
                last_seq < Some(seq),
                "session {id}: frame {seq} stored out of order"
            );
            last_seq = Some(seq);
        }
        for ack in acks {
            let stored_at = by_seq
                .get(&ack.seq)
                .unwrap_or_else(|| panic!("session {id}: acknowledged frame {} missing", ack.seq));
            frames += 1;
            if *stored_at != ack.frame_id {
                moved += 1;
            }
        }
    }
    (created.len(), frames, moved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask integration"]
async fn redis_killed_under_load_and_restarted_loses_nothing_with_fallback() {
    let mut redis = RedisProcess::start(&[]);
    let config = config(&redis.url(), true, Duration::from_secs(1));
    let store = fallback_store(&config).await;
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_load(store.clone(), phase.clone(), stop.clone()));

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    redis.kill();
    phase.store(OUTAGE, Ordering::SeqCst);
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        store.stats().state,
        BreakerState::Open,
        "{:?}",
        store.stats()
    );
    redis.restart();
    let restarted = Instant::now();
    let closed = support::wait_until(Duration::from_secs(30), || {
        let stats = store.stats();
        stats.state == BreakerState::Closed && stats.closed_total >= 1 && stats.dirty_sessions == 0
    })
    .await;
    let back_to_closed = restarted.elapsed();
    phase.store(AFTER, Ordering::SeqCst);
    assert!(closed, "breaker did not close: {:?}", store.stats());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let record = load.await.unwrap();
    let stats = store.stats();

    let direct = redis_store(&config).await;
    let (sessions, frames, moved) = verify_in_redis(&direct, &record, &[OUTAGE]).await;
    println!(
        "kill+restart with fallback: redis down for {:?}; ops attempted before/during/after: {:?}; \
         failures seen by callers: {}; sessions created during the outage found in redis: {sessions}; \
         frames acknowledged during the outage found in redis: {frames} ({moved} under a new id); \
         duplicates found: 0; written back: {} sessions ({} recreated), {} frames, \
         {} already stored, {} interleaved; redis back up -> breaker closed: {:?} \
         (write-back {:?})",
        restarted.duration_since(killed),
        record.attempted,
        record.failures.len(),
        stats.written_back_sessions_total,
        stats.recreated_sessions_total,
        stats.written_back_frames_total,
        stats.duplicate_frames_skipped_total,
        stats.interleaved_frames_total,
        back_to_closed,
        stats.last_write_back,
    );
    assert!(
        record.failures.is_empty(),
        "callers saw failures: {:?}",
        &record.failures[..record.failures.len().min(5)]
    );
    assert!(record.attempted[usize::from(OUTAGE)] > 0);
    assert!(stats.opened_total >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask integration"]
async fn without_fallback_a_killed_redis_fails_fast_with_unavailable() {
    let mut redis = RedisProcess::start(&[]);
    let command_timeout = Duration::from_secs(1);
    let config = config(&redis.url(), false, command_timeout);
    let store: Arc<dyn SessionStore> = Arc::new(redis_store(&config).await);
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_load(store.clone(), phase.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    phase.store(OUTAGE, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let record = load.await.unwrap();
    let outage_failures: Vec<_> = record
        .failures
        .iter()
        .filter(|(at, _, _)| *at == OUTAGE)
        .collect();
    println!(
        "kill without fallback: ops attempted during the outage: {}; failures: {}; \
         slowest failure: {:?} (command_timeout {command_timeout:?})",
        record.attempted[usize::from(OUTAGE)],
        outage_failures.len(),
        record.slowest_failure
    );
    assert_eq!(
        outage_failures.len() as u64,
        record.attempted[usize::from(OUTAGE)],
        "every operation during the outage fails"
    );
    assert!(outage_failures
        .iter()
        .all(|(_, _, message)| message.contains("unavailable")));
    // Generous: fail-fast answers in microseconds; a timeout would take 1s.
    assert!(record.slowest_failure < command_timeout + Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_stalled_connection_times_out_opens_the_breaker_and_heals() {
    let redis = RedisProcess::start(&[]);
    let proxy = FaultProxy::start(redis.address()).await;
    let command_timeout = Duration::from_millis(300);
    let config = config(&proxy.url(), true, command_timeout);
    let store = fallback_store(&config).await;

    // Latency alone is no failure.
    proxy.set(Fault::Latency(Duration::from_millis(20)));
    let mut ids = Vec::new();
    for _ in 0..6 {
        let id = SessionId::random().unwrap();
        store.create(NewSession::new(id.clone())).await.unwrap();
        ids.push(id);
    }
    let frame = |n: u64| {
        Frame::new(
            Direction::ServerToClient,
            SystemClock.now(),
            format!(r#"{{"task":0,"seq":{n}}}"#).into_bytes(),
        )
    };
    for id in &ids {
        store.append_frame(id, frame(0)).await.unwrap();
    }
    assert_eq!(store.stats().state, BreakerState::Closed);
    proxy.set(Fault::None);

    // Stalled: the first call on each session waits for its command timeout and
    // is then served from memory (later calls on a session already in memory stay
    // there, for ordering); after `failure_threshold` timeouts the breaker opens.
    proxy.set(Fault::Stall);
    let mut timings = Vec::new();
    let mut acked = Vec::new();
    for n in 1..=5u64 {
        for id in &ids {
            let started = Instant::now();
            let frame_id = store.append_frame(id, frame(n)).await.unwrap();
            timings.push(started.elapsed());
            acked.push((id.clone(), n, frame_id));
        }
    }
    let opened = support::wait_until(Duration::from_secs(10), || {
        store.stats().state == BreakerState::Open
    })
    .await;
    let stalled_stats = store.stats();
    assert!(opened, "{stalled_stats:?} {timings:?}");
    let slowest = timings.iter().max().copied().unwrap_or_default();
    let timed_out = timings
        .iter()
        .filter(|t| **t >= command_timeout / 2)
        .count();
    // Bounds are generous: never assert tight wall-clock timings.
    assert!(slowest >= command_timeout / 2, "{timings:?}");
    assert!(
        slowest < command_timeout + Duration::from_secs(2),
        "{timings:?}"
    );

    proxy.set(Fault::None);
    let healed = Instant::now();
    let closed = support::wait_until(Duration::from_secs(30), || {
        let stats = store.stats();
        stats.state == BreakerState::Closed && stats.dirty_sessions == 0
    })
    .await;
    let to_closed = healed.elapsed();
    assert!(closed, "breaker did not close: {:?}", store.stats());

    let stats = store.stats();
    let direct = redis_store(&config).await;
    let record = Record {
        appended: acked
            .iter()
            .map(|(id, seq, frame_id)| Ack {
                session: id.clone(),
                seq: *seq,
                frame_id: *frame_id,
                phase: OUTAGE,
            })
            .collect(),
        ..Record::default()
    };
    let (_, frames, moved) = verify_in_redis(&direct, &record, &[OUTAGE]).await;
    for id in &ids {
        assert_eq!(direct.count_frames(id).await.unwrap(), 6, "session {id}");
    }
    println!(
        "stall: command_timeout {command_timeout:?}; slowest call {slowest:?}; calls that waited \
         for a timeout: {timed_out} of {}; primary failures before the breaker opened: {}; \
         healed -> closed: {to_closed:?}; frames in redis: {frames} of {} acknowledged \
         ({moved} under a new id); appends that reached redis late and were not stored twice: \
         {}; failures seen by callers: 0",
        timings.len(),
        stalled_stats.primary_failures_total,
        acked.len(),
        stats.duplicate_frames_skipped_total,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask integration"]
async fn the_probe_fails_where_ping_passes_on_a_server_that_cannot_write() {
    let redis = RedisProcess::start(&[]);
    let config = config(&redis.url(), true, Duration::from_secs(1));
    let store = redis_store(&config).await;
    store.probe_writes().await.unwrap();
    // Out of memory for writes: PING and INFO still answer.
    support::command(
        redis.port,
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    )
    .unwrap();
    support::command(redis.port, &["CONFIG", "SET", "maxmemory", "1"]).unwrap();
    store.health().await.unwrap();
    let refused = store.probe_writes().await.unwrap_err();
    println!("probe on a server that cannot write: {refused}");
    support::command(redis.port, &["CONFIG", "SET", "maxmemory", "0"]).unwrap();
    store.probe_writes().await.unwrap();
}
