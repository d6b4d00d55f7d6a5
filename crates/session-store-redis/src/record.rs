//! The session as stored: the meta hash's fields, the encoded descriptive body, and
//! the expiry rules that turn a hash plus its `PEXPIRETIME` into a [`Session`].

use std::{collections::BTreeMap, fmt::Write as _};

use serde::{Deserialize, Serialize};
use session_store_core::{
    codec, duration_millis, Error, NewSession, Result, Session, SessionId, SessionStatus,
    StoreSettings, Timestamp, Transport,
};

use crate::batch::{to_bytes, to_u64, Fields};

/// Meta hash field names.
pub(crate) mod field {
    pub(crate) const CREATED: &str = "created";
    pub(crate) const LAST: &str = "last";
    pub(crate) const REV: &str = "rev";
    pub(crate) const FRAME_COUNT: &str = "fc";
    pub(crate) const BODY: &str = "body";
    /// The number of `body` chunks when more than one (`b2`..`bN` hold the rest).
    pub(crate) const BODY_CHUNKS: &str = "bn";
}

/// The descriptive fields of a session (what `update` may change), stored
/// `codec`-encoded in the `body` field. Private to this backend. Written as a
/// msgpack array (fields by position); read from an array (trailing fields a
/// newer release appended are skipped, missing ones default) or from the
/// named map releases before wrote.
#[derive(Debug, Serialize, Deserialize)]
#[serde(remote = "Self")]
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

impl<'de> Deserialize<'de> for SessionBody {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(BodyVisitor)
    }
}

impl Serialize for SessionBody {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        SessionBody::serialize(self, serializer)
    }
}

/// Reads the positional form field by field and the named form through the
/// derived (remote) implementation.
struct BodyVisitor;

