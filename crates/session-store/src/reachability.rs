//! Whether the backend answers, as an operator reads it in the log: one line
//! when calls start failing with
//! [`Unavailable`](session_store_core::Error::Unavailable), one when
//! it answers again, never one per call. [`Reachability`] keeps the state (the
//! fallback's breaker uses it too); [`LoggedReachability`] wraps a Redis store
//! built without `fallback_to_memory`, whose outages nothing else would log.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use parking_lot::Mutex;
use session_store_core::{
    Cursor, Frame, FrameId, FramePage, Health, KvCondition, KvEntry, KvKey, KvPut, NewSession,
    Page, Result, Session, SessionId, SessionStore, StoredFrame,
};

/// Calls failed since the backend last answered, and since when.
#[derive(Debug, Default)]
pub(crate) struct Reachability {
    /// Calls that failed with Unavailable since the last answer (0: answering).
    failed_calls: AtomicU64,
    /// When the first of them failed.
    first_failure: Mutex<Option<Instant>>,
}

/// How long the backend did not answer, reported when it answers again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unanswered {
    /// Calls that failed with Unavailable meanwhile.
    pub(crate) failed_calls: u64,
    /// From the first of them to the answer.
    pub(crate) down_for: Duration,
}

impl Reachability {
    /// A call failed with Unavailable. True for the first since the backend
    /// last answered: the caller logs that it stopped answering.
    pub(crate) fn failed(&self) -> bool {
        if self.failed_calls.fetch_add(1, Ordering::Relaxed) == 0 {
            *self.first_failure.lock() = Some(Instant::now());
            true
        } else {
            false
        }
    }

    /// A call was answered (any answer but Unavailable). `Some` for the first
    /// answer after failed calls: the caller logs that it answers again. One
    /// atomic load while the backend answers.
    pub(crate) fn answered(&self) -> Option<Unanswered> {
        if self.failed_calls.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let failed_calls = self.failed_calls.swap(0, Ordering::Relaxed);
        if failed_calls == 0 {
            return None;
        }
        let down_for = self
            .first_failure
            .lock()
            .take()
            .map_or(Duration::ZERO, |first| first.elapsed());
        Some(Unanswered {
            failed_calls,
            down_for,
        })
    }
}

/// Forwards every call to the store it wraps and logs, once each, when calls
/// start failing with Unavailable (warn: `session store: redis unavailable;
/// calls fail until it answers again`) and when it answers again (info:
/// `session store: redis answers again`, with `down_for` and `failed_calls`).
/// [`build`](crate::build) wraps a Redis store built without
/// `fallback_to_memory` in it; with the fallback, its breaker logs instead.
#[derive(Debug)]
pub(crate) struct LoggedReachability<S> {
    inner: S,
    reachability: Reachability,
}

impl<S: SessionStore> LoggedReachability<S> {
    pub(crate) fn new(inner: S) -> Self {
        LoggedReachability {
            inner,
            reachability: Reachability::default(),
        }
    }

    /// Notes the outcome of a call, logging a change of reachability.
    fn noted<T>(&self, outcome: Result<T>) -> Result<T> {
        match &outcome {
            Err(error) if error.is_retryable() => {
                if self.reachability.failed() {
                    tracing::warn!(
                        %error,
                        "session store: redis unavailable; calls fail until it answers again (fallback_to_memory is off)"
                    );
                }
            }
            _ => {
                if let Some(unanswered) = self.reachability.answered() {
                    tracing::info!(
                        down_for = ?unanswered.down_for,
                        failed_calls = unanswered.failed_calls,
                        "session store: redis answers again"
                    );
                }
            }
        }
        outcome
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for LoggedReachability<S> {
    async fn create(&self, new: NewSession) -> Result<Session> {
        self.noted(self.inner.create(new).await)
    }

    fn new_session_id(&self) -> Result<SessionId> {
        self.inner.new_session_id()
    }

    async fn get(&self, id: &SessionId) -> Result<Session> {
        self.noted(self.inner.get(id).await)
    }

    async fn get_many(&self, ids: &[SessionId]) -> Result<Vec<Option<Session>>> {
        self.noted(self.inner.get_many(ids).await)
    }

    async fn update(&self, session: &Session) -> Result<Session> {
        self.noted(self.inner.update(session).await)
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.noted(self.inner.touch(id).await)
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.noted(self.inner.delete(id).await)
    }

    async fn list(&self, cursor: Option<&Cursor>, limit: usize) -> Result<Page<Session>> {
        self.noted(self.inner.list(cursor, limit).await)
    }

    async fn count(&self) -> Result<u64> {
        self.noted(self.inner.count().await)
    }

    async fn append_frame(&self, id: &SessionId, frame: Frame) -> Result<FrameId> {
        self.noted(self.inner.append_frame(id, frame).await)
    }

    async fn append_frames(&self, id: &SessionId, frames: Vec<Frame>) -> Result<Vec<FrameId>> {
        self.noted(self.inner.append_frames(id, frames).await)
    }

    async fn read_frames(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<Vec<StoredFrame>> {
        self.noted(self.inner.read_frames(id, after, limit).await)
    }

    async fn read_frames_page(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<FramePage> {
        self.noted(self.inner.read_frames_page(id, after, limit).await)
    }

    async fn count_frames(&self, id: &SessionId) -> Result<u64> {
        self.noted(self.inner.count_frames(id).await)
    }

    async fn delete_frames(&self, id: &SessionId) -> Result<u64> {
        self.noted(self.inner.delete_frames(id).await)
    }

    async fn purge_expired(&self) -> Result<u64> {
        self.noted(self.inner.purge_expired().await)
    }

    async fn health(&self) -> Result<Health> {
        self.noted(self.inner.health().await)
    }

    fn readings(&self) -> Vec<(&'static str, f64)> {
        self.inner.readings()
    }

    async fn kv_get(&self, key: &KvKey) -> Result<Option<KvEntry>> {
        self.noted(self.inner.kv_get(key).await)
    }

    async fn kv_put(
        &self,
        key: &KvKey,
        value: &[u8],
        ttl: Duration,
        condition: KvCondition,
    ) -> Result<KvPut> {
        self.noted(self.inner.kv_put(key, value, ttl, condition).await)
    }

    async fn kv_delete(&self, key: &KvKey, condition: KvCondition) -> Result<bool> {
        self.noted(self.inner.kv_delete(key, condition).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_per_change_however_many_calls() {
        let reachability = Reachability::default();
        assert_eq!(
            reachability.answered(),
            None,
            "answering: nothing to report"
        );
        assert!(reachability.failed(), "the first failure is reported");
        assert!(!reachability.failed(), "the next ones are not");
        assert!(!reachability.failed());
        let back = reachability
            .answered()
            .expect("the first answer is reported");
        assert_eq!(back.failed_calls, 3);
        assert_eq!(reachability.answered(), None, "the next ones are not");
        assert!(reachability.failed(), "a new outage is reported again");
    }
}
