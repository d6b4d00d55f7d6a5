//! Store writes that need not finish before the client is answered: a JSON
//! reply's frame, the frames that answer an SSE reply stream's last open
//! request, an upstream stream's resume point, and the release of a stream's
//! lease behind its last frames. They are queued and written
//! by one background task per instance, so no store round trip sits between
//! the upstream's reply and the client.
//!
//! - **Bounded, never dropping**: the queue holds [`QUEUE_CAPACITY`] writes; when
//!   it is full, [`Recorder::record`] waits for room (back-pressure on the
//!   handlers) rather than lose a frame.
//! - **Ordered per session**: writes are taken in queue order, a batch at a time
//!   (up to [`MAX_BATCH`]); a batch's frames of one session go to the store in
//!   one [`append_frames`](session_store::SessionStore::append_frames) call, in
//!   queue order, and a batch is written completely before the next one starts.
//!   Different sessions of one batch are written concurrently.
//! - **Drained on a graceful stop**: [`Recorder::flush`] returns once everything
//!   queued before it is written; the server calls it after the listeners have
//!   stopped and before the process exits. A SIGKILL loses what is still queued
//!   (the client already has it; JSON replies are not resumable).
//! - A frame the store refuses counts in `mcp_proxy_frames_not_recorded_total`,
//!   as on the request path.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::join_all;
use session_store::{
    Error as StoreError, Frame, FrameId, KvCondition, KvKey, SessionId, SessionStore,
};
use tokio::sync::{mpsc, oneshot};

use crate::{lease::RenewedLease, metrics::Metrics};

/// Writes waiting to be written, at most: beyond this [`Recorder::record`] waits.
pub const QUEUE_CAPACITY: usize = 4096;

/// Writes taken from the queue and written together, at most.
pub const MAX_BATCH: usize = 256;

/// A write queued for the background task.
#[derive(Debug)]
enum Write {
    /// Append frames to a session, in order.
    Frames {
        session: SessionId,
        frames: Vec<Frame>,
    },
    /// Put a small keyed value (last write of a key in a batch wins).
    Value {
        key: KvKey,
        value: Vec<u8>,
        ttl: Duration,
    },
    /// Answer once every write queued before this one is written.
    Flush(oneshot::Sender<()>),
    /// Release a stream's lease once every write queued before it is written.
    Release(RenewedLease),
}

/// The per-instance queue of background store writes (see the module doc).
#[derive(Debug, Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Write>,
}

impl Recorder {
    /// Starts the background task writing into `store`. Needs a tokio runtime.
    pub fn start(store: Arc<dyn SessionStore>, metrics: Arc<Metrics>) -> Self {
        let (queue, writes) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_queued(writes, store, metrics));
        Recorder { queue }
    }

    /// Queues `frame` for `session`; waits only while the queue is full.
    pub async fn record(&self, session: &SessionId, frame: Frame) {
        self.record_all(session, vec![frame]).await;
    }

    /// Queues `frames` for `session` as one write: they go to the store in one
    /// [`append_frames`](SessionStore::append_frames) call with whatever else
    /// of the session is in the same batch. Waits only while the queue is full.
    pub async fn record_all(&self, session: &SessionId, frames: Vec<Frame>) {
        if frames.is_empty() {
            return;
        }
        self.enqueue(Write::Frames {
            session: session.clone(),
            frames,
        })
        .await;
    }

    /// Queues a put of `value` under `key` with `ttl` (condition: any). Best
    /// effort, as every caller's value is a hint: a failure is logged at debug.
    pub async fn put_value(&self, key: KvKey, value: Vec<u8>, ttl: Duration) {
        self.enqueue(Write::Value { key, value, ttl }).await;
    }

    /// Releases `lease` once every write queued before this call is written (or
    /// failed): a stream whose last frames are queued stays held until they
    /// are in the store. Waits only while the queue is full.
    pub async fn release_after_queued(&self, lease: RenewedLease) {
        self.enqueue(Write::Release(lease)).await;
    }

    /// Returns once every write queued before this call is written (or failed).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Write::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    async fn enqueue(&self, write: Write) {
        if self.queue.send(write).await.is_err() {
            // Only when the task is gone (runtime shutting down): nothing can
            // write it any more.
            tracing::warn!("background store writer is gone; a write was not recorded");
        }
    }
}

