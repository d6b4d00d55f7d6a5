//! The `SessionStore` trait: the contract every backend implements.
//!
//! A proxy holds an `Arc<dyn SessionStore>` and never knows which backend is behind
//! it. Each method's doc states its contract in the edge cases; the conformance suite
//! ([`testing`](crate::testing), feature `testing`) checks every line of it against
//! every backend.
//!
//! ```
//! use session_store_core::{Direction, Frame, NewSession, SessionId, SessionStore, Result};
//!
//! /// What a proxy does when a client initializes and sends its first request.
//! async fn first_exchange(store: &dyn SessionStore, request: &[u8]) -> Result<()> {
//!     let id = SessionId::random()?;
//!     let session = store.create(NewSession::new(id.clone()).with_protocol_version("2025-06-18")).await?;
//!     assert_eq!(session.revision, 1);
//!     let now = session.created_at;
//!     let frame_id = store.append_frame(&id, Frame::new(Direction::ClientToServer, now, request)).await?;
//!     let replay = store.read_frames(&id, None, 100).await?;
//!     assert_eq!(replay[0].id, frame_id);
//!     store.touch(&id).await
//! }
//! ```
//!
//! # Expiry
//!
//! A session expires at `last_activity + ttl`, capped at `created_at + max_lifetime`
//! ([`StoreSettings`](crate::StoreSettings)). Create, update, touch and append are
//! activity and slide the expiry. From the moment it expires, a session behaves as if
//! deleted: every operation on it is [`Error::NotFound`](crate::Error::NotFound),
//! whether or not [`purge_expired`](SessionStore::purge_expired) has run yet.

use std::{fmt, time::Duration};

use async_trait::async_trait;

use crate::{
    Cursor, Frame, FrameId, FramePage, KvCondition, KvEntry, KvKey, KvPut, NewSession, Page,
    Result, Session, SessionId, StoredFrame,
};

