//! One stored session: the two times every touch writes live in atomics so a touch
//! never waits for a lock on the session; everything else sits behind its mutex.

use std::{
    collections::VecDeque,
    sync::atomic::{AtomicU64, Ordering},
};

use parking_lot::Mutex;
use session_store_core::{
    codec, expiry_after_activity, frames_within_budget, Error, Frame, FrameGap, FrameId, FramePage,
    Result, Session, StoreSettings, StoredFrame, Timestamp,
};

/// A session as the memory store keeps it.
///
/// `last_activity` and `expires_at` only ever grow (`fetch_max`), so concurrent
/// touches, appends and updates commute and the stored expiry is never lower than
/// any expiry once filed in the shard's expiry index.
#[derive(Debug)]
pub(crate) struct SessionEntry {
    created_at: Timestamp,
    last_activity: AtomicU64,
    expires_at: AtomicU64,
    /// The expiry under which the shard's expiry index files this session. Changed
    /// only with the shard's write lock held.
    pub(crate) indexed_expiry: Timestamp,
    state: Mutex<SessionState>,
}

#[derive(Debug)]
struct SessionState {
    /// Authoritative for everything but `last_activity` and `expires_at`.
    session: Session,
    last_frame_id: FrameId,
    frames: VecDeque<StoredFrame>,
    /// Bytes of `frames`, as [`Frame::encoded_size_hint`] counts them.
    frame_bytes: u64,
    /// The newest frame id trimmed or deleted ([`FrameId::ZERO`]: none yet).
    removed_through: FrameId,
}

impl SessionEntry {
    /// Wraps a freshly created session.
    pub(crate) fn new(session: Session) -> Self {
        SessionEntry {
            created_at: session.created_at,
            last_activity: AtomicU64::new(session.last_activity.as_millis()),
            expires_at: AtomicU64::new(session.expires_at.as_millis()),
            indexed_expiry: session.expires_at,
            state: Mutex::new(SessionState {
                session,
                last_frame_id: FrameId::ZERO,
                frames: VecDeque::new(),
                frame_bytes: 0,
                removed_through: FrameId::ZERO,
            }),
        }
    }

    /// When the session expires unless used again.
    pub(crate) fn expires_at(&self) -> Timestamp {
        Timestamp::from_millis(self.expires_at.load(Ordering::Acquire))
    }

    /// Whether the session is still alive at `now` (it expires at `expires_at`).
    pub(crate) fn is_live_at(&self, now: Timestamp) -> bool {
        now < self.expires_at()
    }

    /// Records activity at `now`: `last_activity` becomes now and the expiry slides.
    pub(crate) fn mark_activity(&self, now: Timestamp, settings: &StoreSettings) {
        let expires_at =
            expiry_after_activity(now, self.created_at, settings.ttl, settings.max_lifetime);
        self.last_activity
            .fetch_max(now.as_millis(), Ordering::AcqRel);
        self.expires_at
            .fetch_max(expires_at.as_millis(), Ordering::AcqRel);
    }

    /// The session as a caller sees it.
    pub(crate) fn snapshot(&self) -> Session {
        let state = self.state.lock();
        self.with_times(state.session.clone())
    }

    fn with_times(&self, mut session: Session) -> Session {
        session.last_activity = Timestamp::from_millis(self.last_activity.load(Ordering::Acquire));
        session.expires_at = self.expires_at();
        session
    }

    /// Replaces the descriptive fields when `incoming.revision` is current; see
    /// [`SessionStore::update`](session_store_core::SessionStore::update).
    pub(crate) fn update(
        &self,
        incoming: &Session,
        now: Timestamp,
        settings: &StoreSettings,
    ) -> Result<Session> {
        let mut state = self.state.lock();
        let stored = &state.session;
        if incoming.revision != stored.revision {
            return Err(Error::Conflict {
                id: stored.id.clone(),
                expected: incoming.revision,
                actual: stored.revision,
            });
        }
        let updated = Session {
            id: stored.id.clone(),
            upstream_session_id: incoming.upstream_session_id.clone(),
            transport: incoming.transport,
            status: incoming.status,
            protocol_version: incoming.protocol_version.clone(),
            client_info: incoming.client_info.clone(),
            server_info: incoming.server_info.clone(),
            tags: incoming.tags.clone(),
            created_at: stored.created_at,
            last_activity: now,
            expires_at: expiry_after_activity(
                now,
                stored.created_at,
                settings.ttl,
                settings.max_lifetime,
            ),
            frame_count: stored.frame_count,
            revision: stored.revision.saturating_add(1),
        };
        check_session_size(&updated, settings)?;
        state.session = updated;
        self.mark_activity(now, settings);
        Ok(self.with_times(state.session.clone()))
    }

