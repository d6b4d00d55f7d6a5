//! `FallbackStore` without Redis: a fake primary that can be switched off shows
//! what the breaker does, which contract lines hold while it is open, and what
//! the write-back hands to the primary on recovery.
#![cfg(all(feature = "redis", feature = "memory"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use parking_lot::Mutex;
use session_store::{
    BreakerState, Clock, Cursor, Direction, Error, FallbackPrimary, FallbackSettings,
    FallbackStore, Frame, FrameId, Health, KvCondition, KvEntry, KvKey, KvPut, ManualClock,
    MemoryStore, NewSession, Page, Result, Session, SessionId, SessionStore, StoreSettings,
    StoredFrame,
};
use session_store_core::testing::{behaviours, StoreFactory};
use session_store_redis::{AppendKey, AppendKeys, SessionWriteBack, WriteBackReport};

/// A primary backed by a memory store that answers Unavailable while `down`,
/// and records write-backs instead of applying them.
#[derive(Debug)]
struct SwitchablePrimary {
    store: MemoryStore,
    down: AtomicBool,
    keys: AppendKeys,
    write_backs: Mutex<Vec<SessionWriteBack>>,
}

impl SwitchablePrimary {
    fn new(clock: ManualClock, settings: StoreSettings, down: bool) -> Self {
        SwitchablePrimary {
            store: MemoryStore::builder()
                .settings(settings)
                .clock(Arc::new(clock))
                .build()
                .unwrap(),
            down: AtomicBool::new(down),
            keys: AppendKeys::new(),
            write_backs: Mutex::default(),
        }
    }

    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(Error::unavailable("fake primary is down"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SessionStore for SwitchablePrimary {
    async fn create(&self, new: NewSession) -> Result<Session> {
        self.check()?;
        self.store.create(new).await
    }
    async fn get(&self, id: &SessionId) -> Result<Session> {
        self.check()?;
        self.store.get(id).await
    }
    async fn get_many(&self, ids: &[SessionId]) -> Result<Vec<Option<Session>>> {
        self.check()?;
        self.store.get_many(ids).await
    }
    async fn update(&self, session: &Session) -> Result<Session> {
        self.check()?;
        self.store.update(session).await
    }
    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.check()?;
        self.store.touch(id).await
    }
    async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.check()?;
        self.store.delete(id).await
    }
    async fn list(&self, cursor: Option<&Cursor>, limit: usize) -> Result<Page<Session>> {
        self.check()?;
        self.store.list(cursor, limit).await
    }
    async fn count(&self) -> Result<u64> {
        self.check()?;
        self.store.count().await
    }
    async fn append_frame(&self, id: &SessionId, frame: Frame) -> Result<FrameId> {
        self.check()?;
        self.store.append_frame(id, frame).await
    }
    async fn read_frames(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<Vec<StoredFrame>> {
        self.check()?;
        self.store.read_frames(id, after, limit).await
    }
    async fn count_frames(&self, id: &SessionId) -> Result<u64> {
        self.check()?;
        self.store.count_frames(id).await
    }
    async fn delete_frames(&self, id: &SessionId) -> Result<u64> {
        self.check()?;
        self.store.delete_frames(id).await
    }
    async fn purge_expired(&self) -> Result<u64> {
        self.check()?;
        self.store.purge_expired().await
    }
    async fn health(&self) -> Result<Health> {
        self.check()?;
        self.store.health().await
    }
    async fn kv_get(&self, key: &KvKey) -> Result<Option<KvEntry>> {
        self.check()?;
        self.store.kv_get(key).await
    }
    async fn kv_put(
        &self,
        key: &KvKey,
        value: &[u8],
        ttl: Duration,
        condition: KvCondition,
    ) -> Result<KvPut> {
        self.check()?;
        self.store.kv_put(key, value, ttl, condition).await
    }
    async fn kv_delete(&self, key: &KvKey, condition: KvCondition) -> Result<bool> {
        self.check()?;
        self.store.kv_delete(key, condition).await
    }
}

#[async_trait]
impl FallbackPrimary for SwitchablePrimary {
    fn new_append_key(&self) -> AppendKey {
        self.keys.next_key()
    }
    async fn append_frame_with_key(
        &self,
        id: &SessionId,
        frame: &Frame,
        _key: &AppendKey,
    ) -> Result<FrameId> {
        self.append_frame(id, frame.clone()).await
    }
    async fn write_back(&self, write_back: &SessionWriteBack) -> Result<WriteBackReport> {
        self.check()?;
        self.write_backs.lock().push(write_back.clone());
        Ok(WriteBackReport {
            frames_written: write_back.frames.len() as u64,
            frame_ids: write_back.frames.iter().map(|f| f.frame.id).collect(),
            ..WriteBackReport::default()
        })
    }
}

fn fallback(threshold: u32) -> FallbackSettings {
    FallbackSettings {
        failure_threshold: threshold,
        cool_down: Duration::from_millis(50),
        remembered_sessions: 1_000,
    }
}

fn frame(clock: &ManualClock, body: &str) -> Frame {
    Frame::new(
        Direction::ClientToServer,
        clock.now(),
        body.as_bytes().to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_served_from_memory_and_written_back_in_order() {
    let clock = ManualClock::starting_now();
    let settings = session_store_core::testing::suite_settings();
    let primary = SwitchablePrimary::new(clock.clone(), settings.clone(), false);
    let store =
        FallbackStore::new(primary, settings, fallback(3), Arc::new(clock.clone())).unwrap();

    let known = SessionId::random().unwrap();
    store.create(NewSession::new(known.clone())).await.unwrap();
    let before = store
        .append_frame(&known, frame(&clock, "before"))
        .await
        .unwrap();
    let other = SessionId::random().unwrap();
    store.create(NewSession::new(other.clone())).await.unwrap();

    store.primary().down.store(true, Ordering::SeqCst);
    // NotFound is an answer, not a failure.
    assert!(matches!(
        store.get(&SessionId::random().unwrap()).await,
        Err(Error::Unavailable(_))
    ));
    clock.advance(Duration::from_millis(1));
    let mut during = Vec::new();
    for n in 0..3 {
        during.push(
            store
                .append_frame(&known, frame(&clock, &format!("during {n}")))
                .await
                .unwrap(),
        );
    }
    store.touch(&other).await.unwrap();
    store.touch(&other).await.unwrap();
    store.touch(&other).await.unwrap();
    assert_eq!(store.stats().state, BreakerState::Open);
    assert!(during[0] > before, "outage ids follow the primary's");
    assert!(during.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(store.get(&known).await.unwrap().frame_count, 4);
    let replay = store.read_frames(&known, Some(before), 10).await.unwrap();
    assert_eq!(replay.len(), 3);
    assert!(
        matches!(
            store.read_frames(&known, None, 10).await,
            Err(Error::Unavailable(_))
        ),
        "older frames live in the primary only"
    );
    let unknown = SessionId::random().unwrap();
    assert!(matches!(
        store.get(&unknown).await,
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        store.list(None, 10).await,
        Err(Error::Unavailable(_))
    ));
    let fresh = SessionId::random().unwrap();
    store.create(NewSession::new(fresh.clone())).await.unwrap();
    store
        .append_frame(&fresh, frame(&clock, "new"))
        .await
        .unwrap();
    assert_eq!(store.stats().dirty_sessions, 3);

    store.primary().down.store(false, Ordering::SeqCst);
    let closed = support::wait_until(Duration::from_secs(10), || {
        let stats = store.stats();
        stats.state == BreakerState::Closed && stats.dirty_sessions == 0
    })
    .await;
    let stats = store.stats();
    assert!(closed, "{stats:?}");
    assert_eq!(stats.opened_total, 1);
    assert_eq!(stats.half_opened_total, 1);
    assert_eq!(stats.closed_total, 1);
    assert_eq!(stats.written_back_sessions_total, 3);
    assert_eq!(stats.written_back_frames_total, 4);

    let write_backs = store.primary().write_backs.lock().clone();
    let of = |id: &SessionId| write_backs.iter().find(|w| &w.session.id == id).unwrap();
    let known_back = of(&known);
    assert_eq!(
        known_back
            .frames
            .iter()
            .map(|f| f.frame.id)
            .collect::<Vec<_>>(),
        during
    );
    assert_eq!(known_back.base_revision, 1);
    assert!(!known_back.updated);
    assert_eq!(of(&fresh).frames.len(), 1);
    assert!(of(&other).frames.is_empty());
    // After the write-back, calls go to the primary again.
    assert!(matches!(store.get(&unknown).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn without_failures_the_breaker_stays_closed_and_remembers_sessions() {
    let clock = ManualClock::starting_now();
    let settings = session_store_core::testing::suite_settings();
    let primary = SwitchablePrimary::new(clock.clone(), settings.clone(), false);
    let store =
        FallbackStore::new(primary, settings, fallback(1), Arc::new(clock.clone())).unwrap();
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    assert!(matches!(
        store.get(&SessionId::random().unwrap()).await,
        Err(Error::NotFound(_))
    ));
    let stats = store.stats();
    assert_eq!(stats.state, BreakerState::Closed);
    assert_eq!(stats.primary_failures_total, 0);
    assert_eq!(stats.remembered_sessions, 1);
}

#[test]
fn breaker_settings_are_validated_naming_the_key() {
    let zero = FallbackSettings {
        failure_threshold: 0,
        ..FallbackSettings::default()
    };
    let message = zero.validate().unwrap_err().to_string();
    assert!(message.contains("failure_threshold"), "{message}");
    let instant = FallbackSettings {
        cool_down: Duration::ZERO,
        ..FallbackSettings::default()
    };
    let message = instant.validate().unwrap_err().to_string();
    assert!(message.contains("cool_down"), "{message}");
}

/// Stores whose primary is down from the start: every call after the first is
/// served by the open breaker.
struct OpenBreakerFactory;

#[async_trait]
impl StoreFactory for OpenBreakerFactory {
    async fn build(&self, clock: ManualClock, settings: StoreSettings) -> Arc<dyn SessionStore> {
        let primary = SwitchablePrimary::new(clock.clone(), settings.clone(), true);
        Arc::new(FallbackStore::new(primary, settings, fallback(1), Arc::new(clock)).unwrap())
    }
}

/// The contract lines that hold while the breaker is open, for sessions created
/// during the outage. The others do not, by design: a session the fallback does
/// not hold may exist in the primary, so "missing" is Unavailable rather than
/// NotFound (get/touch/append/read/count/delete_frames of a missing id, delete of
/// a missing id, get_many with a missing id, reuse of an expired id), and
/// listing, counting and purging need the primary. Small keyed values hold every
/// line while open, served from the instance's memory secondary (only the check
/// that they are not sessions needs `count`).
macro_rules! while_open {
    ($($name:ident)*) => {
        mod while_open {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    behaviours::$name(&OpenBreakerFactory).await;
                }
            )*
        }
    };
}

while_open! {
    create_returns_revision_one_and_times
    create_on_existing_id_is_already_exists_and_keeps_the_original
    get_returns_what_create_stored
    update_bumps_revision_and_keeps_store_owned_fields
    update_with_stale_revision_conflicts
    update_of_deleted_session_is_not_found_and_does_not_revive
    concurrent_updates_with_same_revision_have_exactly_one_winner
    touch_slides_ttl
    session_expires_after_ttl_without_activity
    max_lifetime_caps_sliding_expiry
    delete_removes_session_and_frames
    append_returns_increasing_ids_and_bumps_frame_count
    append_slides_ttl
    oversized_frame_is_invalid_input_and_nothing_is_stored
    frames_keep_payload_and_metadata_exactly
    read_frames_after_id_with_limit_pages_without_gaps
    concurrent_appends_get_unique_increasing_ids_and_exact_count
    frames_are_trimmed_to_max_frames_per_session
    health_reports_backend
    kv_put_if_absent_stores_and_get_returns_value_revision_and_expiry
    kv_put_if_absent_conflicts_when_present_and_keeps_the_value
    kv_put_with_revision_replaces_only_that_revision
    kv_concurrent_puts_with_the_same_condition_have_exactly_one_winner
    kv_value_expires_after_its_ttl_and_its_revision_is_not_reused
    kv_delete_is_conditional_and_deleting_a_missing_value_is_false
    kv_oversized_value_or_zero_ttl_is_invalid_input_and_nothing_is_stored
    kv_bad_key_is_invalid_input
}
