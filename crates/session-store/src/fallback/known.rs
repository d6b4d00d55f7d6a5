//! The sessions this instance used recently, remembered so that they can still be
//! served (and written to) while the primary is unreachable.
//!
//! Bounded: two generations per shard; when the current one is full it becomes
//! the previous one and the old previous is dropped, so the least recently used
//! sessions are forgotten first (approximately) and memory stays under
//! `capacity` entries.

use std::collections::HashMap;

use parking_lot::Mutex;
use session_store_core::{
    expiry_after_activity, FrameId, Session, SessionId, StoreSettings, Timestamp,
};

const SHARDS: usize = 16;

/// What is remembered of a session: its last known state in the primary.
#[derive(Clone, Debug)]
pub(crate) struct Known {
    pub(crate) session: Session,
    /// The last frame id the primary handed out for it, when this instance saw one.
    pub(crate) last_frame_id: Option<FrameId>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<SessionId, Known>,
    previous: HashMap<SessionId, Known>,
}

#[derive(Debug)]
pub(crate) struct KnownSessions {
    shards: Box<[Mutex<Generations>]>,
    per_generation: usize,
}

impl KnownSessions {
    /// Remembers at most about `capacity` sessions (0 remembers none).
    pub(crate) fn new(capacity: usize) -> Self {
        KnownSessions {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_generation: capacity / (2 * SHARDS),
        }
    }

    fn shard(&self, id: &SessionId) -> &Mutex<Generations> {
        let hash = id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        // The remainder is below SHARDS.
        &self.shards[usize::try_from(hash % SHARDS as u64).unwrap_or(0)]
    }

    /// Records the primary's current state of a session.
    pub(crate) fn remember(&self, session: &Session) {
        if self.per_generation == 0 {
            return;
        }
        let mut shard = self.shard(&session.id).lock();
        let last_frame_id = shard
            .current
            .get(&session.id)
            .or_else(|| shard.previous.get(&session.id))
            .and_then(|known| known.last_frame_id);
        self.insert(
            &mut shard,
            Known {
                session: session.clone(),
                last_frame_id,
            },
        );
    }

    /// Records a session just written back, with the last frame id it holds.
    pub(crate) fn remember_written_back(&self, session: &Session, last_frame_id: Option<FrameId>) {
        if self.per_generation == 0 {
            return;
        }
        let mut shard = self.shard(&session.id).lock();
        self.insert(
            &mut shard,
            Known {
                session: session.clone(),
                last_frame_id,
            },
        );
    }

    /// Records an append the primary acknowledged at `now`, which also slid the
    /// session's expiry to `expires_at`.
    pub(crate) fn note_append(
        &self,
        id: &SessionId,
        frame_id: FrameId,
        now: Timestamp,
        settings: &StoreSettings,
    ) {
        let mut shard = self.shard(id).lock();
        let entry = match shard.current.get_mut(id) {
            Some(known) => Some(known),
            None => shard.previous.get_mut(id),
        };
        if let Some(known) = entry {
            let session = &mut known.session;
            session.frame_count = session.frame_count.saturating_add(1);
            session.last_activity = session.last_activity.max(now);
            session.expires_at = session.expires_at.max(expiry_after_activity(
                now,
                session.created_at,
                settings.ttl,
                settings.max_lifetime,
            ));
            known.last_frame_id = known.last_frame_id.max(Some(frame_id));
        }
    }

    pub(crate) fn forget(&self, id: &SessionId) {
        let mut shard = self.shard(id).lock();
        shard.current.remove(id);
        shard.previous.remove(id);
    }

    /// The remembered state, marking it recently used.
    pub(crate) fn get(&self, id: &SessionId) -> Option<Known> {
        let mut shard = self.shard(id).lock();
        if let Some(known) = shard.current.get(id) {
            return Some(known.clone());
        }
        let known = shard.previous.remove(id)?;
        self.insert(&mut shard, known.clone());
        Some(known)
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock();
                shard.current.len() + shard.previous.len()
            })
            .sum()
    }

    fn insert(&self, shard: &mut Generations, known: Known) {
        if shard.current.len() >= self.per_generation
            && !shard.current.contains_key(&known.session.id)
        {
            shard.previous = std::mem::take(&mut shard.current);
        }
        shard.previous.remove(&known.session.id);
        shard.current.insert(known.session.id.clone(), known);
    }
}

#[cfg(test)]
mod tests {
    use session_store_core::{NewSession, Timestamp};

    use super::*;

    fn session(n: usize) -> Session {
        NewSession::new(SessionId::new(format!("s{n}")).unwrap())
            .into_session(Timestamp::from_millis(1), Timestamp::from_millis(2))
    }

    #[test]
    fn stays_bounded_and_keeps_recent_sessions() {
        let known = KnownSessions::new(64);
        for n in 0..10_000 {
            known.remember(&session(n));
        }
        assert!(known.len() <= 64, "{}", known.len());
        assert!(known.get(&session(9_999).id).is_some());
        assert!(known.get(&session(0).id).is_none());
    }

    #[test]
    fn appends_raise_the_last_frame_id_and_count() {
        let known = KnownSessions::new(64);
        let s = session(1);
        known.remember(&s);
        let settings = StoreSettings::default();
        let now = Timestamp::from_millis(10);
        known.note_append(&s.id, FrameId::new(5, 0), now, &settings);
        known.note_append(&s.id, FrameId::new(5, 1), now, &settings);
        let got = known.get(&s.id).unwrap();
        assert_eq!(got.last_frame_id, Some(FrameId::new(5, 1)));
        assert_eq!(got.session.frame_count, 2);
        assert_eq!(got.session.last_activity, now);
        assert!(got.session.expires_at > now, "an append slides the expiry");
        known.remember(&s);
        assert_eq!(
            known.get(&s.id).unwrap().last_frame_id,
            Some(FrameId::new(5, 1)),
            "a later get keeps the frame id"
        );
        known.forget(&s.id);
        assert!(known.get(&s.id).is_none());
    }
}
