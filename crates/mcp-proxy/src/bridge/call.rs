//! One bridged request from a 2026-07-28 client into a pooled handshake-era
//! upstream session: sent under a minted id, its reply relayed as SSE
//! (progress and log notifications on the request's own stream, the response
//! under the client's id). A server-to-client request the upstream raises
//! during the call (elicitation, sampling, roots) ends the client's stream with
//! an `InputRequiredResult` whose sealed `requestState` names the pending call;
//! the upstream stream is read on by this instance, which keeps the call's
//! record (its input requests and, at the end, its response) in the store's
//! kv. The client's retry, on any instance, posts its answers into the upstream
//! session and waits for the record to move on.

use std::{sync::Arc, time::Duration};

use axum::{
    http::{HeaderMap, StatusCode},
    response::Response,
};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use session_store::{KvCondition, KvKey};
use tokio::sync::mpsc;

use crate::{
    bridge::{
        pool::{self, UpstreamSession},
        record,
        request_state::{self, PendingCall, REQUEST_STATE_TTL},
        translate, wire,
    },
    errors::ProxyError,
    modern::reply::{self, Exchange},
    relay::{client_channel, sse_response},
    sse::SseEvent,
    state::AppState,
};

/// How long a pending call's record is kept.
pub const CALL_TTL: Duration = Duration::from_secs(600);

/// How long a retry waits for the upstream's next step before it answers with
/// a `requestState`-only `InputRequiredResult` (the client then retries).
pub const RETRY_WAIT: Duration = Duration::from_secs(10);

/// How often a waiting retry reads the call's record.
const POLL_STEP: Duration = Duration::from_millis(50);

/// JSON-RPC code of a refused `requestState` (invalid params).
const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC code of a call the bridge could not complete.
const INTERNAL_ERROR: i64 = -32603;

/// A server-to-client request the upstream raised during a call.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PendingInput {
    /// Its key in `inputRequests`: the upstream's id as JSON text.
    key: String,
    /// The upstream's JSON-RPC id, for the answer.
    id: Value,
    /// `{method, params}`.
    request: Value,
}

/// A pending call as kept in kv.
#[derive(Debug, Serialize, Deserialize)]
struct CallRecord {
    /// The upstream session the call runs in.
    session: UpstreamSession,
    /// Every input request raised so far.
    requests: Vec<PendingInput>,
    /// The upstream's response, once it came (upstream form).
    outcome: Option<Value>,
}

fn call_key(call: &str) -> Result<KvKey, ProxyError> {
    KvKey::new(format!("bridge:call:{call}")).map_err(|error| ProxyError::Store(error.to_string()))
}

/// What the relay of one call needs.
struct Call {
    app: Arc<AppState>,
    exchange: Exchange,
    id: String,
    client_id: Value,
    method: String,
    upstream_id: Value,
    session: UpstreamSession,
    base: HeaderMap,
    sealed: PendingCall,
}

/// Sends the client's `message` into its pooled upstream session and relays
/// the reply (see the module).
pub async fn start(
    app: &Arc<AppState>,
    exchange: Exchange,
    base: &HeaderMap,
    message: &Value,
) -> Result<Response, ProxyError> {
    let upstream_id = app.bridge.ids.mint();
    let request = translate::to_upstream(message, &upstream_id);
    let (client, key, mut session) = pool::for_request(app, &exchange, base, message).await?;
    record::upstream_form(app, &exchange, &request, true).await;
    let mut response = send(app, base, &session, &request).await?;
    if pool::is_lost(app, base, &session, response.status()).await {
        // The session rejection proves the request never reached a handler.
        pool::forget(app, &key, &session).await;
        session = pool::session(app, &key, &client, base, &exchange).await?;
        response = send(app, base, &session, &request).await?;
    }
    let client_id = message.get("id").cloned().unwrap_or(Value::Null);
    let status = response.status();
    if !status.is_success() {
        let refused = translate::error(
            &client_id,
            INTERNAL_ERROR,
            &format!("the upstream refused the bridged request with HTTP {status}"),
            None,
        );
        return Ok(json_reply(app, &exchange, &refused).await);
    }
    let (tx, body) = client_channel(app.settings.sse_keepalive, None);
    let call = Call {
        app: app.clone(),
        id: format!("{:032x}", rand::random::<u128>()),
        sealed: PendingCall {
            call: String::new(),
            principal: request_state::principal_digest(exchange.principal.as_ref()),
            request: request_state::request_digest(message),
            answered: Vec::new(),
            expires: 0,
        },
        exchange,
        client_id,
        method: message
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        upstream_id,
        session,
        base: base.clone(),
    };
    tokio::spawn(call.relay(response, tx));
    Ok(sse_response(StatusCode::OK, HeaderMap::new(), None, body))
}

