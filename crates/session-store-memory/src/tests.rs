//! Tests of what is specific to the memory backend: the session cap, the cost of
//! purge, and how ids spread over shards. The shared contract is checked by the
//! conformance suite in `tests/conformance.rs`.

use std::{sync::Arc, time::Duration};

use session_store_core::{
    testing::suite_settings, Clock, Error, ManualClock, NewSession, SessionId, SessionStore,
    Timestamp,
};

use crate::{shard::shard_index, MemoryStore};

fn store_with(clock: &ManualClock, max_sessions: Option<usize>) -> MemoryStore {
    let mut builder = MemoryStore::builder()
        .settings(suite_settings())
        .clock(Arc::new(clock.clone()));
    if let Some(max) = max_sessions {
        builder = builder.max_sessions(max);
    }
    builder.build().unwrap()
}

fn id(n: usize) -> SessionId {
    SessionId::new(format!("session-{n}")).unwrap()
}

async fn create(store: &MemoryStore, n: usize) {
    store.create(NewSession::new(id(n))).await.unwrap();
}

#[tokio::test]
async fn creating_beyond_max_sessions_is_capacity_exceeded_naming_the_setting() {
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let store = store_with(&clock, Some(3));
    for n in 0..3 {
        create(&store, n).await;
    }
    let err = store.create(NewSession::new(id(3))).await.unwrap_err();
    match err {
        Error::CapacityExceeded(message) => {
            assert!(message.contains("max_sessions"), "{message}");
            assert!(message.contains('3'), "{message}");
        }
        other => panic!("expected CapacityExceeded, got {other}"),
    }
    assert_eq!(store.count().await.unwrap(), 3);
}

#[tokio::test]
async fn deleted_and_expired_sessions_free_capacity() {
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let store = store_with(&clock, Some(2));
    create(&store, 0).await;
    create(&store, 1).await;
    assert!(store.delete(&id(0)).await.unwrap());
    create(&store, 2).await;

    // Both expire; the next create purges them instead of failing.
    clock.advance(suite_settings().ttl + Duration::from_millis(1));
    create(&store, 3).await;
    create(&store, 4).await;
    assert!(matches!(
        store.create(NewSession::new(id(5))).await,
        Err(Error::CapacityExceeded(_))
    ));
}

#[tokio::test]
async fn rejected_creates_do_not_leak_capacity() {
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let store = store_with(&clock, Some(1));
    create(&store, 0).await;
    for _ in 0..5 {
        assert!(matches!(
            store.create(NewSession::new(id(0))).await,
            Err(Error::AlreadyExists(_))
        ));
    }
    // Re-creating an expired id replaces it in place.
    clock.advance(suite_settings().ttl);
    create(&store, 0).await;
    assert_eq!(store.count().await.unwrap(), 1);
}

#[tokio::test]
async fn purge_inspects_only_the_expired_among_many_live() {
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let store = store_with(&clock, None);
    let ttl = suite_settings().ttl;
    for n in 0..10 {
        create(&store, n).await;
    }
    clock.advance(ttl / 2);
    for n in 10..10_010 {
        create(&store, n).await;
    }
    clock.advance(ttl / 2 + Duration::from_millis(1));

    let report = store.purge_expired_at(clock.now());
    assert_eq!(report.removed, 10);
    assert_eq!(report.inspected, 10);
    assert_eq!(store.count().await.unwrap(), 10_000);
    assert_eq!(store.purge_expired_at(clock.now()).inspected, 0);
}

#[tokio::test]
async fn purge_refiles_a_touched_session_once_and_removes_it_when_due() {
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let store = store_with(&clock, None);
    let ttl = suite_settings().ttl;
    create(&store, 0).await;
    clock.advance(ttl / 2);
    store.touch(&id(0)).await.unwrap();
    clock.advance(ttl / 2);

    let report = store.purge_expired_at(clock.now());
    assert_eq!((report.removed, report.inspected), (0, 1));
    assert_eq!(store.purge_expired_at(clock.now()).inspected, 0);

    clock.advance(ttl / 2);
    let report = store.purge_expired_at(clock.now());
    assert_eq!((report.removed, report.inspected), (1, 1));
    assert!(matches!(store.get(&id(0)).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn count_skips_expired_sessions_before_purge() {
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let store = store_with(&clock, None);
    let half_ttl = suite_settings().ttl / 2;
    create(&store, 0).await;
    create(&store, 1).await;
    clock.advance(half_ttl);
    store.touch(&id(0)).await.unwrap();
    create(&store, 2).await;
    clock.advance(half_ttl);
    // 1 has expired; 0 is due by its filed expiry but was touched; 2 is young.
    assert_eq!(store.count().await.unwrap(), 2);
    clock.advance(half_ttl);
    assert_eq!(store.count().await.unwrap(), 0);
}

#[test]
fn sequential_ids_spread_evenly_over_shards() {
    let shards = 64;
    let per_shard = 1_000;
    let mut counts = vec![0usize; shards];
    for n in 0..shards * per_shard {
        counts[shard_index(&id(n), shards - 1)] += 1;
    }
    let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
    assert!(
        min > per_shard * 8 / 10 && max < per_shard * 12 / 10,
        "{counts:?}"
    );
}

#[test]
fn random_ids_use_every_shard() {
    let shards = 32;
    let mut seen = vec![false; shards];
    for _ in 0..2_000 {
        seen[shard_index(&SessionId::random().unwrap(), shards - 1)] = true;
    }
    assert!(seen.iter().all(|s| *s));
}

#[test]
fn invalid_options_are_config_errors() {
    let cases = [
        MemoryStore::builder().shards(0).build(),
        MemoryStore::builder().shards(48).build(),
        MemoryStore::builder().shards(crate::MAX_SHARDS * 2).build(),
        MemoryStore::builder().max_sessions(0).build(),
        MemoryStore::new(session_store_core::StoreSettings {
            max_frames_per_session: 0,
            ..suite_settings()
        }),
    ];
    for case in cases {
        let err = case.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
}

#[tokio::test]
async fn health_reports_memory_and_the_session_count() {
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let store = store_with(&clock, None);
    create(&store, 0).await;
    let health = store.health().await.unwrap();
    assert_eq!(health.backend, "memory");
    assert!(
        health.detail.starts_with("1 live sessions"),
        "{}",
        health.detail
    );
}
