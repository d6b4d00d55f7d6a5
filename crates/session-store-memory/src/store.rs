//! `MemoryStore`: the sessions of this process, sharded by id, implementing
//! [`SessionStore`].
//!
//! Every operation reads the clock once, then takes one shard lock: a read lock for
//! everything that acts on one existing session (get, touch, update, append, read),
//! a write lock only to add or remove sessions (create, delete, purge). Nothing on
//! the hot path takes a lock shared by all sessions. The trait methods are thin
//! async wrappers over the synchronous methods here, which never await.

use std::{fmt, ops::Bound, sync::Arc, time::Instant};

use async_trait::async_trait;
use session_store_core::{
    expiry_after_activity, Clock, Cursor, Error, Frame, FrameId, FramePage, Health, KvCondition,
    KvEntry, KvKey, KvPut, NewSession, Page, Result, Session, SessionId, SessionStore,
    StoreSettings, StoredFrame, Timestamp, MAX_PAGE_SIZE,
};

use crate::{
    builder::MemoryStoreBuilder,
    capacity::SessionCapacity,
    cursor::ListPosition,
    entry::{check_session_size, SessionEntry},
    kv::KvMap,
    shard::{shard_index, PurgeReport, Shard, ShardState},
};

/// The in-process session store: the default backend, needing no external service.
///
/// Sessions live as long as the process (or until they expire); clones of an
/// `Arc<MemoryStore>` share them. Build one with [`MemoryStore::new`] or
/// [`MemoryStore::builder`].
pub struct MemoryStore {
    shards: Box<[Shard]>,
    shard_mask: usize,
    settings: StoreSettings,
    capacity: SessionCapacity,
    clock: Arc<dyn Clock>,
    kv: KvMap,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("max_sessions", &self.capacity.limit())
            .field("settings", &self.settings)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store with these settings, the system clock, the default shard count and no
    /// session cap. Invalid settings are [`Error::Config`].
    pub fn new(settings: StoreSettings) -> Result<Self> {
        MemoryStore::builder().settings(settings).build()
    }