async fn send(
    app: &AppState,
    base: &HeaderMap,
    session: &UpstreamSession,
    message: &Value,
) -> Result<reqwest::Response, ProxyError> {
    let headers = wire::handshake_headers(base, session.id.as_deref(), &session.version);
    wire::post(app, headers, message).await
}

impl Call {
    /// Reads the upstream's reply to its end (see the module).
    async fn relay(mut self, response: reqwest::Response, tx: mpsc::Sender<Bytes>) {
        let mut client = Some(tx);
        let mut record: Option<CallRecord> = None;
        let mut messages = Box::pin(wire::messages(&self.app, response));
        let outcome = loop {
            let next = match &client {
                Some(tx) => tokio::select! {
                    () = tx.closed() => {
                        self.cancel().await;
                        return;
                    }
                    next = messages.next() => next,
                },
                None => messages.next().await,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::debug!(%error, "bridge: upstream reply broke off");
                    break translate::error(
                        &self.upstream_id,
                        INTERNAL_ERROR,
                        "the upstream's reply broke off before the result",
                        None,
                    );
                }
                None => {
                    break translate::error(
                        &self.upstream_id,
                        INTERNAL_ERROR,
                        "the upstream ended its reply without a result",
                        None,
                    )
                }
            };
            record::upstream_form(&self.app, &self.exchange, &message, false).await;
            let is_response = message.get("result").is_some() || message.get("error").is_some();
            if is_response && message.get("id") == Some(&self.upstream_id) {
                break message;
            }
            match (message.get("method"), message.get("id")) {
                (Some(method), Some(id)) => {
                    let input = PendingInput {
                        key: id.to_string(),
                        id: id.clone(),
                        request: json!({"method": method, "params": message.get("params").cloned().unwrap_or_else(|| json!({}))}),
                    };
                    let kept = record.get_or_insert_with(|| CallRecord {
                        session: self.session.clone(),
                        requests: Vec::new(),
                        outcome: None,
                    });
                    kept.requests.push(input.clone());
                    self.keep(kept).await;
                    if let Some(tx) = client.take() {
                        let mut requests = Map::new();
                        requests.insert(input.key, input.request);
                        let state = self.seal(Vec::new());
                        let answer = translate::input_required(&self.client_id, requests, &state);
                        self.send_to_client(&tx, &answer).await;
                    }
                }
                (Some(_), None) => {
                    if let Some(tx) = &client {
                        self.send_to_client(tx, &message).await;
                    }
                }
                _ => {}
            }
        };
        match (client, record) {
            (Some(tx), _) => {
                let answer = translate::to_client(&outcome, &self.client_id, &self.method);
                self.send_to_client(&tx, &answer).await;
            }
            (None, Some(mut kept)) => {
                kept.outcome = Some(outcome);
                self.keep(&kept).await;
            }
            (None, None) => {}
        }
    }

    /// The client closed its stream: the upstream request is cancelled.
    async fn cancel(&mut self) {
        let cancelled = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": self.upstream_id, "reason": "the client closed its stream"}});
        record::upstream_form(&self.app, &self.exchange, &cancelled, true).await;
        if let Ok(response) = send(&self.app, &self.base, &self.session, &cancelled).await {
            let _ = response.bytes().await;
        }
        self.app.metrics.modern.cancelled();
    }

    fn seal(&mut self, answered: Vec<String>) -> String {
        self.sealed.call.clone_from(&self.id);
        self.sealed.answered = answered;
        self.sealed.expires = request_state::now_ms() + REQUEST_STATE_TTL.as_millis() as u64;
        self.app.bridge.keys.seal(&self.sealed)
    }

    async fn keep(&self, record: &CallRecord) {
        let stored = match (call_key(&self.id), serde_json::to_vec(record)) {
            (Ok(key), Ok(value)) => self
                .app
                .store
                .kv_put(&key, &value, CALL_TTL, KvCondition::Any)
                .await
                .map(|_| ())
                .map_err(|error| error.to_string()),
            (Err(error), _) => Err(error.to_string()),
            (_, Err(error)) => Err(error.to_string()),
        };
        if let Err(error) = stored {
            tracing::warn!(call = %self.id, %error, "bridge: pending call not kept; the client's retry will fail");
        }
    }

    async fn send_to_client(&self, tx: &mpsc::Sender<Bytes>, message: &Value) {
        send_event(&self.app, &self.exchange, tx, message).await;
    }
}

