//! The session as stored: the meta hash's fields, the encoded descriptive body, and
//! the expiry rules that turn a hash plus its `PEXPIRETIME` into a [`Session`].

use std::collections::{BTreeMap, HashMap};

use fred::types::Value;
use serde::{Deserialize, Serialize};
use session_store_core::{
    codec, duration_millis, Error, NewSession, Result, Session, SessionId, SessionStatus,
    StoreSettings, Timestamp, Transport,
};

use crate::batch::{to_bytes, to_u64};

/// Meta hash field names.
pub(crate) mod field {
    pub(crate) const CREATED: &str = "created";
    pub(crate) const LAST: &str = "last";
    pub(crate) const REV: &str = "rev";
    pub(crate) const FRAME_COUNT: &str = "fc";
    pub(crate) const BODY: &str = "body";
}

/// The descriptive fields of a session (what `update` may change), stored
/// `codec`-encoded in the `body` field. Private to this backend.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SessionBody {
    #[serde(default)]
    upstream_session_id: Option<String>,
    #[serde(default)]
    transport: Transport,
    #[serde(default)]
    status: SessionStatus,
    #[serde(default)]
    protocol_version: Option<String>,
    #[serde(default)]
    client_info: Option<serde_json::Value>,
    #[serde(default)]
    server_info: Option<serde_json::Value>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

impl SessionBody {
    pub(crate) fn of_new(new: &NewSession) -> Self {
        SessionBody {
            upstream_session_id: new.upstream_session_id.clone(),
            transport: new.transport,
            status: new.status,
            protocol_version: new.protocol_version.clone(),
            client_info: new.client_info.clone(),
            server_info: new.server_info.clone(),
            tags: new.tags.clone(),
        }
    }

    pub(crate) fn of_session(session: &Session) -> Self {
        SessionBody {
            upstream_session_id: session.upstream_session_id.clone(),
            transport: session.transport,
            status: session.status,
            protocol_version: session.protocol_version.clone(),
            client_info: session.client_info.clone(),
            server_info: session.server_info.clone(),
            tags: session.tags.clone(),
        }
    }

    /// Encodes the body, rejecting it when larger than `max_session_bytes`.
    pub(crate) fn encode(&self, id: &SessionId, settings: &StoreSettings) -> Result<Vec<u8>> {
        let bytes = codec::encode(self)?;
        if bytes.len() > settings.max_session_bytes {
            return Err(Error::invalid_input(format!(
                "session `{id}` encodes to {} bytes, over max_session_bytes ({})",
                bytes.len(),
                settings.max_session_bytes
            )));
        }
        Ok(bytes)
    }

    /// The full session around this body.
    pub(crate) fn into_session(self, id: SessionId, store_owned: StoreOwned) -> Session {
        Session {
            id,
            upstream_session_id: self.upstream_session_id,
            transport: self.transport,
            status: self.status,
            protocol_version: self.protocol_version,
            client_info: self.client_info,
            server_info: self.server_info,
            tags: self.tags,
            created_at: store_owned.created_at,
            last_activity: store_owned.last_activity,
            expires_at: store_owned.expires_at,
            frame_count: store_owned.frame_count,
            revision: store_owned.revision,
        }
    }
}

/// The fields the store owns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoreOwned {
    pub(crate) created_at: Timestamp,
    pub(crate) last_activity: Timestamp,
    pub(crate) expires_at: Timestamp,
    pub(crate) frame_count: u64,
    pub(crate) revision: u64,
}

/// The expiry rules, against the store's clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lifetime {
    pub(crate) ttl_ms: u64,
    /// 0 when sessions have no lifetime cap (the scripts read it the same way).
    pub(crate) max_life_ms: u64,
}

impl Lifetime {
    pub(crate) fn new(settings: &StoreSettings) -> Self {
        Lifetime {
            ttl_ms: duration_millis(settings.ttl),
            max_life_ms: settings.max_lifetime.map_or(0, duration_millis),
        }
    }

    /// `min(now + ttl, created + max_lifetime)`.
    pub(crate) fn expiry_after_activity(&self, now: u64, created: u64) -> u64 {
        let sliding = now.saturating_add(self.ttl_ms);
        match self.cap(created) {
            Some(cap) => sliding.min(cap),
            None => sliding,
        }
    }

    fn cap(&self, created: u64) -> Option<u64> {
        (self.max_life_ms > 0).then(|| created.saturating_add(self.max_life_ms))
    }

