//! The outage journal: sessions created or changed in memory while the primary
//! was unreachable, kept until they are written back.
//!
//! Each entry sits behind its own async mutex. The write-back holds it while it
//! talks to the primary, so a call on that session waits, then finds the entry
//! written back and goes to the primary: a session's writes reach the primary in
//! the order they were made.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use parking_lot::Mutex;
use session_store_core::{
    codec, expiry_after_activity, Error, Frame, FrameId, NewSession, Result, Session, SessionId,
    StoreSettings, StoredFrame, Timestamp,
};
use session_store_redis::{AppendKey, KeyedFrame, SessionWriteBack};

use super::known::Known;

/// One session as changed in memory.
#[derive(Debug)]
pub(crate) struct DirtySession {
    pub(crate) session: Session,
    /// The primary's revision when the local changes began (1 when created here).
    pub(crate) base_revision: u64,
    /// Created while the primary was unreachable: the journal holds all of it.
    pub(crate) created_locally: bool,
    pub(crate) updated: bool,
    pub(crate) deleted: bool,
    /// Frames appended locally, oldest first (trimmed to `max_frames_per_session`).
    pub(crate) frames: VecDeque<KeyedFrame>,
    /// The last id the primary is known to have handed out (`None`: not seen).
    base_last_frame_id: Option<FrameId>,
    /// The last id handed out, by the primary or here.
    last_frame_id: Option<FrameId>,
    /// Set by the write-back under the entry's lock: this entry is stale and the
    /// caller must go to the primary instead.
    pub(crate) written_back: bool,
    /// The id was deleted (or expired) and created again here: the write-back
    /// deletes whatever the primary holds under it first.
    pub(crate) replaces: bool,
    pub(crate) write_back_key: AppendKey,
}

impl DirtySession {
    pub(crate) fn created(session: Session, write_back_key: AppendKey) -> Self {
        DirtySession {
            session,
            base_revision: 1,
            created_locally: true,
            updated: false,
            deleted: false,
            frames: VecDeque::new(),
            base_last_frame_id: Some(FrameId::ZERO),
            last_frame_id: None,
            written_back: false,
            replaces: false,
            write_back_key,
        }
    }

    pub(crate) fn from_known(known: Known, write_back_key: AppendKey) -> Self {
        DirtySession {
            base_revision: known.session.revision,
            session: known.session,
            created_locally: false,
            updated: false,
            deleted: false,
            frames: VecDeque::new(),
            base_last_frame_id: known.last_frame_id,
            last_frame_id: known.last_frame_id,
            written_back: false,
            replaces: false,
            write_back_key,
        }
    }

    /// Creates the session again on this id after it was deleted or expired
    /// here: a new session, with no frames.
    pub(crate) fn recreate(&mut self, session: Session) {
        let key = self.write_back_key.clone();
        *self = DirtySession {
            replaces: true,
            ..DirtySession::created(session, key)
        };
    }

    pub(crate) fn is_live(&self, now: Timestamp) -> bool {
        !self.deleted && self.session.expires_at > now
    }

    fn live(&self, now: Timestamp) -> Result<()> {
        if self.is_live(now) {
            Ok(())
        } else {
            Err(Error::NotFound(self.session.id.clone()))
        }
    }

    fn slide(&mut self, now: Timestamp, settings: &StoreSettings) {
        self.session.last_activity = self.session.last_activity.max(now);
        self.session.expires_at = expiry_after_activity(
            now,
            self.session.created_at,
            settings.ttl,
            settings.max_lifetime,
        );
    }

    pub(crate) fn get(&self, now: Timestamp) -> Result<Session> {
        self.live(now)?;
        Ok(self.session.clone())
    }

    pub(crate) fn touch(&mut self, now: Timestamp, settings: &StoreSettings) -> Result<()> {
        self.live(now)?;
        self.slide(now, settings);
        Ok(())
    }

    pub(crate) fn update(
        &mut self,
        changed: &Session,
        now: Timestamp,
        settings: &StoreSettings,
    ) -> Result<Session> {
        self.live(now)?;
        if changed.revision != self.session.revision {
            return Err(Error::Conflict {
                id: self.session.id.clone(),
                expected: changed.revision,
                actual: self.session.revision,
            });
        }
        let mut next = self.session.clone();
        next.upstream_session_id = changed.upstream_session_id.clone();
        next.transport = changed.transport;
        next.status = changed.status;
        next.protocol_version = changed.protocol_version.clone();
        next.client_info = changed.client_info.clone();
        next.server_info = changed.server_info.clone();
        next.tags = changed.tags.clone();
        check_session_size(&next, settings)?;
        next.revision += 1;
        self.session = next;
        self.updated = true;
        self.slide(now, settings);
        Ok(self.session.clone())
    }

    pub(crate) fn delete(&mut self, now: Timestamp) -> bool {
        let was_live = self.is_live(now);
        self.deleted = true;
        self.frames.clear();
        was_live
    }