impl<'de> serde::de::Visitor<'de> for BodyVisitor {
    type Value = SessionBody;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a session body (array or map)")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<SessionBody, A::Error> {
        let body = SessionBody {
            upstream_session_id: seq.next_element()?.unwrap_or_default(),
            transport: seq.next_element()?.unwrap_or_default(),
            status: seq.next_element()?.unwrap_or_default(),
            protocol_version: seq.next_element()?.unwrap_or_default(),
            client_info: seq.next_element()?.unwrap_or_default(),
            server_info: seq.next_element()?.unwrap_or_default(),
            tags: seq.next_element()?.unwrap_or_default(),
        };
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(body)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        map: A,
    ) -> std::result::Result<SessionBody, A::Error> {
        SessionBody::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
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

    /// Encodes the body as `[codec::FORMAT_VERSION] ++ msgpack array` (fields by
    /// position, not name: a third of the size of the named form, and read by
    /// [`codec::decode`] like it, so releases that wrote or read the named form
    /// read this one too), rejecting it when larger than `max_session_bytes`.
    pub(crate) fn encode(&self, id: &SessionId, settings: &StoreSettings) -> Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(128);
        bytes.push(codec::FORMAT_VERSION);
        rmp_serde::encode::write(&mut bytes, self)
            .map_err(|e| Error::invalid_input(format!("session `{id}` cannot be encoded: {e}")))?;
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

/// The encoded body from the meta hash's fields: `body`, followed by `b2`..`bN`
/// when `bn` = N (the scripts store bodies over 64 bytes in chunks so the hash
/// stays a listpack). A hash without `bn` (one chunk, or written before chunks)
/// holds the whole body in `body`.
fn body_bytes(fields: &mut Fields, key: &str) -> Result<Vec<u8>> {
    let chunks = match fields.remove(field::BODY_CHUNKS) {
        Some(n) => to_u64(
            &n,
            format_args!("field `{}` of `{key}`", field::BODY_CHUNKS),
        )?,
        None => 1,
    };
    let mut chunk = |name: &str| {
        fields
            .remove(name)
            .and_then(to_bytes)
            .ok_or_else(|| Error::corrupt(format!("session hash `{key}` has no `{name}` field")))
    };
    let first = chunk(field::BODY)?;
    if chunks <= 1 {
        return Ok(first.to_vec());
    }
    let mut body = Vec::with_capacity(first.len() * usize::try_from(chunks).unwrap_or(1));
    body.extend_from_slice(&first);
    let mut name = String::with_capacity(4);
    for i in 2..=chunks {
        name.clear();
        let _ = write!(name, "b{i}");
        body.extend_from_slice(&chunk(&name)?);
    }
    Ok(body)
}

/// Builds the session from `HGETALL meta` and `PEXPIRETIME meta`; `None` when it
/// is missing or logically expired at `now`. Undecodable fields are
/// [`Error::Corrupt`] naming `key`.
pub(crate) fn session_from_meta(
    id: &SessionId,
    key: &str,
    fields: Fields,
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
        to_u64(&value, format_args!("field `{name}` of `{key}`"))
    };
    let created = number(field::CREATED)?;
    let last = number(field::LAST)?;
    let revision = number(field::REV)?;
    let frame_count = number(field::FRAME_COUNT)?;
    let Some(expires) = lifetime.live_until(pexpiretime, created, now) else {
        return Ok(None);
    };
    let body_bytes = body_bytes(&mut fields, key)?;
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
    use fred::types::Value;

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
        let mut fields = Fields::new();
        for (k, v) in [
            ("created", "1"),
            ("last", "1"),
            ("rev", "1"),
            ("fc", "0"),
            ("body", "\u{1}garbage"),
        ] {
            fields.insert(k.into(), Value::String(v.into()));
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

    fn proxy_like_session() -> NewSession {
        let mut new = NewSession::new(SessionId::new("s1").unwrap());
        new.protocol_version = Some("2025-06-18".into());
        new.client_info = Some(serde_json::json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "example-client", "version": "1.0.0"}
        }));
        new.with_tag("binding", "0123456789abcdef")
    }

    #[test]
    fn the_positional_body_is_smaller_and_the_named_one_still_reads() {
        let new = proxy_like_session();
        let id = new.id.clone();
        let body = SessionBody::of_new(&new);
        let compact = body.encode(&id, &StoreSettings::default()).unwrap();
        let named = codec::encode(&body).unwrap();
        println!(
            "body: {} B positional, {} B named",
            compact.len(),
            named.len()
        );
        assert!(compact.len() < named.len());
        for bytes in [&compact, &named] {
            let read: SessionBody = codec::decode(bytes).unwrap();
            let session = read.into_session(
                id.clone(),
                StoreOwned {
                    created_at: Timestamp::from_millis(1),
                    last_activity: Timestamp::from_millis(1),
                    expires_at: Timestamp::from_millis(2),
                    frame_count: 0,
                    revision: 1,
                },
            );
            assert_eq!(session.protocol_version, new.protocol_version);
            assert_eq!(session.client_info, new.client_info);
            assert_eq!(session.tags, new.tags);
            assert_eq!(session.transport, new.transport);
            assert_eq!(session.status, new.status);
        }
    }

    #[test]
    fn a_chunked_body_is_put_back_together_and_a_missing_chunk_is_corrupt() {
        let mut fields = Fields::new();
        for (k, v) in [("body", "ab"), ("b2", "cd"), ("b3", "e"), ("bn", "3")] {
            fields.insert(k.into(), Value::String(v.into()));
        }
        let mut broken = fields.clone();
        assert_eq!(body_bytes(&mut fields, "k").unwrap(), b"abcde");
        broken.remove("b2");
        let err = body_bytes(&mut broken, "mcp:{x}:meta").unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt(m) if m.contains("`b2`") && m.contains("mcp:{x}:meta")),
            "{err}"
        );
        let mut whole = Fields::from([("body".into(), Value::String("abc".into()))]);
        assert_eq!(body_bytes(&mut whole, "k").unwrap(), b"abc");
    }

    #[test]
    fn a_body_with_a_field_a_newer_release_added_still_reads() {
        #[derive(Serialize)]
        struct Newer {
            upstream_session_id: Option<String>,
            transport: Transport,
            status: SessionStatus,
            protocol_version: Option<String>,
            client_info: Option<serde_json::Value>,
            server_info: Option<serde_json::Value>,
            tags: BTreeMap<String, String>,
            added: u32,
        }
        let newer = Newer {
            upstream_session_id: Some("up".into()),
            transport: Transport::Sse,
            status: SessionStatus::Active,
            protocol_version: None,
            client_info: None,
            server_info: None,
            tags: BTreeMap::new(),
            added: 7,
        };
        let mut bytes = vec![codec::FORMAT_VERSION];
        rmp_serde::encode::write(&mut bytes, &newer).unwrap();
        let read: SessionBody = codec::decode(&bytes).unwrap();
        assert_eq!(read.upstream_session_id.as_deref(), Some("up"));
        assert_eq!(read.transport, Transport::Sse);
    }
}
