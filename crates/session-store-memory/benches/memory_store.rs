//! Latency of the hot calls of `MemoryStore` (get, touch, append of a 1 KiB frame,
//! read of 100 frames), at 1 task and at 64 concurrent tokio tasks on a 2-worker
//! multi-thread runtime. Run: `cargo bench -p session-store-memory --bench memory_store`.
//!
//! The 64-task runs report the wall time per operation across all tasks (so ops/s =
//! 1 / that time); each task works on its own session, as a proxy's clients do. The
//! store holds 10,000 other sessions, and each benchmarked session keeps at most
//! 1,000 frames, so appends measure the steady state of append-and-trim.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{
    future::Future,
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use session_store_core::{
    Direction, Frame, FrameId, NewSession, SessionId, SessionStore, StoreSettings, Timestamp,
};
use session_store_memory::MemoryStore;
use tokio::runtime::Runtime;

/// Sessions in the store besides the ones benchmarked, so lookups walk a realistic map.
const BACKGROUND_SESSIONS: usize = 10_000;
const TASKS: usize = 64;
const FRAME_BYTES: usize = 1024;
const READ_FRAMES: usize = 100;
/// Frames kept per session. Lower than the default 10,000 so 64 sessions reach the
/// trimming steady state (64 MiB) within the warm-up instead of measuring a store
/// that keeps growing towards 640 MiB.
const MAX_FRAMES_PER_SESSION: u64 = 1_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn frame() -> Frame {
    let mut payload =
        br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":""#.to_vec();
    payload.resize(FRAME_BYTES - 5, b'x');
    payload.extend_from_slice(br#""}]}}"#);
    Frame::new(
        Direction::ServerToClient,
        Timestamp::from_millis(0),
        payload,
    )
    .with_header("content-type", "application/json")
}

/// A store holding background sessions plus `TASKS` benchmarked ones, each of those
/// with `READ_FRAMES` frames.
fn populated_store(rt: &Runtime) -> (Arc<MemoryStore>, Vec<SessionId>) {
    let settings = StoreSettings {
        max_frames_per_session: MAX_FRAMES_PER_SESSION,
        ..StoreSettings::default()
    };
    let store = Arc::new(MemoryStore::new(settings).unwrap());
    let ids = rt.block_on(async {
        for n in 0..BACKGROUND_SESSIONS {
            let id = SessionId::new(format!("background-{n}")).unwrap();
            store.create(NewSession::new(id)).await.unwrap();
        }
        let mut ids = Vec::with_capacity(TASKS);
        for _ in 0..TASKS {
            let id = SessionId::random().unwrap();
            let new = NewSession::new(id.clone())
                .with_protocol_version("2025-06-18")
                .with_upstream_session_id("upstream-7f3a")
                .with_tag("tenant", "acme")
                .with_tag("route", "/mcp");
            store.create(new).await.unwrap();
            for _ in 0..READ_FRAMES {
                store.append_frame(&id, frame()).await.unwrap();
            }
            ids.push(id);
        }
        ids
    });
    (store, ids)
}

/// Runs `iters` operations spread over `TASKS` tasks and returns the wall time.
async fn run_concurrently<F, Fut>(
    iters: u64,
    store: &Arc<MemoryStore>,
    ids: &[SessionId],
    op: F,
) -> Duration
where
    F: Fn(Arc<MemoryStore>, SessionId) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let tasks = TASKS as u64;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let share = iters / tasks + u64::from(task < iters % tasks);
            let store = Arc::clone(store);
            let id = ids[usize::try_from(task).unwrap()].clone();
            tokio::spawn(async move {
                for _ in 0..share {
                    op(Arc::clone(&store), id.clone()).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    started.elapsed()
}

fn bench_operation<F, Fut>(c: &mut Criterion, rt: &Runtime, name: &str, op: F)
where
    F: Fn(Arc<MemoryStore>, SessionId) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let (store, ids) = populated_store(rt);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter("1_task"), |b| {
        let id = ids[0].clone();
        b.to_async(rt).iter(|| op(Arc::clone(&store), id.clone()));
    });
    group.bench_function(BenchmarkId::from_parameter("64_tasks"), |b| {
        b.to_async(rt)
            .iter_custom(|iters| run_concurrently(iters, &store, &ids, op));
    });
    group.finish();
}

fn memory_store(c: &mut Criterion) {
    let rt = runtime();
    bench_operation(c, &rt, "get", |store, id| async move {
        black_box(store.get(&id).await.unwrap());
    });
    bench_operation(c, &rt, "touch", |store, id| async move {
        store.touch(&id).await.unwrap();
    });
    bench_operation(c, &rt, "append_1KiB", move |store, id| {
        let frame = frame();
        async move {
            black_box(store.append_frame(&id, frame).await.unwrap());
        }
    });
    bench_operation(c, &rt, "read_100_frames", |store, id| async move {
        let frames = store
            .read_frames(&id, Some(FrameId::ZERO), READ_FRAMES)
            .await
            .unwrap();
        assert_eq!(frames.len(), READ_FRAMES);
        black_box(frames);
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = memory_store
}
criterion_main!(benches);
