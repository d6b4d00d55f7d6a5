//! The result cache every instance shares (2026-07-28 "Caching", SEP-2549): a
//! result that carries `ttlMs` / `cacheScope` is kept in the store's keyed values
//! for `ttlMs`, `public` ones for every client of the upstream, `private` ones
//! for one principal only ("Caches MUST NOT be shared across authorization
//! contexts"; without credentials nothing private is kept).
//!
//! - Cache key ("Cache Key"): the method with the parameters that affect the
//!   result (everything but `_meta`, plus the protocol version), canonical JSON,
//!   SHA-256. Requests carrying `inputResponses` or `requestState` are never
//!   cached. Only `resultType: "complete"` results are kept.
//! - Invalidation ("Interaction with Notifications"): a list-changed or
//!   resource-updated notification seen by any instance replaces the upstream's
//!   generation value; its revision is part of every entry key, so older entries
//!   are never read again (they expire on their own). The generation is read
//!   before the upstream is asked, so a result racing an invalidation lands
//!   under the old generation.
//! - A served hit is the stored result under the new request's id, with `ttlMs`
//!   lowered to what is left of it (the freshness clock keeps running, as HTTP
//!   `Age` does) and `_meta["dev.mcp-proxy/cache"]` saying it came from the
//!   proxy's cache and how old it is. The stored `_meta` (the server's
//!   `io.modelcontextprotocol/serverInfo`) is kept. The revision states no
//!   `_meta` for intermediaries; this is the closest faithful choice.

use std::time::Duration;

use serde_json::{json, Map, Value};
use session_store::{
    Clock, Error as StoreError, KvCondition, KvKey, KvPut, SessionStore, SystemClock,
};
use sha2::{Digest, Sha256};
use url::Url;

use crate::{binding::Principal, modern::headers::META_PROTOCOL_VERSION};

/// Methods whose results the revision marks cacheable ("Cacheable Results").
pub const CACHEABLE_METHODS: [&str; 6] = [
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// Notifications that make an upstream's cached results stale.
pub const INVALIDATING_NOTIFICATIONS: [&str; 4] = [
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
];

/// The `_meta` key a served hit carries.
pub const META_CACHE: &str = "dev.mcp-proxy/cache";

/// How long a generation value lives without being replaced. When it expires, the
/// next one gets a higher revision, so no older entry becomes readable again.
const GENERATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// A request whose result may be served from (and kept in) the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheableRequest {
    upstream: String,
    request: String,
}

/// Where a request's result is kept: the generation it was asked under.
#[derive(Clone, Debug)]
pub struct CacheSlot {
    request: CacheableRequest,
    generation: u64,
}

/// A result read from the cache.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheHit {
    /// The stored result with `ttlMs` and `_meta` adjusted for serving.
    pub result: Value,
}

impl CacheableRequest {
    /// The cache identity of `message` (one JSON-RPC request) sent to `upstream`,
    /// when its method is cacheable and it is not a multi round-trip retry.
    pub fn of(message: &Value, upstream: &Url) -> Option<Self> {
        let method = message.get("method")?.as_str()?;
        message.get("id").filter(|id| !id.is_null())?;
        if !CACHEABLE_METHODS.contains(&method) {
            return None;
        }
        let mut params = message
            .get("params")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if params.contains_key("inputResponses") || params.contains_key("requestState") {
            return None;
        }
        let version = params
            .get("_meta")
            .and_then(|meta| meta.get(META_PROTOCOL_VERSION))
            .cloned()
            .unwrap_or(Value::Null);
        params.remove("_meta");
        let identity = json!([method, version, canonical(&Value::Object(params))]);
        Some(CacheableRequest {
            upstream: hex(&Sha256::digest(upstream.as_str().as_bytes()))[..16].to_owned(),
            request: hex(&Sha256::digest(identity.to_string().as_bytes())),
        })
    }

    fn generation_key(&self) -> Result<KvKey, StoreError> {
        generation_key(&self.upstream)
    }
}

