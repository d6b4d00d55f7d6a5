//! A released stream lease goes from the store at once, and only while it is
//! still ours: against the memory store and a real redis-server (where the
//! key's own remaining life, `PTTL`, shows the key going, not just the value
//! turning not live).
//!
//! The Redis test needs `TEST_REDIS_URL` (`cargo xtask integration`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{process::Command, sync::Arc, time::Duration};

use mcp_proxy::{
    event_id::StreamId,
    lease::{lease_key, StreamLease, LEASE_TTL, RELEASED_TTL},
};
use session_store::{
    Clock, FrameId, KvCondition, KvKey, MemoryStore, SessionId, SessionStore, StorageConfig,
    StoreSettings, SystemClock,
};

const REDIS_URL_VAR: &str = "TEST_REDIS_URL";

/// What is left of the life of the stored record of `key` (`None`: gone).
type RemainingLife<'a> = &'a dyn Fn(&KvKey) -> Option<Duration>;

/// Takes a lease and releases it; takes one, lets another instance take the
/// stream over, and releases the stale one. Returns the remaining lives seen,
/// for the caller to print.
async fn release_removes_only_our_own_lease(
    store: &dyn SessionStore,
    remaining: RemainingLife<'_>,
) -> Vec<(&'static str, Option<Duration>)> {
    let session = SessionId::new(format!("release-{:08x}", rand::random::<u32>())).unwrap();
    let mut seen = Vec::new();

    let key = lease_key(&session, &StreamId::for_request(FrameId::new(1, 0))).unwrap();
    let ours = StreamLease::take_over(store, &key).await.unwrap().unwrap();
    let held = remaining(&key);
    seen.push(("held", held));
    assert!(
        held.is_some_and(|life| life > LEASE_TTL / 2),
        "a held lease lives about LEASE_TTL: {held:?}"
    );
    ours.release(store).await;
    let released = remaining(&key);
    seen.push(("released", released));
    assert!(
        released.is_none_or(|life| life <= RELEASED_TTL),
        "a released lease's key goes at once, not after LEASE_TTL: {released:?}"
    );

    let key = lease_key(&session, &StreamId::for_request(FrameId::new(2, 0))).unwrap();
    let stale = StreamLease::take_over(store, &key).await.unwrap().unwrap();
    // As if it lapsed, and another instance took the stream over.
    store.kv_delete(&key, KvCondition::Any).await.unwrap();
    let theirs = StreamLease::take_over(store, &key).await.unwrap().unwrap();
    stale.release(store).await;
    let other = remaining(&key);
    seen.push(("another instance's, after a stale release", other));
    assert!(
        other.is_some_and(|life| life > LEASE_TTL / 2),
        "a release leaves another holder's lease alone: {other:?}"
    );
    assert!(
        StreamLease::take_over(store, &key).await.unwrap().is_none(),
        "the stream stays held by the instance that took it over"
    );
    theirs.release(store).await;
    let released = remaining(&key);
    seen.push(("another instance's, released by it", released));
    assert!(
        released.is_none_or(|life| life <= RELEASED_TTL),
        "{released:?}"
    );
    seen
}

#[tokio::test]
async fn a_released_lease_goes_at_once_and_only_while_ours_in_memory() {
    let store = Arc::new(MemoryStore::new(StoreSettings::default()).unwrap());
    let reader = store.clone();
    let remaining = move |key: &KvKey| {
        let entry = futures::executor::block_on(reader.kv_get(key)).unwrap()?;
        let now = SystemClock.now().as_millis();
        Some(Duration::from_millis(
            entry.expires_at.as_millis().saturating_sub(now),
        ))
    };
    let seen = release_removes_only_our_own_lease(store.as_ref(), &remaining).await;
    println!("remaining lives (memory): {seen:?}");
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_released_lease_goes_at_once_and_only_while_ours_in_redis() {
    let url = std::env::var(REDIS_URL_VAR)
        .unwrap_or_else(|_| panic!("{REDIS_URL_VAR} is not set: run `cargo xtask integration`"));
    let prefix = format!("mcp-proxy-lease-release-{:08x}", rand::random::<u32>());
    let config = StorageConfig::from_toml_str(&format!(
        "[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"{url}\"\n\
         key_prefix = \"{prefix}\"\nfallback_to_memory = false\n"
    ))
    .unwrap();
    let store = session_store::build(&config).await.unwrap();
    // The key's own life in Redis (`PTTL`: -2 when there is no such key).
    let remaining = |key: &KvKey| {
        let output = Command::new("redis-cli")
            .args(["-u", &url, "PTTL", &format!("{prefix}:kv:{{{key}}}")])
            .output()
            .expect("redis-cli runs");
        assert!(output.status.success(), "{output:?}");
        let millis: i64 = String::from_utf8(output.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_ne!(millis, -1, "a kv key always has an expiry");
        u64::try_from(millis).ok().map(Duration::from_millis)
    };
    let seen = release_removes_only_our_own_lease(store.as_ref(), &remaining).await;
    println!("remaining lives (redis PTTL): {seen:?}");
}
