//! `FallbackStore` without Redis: a fake primary that can be switched off shows
//! what the breaker does, which contract lines hold while it is open, and what
//! the write-back hands to the primary on recovery.
#![cfg(all(feature = "redis", feature = "memory"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    collections::HashSet,
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
    FallbackStore, Frame, FrameId, FramePage, Health, KvCondition, KvEntry, KvKey, KvPut,
    ManualClock, MemoryStore, NewSession, Page, Result, Session, SessionId, SessionStore,
    StoreSettings, StoredFrame,
};
use session_store_core::testing::{behaviours, StoreFactory};
use session_store_redis::{AppendKey, AppendKeys, SessionWriteBack, WriteBackReport};

/// A primary backed by a memory store that answers Unavailable while `down`,
/// and records write-backs instead of applying them. Deletes leave a tombstone
/// (as the Redis backend does): a write-back of a tombstoned session is
/// NotFound. Several instances can share one store ([`Self::sharing`]).
#[derive(Debug)]
struct SwitchablePrimary {
    store: Arc<MemoryStore>,
    down: AtomicBool,
    keys: AppendKeys,
    write_backs: Mutex<Vec<SessionWriteBack>>,
    tombstones: Arc<Mutex<HashSet<SessionId>>>,
    /// Sessions whose write-back fails with Unavailable though the primary
    /// answers everything else.
    poisoned: Mutex<HashSet<SessionId>>,
}

impl SwitchablePrimary {
    fn new(clock: ManualClock, settings: StoreSettings, down: bool) -> Self {
        SwitchablePrimary {
            store: Arc::new(
                MemoryStore::builder()
                    .settings(settings)
                    .clock(Arc::new(clock))
                    .build()
                    .unwrap(),
            ),
            down: AtomicBool::new(down),
            keys: AppendKeys::new(),
            write_backs: Mutex::default(),
            tombstones: Arc::default(),
            poisoned: Mutex::default(),
        }
    }

