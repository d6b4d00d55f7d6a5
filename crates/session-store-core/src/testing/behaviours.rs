//! One async function per behaviour of the [`SessionStore`] contract. Each name says
//! the contract line it checks, in the words of the trait docs.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
    time::Duration,
};

pub use super::batch::*;
pub use super::budget::*;
pub use super::kv::*;
use super::{suite_settings, StoreFactory};
use crate::{
    Clock, Cursor, Direction, Error, Frame, FrameId, ManualClock, NewSession, SessionId,
    SessionStatus, SessionStore, StoreSettings, MAX_PAGE_SIZE,
};

/// A fresh store with the suite's settings and a manual clock standing at the real
/// current time (so server-side expiry of a real backend never fires mid-test).
pub struct Fixture {
    pub store: Arc<dyn SessionStore>,
    pub clock: ManualClock,
    pub settings: StoreSettings,
}

pub async fn fixture(factory: &dyn StoreFactory) -> Fixture {
    fixture_with(factory, suite_settings()).await
}

pub async fn fixture_with(factory: &dyn StoreFactory, settings: StoreSettings) -> Fixture {
    let clock = ManualClock::starting_now();
    let store = factory.build(clock.clone(), settings.clone()).await;
    Fixture {
        store,
        clock,
        settings,
    }
}

pub fn new_id() -> SessionId {
    SessionId::random().expect("OS random source")
}

pub fn sample_session(id: SessionId) -> NewSession {
    let mut new = NewSession::new(id)
        .with_upstream_session_id("upstream-7")
        .with_protocol_version("2025-06-18")
        .with_tag("tenant", "acme");
    new.client_info = Some(serde_json::json!({"name": "test-client", "version": "1.0"}));
    new.server_info =
        Some(serde_json::json!({"name": "test-server", "capabilities": {"tools": {}}}));
    new
}

fn frame(fx: &Fixture, body: &str) -> Frame {
    Frame::new(
        Direction::ClientToServer,
        fx.clock.now(),
        body.as_bytes().to_vec(),
    )
}

/// Creates a sample session with a fresh id.
pub async fn create(fx: &Fixture) -> SessionId {
    let id = new_id();
    fx.store
        .create(sample_session(id.clone()))
        .await
        .expect("create");
    id
}

