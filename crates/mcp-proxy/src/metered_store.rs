//! A `SessionStore` wrapper that times every operation for `/metrics`, so the
//! handlers use the store as usual and never forget to measure.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use session_store::{
    Cursor, Error, Frame, FrameId, FramePage, Health, KvCondition, KvEntry, KvKey, KvPut,
    NewSession, Page, Result, Session, SessionId, SessionStore, StoredFrame,
};

use tracing::Instrument;

use crate::{metrics::Metrics, telemetry};

/// Forwards every call to `inner`, recording its latency and outcome.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`, reporting to `metrics`.
    pub fn new(inner: Arc<dyn SessionStore>, metrics: Arc<Metrics>) -> Self {
        MeteredStore { inner, metrics }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let outcome = call.instrument(telemetry::store_span(operation)).await;
        self.metrics
            .store_operation(operation, started.elapsed(), store_failed(&outcome));
        outcome
    }
}

/// Whether `outcome` counts in `mcp_proxy_store_operation_errors_total`: an
/// error of the store, not one of the contract's answers about a session
/// (NotFound: a client's stale or deleted id; AlreadyExists, Conflict: a
/// repeated create, a lost race), which clients cause on a healthy store.
fn store_failed<T>(outcome: &Result<T>) -> bool {
    match outcome {
        Ok(_) => false,
        Err(Error::NotFound(_) | Error::AlreadyExists(_) | Error::Conflict { .. }) => false,
        Err(_) => true,
    }
}

#[async_trait]
impl SessionStore for MeteredStore {
    async fn create(&self, new: NewSession) -> Result<Session> {
        let session = self.timed("create", self.inner.create(new)).await?;
        self.metrics.session_created();
        Ok(session)
    }

    fn new_session_id(&self) -> Result<SessionId> {
        self.inner.new_session_id()
    }

    async fn get(&self, id: &SessionId) -> Result<Session> {
        self.timed("get", self.inner.get(id)).await
    }

    async fn get_many(&self, ids: &[SessionId]) -> Result<Vec<Option<Session>>> {
        self.timed("get_many", self.inner.get_many(ids)).await
    }

    async fn update(&self, session: &Session) -> Result<Session> {
        self.timed("update", self.inner.update(session)).await
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.timed("touch", self.inner.touch(id)).await
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.timed("delete", self.inner.delete(id)).await
    }

    async fn list(&self, cursor: Option<&Cursor>, limit: usize) -> Result<Page<Session>> {
        self.timed("list", self.inner.list(cursor, limit)).await
    }

    async fn count(&self) -> Result<u64> {
        self.timed("count", self.inner.count()).await
    }

    async fn append_frame(&self, id: &SessionId, frame: Frame) -> Result<FrameId> {
        let direction = frame.direction;
        let frame_id = self
            .timed("append_frame", self.inner.append_frame(id, frame))
            .await?;
        self.metrics.frame_appended(direction);
        Ok(frame_id)
    }

    /// Timed as one operation, `append_frames` (one store round trip for the
    /// batch); every frame counts in the frames-appended metric.
    async fn append_frames(&self, id: &SessionId, frames: Vec<Frame>) -> Result<Vec<FrameId>> {
        let directions: Vec<_> = frames.iter().map(|frame| frame.direction).collect();
        let frame_ids = self
            .timed("append_frames", self.inner.append_frames(id, frames))
            .await?;
        for direction in directions {
            self.metrics.frame_appended(direction);
        }
        Ok(frame_ids)
    }

    async fn read_frames(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<Vec<StoredFrame>> {
        self.timed("read_frames", self.inner.read_frames(id, after, limit))
            .await
    }

    async fn read_frames_page(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<FramePage> {
        // Timed as `read_frames`: the same store work, with the gap report.
        self.timed("read_frames", self.inner.read_frames_page(id, after, limit))
            .await
    }

    async fn count_frames(&self, id: &SessionId) -> Result<u64> {
        self.timed("count_frames", self.inner.count_frames(id))
            .await
    }

    async fn delete_frames(&self, id: &SessionId) -> Result<u64> {
        self.timed("delete_frames", self.inner.delete_frames(id))
            .await
    }

    async fn purge_expired(&self) -> Result<u64> {
        self.timed("purge_expired", self.inner.purge_expired())
            .await
    }

    async fn health(&self) -> Result<Health> {
        self.timed("health", self.inner.health()).await
    }

    fn readings(&self) -> Vec<(&'static str, f64)> {
        self.inner.readings()
    }

    async fn kv_get(&self, key: &KvKey) -> Result<Option<KvEntry>> {
        self.timed("kv_get", self.inner.kv_get(key)).await
    }

    async fn kv_put(
        &self,
        key: &KvKey,
        value: &[u8],
        ttl: Duration,
        condition: KvCondition,
    ) -> Result<KvPut> {
        self.timed("kv_put", self.inner.kv_put(key, value, ttl, condition))
            .await
    }

    async fn kv_delete(&self, key: &KvKey, condition: KvCondition) -> Result<bool> {
        self.timed("kv_delete", self.inner.kv_delete(key, condition))
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use session_store::{Direction, MemoryStore, StoreSettings, Timestamp};

    use super::*;

    #[tokio::test]
    async fn a_missing_session_is_no_store_error_and_a_refused_frame_is() {
        let metrics = Arc::new(Metrics::default());
        let settings = StoreSettings {
            max_frame_bytes: 16,
            ..StoreSettings::default()
        };
        let store = MeteredStore::new(
            Arc::new(MemoryStore::new(settings).unwrap()),
            metrics.clone(),
        );
        let errors = |operation: &str| {
            let text = metrics.render(None);
            let line =
                format!("mcp_proxy_store_operation_errors_total{{operation=\"{operation}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .map_or(0, |n| n.parse::<u64>().unwrap())
        };
        let missing = SessionId::random().unwrap();
        assert!(matches!(store.get(&missing).await, Err(Error::NotFound(_))));
        assert_eq!(errors("get"), 0, "a stale id is an answer, not a failure");

        let session = store
            .create(NewSession::new(SessionId::random().unwrap()))
            .await
            .unwrap();
        let oversized = Frame::new(
            Direction::ClientToServer,
            Timestamp::from_millis(1),
            vec![b'x'; 64],
        );
        assert!(matches!(
            store.append_frame(&session.id, oversized).await,
            Err(Error::InvalidInput(_))
        ));
        assert_eq!(errors("append_frame"), 1);
    }
}