    /// Appends under `key` with an id greater than every id handed out for this
    /// session, by the primary or here.
    pub(crate) fn append(
        &mut self,
        frame: Frame,
        key: AppendKey,
        now: Timestamp,
        settings: &StoreSettings,
    ) -> Result<FrameId> {
        self.live(now)?;
        settings.check_frame(&frame)?;
        let id = match self.last_frame_id {
            Some(last) => FrameId::next_after(last, now),
            // The primary's last id is unknown, but it was handed out no later
            // than the session's last activity the primary reported.
            None => FrameId::new(
                now.as_millis()
                    .max(self.session.last_activity.as_millis().saturating_add(1)),
                0,
            ),
        };
        self.last_frame_id = Some(id);
        self.frames.push_back(KeyedFrame {
            key,
            frame: StoredFrame { id, frame },
        });
        let keep = usize::try_from(settings.max_frames_per_session).unwrap_or(usize::MAX);
        while self.frames.len() > keep {
            self.frames.pop_front();
        }
        self.session.frame_count = self.session.frame_count.saturating_add(1);
        self.slide(now, settings);
        Ok(id)
    }

    /// Frames after `after` when the journal holds all of them; `None` when some
    /// may be in the primary only.
    pub(crate) fn read(
        &self,
        after: Option<FrameId>,
        limit: usize,
        now: Timestamp,
    ) -> Option<Result<Vec<StoredFrame>>> {
        if let Err(error) = self.live(now) {
            return Some(Err(error));
        }
        let from = after.unwrap_or(FrameId::ZERO);
        let all_local = self.created_locally
            || self.base_last_frame_id.is_some_and(|base| from >= base)
            || self
                .frames
                .front()
                .is_some_and(|first| from >= first.frame.id);
        all_local.then(|| {
            Ok(self
                .frames
                .iter()
                .filter(|keyed| keyed.frame.id > from)
                .take(limit)
                .map(|keyed| keyed.frame.clone())
                .collect())
        })
    }

    /// Frame count and deletion are local only for sessions created here.
    pub(crate) fn count_frames(&self, now: Timestamp) -> Option<Result<u64>> {
        if let Err(error) = self.live(now) {
            return Some(Err(error));
        }
        self.created_locally
            .then(|| Ok(u64::try_from(self.frames.len()).unwrap_or(u64::MAX)))
    }

    pub(crate) fn delete_frames(&mut self, now: Timestamp) -> Option<Result<u64>> {
        if let Err(error) = self.live(now) {
            return Some(Err(error));
        }
        if !self.created_locally {
            return None;
        }
        let removed = u64::try_from(self.frames.len()).unwrap_or(u64::MAX);
        self.frames.clear();
        Some(Ok(removed))
    }

    pub(crate) fn to_write_back(&self) -> SessionWriteBack {
        SessionWriteBack {
            session: self.session.clone(),
            base_revision: self.base_revision,
            updated: self.updated,
            frames: self.frames.iter().cloned().collect(),
            key: self.write_back_key.clone(),
        }
    }
}

/// A new session as the memory side stores it.
pub(crate) fn new_session(
    new: NewSession,
    now: Timestamp,
    settings: &StoreSettings,
) -> Result<Session> {
    let expires = expiry_after_activity(now, now, settings.ttl, settings.max_lifetime);
    let session = new.into_session(now, expires);
    check_session_size(&session, settings)?;
    Ok(session)
}

fn check_session_size(session: &Session, settings: &StoreSettings) -> Result<()> {
    let size = codec::encode(session)?.len();
    if size > settings.max_session_bytes {
        return Err(Error::invalid_input(format!(
            "session `{}` encodes to {size} bytes, over max_session_bytes ({})",
            session.id, settings.max_session_bytes
        )));
    }
    Ok(())
}

pub(crate) type Entry = Arc<tokio::sync::Mutex<DirtySession>>;

/// The dirty sessions by id.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    entries: Mutex<HashMap<SessionId, Entry>>,
}

impl Journal {
    pub(crate) fn get(&self, id: &SessionId) -> Option<Entry> {
        self.entries.lock().get(id).cloned()
    }

    /// The entry of `id`, made by `make` when there is none. `make` runs under
    /// the journal's lock and must not block; `on_insert` too (it moves the
    /// breaker off its fast path before anyone can see the entry).
    /// Returns the entry and whether it was made by this call.
    pub(crate) fn get_or_insert(
        &self,
        id: &SessionId,
        make: impl FnOnce() -> Result<DirtySession>,
        on_insert: impl FnOnce(),
    ) -> Result<(Entry, bool)> {
        let mut entries = self.entries.lock();
        if let Some(entry) = entries.get(id) {
            return Ok((entry.clone(), false));
        }
        let entry = Arc::new(tokio::sync::Mutex::new(make()?));
        on_insert();
        entries.insert(id.clone(), entry.clone());
        Ok((entry, true))
    }

    pub(crate) fn remove(&self, id: &SessionId) {
        self.entries.lock().remove(id);
    }

    pub(crate) fn ids(&self) -> Vec<SessionId> {
        self.entries.lock().keys().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Runs `close` when the journal is empty, under its lock, so no entry can be
    /// added between the check and the breaker closing.
    pub(crate) fn close_if_empty(&self, close: impl FnOnce()) -> bool {
        let entries = self.entries.lock();
        if entries.is_empty() {
            close();
            true
        } else {
            false
        }
    }
}
