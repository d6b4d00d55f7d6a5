//! Store writes that need not finish before the client is answered: a JSON
//! reply's frame, an upstream stream's resume point. They are queued and written
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

use crate::metrics::Metrics;

/// Writes waiting to be written, at most: beyond this [`Recorder::record`] waits.
pub const QUEUE_CAPACITY: usize = 4096;

/// Writes taken from the queue and written together, at most.
pub const MAX_BATCH: usize = 256;

/// Frames larger than this are appended alone, never in a batch: a batch the
/// store refuses is lost whole, and a frame too large for the store
/// (`max_frame_bytes`, 4 MiB by default) must cost only itself. Frames this
/// large gain nothing from sharing a round trip anyway.
pub const SOLO_FRAME_BYTES: usize = 64 * 1024;

/// A write queued for the background task.
#[derive(Debug)]
enum Write {
    /// Append a frame to a session.
    Frame { session: SessionId, frame: Frame },
    /// Put a small keyed value (last write of a key in a batch wins).
    Value {
        key: KvKey,
        value: Vec<u8>,
        ttl: Duration,
    },
    /// Answer once every write queued before this one is written.
    Flush(oneshot::Sender<()>),
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
        self.enqueue(Write::Frame {
            session: session.clone(),
            frame,
        })
        .await;
    }

    /// Queues a put of `value` under `key` with `ttl` (condition: any). Best
    /// effort, as every caller's value is a hint: a failure is logged at debug.
    pub async fn put_value(&self, key: KvKey, value: Vec<u8>, ttl: Duration) {
        self.enqueue(Write::Value { key, value, ttl }).await;
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
        let mut frames: Vec<(SessionId, Vec<Frame>)> = Vec::new();
        let mut session_index: HashMap<SessionId, usize> = HashMap::new();
        let mut values: Vec<(KvKey, Vec<u8>, Duration)> = Vec::new();
        for write in batch.drain(..) {
            match write {
                Write::Frame { session, frame } => match session_index.get(&session) {
                    Some(&index) => frames[index].1.push(frame),
                    None => {
                        session_index.insert(session.clone(), frames.len());
                        frames.push((session, vec![frame]));
                    }
                },
                Write::Value { key, value, ttl } => {
                    values.retain(|(queued, _, _)| queued != &key);
                    values.push((key, value, ttl));
                }
                Write::Flush(done) => flushed.push(done),
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
    }
}

/// Appends one session's `frames` in order with as few round trips as it can:
/// runs of frames up to [`SOLO_FRAME_BYTES`] in one
/// [`append_frames`](SessionStore::append_frames) call each, a larger frame
/// alone (so a frame the store refuses as too large, `max_frame_bytes`, costs
/// only itself). Returns each frame's id, `None` for a frame not recorded (counted
/// in `mcp_proxy_frames_not_recorded_total` and logged with `what`).
pub async fn append_batch(
    store: &dyn SessionStore,
    metrics: &Metrics,
    session: &SessionId,
    frames: Vec<Frame>,
    what: &str,
) -> Vec<Option<FrameId>> {
    let mut ids = Vec::with_capacity(frames.len());
    let mut run = Vec::new();
    for frame in frames {
        if frame.payload.len() > SOLO_FRAME_BYTES {
            append_run(
                store,
                metrics,
                session,
                std::mem::take(&mut run),
                what,
                &mut ids,
            )
            .await;
            append_run(store, metrics, session, vec![frame], what, &mut ids).await;
        } else {
            run.push(frame);
        }
    }
    append_run(store, metrics, session, run, what, &mut ids).await;
    ids
}

async fn append_run(
    store: &dyn SessionStore,
    metrics: &Metrics,
    session: &SessionId,
    run: Vec<Frame>,
    what: &str,
    ids: &mut Vec<Option<FrameId>>,
) {
    let count = run.len();
    let appended = match count {
        0 => return,
        1 => match run.into_iter().next() {
            Some(frame) => store.append_frame(session, frame).await.map(|id| vec![id]),
            None => return,
        },
        _ => store.append_frames(session, run).await,
    };
    match appended {
        Ok(appended) if appended.len() == count => ids.extend(appended.into_iter().map(Some)),
        Ok(appended) => {
            // A backend breaking the contract: use none of its ids.
            let error = StoreError::Corrupt(format!(
                "append_frames returned {} ids for {count} frames",
                appended.len()
            ));
            not_recorded(metrics, session, count, &error, what);
            ids.extend(std::iter::repeat_n(None, count));
        }
        Err(error) => {
            not_recorded(metrics, session, count, &error, what);
            ids.extend(std::iter::repeat_n(None, count));
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
    tracing::warn!(session = %session, frames = count, %error, "{what} forwarded without being recorded");
}

async fn put(store: &dyn SessionStore, key: KvKey, value: Vec<u8>, ttl: Duration) {
    if let Err(error) = store.kv_put(&key, &value, ttl, KvCondition::Any).await {
        tracing::debug!(%key, %error, "keyed value not written");
    }
}