    /// Another instance's view of the same primary, up, with its own link.
    fn sharing(&self) -> Self {
        SwitchablePrimary {
            store: self.store.clone(),
            down: AtomicBool::new(false),
            keys: AppendKeys::new(),
            write_backs: Mutex::default(),
            tombstones: self.tombstones.clone(),
            poisoned: Mutex::default(),
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
        self.tombstones.lock().insert(id.clone());
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
    async fn append_frames(&self, id: &SessionId, frames: Vec<Frame>) -> Result<Vec<FrameId>> {
        self.check()?;
        self.store.append_frames(id, frames).await
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
    async fn read_frames_page(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<FramePage> {
        self.check()?;
        self.store.read_frames_page(id, after, limit).await
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
    async fn append_frames_with_keys(
        &self,
        id: &SessionId,
        frames: &[Frame],
        _keys: &[AppendKey],
    ) -> Result<Vec<FrameId>> {
        self.append_frames(id, frames.to_vec()).await
    }
    async fn write_back(&self, write_back: &SessionWriteBack) -> Result<WriteBackReport> {
        self.check()?;
        if self.poisoned.lock().contains(&write_back.session.id) {
            return Err(Error::unavailable(
                "fake primary: this session's write-back times out",
            ));
        }
        if self.tombstones.lock().contains(&write_back.session.id) {
            return Err(Error::NotFound(write_back.session.id.clone()));
        }
        self.write_backs.lock().push(write_back.clone());
        Ok(WriteBackReport {
            frames_written: write_back.frames.len() as u64,
            frame_ids: write_back.frames.iter().map(|f| f.frame.id).collect(),
            ..WriteBackReport::default()
        })
    }
    async fn deleted_recently(&self, id: &SessionId) -> Result<bool> {
        self.check()?;
        Ok(self.tombstones.lock().contains(id))
    }
}

fn fallback(threshold: u32) -> FallbackSettings {
    FallbackSettings {
        failure_threshold: threshold,
        cool_down: Duration::from_millis(50),
        remembered_sessions: 1_000,
        ..FallbackSettings::default()
    }
}

/// Waits until `store` has written its journal back and closed its breaker;
/// its stats then.
async fn written_back(store: &FallbackStore<SwitchablePrimary>) -> session_store::FallbackStats {
    let closed = support::wait_until(Duration::from_secs(10), || {
        let stats = store.stats();
        stats.state == BreakerState::Closed && stats.dirty_sessions == 0
    })
    .await;
    let stats = store.stats();
    assert!(closed, "{stats:?}");
    stats
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
    let stats = written_back(&store).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_refuses_writes_with_unavailable_and_keeps_serving_reads() {
    let clock = ManualClock::starting_now();
    let settings = session_store_core::testing::suite_settings();
    let primary = SwitchablePrimary::new(clock.clone(), settings.clone(), true);
    let max = 16 * 1024;
    let store = FallbackStore::new(
        primary,
        settings,
        FallbackSettings {
            journal_max_bytes: max,
            ..fallback(1)
        },
        Arc::new(clock.clone()),
    )
    .unwrap();
    let id = store.new_session_id().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    let payload = "x".repeat(1_000);
    let mut acked = 0;
    let refused = loop {
        match store.append_frame(&id, frame(&clock, &payload)).await {
            Ok(_) => acked += 1,
            Err(error) => break error,
        }
        assert!(acked < 100, "the journal never filled: {:?}", store.stats());
    };
    let message = refused.to_string();
    assert!(matches!(refused, Error::Unavailable(_)), "{message}");
    assert!(message.contains("journal_max_bytes"), "{message}");
    // New sessions fill what is left, then are refused too.
    let mut created = 0;
    loop {
        let other = store.new_session_id().unwrap();
        match store.create(NewSession::new(other)).await {
            Ok(_) => created += 1,
            Err(error) => {
                assert!(matches!(error, Error::Unavailable(_)), "{error}");
                break;
            }
        }
        assert!(created < 10, "{:?}", store.stats());
    }
    // Reads go on, and writes that add nothing too.
    assert_eq!(
        store.read_frames(&id, None, 1_000).await.unwrap().len(),
        acked
    );
    assert_eq!(store.get(&id).await.unwrap().frame_count, acked as u64);
    store.touch(&id).await.unwrap();
    let stats = store.stats();
    println!(
        "journal cap {max} bytes: {acked} frames of 1000 bytes acknowledged, then refused; \
         journal {} bytes (peak {}), {} refusals",
        stats.journal_bytes, stats.journal_peak_bytes, stats.journal_full_total
    );
    assert!(stats.journal_peak_bytes <= max, "{stats:?}");
    assert!(stats.journal_bytes <= max && stats.journal_bytes > 0);
    assert_eq!(stats.journal_full_total, 2);
    assert_eq!(stats.dirty_sessions, 1 + created);

    store.primary().down.store(false, Ordering::SeqCst);
    written_back(&store).await;
    assert_eq!(store.stats().journal_bytes, 0, "written back: nothing held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_cut_off_together_never_mint_the_same_frame_id_for_one_session() {
    let clock = ManualClock::starting_now();
    let settings = session_store_core::testing::suite_settings();
    let primary_a = SwitchablePrimary::new(clock.clone(), settings.clone(), false);
    let primary_b = primary_a.sharing();
    let a = FallbackStore::new(
        primary_a,
        settings.clone(),
        fallback(1),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let b = FallbackStore::new(primary_b, settings, fallback(1), Arc::new(clock.clone())).unwrap();
    let id = a.new_session_id().unwrap();
    a.create(NewSession::new(id.clone())).await.unwrap();
    let before = a.append_frame(&id, frame(&clock, "before")).await.unwrap();
    b.get(&id).await.unwrap();
    a.primary().down.store(true, Ordering::SeqCst);
    b.primary().down.store(true, Ordering::SeqCst);
    // Same session, same millisecond, same last id known to both.
    let mut ids = HashSet::new();
    for n in 0..20 {
        let from_a = a
            .append_frame(&id, frame(&clock, &format!("a{n}")))
            .await
            .unwrap();
        let from_b = b
            .append_frame(&id, frame(&clock, &format!("b{n}")))
            .await
            .unwrap();
        assert!(from_a > before && from_b > before);
        assert!(
            ids.insert(from_a) && ids.insert(from_b),
            "{from_a} or {from_b} minted twice"
        );
    }
    assert_eq!(ids.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_another_instances_journal_is_unavailable_there_never_not_found() {
    let clock = ManualClock::starting_now();
    let settings = session_store_core::testing::suite_settings();
    let primary_a = SwitchablePrimary::new(clock.clone(), settings.clone(), true);
    let primary_b = primary_a.sharing();
    let grace = Duration::from_secs(600);
    let fleet = FallbackSettings {
        outage_id_grace: grace,
        ..fallback(1)
    };
    let a = FallbackStore::new(
        primary_a,
        settings.clone(),
        fleet.clone(),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let b = FallbackStore::new(primary_b, settings, fleet, Arc::new(clock.clone())).unwrap();

    // A is cut off: the session lives only in A's journal. B reaches the primary.
    let id = a.new_session_id().unwrap();
    a.create(NewSession::new(id.clone())).await.unwrap();
    a.append_frame(&id, frame(&clock, "only in A"))
        .await
        .unwrap();
    assert!(matches!(b.get(&id).await, Err(Error::Unavailable(_))));
    assert!(matches!(b.touch(&id).await, Err(Error::Unavailable(_))));
    assert!(matches!(
        b.append_frame(&id, frame(&clock, "via B")).await,
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        b.read_frames(&id, None, 10).await,
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        b.get_many(std::slice::from_ref(&id)).await,
        Err(Error::Unavailable(_))
    ));
    let message = b.get(&id).await.unwrap_err().to_string();
    assert!(message.contains("retry later"), "{message}");
    // Ids of another form, and ids older than the grace period, are NotFound.
    let plain = SessionId::random().unwrap();
    assert!(matches!(b.get(&plain).await, Err(Error::NotFound(_))));
    let stats = b.stats();
    assert_eq!(
        stats.state,
        BreakerState::Closed,
        "an answer, not a failure"
    );
    assert_eq!(stats.outage_ids_unavailable_total, 6);

    // A deleted id is NotFound at once (the primary's tombstone).
    let gone = b.new_session_id().unwrap();
    b.create(NewSession::new(gone.clone())).await.unwrap();
    b.delete(&gone).await.unwrap();
    assert!(matches!(b.get(&gone).await, Err(Error::NotFound(_))));

    clock.advance(grace);
    assert!(matches!(b.get(&id).await, Err(Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_deleted_elsewhere_during_the_outage_is_not_written_back() {
    let clock = ManualClock::starting_now();
    let settings = session_store_core::testing::suite_settings();
    let primary_a = SwitchablePrimary::new(clock.clone(), settings.clone(), false);
    let primary_b = primary_a.sharing();
    let a = FallbackStore::new(
        primary_a,
        settings.clone(),
        fallback(1),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let b = FallbackStore::new(primary_b, settings, fallback(1), Arc::new(clock.clone())).unwrap();
    let id = a.new_session_id().unwrap();
    a.create(NewSession::new(id.clone())).await.unwrap();
    a.primary().down.store(true, Ordering::SeqCst);
    a.append_frame(&id, frame(&clock, "while cut off"))
        .await
        .unwrap();
    assert!(b.delete(&id).await.unwrap());

    a.primary().down.store(false, Ordering::SeqCst);
    let stats = written_back(&a).await;
    assert_eq!(stats.deleted_elsewhere_total, 1);
    assert!(
        a.primary().write_backs.lock().is_empty(),
        "nothing recreated"
    );
    assert!(matches!(a.get(&id).await, Err(Error::NotFound(_))));
    assert_eq!(stats.journal_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_write_back_keeps_failing_is_quarantined_and_the_breaker_closes() {
    let clock = ManualClock::starting_now();
    let settings = session_store_core::testing::suite_settings();
    let primary = SwitchablePrimary::new(clock.clone(), settings.clone(), true);
    let store =
        FallbackStore::new(primary, settings, fallback(1), Arc::new(clock.clone())).unwrap();
    let good = store.new_session_id().unwrap();
    let poison = store.new_session_id().unwrap();
    for id in [&good, &poison] {
        store.create(NewSession::new(id.clone())).await.unwrap();
        store
            .append_frame(id, frame(&clock, "during"))
            .await
            .unwrap();
    }
    store.primary().poisoned.lock().insert(poison.clone());
    store.primary().down.store(false, Ordering::SeqCst);
    let stats = written_back(&store).await;
    assert_eq!(stats.opened_total, 1, "one session's trouble is no outage");
    assert_eq!(stats.quarantined_total, 1);
    assert_eq!(stats.quarantined_sessions, 1);
    assert!(stats.write_back_failures_total >= 3, "{stats:?}");
    let written: Vec<_> = store
        .primary()
        .write_backs
        .lock()
        .iter()
        .map(|w| w.session.id.clone())
        .collect();
    assert_eq!(written, vec![good]);
    assert!(
        stats.journal_bytes > 0,
        "the quarantined entry is kept and counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_degraded_with_the_breaker_and_journal_readings_while_serving_from_memory() {
    let clock = ManualClock::starting_now();
    let settings = session_store_core::testing::suite_settings();
    let primary = SwitchablePrimary::new(clock.clone(), settings.clone(), false);
    let store =
        FallbackStore::new(primary, settings, fallback(1), Arc::new(clock.clone())).unwrap();
    let reading = |health: &Health, name: &str| {
        health
            .readings
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no reading {name}: {:?}", health.readings))
    };
    let healthy = store.health().await.unwrap();
    assert!(!healthy.degraded);
    assert_eq!(reading(&healthy, "session_store_breaker_state"), 0.0);

    store.primary().down.store(true, Ordering::SeqCst);
    let id = store.new_session_id().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    let open = store.health().await.unwrap();
    assert!(open.degraded, "{open:?}");
    assert_eq!(open.backend, "memory-fallback");
    assert_eq!(reading(&open, "session_store_breaker_state"), 2.0);
    assert_eq!(reading(&open, "session_store_fallback_dirty_sessions"), 1.0);
    assert!(reading(&open, "session_store_fallback_journal_bytes") > 0.0);
    assert_eq!(
        reading(&open, "session_store_fallback_quarantined_sessions"),
        0.0
    );

    store.primary().down.store(false, Ordering::SeqCst);
    written_back(&store).await;
    let back = store.health().await.unwrap();
    assert!(!back.degraded, "{back:?}");
    assert_eq!(
        reading(&back, "session_store_write_back_sessions_total"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_journal_dir_replays_and_writes_back_every_acknowledged_write() {
    let clock = ManualClock::starting_now();
    let settings = session_store_core::testing::suite_settings();
    let dir = support::TempDir::new("journal");
    let on_disk = FallbackSettings {
        journal_dir: Some(dir.0.clone()),
        ..fallback(1)
    };
    let primary_a = SwitchablePrimary::new(clock.clone(), settings.clone(), true);
    let primary_b = primary_a.sharing();
    let first = FallbackStore::new(
        primary_a,
        settings.clone(),
        on_disk.clone(),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let id = first.new_session_id().unwrap();
    let created = first.create(NewSession::new(id.clone())).await.unwrap();
    let mut acked = Vec::new();
    for n in 0..5 {
        clock.advance(Duration::from_millis(1));
        acked.push(
            first
                .append_frame(&id, frame(&clock, &format!("f{n}")))
                .await
                .unwrap(),
        );
    }
    let mut changed = created.clone();
    changed.status = session_store::SessionStatus::Active;
    first.update(&changed).await.unwrap();
    let gone = first.new_session_id().unwrap();
    first.create(NewSession::new(gone.clone())).await.unwrap();
    first.delete(&gone).await.unwrap();
    // The process dies; a write torn by the crash (never acknowledged) is left.
    drop(first);
    let log = dir.0.join("journal.log");
    let mut torn = std::fs::read(&log).unwrap();
    let acknowledged_bytes = torn.len();
    torn.extend_from_slice(&[200, 1, 0, 0, 1, 2]);
    std::fs::write(&log, torn).unwrap();

    let second = FallbackStore::new(primary_b, settings, on_disk, Arc::new(clock.clone())).unwrap();
    let stats = written_back(&second).await;
    let write_backs = second.primary().write_backs.lock().clone();
    let back = write_backs.iter().find(|w| w.session.id == id).unwrap();
    assert_eq!(
        back.frames.iter().map(|f| f.frame.id).collect::<Vec<_>>(),
        acked,
        "every acknowledged frame, under its id"
    );
    assert!(back.updated);
    assert_eq!(back.session.status, session_store::SessionStatus::Active);
    assert!(
        write_backs.iter().all(|w| w.session.id != gone),
        "deleted here: deleted, not recreated"
    );
    println!(
        "journal_dir: {acknowledged_bytes} bytes on disk before the restart; replayed and written back {} sessions",
        stats.written_back_sessions_total
    );
    // The last entry leaves the journal just before the file is emptied and
    // the breaker closes (a draining breaker reads as closed meanwhile).
    let emptied = support::wait_until(Duration::from_secs(10), || {
        std::fs::metadata(&log).unwrap().len() == 0
    })
    .await;
    assert!(emptied, "emptied once written back");
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

/// Stores whose primary is down from the start but whose breaker never opens
/// (the threshold is out of reach): each call tries the primary, fails over to
/// memory, and after the first session in the journal the breaker is
/// draining, so every call takes the mixed route (journal first, then the
/// primary, then memory) that a half-open breaker takes during a write-back.
struct DrainingFactory;

#[async_trait]
impl StoreFactory for DrainingFactory {
    async fn build(&self, clock: ManualClock, settings: StoreSettings) -> Arc<dyn SessionStore> {
        let primary = SwitchablePrimary::new(clock.clone(), settings.clone(), true);
        Arc::new(
            FallbackStore::new(primary, settings, fallback(u32::MAX), Arc::new(clock)).unwrap(),
        )
    }
}

/// What [`DrainingFactory`] builds is what the `while_draining` suite relies
/// on: the breaker stays closed (draining), the session waits in the journal
/// and is served from it, and it is written back once the primary answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_threshold_a_failed_call_drains_through_the_journal_without_opening() {
    let clock = ManualClock::starting_now();
    let settings = session_store_core::testing::suite_settings();
    let primary = SwitchablePrimary::new(clock.clone(), settings.clone(), true);
    let store = FallbackStore::new(
        primary,
        settings,
        fallback(u32::MAX),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    store.append_frame(&id, frame(&clock, "one")).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap().frame_count, 1);
    let stats = store.stats();
    assert_eq!(stats.state, BreakerState::Closed, "{stats:?}");
    assert_eq!(stats.opened_total, 0, "{stats:?}");
    assert_eq!(stats.dirty_sessions, 1, "{stats:?}");
    assert!(stats.served_from_memory_total >= 3, "{stats:?}");

    store.primary().down.store(false, Ordering::SeqCst);
    let stats = written_back(&store).await;
    assert_eq!(stats.written_back_sessions_total, 1, "{stats:?}");
    assert_eq!(store.primary().write_backs.lock()[0].frames.len(), 1);
}

/// The contract lines that hold while the breaker is open, for sessions created
/// during the outage, and while it drains a journal the primary cannot take.
/// The others do not, by design: a session the fallback does
/// not hold may exist in the primary, so "missing" is Unavailable rather than
/// NotFound (get/touch/append/read/count/delete_frames of a missing id, delete of
/// a missing id, get_many with a missing id, reuse of an expired id), and
/// listing, counting and purging need the primary. Small keyed values hold every
/// line while open, served from the instance's memory secondary (only the check
/// that they are not sessions needs `count`). Passes the list to `$suite!`.
macro_rules! lines_served_from_memory {
    ($suite:ident!($($args:tt)*)) => {
        $suite!($($args)*;
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
    append_frames_returns_ascending_ids_after_earlier_ones_and_bumps_frame_count
    append_frames_reads_back_equal_and_in_order
    append_frames_trims_across_the_batch_by_count
    append_frames_trims_across_the_batch_by_bytes
    append_frames_of_an_empty_batch_stores_nothing
    append_frames_with_an_oversized_frame_is_invalid_input_and_stores_nothing
    frames_beyond_max_session_frame_bytes_are_trimmed_oldest_first
    read_frames_pages_are_bounded_by_max_read_bytes
    a_frame_larger_than_max_read_bytes_is_read_alone
    read_after_a_trimmed_id_reports_the_gap
    read_after_a_kept_id_reports_no_gap
    read_after_deleted_frames_reports_the_gap
    health_reports_backend
    kv_put_if_absent_stores_and_get_returns_value_revision_and_expiry
    kv_put_if_absent_conflicts_when_present_and_keeps_the_value
    kv_put_with_revision_replaces_only_that_revision
    kv_concurrent_puts_with_the_same_condition_have_exactly_one_winner
    kv_value_expires_after_its_ttl_and_its_revision_is_not_reused
    kv_delete_is_conditional_and_deleting_a_missing_value_is_false
    kv_oversized_value_or_zero_ttl_is_invalid_input_and_nothing_is_stored
    kv_bad_key_is_invalid_input

        );
    };
}

/// A module `$module` of tests, one per contract line, against `$factory`.
macro_rules! suite {
    ($module:ident, $factory:expr; $($name:ident)*) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    behaviours::$name(&$factory).await;
                }
            )*
        }
    };
}

lines_served_from_memory!(suite!(while_open, OpenBreakerFactory));
lines_served_from_memory!(suite!(while_draining, DrainingFactory));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_values_are_served_from_memory_during_an_outage_and_from_the_primary_after_it() {
    let clock = ManualClock::starting_now();
    let settings = session_store_core::testing::suite_settings();
    let primary = SwitchablePrimary::new(clock.clone(), settings.clone(), false);
    let store =
        FallbackStore::new(primary, settings, fallback(1), Arc::new(clock.clone())).unwrap();
    let key = KvKey::new("lease:s1:r1-0").unwrap();
    let ttl = Duration::from_secs(5);
    let put = store
        .kv_put(&key, b"primary", ttl, KvCondition::Absent)
        .await
        .unwrap();
    assert!(matches!(put, KvPut::Stored { .. }));

    store.primary().down.store(true, Ordering::SeqCst);
    // The primary's value is out of reach: this instance's memory answers alone.
    assert_eq!(store.kv_get(&key).await.unwrap(), None);
    let during = store
        .kv_put(&key, b"memory", ttl, KvCondition::Absent)
        .await
        .unwrap();
    assert!(matches!(during, KvPut::Stored { .. }));
    assert!(matches!(
        store
            .kv_put(&key, b"again", ttl, KvCondition::Absent)
            .await
            .unwrap(),
        KvPut::Rejected { current: Some(_) }
    ));
    assert_eq!(store.stats().state, BreakerState::Open);

    store.primary().down.store(false, Ordering::SeqCst);
    let closed = support::wait_until(Duration::from_secs(10), || {
        store.stats().state == BreakerState::Closed
    })
    .await;
    assert!(closed, "{:?}", store.stats());
    // Not written back: the primary's value is the one read again.
    assert_eq!(store.kv_get(&key).await.unwrap().unwrap().value, b"primary");
}