/// Reads the cached result for `request`, public first, then the principal's
/// private one. Also returns the slot a fresh result is to be kept in.
pub async fn lookup(
    store: &dyn SessionStore,
    request: &CacheableRequest,
    principal: Option<&Principal>,
) -> Result<(Option<CacheHit>, CacheSlot), StoreError> {
    let generation = generation(store, &request.generation_key()?).await?;
    let slot = CacheSlot {
        request: request.clone(),
        generation,
    };
    for key in [
        Some(slot.key(None)?),
        principal.map(|p| slot.key(Some(p))).transpose()?,
    ]
    .into_iter()
    .flatten()
    {
        if let Some(entry) = store.kv_get(&key).await? {
            if let Some(hit) = serve(&entry.value, SystemClock.now().as_millis()) {
                return Ok((Some(hit), slot));
            }
        }
    }
    Ok((None, slot))
}

/// Why a result was not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotKept {
    /// No `ttlMs` > 0, no known `cacheScope`, or not `resultType: "complete"`.
    NotCacheable,
    /// `private` without a principal to keep it for.
    PrivateWithoutCredentials,
    /// Larger than `max_entry_bytes` (or the store's `max_kv_value_bytes`).
    TooLarge,
}

/// Keeps `response` (a JSON-RPC response to the slot's request) for its `ttlMs`
/// when it is cacheable.
pub async fn keep(
    store: &dyn SessionStore,
    slot: &CacheSlot,
    principal: Option<&Principal>,
    response: &Value,
    max_entry_bytes: usize,
) -> Result<Result<(), NotKept>, StoreError> {
    let Some(result) = response.get("result") else {
        return Ok(Err(NotKept::NotCacheable));
    };
    let complete = result
        .get("resultType")
        .is_none_or(|kind| kind == "complete");
    let ttl_ms = result.get("ttlMs").and_then(Value::as_u64).unwrap_or(0);
    let scope = result.get("cacheScope").and_then(Value::as_str);
    if !complete || ttl_ms == 0 {
        return Ok(Err(NotKept::NotCacheable));
    }
    let key = match (scope, principal) {
        (Some("public"), _) => slot.key(None)?,
        (Some("private"), Some(principal)) => slot.key(Some(principal))?,
        (Some("private"), None) => return Ok(Err(NotKept::PrivateWithoutCredentials)),
        _ => return Ok(Err(NotKept::NotCacheable)),
    };
    let entry = json!({
        "storedAtMs": SystemClock.now().as_millis(),
        "ttlMs": ttl_ms,
        "result": result,
    })
    .to_string();
    if entry.len() > max_entry_bytes {
        return Ok(Err(NotKept::TooLarge));
    }
    let ttl = Duration::from_millis(ttl_ms);
    match store
        .kv_put(&key, entry.as_bytes(), ttl, KvCondition::Any)
        .await
    {
        Ok(_) => Ok(Ok(())),
        Err(StoreError::InvalidInput(_)) => Ok(Err(NotKept::TooLarge)),
        Err(error) => Err(error),
    }
}

/// Makes every cached result of `upstream` stale, for every instance.
pub async fn invalidate(store: &dyn SessionStore, upstream: &Url) -> Result<(), StoreError> {
    let key = generation_key(&hex(&Sha256::digest(upstream.as_str().as_bytes()))[..16])?;
    store
        .kv_put(&key, b"generation", GENERATION_TTL, KvCondition::Any)
        .await?;
    Ok(())
}

/// Whether a server message (a notification) makes cached results stale.
pub fn invalidates(message: &Value) -> bool {
    message
        .get("method")
        .and_then(Value::as_str)
        .is_some_and(|method| INVALIDATING_NOTIFICATIONS.contains(&method))
}

impl CacheSlot {
    fn key(&self, principal: Option<&Principal>) -> Result<KvKey, StoreError> {
        let scope = match principal {
            None => "pub".to_owned(),
            Some(principal) => format!("prv:{}", principal.as_str()),
        };
        KvKey::new(format!(
            "cache:{}:{}:{scope}:{}",
            self.request.upstream, self.generation, self.request.request
        ))
    }
}

fn generation_key(upstream: &str) -> Result<KvKey, StoreError> {
    KvKey::new(format!("cache-generation:{upstream}"))
}

/// The current generation: the revision of the generation value, written when
/// there is none.
async fn generation(store: &dyn SessionStore, key: &KvKey) -> Result<u64, StoreError> {
    if let Some(entry) = store.kv_get(key).await? {
        return Ok(entry.revision);
    }
    match store
        .kv_put(key, b"generation", GENERATION_TTL, KvCondition::Absent)
        .await?
    {
        KvPut::Stored { revision, .. } => Ok(revision),
        KvPut::Rejected {
            current: Some(current),
        } => Ok(current.revision),
        KvPut::Rejected { current: None } => Err(StoreError::unavailable(
            "the cache generation value vanished while being created",
        )),
    }
}

