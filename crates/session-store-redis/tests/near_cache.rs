//! The near cache (`near_cache_entries`): a hot session is answered with no
//! command sent, and every change reaches it: another instance's writes
//! through Redis's invalidation pushes, this instance's writes at once, a lost
//! tracking connection and `FLUSHALL` by emptying it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use fred::{
    interfaces::ClientLike,
    prelude::{Builder, Client, Config},
    types::Value,
};
use session_store_core::{
    testing::suite_settings, Direction, Error, Frame, ManualClock, NewSession, SessionId,
    SessionStore,
};
use session_store_redis::{RedisConfig, RedisStore, Topology};

/// Two stores on one key prefix: `near` with the near cache, `plain` without
/// (another instance), and a raw client.
struct Pair {
    near: RedisStore,
    plain: RedisStore,
    raw: Client,
    clock: ManualClock,
}

async fn pair(url: &str) -> Pair {
    let plain_config = common::config(Topology::Standalone {
        url: url.to_owned(),
    });
    let near_config = RedisConfig {
        near_cache_entries: 100,
        ..plain_config.clone()
    };
    let clock = ManualClock::starting_now();
    let near = common::connect(near_config, clock.clone(), suite_settings()).await;
    let plain = common::connect(plain_config, clock.clone(), suite_settings()).await;
    let raw = Builder::from_config(Config::from_url(url).unwrap())
        .build()
        .unwrap();
    raw.init().await.unwrap();
    Pair {
        near,
        plain,
        raw,
        clock,
    }
}

async fn reading(store: &RedisStore, name: &str) -> f64 {
    let health = store.health().await.unwrap();
    health
        .readings
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no reading {name} in {:?}", health.readings))
}

