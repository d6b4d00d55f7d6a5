//! Idempotent appends, write-back of sessions served from memory, and the
//! replica-acknowledgement option, against the standalone server of
//! `cargo xtask integration`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use session_store_core::{
    testing::suite_settings, Clock, Direction, Error, Frame, FrameId, ManualClock, NewSession,
    SessionId, SessionStatus, SessionStore, StoredFrame,
};
use session_store_redis::{
    AppendKey, KeyedFrame, RedisStore, SessionWriteBack, Topology, REMEMBERED_APPEND_KEYS,
};

async fn store() -> (RedisStore, ManualClock) {
    let (store, clock, _) = store_with_prefix().await;
    (store, clock)
}

async fn store_with_prefix() -> (RedisStore, ManualClock, String) {
    let clock = ManualClock::starting_now();
    let config = common::config(Topology::Standalone {
        url: common::standalone_url(),
    });
    let prefix = config.key_prefix.clone();
    (
        common::connect(config, clock.clone(), suite_settings()).await,
        clock,
        prefix,
    )
}

/// Redis loses a session (a restart without persistence): its keys vanish and
/// no tombstone is left.
async fn lose(prefix: &str, id: &SessionId) {
    use fred::prelude::*;
    let client = Builder::from_config(Config::from_url(&common::standalone_url()).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let _: i64 = client
        .del(vec![
            format!("{prefix}:{{{id}}}:meta"),
            format!("{prefix}:{{{id}}}:frames"),
        ])
        .await
        .unwrap();
    client.quit().await.unwrap();
}

fn frame(clock: &ManualClock, body: &str) -> Frame {
    Frame::new(
        Direction::ServerToClient,
        clock.now(),
        body.as_bytes().to_vec(),
    )
}

async fn payloads(store: &RedisStore, id: &SessionId) -> Vec<(FrameId, String)> {
    store
        .read_frames(id, None, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.id, String::from_utf8(f.frame.payload).unwrap()))
        .collect()
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn append_sent_twice_with_one_key_is_stored_once_with_one_id() {
    let (store, clock) = store().await;
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    let key = store.new_append_key();
    let first = store
        .append_frame_with_key(&id, &frame(&clock, "a"), &key)
        .await
        .unwrap();
    clock.advance(Duration::from_millis(5));
    let again = store
        .append_frame_with_key(&id, &frame(&clock, "a"), &key)
        .await
        .unwrap();
    assert_eq!(first, again, "the repeat returns the stored id");
    assert_eq!(store.count_frames(&id).await.unwrap(), 1);
    assert_eq!(store.get(&id).await.unwrap().frame_count, 1);
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_batch_sent_twice_with_its_keys_is_stored_once_with_its_ids() {
    let (store, clock) = store().await;
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    store
        .append_frame(&id, frame(&clock, "before"))
        .await
        .unwrap();
    // Longer than the remembered keys: the repeat is told by the last frame's key.
    let count = REMEMBERED_APPEND_KEYS + 3;
    let frames: Vec<Frame> = (0..count)
        .map(|n| frame(&clock, &format!("batch {n}")))
        .collect();
    let keys: Vec<AppendKey> = frames.iter().map(|_| store.new_append_key()).collect();
    let first = store
        .append_frames_with_keys(&id, &frames, &keys)
        .await
        .unwrap();
    clock.advance(Duration::from_millis(5));
    let again = store
        .append_frames_with_keys(&id, &frames, &keys)
        .await
        .unwrap();
    println!("batch ids {first:?}");
    assert_eq!(first, again, "the repeat returns the stored ids");
    assert_eq!(store.count_frames(&id).await.unwrap(), 1 + count as u64);
    assert_eq!(store.get(&id).await.unwrap().frame_count, 1 + count as u64);
    let stored = payloads(&store, &id).await;
    assert_eq!(
        stored[1..].iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        first
    );
    // The keys of the batch's newest frames are remembered one by one (what a
    // fallback write-back of one of those frames looks up).
    let last = count - 1;
    let single = store
        .append_frame_with_key(&id, &frames[last], &keys[last])
        .await
        .unwrap();
    assert_eq!(single, first[last]);
    assert!(matches!(
        store
            .append_frames_with_keys(&id, &frames, &keys[1..])
            .await,
        Err(Error::InvalidInput(_))
    ));
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_key_is_remembered_across_the_documented_number_of_other_appends() {
    let (store, clock) = store().await;
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    let key = AppendKey::new("k0").unwrap();
    let first = store
        .append_frame_with_key(&id, &frame(&clock, "first"), &key)
        .await
        .unwrap();
    for n in 0..REMEMBERED_APPEND_KEYS - 1 {
        store
            .append_frame(&id, frame(&clock, &format!("other {n}")))
            .await
            .unwrap();
    }
    let repeat = store
        .append_frame_with_key(&id, &frame(&clock, "first"), &key)
        .await
        .unwrap();
    assert_eq!(repeat, first);
    let stored = REMEMBERED_APPEND_KEYS as u64;
    assert_eq!(store.count_frames(&id).await.unwrap(), stored);
}

fn keyed(key: &str, id: FrameId, clock: &ManualClock, body: &str) -> KeyedFrame {
    KeyedFrame {
        key: AppendKey::new(key).unwrap(),
        frame: StoredFrame {
            id,
            frame: frame(clock, body),
        },
    }
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn write_back_never_recreates_a_session_deleted_while_it_was_away() {
    let (store, clock) = store().await;
    let id = SessionId::random().unwrap();
    let mut session = store.create(NewSession::new(id.clone())).await.unwrap();
    // The pre-delete copy a fallback held in memory, with one local append.
    session.frame_count = 1;
    let now = clock.now().as_millis();
    let write_back = SessionWriteBack {
        session,
        base_revision: 1,
        updated: false,
        frames: vec![keyed("away", FrameId::new(now + 1, 0), &clock, "away")],
        key: store.new_append_key(),
    };
    assert!(store.delete(&id).await.unwrap());
    match store.write_back(&write_back).await {
        Err(Error::NotFound(missing)) => assert_eq!(missing, id),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(store.get(&id).await, Err(Error::NotFound(_))));
    assert_eq!(
        store.count().await.unwrap(),
        0,
        "no index entry was left behind"
    );

    // A session created anew on the id while Redis was away (another `created`)
    // is written back.
    clock.advance(Duration::from_millis(5));
    let mut anew = write_back.clone();
    anew.session.created_at = clock.now();
    anew.session.last_activity = clock.now();
    anew.frames.clear();
    anew.session.frame_count = 0;
    anew.key = store.new_append_key();
    assert!(store.write_back(&anew).await.unwrap().recreated);
    assert_eq!(store.get(&id).await.unwrap().created_at, clock.now());
    // And the id may be used by create after a delete.
    assert!(store.delete(&id).await.unwrap());
    store.create(NewSession::new(id.clone())).await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn write_back_recreates_a_lost_session_with_its_frame_ids() {
    let (store, clock, prefix) = store_with_prefix().await;
    let id = SessionId::random().unwrap();
    let mut session = store
        .create(NewSession::new(id.clone()).with_protocol_version("2025-06-18"))
        .await
        .unwrap();
    lose(&prefix, &id).await;
    let now = clock.now().as_millis();
    session.frame_count = 2;
    session.revision = 2;
    session.status = SessionStatus::Active;
    let write_back = SessionWriteBack {
        session: session.clone(),
        base_revision: 1,
        updated: true,
        frames: vec![
            keyed("a1", FrameId::new(now + 1, 0), &clock, "one"),
            keyed("a2", FrameId::new(now + 1, 1), &clock, "two"),
        ],
        key: store.new_append_key(),
    };
    let report = store.write_back(&write_back).await.unwrap();
    assert!(report.recreated);
    assert_eq!(report.frames_written, 2);
    assert_eq!(
        report.frame_ids,
        vec![FrameId::new(now + 1, 0), FrameId::new(now + 1, 1)]
    );
    let stored = store.get(&id).await.unwrap();
    assert_eq!(stored.revision, 2);
    assert_eq!(stored.status, SessionStatus::Active);
    assert_eq!(stored.frame_count, 2);
    assert_eq!(stored.created_at, session.created_at);
    assert_eq!(
        payloads(&store, &id).await,
        vec![
            (FrameId::new(now + 1, 0), "one".to_owned()),
            (FrameId::new(now + 1, 1), "two".to_owned())
        ]
    );

    // Sent again (its reply was lost): nothing changes.
    let again = store.write_back(&write_back).await.unwrap();
    assert!(!again.recreated);
    assert_eq!(again.frames_written, 0);
    assert_eq!(again.frames_already_stored, 2);
    assert_eq!(again.conflict_revision, None);
    assert_eq!(store.count_frames(&id).await.unwrap(), 2);
    assert_eq!(store.get(&id).await.unwrap().frame_count, 2);

    // Later appends sort after every id handed out.
    let next = store
        .append_frame(&id, frame(&clock, "three"))
        .await
        .unwrap();
    assert!(next > FrameId::new(now + 1, 1));
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn write_back_merges_frames_keeps_callers_ids_and_loses_updates_to_newer_revisions() {
    let (store, clock) = store().await;
    let id = SessionId::random().unwrap();
    let session = store.create(NewSession::new(id.clone())).await.unwrap();
    // This append reached Redis, but its reply was lost: the fallback kept it.
    let lost_key = AppendKey::new("lost").unwrap();
    let stored_at = store
        .append_frame_with_key(&id, &frame(&clock, "lost reply"), &lost_key)
        .await
        .unwrap();
    // Meanwhile another proxy instance updated the session.
    let mut theirs = store.get(&id).await.unwrap();
    theirs.status = SessionStatus::Closed;
    store.update(&theirs).await.unwrap();

    let mut ours = session.clone();
    ours.status = SessionStatus::Active;
    ours.revision = 2;
    let later = clock.now().as_millis() + 10;
    let write_back = SessionWriteBack {
        session: ours,
        base_revision: 1,
        updated: true,
        frames: vec![
            keyed("lost", FrameId::new(later, 0), &clock, "lost reply"),
            keyed("fresh", FrameId::new(later, 1), &clock, "fresh"),
        ],
        key: store.new_append_key(),
    };
    let report = store.write_back(&write_back).await.unwrap();
    assert_eq!(report.conflict_revision, Some(2), "redis's revision wins");
    assert_eq!(report.frames_already_stored, 1);
    assert_eq!(report.frames_written, 1);
    assert_eq!(
        report.frame_ids,
        vec![FrameId::new(later, 0), FrameId::new(later, 1)],
        "the lost-reply frame moves from {stored_at} to the id its caller was given"
    );
    assert!(payloads(&store, &id)
        .await
        .iter()
        .all(|(at, _)| *at != stored_at));
    let stored = store.get(&id).await.unwrap();
    assert_eq!(stored.status, SessionStatus::Closed);
    assert_eq!(stored.frame_count, 2);
    let texts: Vec<String> = payloads(&store, &id)
        .await
        .into_iter()
        .map(|p| p.1)
        .collect();
    assert_eq!(texts, vec!["lost reply", "fresh"]);
}

/// A local frame id as a fallback instance with `tag` mints it (the tag in the
/// low 24 bits of the sequence).
fn local_id(millis: u64, n: u64, tag: u64) -> FrameId {
    FrameId::new(millis, (n << 24) | tag)
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn write_back_keeps_ids_older_than_the_streams_newest_by_inserting_them_in_place() {
    let (store, clock) = store().await;
    let id = SessionId::random().unwrap();
    let session = store.create(NewSession::new(id.clone())).await.unwrap();
    clock.advance(Duration::from_millis(50));
    let theirs = store
        .append_frame(&id, frame(&clock, "theirs"))
        .await
        .unwrap();
    let mine = local_id(theirs.millis - 1, 1, 7);
    let write_back = SessionWriteBack {
        session,
        base_revision: 1,
        updated: false,
        frames: vec![keyed("mine", mine, &clock, "mine")],
        key: store.new_append_key(),
    };
    let report = store.write_back(&write_back).await.unwrap();
    assert_eq!(report.frames_interleaved, 1);
    assert_eq!(report.frame_ids, vec![mine], "the id the client was given");
    assert_eq!(
        payloads(&store, &id).await,
        vec![(mine, "mine".to_owned()), (theirs, "theirs".to_owned())],
        "in id order, the later frame kept its id too"
    );
    let next = store
        .append_frame(&id, frame(&clock, "next"))
        .await
        .unwrap();
    assert!(next > theirs);
    assert_eq!(store.count_frames(&id).await.unwrap(), 3);
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn write_back_sent_again_after_many_other_appends_stores_each_frame_once() {
    let clock = ManualClock::starting_now();
    let config = common::config(Topology::Standalone {
        url: common::standalone_url(),
    });
    let settings = session_store_core::StoreSettings {
        max_frames_per_session: 1_000,
        ..suite_settings()
    };
    let store = common::connect(config, clock.clone(), settings).await;
    let id = SessionId::random().unwrap();
    let session = store.create(NewSession::new(id.clone())).await.unwrap();
    let start = clock.now().as_millis() + 1;
    // 100 frames: four script calls; the append-key window keeps at most 64.
    let frames: Vec<_> = (0..100u64)
        .map(|n| {
            keyed(
                &format!("wb{n}"),
                local_id(start, n + 1, 9),
                &clock,
                &format!("f{n}"),
            )
        })
        .collect();
    let write_back = SessionWriteBack {
        session,
        base_revision: 1,
        updated: false,
        frames,
        key: store.new_append_key(),
    };
    let first = store.write_back(&write_back).await.unwrap();
    assert_eq!(first.frames_written, 100);
    // Another instance appends (trimming the remembered keys to 8), then the
    // write-back is sent again, as after a failure on its last chunk.
    clock.advance(Duration::from_millis(5));
    for n in 0..REMEMBERED_APPEND_KEYS {
        store
            .append_frame(&id, frame(&clock, &format!("other {n}")))
            .await
            .unwrap();
    }
    let again = store.write_back(&write_back).await.unwrap();
    assert_eq!(again.frames_written, 0, "{again:?}");
    assert_eq!(again.frames_already_stored, 100);
    assert_eq!(again.frame_ids, first.frame_ids);
    let stored = payloads(&store, &id).await;
    assert_eq!(stored.len(), 100 + REMEMBERED_APPEND_KEYS);
    assert_eq!(store.count_frames(&id).await.unwrap(), stored.len() as u64);
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn write_back_sent_again_after_its_frames_were_trimmed_does_not_store_them_again() {
    let (store, clock) = store().await;
    let max = suite_settings().max_frames_per_session;
    let id = SessionId::random().unwrap();
    let session = store.create(NewSession::new(id.clone())).await.unwrap();
    let start = clock.now().as_millis() + 1;
    let frames: Vec<_> = (0..max)
        .map(|n| {
            keyed(
                &format!("wb{n}"),
                local_id(start, n + 1, 9),
                &clock,
                &format!("f{n}"),
            )
        })
        .collect();
    let write_back = SessionWriteBack {
        session,
        base_revision: 1,
        updated: false,
        frames,
        key: store.new_append_key(),
    };
    store.write_back(&write_back).await.unwrap();
    clock.advance(Duration::from_millis(5));
    for n in 0..2 * max {
        store
            .append_frame(&id, frame(&clock, &format!("other {n}")))
            .await
            .unwrap();
    }
    let before = payloads(&store, &id).await;
    let again = store.write_back(&write_back).await.unwrap();
    assert_eq!(again.frames_written, 0, "{again:?}");
    assert_eq!(payloads(&store, &id).await, before);
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn waiting_for_missing_replicas_is_unavailable_naming_the_setting() {
    let clock = ManualClock::starting_now();
    let mut config = common::config(Topology::Standalone {
        url: common::standalone_url(),
    });
    config.wait_for_replicas = 1;
    config.replica_wait_timeout = Duration::from_millis(20);
    let store = common::connect(config, clock.clone(), suite_settings()).await;
    match store
        .create(NewSession::new(SessionId::random().unwrap()))
        .await
    {
        Err(Error::Unavailable(message)) => {
            assert!(message.contains("wait_for_replicas"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
