//! Key names: one place decides how a session and the indexes map onto Redis keys.
//!
//! All keys of one session carry the id as hash tag (`P:{<id>}:meta`), so they share
//! a cluster slot and one script may touch them together. Index keys are sharded by a
//! stable hash of the id so their writes spread over slots.

use session_store_core::SessionId;

/// The key layout of one store: prefix and index shard count.
#[derive(Clone, Debug)]
pub(crate) struct KeySpace {
    prefix: String,
    shards: u16,
}

impl KeySpace {
    pub(crate) fn new(prefix: impl Into<String>, shards: u16) -> Self {
        KeySpace {
            prefix: prefix.into(),
            shards: shards.max(1),
        }
    }

    pub(crate) fn shards(&self) -> u16 {
        self.shards
    }

    /// `P:{<id>}:meta`: the session hash.
    pub(crate) fn meta(&self, id: &SessionId) -> String {
        format!("{}:{{{}}}:meta", self.prefix, id.as_str())
    }

    /// `P:{<id>}:frames`: the session's frame stream.
    pub(crate) fn frames(&self, id: &SessionId) -> String {
        format!("{}:{{{}}}:frames", self.prefix, id.as_str())
    }

    /// `P:idx:<n>`: expiry index shard (score = expires_at ms).
    pub(crate) fn expiry_index(&self, shard: u16) -> String {
        format!("{}:idx:{shard}", self.prefix)
    }

    /// `P:ids:<n>`: lexicographic id index shard (score 0), walked by `list`.
    pub(crate) fn id_index(&self, shard: u16) -> String {
        format!("{}:ids:{shard}", self.prefix)
    }

    /// `P:{P:idx:<n>}:canary`: the fallback probe's key, under the prefix and
    /// in the cluster slot of expiry index shard `n` (the hash tag is that
    /// key's whole name).
    pub(crate) fn canary(&self, shard: u16) -> String {
        format!("{}:{{{}}}:canary", self.prefix, self.expiry_index(shard))
    }

    /// The index shard of a session: FNV-1a of the id, stable across processes and
    /// releases (unlike `RandomState`).
    pub(crate) fn shard_of(&self, id: &SessionId) -> u16 {
        let hash = fnv1a(id.as_str().as_bytes());
        // The remainder is below `shards`, a u16.
        u16::try_from(hash % u64::from(self.shards)).unwrap_or(0)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_share_the_hash_tag() {
        let keys = KeySpace::new("mcp", 16);
        let id = SessionId::new("abc").unwrap();
        assert_eq!(keys.meta(&id), "mcp:{abc}:meta");
        assert_eq!(keys.frames(&id), "mcp:{abc}:frames");
        assert_eq!(
            fred::util::redis_keyslot(keys.meta(&id).as_bytes()),
            fred::util::redis_keyslot(keys.frames(&id).as_bytes())
        );
    }

    #[test]
    fn shard_is_stable_and_in_range() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (published test vector).
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let keys = KeySpace::new("mcp", 16);
        let id = SessionId::new("a").unwrap();
        assert_eq!(keys.shard_of(&id), (0xaf63_dc4c_8601_ec8c_u64 % 16) as u16);
        let one = KeySpace::new("mcp", 1);
        assert_eq!(one.shard_of(&id), 0);
    }
}