/// A stored entry as served at `now_ms`: `ttlMs` lowered by its age, `_meta`
/// marked; `None` when it is no longer fresh or unreadable.
fn serve(entry: &[u8], now_ms: u64) -> Option<CacheHit> {
    let entry: Value = serde_json::from_slice(entry).ok()?;
    let stored_at = entry.get("storedAtMs")?.as_u64()?;
    let ttl_ms = entry.get("ttlMs")?.as_u64()?;
    let age = now_ms.saturating_sub(stored_at);
    let remaining = ttl_ms.checked_sub(age).filter(|left| *left > 0)?;
    let mut result = entry.get("result")?.as_object()?.clone();
    result.insert("ttlMs".to_owned(), Value::from(remaining));
    let meta = result
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        meta.insert(META_CACHE.to_owned(), json!({ "hit": true, "ageMs": age }));
    }
    Some(CacheHit {
        result: Value::Object(result),
    })
}

/// `value` with every object's keys sorted, so equal parameters hash alike.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut sorted = Map::new();
            for key in keys {
                sorted.insert(key.clone(), canonical(&map[key]));
            }
            Value::Object(sorted)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use axum::http::{header, HeaderMap, HeaderValue};
    use session_store::{MemoryStore, StoreSettings};

    use super::*;
    use crate::{
        binding::principal,
        config::{Overrides, ProxyConfig, ProxySettings},
    };

    fn upstream() -> Url {
        Url::parse("http://127.0.0.1:9/mcp").unwrap()
    }

    fn list(id: u64, cursor: Option<&str>) -> Value {
        let mut params = json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28", "io.modelcontextprotocol/clientInfo": {"name": format!("c{id}")}}});
        if let Some(cursor) = cursor {
            params["cursor"] = json!(cursor);
        }
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params})
    }

    fn reply(scope: &str, ttl_ms: u64) -> Value {
        json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [], "ttlMs": ttl_ms, "cacheScope": scope, "resultType": "complete"}})
    }

    fn who(token: &'static str) -> Principal {
        let settings: ProxySettings = ProxyConfig::from_toml_str(
            "[proxy]\nupstream = \"http://127.0.0.1:9/mcp\"\n",
            &Overrides::default(),
        )
        .unwrap()
        .proxy;
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(token));
        principal(&headers, &settings).unwrap()
    }

    #[test]
    fn cache_keys_ignore_meta_and_key_order_but_not_parameters() {
        let a = CacheableRequest::of(&list(1, None), &upstream()).unwrap();
        assert_eq!(
            a,
            CacheableRequest::of(&list(2, None), &upstream()).unwrap()
        );
        assert_ne!(
            a,
            CacheableRequest::of(&list(1, Some("p2")), &upstream()).unwrap()
        );
        let other = Url::parse("http://127.0.0.1:10/mcp").unwrap();
        assert_ne!(a, CacheableRequest::of(&list(1, None), &other).unwrap());
        let reordered: Value = serde_json::from_str(
            r#"{"id":1,"method":"resources/read","params":{"uri":"a","x":{"b":1,"a":2}}}"#,
        )
        .unwrap();
        let ordered: Value = serde_json::from_str(
            r#"{"method":"resources/read","id":1,"params":{"x":{"a":2,"b":1},"uri":"a"}}"#,
        )
        .unwrap();
        assert_eq!(
            CacheableRequest::of(&reordered, &upstream()),
            CacheableRequest::of(&ordered, &upstream())
        );
        let call = json!({"id": 1, "method": "tools/call", "params": {"name": "x"}});
        assert!(CacheableRequest::of(&call, &upstream()).is_none());
        let retry = json!({"id": 1, "method": "tools/list", "params": {"requestState": "s"}});
        assert!(CacheableRequest::of(&retry, &upstream()).is_none());
        let notification = json!({"method": "tools/list"});
        assert!(CacheableRequest::of(&notification, &upstream()).is_none());
    }

    #[tokio::test]
    async fn public_results_are_shared_and_private_ones_stay_with_their_principal() {
        let store = MemoryStore::new(StoreSettings::default()).unwrap();
        let request = CacheableRequest::of(&list(1, None), &upstream()).unwrap();
        let (alice, bob) = (who("Bearer alice"), who("Bearer bob"));

        let (hit, slot) = lookup(&store, &request, Some(&alice)).await.unwrap();
        assert!(hit.is_none());
        keep(&store, &slot, Some(&alice), &reply("private", 60_000), 4096)
            .await
            .unwrap()
            .unwrap();
        let (hit, _) = lookup(&store, &request, Some(&alice)).await.unwrap();
        let hit = hit.expect("alice's private result is served to alice");
        assert_eq!(hit.result["_meta"][META_CACHE]["hit"], true);
        assert!(hit.result["ttlMs"].as_u64().unwrap() <= 60_000);
        assert!(lookup(&store, &request, Some(&bob))
            .await
            .unwrap()
            .0
            .is_none());
        assert!(lookup(&store, &request, None).await.unwrap().0.is_none());
        assert_eq!(
            keep(&store, &slot, None, &reply("private", 60_000), 4096)
                .await
                .unwrap(),
            Err(NotKept::PrivateWithoutCredentials)
        );

        keep(&store, &slot, Some(&alice), &reply("public", 60_000), 4096)
            .await
            .unwrap()
            .unwrap();
        assert!(lookup(&store, &request, Some(&bob))
            .await
            .unwrap()
            .0
            .is_some());
        assert!(lookup(&store, &request, None).await.unwrap().0.is_some());
    }

    #[tokio::test]
    async fn a_notification_invalidates_and_a_racing_result_stays_unread() {
        let store = MemoryStore::new(StoreSettings::default()).unwrap();
        let request = CacheableRequest::of(&list(1, None), &upstream()).unwrap();
        let (_, before) = lookup(&store, &request, None).await.unwrap();
        keep(&store, &before, None, &reply("public", 60_000), 4096)
            .await
            .unwrap()
            .unwrap();
        assert!(lookup(&store, &request, None).await.unwrap().0.is_some());
        assert!(invalidates(
            &json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        ));
        invalidate(&store, &upstream()).await.unwrap();
        assert!(lookup(&store, &request, None).await.unwrap().0.is_none());
        // A result asked for before the invalidation is kept under the old
        // generation: never served.
        keep(&store, &before, None, &reply("public", 60_000), 4096)
            .await
            .unwrap()
            .unwrap();
        assert!(lookup(&store, &request, None).await.unwrap().0.is_none());
    }

    #[tokio::test]
    async fn only_complete_results_with_a_positive_ttl_that_fit_are_kept() {
        let store = MemoryStore::new(StoreSettings::default()).unwrap();
        let request = CacheableRequest::of(&list(1, None), &upstream()).unwrap();
        let (_, slot) = lookup(&store, &request, None).await.unwrap();
        let mut input_required = reply("public", 60_000);
        input_required["result"]["resultType"] = json!("input_required");
        let error = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "x"}});
        for (case, response, max, outcome) in [
            (
                "ttl 0",
                reply("public", 0),
                4096,
                Err(NotKept::NotCacheable),
            ),
            (
                "no scope",
                reply("shared", 100),
                4096,
                Err(NotKept::NotCacheable),
            ),
            (
                "input required",
                input_required,
                4096,
                Err(NotKept::NotCacheable),
            ),
            ("error", error, 4096, Err(NotKept::NotCacheable)),
            (
                "too large",
                reply("public", 100),
                10,
                Err(NotKept::TooLarge),
            ),
        ] {
            let kept = keep(&store, &slot, None, &response, max).await.unwrap();
            assert_eq!(kept, outcome, "{case}");
        }
        assert!(lookup(&store, &request, None).await.unwrap().0.is_none());
    }

    #[test]
    fn served_hits_count_down_their_ttl() {
        let entry = json!({"storedAtMs": 1_000, "ttlMs": 500, "result": {"tools": [], "ttlMs": 500, "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "s"}}}}).to_string();
        let hit = serve(entry.as_bytes(), 1_200).unwrap();
        assert_eq!(hit.result["ttlMs"], 300);
        assert_eq!(hit.result["_meta"][META_CACHE]["ageMs"], 200);
        assert_eq!(
            hit.result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            "s"
        );
        assert!(serve(entry.as_bytes(), 1_500).is_none());
    }
}
