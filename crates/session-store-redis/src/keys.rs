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
        self.session_key(id, "meta")
    }

    /// `P:{<id>}:frames`: the session's frame stream.
    pub(crate) fn frames(&self, id: &SessionId) -> String {
        self.session_key(id, "frames")
    }

    /// `P:{<id>}:gone`: the tombstone a delete leaves (holds the delete key).
    pub(crate) fn tombstone(&self, id: &SessionId) -> String {
        self.session_key(id, "gone")
    }

    /// `P:{<id>}:<suffix>`, or `P:{ <hash>}<id>:<suffix>` for an id starting with
    /// `}`.
    ///
    /// Redis hashes the text between the first `{` and the first `}` after it.
    /// For `P:{<id>}:...` that is the id up to its first `}`: the same for every
    /// key of the session, so they share a slot, as long as it is not empty. An
    /// id starting with `}` would give an empty tag, and Redis would hash the
    /// whole key (meta and frames in different slots: CROSSSLOT). Such ids get
    /// the tag ` <FNV-1a of the id, hex>`: never empty, the same for all of the
    /// session's keys, and spread over slots; the space (never part of an id)
    /// keeps these keys apart from every other id's keys.
    fn session_key(&self, id: &SessionId, suffix: &str) -> String {
        let id = id.as_str();
        if id.starts_with('}') {
            format!(
                "{}:{{ {:016x}}}{id}:{suffix}",
                self.prefix,
                fnv1a(id.as_bytes())
            )
        } else {
            format!("{}:{{{id}}}:{suffix}", self.prefix)
        }
    }

    /// `P:idx:<n>`: expiry index shard (score = expires_at ms).
    pub(crate) fn expiry_index(&self, shard: u16) -> String {
        format!("{}:idx:{shard}", self.prefix)
    }

    /// `P:ids:<n>`: lexicographic id index shard (score 0), walked by `list`.
    pub(crate) fn id_index(&self, shard: u16) -> String {
        format!("{}:ids:{shard}", self.prefix)
    }

    /// `P:kv:{<key>}`: a small keyed value, alone in its hash tag, so its
    /// conditional writes are one single-slot script on a cluster.
    pub(crate) fn kv(&self, key: &session_store_core::KvKey) -> String {
        format!("{}:kv:{{{}}}", self.prefix, key.as_str())
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
    fn every_visible_ascii_id_keeps_its_keys_in_one_slot() {
        let keys = KeySpace::new("mcp", 16);
        let visible: Vec<char> = (0x21u8..=0x7e).map(char::from).collect();
        let mut ids: Vec<String> = ["}", "}}", "}{", "{}", "{", "a}", "}a", "}}}a{", "x{y}z"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        // Every pair of visible characters, and each character around braces.
        for a in &visible {
            for b in &visible {
                ids.push(format!("{a}{b}"));
            }
            ids.push(format!("}}{a}}}"));
            ids.push(format!("{a}}}{{"));
        }
        for text in ids {
            let id = SessionId::new(text.as_str()).unwrap();
            let slot = fred::util::redis_keyslot(keys.meta(&id).as_bytes());
            assert_eq!(
                slot,
                fred::util::redis_keyslot(keys.frames(&id).as_bytes()),
                "frames of `{text}`"
            );
            assert_eq!(
                slot,
                fred::util::redis_keyslot(keys.tombstone(&id).as_bytes()),
                "tombstone of `{text}`"
            );
        }
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
