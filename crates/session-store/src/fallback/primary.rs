//! What [`FallbackStore`](super::FallbackStore) needs from its primary beyond
//! [`SessionStore`]: keyed (idempotent) appends and the write-back of sessions
//! served from memory. [`RedisStore`] provides both.

use async_trait::async_trait;
use session_store_core::{Frame, FrameId, Result, SessionId, SessionStore, Timestamp};
use session_store_redis::{AppendKey, RedisStore, SessionWriteBack, WriteBackReport};

/// A store that [`FallbackStore`](super::FallbackStore) can stand in for.
#[async_trait]
pub trait FallbackPrimary: SessionStore {
    /// A fresh idempotency key for one append.
    fn new_append_key(&self) -> AppendKey;

    /// [`append_frame`](SessionStore::append_frame) under `key`: sending the same
    /// key again stores nothing new and returns the first id.
    async fn append_frame_with_key(
        &self,
        id: &SessionId,
        frame: &Frame,
        key: &AppendKey,
    ) -> Result<FrameId>;

    /// [`append_frames`](SessionStore::append_frames) with one key per frame
    /// (`keys[i]` for `frames[i]`): sending the same batch with the same keys
    /// again stores nothing new and returns the first ids.
    async fn append_frames_with_keys(
        &self,
        id: &SessionId,
        frames: &[Frame],
        keys: &[AppendKey],
    ) -> Result<Vec<FrameId>>;

    /// Writes back a session served from memory (see
    /// [`RedisStore::write_back`] for the merge rules). Safe to repeat.
    async fn write_back(&self, write_back: &SessionWriteBack) -> Result<WriteBackReport>;

    /// Whether `id` was deleted recently (the primary keeps a short record of
    /// deletes, a tombstone in the session's slot). Used for ids minted during
    /// an outage: missing and deleted is NotFound, missing and not deleted may
    /// still be in another instance's journal (Unavailable). The default knows
    /// of no deletes.
    ///
    /// The resurrection seam: [`write_back`](Self::write_back) of a session
    /// deleted meanwhile must be [`Error::NotFound`](session_store_core::Error::NotFound)
    /// (nothing recreated); the fallback store then drops its journal entry and
    /// counts it in `deleted_elsewhere_total`.
    async fn deleted_recently(&self, id: &SessionId) -> Result<bool> {
        let _ = id;
        Ok(false)
    }

    /// Deletes what the primary holds on `id` that was created before
    /// `replacement_created`, before the write-back of a session this store
    /// created on the id during an outage after deleting the older one there
    /// (see [`RedisStore::delete_replaced`]: the delete's tombstone must not
    /// refuse the replacement's write-back, and, arriving late, the delete must
    /// not remove it). The default is [`delete`](SessionStore::delete).
    async fn delete_replaced(
        &self,
        id: &SessionId,
        replacement_created: Timestamp,
    ) -> Result<bool> {
        let _ = replacement_created;
        self.delete(id).await
    }

    /// The breaker's probe: succeeds when the primary can do what the store
    /// needs (for Redis: write and read a canary key on every master holding an
    /// index shard, [`RedisStore::probe_writes`]). The default is
    /// [`health`](SessionStore::health).
    async fn probe(&self) -> Result<()> {
        self.health().await.map(|_| ())
    }
}

#[async_trait]
impl FallbackPrimary for RedisStore {
    fn new_append_key(&self) -> AppendKey {
        RedisStore::new_append_key(self)
    }

    async fn append_frame_with_key(
        &self,
        id: &SessionId,
        frame: &Frame,
        key: &AppendKey,
    ) -> Result<FrameId> {
        RedisStore::append_frame_with_key(self, id, frame, key).await
    }

    async fn append_frames_with_keys(
        &self,
        id: &SessionId,
        frames: &[Frame],
        keys: &[AppendKey],
    ) -> Result<Vec<FrameId>> {
        RedisStore::append_frames_with_keys(self, id, frames, keys).await
    }

    async fn write_back(&self, write_back: &SessionWriteBack) -> Result<WriteBackReport> {
        RedisStore::write_back(self, write_back).await
    }

    async fn probe(&self) -> Result<()> {
        self.probe_writes().await.map(|_| ())
    }

    async fn deleted_recently(&self, id: &SessionId) -> Result<bool> {
        RedisStore::deleted_recently(self, id).await
    }

    async fn delete_replaced(
        &self,
        id: &SessionId,
        replacement_created: Timestamp,
    ) -> Result<bool> {
        RedisStore::delete_replaced(self, id, replacement_created).await
    }
}