/// A session store. Object safe: use it as `Arc<dyn SessionStore>`.
#[async_trait]
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// Stores a new session and returns it with times set, `frame_count` 0 and
    /// `revision` 1.
    ///
    /// Errors: [`AlreadyExists`](crate::Error::AlreadyExists) when a live session has
    /// this id (the stored one is left untouched: create never overwrites);
    /// [`InvalidInput`](crate::Error::InvalidInput) when the encoded session exceeds
    /// `max_session_bytes`. An expired session's id may be reused.
    async fn create(&self, new: NewSession) -> Result<Session>;

    /// A fresh id to [`create`](Self::create) a session with. The default is
    /// [`SessionId::random`]; a backend may mark its ids (the fallback wrapper
    /// carries their mint time, so other instances can tell a session that may
    /// still wait in its outage journal from one that is gone).
    ///
    /// Errors: [`Unavailable`](crate::Error::Unavailable) when the operating
    /// system's random source fails.
    fn new_session_id(&self) -> Result<SessionId> {
        SessionId::random()
    }

    /// The session with this id. [`NotFound`](crate::Error::NotFound) when it never
    /// existed, was deleted or has expired.
    async fn get(&self, id: &SessionId) -> Result<Session>;

    /// Several sessions at once, in the order asked; `None` where [`get`](Self::get)
    /// would be NotFound.
    async fn get_many(&self, ids: &[SessionId]) -> Result<Vec<Option<Session>>>;

    /// Replaces the descriptive fields of a session (see [`Session`]) when
    /// `session.revision` equals the stored revision, and returns the stored result:
    /// revision + 1, `last_activity` now, expiry slid. Times and `frame_count` in the
    /// argument are ignored.
    ///
    /// Errors: [`Conflict`](crate::Error::Conflict) when the revision is stale (of
    /// several concurrent updates carrying the same revision, exactly one wins);
    /// [`NotFound`](crate::Error::NotFound) when the session is gone (never revived).
    async fn update(&self, session: &Session) -> Result<Session>;

    /// Marks activity: `last_activity` becomes now and the expiry slides. The hottest
    /// call; it writes nothing else. [`NotFound`](crate::Error::NotFound) when the
    /// session is gone (a touch never revives or half-creates a session).
    async fn touch(&self, id: &SessionId) -> Result<()>;

    /// Removes the session and all its frames. Returns whether a live session was
    /// removed; deleting a missing session is not an error.
    async fn delete(&self, id: &SessionId) -> Result<bool>;

    /// A page of at most `limit` live sessions (capped at
    /// [`MAX_PAGE_SIZE`](crate::MAX_PAGE_SIZE)), starting after `cursor`. Walking every
    /// page from `None` yields every session that lived throughout the walk exactly
    /// once, even while others are created or deleted. The order is backend-defined.
    /// A cursor not made by this backend, or a `limit` of 0, is
    /// [`InvalidInput`](crate::Error::InvalidInput).
    async fn list(&self, cursor: Option<&Cursor>, limit: usize) -> Result<Page<Session>>;

    /// How many live sessions there are.
    async fn count(&self) -> Result<u64>;

    /// Appends a frame and returns its id, greater than every earlier id of this
    /// session. Atomically bumps `frame_count` and `last_activity` and slides the
    /// expiry; trims the oldest frames beyond `max_frames_per_session`, and while
    /// the session's frames exceed `max_session_frame_bytes` (the new frame is
    /// always kept).
    ///
    /// Errors: [`NotFound`](crate::Error::NotFound) when the session is gone;
    /// [`InvalidInput`](crate::Error::InvalidInput) when the frame exceeds
    /// `max_frame_bytes` (nothing is stored).
    async fn append_frame(&self, id: &SessionId, frame: Frame) -> Result<FrameId>;

    /// Appends `frames` in order, as [`append_frame`](Self::append_frame) would one
    /// after another, and returns their ids, ascending and greater than every
    /// earlier id of this session. `frame_count` grows by the batch's length,
    /// `last_activity` becomes now and the expiry slides; trimming by
    /// `max_frames_per_session` and `max_session_frame_bytes` applies across the
    /// batch as it would frame by frame (the newest frame is always kept, older
    /// frames of the same batch may be trimmed). A backend sends the batch in one
    /// round trip: a relay hands over the events that arrived together and pays
    /// one store round trip for all of them.
    ///
    /// An empty batch stores nothing, returns no ids and asks the backend
    /// nothing (it does not check that the session exists).
    ///
    /// Atomic for the errors the caller can act on: the batch is checked before
    /// anything is stored, so [`InvalidInput`](crate::Error::InvalidInput) (a
    /// frame anywhere in the batch exceeds `max_frame_bytes`) and
    /// [`NotFound`](crate::Error::NotFound) (the session is gone) store nothing
    /// of it. After [`Unavailable`](crate::Error::Unavailable) the ids are
    /// unknown: a prefix of the batch may have been stored, each frame whole or
    /// not at all.
    async fn append_frames(&self, id: &SessionId, frames: Vec<Frame>) -> Result<Vec<FrameId>>;

    /// Up to `limit` frames with ids greater than `after` (from the first when
    /// `None`), oldest first, together at most `max_read_bytes` (but at least
    /// one frame when there is one). A shorter page does not mean the end: read
    /// on after its last id until a page is empty. NotFound when the session is
    /// gone.
    async fn read_frames(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<Vec<StoredFrame>>;

    /// What [`read_frames`](Self::read_frames) returns, and whether frames with
    /// ids greater than `after` were removed (trimmed or deleted) before this
    /// read: [`FramePage::gap`] names the lost range, so a replay can tell its
    /// client it missed events. No gap is reported when `after` is `None`.
    /// Every backend implements it (there is no default: a backend that trims
    /// must report what it trimmed), and wrappers forward it.
    async fn read_frames_page(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<FramePage>;

    /// How many frames are stored for the session now (after trimming).
    async fn count_frames(&self, id: &SessionId) -> Result<u64>;

    /// Removes every frame of the session, keeping the session; returns how many
    /// were removed. Later appends still get ids greater than the removed ones.
    async fn delete_frames(&self, id: &SessionId) -> Result<u64>;

    /// Removes expired sessions and their frames; returns how many were removed. Its
    /// cost grows with the expired sessions, not with all sessions.
    async fn purge_expired(&self) -> Result<u64>;

    /// Checks the backend answers. [`Unavailable`](crate::Error::Unavailable) when not.
    async fn health(&self) -> Result<Health>;

    /// The readings this store holds without asking its backend (connection
    /// pool, near cache, breaker counters; the names as in
    /// [`Health::readings`]), so a metrics endpoint keeps its series while
    /// [`health`](Self::health) fails. No I/O; empty by default. Wrappers
    /// forward their inner store's.
    fn readings(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }

    /// The live value of `key`, or `None` when it was never written, was deleted
    /// or has expired (see [`kv`](crate::KvEntry) for revisions).
    async fn kv_get(&self, key: &KvKey) -> Result<Option<KvEntry>>;

    /// Writes `value` under `key`, live for `ttl` from now (store clock), when
    /// `condition` holds for the stored value at the moment of the write. Of
    /// several concurrent puts with the same condition exactly one is stored; the
    /// others are [`KvPut::Rejected`] with the live value that won.
    ///
    /// Errors: [`InvalidInput`](crate::Error::InvalidInput) when `value` exceeds
    /// `max_kv_value_bytes` or `ttl` is under 1 ms (nothing is stored).
    async fn kv_put(
        &self,
        key: &KvKey,
        value: &[u8],
        ttl: std::time::Duration,
        condition: KvCondition,
    ) -> Result<KvPut>;

    /// Removes the live value of `key` when `condition` holds
    /// ([`KvCondition::Revision`]: only that revision; [`KvCondition::Any`]:
    /// whatever is stored; [`KvCondition::Absent`] removes nothing). Returns whether
    /// a live value was removed; removing a missing value is not an error.
    async fn kv_delete(&self, key: &KvKey, condition: KvCondition) -> Result<bool>;
}

/// What a successful [`SessionStore::health`] check saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    /// The backend's name (`memory`, `redis`, ...).
    pub backend: &'static str,
    /// How long the check took.
    pub latency: Duration,
    /// A one-line description (server version, mode, breaker state, ...).
    pub detail: String,
    /// Serving, but not as configured: the fallback wrapper answers from its
    /// outage journal (breaker open or half-open, or sessions waiting for
    /// write-back). A proxy reports it (`/healthz` 200 with status `degraded`).
    pub degraded: bool,
    /// Named readings for metrics (`session_store_breaker_state`,
    /// `session_store_fallback_journal_bytes`, ...: Prometheus metric names,
    /// gauges or counters as their `_total` suffix says); empty for backends
    /// with nothing to add.
    pub readings: Vec<(&'static str, f64)>,
}
