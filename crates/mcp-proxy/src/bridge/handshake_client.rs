//! A handshake-era client served by a 2026-07-28-only upstream (issue 13,
//! direction 2). The client keeps its proxy session as with any upstream; the
//! proxy answers its `initialize` from the upstream's `server/discover`, swallows
//! `notifications/initialized`, and sends each later request as a
//! self-contained 2026-07-28 request carrying the session's `clientInfo` and
//! capabilities (`_meta` and the standard headers, no `Mcp-Session-Id`). The
//! upstream keeps nothing per client, so an upstream restart loses no session.
//!
//! A session served this way carries the tag [`BRIDGED_TAG`], so every instance
//! routes it here. An upstream is taken for 2026-07-28-only when it refuses a
//! handshake `initialize` and its `server/discover` names 2026-07-28 (a server
//! serving both eras accepts the `initialize`, which is then forwarded as always).

use std::sync::Arc;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use session_store::{
    Clock, Direction, Frame, NewSession, Session, SessionId, SessionStatus, SystemClock, Transport,
};
use tokio::sync::mpsc;

use crate::{
    binding::{Principal, BINDING_TAG},
    bridge::{
        call, generation::Generation, handshake_input, record, settings::BridgeMode, translate,
        wire,
    },
    errors::ProxyError,
    event_id::StreamId,
    jsonrpc::{InitializeRequest, SESSIONLESS_REVISION},
    limits::SessionSlot,
    modern::{
        headers::{name_source, META_PROTOCOL_VERSION, METHOD_HEADER, NAME_HEADER},
        record::{Recording, META_CLIENT_CAPABILITIES, META_CLIENT_INFO},
        reply::Exchange,
    },
    relay::{client_channel, sse_response},
    state::AppState,
    upstream::SESSION_ID_HEADER,
};

/// The session tag marking a handshake client served by a 2026-07-28-only
/// upstream (value [`BRIDGED_VALUE`]).
pub const BRIDGED_TAG: &str = "bridge";
/// The value of [`BRIDGED_TAG`].
pub const BRIDGED_VALUE: &str = "modern-upstream";

/// JSON-RPC code of a request the bridge could not complete.
const INTERNAL_ERROR: i64 = -32603;

/// Whether `session` is served through this bridge.
pub fn is_bridged(session: &Session) -> bool {
    session.tags.get(BRIDGED_TAG).map(String::as_str) == Some(BRIDGED_VALUE)
}

/// Whether an upstream that refused a handshake `initialize` is to be bridged:
/// the bridge is on and the upstream's `server/discover` names 2026-07-28
/// (`base`: the client's headers as forwarded). An upstream that is down or
/// answers 5xx or 401 decides nothing: its refusal reaches the client as is.
pub async fn upstream_is_modern_only(app: &AppState, base: &HeaderMap) -> bool {
    app.settings.bridge.mode != BridgeMode::Off
        && super::generation::decided(app, base).await == Some(Generation::Modern)
}

/// Answers the handshake client's `initialize` (`body`, parsed as `request`)
/// from the upstream's `server/discover`, and creates its session (tagged
/// [`BRIDGED_TAG`], bound to `binding`, filling `slot`).
pub async fn initialize(
    app: &Arc<AppState>,
    base: &HeaderMap,
    body: &Bytes,
    request: &InitializeRequest,
    binding: Option<Principal>,
    slot: SessionSlot,
) -> Result<Response, ProxyError> {
    let discover = json!({
        "jsonrpc": "2.0",
        "id": request.id,
        "method": "server/discover",
        "params": {},
    });
    let discover = to_modern(&discover, &request.client_info);
    let answer = send(app, base, &discover).await;
    let result = match &answer {
        Ok(messages) => messages
            .iter()
            .find_map(|message| message.get("result"))
            .cloned(),
        Err(_) => None,
    };
    let Some(result) = result else {
        let message = match answer {
            Err(error) => return Err(error),
            Ok(messages) => messages
                .iter()
                .find_map(|message| message.pointer("/error/message"))
                .and_then(Value::as_str)
                .unwrap_or("no result")
                .to_owned(),
        };
        return Err(ProxyError::UpstreamUnreachable(format!(
            "the upstream refused server/discover: {message}"
        )));
    };
    let initialize_result = initialize_result(&result, request.protocol_version.as_deref());

    let mut new = NewSession::new(app.store.new_session_id()?);
    new.transport = Transport::StreamableHttp;
    new.status = SessionStatus::Active;
    new.protocol_version = Some(
        initialize_result["protocolVersion"]
            .as_str()
            .unwrap_or(SESSIONLESS_REVISION)
            .to_owned(),
    );
    new.client_info = Some(request.client_info.clone());
    new.server_info = Some(json!({
        "serverInfo": initialize_result["serverInfo"],
        "capabilities": initialize_result["capabilities"],
    }));
    new = new.with_tag(BRIDGED_TAG, BRIDGED_VALUE);
    if let Some(binding) = binding {
        new = new.with_tag(BINDING_TAG, binding.as_str());
    }
    let session = app.store.create(new).await?;
    slot.fill(session.id.clone());
    tracing::info!(session = %session.id, "session created (handshake client, 2026-07-28 upstream)");

    let exchange = exchange_for(app, &session, body).await;
    record::upstream_form(app, &exchange, &discover, true).await;
    if let Ok(messages) = &answer {
        for message in messages {
            record::upstream_form(app, &exchange, message, false).await;
        }
    }
    let reply = json!({"jsonrpc": "2.0", "id": request.id, "result": initialize_result});
    let mut response = call::json_reply(app, &exchange, &reply).await;
    if let Ok(value) = HeaderValue::from_str(session.id.as_str()) {
        response.headers_mut().insert(SESSION_ID_HEADER, value);
    }
    Ok(response)
}

