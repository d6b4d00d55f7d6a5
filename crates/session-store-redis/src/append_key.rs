//! Append keys: the client-chosen token that makes `append_frame` idempotent.
//!
//! A frame append that reached Redis but whose reply was lost (timeout, broken
//! connection) must not be stored twice when it is sent again, by a retry or by a
//! fallback write-back. Every append carries a key; the append script remembers the
//! keys of a session's last [`REMEMBERED_APPEND_KEYS`] appends with the ids they
//! got (meta field `rk`) and answers a repeated key with the id already stored.

use std::{
    collections::hash_map::RandomState,
    fmt,
    hash::BuildHasher,
    sync::atomic::{AtomicU64, Ordering},
};

use session_store_core::{Error, Result};

/// How many recent append keys a session remembers. A repeat is recognised as
/// long as fewer appends than this reached the session in between.
pub const REMEMBERED_APPEND_KEYS: usize = 8;

/// Longest key accepted (the script stores it in the session hash).
const MAX_KEY_LEN: usize = 32;

/// The idempotency key of one frame append: 1 to 32 ASCII letters and digits.
///
/// ```
/// use session_store_redis::AppendKey;
///
/// let key = AppendKey::new("9f2c41d07a3e55b1")?;
/// assert_eq!(key.as_str(), "9f2c41d07a3e55b1");
/// assert!(AppendKey::new("not a key").is_err());
/// # Ok::<(), session_store_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AppendKey(String);

impl AppendKey {
    /// Checks and wraps a key chosen by the caller.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        if key.is_empty()
            || key.len() > MAX_KEY_LEN
            || !key.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(Error::invalid_input(format!(
                "append key `{key}` must be 1 to {MAX_KEY_LEN} ASCII letters or digits"
            )));
        }
        Ok(AppendKey(key))
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AppendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppendKey({})", self.0)
    }
}

impl fmt::Display for AppendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hands out distinct append keys cheaply: a process-random seed plus a counter,
/// mixed by a bijection (so distinct counters give distinct keys).
#[derive(Debug)]
pub struct AppendKeys {
    seed: u64,
    counter: AtomicU64,
}

impl AppendKeys {
    /// A generator with a random seed.
    pub fn new() -> Self {
        AppendKeys {
            seed: RandomState::new().hash_one(0x5eed_u64),
            counter: AtomicU64::new(0),
        }
    }

    /// The next key: 16 hex digits.
    pub fn next_key(&self) -> AppendKey {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        AppendKey(format!("{:016x}", splitmix64(self.seed.wrapping_add(n))))
    }
}

impl Default for AppendKeys {
    fn default() -> Self {
        AppendKeys::new()
    }
}

/// The SplitMix64 finalizer: a bijection on u64 with good bit mixing.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn generated_keys_are_valid_and_distinct() {
        let keys = AppendKeys::new();
        let seen: HashSet<_> = (0..10_000).map(|_| keys.next_key()).collect();
        assert_eq!(seen.len(), 10_000);
        for key in seen.iter().take(10) {
            assert_eq!(&AppendKey::new(key.as_str()).unwrap(), key);
        }
    }

    #[test]
    fn keys_with_separators_are_rejected() {
        for bad in ["", "a b", "a:b", "x".repeat(33).as_str()] {
            assert!(AppendKey::new(bad).is_err(), "{bad:?}");
        }
    }
}