/// Sends `message` to the client as one SSE event, recorded (client form).
pub async fn send_event(
    app: &AppState,
    exchange: &Exchange,
    tx: &mpsc::Sender<Bytes>,
    message: &Value,
) {
    let payload = message.to_string();
    reply::observe(app, exchange, payload.as_bytes()).await;
    let event = SseEvent {
        event: Some("message".to_owned()),
        data: payload,
        ..SseEvent::default()
    };
    let _ = tx.send(event.encode()).await;
}

/// Serves a client's retry carrying `requestState` (`sealed`): its answers go
/// into the pending call's upstream session, and the call's next step (another
/// input request, the result, or, after [`RETRY_WAIT`], nothing new) is the
/// reply.
pub async fn resume(
    app: &Arc<AppState>,
    exchange: Exchange,
    base: &HeaderMap,
    message: &Value,
    sealed: &str,
) -> Result<Response, ProxyError> {
    let client_id = message.get("id").cloned().unwrap_or(Value::Null);
    let principal = request_state::principal_digest(exchange.principal.as_ref());
    let request = request_state::request_digest(message);
    let mut pending =
        match app
            .bridge
            .keys
            .open(sealed, &principal, &request, request_state::now_ms())
        {
            Ok(pending) => pending,
            Err(refused) => {
                tracing::info!(%refused, "bridge: requestState refused");
                let answer = translate::error(
                    &client_id,
                    INVALID_PARAMS,
                    "Invalid or expired requestState",
                    Some(json!({"reason": "invalid_request_state"})),
                );
                return Ok(json_reply(app, &exchange, &answer).await);
            }
        };
    let key = call_key(&pending.call)?;
    let Some(entry) = app.store.kv_get(&key).await? else {
        let answer = translate::error(&client_id, INTERNAL_ERROR, "the pending call is gone (expired, or its upstream session ended): send the request again without requestState", None);
        return Ok(json_reply(app, &exchange, &answer).await);
    };
    let record: CallRecord = serde_json::from_slice(&entry.value)
        .map_err(|error| ProxyError::Store(format!("bridge call record unreadable: {error}")))?;
    let responses = message
        .pointer("/params/inputResponses")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (answer_key, result) in responses {
        if pending.answered.contains(&answer_key) {
            continue;
        }
        let Some(input) = record.requests.iter().find(|input| input.key == answer_key) else {
            continue;
        };
        let answer = json!({"jsonrpc": "2.0", "id": input.id, "result": result});
        record::upstream_form(app, &exchange, &answer, true).await;
        let delivered = send(app, base, &record.session, &answer).await?;
        let status = delivered.status();
        let _ = delivered.bytes().await;
        if !status.is_success() {
            let answer = translate::error(
                &client_id,
                INTERNAL_ERROR,
                &format!("the upstream refused the answer with HTTP {status}"),
                None,
            );
            return Ok(json_reply(app, &exchange, &answer).await);
        }
        pending.answered.push(answer_key);
    }
    let deadline = tokio::time::Instant::now() + RETRY_WAIT;
    let answer = loop {
        let current = app.store.kv_get(&key).await?;
        let current: Option<CallRecord> =
            current.and_then(|entry| serde_json::from_slice(&entry.value).ok());
        if let Some(current) = current {
            if let Some(outcome) = &current.outcome {
                let method = message
                    .get("method")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                break translate::to_client(outcome, &client_id, method);
            }
            let new: Map<String, Value> = current
                .requests
                .iter()
                .filter(|input| !pending.answered.contains(&input.key))
                .map(|input| (input.key.clone(), input.request.clone()))
                .collect();
            if !new.is_empty() {
                break input_required_again(app, &client_id, new, &mut pending);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break input_required_again(app, &client_id, Map::new(), &mut pending);
        }
        tokio::time::sleep(POLL_STEP).await;
    };
    Ok(json_reply(app, &exchange, &answer).await)
}

fn input_required_again(
    app: &AppState,
    client_id: &Value,
    requests: Map<String, Value>,
    pending: &mut PendingCall,
) -> Value {
    pending.expires = request_state::now_ms() + REQUEST_STATE_TTL.as_millis() as u64;
    translate::input_required(client_id, requests, &app.bridge.keys.seal(pending))
}

/// `message` as a JSON reply, recorded (client form).
pub async fn json_reply(app: &AppState, exchange: &Exchange, message: &Value) -> Response {
    let payload = Bytes::from(message.to_string());
    reply::observe(app, exchange, &payload).await;
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    reply::json_response(StatusCode::OK, headers, payload)
}