/// Serves one message of a bridged `session` (`body`, recorded on `stream`):
/// a request is sent as a self-contained 2026-07-28 request and its reply
/// relayed under the client's id; notifications and responses are accepted
/// (`notifications/initialized` ends nothing upstream, which keeps no session).
pub async fn forward(
    app: &Arc<AppState>,
    session: &Session,
    stream: StreamId,
    base: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ProxyError> {
    let message: Value =
        serde_json::from_slice(body).map_err(|error| ProxyError::NotJson(error.to_string()))?;
    let (Some(_), Some(id)) = (message.get("method"), message.get("id")) else {
        if message.get("id").is_some() {
            // The client's answer to an input request: for the instance
            // holding the request's stream.
            handshake_input::keep_answer(app, &session.id, &message).await?;
        }
        return Ok(StatusCode::ACCEPTED.into_response());
    };
    let id = id.clone();
    let exchange = Exchange {
        recording: Some(Recording {
            session: session.id.clone(),
            stream,
        }),
        ..Exchange::default()
    };
    let client_info = session.client_info.clone().unwrap_or_else(|| json!({}));
    let request = to_modern(&message, &client_info);
    record::upstream_form(app, &exchange, &request, true).await;
    let response = wire::post(app, modern_headers(base, &request), &request).await?;
    let status = response.status();
    if !status.is_success() {
        let refused = translate::error(
            &id,
            INTERNAL_ERROR,
            &format!("the upstream refused the bridged request with HTTP {status}"),
            None,
        );
        return Ok(call::json_reply(app, &exchange, &refused).await);
    }
    let (tx, client_body) = client_channel(app.settings.sse_keepalive, None);
    let round = Round {
        app: app.clone(),
        exchange,
        session: session.id.clone(),
        base: base.clone(),
        client_id: id,
    };
    tokio::spawn(round.relay(request, response, tx));
    let mut response = sse_response(
        StatusCode::OK,
        HeaderMap::new(),
        Some(&session.id),
        client_body,
    );
    if let Ok(value) = HeaderValue::from_str(session.id.as_str()) {
        response.headers_mut().insert(SESSION_ID_HEADER, value);
    }
    Ok(response)
}

/// Most rounds of input requests one request may go through.
const MAX_ROUNDS: usize = 16;

/// One bridged request in flight: relays its reply to the client, asking the
/// client for input as often as the upstream asks (see [`handshake_input`]).
struct Round {
    app: Arc<AppState>,
    exchange: Exchange,
    session: SessionId,
    base: HeaderMap,
    client_id: Value,
}

impl Round {
    /// Relays the reply to `request` (`response`) and the replies to its
    /// retries to `tx`, ending with the result under the client's id.
    async fn relay(
        self,
        mut request: Value,
        mut response: reqwest::Response,
        tx: mpsc::Sender<Bytes>,
    ) {
        for _ in 0..MAX_ROUNDS {
            let Some(outcome) = self.reply(response, &tx).await else {
                return;
            };
            let Some((requests, state)) = handshake_input::input_required(&outcome) else {
                let message = to_handshake(outcome, &self.client_id);
                call::send_event(&self.app, &self.exchange, &tx, &message).await;
                return;
            };
            let answers =
                match handshake_input::ask(&self.app, &self.exchange, &self.session, &tx, requests)
                    .await
                {
                    Ok(answers) => answers,
                    Err(reason) => return self.fail(&tx, &reason).await,
                };
            request = handshake_input::with_answers(&request, answers, state);
            record::upstream_form(&self.app, &self.exchange, &request, true).await;
            response =
                match wire::post(&self.app, modern_headers(&self.base, &request), &request).await {
                    Ok(response) if response.status().is_success() => response,
                    Ok(response) => {
                        let reason = format!(
                            "the upstream refused the retry with HTTP {}",
                            response.status()
                        );
                        return self.fail(&tx, &reason).await;
                    }
                    Err(error) => return self.fail(&tx, &error.to_string()).await,
                };
        }
        self.fail(
            &tx,
            &format!("the upstream asked for input more than {MAX_ROUNDS} times"),
        )
        .await;
    }

    /// Relays the notifications of one upstream reply; its response (upstream
    /// form), or `None` when the reply broke off (the client was told).
    async fn reply(&self, response: reqwest::Response, tx: &mpsc::Sender<Bytes>) -> Option<Value> {
        let mut messages = Box::pin(wire::messages(&self.app, response));
        while let Some(next) = messages.next().await {
            let message = match next {
                Ok(message) => message,
                Err(error) => {
                    tracing::debug!(%error, "bridge: upstream reply broke off");
                    break;
                }
            };
            record::upstream_form(&self.app, &self.exchange, &message, false).await;
            if message.get("method").is_none() {
                return Some(message);
            }
            call::send_event(&self.app, &self.exchange, tx, &message).await;
        }
        self.fail(tx, "the upstream's reply broke off before the result")
            .await;
        None
    }

    /// Ends the request with a JSON-RPC error naming `reason`.
    async fn fail(&self, tx: &mpsc::Sender<Bytes>, reason: &str) {
        let error = translate::error(&self.client_id, INTERNAL_ERROR, reason, None);
        call::send_event(&self.app, &self.exchange, tx, &error).await;
    }
}

/// The session and the exchange of a handshake client's `initialize`
/// (`body` recorded as its request).
async fn exchange_for(app: &AppState, session: &Session, body: &Bytes) -> Exchange {
    let frame = Frame::new(Direction::ClientToServer, SystemClock.now(), body.to_vec());
    let stream = match app.store.append_frame(&session.id, frame).await {
        Ok(frame_id) => StreamId::for_request(frame_id),
        Err(error) => {
            app.metrics.frame_not_recorded();
            tracing::warn!(session = %session.id, %error, "initialize request not recorded");
            StreamId::new_unrecorded()
        }
    };
    Exchange {
        recording: Some(Recording {
            session: session.id.clone(),
            stream,
        }),
        ..Exchange::default()
    }
}

/// Sends the 2026-07-28 `request` and reads every message of the reply.
async fn send(app: &AppState, base: &HeaderMap, request: &Value) -> Result<Vec<Value>, ProxyError> {
    let response = wire::post(app, modern_headers(base, request), request).await?;
    let messages: Vec<_> = wire::messages(app, response).collect().await;
    messages.into_iter().collect()
}

/// The headers of the self-contained 2026-07-28 `request`: the client's
/// forwarded headers (`base`) without any `Mcp-*` header (its session id, its
/// handshake protocol version), with `MCP-Protocol-Version`, `Mcp-Method` and,
/// where the method names one, `Mcp-Name`.
pub(crate) fn modern_headers(base: &HeaderMap, request: &Value) -> HeaderMap {
    let mut headers = wire::handshake_headers(base, None, SESSIONLESS_REVISION);
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Ok(value) = HeaderValue::from_str(method) {
        headers.insert(METHOD_HEADER, value);
    }
    let name = name_source(method)
        .and_then(|field| request.pointer(&format!("/params/{field}")))
        .and_then(Value::as_str)
        .and_then(|name| HeaderValue::from_str(name).ok());
    if let Some(value) = name {
        headers.insert(NAME_HEADER, value);
    }
    headers
}

/// The handshake `message` as a self-contained 2026-07-28 request: `_meta`
/// carries the protocol version and the session's `clientInfo` and
/// capabilities (`client_info`: `{"clientInfo", "capabilities"}` as recorded).
pub(crate) fn to_modern(message: &Value, client_info: &Value) -> Value {
    let mut request = message.clone();
    let Some(object) = request.as_object_mut() else {
        return request;
    };
    let params = object
        .entry("params")
        .or_insert_with(|| Value::Object(Map::new()));
    if !params.is_object() {
        *params = Value::Object(Map::new());
    }
    let Some(params) = params.as_object_mut() else {
        return request;
    };
    let meta = params
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(
            META_PROTOCOL_VERSION.to_owned(),
            json!(SESSIONLESS_REVISION),
        );
        meta.insert(
            META_CLIENT_INFO.to_owned(),
            client_info
                .get("clientInfo")
                .cloned()
                .unwrap_or_else(|| json!({"name": "unknown", "version": "0"})),
        );
        meta.insert(
            META_CLIENT_CAPABILITIES.to_owned(),
            client_info
                .get("capabilities")
                .cloned()
                .unwrap_or_else(|| json!({})),
        );
    }
    request
}