/// Waits (at most 5 s) until `name` exceeds `before`.
async fn wait_for_reading_above(store: &RedisStore, name: &str, before: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while reading(store, name).await <= before {
        assert!(Instant::now() < deadline, "{name} stayed at {before}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `write` and waits until `near` has handled an invalidation after it.
async fn invalidating<F: std::future::Future>(near: &RedisStore, write: F) -> F::Output {
    let name = "session_store_redis_near_cache_invalidations_total";
    let before = reading(near, name).await;
    let written = write.await;
    wait_for_reading_above(near, name, before).await;
    written
}

/// `calls=` of `EVALSHA` in `INFO commandstats`.
async fn evalsha_calls(raw: &Client) -> i64 {
    let info =
        match common::raw_command(raw, "INFO", vec![Value::String("commandstats".into())]).await {
            Value::String(s) => s.to_string(),
            other => panic!("INFO: {other:?}"),
        };
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:"))
        .and_then(|stats| stats.split(',').find_map(|kv| kv.strip_prefix("calls=")))
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

fn frame(clock: &ManualClock) -> Frame {
    use session_store_core::Clock;
    Frame::new(
        Direction::ClientToServer,
        clock.now(),
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}".to_vec(),
    )
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_hot_session_is_answered_from_memory_with_no_command_sent() {
    let server = common::DedicatedRedis::start();
    let p = pair(&format!("redis://127.0.0.1:{}", server.port)).await;
    let id = SessionId::random().unwrap();
    let created = p.near.create(NewSession::new(id.clone())).await.unwrap();

    let first = p.near.get(&id).await.unwrap();
    assert_eq!(first, created);
    let before = evalsha_calls(&p.raw).await;
    for _ in 0..10 {
        assert_eq!(p.near.get(&id).await.unwrap(), created);
    }
    assert_eq!(
        evalsha_calls(&p.raw).await,
        before,
        "ten gets of a cached session sent no command"
    );
    assert_eq!(
        reading(&p.near, "session_store_redis_near_cache_hits_total").await,
        10.0
    );
    assert_eq!(
        reading(&p.near, "session_store_redis_near_cache_entries").await,
        1.0
    );

    // The store without the cache reads Redis every time and reports no cache.
    let before = evalsha_calls(&p.raw).await;
    p.plain.get(&id).await.unwrap();
    assert_eq!(evalsha_calls(&p.raw).await, before + 1);
    let health = p.plain.health().await.unwrap();
    assert!(!health
        .readings
        .iter()
        .any(|(n, _)| n.contains("near_cache")));
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn every_write_by_another_instance_reaches_the_cached_session() {
    let p = pair(&common::standalone_url()).await;
    let id = SessionId::random().unwrap();
    p.plain.create(NewSession::new(id.clone())).await.unwrap();

    // update
    let cached = p.near.get(&id).await.unwrap();
    let mut changed = cached.clone();
    changed.tags.insert("k".into(), "v".into());
    let updated = invalidating(&p.near, p.plain.update(&changed))
        .await
        .unwrap();
    assert_eq!(p.near.get(&id).await.unwrap(), updated);

    // touch (a later expiry)
    p.clock.advance(Duration::from_secs(2));
    invalidating(&p.near, p.plain.touch(&id)).await.unwrap();
    let touched = p.near.get(&id).await.unwrap();
    assert!(touched.expires_at > updated.expires_at);
    assert_eq!(touched, p.plain.get(&id).await.unwrap());

    // append (the frame count)
    invalidating(&p.near, p.plain.append_frame(&id, frame(&p.clock)))
        .await
        .unwrap();
    assert_eq!(p.near.get(&id).await.unwrap().frame_count, 1);

    // delete
    assert!(invalidating(&p.near, p.plain.delete(&id)).await.unwrap());
    assert!(matches!(p.near.get(&id).await, Err(Error::NotFound(_))));
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn this_instance_reads_its_own_writes_at_once() {
    let p = pair(&common::standalone_url()).await;
    let id = SessionId::random().unwrap();
    p.near.create(NewSession::new(id.clone())).await.unwrap();

    let cached = p.near.get(&id).await.unwrap();
    let mut changed = cached.clone();
    changed.tags.insert("k".into(), "v".into());
    let updated = p.near.update(&changed).await.unwrap();
    assert_eq!(p.near.get(&id).await.unwrap(), updated);

    p.near.append_frame(&id, frame(&p.clock)).await.unwrap();
    assert_eq!(p.near.get(&id).await.unwrap().frame_count, 1);
    p.near
        .append_frames(&id, vec![frame(&p.clock), frame(&p.clock)])
        .await
        .unwrap();
    assert_eq!(p.near.get(&id).await.unwrap().frame_count, 3);

    let before = p.near.get(&id).await.unwrap().expires_at;
    p.clock.advance(Duration::from_secs(2));
    p.near.touch(&id).await.unwrap();
    assert!(p.near.get(&id).await.unwrap().expires_at > before);

    p.near.delete_frames(&id).await.unwrap();
    assert_eq!(
        p.near.get(&id).await.unwrap(),
        p.plain.get(&id).await.unwrap()
    );

    assert!(p.near.delete(&id).await.unwrap());
    assert!(matches!(p.near.get(&id).await, Err(Error::NotFound(_))));
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_cached_session_past_its_expiry_is_not_served() {
    let p = pair(&common::standalone_url()).await;
    let id = SessionId::random().unwrap();
    p.near.create(NewSession::new(id.clone())).await.unwrap();
    p.near.get(&id).await.unwrap();
    p.clock
        .advance(suite_settings().ttl + Duration::from_millis(1));
    assert!(matches!(p.near.get(&id).await, Err(Error::NotFound(_))));
}

/// The id of the connection with `CLIENT TRACKING` on (flag `t`).
async fn tracking_connection(raw: &Client) -> Option<String> {
    let list = match common::raw_command(raw, "CLIENT", vec![Value::String("LIST".into())]).await {
        Value::String(s) => s.to_string(),
        other => panic!("CLIENT LIST: {other:?}"),
    };
    list.lines().find_map(|line| {
        let field = |name: &str| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(name))
                .map(str::to_owned)
        };
        let flags = field("flags=")?;
        flags.contains('t').then(|| field("id=")).flatten()
    })
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_lost_tracking_connection_empties_the_cache_and_tracking_resumes() {
    let server = common::DedicatedRedis::start();
    let p = pair(&format!("redis://127.0.0.1:{}", server.port)).await;
    let id = SessionId::random().unwrap();
    p.plain.create(NewSession::new(id.clone())).await.unwrap();
    p.near.get(&id).await.unwrap();
    let resets = "session_store_redis_near_cache_resets_total";
    let before = reading(&p.near, resets).await;

    let killed = tracking_connection(&p.raw)
        .await
        .expect("a tracking connection");
    common::raw_command(
        &p.raw,
        "CLIENT",
        vec![
            Value::String("KILL".into()),
            Value::String("ID".into()),
            Value::String(killed.clone().into()),
        ],
    )
    .await;
    // Changed while the connection is gone: no invalidation can reach it.
    let mut changed = p.plain.get(&id).await.unwrap();
    changed.tags.insert("k".into(), "v".into());
    let updated = p.plain.update(&changed).await.unwrap();
    wait_for_reading_above(&p.near, resets, before).await;
    assert_eq!(p.near.get(&id).await.unwrap(), updated);

    // Tracking comes back on the new connection: gets are cached again, and
    // another instance's delete reaches the cache.
    let deadline = Instant::now() + Duration::from_secs(5);
    let hits = "session_store_redis_near_cache_hits_total";
    loop {
        let before = reading(&p.near, hits).await;
        p.near.get(&id).await.unwrap();
        if reading(&p.near, hits).await > before {
            break;
        }
        assert!(Instant::now() < deadline, "the cache never served again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tracking = tracking_connection(&p.raw).await.expect("tracking again");
    assert_ne!(tracking, killed);
    assert!(invalidating(&p.near, p.plain.delete(&id)).await.unwrap());
    assert!(matches!(p.near.get(&id).await, Err(Error::NotFound(_))));
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn after_flushall_a_cached_session_is_served_at_most_near_cache_max_age() {
    let server = common::DedicatedRedis::start();
    let url = format!("redis://127.0.0.1:{}", server.port);
    let max_age = Duration::from_millis(300);
    let config = RedisConfig {
        near_cache_entries: 100,
        near_cache_max_age: max_age,
        ..common::config(Topology::Standalone { url: url.clone() })
    };
    let store = common::connect(config, ManualClock::starting_now(), suite_settings()).await;
    let raw = Builder::from_config(Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    raw.init().await.unwrap();
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    store.get(&id).await.unwrap();
    // The entry was filled before this instant.
    let read_by = Instant::now();
    common::raw_command(&raw, "FLUSHALL", Vec::new()).await;
    // fred 10.1 drops Redis's null invalidation for a flush: the entry may be
    // served until it is max_age old, never after.
    loop {
        let asked = Instant::now();
        match store.get(&id).await {
            Err(Error::NotFound(_)) => break,
            Ok(_) => assert!(
                asked - read_by < max_age,
                "served when asked {:?} after it was read",
                asked - read_by
            ),
            Err(other) => panic!("{other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn the_cache_holds_at_most_near_cache_entries_sessions() {
    let url = common::standalone_url();
    let config = RedisConfig {
        near_cache_entries: 3,
        ..common::config(Topology::Standalone { url })
    };
    let clock = ManualClock::starting_now();
    let store = common::connect(config, clock, suite_settings()).await;
    for _ in 0..10 {
        let id = SessionId::random().unwrap();
        store.create(NewSession::new(id.clone())).await.unwrap();
        store.get(&id).await.unwrap();
    }
    assert_eq!(
        reading(&store, "session_store_redis_near_cache_entries").await,
        3.0
    );
}
