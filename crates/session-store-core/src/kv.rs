//! Small keyed values with a TTL and compare-and-set: what a proxy shares between
//! its instances beyond sessions and frames (stream leases, cache entries and
//! their generation counters, tombstones, bridge state).
//!
//! Every value has a **revision**. A put states a [`KvCondition`] that the stored
//! value must meet at the moment of the write (atomically, on every backend; on
//! Redis Cluster each key sits in one slot): absent, anything, or exactly revision
//! `n`. Of several concurrent puts with the same condition, exactly one is stored;
//! the others are [`KvPut::Rejected`] and see the value that won.
//!
//! Revisions: rewriting a live value gives `previous + 1`; writing where no value
//! lives gives `max(now_ms × 1000, previous + 1)` when the old value is still
//! known to the backend (a deleted value is kept, expired, until its own expiry),
//! else `now_ms × 1000` (milliseconds of the store's clock). So a value recreated
//! after it expired or was deleted does not reuse a revision of the one before it
//! (an old holder's `Revision(n)` put fails), unless that one was written more
//! than 1000 times per millisecond of its life.
//!
//! ```
//! use std::time::Duration;
//! use session_store_core::{KvCondition, KvKey, KvPut, SessionStore, Result};
//!
//! /// Takes a lease for `holder` when nobody holds it.
//! async fn take_lease(store: &dyn SessionStore, holder: &str) -> Result<Option<u64>> {
//!     let key = KvKey::new("lease:stream-7")?;
//!     let put = store
//!         .kv_put(&key, holder.as_bytes(), Duration::from_secs(5), KvCondition::Absent)
//!         .await?;
//!     Ok(match put {
//!         KvPut::Stored { revision, .. } => Some(revision),
//!         KvPut::Rejected { .. } => None,
//!     })
//! }
//! ```

use std::{fmt, time::Duration};

use crate::{duration_millis, Error, Timestamp};

/// Longest accepted [`KvKey`], in bytes.
pub const MAX_KV_KEY_LEN: usize = 512;

/// The key of a small value: 1 to [`MAX_KV_KEY_LEN`] visible ASCII characters
/// (0x21 to 0x7E), validated on parse, so every key a backend sees is safe in a
/// Redis key name and a log line. Callers name their keys by purpose
/// (`lease:<session>:<stream>`); keys share one namespace per store.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KvKey(Box<str>);

impl KvKey {
    /// Validates `key`; [`Error::InvalidInput`] names what is wrong.
    pub fn new(key: impl Into<String>) -> Result<Self, Error> {
        let key = key.into();
        if key.is_empty() {
            return Err(Error::invalid_input("kv key is empty"));
        }
        if key.len() > MAX_KV_KEY_LEN {
            return Err(Error::invalid_input(format!(
                "kv key is {} bytes long; at most {MAX_KV_KEY_LEN} are allowed",
                key.len()
            )));
        }
        if let Some((position, byte)) = key
            .bytes()
            .enumerate()
            .find(|(_, b)| !(0x21..=0x7e).contains(b))
        {
            return Err(Error::invalid_input(format!(
                "kv key has byte 0x{byte:02x} at position {position}; only visible ASCII (0x21-0x7E) is allowed"
            )));
        }
        Ok(KvKey(key.into_boxed_str()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KvKey({})", self.0)
    }
}

/// What the stored value must be for a put or delete to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvCondition {
    /// No live value (never written, deleted, or expired): create only.
    Absent,
    /// Whatever is stored, or nothing: an unconditional write.
    Any,
    /// A live value with exactly this revision: compare-and-set.
    Revision(u64),
}

/// A live value as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    /// The bytes as put.
    pub value: Vec<u8>,
    /// The revision of this write (see the [module docs](self)).
    pub revision: u64,
    /// When the value stops being live (store clock, ms).
    pub expires_at: Timestamp,
}

/// The outcome of [`kv_put`](crate::SessionStore::kv_put).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvPut {
    /// The value was written.
    Stored {
        /// Its revision.
        revision: u64,
        /// When it expires (store clock, ms).
        expires_at: Timestamp,
    },
    /// The condition did not hold; nothing was written.
    Rejected {
        /// The live value that made it fail (`None`: there is none, and the
        /// condition asked for a revision).
        current: Option<KvEntry>,
    },
}

impl KvPut {
    /// The revision written, when the put was stored.
    pub fn stored_revision(&self) -> Option<u64> {
        match self {
            KvPut::Stored { revision, .. } => Some(*revision),
            KvPut::Rejected { .. } => None,
        }
    }
}

/// Checks a put's value and ttl against the store's limit; the message names the
/// setting.
pub fn check_kv_put(value: &[u8], ttl: Duration, max_value_bytes: usize) -> Result<(), Error> {
    if value.len() > max_value_bytes {
        return Err(Error::invalid_input(format!(
            "kv value of {} bytes exceeds max_kv_value_bytes ({max_value_bytes})",
            value.len()
        )));
    }
    if duration_millis(ttl) == 0 {
        return Err(Error::invalid_input("kv ttl must be at least 1ms"));
    }
    Ok(())
}

/// The revision a write gets: `previous + 1` over a live value, else at least
/// `now_ms × 1000` (see the [module docs](self)). `previous` is the revision of
/// the stored value, live or not, when the backend still has it.
pub fn next_kv_revision(previous: Option<u64>, live: bool, now: Timestamp) -> u64 {
    let after = previous.map_or(1, |rev| rev.saturating_add(1));
    if live {
        after
    } else {
        now.as_millis().saturating_mul(1000).max(after)
    }
}

/// Whether `condition` holds for the stored value (`live_revision`: the revision of
/// the live value, `None` when there is none).
pub fn kv_condition_holds(condition: KvCondition, live_revision: Option<u64>) -> bool {
    match condition {
        KvCondition::Any => true,
        KvCondition::Absent => live_revision.is_none(),
        KvCondition::Revision(expected) => live_revision == Some(expected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_and_bounded() {
        assert!(KvKey::new("lease:abc@r1-0").is_ok());
        for bad in ["", "a b", "é", "tab\t"] {
            assert!(
                matches!(KvKey::new(bad), Err(Error::InvalidInput(_))),
                "{bad:?}"
            );
        }
        assert!(KvKey::new("x".repeat(MAX_KV_KEY_LEN)).is_ok());
        assert!(KvKey::new("x".repeat(MAX_KV_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn revisions_grow_over_live_values_and_jump_past_old_ones() {
        let now = Timestamp::from_millis(5);
        assert_eq!(next_kv_revision(None, false, now), 5000);
        assert_eq!(next_kv_revision(Some(5000), true, now), 5001);
        assert_eq!(next_kv_revision(Some(7000), false, now), 7001);
        assert_eq!(next_kv_revision(None, false, Timestamp::ZERO), 1);
    }
}
