//! Redis down when the store is built: with `fallback_to_memory` the store
//! starts degraded (breaker open), serves sessions from memory, connects once
//! redis-server answers on the port and writes them back; without it, `build`
//! fails naming the address. The servers are redis-server processes of the
//! test's own (binary from TEST_REDIS_SERVER, else `redis-server` on PATH).
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use session_store::{build, Clock, Direction, Error, Frame, NewSession, SessionStore, SystemClock};
use support::{
    stores::{config, redis_store},
    RedisProcess,
};

/// Longest wait for the write-back after redis-server starts.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask integration"]
async fn with_fallback_redis_down_at_start_serves_from_memory_and_writes_back_once_it_answers() {
    // A free port with nothing listening on it: started, then killed.
    let mut redis = RedisProcess::start(&[]);
    redis.kill();
    let config = config(&redis.url(), true, Duration::from_secs(1));

    let store = build(&config)
        .await
        .expect("with fallback_to_memory, redis down at start is an outage, not a failure");
    let health = store.health().await.unwrap();
    println!("health with redis down at start: {health:?}");
    assert!(health.degraded, "{health:?}");
    assert_eq!(health.backend, "memory-fallback", "{health:?}");
    assert!(health.detail.contains("circuit breaker open"), "{health:?}");

    let mut sessions = Vec::new();
    for n in 0..3u8 {
        let id = store.new_session_id().unwrap();
        store.create(NewSession::new(id.clone())).await.unwrap();
        for seq in 0..2u8 {
            let frame = Frame::new(
                Direction::ServerToClient,
                SystemClock.now(),
                format!("{{\"n\":{n},\"seq\":{seq}}}"),
            );
            store.append_frame(&id, frame).await.unwrap();
        }
        assert_eq!(store.read_frames(&id, None, 10).await.unwrap().len(), 2);
        sessions.push(id);
    }
    assert!(
        matches!(store.count().await, Err(Error::Unavailable(_))),
        "counting needs redis"
    );

    redis.restart();
    let restarted = Instant::now();
    let health = loop {
        let health = store.health().await.unwrap();
        if !health.degraded || restarted.elapsed() > RECOVERY_LIMIT {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let written_back = |name: &str| {
        health
            .readings
            .iter()
            .find(|(reading, _)| *reading == name)
            .map(|(_, value)| *value)
    };
    println!(
        "redis started {:?} before the store was healthy again; sessions written back: {:?}, \
         frames written back: {:?}; health: {} ({})",
        restarted.elapsed(),
        written_back("session_store_write_back_sessions_total"),
        written_back("session_store_write_back_frames_total"),
        health.backend,
        health.detail,
    );
    assert!(!health.degraded, "not written back: {health:?}");
    assert_eq!(health.backend, "redis", "{health:?}");
    assert_eq!(
        written_back("session_store_write_back_sessions_total"),
        Some(3.0)
    );
    assert_eq!(store.count().await.unwrap(), 3);

    let direct = redis_store(&config).await;
    for (n, id) in sessions.iter().enumerate() {
        direct.get(id).await.unwrap();
        let frames = direct.read_frames(id, None, 10).await.unwrap();
        let payloads: Vec<String> = frames
            .iter()
            .map(|f| String::from_utf8_lossy(&f.frame.payload).into_owned())
            .collect();
        assert_eq!(
            payloads,
            [
                format!("{{\"n\":{n},\"seq\":0}}"),
                format!("{{\"n\":{n},\"seq\":1}}")
            ],
            "session {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask integration"]
async fn without_fallback_redis_down_at_start_fails_the_build_naming_the_address() {
    let mut redis = RedisProcess::start(&[]);
    redis.kill();
    let config = config(&redis.url(), false, Duration::from_secs(1));
    let error = build(&config).await.unwrap_err();
    println!("build with redis down and no fallback: {error}");
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains(&format!(
            "cannot connect to redis at 127.0.0.1:{}",
            redis.port
        )),
        "{text}"
    );
}

/// A wrong password is not an outage: even with `fallback_to_memory` the build
/// fails (a fallback serving from memory would wait for Redis forever), naming
/// the keys to fix and never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask integration"]
async fn with_fallback_a_wrong_password_fails_the_build_naming_the_credential_keys() {
    let redis = RedisProcess::start(&["--requirepass", "the-right-one"]);
    for (what, url) in [
        (
            "wrong password",
            format!("redis://:not-the-right-one@127.0.0.1:{}", redis.port),
        ),
        ("no password", redis.url()),
    ] {
        let config = config(&url, true, Duration::from_secs(1));
        let error = build(&config).await.unwrap_err();
        println!("build with {what}: {error}");
        assert!(matches!(error, Error::Config(_)), "{what}: {error:?}");
        let text = error.to_string();
        assert!(text.contains("redis.password"), "{what}: {text}");
        assert!(!text.contains("not-the-right-one"), "{what}: {text}");
    }
}
