//! Small keyed values in memory: one map behind a mutex with an expiry index, so
//! [`purge_expired`](session_store_core::SessionStore::purge_expired) removes the
//! expired values at a cost that grows with them, not with all values.
//!
//! Values are few and short-lived (stream leases, cache entries); each operation
//! holds the lock for a map lookup and a copy of one bounded value.

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use parking_lot::Mutex;
use session_store_core::{
    check_kv_put, kv_condition_holds, next_kv_revision, KvCondition, KvEntry, KvKey, KvPut, Result,
    Timestamp,
};

/// The values of one store.
#[derive(Debug, Default)]
pub(crate) struct KvMap {
    state: Mutex<KvState>,
}

#[derive(Debug, Default)]
struct KvState {
    values: HashMap<KvKey, KvEntry>,
    /// `(expires_at, key)` for every stored value, live or not.
    expiry: BTreeSet<(Timestamp, KvKey)>,
}

impl KvState {
    fn live(&self, key: &KvKey, now: Timestamp) -> Option<&KvEntry> {
        self.values.get(key).filter(|entry| entry.expires_at > now)
    }

    fn expire(&mut self, key: &KvKey, now: Timestamp) {
        if let Some(entry) = self.values.get_mut(key) {
            self.expiry.remove(&(entry.expires_at, key.clone()));
            entry.expires_at = now;
            self.expiry.insert((now, key.clone()));
        }
    }

    fn remove(&mut self, key: &KvKey) {
        if let Some(old) = self.values.remove(key) {
            self.expiry.remove(&(old.expires_at, key.clone()));
        }
    }
}

impl KvMap {
    pub(crate) fn get(&self, key: &KvKey, now: Timestamp) -> Option<KvEntry> {
        self.state.lock().live(key, now).cloned()
    }

    pub(crate) fn put(
        &self,
        key: &KvKey,
        value: &[u8],
        ttl: Duration,
        condition: KvCondition,
        now: Timestamp,
        max_value_bytes: usize,
    ) -> Result<KvPut> {
        check_kv_put(value, ttl, max_value_bytes)?;
        let mut state = self.state.lock();
        let live = state.live(key, now).cloned();
        if !kv_condition_holds(condition, live.as_ref().map(|entry| entry.revision)) {
            return Ok(KvPut::Rejected { current: live });
        }
        let previous = state.values.get(key).map(|entry| entry.revision);
        let revision = next_kv_revision(previous, live.is_some(), now);
        let expires_at = now.saturating_add(ttl);
        state.remove(key);
        state.expiry.insert((expires_at, key.clone()));
        state.values.insert(
            key.clone(),
            KvEntry {
                value: value.to_vec(),
                revision,
                expires_at,
            },
        );
        Ok(KvPut::Stored {
            revision,
            expires_at,
        })
    }

    pub(crate) fn delete(&self, key: &KvKey, condition: KvCondition, now: Timestamp) -> bool {
        let mut state = self.state.lock();
        let Some(live) = state.live(key, now).map(|entry| entry.revision) else {
            return false;
        };
        let applies = match condition {
            KvCondition::Absent => false,
            other => kv_condition_holds(other, Some(live)),
        };
        if applies {
            // Kept, expired, until purged: a value written after it continues its
            // revisions instead of starting over.
            state.expire(key, now);
        }
        applies
    }

    /// Removes the values expired at `now`; returns how many.
    pub(crate) fn purge_expired(&self, now: Timestamp) -> u64 {
        let mut state = self.state.lock();
        let mut removed = 0;
        while let Some((expires_at, key)) = state.expiry.first().cloned() {
            if expires_at > now {
                break;
            }
            state.expiry.pop_first();
            state.values.remove(&key);
            removed += 1;
        }
        removed
    }
}
