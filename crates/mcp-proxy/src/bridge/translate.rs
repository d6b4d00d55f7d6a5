//! The message translations between the generations: a 2026-07-28 request into
//! its handshake form and back, `server/discover` from `initialize`, and the
//! `InputRequiredResult` that carries the upstream's server-to-client requests.

use serde_json::{json, Map, Value};

use crate::{
    bridge::ids::with_id, jsonrpc::SESSIONLESS_REVISION, modern::cache::CACHEABLE_METHODS,
};

/// How long a client may keep the `server/discover` answer (`ttlMs`).
pub const DISCOVER_TTL_MS: u64 = 60_000;

/// Prefix of the `_meta` keys that carry the 2026-07-28 per-request context.
const MODERN_META_PREFIX: &str = "io.modelcontextprotocol/";

/// `request` in handshake form under the upstream id `id`: the per-request
/// context (`io.modelcontextprotocol/*` in `_meta`, which the upstream session
/// already has), `inputResponses` and `requestState` removed; `progressToken`
/// and other `_meta` kept.
pub fn to_upstream(request: &Value, id: &Value) -> Value {
    let mut upstream = with_id(request.clone(), id);
    if let Some(params) = upstream.get_mut("params").and_then(Value::as_object_mut) {
        params.remove("inputResponses");
        params.remove("requestState");
        let empty_meta = match params.get_mut("_meta").and_then(Value::as_object_mut) {
            Some(meta) => {
                meta.retain(|key, _| !key.starts_with(MODERN_META_PREFIX));
                meta.is_empty()
            }
            None => false,
        };
        if empty_meta {
            params.remove("_meta");
        }
    }
    upstream
}

/// The upstream's response to `method` in 2026-07-28 form under the client's
/// `id`: a result says it is complete (`resultType`, which handshake results
/// lack), and a cacheable one ("Caching") gets `cacheScope: "private"` (it came
/// from a session of one principal) and `ttlMs: 0` (a handshake server promises
/// no freshness; its list-changed notifications do not reach the client).
pub fn to_client(response: &Value, id: &Value, method: &str) -> Value {
    let mut client = with_id(response.clone(), id);
    if let Some(result) = client.get_mut("result").and_then(Value::as_object_mut) {
        result
            .entry("resultType")
            .or_insert_with(|| Value::from("complete"));
        if CACHEABLE_METHODS.contains(&method) {
            result
                .entry("cacheScope")
                .or_insert_with(|| Value::from("private"));
            result.entry("ttlMs").or_insert_with(|| Value::from(0));
        }
    }
    client
}

/// A `server/discover` result built from the upstream's `initialize` result.
pub fn discover_result(initialize: &Value) -> Value {
    let mut result = Map::new();
    result.insert(
        "supportedVersions".to_owned(),
        json!([SESSIONLESS_REVISION]),
    );
    result.insert(
        "capabilities".to_owned(),
        initialize
            .get("capabilities")
            .cloned()
            .unwrap_or_else(|| json!({})),
    );
    for key in ["serverInfo", "instructions"] {
        if let Some(value) = initialize.get(key) {
            result.insert(key.to_owned(), value.clone());
        }
    }
    result.insert("cacheScope".to_owned(), Value::from("private"));
    result.insert("ttlMs".to_owned(), Value::from(DISCOVER_TTL_MS));
    result.insert("resultType".to_owned(), Value::from("complete"));
    Value::Object(result)
}

/// An `InputRequiredResult` response under `id` asking `requests` (key ->
/// `{method, params}`) and carrying `state`.
pub fn input_required(id: &Value, requests: Map<String, Value>, state: &str) -> Value {
    let mut result = Map::new();
    result.insert("resultType".to_owned(), Value::from("input_required"));
    if !requests.is_empty() {
        result.insert("inputRequests".to_owned(), Value::Object(requests));
    }
    result.insert("requestState".to_owned(), Value::from(state));
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A JSON-RPC error response under `id`.
pub fn error(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({"code": code, "message": message});
    if let Some(data) = data {
        error["data"] = data;
    }
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modern_request_loses_its_context_and_keeps_its_progress_token() {
        let request = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "echo",
            "requestState": "s",
            "inputResponses": {"0": {}},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "progressToken": "p"},
        }});
        let upstream = to_upstream(&request, &json!("u:1"));
        assert_eq!(upstream["id"], "u:1");
        assert_eq!(
            upstream["params"],
            json!({"name": "echo", "_meta": {"progressToken": "p"}})
        );
        let bare = json!({"id": 1, "method": "tools/list", "params": {"_meta": {"io.modelcontextprotocol/clientCapabilities": {}}}});
        assert_eq!(to_upstream(&bare, &json!(2))["params"], json!({}));
    }

    #[test]
    fn results_come_back_complete_under_the_clients_id() {
        let response = json!({"jsonrpc": "2.0", "id": "u:1", "result": {"tools": []}});
        let client = to_client(&response, &json!(9), "tools/list");
        assert_eq!(client["id"], 9);
        assert_eq!(client["result"]["resultType"], "complete");
        assert_eq!(client["result"]["cacheScope"], "private");
        assert_eq!(client["result"]["ttlMs"], 0);
        let called = to_client(&response, &json!(9), "tools/call");
        assert!(called["result"].get("cacheScope").is_none());
        let failed = json!({"jsonrpc": "2.0", "id": "u:1", "error": {"code": -1, "message": "m"}});
        assert_eq!(
            to_client(&failed, &json!(9), "tools/list")["error"]["code"],
            -1
        );
    }

    #[test]
    fn discover_comes_from_initialize() {
        let initialize = json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "s", "version": "1"}});
        let discover = discover_result(&initialize);
        assert_eq!(discover["supportedVersions"], json!(["2026-07-28"]));
        assert_eq!(discover["capabilities"], json!({"tools": {}}));
        assert_eq!(discover["serverInfo"]["name"], "s");
        assert_eq!(discover["resultType"], "complete");
    }
}
