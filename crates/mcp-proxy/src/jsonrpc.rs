//! Just enough JSON-RPC inspection to route a message: is it `initialize`, which
//! request ids does it carry, which responses does a reply hold. Payloads are
//! forwarded and recorded as received; nothing here re-serializes them.

use serde::Deserialize;
use serde_json::Value;

/// The first protocol revision without sessions (2026-07-28): its requests carry
/// no `Mcp-Session-Id`. Revisions are dates, so they compare as text.
pub const SESSIONLESS_REVISION: &str = "2026-07-28";

/// The method that opens a session in the session-based protocol revisions.
pub const INITIALIZE_METHOD: &str = "initialize";

/// What the proxy needs to know about a client's POST body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientMessage {
    /// The ids of the requests in the message (empty for notifications and
    /// responses); the SSE stream a POST opens ends when all are answered.
    pub request_ids: Vec<Value>,
    /// Set when the message is an `initialize` request.
    pub initialize: Option<InitializeRequest>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]` of the first
    /// request, which sessionless revisions send on every request.
    pub meta_protocol_version: Option<String>,
}

/// The parts of an `initialize` request a session records.
#[derive(Clone, Debug, PartialEq)]
pub struct InitializeRequest {
    /// The request id, to find its response.
    pub id: Value,
    /// `params.protocolVersion`: what the client asked for.
    pub protocol_version: Option<String>,
    /// `{"clientInfo": ..., "capabilities": ...}` from the params.
    pub client_info: Value,
}

/// The parts of an `initialize` result a session records.
#[derive(Clone, Debug, PartialEq)]
pub struct InitializeResult {
    /// `result.protocolVersion`: the negotiated revision.
    pub protocol_version: Option<String>,
    /// `{"serverInfo": ..., "capabilities": ..., "instructions": ...}`.
    pub server_info: Value,
}

/// Parses a client's POST body: one JSON-RPC message or a batch (array).
pub fn inspect_client_message(body: &[u8]) -> Result<ClientMessage, String> {
    let value: Value = serde_json::from_slice(body).map_err(|error| error.to_string())?;
    let messages: Vec<&Value> = match &value {
        Value::Array(items) if items.is_empty() => return Err("empty batch".to_owned()),
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![&value],
        _ => return Err("expected a JSON object or array".to_owned()),
    };
    let mut inspected = ClientMessage::default();
    for message in messages {
        let Some(method) = message.get("method").and_then(Value::as_str) else {
            continue; // a response to a server request
        };
        let Some(id) = message.get("id").filter(|id| !id.is_null()) else {
            continue; // a notification
        };
        inspected.request_ids.push(id.clone());
        if inspected.meta_protocol_version.is_none() {
            inspected.meta_protocol_version = message
                .pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        if method == INITIALIZE_METHOD && !matches!(value, Value::Array(_)) {
            let params = message.get("params");
            let field = |name: &str| params.and_then(|p| p.get(name)).cloned();
            inspected.initialize = Some(InitializeRequest {
                id: id.clone(),
                protocol_version: params
                    .and_then(|p| p.get("protocolVersion"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                client_info: serde_json::json!({
                    "clientInfo": field("clientInfo"),
                    "capabilities": field("capabilities"),
                }),
            });
        }
    }
    Ok(inspected)
}

/// The ids of the responses (results or errors) in a server message or batch.
/// Anything unparsable holds no responses. Runs on every relayed event, so it
/// reads only the members it needs: results, params and errors are skipped, not
/// built.
pub fn response_ids(payload: &[u8]) -> Vec<Value> {
    let response_id = |message: ResponseProbe| {
        (!message.method && (message.result || message.error))
            .then_some(message.id)
            .flatten()
    };
    match payload.iter().find(|byte| !byte.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice::<Vec<ResponseProbe>>(payload)
            .map(|messages| messages.into_iter().filter_map(response_id).collect())
            .unwrap_or_default(),
        Some(b'{') => serde_json::from_slice::<ResponseProbe>(payload)
            .ok()
            .and_then(response_id)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// The members of a JSON-RPC message that tell a response and its id; the
/// others are skipped while parsing. A member counts as present even when it
/// is `null` (`"result": null` is a response).
#[derive(serde::Deserialize)]
struct ResponseProbe {
    #[serde(default, deserialize_with = "present")]
    method: bool,
    #[serde(default, deserialize_with = "present")]
    result: bool,
    #[serde(default, deserialize_with = "present")]
    error: bool,
    #[serde(default, deserialize_with = "some_value")]
    id: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
}

/// `Some` for any value, `null` included, as `Value::get` would find it.
fn some_value<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// The `initialize` result in a server message, when it answers request `id`.
pub fn initialize_result(payload: &[u8], id: &Value) -> Option<InitializeResult> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    if value.get("id") != Some(id) {
        return None;
    }
    let result = value.get("result")?;
    let field = |name: &str| result.get(name).cloned();
    Some(InitializeResult {
        protocol_version: result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .map(str::to_owned),
        server_info: serde_json::json!({
            "serverInfo": field("serverInfo"),
            "capabilities": field("capabilities"),
            "instructions": field("instructions"),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn initialize_is_recognised_with_its_client_info() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#;
        let message = inspect_client_message(body).unwrap();
        let init = message.initialize.unwrap();
        assert_eq!(init.id, json!(1));
        assert_eq!(init.protocol_version.as_deref(), Some("2025-06-18"));
        assert_eq!(init.client_info["clientInfo"]["name"], "c");
        assert_eq!(message.request_ids, vec![json!(1)]);
    }

    #[test]
    fn batches_notifications_and_responses() {
        let body = br#"[{"jsonrpc":"2.0","id":"a","method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":7,"result":{}}]"#;
        let message = inspect_client_message(body).unwrap();
        assert_eq!(message.request_ids, vec![json!("a")]);
        assert!(message.initialize.is_none());
        assert!(inspect_client_message(b"[]").is_err());
        assert!(inspect_client_message(b"nope").is_err());
        assert!(inspect_client_message(b"3").is_err());
    }

    #[test]
    fn sessionless_requests_carry_their_version_in_meta() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let message = inspect_client_message(body).unwrap();
        assert_eq!(message.meta_protocol_version.as_deref(), Some("2026-07-28"));
    }

    #[test]
    fn responses_are_found_in_messages_and_batches() {
        assert_eq!(
            response_ids(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#),
            vec![json!(3)]
        );
        assert_eq!(
            response_ids(br#"[{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"x"}},{"jsonrpc":"2.0","method":"n"}]"#),
            vec![json!(3)]
        );
        assert!(response_ids(br#"{"jsonrpc":"2.0","method":"notifications/progress"}"#).is_empty());
        assert!(response_ids(b"").is_empty());
        assert_eq!(
            response_ids(br#" {"jsonrpc":"2.0","id":"a","result":null}"#),
            vec![json!("a")],
            "a null result is a response"
        );
        assert!(response_ids(br#"{"jsonrpc":"2.0","id":1,"result":{}"#).is_empty());
        assert!(response_ids(b"42").is_empty());
    }

    #[test]
    fn initialize_result_matches_its_request_id() {
        let payload = br#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"s","version":"2"}}}"#;
        let result = initialize_result(payload, &json!(1)).unwrap();
        assert_eq!(result.protocol_version.as_deref(), Some("2025-06-18"));
        assert_eq!(result.server_info["serverInfo"]["name"], "s");
        assert!(initialize_result(payload, &json!(2)).is_none());
    }
}
