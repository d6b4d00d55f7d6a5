//! The [`SessionStore`] implementation of [`FallbackStore`]: each call is routed
//! by the breaker to the primary, to the journal, or to what is remembered.

use std::time::Duration;

use async_trait::async_trait;
use session_store_core::{
    Cursor, Error, Frame, FrameId, Health, KvCondition, KvEntry, KvKey, KvPut, NewSession, Page,
    Result, Session, SessionId, SessionStore, StoredFrame,
};
use tokio::sync::OwnedMutexGuard;

use super::{
    add,
    breaker::Route,
    journal::{self, DirtySession},
    FallbackPrimary, FallbackStore, Inner,
};

/// Bound on re-routing a call whose session was written back while it waited.
const ROUTE_ATTEMPTS: usize = 4;

impl<P: FallbackPrimary> Inner<P> {
    /// Unavailable for a session this instance cannot serve from memory.
    fn not_in_memory(&self, id: &SessionId) -> Error {
        add(&self.counters.unavailable, 1);
        Error::unavailable(format!(
            "the primary session store is unreachable (circuit breaker {}) and session `{id}` \
             is not among the sessions this instance can serve from memory; retry later",
            self.breaker.state().as_str()
        ))
    }

    /// Whether the primary's answer is final. A retryable failure is counted and
    /// the caller falls over to memory.
    pub(super) fn settle<T>(&self, id: Option<&SessionId>, result: &Result<T>) -> bool {
        match result {
            Err(error) if error.is_retryable() => {
                self.breaker.record_failure(error);
                false
            }
            Err(Error::NotFound(_)) => {
                self.breaker.record_success();
                if let Some(id) = id {
                    self.known.forget(id);
                }
                true
            }
            _ => {
                self.breaker.record_success();
                true
            }
        }
    }

    /// The journal entry of `id` while it waits for write-back.
    async fn dirty(&self, id: &SessionId) -> Option<OwnedMutexGuard<DirtySession>> {
        for _ in 0..ROUTE_ATTEMPTS {
            let entry = self.journal.get(id)?;
            let guard = entry.lock_owned().await;
            if !guard.written_back {
                add(&self.counters.served_from_memory, 1);
                return Some(guard);
            }
        }
        None
    }

    /// The journal entry to write `id` to, made from the remembered session when
    /// there is none; Unavailable for a session not remembered, or remembered
    /// with an expiry that has passed (touches are not remembered, so it may
    /// still be live in the primary: never a false NotFound).
    async fn dirty_for_write(&self, id: &SessionId) -> Result<OwnedMutexGuard<DirtySession>> {
        for _ in 0..ROUTE_ATTEMPTS {
            let now = self.clock.now();
            let (entry, _) = self.journal.get_or_insert(
                id,
                || match self.known.get(id) {
                    Some(known) if known.session.expires_at > now => Ok(DirtySession::from_known(
                        known,
                        self.primary.new_append_key(),
                    )),
                    _ => Err(self.not_in_memory(id)),
                },
                || self.breaker.mark_draining(),
            )?;
            let guard = entry.lock_owned().await;
            if !guard.written_back {
                add(&self.counters.served_from_memory, 1);
                return Ok(guard);
            }
        }
        Err(self.not_in_memory(id))
    }

    /// A remembered session for a read, when its remembered expiry has not
    /// passed (touches and other instances may have slid it since, so a passed
    /// expiry is Unavailable, not NotFound).
    fn remembered(&self, id: &SessionId) -> Result<Session> {
        match self.known.get(id) {
            Some(known) if known.session.expires_at > self.clock.now() => {
                add(&self.counters.served_from_memory, 1);
                Ok(known.session)
            }
            _ => Err(self.not_in_memory(id)),
        }
    }

    async fn create_in_memory(&self, new: NewSession) -> Result<Session> {
        let now = self.clock.now();
        let id = new.id.clone();
        if self
            .known
            .get(&id)
            .is_some_and(|k| k.session.expires_at > now)
        {
            return Err(Error::AlreadyExists(id));
        }
        let session = journal::new_session(new, now, &self.settings)?;
        let (entry, inserted) = self.journal.get_or_insert(
            &id,
            || {
                Ok(DirtySession::created(
                    session.clone(),
                    self.primary.new_append_key(),
                ))
            },
            || self.breaker.mark_draining(),
        )?;
        if inserted {
            add(&self.counters.served_from_memory, 1);
            return Ok(session);
        }
        let mut existing = entry.lock().await;
        if existing.written_back {
            // Written back while we waited: the primary decides.
            return Err(self.not_in_memory(&id));
        }
        if existing.is_live(now) {
            return Err(Error::AlreadyExists(id));
        }
        // Deleted or expired during the outage: the id may be reused.
        existing.recreate(session.clone());
        add(&self.counters.served_from_memory, 1);
        Ok(session)
    }