    /// Appends `frames` in order at `now` under one lock, trims the oldest beyond
    /// the count and byte limits (never the newest), and returns their ids.
    pub(crate) fn append_frames(
        &self,
        frames: Vec<Frame>,
        now: Timestamp,
        settings: &StoreSettings,
    ) -> Vec<FrameId> {
        let mut state = self.state.lock();
        let mut ids = Vec::with_capacity(frames.len());
        for frame in frames {
            let id = FrameId::next_after(state.last_frame_id, now);
            state.last_frame_id = id;
            state.frame_bytes = state.frame_bytes.saturating_add(frame_size(&frame));
            state.frames.push_back(StoredFrame { id, frame });
            ids.push(id);
        }
        let keep = usize::try_from(settings.max_frames_per_session).unwrap_or(usize::MAX);
        while state.frames.len() > 1
            && (state.frames.len() > keep || state.frame_bytes > settings.max_session_frame_bytes)
        {
            if let Some(dropped) = state.frames.pop_front() {
                state.frame_bytes = state.frame_bytes.saturating_sub(frame_size(&dropped.frame));
                state.removed_through = dropped.id;
            }
        }
        let added = u64::try_from(ids.len()).unwrap_or(u64::MAX);
        state.session.frame_count = state.session.frame_count.saturating_add(added);
        // Inside the lock, so a reader never sees the new frame count with the old
        // activity time.
        self.mark_activity(now, settings);
        ids
    }

    /// Up to `limit` frames with ids greater than `after`, oldest first, at most
    /// `max_read_bytes` together (at least one), and the gap before them.
    pub(crate) fn read_frames(
        &self,
        after: Option<FrameId>,
        limit: usize,
        settings: &StoreSettings,
    ) -> FramePage {
        let state = self.state.lock();
        let start = after.map_or(0, |after| state.frames.partition_point(|f| f.id <= after));
        let sizes = state
            .frames
            .range(start..)
            .take(limit)
            .map(|f| f.frame.encoded_size_hint());
        let count = frames_within_budget(sizes, settings.max_read_bytes);
        let frames: Vec<StoredFrame> = state.frames.range(start..).take(count).cloned().collect();
        FramePage {
            gap: FrameGap::detect(after, state.removed_through, &frames),
            frames,
        }
    }

    /// How many frames are stored now.
    pub(crate) fn count_frames(&self) -> u64 {
        u64::try_from(self.state.lock().frames.len()).unwrap_or(u64::MAX)
    }

    /// Drops every stored frame, keeping the last id so later ids stay greater.
    pub(crate) fn delete_frames(&self) -> u64 {
        let mut state = self.state.lock();
        let removed = u64::try_from(state.frames.len()).unwrap_or(u64::MAX);
        if let Some(newest) = state.frames.back() {
            state.removed_through = newest.id;
        }
        state.frames = VecDeque::new();
        state.frame_bytes = 0;
        removed
    }
}

/// Bytes a frame counts for `max_session_frame_bytes`.
fn frame_size(frame: &Frame) -> u64 {
    u64::try_from(frame.encoded_size_hint()).unwrap_or(u64::MAX)
}

/// Rejects session metadata whose stored encoding exceeds `max_session_bytes`.
pub(crate) fn check_session_size(session: &Session, settings: &StoreSettings) -> Result<()> {
    let size = codec::encode(session)?.len();
    if size > settings.max_session_bytes {
        return Err(Error::invalid_input(format!(
            "session `{}` encodes to {size} bytes, over max_session_bytes ({})",
            session.id, settings.max_session_bytes
        )));
    }
    Ok(())
}
