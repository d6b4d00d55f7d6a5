//! A per-instance cache of active sessions, so a request on a session this
//! instance has seen costs one store round trip (the request's append) before
//! it is forwarded instead of two (`get`, then the append).
//!
//! It holds what the request path reads and what stays fixed once a session is
//! active: its id, upstream session id, credential binding and protocol
//! version. It is never the authority on liveness: the append that records
//! the request checks the session atomically in the store, so a session deleted
//! on any instance is 404 here on the next request (the append answers
//! `NotFound`, and the entry is dropped). The one field another instance may
//! change, the upstream session id (upstream session recovery), is corrected
//! by recovery itself: an upstream that no longer knows the cached id answers
//! 404, the entry is dropped, and recovery reads the store's current id.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use session_store::{Session, SessionId, SessionStatus};

/// Sessions held at most; when full, an arbitrary entry makes room (a miss
/// costs one `get`, never a wrong answer).
pub const NEAR_CACHE_ENTRIES: usize = 65_536;

/// Active sessions seen by this instance, by id.
#[derive(Debug, Default)]
pub struct NearCache {
    entries: Mutex<HashMap<SessionId, Arc<Session>>>,
}

impl NearCache {
    /// The cached session `id`, if any (shared, not copied: a hit costs no
    /// allocation).
    pub fn get(&self, id: &SessionId) -> Option<Arc<Session>> {
        self.lock().get(id).cloned()
    }

    /// Holds `session` when it is active (an initializing session still changes:
    /// its status and the server's side are filled in when `initialize` ends).
    pub fn insert(&self, session: &Arc<Session>) {
        if session.status != SessionStatus::Active {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= NEAR_CACHE_ENTRIES && !entries.contains_key(&session.id) {
            if let Some(evicted) = entries.keys().next().cloned() {
                entries.remove(&evicted);
            }
        }
        entries.insert(session.id.clone(), Arc::clone(session));
    }

    /// Drops `id` (deleted, not found, or its upstream session lost).
    pub fn remove(&self, id: &SessionId) {
        self.lock().remove(id);
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<Session>>> {
        // A panic while holding the lock leaves a consistent map (every
        // operation is a single map call), so a poisoned lock is used as is.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_store::{NewSession, Timestamp};

    fn session(id: &str, status: SessionStatus) -> Session {
        let mut new = NewSession::new(SessionId::new(id).unwrap());
        new.status = status;
        new.into_session(Timestamp::from_millis(1), Timestamp::from_millis(2))
    }

    #[test]
    fn only_active_sessions_are_held_and_removal_forgets_them() {
        let cache = NearCache::default();
        cache.insert(&Arc::new(session("a", SessionStatus::Initializing)));
        assert!(cache.is_empty());
        cache.insert(&Arc::new(session("b", SessionStatus::Active)));
        let id = SessionId::new("b").unwrap();
        assert_eq!(cache.get(&id).map(|s| s.id.clone()), Some(id.clone()));
        cache.remove(&id);
        assert!(cache.get(&id).is_none());
    }

    #[test]
    fn a_full_cache_stays_at_its_bound() {
        let cache = NearCache::default();
        for n in 0..NEAR_CACHE_ENTRIES + 10 {
            cache.insert(&Arc::new(session(&format!("s{n}"), SessionStatus::Active)));
        }
        assert_eq!(cache.len(), NEAR_CACHE_ENTRIES);
    }
}