/// The background task: takes batches off the queue and writes them, until
/// every [`Recorder`] is dropped.
async fn write_queued(
    mut writes: mpsc::Receiver<Write>,
    store: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while writes.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut flushed = Vec::new();
        let mut released = Vec::new();
        let mut frames: Vec<(SessionId, Vec<Frame>)> = Vec::new();
        let mut session_index: HashMap<SessionId, usize> = HashMap::new();
        let mut values: Vec<(KvKey, Vec<u8>, Duration)> = Vec::new();
        for write in batch.drain(..) {
            match write {
                Write::Frames {
                    session,
                    frames: queued,
                } => match session_index.get(&session) {
                    Some(&index) => frames[index].1.extend(queued),
                    None => {
                        session_index.insert(session.clone(), frames.len());
                        frames.push((session, queued));
                    }
                },
                Write::Value { key, value, ttl } => {
                    values.retain(|(queued, _, _)| queued != &key);
                    values.push((key, value, ttl));
                }
                Write::Flush(done) => flushed.push(done),
                Write::Release(lease) => released.push(lease),
            }
        }
        let appends = join_all(frames.into_iter().map(|(session, frames)| {
            let (store, metrics) = (store.as_ref(), metrics.as_ref());
            async move { append_batch(store, metrics, &session, frames, "reply").await }
        }));
        let puts = join_all(
            values
                .into_iter()
                .map(|(key, value, ttl)| put(store.as_ref(), key, value, ttl)),
        );
        futures::join!(appends, puts);
        for done in flushed {
            let _ = done.send(());
        }
        for lease in released {
            lease.release();
        }
    }
}

/// Appends one session's `frames` in order with one
/// [`append_frames`](SessionStore::append_frames) call (one round trip). When
/// the store refuses a batch of several frames as `InvalidInput` (a batch is
/// atomic for it: one frame over `max_frame_bytes`, 4 MiB by default, refuses
/// them all), the batch is appended again frame by frame, so such a frame costs
/// only itself. Returns each frame's id, `None` for a frame not recorded
/// (counted in `mcp_proxy_frames_not_recorded_total` and logged with `what`).
pub async fn append_batch(
    store: &dyn SessionStore,
    metrics: &Metrics,
    session: &SessionId,
    frames: Vec<Frame>,
    what: &str,
) -> Vec<Option<FrameId>> {
    let count = frames.len();
    if count == 0 {
        return Vec::new();
    }
    // Kept for the frame-by-frame retry; a batch of one needs none (its frame
    // is the one refused).
    let retry = (count > 1).then(|| frames.clone());
    match store.append_frames(session, frames).await {
        Ok(appended) if appended.len() == count => appended.into_iter().map(Some).collect(),
        Ok(appended) => {
            // A backend breaking the contract: use none of its ids.
            let error = StoreError::Corrupt(format!(
                "append_frames returned {} ids for {count} frames",
                appended.len()
            ));
            not_recorded(metrics, session, count, &error, what);
            vec![None; count]
        }
        Err(StoreError::InvalidInput(_)) if retry.is_some() => {
            let mut ids = Vec::with_capacity(count);
            for frame in retry.into_iter().flatten() {
                ids.push(match store.append_frame(session, frame).await {
                    Ok(id) => Some(id),
                    Err(error) => {
                        not_recorded(metrics, session, 1, &error, what);
                        None
                    }
                });
            }
            ids
        }
        Err(error) => {
            not_recorded(metrics, session, count, &error, what);
            vec![None; count]
        }
    }
}

fn not_recorded(
    metrics: &Metrics,
    session: &SessionId,
    count: usize,
    error: &StoreError,
    what: &str,
) {
    for _ in 0..count {
        metrics.frame_not_recorded();
    }
    log_not_recorded(
        session,
        count,
        error,
        error.is_retryable(),
        &format!("{what} forwarded without being recorded"),
    );
}

/// Logs `message` about `frames` messages of `session` that were forwarded
/// without being recorded because of `error`: at warn, unless the store is
/// unavailable (`store_unavailable`). An
/// outage is logged once by the store (`session store: ... unavailable`,
/// docs/operations.md) and counted per message in
/// `mcp_proxy_frames_not_recorded_total`; a warn line per message would repeat
/// it for every request of the outage, so those lines are debug.
pub(crate) fn log_not_recorded(
    session: &SessionId,
    frames: usize,
    error: &dyn std::fmt::Display,
    store_unavailable: bool,
    message: &str,
) {
    if store_unavailable {
        tracing::debug!(session = %session, frames, %error, "{message}");
    } else {
        tracing::warn!(session = %session, frames, %error, "{message}");
    }
}

