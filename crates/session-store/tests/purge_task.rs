//! `PurgeTask`: purges on its interval, survives failures, stops on shutdown. Time
//! is tokio's paused clock plus a `ManualClock`, never the wall clock.
#![cfg(feature = "memory")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use session_store::{
    build_with_clock, Cursor, Error, Frame, FrameId, FramePage, Health, KvCondition, KvEntry,
    KvKey, KvPut, ManualClock, NewSession, Page, PurgeTask, Result, Session, SessionId,
    SessionStore, StorageConfig, StoredFrame,
};
use tokio::sync::mpsc;

const INTERVAL: Duration = Duration::from_secs(60);

/// Delegates to a real store and reports every `purge_expired` outcome; can be made
/// to fail purges.
#[derive(Debug)]
struct ObservedStore {
    inner: Arc<dyn SessionStore>,
    purges: mpsc::UnboundedSender<Result<u64>>,
    failing: AtomicBool,
}

#[async_trait]
impl SessionStore for ObservedStore {
    async fn create(&self, new: NewSession) -> Result<Session> {
        self.inner.create(new).await
    }
    async fn get(&self, id: &SessionId) -> Result<Session> {
        self.inner.get(id).await
    }
    async fn get_many(&self, ids: &[SessionId]) -> Result<Vec<Option<Session>>> {
        self.inner.get_many(ids).await
    }
    async fn update(&self, session: &Session) -> Result<Session> {
        self.inner.update(session).await
    }
    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.inner.touch(id).await
    }
    async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.inner.delete(id).await
    }
    async fn list(&self, cursor: Option<&Cursor>, limit: usize) -> Result<Page<Session>> {
        self.inner.list(cursor, limit).await
    }
    async fn count(&self) -> Result<u64> {
        self.inner.count().await
    }
    async fn append_frame(&self, id: &SessionId, frame: Frame) -> Result<FrameId> {
        self.inner.append_frame(id, frame).await
    }
    async fn append_frames(&self, id: &SessionId, frames: Vec<Frame>) -> Result<Vec<FrameId>> {
        self.inner.append_frames(id, frames).await
    }
    async fn read_frames(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<Vec<StoredFrame>> {
        self.inner.read_frames(id, after, limit).await
    }
    async fn read_frames_page(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<FramePage> {
        self.inner.read_frames_page(id, after, limit).await
    }
    async fn count_frames(&self, id: &SessionId) -> Result<u64> {
        self.inner.count_frames(id).await
    }
    async fn delete_frames(&self, id: &SessionId) -> Result<u64> {
        self.inner.delete_frames(id).await
    }
    async fn purge_expired(&self) -> Result<u64> {
        let outcome = if self.failing.load(Ordering::SeqCst) {
            Err(Error::unavailable("injected purge failure"))
        } else {
            self.inner.purge_expired().await
        };
        let report = match &outcome {
            Ok(removed) => Ok(*removed),
            Err(error) => Err(Error::unavailable(error.to_string())),
        };
        let _ = self.purges.send(report);
        outcome
    }
    async fn health(&self) -> Result<Health> {
        self.inner.health().await
    }
    async fn kv_get(&self, key: &KvKey) -> Result<Option<KvEntry>> {
        self.inner.kv_get(key).await
    }
    async fn kv_put(
        &self,
        key: &KvKey,
        value: &[u8],
        ttl: Duration,
        condition: KvCondition,
    ) -> Result<KvPut> {
        self.inner.kv_put(key, value, ttl, condition).await
    }
    async fn kv_delete(&self, key: &KvKey, condition: KvCondition) -> Result<bool> {
        self.inner.kv_delete(key, condition).await
    }
}

async fn observed_memory_store(
    clock: &ManualClock,
) -> (Arc<ObservedStore>, mpsc::UnboundedReceiver<Result<u64>>) {
    let config = StorageConfig::from_toml_str("[storage]\nttl = \"10m\"").unwrap();
    let inner = build_with_clock(&config, Arc::new(clock.clone()))
        .await
        .unwrap();
    let (purges, reports) = mpsc::unbounded_channel();
    let store = Arc::new(ObservedStore {
        inner,
        purges,
        failing: AtomicBool::new(false),
    });
    (store, reports)
}

/// Lets the paused runtime run the purge task after one interval.
async fn next_purge(reports: &mut mpsc::UnboundedReceiver<Result<u64>>) -> Result<u64> {
    tokio::time::advance(INTERVAL).await;
    tokio::time::timeout(INTERVAL, reports.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn purges_expired_sessions_every_interval() {
    let clock = ManualClock::starting_now();
    let (store, mut reports) = observed_memory_store(&clock).await;
    for _ in 0..3 {
        store
            .create(NewSession::new(SessionId::random().unwrap()))
            .await
            .unwrap();
    }
    let task = PurgeTask::spawn(store.clone(), INTERVAL);

    assert_eq!(
        next_purge(&mut reports).await.unwrap(),
        0,
        "nothing expired yet"
    );
    clock.advance(Duration::from_secs(11 * 60));
    assert_eq!(
        next_purge(&mut reports).await.unwrap(),
        3,
        "all three expired"
    );
    assert_eq!(next_purge(&mut reports).await.unwrap(), 0, "already purged");

    task.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_purge_does_not_stop_the_task() {
    let clock = ManualClock::starting_now();
    let (store, mut reports) = observed_memory_store(&clock).await;
    store
        .create(NewSession::new(SessionId::random().unwrap()))
        .await
        .unwrap();
    let task = PurgeTask::spawn(store.clone(), INTERVAL);

    store.failing.store(true, Ordering::SeqCst);
    assert!(next_purge(&mut reports).await.is_err());
    assert!(task.is_running());

    store.failing.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(11 * 60));
    assert_eq!(next_purge(&mut reports).await.unwrap(), 1);

    task.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns_without_waiting_for_the_next_interval() {
    let clock = ManualClock::starting_now();
    let (store, mut reports) = observed_memory_store(&clock).await;
    let task = PurgeTask::spawn(store, Duration::from_secs(24 * 3600));

    // With time paused, a shutdown that waited for the next tick would never
    // finish; the timeout turns such a hang into a failure.
    tokio::time::timeout(Duration::from_secs(1), task.shutdown())
        .await
        .unwrap();
    assert!(reports.try_recv().is_err(), "no purge ran before shutdown");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_task_stops_it() {
    let clock = ManualClock::starting_now();
    let (store, mut reports) = observed_memory_store(&clock).await;
    let task = PurgeTask::spawn(store.clone(), INTERVAL);
    drop(task);

    tokio::time::advance(INTERVAL * 3).await;
    tokio::task::yield_now().await;
    assert!(reports.try_recv().is_err(), "a dropped task purges no more");
}