    async fn get_in_memory(&self, id: &SessionId) -> Result<Session> {
        match self.dirty(id).await {
            Some(dirty) => dirty.get(self.clock.now()),
            None => self.remembered(id),
        }
    }
}

#[async_trait]
impl<P: FallbackPrimary> SessionStore for FallbackStore<P> {
    async fn create(&self, new: NewSession) -> Result<Session> {
        let inner = &self.inner;
        if inner.breaker.route() != Route::Memory {
            let result = inner.primary.create(new.clone()).await;
            if inner.settle(None, &result) {
                if let Ok(session) = &result {
                    inner.known.remember(session);
                }
                return result;
            }
        }
        inner.create_in_memory(new).await
    }

    async fn get(&self, id: &SessionId) -> Result<Session> {
        let inner = &self.inner;
        let route = inner.breaker.route();
        if route != Route::Memory {
            if route == Route::Mixed {
                if let Some(dirty) = inner.dirty(id).await {
                    return dirty.get(inner.clock.now());
                }
            }
            let result = inner.primary.get(id).await;
            if inner.settle(Some(id), &result) {
                if let Ok(session) = &result {
                    inner.known.remember(session);
                }
                return result;
            }
        }
        inner.get_in_memory(id).await
    }

    async fn get_many(&self, ids: &[SessionId]) -> Result<Vec<Option<Session>>> {
        let inner = &self.inner;
        if inner.breaker.route() == Route::Primary {
            let result = inner.primary.get_many(ids).await;
            if inner.settle(None, &result) {
                if let Ok(sessions) = &result {
                    sessions
                        .iter()
                        .flatten()
                        .for_each(|s| inner.known.remember(s));
                }
                return result;
            }
        }
        // Session by session, so each one is routed like `get`.
        let mut sessions = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get(id).await {
                Ok(session) => sessions.push(Some(session)),
                Err(Error::NotFound(_)) => sessions.push(None),
                Err(error) => return Err(error),
            }
        }
        Ok(sessions)
    }

    async fn update(&self, session: &Session) -> Result<Session> {
        let inner = &self.inner;
        let id = &session.id;
        let route = inner.breaker.route();
        if route != Route::Memory {
            if route == Route::Mixed {
                if let Some(mut dirty) = inner.dirty(id).await {
                    return dirty.update(session, inner.clock.now(), &inner.settings);
                }
            }
            let result = inner.primary.update(session).await;
            if inner.settle(Some(id), &result) {
                if let Ok(stored) = &result {
                    inner.known.remember(stored);
                }
                return result;
            }
        }
        let mut dirty = inner.dirty_for_write(id).await?;
        dirty.update(session, inner.clock.now(), &inner.settings)
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        let inner = &self.inner;
        let route = inner.breaker.route();
        if route != Route::Memory {
            if route == Route::Mixed {
                if let Some(mut dirty) = inner.dirty(id).await {
                    return dirty.touch(inner.clock.now(), &inner.settings);
                }
            }
            let result = inner.primary.touch(id).await;
            if inner.settle(Some(id), &result) {
                return result;
            }
        }
        let mut dirty = inner.dirty_for_write(id).await?;
        dirty.touch(inner.clock.now(), &inner.settings)
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        let inner = &self.inner;
        let route = inner.breaker.route();
        if route != Route::Memory {
            if route == Route::Mixed {
                if let Some(mut dirty) = inner.dirty(id).await {
                    return Ok(dirty.delete(inner.clock.now()));
                }
            }
            let result = inner.primary.delete(id).await;
            if inner.settle(Some(id), &result) {
                inner.known.forget(id);
                return result;
            }
        }
        let mut dirty = inner.dirty_for_write(id).await?;
        Ok(dirty.delete(inner.clock.now()))
    }

    async fn list(&self, cursor: Option<&Cursor>, limit: usize) -> Result<Page<Session>> {
        let inner = &self.inner;
        if inner.breaker.route() == Route::Memory {
            add(&inner.counters.unavailable, 1);
            return Err(Error::unavailable(
                "the primary session store is unreachable (circuit breaker open): \
                 sessions cannot be listed until it is back",
            ));
        }
        let result = inner.primary.list(cursor, limit).await;
        inner.settle(None, &result);
        result
    }

    async fn count(&self) -> Result<u64> {
        let inner = &self.inner;
        if inner.breaker.route() == Route::Memory {
            add(&inner.counters.unavailable, 1);
            return Err(Error::unavailable(
                "the primary session store is unreachable (circuit breaker open): \
                 sessions cannot be counted until it is back",
            ));
        }
        let result = inner.primary.count().await;
        inner.settle(None, &result);
        result
    }

    async fn append_frame(&self, id: &SessionId, frame: Frame) -> Result<FrameId> {
        let inner = &self.inner;
        let key = inner.primary.new_append_key();
        let route = inner.breaker.route();
        if route != Route::Memory {
            if route == Route::Mixed {
                if let Some(mut dirty) = inner.dirty(id).await {
                    return dirty.append(frame, key, inner.clock.now(), &inner.settings);
                }
            }
            let result = inner.primary.append_frame_with_key(id, &frame, &key).await;
            if inner.settle(Some(id), &result) {
                if let Ok(frame_id) = &result {
                    let now = inner.clock.now();
                    inner.known.note_append(id, *frame_id, now, &inner.settings);
                }
                return result;
            }
        }
        // The same key as the attempt above: if that append reached the primary
        // after all, the write-back will not store it twice.
        let mut dirty = inner.dirty_for_write(id).await?;
        dirty.append(frame, key, inner.clock.now(), &inner.settings)
    }

    async fn read_frames(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<Vec<StoredFrame>> {
        let inner = &self.inner;
        let route = inner.breaker.route();
        if route != Route::Memory {
            if route == Route::Mixed {
                if let Some(dirty) = inner.dirty(id).await {
                    return match dirty.read(after, limit, inner.clock.now()) {
                        Some(result) => result,
                        None => Err(inner.not_in_memory(id)),
                    };
                }
            }
            let result = inner.primary.read_frames(id, after, limit).await;
            if inner.settle(Some(id), &result) {
                return result;
            }
        }
        if let Some(dirty) = inner.dirty(id).await {
            return match dirty.read(after, limit, inner.clock.now()) {
                Some(result) => result,
                None => Err(inner.not_in_memory(id)),
            };
        }
        // Nothing was appended here: a reader already past the last id the
        // primary handed out has nothing new to read.
        match (inner.known.get(id).and_then(|k| k.last_frame_id), after) {
            (Some(last), Some(after)) if after >= last => {
                add(&inner.counters.served_from_memory, 1);
                Ok(Vec::new())
            }
            _ => Err(inner.not_in_memory(id)),
        }
    }

    async fn count_frames(&self, id: &SessionId) -> Result<u64> {
        let inner = &self.inner;
        let route = inner.breaker.route();
        if route != Route::Memory {
            if route == Route::Mixed {
                if let Some(dirty) = inner.dirty(id).await {
                    return dirty
                        .count_frames(inner.clock.now())
                        .unwrap_or_else(|| Err(inner.not_in_memory(id)));
                }
            }
            let result = inner.primary.count_frames(id).await;
            if inner.settle(Some(id), &result) {
                return result;
            }
        }
        match inner.dirty(id).await {
            Some(dirty) => dirty
                .count_frames(inner.clock.now())
                .unwrap_or_else(|| Err(inner.not_in_memory(id))),
            None => Err(inner.not_in_memory(id)),
        }
    }

    async fn delete_frames(&self, id: &SessionId) -> Result<u64> {
        let inner = &self.inner;
        let route = inner.breaker.route();
        if route != Route::Memory {
            if route == Route::Mixed {
                if let Some(mut dirty) = inner.dirty(id).await {
                    return dirty
                        .delete_frames(inner.clock.now())
                        .unwrap_or_else(|| Err(inner.not_in_memory(id)));
                }
            }
            let result = inner.primary.delete_frames(id).await;
            if inner.settle(Some(id), &result) {
                return result;
            }
        }
        match inner.dirty(id).await {
            Some(mut dirty) => dirty
                .delete_frames(inner.clock.now())
                .unwrap_or_else(|| Err(inner.not_in_memory(id))),
            None => Err(inner.not_in_memory(id)),
        }
    }

    /// While open (or when the primary fails), nothing is purged and 0 is
    /// returned: sessions in memory are few and written back (or dropped, when
    /// expired) on recovery; the next run purges the primary.
    async fn purge_expired(&self) -> Result<u64> {
        let inner = &self.inner;
        inner.kv_secondary.purge_expired().await?;
        if inner.breaker.route() == Route::Memory {
            return Ok(0);
        }
        let result = inner.primary.purge_expired().await;
        if inner.settle(None, &result) {
            return result;
        }
        Ok(0)
    }

    /// The primary's health while it answers. While the breaker is open the store
    /// still serves (degraded), so this succeeds with backend `memory-fallback`
    /// and a detail saying so; watch [`stats`](FallbackStore::stats) for alerts.
    async fn health(&self) -> Result<Health> {
        let inner = &self.inner;
        if inner.breaker.route() != Route::Memory {
            let result = inner.primary.health().await;
            if inner.settle(None, &result) {
                return result.map(|health| Health {
                    detail: format!(
                        "{}; fallback breaker {}",
                        health.detail,
                        inner.breaker.state().as_str()
                    ),
                    ..health
                });
            }
        }
        Ok(Health {
            backend: "memory-fallback",
            latency: Duration::ZERO,
            detail: format!(
                "primary unreachable, circuit breaker {}: serving {} remembered sessions from memory, \
                 {} waiting for write-back",
                inner.breaker.state().as_str(),
                inner.known.len(),
                inner.journal.len()
            ),
        })
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