/// An upstream message in handshake form: a response gets the client's `id`
/// and loses `resultType: "complete"` and the 2026-07-28 cache hints;
/// notifications pass unchanged.
fn to_handshake(mut message: Value, id: &Value) -> Value {
    if message.get("method").is_some() {
        return message;
    }
    if let Some(object) = message.as_object_mut() {
        object.insert("id".to_owned(), id.clone());
    }
    if let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) {
        for key in ["resultType", "cacheScope", "ttlMs"] {
            result.remove(key);
        }
    }
    message
}

/// The `initialize` result built from a `server/discover` result: the
/// client's requested version echoed (the upstream serves every request
/// self-contained, so no version is negotiated with it), its capabilities,
/// `serverInfo` and `instructions`.
fn initialize_result(discover: &Value, requested: Option<&str>) -> Value {
    let mut result = json!({
        "protocolVersion": requested.unwrap_or(super::pool::HANDSHAKE_REVISION),
        "capabilities": discover.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        "serverInfo": server_info(discover),
    });
    if let Some(instructions) = discover.get("instructions") {
        result["instructions"] = instructions.clone();
    }
    result
}

/// The `serverInfo` of a `server/discover` result: in
/// `_meta["io.modelcontextprotocol/serverInfo"]` (as the SDK servers send it)
/// or a top-level `serverInfo`.
fn server_info(discover: &Value) -> Value {
    discover
        .pointer("/_meta/io.modelcontextprotocol~1serverInfo")
        .or_else(|| discover.get("serverInfo"))
        .cloned()
        .unwrap_or_else(|| json!({"name": "upstream", "version": "0"}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handshake_request_carries_the_sessions_client_in_meta() {
        let info = json!({"clientInfo": {"name": "c", "version": "1"}, "capabilities": {"elicitation": {}}});
        let request = to_modern(
            &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
            &info,
        );
        assert_eq!(
            request["params"]["_meta"][META_PROTOCOL_VERSION],
            "2026-07-28"
        );
        assert_eq!(request["params"]["_meta"][META_CLIENT_INFO]["name"], "c");
        assert_eq!(
            request["params"]["_meta"][META_CLIENT_CAPABILITIES],
            json!({"elicitation": {}})
        );
        let headers = modern_headers(
            &HeaderMap::new(),
            &to_modern(
                &json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "add"}}),
                &info,
            ),
        );
        assert_eq!(headers[METHOD_HEADER], "tools/call");
        assert_eq!(headers[NAME_HEADER], "add");
    }

    #[test]
    fn a_modern_result_reaches_the_client_in_handshake_form() {
        let reply = to_handshake(
            json!({"jsonrpc": "2.0", "id": "x", "result": {"resultType": "complete", "ttlMs": 5, "tools": []}}),
            &json!(9),
        );
        assert_eq!(
            reply,
            json!({"jsonrpc": "2.0", "id": 9, "result": {"tools": []}})
        );
    }

    #[test]
    fn initialize_is_answered_from_discover() {
        let result = initialize_result(
            &json!({"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}}, "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "s", "version": "2"}}}),
            Some("2025-06-18"),
        );
        assert_eq!(result["protocolVersion"], "2025-06-18");
        assert_eq!(result["capabilities"], json!({"tools": {}}));
        assert_eq!(result["serverInfo"]["name"], "s");
    }
}