    /// When a session is logically live at `now`, its `expires_at`: the earlier of
    /// its physical expiry (`PEXPIRETIME`: -2 missing, -1 none) and its lifetime
    /// cap. `None` when missing or expired.
    pub(crate) fn live_until(&self, pexpiretime: i64, created: u64, now: u64) -> Option<u64> {
        let physical = match pexpiretime {
            -2 => return None,
            n if n < 0 => u64::MAX,
            n => n.unsigned_abs(),
        };
        let expires = match self.cap(created) {
            Some(cap) => physical.min(cap),
            None => physical,
        };
        (expires > now).then_some(expires)
    }

    /// How long a delete's tombstone lives, in ms: one ttl, the longest a copy
    /// of the session held elsewhere (a fallback's memory) can stay live without
    /// activity reaching Redis.
    pub(crate) fn tombstone_ms(&self) -> u64 {
        self.ttl_ms.max(1)
    }

    /// `last_activity`: touch slides the expiry without writing `last`, so the
    /// later of `last` and `PEXPIRETIME - ttl`.
    pub(crate) fn last_activity(&self, last: u64, pexpiretime: i64) -> u64 {
        match u64::try_from(pexpiretime) {
            Ok(physical) => last.max(physical.saturating_sub(self.ttl_ms)),
            Err(_) => last,
        }
    }
}

/// Builds the session from `HGETALL meta` and `PEXPIRETIME meta`; `None` when it
/// is missing or logically expired at `now`. Undecodable fields are
/// [`Error::Corrupt`] naming `key`.
pub(crate) fn session_from_meta(
    id: &SessionId,
    key: &str,
    fields: HashMap<String, Value>,
    pexpiretime: i64,
    now: u64,
    lifetime: &Lifetime,
) -> Result<Option<Session>> {
    if fields.is_empty() || pexpiretime == -2 {
        return Ok(None);
    }
    let mut fields = fields;
    let mut number = |name: &str| -> Result<u64> {
        let value = fields
            .remove(name)
            .ok_or_else(|| Error::corrupt(format!("session hash `{key}` has no `{name}` field")))?;
        to_u64(&value, &format!("field `{name}` of `{key}`"))
    };
    let created = number(field::CREATED)?;
    let last = number(field::LAST)?;
    let revision = number(field::REV)?;
    let frame_count = number(field::FRAME_COUNT)?;
    let Some(expires) = lifetime.live_until(pexpiretime, created, now) else {
        return Ok(None);
    };
    let body_bytes = fields
        .remove(field::BODY)
        .and_then(to_bytes)
        .ok_or_else(|| Error::corrupt(format!("session hash `{key}` has no `body` field")))?;
    let body: SessionBody = codec::decode(&body_bytes)
        .map_err(|e| Error::corrupt(format!("field `body` of `{key}`: {e}")))?;
    Ok(Some(body.into_session(
        id.clone(),
        StoreOwned {
            created_at: Timestamp::from_millis(created),
            last_activity: Timestamp::from_millis(lifetime.last_activity(last, pexpiretime)),
            expires_at: Timestamp::from_millis(expires),
            frame_count,
            revision,
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_follows_physical_expiry_and_cap() {
        let lifetime = Lifetime {
            ttl_ms: 100,
            max_life_ms: 1_000,
        };
        assert_eq!(lifetime.live_until(-2, 0, 10), None);
        assert_eq!(lifetime.live_until(500, 0, 10), Some(500));
        assert_eq!(
            lifetime.live_until(500, 0, 500),
            None,
            "expired at expires_at"
        );
        assert_eq!(lifetime.live_until(5_000, 0, 10), Some(1_000), "capped");
        assert_eq!(lifetime.live_until(5_000, 0, 1_000), None, "past the cap");
        assert_eq!(lifetime.live_until(-1, 0, 10), Some(1_000));
        assert_eq!(lifetime.last_activity(50, 500), 400);
        assert_eq!(lifetime.last_activity(450, 500), 450);
        assert_eq!(lifetime.expiry_after_activity(950, 0), 1_000);
        let uncapped = Lifetime {
            ttl_ms: 100,
            max_life_ms: 0,
        };
        assert_eq!(uncapped.live_until(5_000, 0, 4_000), Some(5_000));
    }

    #[test]
    fn garbage_body_is_corrupt_naming_the_key() {
        let mut fields = HashMap::new();
        for (k, v) in [
            ("created", "1"),
            ("last", "1"),
            ("rev", "1"),
            ("fc", "0"),
            ("body", "\u{1}garbage"),
        ] {
            fields.insert(k.to_owned(), Value::String(v.into()));
        }
        let id = SessionId::new("x").unwrap();
        let lifetime = Lifetime {
            ttl_ms: 100,
            max_life_ms: 0,
        };
        let err = session_from_meta(&id, "mcp:{x}:meta", fields, 50, 10, &lifetime).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt(m) if m.contains("mcp:{x}:meta")),
            "{err}"
        );
    }
}
