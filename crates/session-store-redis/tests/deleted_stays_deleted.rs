//! Deleted stays deleted, whatever reaches Redis after the delete: a create or
//! a fallback write-back whose caller gave up on it (timed out) can still be
//! executed later, after a delete sent on another connection. Each test drives
//! one such order exactly against the standalone server of
//! `cargo xtask integration`, setting the store's clock back to when the late
//! call was issued.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use session_store_core::{
    testing::suite_settings, Clock, Direction, Error, Frame, FrameId, ManualClock, NewSession,
    Session, SessionId, SessionStore, StoredFrame, Timestamp,
};
use session_store_redis::{AppendKey, KeyedFrame, RedisStore, SessionWriteBack, Topology};

async fn store() -> (RedisStore, ManualClock) {
    let clock = ManualClock::starting_now();
    let config = common::config(Topology::Standalone {
        url: common::standalone_url(),
    });
    (
        common::connect(config, clock.clone(), suite_settings()).await,
        clock,
    )
}

/// A session as a fallback store holds it after creating it in memory at
/// `created` (Redis never saw it), with one frame appended there.
fn journaled(store: &RedisStore, id: &SessionId, created: Timestamp) -> SessionWriteBack {
    let mut session: Session = NewSession::new(id.clone())
        .into_session(created, created.saturating_add(Duration::from_secs(3600)));
    session.frame_count = 1;
    let frame = Frame::new(Direction::ClientToServer, created, b"{}".to_vec());
    SessionWriteBack {
        session,
        base_revision: 1,
        updated: false,
        frames: vec![KeyedFrame {
            key: store.new_append_key(),
            frame: StoredFrame {
                id: FrameId::new(created.as_millis() + 1, 7),
                frame,
            },
        }],
        key: AppendKey::new(format!("wb{}", created.as_millis())).unwrap(),
    }
}

async fn assert_gone(store: &RedisStore, id: &SessionId) {
    assert!(
        matches!(store.get(id).await, Err(Error::NotFound(_))),
        "the deleted session `{id}` is back"
    );
    assert_eq!(store.count().await.unwrap(), 0, "no index entry is left");
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_write_back_reaching_redis_after_a_delete_of_the_session_it_carries_recreates_nothing() {
    // A fallback created the session in memory; its write-back was sent, timed
    // out, and stays on its way; then the session was deleted in memory and
    // that delete was written back while Redis did not hold the session yet.
    let (store, clock) = store().await;
    let id = SessionId::random().unwrap();
    let created = clock.now();
    let write_back = journaled(&store, &id, created);
    clock.advance(Duration::from_millis(600));
    assert!(!store.delete(&id).await.unwrap(), "Redis held nothing");
    assert!(store.deleted_recently(&id).await.unwrap());

    // The write-back arrives late.
    clock.set(created);
    match store.write_back(&write_back).await {
        Err(Error::NotFound(missing)) => assert_eq!(missing, id),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_gone(&store, &id).await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_create_issued_before_a_delete_and_arriving_after_it_creates_nothing() {
    let (store, clock) = store().await;
    // Redis never held it: the create timed out (the fallback journaled the
    // session and the journal's delete reached Redis first).
    let id = SessionId::random().unwrap();
    let issued = clock.now();
    clock.advance(Duration::from_millis(600));
    assert!(!store.delete(&id).await.unwrap());
    clock.set(issued);
    match store.create(NewSession::new(id.clone())).await {
        Err(Error::AlreadyExists(taken)) => assert_eq!(taken, id),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    clock.advance(Duration::from_millis(600));
    assert_gone(&store, &id).await;

    // Redis held an earlier incarnation, deleted between the create's issue
    // and its arrival.
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    clock.advance(Duration::from_millis(10));
    let issued = clock.now();
    clock.advance(Duration::from_millis(600));
    assert!(store.delete(&id).await.unwrap());
    clock.set(issued);
    assert!(matches!(
        store.create(NewSession::new(id.clone())).await,
        Err(Error::AlreadyExists(_))
    ));
    clock.advance(Duration::from_millis(600));
    assert_gone(&store, &id).await;

    // A create issued after the delete reuses the id, in the same millisecond too.
    let reused = store.create(NewSession::new(id.clone())).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap().created_at, reused.created_at);
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_write_back_merged_into_a_late_create_stays_deleted_when_it_arrives_again_after_the_delete(
) {
    // The create timed out (issued at `issued`) but reached Redis; the fallback
    // had journaled the session with its own, later `created`. The write-back
    // merged into the session the late create made, the session was deleted,
    // and then an earlier attempt of the same write-back arrived.
    let (store, clock) = store().await;
    let id = SessionId::random().unwrap();
    let issued = clock.now();
    store.create(NewSession::new(id.clone())).await.unwrap();
    clock.advance(Duration::from_millis(600));
    let write_back = journaled(&store, &id, clock.now());
    let first = clock.now();
    let merged = store.write_back(&write_back).await.unwrap();
    assert!(!merged.recreated, "merged into the late create's session");
    assert_eq!(store.get(&id).await.unwrap().created_at, issued);
    clock.advance(Duration::from_millis(600));
    assert!(store.delete(&id).await.unwrap());

    clock.set(first);
    assert!(matches!(
        store.write_back(&write_back).await,
        Err(Error::NotFound(_))
    ));
    clock.advance(Duration::from_millis(1_200));
    assert_gone(&store, &id).await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn replacing_an_older_incarnation_removes_only_what_is_older_however_late_it_arrives() {
    // Redis holds an incarnation; a fallback deleted it in memory and created
    // the id again (its replacement, created later); the write-back deletes
    // the older one, then writes the replacement.
    let (store, clock) = store().await;
    let id = SessionId::random().unwrap();
    let older = store.create(NewSession::new(id.clone())).await.unwrap();
    let old_copy = journaled(&store, &id, older.created_at);
    clock.advance(Duration::from_millis(600));
    let replacement = journaled(&store, &id, clock.now());
    clock.advance(Duration::from_millis(600));
    assert!(store
        .delete_replaced(&id, replacement.session.created_at)
        .await
        .unwrap());
    assert!(store.write_back(&replacement).await.unwrap().recreated);

    // A second delete of the older one (the first attempt's reply was lost and
    // it was sent again) arrives after the replacement: it stays.
    assert!(!store
        .delete_replaced(&id, replacement.session.created_at)
        .await
        .unwrap());
    let stored = store.get(&id).await.unwrap();
    assert_eq!(stored.created_at, replacement.session.created_at);

    // A late write-back or create of the older incarnation does not bring it back
    // once the replacement is deleted too.
    assert!(store.delete(&id).await.unwrap());
    assert!(matches!(
        store.write_back(&old_copy).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.write_back(&replacement).await,
        Err(Error::NotFound(_))
    ));
    clock.set(older.created_at);
    assert!(matches!(
        store.create(NewSession::new(id.clone())).await,
        Err(Error::AlreadyExists(_))
    ));
    clock.advance(Duration::from_millis(1_200));
    assert_gone(&store, &id).await;
}
