//! [`DeferredRedis`]: the primary of a [`FallbackStore`](super::FallbackStore)
//! built while Redis was unreachable (`fallback_to_memory = true` and Redis down
//! at start). Until it connects every call is Unavailable, so the store serves
//! from memory; the breaker's probe connects it, and from then on it is the
//! connected [`RedisStore`].

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use session_store_core::{
    Clock, Cursor, Error, Frame, FrameId, FramePage, Health, KvCondition, KvEntry, KvKey, KvPut,
    NewSession, Page, Result, Session, SessionId, SessionStore, StoreSettings, StoredFrame,
    Timestamp,
};
use session_store_redis::{
    AppendKey, AppendKeys, RedisConfig, RedisStore, SessionWriteBack, WriteBackReport,
};
use tokio::sync::OnceCell;

use super::FallbackPrimary;

/// A Redis primary that connects on the breaker's first successful probe
/// instead of at start.
pub(crate) struct DeferredRedis {
    config: RedisConfig,
    settings: StoreSettings,
    clock: Arc<dyn Clock>,
    store: OnceCell<RedisStore>,
    /// Append keys for journal entries made before the store connected.
    append_keys: AppendKeys,
}

impl fmt::Debug for DeferredRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.store.get() {
            Some(store) => store.fmt(f),
            // RedisConfig's Debug leaves the password out.
            None => f
                .debug_struct("DeferredRedis")
                .field("config", &self.config)
                .field("connected", &false)
                .finish_non_exhaustive(),
        }
    }
}

impl DeferredRedis {
    /// A primary for `config` that has not connected yet; `settings` and `clock`
    /// are handed to [`RedisStore::connect`] when it does.
    pub(crate) fn new(config: RedisConfig, settings: StoreSettings, clock: Arc<dyn Clock>) -> Self {
        DeferredRedis {
            config,
            settings,
            clock,
            store: OnceCell::new(),
            append_keys: AppendKeys::new(),
        }
    }

    /// The connected store, or Unavailable while Redis has not answered since start.
    fn connected(&self) -> Result<&RedisStore> {
        self.store.get().ok_or_else(|| {
            Error::unavailable(
                "redis has not been reachable since this instance started; \
                 the fallback store connects when its probe succeeds",
            )
        })
    }

    /// Connects once; concurrent callers wait for the same attempt. A failure
    /// other than Unavailable (a clock too far from Redis's, a refused script)
    /// is logged at error level: the store keeps serving from memory, but an
    /// operator must act.
    async fn connect(&self) -> Result<&RedisStore> {
        self.store
            .get_or_try_init(|| async {
                let started = std::time::Instant::now();
                let result = RedisStore::connect(
                    self.config.clone(),
                    self.settings.clone(),
                    self.clock.clone(),
                )
                .await;
                match &result {
                    Ok(_) => tracing::info!(
                        took = ?started.elapsed(),
                        "session store: connected to redis, which was unreachable at start"
                    ),
                    Err(error) if error.is_retryable() => {}
                    Err(error) => tracing::error!(
                        %error,
                        "session store: redis answers but the store cannot use it; still serving from memory"
                    ),
                }
                result
            })
            .await
    }
}

#[async_trait]
impl FallbackPrimary for DeferredRedis {
    fn new_append_key(&self) -> AppendKey {
        match self.store.get() {
            Some(store) => store.new_append_key(),
            None => self.append_keys.next_key(),
        }
    }

    async fn append_frame_with_key(
        &self,
        id: &SessionId,
        frame: &Frame,
        key: &AppendKey,
    ) -> Result<FrameId> {
        self.connected()?
            .append_frame_with_key(id, frame, key)
            .await
    }

    async fn append_frames_with_keys(
        &self,
        id: &SessionId,
        frames: &[Frame],
        keys: &[AppendKey],
    ) -> Result<Vec<FrameId>> {
        self.connected()?
            .append_frames_with_keys(id, frames, keys)
            .await
    }

    async fn write_back(&self, write_back: &SessionWriteBack) -> Result<WriteBackReport> {
        self.connected()?.write_back(write_back).await
    }

    async fn deleted_recently(&self, id: &SessionId) -> Result<bool> {
        self.connected()?.deleted_recently(id).await
    }

    async fn delete_replaced(
        &self,
        id: &SessionId,
        replacement_created: Timestamp,
    ) -> Result<bool> {
        self.connected()?
            .delete_replaced(id, replacement_created)
            .await
    }

    /// Connects first when not connected yet, then probes as [`RedisStore`] does.
    async fn probe(&self) -> Result<()> {
        FallbackPrimary::probe(self.connect().await?).await
    }
}

#[async_trait]
impl SessionStore for DeferredRedis {
    async fn create(&self, new: NewSession) -> Result<Session> {
        self.connected()?.create(new).await
    }

    async fn get(&self, id: &SessionId) -> Result<Session> {
        self.connected()?.get(id).await
    }

    async fn get_many(&self, ids: &[SessionId]) -> Result<Vec<Option<Session>>> {
        self.connected()?.get_many(ids).await
    }

    async fn update(&self, session: &Session) -> Result<Session> {
        self.connected()?.update(session).await
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.connected()?.touch(id).await
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.connected()?.delete(id).await
    }

    async fn list(&self, cursor: Option<&Cursor>, limit: usize) -> Result<Page<Session>> {
        self.connected()?.list(cursor, limit).await
    }

    async fn count(&self) -> Result<u64> {
        self.connected()?.count().await
    }

    async fn append_frame(&self, id: &SessionId, frame: Frame) -> Result<FrameId> {
        self.connected()?.append_frame(id, frame).await
    }

    async fn append_frames(&self, id: &SessionId, frames: Vec<Frame>) -> Result<Vec<FrameId>> {
        self.connected()?.append_frames(id, frames).await
    }

    async fn read_frames(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<Vec<StoredFrame>> {
        self.connected()?.read_frames(id, after, limit).await
    }

    async fn read_frames_page(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<FramePage> {
        self.connected()?.read_frames_page(id, after, limit).await
    }

    async fn count_frames(&self, id: &SessionId) -> Result<u64> {
        self.connected()?.count_frames(id).await
    }

    async fn delete_frames(&self, id: &SessionId) -> Result<u64> {
        self.connected()?.delete_frames(id).await
    }

    async fn purge_expired(&self) -> Result<u64> {
        self.connected()?.purge_expired().await
    }

    async fn health(&self) -> Result<Health> {
        self.connected()?.health().await
    }

    fn readings(&self) -> Vec<(&'static str, f64)> {
        self.connected()
            .map(|store| store.readings())
            .unwrap_or_default()
    }

    async fn kv_get(&self, key: &KvKey) -> Result<Option<KvEntry>> {
        self.connected()?.kv_get(key).await
    }

    async fn kv_put(
        &self,
        key: &KvKey,
        value: &[u8],
        ttl: Duration,
        condition: KvCondition,
    ) -> Result<KvPut> {
        self.connected()?.kv_put(key, value, ttl, condition).await
    }

    async fn kv_delete(&self, key: &KvKey, condition: KvCondition) -> Result<bool> {
        self.connected()?.kv_delete(key, condition).await
    }
}
