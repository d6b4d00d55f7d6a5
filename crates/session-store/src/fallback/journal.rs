//! The outage journal: sessions created or changed in memory while the primary
//! was unreachable, kept until they are written back.
//!
//! Each entry sits behind its own async mutex. The write-back holds it while it
//! talks to the primary, so a call on that session waits, then finds the entry
//! written back and goes to the primary: a session's writes reach the primary in
//! the order they were made.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use parking_lot::Mutex;
use session_store_core::{
    codec, expiry_after_activity, frames_within_budget, Error, Frame, FrameGap, FrameId, FramePage,
    NewSession, Result, Session, SessionId, StoreSettings, StoredFrame, Timestamp,
};
use session_store_redis::{AppendKey, KeyedFrame, SessionWriteBack};

use super::{
    disk::{DiskFrame, Header, Record, Replayed},
    known::Known,
};

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
    /// What this entry counts against `journal_max_bytes`.
    bytes: u64,
    /// Bytes of `frames` as `max_session_frame_bytes` counts them
    /// ([`Frame::encoded_size_hint`]).
    budget_bytes: u64,
    /// The newest frame id trimmed or deleted here ([`FrameId::ZERO`]: none;
    /// not kept on disk, so a restart forgets it).
    removed_through: FrameId,
    /// Write-backs that failed while the primary answered the probe.
    pub(crate) write_back_failures: u32,
}

/// Bytes counted for a session besides its encoding (map entry, locks, ids).
const SESSION_OVERHEAD: u64 = 256;
/// Bytes counted for a frame besides its payload and strings (id, key, queue slot).
const FRAME_OVERHEAD: u64 = 96;

/// What a session counts against the journal's cap: its encoding plus overhead.
pub(crate) fn session_bytes(session: &Session) -> u64 {
    let encoded = codec::encode(session).map_or(0, |bytes| bytes.len());
    SESSION_OVERHEAD.saturating_add(u64::try_from(encoded).unwrap_or(u64::MAX))
}

/// What a frame counts against the journal's cap.
pub(crate) fn frame_bytes(frame: &Frame) -> u64 {
    FRAME_OVERHEAD.saturating_add(u64::try_from(frame.encoded_size_hint()).unwrap_or(u64::MAX))
}

/// Bytes a frame counts against `max_session_frame_bytes`.
fn budget_bytes(frame: &Frame) -> u64 {
    u64::try_from(frame.encoded_size_hint()).unwrap_or(u64::MAX)
}

/// Bits at the bottom of a local frame id's sequence that carry the instance tag.
pub(crate) const TAG_BITS: u32 = 24;
/// Largest sequence counter above the tag, so the whole sequence stays below
/// 2^53 (Redis scripts hold numbers as doubles).
const MAX_LOCAL_COUNTER: u64 = (1 << (53 - TAG_BITS)) - 1;

/// The id of a frame appended here while the primary is away: greater than
/// `last` (the last id handed out for the session, by anyone this instance
/// knows of) and than `floor_millis`, with this instance's `tag` in the low
/// [`TAG_BITS`] of the sequence, so two instances never mint the same id for
/// one session and each id can be kept when it is written back.
pub(crate) fn local_frame_id(
    last: Option<FrameId>,
    floor_millis: u64,
    now: Timestamp,
    tag: u32,
) -> FrameId {
    let tag = u64::from(tag) & ((1 << TAG_BITS) - 1);
    let last = last.unwrap_or(FrameId::new(floor_millis, 0));
    let millis = now.as_millis().max(last.millis).max(floor_millis);
    let counter = if millis > last.millis {
        1
    } else {
        (last.seq >> TAG_BITS).saturating_add(1)
    };
    if counter > MAX_LOCAL_COUNTER {
        return FrameId::new(millis.saturating_add(1), (1 << TAG_BITS) | tag);
    }
    FrameId::new(millis, (counter << TAG_BITS) | tag)
}