    /// A builder for the other options (session cap, shard count, clock).
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::default()
    }

    pub(crate) fn from_builder(builder: MemoryStoreBuilder) -> Self {
        MemoryStore {
            shards: (0..builder.shards).map(|_| Shard::default()).collect(),
            shard_mask: builder.shards - 1,
            settings: builder.settings,
            capacity: SessionCapacity::new(builder.max_sessions),
            clock: builder.clock,
            kv: KvMap::default(),
        }
    }

    /// The policy this store enforces.
    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// How many shards the sessions are spread over.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn shard(&self, id: &SessionId) -> &Shard {
        &self.shards[shard_index(id, self.shard_mask)]
    }

    /// Runs `op` on the live session `id` under its shard's read lock.
    fn with_live<T>(
        &self,
        id: &SessionId,
        op: impl FnOnce(&SessionEntry, Timestamp) -> Result<T>,
    ) -> Result<T> {
        let now = self.clock.now();
        let state = self.shard(id).state.read();
        let entry = state
            .live(id, now)
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        op(entry, now)
    }

    fn create_session(&self, new: NewSession) -> Result<Session> {
        let now = self.clock.now();
        let expires_at =
            expiry_after_activity(now, now, self.settings.ttl, self.settings.max_lifetime);
        let session = new.into_session(now, expires_at);
        check_session_size(&session, &self.settings)?;

        let id = session.id.clone();
        let shard = self.shard(&id);
        for attempt in 0..2 {
            let mut state = shard.state.write();
            match state.sessions.get(&id) {
                Some(existing) if existing.is_live_at(now) => {
                    return Err(Error::AlreadyExists(id));
                }
                Some(_expired) => {
                    // Reusing an expired id: one stored session replaces another.
                    state.remove(&id);
                    state.insert(id, SessionEntry::new(session.clone()));
                    return Ok(session);
                }
                None if self.capacity.try_reserve() => {
                    state.insert(id, SessionEntry::new(session.clone()));
                    return Ok(session);
                }
                None => {}
            }
            drop(state);
            if attempt == 0 {
                // At the cap: expired sessions may be holding slots.
                self.purge_expired_at(now);
            }
        }
        let limit = self.capacity.limit().unwrap_or(usize::MAX);
        Err(Error::CapacityExceeded(format!(
            "the memory store holds its limit of {limit} sessions (max_sessions); \
             raise max_sessions or delete sessions before creating more"
        )))
    }

    fn delete_session(&self, id: &SessionId) -> bool {
        let now = self.clock.now();
        let removed = self.shard(id).state.write().remove(id);
        match removed {
            Some(entry) => {
                self.capacity.release(1);
                entry.is_live_at(now)
            }
            None => false,
        }
    }

    fn list_sessions(&self, cursor: Option<&Cursor>, limit: usize) -> Result<Page<Session>> {
        if limit == 0 {
            return Err(Error::invalid_input(
                "list limit must be at least 1 (pages hold 1 to MAX_PAGE_SIZE sessions)",
            ));
        }
        let now = self.clock.now();
        let start = cursor
            .map(|c| ListPosition::from_cursor(c, self.shards.len()))
            .transpose()?;
        let limit = limit.min(MAX_PAGE_SIZE);
        let (first_shard, mut after) = match start {
            Some(position) => (position.shard, Some(position.last_id)),
            None => (0, None),
        };
        let mut items = Vec::with_capacity(limit);
        for (shard_number, shard) in self.shards.iter().enumerate().skip(first_shard) {
            let state = shard.state.read();
            let lower = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
            for (id, entry) in state.sessions.range((lower, Bound::Unbounded)) {
                if !entry.is_live_at(now) {
                    continue;
                }
                items.push(entry.snapshot());
                if items.len() == limit {
                    let position = ListPosition {
                        shard: shard_number,
                        last_id: id.clone(),
                    };
                    return Ok(Page {
                        items,
                        next_cursor: Some(position.to_cursor()),
                    });
                }
            }
            after = None;
        }
        Ok(Page {
            items,
            next_cursor: None,
        })
    }

    fn count_live(&self) -> u64 {
        let now = self.clock.now();
        let live: usize = self
            .shards
            .iter()
            .map(|shard| shard.state.read().count_live(now))
            .sum();
        u64::try_from(live).unwrap_or(u64::MAX)
    }

    /// Purges every shard that has candidates, taking its write lock only then.
    pub(crate) fn purge_expired_at(&self, now: Timestamp) -> PurgeReport {
        let mut total = PurgeReport::default();
        for shard in self.shards.iter() {
            if !shard.state.read().has_expiry_candidates(now) {
                continue;
            }
            let report = ShardState::purge_expired(&mut shard.state.write(), now);
            total.add(report);
        }
        if total.inspected > 0 {
            self.capacity
                .release(usize::try_from(total.removed).unwrap_or(usize::MAX));
            tracing::debug!(
                removed = total.removed,
                inspected = total.inspected,
                "purged expired sessions from memory"
            );
        }
        total
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, new: NewSession) -> Result<Session> {
        self.create_session(new)
    }

    async fn get(&self, id: &SessionId) -> Result<Session> {
        self.with_live(id, |entry, _| Ok(entry.snapshot()))
    }

    async fn get_many(&self, ids: &[SessionId]) -> Result<Vec<Option<Session>>> {
        ids.iter()
            .map(
                |id| match self.with_live(id, |entry, _| Ok(entry.snapshot())) {
                    Ok(session) => Ok(Some(session)),
                    Err(Error::NotFound(_)) => Ok(None),
                    Err(other) => Err(other),
                },
            )
            .collect()
    }

    async fn update(&self, session: &Session) -> Result<Session> {
        self.with_live(&session.id, |entry, now| {
            entry.update(session, now, &self.settings)
        })
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.with_live(id, |entry, now| {
            entry.mark_activity(now, &self.settings);
            Ok(())
        })
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        Ok(self.delete_session(id))
    }

    async fn list(&self, cursor: Option<&Cursor>, limit: usize) -> Result<Page<Session>> {
        self.list_sessions(cursor, limit)
    }

    async fn count(&self) -> Result<u64> {
        Ok(self.count_live())
    }

    async fn append_frame(&self, id: &SessionId, frame: Frame) -> Result<FrameId> {
        let ids = self.append_frames(id, vec![frame]).await?;
        ids.first().copied().ok_or_else(|| {
            Error::corrupt(format!("appending to session `{id}` returned no frame id"))
        })
    }

    /// Checks every frame first, then appends them all under the session's
    /// lock (one shard read lock, one session lock).
    async fn append_frames(&self, id: &SessionId, frames: Vec<Frame>) -> Result<Vec<FrameId>> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        for frame in &frames {
            self.settings.check_frame(frame)?;
        }
        self.with_live(id, |entry, now| {
            Ok(entry.append_frames(frames, now, &self.settings))
        })
    }

    async fn read_frames(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<Vec<StoredFrame>> {
        self.read_frames_page(id, after, limit)
            .await
            .map(|page| page.frames)
    }

    async fn read_frames_page(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<FramePage> {
        self.with_live(id, |entry, _| {
            Ok(entry.read_frames(after, limit, &self.settings))
        })
    }

    async fn count_frames(&self, id: &SessionId) -> Result<u64> {
        self.with_live(id, |entry, _| Ok(entry.count_frames()))
    }

    async fn delete_frames(&self, id: &SessionId) -> Result<u64> {
        self.with_live(id, |entry, _| Ok(entry.delete_frames()))
    }

    /// Removes expired sessions (counted in the result) and expired small values.
    async fn purge_expired(&self) -> Result<u64> {
        let now = self.clock.now();
        self.kv.purge_expired(now);
        Ok(self.purge_expired_at(now).removed)
    }

    async fn health(&self) -> Result<Health> {
        let started = Instant::now();
        let live = self.count_live();
        Ok(Health {
            backend: "memory",
            latency: started.elapsed(),
            detail: format!("{live} live sessions in {} shards", self.shards.len()),
            degraded: false,
            readings: Vec::new(),
        })
    }

    async fn kv_get(&self, key: &KvKey) -> Result<Option<KvEntry>> {
        Ok(self.kv.get(key, self.clock.now()))
    }

    async fn kv_put(
        &self,
        key: &KvKey,
        value: &[u8],
        ttl: std::time::Duration,
        condition: KvCondition,
    ) -> Result<KvPut> {
        self.kv.put(
            key,
            value,
            ttl,
            condition,
            self.clock.now(),
            self.settings.max_kv_value_bytes,
        )
    }

    async fn kv_delete(&self, key: &KvKey, condition: KvCondition) -> Result<bool> {
        Ok(self.kv.delete(key, condition, self.clock.now()))
    }
}
