//! The [`SessionStore`] implementation of [`FallbackStore`]: each call is routed
//! by the breaker to the primary, to the journal, or to what is remembered.

use std::time::Duration;

use async_trait::async_trait;
use session_store_core::{
    Cursor, Error, Frame, FrameId, FramePage, Health, KvCondition, KvEntry, KvKey, KvPut,
    NewSession, Page, Result, Session, SessionId, SessionStore, StoredFrame,
};
use session_store_redis::REMEMBERED_APPEND_KEYS;
use tokio::sync::OwnedMutexGuard;

use super::{
    add,
    breaker::Route,
    journal::{self, DirtySession},
    outage_id, FallbackPrimary, FallbackStore, Inner,
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

    /// The primary's answer about session `id` when it is final (`None`: fall
    /// over to memory). A NotFound for an id minted by a fallback store within
    /// `outage_id_grace` becomes Unavailable, unless the primary knows it was
    /// deleted: the session may wait in another instance's journal.
    async fn answer<T: Send>(&self, id: &SessionId, result: Result<T>) -> Option<Result<T>> {
        if !self.settle(Some(id), &result) {
            return None;
        }
        match result {
            Err(Error::NotFound(_)) if self.may_be_journaled_elsewhere(id).await => {
                Some(Err(self.journaled_elsewhere(id)))
            }
            other => Some(other),
        }
    }

    /// Whether a session the primary does not hold may still be in another
    /// instance's journal: its id is a recent outage id and the primary has no
    /// record of deleting it.
    async fn may_be_journaled_elsewhere(&self, id: &SessionId) -> bool {
        if !outage_id::may_be_journaled(id, self.clock.now(), self.outage_id_grace) {
            return false;
        }
        // When the primary cannot tell, assume it may be journaled.
        !matches!(self.primary.deleted_recently(id).await, Ok(true))
    }

    fn journaled_elsewhere(&self, id: &SessionId) -> Error {
        add(&self.counters.outage_ids_unavailable, 1);
        Error::unavailable(format!(
            "session `{id}` is not in the primary session store yet: it was created during an \
             outage and may still wait for write-back from another instance; retry later"
        ))
    }

    /// Applies `change` to a journal entry, holding the journal to
    /// `journal_max_bytes`: `grows` bytes (what the change may add) are reserved
    /// first, and the change is refused with Unavailable when they do not fit.
    fn change<T>(
        &self,
        dirty: &mut DirtySession,
        grows: u64,
        change: impl FnOnce(&mut DirtySession) -> Result<T>,
    ) -> Result<T> {
        if let Err(full) = self.journal.reserve(grows) {
            add(&self.counters.journal_full, 1);
            return Err(full);
        }
        let before = dirty.bytes();
        let newest = dirty.newest_frame_id();
        let result = change(dirty);
        self.journal.settle(grows, before, dirty.bytes());
        if result.is_ok() {
            let appended = dirty.newest_frame_id().is_some() && dirty.newest_frame_id() != newest;
            self.persist(dirty, appended)?;
        }
        result
    }

    /// With `journal_dir`: writes the entry's new state to disk and fsyncs it,
    /// before the change is acknowledged.
    pub(super) fn persist(&self, dirty: &DirtySession, appended: bool) -> Result<()> {
        match &self.disk {
            Some(disk) => disk.append(&dirty.record(appended)),
            None => Ok(()),
        }
    }

    /// A new journal entry: its bytes are reserved (Unavailable when full).
    fn admit(&self, make: impl FnOnce() -> Result<DirtySession>) -> Result<DirtySession> {
        let dirty = make()?;
        if let Err(full) = self.journal.reserve(dirty.bytes()) {
            add(&self.counters.journal_full, 1);
            return Err(full);
        }
        Ok(dirty)
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
                || {
                    self.admit(|| match self.known.get(id) {
                        Some(known) if known.session.expires_at > now => Ok(
                            DirtySession::from_known(known, self.primary.new_append_key()),
                        ),
                        _ => Err(self.not_in_memory(id)),
                    })
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
                self.admit(|| {
                    Ok(DirtySession::created(
                        session.clone(),
                        self.primary.new_append_key(),
                    ))
                })
            },
            || self.breaker.mark_draining(),
        )?;
        if inserted {
            self.persist(&*entry.lock().await, false)?;
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
        self.change(&mut existing, journal::session_bytes(&session), |dirty| {
            dirty.recreate(session.clone());
            Ok(())
        })?;
        add(&self.counters.served_from_memory, 1);
        Ok(session)
    }

    /// Appends `frames` (checked by the caller) to the journal entry in order,
    /// each under its key, holding the entry's lock throughout; each frame is
    /// its own journal change (and disk record).
    fn append_in_memory(
        &self,
        dirty: &mut DirtySession,
        frames: Vec<Frame>,
        keys: Vec<session_store_redis::AppendKey>,
    ) -> Result<Vec<FrameId>> {
        let mut ids = Vec::with_capacity(frames.len());
        for (frame, key) in frames.into_iter().zip(keys) {
            let grows = journal::frame_bytes(&frame);
            let now = self.clock.now();
            ids.push(self.change(dirty, grows, |d| {
                d.append(frame, key, now, &self.settings, self.tag)
            })?);
        }
        Ok(ids)
    }

    /// Appends a batch of at most [`REMEMBERED_APPEND_KEYS`] frames: to the
    /// primary in one call, each frame under a fresh key, or to the journal
    /// (under the same keys, so a batch that reached the primary after all is
    /// not stored twice by the write-back).
    async fn append_batch(&self, id: &SessionId, frames: Vec<Frame>) -> Result<Vec<FrameId>> {
        let keys: Vec<_> = frames
            .iter()
            .map(|_| self.primary.new_append_key())
            .collect();
        let route = self.breaker.route();
        if route != Route::Memory {
            if route == Route::Mixed {
                if let Some(mut dirty) = self.dirty(id).await {
                    return self.append_in_memory(&mut dirty, frames, keys);
                }
            }
            let result = self
                .primary
                .append_frames_with_keys(id, &frames, &keys)
                .await;
            if let Some(result) = self.answer(id, result).await {
                if let Ok(frame_ids) = &result {
                    let now = self.clock.now();
                    for frame_id in frame_ids {
                        self.known.note_append(id, *frame_id, now, &self.settings);
                    }
                }
                return result;
            }
        }
        let mut dirty = self.dirty_for_write(id).await?;
        self.append_in_memory(&mut dirty, frames, keys)
    }

    fn delete_frames_in_memory(&self, dirty: &mut DirtySession, id: &SessionId) -> Result<u64> {
        let now = self.clock.now();
        self.change(dirty, 0, |d| {
            d.delete_frames(now)
                .unwrap_or_else(|| Err(self.not_in_memory(id)))
        })
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

    /// A marked id carrying its mint time (see `docs/operations.md`, "Fleet
    /// semantics"), so that while it may wait in this instance's journal no
    /// other instance answers NotFound for it.
    fn new_session_id(&self) -> Result<SessionId> {
        outage_id::mint(self.inner.clock.now())
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
            if let Some(result) = inner.answer(id, result).await {
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
                let sessions = result?;
                for (id, session) in ids.iter().zip(&sessions) {
                    match session {
                        Some(session) => inner.known.remember(session),
                        None if inner.may_be_journaled_elsewhere(id).await => {
                            return Err(inner.journaled_elsewhere(id));
                        }
                        None => {}
                    }
                }
                return Ok(sessions);
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
        let now = || inner.clock.now();
        let grows = journal::session_bytes(session);
        let route = inner.breaker.route();
        if route != Route::Memory {
            if route == Route::Mixed {
                if let Some(mut dirty) = inner.dirty(id).await {
                    return inner.change(&mut dirty, grows, |d| {
                        d.update(session, now(), &inner.settings)
                    });
                }
            }
            let result = inner.primary.update(session).await;
            if let Some(result) = inner.answer(id, result).await {
                if let Ok(stored) = &result {
                    inner.known.remember(stored);
                }
                return result;
            }
        }
        let mut dirty = inner.dirty_for_write(id).await?;
        inner.change(&mut dirty, grows, |d| {
            d.update(session, now(), &inner.settings)
        })
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        let inner = &self.inner;
        let now = || inner.clock.now();
        let route = inner.breaker.route();
        if route != Route::Memory {
            if route == Route::Mixed {
                if let Some(mut dirty) = inner.dirty(id).await {
                    return inner.change(&mut dirty, 0, |d| d.touch(now(), &inner.settings));
                }
            }
            let result = inner.primary.touch(id).await;
            if let Some(result) = inner.answer(id, result).await {
                return result;
            }
        }
        let mut dirty = inner.dirty_for_write(id).await?;
        inner.change(&mut dirty, 0, |d| d.touch(now(), &inner.settings))
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        let inner = &self.inner;
        let now = || inner.clock.now();
        let route = inner.breaker.route();
        if route != Route::Memory {
            if route == Route::Mixed {
                if let Some(mut dirty) = inner.dirty(id).await {
                    return inner.change(&mut dirty, 0, |d| Ok(d.delete(now())));
                }
            }
            // Deleting a session missing here is not an error; the primary keeps
            // a record of the delete (its tombstone), so a write-back of the id
            // by another instance does not bring it back.
            let result = inner.primary.delete(id).await;
            if inner.settle(Some(id), &result) {
                inner.known.forget(id);
                return result;
            }
        }
        let mut dirty = inner.dirty_for_write(id).await?;
        inner.change(&mut dirty, 0, |d| Ok(d.delete(now())))
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
        let ids = self.inner.append_batch(id, vec![frame]).await?;
        ids.first().copied().ok_or_else(|| {
            Error::corrupt(format!("appending to session `{id}` returned no frame id"))
        })
    }

    /// Sends the batch to the primary in chunks of at most
    /// [`REMEMBERED_APPEND_KEYS`] frames (one call each), so every frame of a
    /// chunk whose reply was lost is still remembered by its key when the
    /// journal writes it back. Every frame is checked before any is stored.
    async fn append_frames(&self, id: &SessionId, frames: Vec<Frame>) -> Result<Vec<FrameId>> {
        for frame in &frames {
            self.inner.settings.check_frame(frame)?;
        }
        let mut ids = Vec::with_capacity(frames.len());
        let mut rest = frames;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(REMEMBERED_APPEND_KEYS));
            let chunk = std::mem::replace(&mut rest, tail);
            ids.extend(self.inner.append_batch(id, chunk).await?);
        }
        Ok(ids)
    }

    async fn read_frames(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<Vec<StoredFrame>> {
        Ok(self.read_frames_page(id, after, limit).await?.frames)
    }

    async fn read_frames_page(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<FramePage> {
        let inner = &self.inner;
        let route = inner.breaker.route();
        let from_journal = |dirty: &DirtySession| match dirty.read(
            after,
            limit,
            inner.clock.now(),
            &inner.settings,
        ) {
            Some(result) => result,
            None => Err(inner.not_in_memory(id)),
        };
        if route != Route::Memory {
            if route == Route::Mixed {
                if let Some(dirty) = inner.dirty(id).await {
                    return from_journal(&dirty);
                }
            }
            let result = inner.primary.read_frames_page(id, after, limit).await;
            if let Some(result) = inner.answer(id, result).await {
                return result;
            }
        }
        if let Some(dirty) = inner.dirty(id).await {
            return from_journal(&dirty);
        }
        // Nothing was appended here: a reader already past the last id the
        // primary handed out has nothing new to read.
        match (inner.known.get(id).and_then(|k| k.last_frame_id), after) {
            (Some(last), Some(after)) if after >= last => {
                add(&inner.counters.served_from_memory, 1);
                Ok(FramePage::default())
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
            if let Some(result) = inner.answer(id, result).await {
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
                    return inner.delete_frames_in_memory(&mut dirty, id);
                }
            }
            let result = inner.primary.delete_frames(id).await;
            if let Some(result) = inner.answer(id, result).await {
                return result;
            }
        }
        match inner.dirty(id).await {
            Some(mut dirty) => inner.delete_frames_in_memory(&mut dirty, id),
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
    /// and a detail saying so. Either way `degraded` is set while the store
    /// serves from its journal, and `readings` carry the primary's own (the Redis
    /// pool's, while it answers) and [`FallbackStats::readings`]
    /// (breaker state, journal bytes and sessions, write-back progress,
    /// quarantined sessions) for the proxy's `/metrics`.
    ///
    /// [`FallbackStats::readings`]: super::FallbackStats::readings
    async fn health(&self) -> Result<Health> {
        let inner = &self.inner;
        if inner.breaker.recovery_route() != Route::Memory {
            let result = inner.primary.health().await;
            if inner.settle(None, &result) {
                let stats = self.stats();
                return result.map(|health| Health {
                    detail: format!(
                        "{}; fallback breaker {}",
                        health.detail,
                        stats.state.as_str()
                    ),
                    degraded: health.degraded || stats.degraded(),
                    // The primary's own readings (Redis pool) and the breaker's.
                    readings: health
                        .readings
                        .into_iter()
                        .chain(stats.readings())
                        .collect(),
                    ..health
                });
            }
        }
        let stats = self.stats();
        Ok(Health {
            backend: "memory-fallback",
            latency: Duration::ZERO,
            detail: format!(
                "primary unreachable, circuit breaker {}: serving {} remembered sessions from memory, \
                 {} waiting for write-back ({} of {} journal bytes), {} quarantined",
                stats.state.as_str(),
                stats.remembered_sessions,
                stats.dirty_sessions,
                stats.journal_bytes,
                stats.journal_max_bytes,
                stats.quarantined_sessions
            ),
            degraded: true,
            // The primary's readings it holds itself (Redis pool, near cache)
            // continue while it is unreachable.
            readings: self
                .inner
                .primary
                .readings()
                .into_iter()
                .chain(stats.readings())
                .collect(),
        })
    }

    fn readings(&self) -> Vec<(&'static str, f64)> {
        let mut readings = self.inner.primary.readings();
        readings.extend(self.stats().readings());
        readings
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
