//! A shard: one lock over a slice of the sessions, chosen by a hash of the id, with
//! its own lazy expiry index.
//!
//! # The expiry index
//!
//! Each shard keeps a `BTreeSet<(expiry, id)>` holding exactly one entry per stored
//! session. The hot path (touch, append, update) never writes to it: those only move
//! a session's real expiry later, so the filed expiry is a lower bound of the real
//! one, and every expired session is filed at or before now. Purge therefore takes
//! only the entries filed at or before now (the candidates), removes those really
//! expired and re-files the others under their current expiry. Its cost grows with
//! the expired sessions plus those touched since they were filed (each re-filed at
//! most once per TTL), never with all sessions. Create and delete keep the index
//! exact under the write lock they take anyway.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::RwLock;
use session_store_core::{SessionId, Timestamp};

use crate::entry::SessionEntry;

/// One shard of the store.
#[derive(Debug, Default)]
pub(crate) struct Shard {
    pub(crate) state: RwLock<ShardState>,
}

/// What a shard's lock guards.
#[derive(Debug, Default)]
pub(crate) struct ShardState {
    /// Ordered by id, so `list` can resume after any id.
    pub(crate) sessions: BTreeMap<SessionId, SessionEntry>,
    expiry_index: BTreeSet<(Timestamp, SessionId)>,
}

/// What a purge did, for the caller and for tests of its cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PurgeReport {
    /// Expired sessions removed.
    pub(crate) removed: u64,
    /// Index entries looked at: the removed plus those re-filed.
    pub(crate) inspected: u64,
}

impl PurgeReport {
    pub(crate) fn add(&mut self, other: PurgeReport) {
        self.removed += other.removed;
        self.inspected += other.inspected;
    }
}

impl ShardState {
    /// The session with this id when it is alive at `now`.
    pub(crate) fn live(&self, id: &SessionId, now: Timestamp) -> Option<&SessionEntry> {
        self.sessions.get(id).filter(|entry| entry.is_live_at(now))
    }

    /// Stores a session whose id is not in the shard.
    pub(crate) fn insert(&mut self, id: SessionId, mut entry: SessionEntry) {
        entry.indexed_expiry = entry.expires_at();
        self.expiry_index.insert((entry.indexed_expiry, id.clone()));
        self.sessions.insert(id, entry);
    }

    /// Removes a session (live or expired) and its index entry.
    pub(crate) fn remove(&mut self, id: &SessionId) -> Option<SessionEntry> {
        let entry = self.sessions.remove(id)?;
        self.expiry_index
            .remove(&(entry.indexed_expiry, id.clone()));
        Some(entry)
    }

    /// Whether any session may have expired by `now`; cheap, under the read lock.
    pub(crate) fn has_expiry_candidates(&self, now: Timestamp) -> bool {
        self.expiry_index
            .first()
            .is_some_and(|(filed, _)| *filed <= now)
    }

    /// Live sessions at `now`: all stored minus the expired among the candidates.
    pub(crate) fn count_live(&self, now: Timestamp) -> usize {
        let expired = self
            .candidates(now)
            .filter(|(_, id)| self.sessions.get(id).is_some_and(|e| !e.is_live_at(now)))
            .count();
        self.sessions.len() - expired
    }

    fn candidates(&self, now: Timestamp) -> impl Iterator<Item = &(Timestamp, SessionId)> {
        self.expiry_index
            .iter()
            .take_while(move |(filed, _)| *filed <= now)
    }

    /// Removes the sessions expired at `now` and re-files the candidates still alive.
    pub(crate) fn purge_expired(&mut self, now: Timestamp) -> PurgeReport {
        let mut report = PurgeReport::default();
        while let Some((filed, id)) = self.expiry_index.pop_first() {
            if filed > now {
                self.expiry_index.insert((filed, id));
                break;
            }
            report.inspected += 1;
            let Some(entry) = self.sessions.get_mut(&id) else {
                continue;
            };
            if entry.is_live_at(now) {
                // Alive, so its real expiry is after now: re-filing ends the loop.
                entry.indexed_expiry = entry.expires_at();
                self.expiry_index.insert((entry.indexed_expiry, id));
            } else {
                self.sessions.remove(&id);
                report.removed += 1;
            }
        }
        report
    }
}

/// Picks the shard for an id: FNV-1a over its bytes, finished with a 64-bit mix so
/// ids that differ only in their last characters still spread over all shards.
/// `shard_mask` is the shard count minus one (the count is a power of two).
pub(crate) fn shard_index(id: &SessionId, shard_mask: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    // The top bits are the best mixed; a u64 shifted right by 32 fits any usize >= 32 bits.
    let high = usize::try_from(hash >> 32).unwrap_or(0);
    high & shard_mask
}
