//! Deleted stays deleted across a fleet of fallback stores on one real Redis
//! (`TEST_REDIS_URL`, set by `cargo xtask integration`): an id a fallback store
//! minted (outage-marked, answered Unavailable rather than NotFound while another
//! instance may still hold it in its journal) is NotFound on every instance as soon
//! as it is deleted, through its tombstone, not Unavailable for `outage_id_grace`.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use session_store::{Error, NewSession, SessionStore};
use support::stores::{self, fallback_store};

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_deleted_outage_marked_session_is_not_found_on_another_instance() {
    let url = std::env::var("TEST_REDIS_URL")
        .expect("set TEST_REDIS_URL to a redis:// URL (cargo xtask integration does)");
    let mut config = stores::config(&url, true, Duration::from_secs(1));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    config.redis.key_prefix = format!("deleted-{nanos:x}");
    let a = fallback_store(&config).await;
    let b = fallback_store(&config).await;

    let id = a.new_session_id().unwrap();
    a.create(NewSession::new(id.clone())).await.unwrap();
    assert_eq!(b.get(&id).await.unwrap().id, id, "B reads A's session");
    assert!(a.delete(&id).await.unwrap());
    match b.get(&id).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("B answered {other:?} for a session deleted through A"),
    }
    // An id nobody deleted and nobody wrote is still Unavailable within the grace
    // period: it may sit in a cut-off instance's journal.
    let unknown = a.new_session_id().unwrap();
    assert!(matches!(b.get(&unknown).await, Err(Error::Unavailable(_))));
}
