//! A `FallbackStore` with `journal_dir` under a scripted load, run as a child
//! process by the fleet fault test (`tests/fallback_fleet.rs`), which kills it
//! with SIGKILL during a Redis outage and starts it again to drain its journal.
//!
//! Environment: `CHILD_REDIS_URL`, `CHILD_KEY_PREFIX`, `CHILD_JOURNAL_DIR`,
//! `CHILD_MODE` (`load` or `drain`). In `load` mode it prints `CREATED <id>` and
//! `ACK <id> <seq> <frame id>` for every acknowledged create and append (after
//! the store acknowledged it) until killed or 60 s pass. In `drain` mode it waits
//! until the replayed journal is written back and prints `DRAINED <ms>`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use session_store::{
    fallback_settings, redis_config, Backend, BreakerState, Clock, Direction, Error, FallbackStore,
    Frame, NewSession, RedisStore, RedisUrl, SessionStore, StorageConfig, SystemClock,
};

const TASKS: usize = 8;
const LOAD_LIMIT: Duration = Duration::from_secs(60);

fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| Error::config(format!("{name} is not set")))
}

async fn store() -> Result<FallbackStore, Error> {
    let mut config = StorageConfig {
        backend: Backend::Redis,
        ..StorageConfig::default()
    };
    config.redis.url = RedisUrl::new(env("CHILD_REDIS_URL")?);
    config.redis.pool_size = 2;
    config.redis.command_timeout = Duration::from_millis(500);
    config.redis.connect_timeout = Duration::from_secs(2);
    config.redis.reconnect_min_delay = Duration::from_millis(20);
    config.redis.reconnect_max_delay = Duration::from_millis(200);
    config.redis.key_prefix = env("CHILD_KEY_PREFIX")?;
    config.redis.breaker.failure_threshold = 3;
    config.redis.breaker.cool_down = Duration::from_millis(300);
    config.redis.breaker.journal_dir = Some(env("CHILD_JOURNAL_DIR")?.into());
    let redis = RedisStore::connect(
        redis_config(&config.redis),
        config.settings(),
        Arc::new(SystemClock),
    )
    .await?;
    FallbackStore::new(
        redis,
        config.settings(),
        fallback_settings(&config.redis.breaker),
        Arc::new(SystemClock),
    )
}

async fn load(store: Arc<FallbackStore>) {
    let deadline = Instant::now() + LOAD_LIMIT;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut current = None;
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    let Some(id) = current.clone() else {
                        if let Ok(id) = store.new_session_id() {
                            if store.create(NewSession::new(id.clone())).await.is_ok() {
                                println!("CREATED {id}");
                                current = Some(id);
                                seq = 0;
                            }
                        }
                        continue;
                    };
                    let payload = format!(r#"{{"task":{},"seq":{seq}}}"#, 1000 + task);
                    let frame = Frame::new(Direction::ServerToClient, SystemClock.now(), payload);
                    if let Ok(frame_id) = store.append_frame(&id, frame).await {
                        println!("ACK {id} {seq} {frame_id}");
                        seq += 1;
                        if seq >= 40 {
                            current = None;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let mode = env("CHILD_MODE")?;
    let store = Arc::new(store().await?);
    if mode == "drain" {
        let started = Instant::now();
        while started.elapsed() < LOAD_LIMIT {
            let stats = store.stats();
            if stats.state == BreakerState::Closed && stats.dirty_sessions == 0 {
                println!("DRAINED {}", started.elapsed().as_millis());
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        return Err(Error::unavailable(format!(
            "journal not drained within {LOAD_LIMIT:?}: {:?}",
            store.stats()
        )));
    }
    println!("READY");
    load(store).await;
    Ok(())
}