fn assert_not_found<T: std::fmt::Debug>(result: crate::Result<T>, what: &str) {
    match result {
        Err(Error::NotFound(_)) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

fn just_past_ttl(fx: &Fixture) -> Duration {
    fx.settings.ttl + Duration::from_millis(1)
}

// ---------------------------------------------------------------- create

pub async fn create_returns_revision_one_and_times(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let now = fx.clock.now();
    let id = new_id();
    let session = fx.store.create(sample_session(id.clone())).await.unwrap();
    assert_eq!(session.id, id);
    assert_eq!(session.revision, 1);
    assert_eq!(session.frame_count, 0);
    assert_eq!(session.created_at, now);
    assert_eq!(session.last_activity, now);
    assert_eq!(session.expires_at, now.saturating_add(fx.settings.ttl));
}

pub async fn create_on_existing_id_is_already_exists_and_keeps_the_original(
    factory: &dyn StoreFactory,
) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let mut intruder = NewSession::new(id.clone()).with_upstream_session_id("hijack");
    intruder.status = SessionStatus::Closed;
    match fx.store.create(intruder).await {
        Err(Error::AlreadyExists(existing)) => assert_eq!(existing, id),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let stored = fx.store.get(&id).await.unwrap();
    assert_eq!(stored.upstream_session_id.as_deref(), Some("upstream-7"));
    assert_eq!(stored.status, SessionStatus::Initializing);
}

pub async fn create_reuses_the_id_of_an_expired_session(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    fx.store.append_frame(&id, frame(&fx, "old")).await.unwrap();
    fx.clock.advance(just_past_ttl(&fx));
    let again = fx.store.create(NewSession::new(id.clone())).await.unwrap();
    assert_eq!(again.revision, 1);
    assert_eq!(again.frame_count, 0);
    assert_eq!(
        fx.store.count_frames(&id).await.unwrap(),
        0,
        "old frames must not leak into the new session"
    );
}

pub async fn create_rejects_oversized_session(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = new_id();
    let huge = "x".repeat(fx.settings.max_session_bytes + 1);
    let oversized = NewSession::new(id.clone()).with_tag("blob", huge);
    match fx.store.create(oversized).await {
        Err(Error::InvalidInput(message)) => {
            assert!(message.contains("max_session_bytes"), "{message}")
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert_not_found(
        fx.store.get(&id).await,
        "oversized session must not be stored",
    );
}

// ---------------------------------------------------------------- get

pub async fn get_returns_what_create_stored(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = new_id();
    let created = fx.store.create(sample_session(id.clone())).await.unwrap();
    let fetched = fx.store.get(&id).await.unwrap();
    assert_eq!(fetched, created);
    assert_eq!(fetched.client_info, sample_session(id).client_info);
}

pub async fn get_missing_is_not_found(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    assert_not_found(fx.store.get(&new_id()).await, "get of a never-created id");
}

pub async fn get_many_keeps_order_and_marks_missing(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let a = create(&fx).await;
    let b = create(&fx).await;
    let missing = new_id();
    let got = fx
        .store
        .get_many(&[b.clone(), missing, a.clone()])
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].as_ref().map(|s| &s.id), Some(&b));
    assert!(got[1].is_none());
    assert_eq!(got[2].as_ref().map(|s| &s.id), Some(&a));
    assert!(fx.store.get_many(&[]).await.unwrap().is_empty());
}

// ---------------------------------------------------------------- update

pub async fn update_bumps_revision_and_keeps_store_owned_fields(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    fx.store.append_frame(&id, frame(&fx, "one")).await.unwrap();
    let mut session = fx.store.get(&id).await.unwrap();
    fx.clock.advance(Duration::from_secs(5));
    session.status = SessionStatus::Active;
    session.server_info = Some(serde_json::json!({"name": "upstream", "version": "2"}));
    session.frame_count = 999;
    session.created_at = crate::Timestamp::ZERO;
    let updated = fx.store.update(&session).await.unwrap();
    assert_eq!(updated.revision, 2);
    assert_eq!(updated.status, SessionStatus::Active);
    assert_eq!(updated.frame_count, 1, "frame_count is the store's");
    assert_ne!(
        updated.created_at,
        crate::Timestamp::ZERO,
        "created_at is the store's"
    );
    assert_eq!(updated.last_activity, fx.clock.now());
    assert_eq!(
        updated.expires_at,
        fx.clock.now().saturating_add(fx.settings.ttl)
    );
    assert_eq!(fx.store.get(&id).await.unwrap(), updated);
}

pub async fn update_with_stale_revision_conflicts(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let first = fx.store.get(&id).await.unwrap();
    let mut winner = first.clone();
    winner.status = SessionStatus::Active;
    fx.store.update(&winner).await.unwrap();
    let mut stale = first;
    stale.status = SessionStatus::Closed;
    match fx.store.update(&stale).await {
        Err(Error::Conflict {
            id: conflicted,
            expected,
            actual,
        }) => {
            assert_eq!(conflicted, id);
            assert_eq!(expected, 1);
            assert_eq!(actual, 2);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(
        fx.store.get(&id).await.unwrap().status,
        SessionStatus::Active
    );
}

pub async fn update_of_deleted_session_is_not_found_and_does_not_revive(
    factory: &dyn StoreFactory,
) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let session = fx.store.get(&id).await.unwrap();
    assert!(fx.store.delete(&id).await.unwrap());
    assert_not_found(fx.store.update(&session).await, "update after delete");
    assert_not_found(fx.store.get(&id).await, "a failed update must not revive");

    let expiring = create(&fx).await;
    let session = fx.store.get(&expiring).await.unwrap();
    fx.clock.advance(just_past_ttl(&fx));
    assert_not_found(fx.store.update(&session).await, "update after expiry");
    assert_not_found(
        fx.store.get(&expiring).await,
        "a failed update must not revive",
    );
}

pub async fn concurrent_updates_with_same_revision_have_exactly_one_winner(
    factory: &dyn StoreFactory,
) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let base = fx.store.get(&id).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let store = fx.store.clone();
            let mut mine = base.clone();
            mine.tags.insert("writer".into(), n.to_string());
            tokio::spawn(async move { store.update(&mine).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(session) => {
                winners += 1;
                assert_eq!(session.revision, 2);
            }
            Err(Error::Conflict { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(winners, 1, "exactly one update with revision 1 may win");
    assert_eq!(fx.store.get(&id).await.unwrap().revision, 2);
}

// ---------------------------------------------------------------- touch and expiry

pub async fn touch_slides_ttl(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let half = fx.settings.ttl / 2;
    for _ in 0..4 {
        fx.clock.advance(half);
        fx.store.touch(&id).await.unwrap();
    }
    let session = fx.store.get(&id).await.unwrap();
    assert_eq!(session.last_activity, fx.clock.now());
    assert_eq!(
        session.expires_at,
        fx.clock.now().saturating_add(fx.settings.ttl)
    );
    fx.clock.advance(fx.settings.ttl - Duration::from_millis(1));
    fx.store
        .get(&id)
        .await
        .expect("alive until ttl after the last touch");
}

pub async fn touch_of_missing_or_expired_is_not_found_and_does_not_revive(
    factory: &dyn StoreFactory,
) {
    let fx = fixture(factory).await;
    assert_not_found(
        fx.store.touch(&new_id()).await,
        "touch of a never-created id",
    );
    let id = create(&fx).await;
    fx.clock.advance(just_past_ttl(&fx));
    assert_not_found(fx.store.touch(&id).await, "touch after expiry");
    assert_not_found(
        fx.store.get(&id).await,
        "touch must not revive an expired session",
    );
    let deleted = create(&fx).await;
    fx.store.delete(&deleted).await.unwrap();
    assert_not_found(fx.store.touch(&deleted).await, "touch after delete");
    assert_not_found(
        fx.store.get(&deleted).await,
        "touch must not half-create a session",
    );
}

pub async fn session_expires_after_ttl_without_activity(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    fx.clock.advance(fx.settings.ttl - Duration::from_millis(1));
    fx.store.get(&id).await.expect("alive 1ms before its ttl");
    fx.clock.advance(Duration::from_millis(1));
    assert_not_found(fx.store.get(&id).await, "get at expires_at");
    assert_not_found(
        fx.store.read_frames(&id, None, 10).await,
        "read_frames after expiry",
    );
    assert_not_found(
        fx.store.append_frame(&id, frame(&fx, "late")).await,
        "append after expiry",
    );
}

pub async fn max_lifetime_caps_sliding_expiry(factory: &dyn StoreFactory) {
    let mut settings = suite_settings();
    settings.max_lifetime = Some(settings.ttl * 3);
    let fx = fixture_with(factory, settings).await;
    let id = create(&fx).await;
    let created = fx.store.get(&id).await.unwrap().created_at;
    let cap = created.saturating_add(fx.settings.ttl * 3);
    let step = fx.settings.ttl / 2;
    while fx.clock.now().saturating_add(step) < cap {
        fx.clock.advance(step);
        fx.store.touch(&id).await.unwrap();
    }
    let session = fx.store.get(&id).await.unwrap();
    assert_eq!(
        session.expires_at, cap,
        "expiry never passes created_at + max_lifetime"
    );
    fx.clock.set(cap);
    assert_not_found(fx.store.get(&id).await, "get at the lifetime cap");
    assert_not_found(fx.store.touch(&id).await, "touch at the lifetime cap");
}

// ---------------------------------------------------------------- delete

pub async fn delete_removes_session_and_frames(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    fx.store.append_frame(&id, frame(&fx, "a")).await.unwrap();
    assert!(fx.store.delete(&id).await.unwrap());
    assert_not_found(fx.store.get(&id).await, "get after delete");
    assert_not_found(
        fx.store.read_frames(&id, None, 10).await,
        "frames after delete",
    );
    // A new session on the same id starts with no frames.
    fx.store.create(NewSession::new(id.clone())).await.unwrap();
    assert!(fx
        .store
        .read_frames(&id, None, 10)
        .await
        .unwrap()
        .is_empty());
}

pub async fn delete_of_missing_returns_false(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    assert!(!fx.store.delete(&new_id()).await.unwrap());
    let id = create(&fx).await;
    assert!(fx.store.delete(&id).await.unwrap());
    assert!(
        !fx.store.delete(&id).await.unwrap(),
        "second delete finds nothing"
    );
}

// ---------------------------------------------------------------- list and count

async fn walk_all(store: &dyn SessionStore, page_size: usize) -> Vec<SessionId> {
    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    for _ in 0..100_000 {
        let page = store.list(cursor.as_ref(), page_size).await.unwrap();
        assert!(page.items.len() <= page_size, "page larger than asked");
        seen.extend(page.items.into_iter().map(|s| s.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return seen,
        }
    }
    panic!("list never ended");
}

pub async fn list_pages_through_every_session_once(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let mut expected = BTreeSet::new();
    for _ in 0..53 {
        expected.insert(create(&fx).await);
    }
    let seen = walk_all(fx.store.as_ref(), 10).await;
    assert_eq!(seen.len(), expected.len(), "no session repeated");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
    let empty = fixture(factory).await;
    let page = empty.store.list(None, 10).await.unwrap();
    assert!(page.items.is_empty() && page.next_cursor.is_none());
}

pub async fn list_with_foreign_cursor_is_invalid_input(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    create(&fx).await;
    let forged = Cursor::new("not-a-cursor-this-store-made");
    match fx.store.list(Some(&forged), 10).await {
        Err(Error::InvalidInput(_)) => {}
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

pub async fn list_caps_page_size(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    for _ in 0..3 {
        create(&fx).await;
    }
    let page = fx.store.list(None, usize::MAX).await.unwrap();
    assert_eq!(page.items.len(), 3);
    assert!(page.items.len() <= MAX_PAGE_SIZE);
    let zero = fx.store.list(None, 0).await;
    assert!(
        matches!(zero, Err(Error::InvalidInput(_))),
        "limit 0 is invalid: {zero:?}"
    );
}

pub async fn list_skips_expired_sessions(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let old = create(&fx).await;
    fx.clock.advance(fx.settings.ttl / 2);
    let young = create(&fx).await;
    fx.clock.advance(fx.settings.ttl / 2);
    let seen = walk_all(fx.store.as_ref(), 10).await;
    assert_eq!(seen, vec![young], "expired {old} must not be listed");
}

pub async fn list_neither_skips_nor_repeats_under_concurrent_creates(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let mut residents = HashSet::new();
    for _ in 0..60 {
        residents.insert(create(&fx).await);
    }
    let writer = {
        let store = fx.store.clone();
        tokio::spawn(async move {
            let mut made = Vec::new();
            for _ in 0..60 {
                let id = new_id();
                store.create(NewSession::new(id.clone())).await.unwrap();
                made.push(id);
                tokio::task::yield_now().await;
            }
            made
        })
    };
    let seen = walk_all(fx.store.as_ref(), 7).await;
    let newcomers: HashSet<SessionId> = writer.await.unwrap().into_iter().collect();
    let mut unique = HashSet::new();
    for id in &seen {
        assert!(unique.insert(id.clone()), "session {id} listed twice");
        assert!(
            residents.contains(id) || newcomers.contains(id),
            "unknown session {id}"
        );
    }
    for id in &residents {
        assert!(
            unique.contains(id),
            "session {id} lived throughout but was skipped"
        );
    }
}

pub async fn count_counts_live_sessions_only(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    assert_eq!(fx.store.count().await.unwrap(), 0);
    let a = create(&fx).await;
    create(&fx).await;
    create(&fx).await;
    assert_eq!(fx.store.count().await.unwrap(), 3);
    fx.store.delete(&a).await.unwrap();
    assert_eq!(fx.store.count().await.unwrap(), 2);
    fx.clock.advance(fx.settings.ttl / 2);
    let kept = create(&fx).await;
    fx.clock.advance(fx.settings.ttl / 2);
    assert_eq!(fx.store.count().await.unwrap(), 1, "only {kept} is live");
}

/// A refused write (stale update, update or append of an expired session) must
/// not make the session count as live beyond its real expiry.
pub async fn count_after_refused_writes_counts_no_expired_session(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let stale = create(&fx).await;
    let expired = create(&fx).await;
    let first = fx.store.get(&stale).await.unwrap();
    fx.store.update(&first).await.unwrap();
    fx.clock.advance(fx.settings.ttl / 2);
    assert!(matches!(
        fx.store.update(&first).await,
        Err(Error::Conflict { .. })
    ));
    fx.clock
        .advance(fx.settings.ttl / 2 + Duration::from_millis(1));
    let gone = fx.store.get(&expired).await;
    assert_not_found(gone, "expired session");
    let mut late = fx
        .store
        .get_many(std::slice::from_ref(&stale))
        .await
        .unwrap();
    assert_eq!(
        late.pop(),
        Some(None),
        "the stale update did not slide the expiry"
    );
    assert_not_found(
        fx.store.append_frame(&expired, frame(&fx, "late")).await,
        "append to an expired session",
    );
    let mut refused = first.clone();
    refused.id = expired.clone();
    assert_not_found(
        fx.store.update(&refused).await,
        "update of an expired session",
    );
    fx.clock.advance(Duration::from_millis(1));
    assert_eq!(fx.store.count().await.unwrap(), 0, "no session is live");
}

/// A create refused because the id is taken must not make the live session
/// count beyond its real expiry.
pub async fn count_after_create_on_a_taken_id_counts_no_expired_session(
    factory: &dyn StoreFactory,
) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    fx.clock.advance(fx.settings.ttl / 2);
    assert!(matches!(
        fx.store.create(sample_session(id.clone())).await,
        Err(Error::AlreadyExists(_))
    ));
    fx.clock
        .advance(fx.settings.ttl / 2 + Duration::from_millis(1));
    assert_not_found(
        fx.store.get(&id).await,
        "the session expired at its real expiry",
    );
    assert_eq!(fx.store.count().await.unwrap(), 0, "no session is live");
}

// ---------------------------------------------------------------- frames

pub async fn append_returns_increasing_ids_and_bumps_frame_count(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let mut last = FrameId::ZERO;
    for n in 0..10 {
        if n % 3 == 0 {
            fx.clock.advance(Duration::from_millis(1));
        }
        let frame_id = fx
            .store
            .append_frame(&id, frame(&fx, &format!("{{\"n\":{n}}}")))
            .await
            .unwrap();
        assert!(frame_id > last, "{frame_id} after {last}");
        last = frame_id;
    }
    let session = fx.store.get(&id).await.unwrap();
    assert_eq!(session.frame_count, 10);
    assert_eq!(session.last_activity, fx.clock.now());
    assert_eq!(fx.store.count_frames(&id).await.unwrap(), 10);
}

pub async fn append_slides_ttl(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    fx.clock
        .advance(fx.settings.ttl - Duration::from_millis(10));
    fx.store
        .append_frame(&id, frame(&fx, "keepalive"))
        .await
        .unwrap();
    fx.clock
        .advance(fx.settings.ttl - Duration::from_millis(10));
    let session = fx.store.get(&id).await.expect("append slid the ttl");
    assert_eq!(
        session.expires_at,
        session.last_activity.saturating_add(fx.settings.ttl)
    );
}

pub async fn append_to_missing_session_is_not_found(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = new_id();
    assert_not_found(
        fx.store.append_frame(&id, frame(&fx, "x")).await,
        "append to unknown id",
    );
    assert_not_found(fx.store.get(&id).await, "append must not create a session");
}

pub async fn oversized_frame_is_invalid_input_and_nothing_is_stored(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let big = Frame::new(
        Direction::ServerToClient,
        fx.clock.now(),
        vec![b'x'; fx.settings.max_frame_bytes + 1],
    );
    match fx.store.append_frame(&id, big).await {
        Err(Error::InvalidInput(message)) => {
            assert!(message.contains("max_frame_bytes"), "{message}")
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert_eq!(fx.store.count_frames(&id).await.unwrap(), 0);
    assert_eq!(fx.store.get(&id).await.unwrap().frame_count, 0);
    let fits = Frame::new(
        Direction::ServerToClient,
        fx.clock.now(),
        vec![b'x'; fx.settings.max_frame_bytes],
    );
    fx.store
        .append_frame(&id, fits)
        .await
        .expect("a frame of exactly max_frame_bytes fits");
}

pub async fn frames_keep_payload_and_metadata_exactly(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let raw: Vec<u8> =
        b"{ \"jsonrpc\" : \"2.0\", \"id\": 1,\n \"result\": {\"x\": \"\xc3\xa9\"} }".to_vec();
    let mut sent = Frame::new(Direction::ServerToClient, fx.clock.now(), raw.clone())
        .with_stream_id("get-1")
        .with_header("content-type", "text/event-stream");
    sent.event_id = Some("get-1/17".into());
    let frame_id = fx.store.append_frame(&id, sent.clone()).await.unwrap();
    let read = fx.store.read_frames(&id, None, 10).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].id, frame_id);
    assert_eq!(read[0].frame, sent);
    assert_eq!(read[0].frame.payload, raw, "payload bytes are kept exactly");
}

pub async fn read_frames_after_id_with_limit_pages_without_gaps(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let mut ids = Vec::new();
    for n in 0..15 {
        ids.push(
            fx.store
                .append_frame(&id, frame(&fx, &n.to_string()))
                .await
                .unwrap(),
        );
    }
    let mut after = None;
    let mut read = Vec::new();
    loop {
        let page = fx.store.read_frames(&id, after, 4).await.unwrap();
        assert!(page.len() <= 4);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|f| f.id);
        read.extend(page);
    }
    assert_eq!(read.iter().map(|f| f.id).collect::<Vec<_>>(), ids);
    assert_eq!(read[14].frame.payload, b"14");
    let tail = fx.store.read_frames(&id, Some(ids[11]), 100).await.unwrap();
    assert_eq!(
        tail.iter().map(|f| f.id).collect::<Vec<_>>(),
        ids[12..].to_vec()
    );
    assert!(fx
        .store
        .read_frames(&id, Some(ids[14]), 100)
        .await
        .unwrap()
        .is_empty());
}

pub async fn read_frames_of_missing_session_is_not_found(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    assert_not_found(
        fx.store.read_frames(&new_id(), None, 10).await,
        "read of unknown id",
    );
}

pub async fn concurrent_appends_get_unique_increasing_ids_and_exact_count(
    factory: &dyn StoreFactory,
) {
    let mut settings = suite_settings();
    settings.max_frames_per_session = 10_000;
    let fx = fixture_with(factory, settings).await;
    let id = create(&fx).await;
    const TASKS: usize = 64;
    const PER_TASK: usize = 8;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = fx.store.clone();
            let clock = fx.clock.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for n in 0..PER_TASK {
                    let body = format!("{task}:{n}");
                    let frame =
                        Frame::new(Direction::ClientToServer, clock.now(), body.into_bytes());
                    mine.push(store.append_frame(&id, frame).await.unwrap());
                }
                mine
            })
        })
        .collect();
    let mut all = HashSet::new();
    for task in tasks {
        let mine = task.await.unwrap();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "ids one task sees increase"
        );
        for frame_id in mine {
            assert!(all.insert(frame_id), "duplicate frame id {frame_id}");
        }
    }
    let total = (TASKS * PER_TASK) as u64;
    assert_eq!(fx.store.count_frames(&id).await.unwrap(), total);
    assert_eq!(fx.store.get(&id).await.unwrap().frame_count, total);
    let stored = fx.store.read_frames(&id, None, 10_000).await.unwrap();
    assert_eq!(stored.len() as u64, total);
    assert!(
        stored.windows(2).all(|w| w[0].id < w[1].id),
        "read in increasing id order"
    );
}

pub async fn frames_are_trimmed_to_max_frames_per_session(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let max = fx.settings.max_frames_per_session;
    let slack = factory.frame_trim_slack();
    let total = max + slack + max * 3;
    let mut ids = Vec::new();
    for n in 0..total {
        ids.push(
            fx.store
                .append_frame(&id, frame(&fx, &n.to_string()))
                .await
                .unwrap(),
        );
    }
    let kept = fx.store.count_frames(&id).await.unwrap();
    assert!(
        kept >= max && kept <= max + slack,
        "kept {kept}, max {max}, slack {slack}"
    );
    let stored = fx.store.read_frames(&id, None, 100_000).await.unwrap();
    assert_eq!(stored.len() as u64, kept);
    let newest: Vec<FrameId> = ids[ids.len() - kept as usize..].to_vec();
    assert_eq!(
        stored.iter().map(|f| f.id).collect::<Vec<_>>(),
        newest,
        "the newest frames are kept, in order"
    );
    assert_eq!(
        fx.store.get(&id).await.unwrap().frame_count,
        total,
        "trimming does not lower frame_count"
    );
}

pub async fn delete_frames_keeps_session_and_ids_keep_increasing(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let mut last = FrameId::ZERO;
    for n in 0..5 {
        last = fx
            .store
            .append_frame(&id, frame(&fx, &n.to_string()))
            .await
            .unwrap();
    }
    assert_eq!(fx.store.delete_frames(&id).await.unwrap(), 5);
    assert_eq!(fx.store.count_frames(&id).await.unwrap(), 0);
    fx.store.get(&id).await.expect("the session stays");
    let next = fx
        .store
        .append_frame(&id, frame(&fx, "after"))
        .await
        .unwrap();
    assert!(
        next > last,
        "{next} must be greater than the deleted {last}"
    );
    assert_eq!(fx.store.delete_frames(&id).await.unwrap(), 1);
    assert_not_found(
        fx.store.delete_frames(&new_id()).await,
        "delete_frames of unknown id",
    );
}

pub async fn count_frames_of_missing_session_is_not_found(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    assert_not_found(
        fx.store.count_frames(&new_id()).await,
        "count_frames of unknown id",
    );
}

// ---------------------------------------------------------------- maintenance

pub async fn purge_removes_only_expired_sessions(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let mut doomed = Vec::new();
    for _ in 0..12 {
        let id = create(&fx).await;
        fx.store.append_frame(&id, frame(&fx, "x")).await.unwrap();
        doomed.push(id);
    }
    fx.clock.advance(fx.settings.ttl / 2);
    let mut survivors = Vec::new();
    for _ in 0..5 {
        survivors.push(create(&fx).await);
    }
    // Touched after creation: its first expiry has passed, the slid one has not.
    let touched = doomed.pop().unwrap();
    fx.store.touch(&touched).await.unwrap();
    survivors.push(touched);
    fx.clock
        .advance(fx.settings.ttl / 2 + Duration::from_millis(1));
    assert_eq!(fx.store.purge_expired().await.unwrap(), doomed.len() as u64);
    for id in &survivors {
        fx.store.get(id).await.expect("live session survives purge");
    }
    assert_eq!(fx.store.count().await.unwrap(), survivors.len() as u64);
    assert_eq!(
        fx.store.purge_expired().await.unwrap(),
        0,
        "a second purge finds nothing"
    );
}

pub async fn purge_with_nothing_expired_removes_nothing(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    assert_eq!(fx.store.purge_expired().await.unwrap(), 0);
    for _ in 0..4 {
        create(&fx).await;
    }
    assert_eq!(fx.store.purge_expired().await.unwrap(), 0);
    assert_eq!(fx.store.count().await.unwrap(), 4);
}

pub async fn health_reports_backend(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let health = fx.store.health().await.unwrap();
    assert!(!health.backend.is_empty());
    // Readings, from health and without I/O: Prometheus metric names with
    // finite values, and every reading a store holds itself is also in its
    // health.
    let held = fx.store.readings();
    for (name, value) in health.readings.iter().chain(&held) {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "reading name {name:?}"
        );
        assert!(value.is_finite(), "{name} = {value}");
    }
    for (name, _) in &held {
        assert!(
            health.readings.iter().any(|(n, _)| n == name),
            "{name} is held but missing from health: {:?}",
            health.readings
        );
    }
}