impl DirtySession {
    pub(crate) fn created(session: Session, write_back_key: AppendKey) -> Self {
        DirtySession {
            write_back_failures: 0,
            bytes: session_bytes(&session),
            budget_bytes: 0,
            removed_through: FrameId::ZERO,
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
            write_back_failures: 0,
            bytes: session_bytes(&known.session),
            budget_bytes: 0,
            removed_through: FrameId::ZERO,
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

    /// What this entry counts against `journal_max_bytes` now.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The entry rebuilt from the disk journal (`journal_dir`) at start.
    pub(crate) fn from_replayed(replayed: Replayed) -> Result<Self> {
        let header = replayed.header;
        let mut dirty = DirtySession {
            write_back_failures: 0,
            bytes: 0,
            budget_bytes: 0,
            removed_through: FrameId::ZERO,
            session: header.session,
            base_revision: header.base_revision,
            created_locally: header.created_locally,
            updated: header.updated,
            deleted: header.deleted,
            frames: replayed.frames.into(),
            base_last_frame_id: header.base_last_frame_id,
            last_frame_id: header.last_frame_id,
            written_back: false,
            replaces: header.replaces,
            write_back_key: AppendKey::new(header.write_back_key)?,
        };
        dirty.bytes = session_bytes(&dirty.session).saturating_add(dirty.frames_bytes());
        dirty.budget_bytes = dirty
            .frames
            .iter()
            .map(|keyed| budget_bytes(&keyed.frame.frame))
            .sum();
        Ok(dirty)
    }

    /// The id of the newest frame held, to tell whether a change appended one.
    pub(crate) fn newest_frame_id(&self) -> Option<FrameId> {
        self.frames.back().map(|keyed| keyed.frame.id)
    }

    /// The disk record of this entry's state after a change; `appended` when
    /// the change appended its newest frame.
    pub(crate) fn record(&self, appended: bool) -> Record {
        Record::State {
            id: self.session.id.clone(),
            header: Header {
                session: self.session.clone(),
                base_revision: self.base_revision,
                created_locally: self.created_locally,
                updated: self.updated,
                deleted: self.deleted,
                base_last_frame_id: self.base_last_frame_id,
                last_frame_id: self.last_frame_id,
                replaces: self.replaces,
                write_back_key: self.write_back_key.as_str().to_owned(),
            },
            frames: u64::try_from(self.frames.len()).unwrap_or(u64::MAX),
            appended: appended
                .then(|| self.frames.back().map(DiskFrame::of))
                .flatten(),
        }
    }

    fn frames_bytes(&self) -> u64 {
        self.frames
            .iter()
            .map(|keyed| frame_bytes(&keyed.frame.frame))
            .sum()
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
        self.bytes = session_bytes(&next).saturating_add(self.frames_bytes());
        self.session = next;
        self.updated = true;
        self.slide(now, settings);
        Ok(self.session.clone())
    }

    pub(crate) fn delete(&mut self, now: Timestamp) -> bool {
        let was_live = self.is_live(now);
        self.deleted = true;
        self.frames.clear();
        self.bytes = session_bytes(&self.session);
        was_live
    }

    /// Appends under `key` with an id greater than every id handed out for this
    /// session, by the primary or here, carrying this instance's `tag` (see
    /// [`local_frame_id`]).
    pub(crate) fn append(
        &mut self,
        frame: Frame,
        key: AppendKey,
        now: Timestamp,
        settings: &StoreSettings,
        tag: u32,
    ) -> Result<FrameId> {
        self.live(now)?;
        settings.check_frame(&frame)?;
        // When the primary's last id is unknown, it was handed out no later
        // than the session's last activity the primary reported.
        let floor = self.session.last_activity.as_millis().saturating_add(1);
        let id = local_frame_id(self.last_frame_id, floor, now, tag);
        self.last_frame_id = Some(id);
        self.bytes = self.bytes.saturating_add(frame_bytes(&frame));
        self.budget_bytes = self.budget_bytes.saturating_add(budget_bytes(&frame));
        self.frames.push_back(KeyedFrame {
            key,
            frame: StoredFrame { id, frame },
        });
        let keep = usize::try_from(settings.max_frames_per_session).unwrap_or(usize::MAX);
        while self.frames.len() > 1
            && (self.frames.len() > keep || self.budget_bytes > settings.max_session_frame_bytes)
        {
            if let Some(dropped) = self.frames.pop_front() {
                self.bytes = self.bytes.saturating_sub(frame_bytes(&dropped.frame.frame));
                self.budget_bytes = self
                    .budget_bytes
                    .saturating_sub(budget_bytes(&dropped.frame.frame));
                self.removed_through = dropped.frame.id;
            }
        }
        self.session.frame_count = self.session.frame_count.saturating_add(1);
        self.slide(now, settings);
        Ok(id)
    }

    /// A page of frames after `after` (at most `max_read_bytes`, at least one
    /// frame) with the gap trimming here left, when the journal holds all of
    /// them; `None` when some may be in the primary only.
    pub(crate) fn read(
        &self,
        after: Option<FrameId>,
        limit: usize,
        now: Timestamp,
        settings: &StoreSettings,
    ) -> Option<Result<FramePage>> {
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
            let start = self.frames.partition_point(|keyed| keyed.frame.id <= from);
            let sizes = self
                .frames
                .range(start..)
                .take(limit)
                .map(|keyed| keyed.frame.frame.encoded_size_hint());
            let count = frames_within_budget(sizes, settings.max_read_bytes);
            let frames: Vec<StoredFrame> = self
                .frames
                .range(start..)
                .take(count)
                .map(|keyed| keyed.frame.clone())
                .collect();
            Ok(FramePage {
                gap: FrameGap::detect(after, self.removed_through, &frames),
                frames,
            })
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
        if let Some(newest) = self.frames.back() {
            self.removed_through = newest.frame.id;
        }
        self.frames.clear();
        self.bytes = session_bytes(&self.session);
        self.budget_bytes = 0;
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

/// The dirty sessions by id, and the bytes they hold.
#[derive(Debug)]
pub(crate) struct Journal {
    entries: Mutex<HashMap<SessionId, Entry>>,
    /// Entries whose write-back keeps failing while the primary answers: kept,
    /// not written back, still counted in `bytes`.
    quarantined: Mutex<HashMap<SessionId, Entry>>,
    /// Bytes held and reserved now.
    bytes: AtomicU64,
    /// The most `bytes` ever was.
    peak: AtomicU64,
    /// `journal_max_bytes`.
    max_bytes: u64,
}

impl Journal {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Journal {
            entries: Mutex::default(),
            quarantined: Mutex::default(),
            bytes: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            max_bytes,
        }
    }

    /// Reserves `n` more bytes; Unavailable (naming the key) when that would
    /// pass `journal_max_bytes`.
    pub(crate) fn reserve(&self, n: u64) -> Result<()> {
        let before = self.bytes.fetch_add(n, Ordering::AcqRel);
        let after = before.saturating_add(n);
        if after > self.max_bytes && n > 0 {
            self.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(Error::unavailable(format!(
                "the primary session store is unreachable and the outage journal holds {before} bytes; \
                 this write of {n} bytes would pass journal_max_bytes ({}): retry once the primary is back",
                self.max_bytes
            )));
        }
        self.peak.fetch_max(after, Ordering::AcqRel);
        Ok(())
    }

    /// Corrects a reservation of `reserved` bytes for a change that moved an
    /// entry from `before` to `after` bytes.
    pub(crate) fn settle(&self, reserved: u64, before: u64, after: u64) {
        let grown = after.saturating_sub(before);
        let shrunk = before.saturating_sub(after);
        if grown > reserved {
            let more = grown - reserved;
            let now = self
                .bytes
                .fetch_add(more, Ordering::AcqRel)
                .saturating_add(more);
            self.peak.fetch_max(now, Ordering::AcqRel);
        } else {
            self.release(reserved - grown + shrunk);
        }
    }

    /// Puts back an entry replayed from disk at start, counting its bytes even
    /// past the cap (it was acknowledged before the restart).
    pub(crate) fn restore(&self, id: SessionId, dirty: DirtySession) {
        let bytes = dirty.bytes();
        let now = self
            .bytes
            .fetch_add(bytes, Ordering::AcqRel)
            .saturating_add(bytes);
        self.peak.fetch_max(now, Ordering::AcqRel);
        self.entries
            .lock()
            .insert(id, Arc::new(tokio::sync::Mutex::new(dirty)));
    }

    /// Gives back `n` bytes (an entry written back, shrunk or a refused change).
    pub(crate) fn release(&self, n: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(n))
            });
    }

    /// Bytes held now.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// The most bytes held at once since start.
    pub(crate) fn peak_bytes(&self) -> u64 {
        self.peak.load(Ordering::Acquire)
    }

    /// `journal_max_bytes`.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

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

    /// Drops the entry of `id`, which held `bytes`.
    pub(crate) fn remove(&self, id: &SessionId, bytes: u64) {
        if self.entries.lock().remove(id).is_some() {
            self.release(bytes);
        }
    }

    /// Moves the entry of `id` to quarantine; whether there was one.
    pub(crate) fn quarantine(&self, id: &SessionId) -> bool {
        let Some(entry) = self.entries.lock().remove(id) else {
            return false;
        };
        self.quarantined.lock().insert(id.clone(), entry);
        true
    }

    /// Sessions in quarantine now.
    pub(crate) fn quarantined_len(&self) -> usize {
        self.quarantined.lock().len()
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