async fn put(store: &dyn SessionStore, key: KvKey, value: Vec<u8>, ttl: Duration) {
    if let Err(error) = store.kv_put(&key, &value, ttl, KvCondition::Any).await {
        tracing::debug!(%key, %error, "keyed value not written");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use session_store::{
        Clock, Cursor, Direction, FramePage, Health, KvEntry, KvPut, MemoryStore, NewSession, Page,
        Result, Session, StoreSettings, StoredFrame, SystemClock,
    };

    use super::*;

    /// A memory store that logs the append calls it gets (method, frames),
    /// and holds `append_frames` back while `open` is false.
    #[derive(Debug)]
    struct Logged {
        inner: MemoryStore,
        calls: Mutex<Vec<(&'static str, usize)>>,
        open: tokio::sync::watch::Sender<bool>,
    }

    #[async_trait]
    impl SessionStore for Logged {
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
            self.calls.lock().unwrap().push(("append_frame", 1));
            self.inner.append_frame(id, frame).await
        }
        async fn append_frames(&self, id: &SessionId, frames: Vec<Frame>) -> Result<Vec<FrameId>> {
            self.calls
                .lock()
                .unwrap()
                .push(("append_frames", frames.len()));
            let _ = self.open.subscribe().wait_for(|open| *open).await;
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
            self.inner.purge_expired().await
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

    #[tokio::test]
    async fn a_batch_refused_as_invalid_is_appended_frame_by_frame_so_only_the_big_frame_is_lost() {
        let settings = StoreSettings {
            max_frame_bytes: 1024,
            ..StoreSettings::default()
        };
        let store = Logged {
            inner: MemoryStore::new(settings).unwrap(),
            calls: Mutex::new(Vec::new()),
            open: tokio::sync::watch::channel(true).0,
        };
        let session = store
            .create(NewSession::new(SessionId::new("s1").unwrap()))
            .await
            .unwrap()
            .id;
        let metrics = Metrics::default();
        let frame = |bytes: usize| {
            Frame::new(
                Direction::ServerToClient,
                SystemClock.now(),
                vec![b'x'; bytes],
            )
        };
        let frames = vec![frame(10), frame(4096), frame(20)];
        let ids = append_batch(&store, &metrics, &session, frames, "event").await;
        let calls = store.calls.lock().unwrap().clone();
        println!("append calls for 3 frames, the middle one over max_frame_bytes: {calls:?}");
        assert_eq!(
            calls,
            [
                ("append_frames", 3),
                ("append_frame", 1),
                ("append_frame", 1),
                ("append_frame", 1)
            ]
        );
        assert!(ids[0].is_some() && ids[1].is_none() && ids[2].is_some());
        let stored = store.read_frames(&session, None, 10).await.unwrap();
        let sizes: Vec<usize> = stored.iter().map(|s| s.frame.payload.len()).collect();
        assert_eq!(sizes, [10, 20], "only the big frame is lost");
        assert!(metrics
            .render(None)
            .contains("mcp_proxy_frames_not_recorded_total 1"));
        // A batch the store takes costs one call.
        store.calls.lock().unwrap().clear();
        let ids = append_batch(
            &store,
            &metrics,
            &session,
            vec![frame(1), frame(2)],
            "event",
        )
        .await;
        assert_eq!(ids.iter().flatten().count(), 2);
        assert_eq!(store.calls.lock().unwrap().clone(), [("append_frames", 2)]);
    }

    #[tokio::test]
    async fn a_lease_released_behind_queued_frames_is_held_until_they_are_written() {
        use crate::{
            event_id::StreamId,
            lease::{is_held, lease_key, StreamLease},
        };
        let store = Arc::new(Logged {
            inner: MemoryStore::new(StoreSettings::default()).unwrap(),
            calls: Mutex::new(Vec::new()),
            open: tokio::sync::watch::channel(false).0,
        });
        let session = store
            .create(NewSession::new(SessionId::new("s1").unwrap()))
            .await
            .unwrap()
            .id;
        let key = lease_key(&session, &StreamId::new_get()).unwrap();
        let lease = StreamLease::take_over(store.as_ref(), &key)
            .await
            .unwrap()
            .expect("nobody holds it")
            .keep_renewed(store.clone());
        let recorder = Recorder::start(store.clone(), Arc::new(Metrics::default()));
        let frame = Frame::new(Direction::ServerToClient, SystemClock.now(), b"{}".to_vec());
        recorder.record_all(&session, vec![frame]).await;
        recorder.release_after_queued(lease).await;
        // The append reached the store and waits there.
        for _ in 0..1_000 {
            if !store.calls.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(store.calls.lock().unwrap().clone(), [("append_frames", 1)]);
        tokio::task::yield_now().await;
        assert!(
            is_held(store.as_ref(), &key).await.unwrap(),
            "held while its stream's last frames are not written"
        );
        store.open.send_replace(true);
        recorder.flush().await;
        let mut held = true;
        for _ in 0..1_000 {
            held = is_held(store.as_ref(), &key).await.unwrap();
            if !held {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!held, "released once they are");
        assert_eq!(
            store.read_frames(&session, None, 10).await.unwrap().len(),
            1
        );
    }
}
