//! Upstream sessions of bridged 2026-07-28 clients, kept in the store's kv: one
//! per (upstream, principal, client-capabilities fingerprint), opened lazily with
//! the first client's `clientInfo` and capabilities and shared by every instance.
//! Opening is claimed with a create-only put, so when instances race exactly one
//! sends `initialize` and the others wait for its session; a session the
//! upstream lost (404) is forgotten with a compare-and-set delete and opened
//! anew (as [`recovery`](crate::recovery) re-opens a handshake client's).

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use session_store::{KvCondition, KvKey, KvPut};

use crate::{
    binding::Principal,
    bridge::{record, wire},
    errors::ProxyError,
    modern::{
        record::{META_CLIENT_CAPABILITIES, META_CLIENT_INFO},
        reply::Exchange,
    },
    state::AppState,
    upstream::SESSION_ID_HEADER,
};

/// The handshake revision the bridge asks an upstream for.
pub const HANDSHAKE_REVISION: &str = "2025-11-25";

/// How long a pooled session is used before a fresh one is opened (an upstream
/// expiring idle sessions sooner answers 404, and the session is re-opened).
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 60);

/// How often an instance waiting for another's `initialize` looks again.
const WAIT_STEP: Duration = Duration::from_millis(25);

/// One pooled upstream session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpstreamSession {
    /// Its `Mcp-Session-Id` (`None`: the upstream is stateless).
    pub id: Option<String>,
    /// The revision the upstream chose in its `initialize` result.
    pub version: String,
    /// The upstream's `initialize` result (answers `server/discover`).
    pub initialize: Value,
}

/// A pool entry as kept in kv.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Entry {
    /// An instance is sending `initialize`.
    Opening,
    /// The session is open.
    Open(UpstreamSession),
}

/// Who a pooled session is for: the principal and the client's `_meta`.
#[derive(Clone, Debug)]
pub struct ClientSide {
    /// The client's principal.
    pub principal: Option<Principal>,
    /// `io.modelcontextprotocol/clientInfo` (a default when absent).
    pub info: Value,
    /// `io.modelcontextprotocol/clientCapabilities` (`{}` when absent).
    pub capabilities: Value,
}

impl ClientSide {
    /// The client side of a 2026-07-28 request.
    pub fn of(message: &Value, principal: Option<Principal>) -> Self {
        let meta = crate::modern::record::request_meta(message);
        let field = |key: &str| meta.and_then(|meta| meta.get(key)).cloned();
        ClientSide {
            principal,
            info: field(META_CLIENT_INFO)
                .unwrap_or_else(|| json!({"name": "mcp-proxy-bridge", "version": "0"})),
            capabilities: field(META_CLIENT_CAPABILITIES).unwrap_or_else(|| json!({})),
        }
    }

    /// The kv key of this client side's pooled session on the upstream with
    /// digest `upstream`.
    pub fn pool_key(&self, upstream: &str) -> Result<KvKey, ProxyError> {
        let principal = self.principal.as_ref().map_or("", Principal::as_str);
        let fingerprint = super::digest(&format!("{upstream}\0{principal}\0{}", self.capabilities));
        KvKey::new(format!("bridge:upstream-session:{fingerprint}"))
            .map_err(|error| ProxyError::Store(error.to_string()))
    }
}

/// The pooled session 2026-07-28 `message` runs in, with its client side and
/// pool key (to open it anew when it is lost).
pub async fn for_request(
    app: &AppState,
    exchange: &Exchange,
    base: &HeaderMap,
    message: &Value,
) -> Result<(ClientSide, KvKey, UpstreamSession), ProxyError> {
    let client = ClientSide::of(message, exchange.principal.clone());
    let key = client.pool_key(&super::upstream_digest(app))?;
    let session = session(app, &key, &client, base, exchange).await?;
    Ok((client, key, session))
}

/// The pooled session for `client`, opened when there is none (`base`: the
/// client's forwarded headers).
pub async fn session(
    app: &AppState,
    key: &KvKey,
    client: &ClientSide,
    base: &HeaderMap,
    exchange: &Exchange,
) -> Result<UpstreamSession, ProxyError> {
    let opening_ttl = app.settings.upstream_timeout + Duration::from_secs(5);
    let deadline = Instant::now() + opening_ttl;
    while Instant::now() < deadline {
        match app.store.kv_get(key).await? {
            Some(entry) => match serde_json::from_slice::<Entry>(&entry.value) {
                Ok(Entry::Open(session)) => return Ok(session),
                Ok(Entry::Opening) => tokio::time::sleep(WAIT_STEP).await,
                Err(_) => {
                    app.store
                        .kv_delete(key, KvCondition::Revision(entry.revision))
                        .await?;
                }
            },
            None => {
                let claim = serde_json::to_vec(&Entry::Opening).unwrap_or_default();
                let put = app
                    .store
                    .kv_put(key, &claim, opening_ttl, KvCondition::Absent)
                    .await?;
                let KvPut::Stored { revision, .. } = put else {
                    continue;
                };
                return match open(app, client, base, exchange).await {
                    Ok(session) => {
                        let value =
                            serde_json::to_vec(&Entry::Open(session.clone())).unwrap_or_default();
                        app.store
                            .kv_put(key, &value, SESSION_TTL, KvCondition::Revision(revision))
                            .await?;
                        Ok(session)
                    }
                    Err(error) => {
                        let _ = app
                            .store
                            .kv_delete(key, KvCondition::Revision(revision))
                            .await;
                        Err(error)
                    }
                };
            }
        }
    }
    Err(ProxyError::UpstreamTimeout(opening_ttl))
}

/// Forgets the pooled session `lost` (the upstream answered 404 for it), unless
/// another instance already replaced it.
pub async fn forget(app: &AppState, key: &KvKey, lost: &UpstreamSession) {
    let Ok(Some(entry)) = app.store.kv_get(key).await else {
        return;
    };
    if let Ok(Entry::Open(current)) = serde_json::from_slice::<Entry>(&entry.value) {
        if current.id == lost.id {
            tracing::info!(upstream_session = ?lost.id, "bridge: upstream lost a pooled session; it is opened anew");
            let _ = app
                .store
                .kv_delete(key, KvCondition::Revision(entry.revision))
                .await;
        }
    }
}

/// Whether `status`, the upstream's answer to a request in `session`, says the
/// upstream lost the session: 404, or (as handshake-era SDK servers answer an
/// unknown session id) 400 when a `ping` in the same session is refused with 400
/// or 404 too (the rule [`recovery`](crate::recovery) applies).
pub async fn is_lost(
    app: &AppState,
    base: &HeaderMap,
    session: &UpstreamSession,
    status: StatusCode,
) -> bool {
    match status {
        StatusCode::NOT_FOUND => true,
        StatusCode::BAD_REQUEST if session.id.is_some() => {
            let ping = json!({"jsonrpc": "2.0", "id": app.bridge.ids.mint(), "method": "ping"});
            let headers = wire::handshake_headers(base, session.id.as_deref(), &session.version);
            match wire::post(app, headers, &ping).await {
                Ok(response) => matches!(
                    response.status(),
                    StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST
                ),
                Err(_) => false,
            }
        }
        _ => false,
    }
}

/// Sends `initialize` and `notifications/initialized` for `client`.
async fn open(
    app: &AppState,
    client: &ClientSide,
    base: &HeaderMap,
    exchange: &Exchange,
) -> Result<UpstreamSession, ProxyError> {
    let id = app.bridge.ids.mint();
    let request = json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE_REVISION,
            "capabilities": client.capabilities,
            "clientInfo": client.info,
        },
    });
    record::upstream_form(app, exchange, &request, true).await;
    let headers = wire::handshake_headers(base, None, HANDSHAKE_REVISION);
    let response = wire::post(app, headers, &request).await?;
    let session_id = response
        .headers()
        .get(SESSION_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let status = response.status();
    if !status.is_success() {
        return Err(ProxyError::UpstreamUnreachable(format!(
            "the upstream refused the bridge's initialize with HTTP {status}"
        )));
    }
    let answer = wire::response_to(app, response, &id).await?;
    record::upstream_form(app, exchange, &answer, false).await;
    let Some(result) = answer.get("result").cloned() else {
        return Err(ProxyError::UpstreamUnreachable(format!(
            "the upstream refused the bridge's initialize: {}",
            answer.get("error").cloned().unwrap_or(Value::Null)
        )));
    };
    let version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(HANDSHAKE_REVISION)
        .to_owned();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let headers = wire::handshake_headers(base, session_id.as_deref(), &version);
    let acknowledged = wire::post(app, headers, &initialized).await?;
    let _ = acknowledged.bytes().await;
    tracing::info!(upstream_session = ?session_id, %version, "bridge: upstream session opened");
    Ok(UpstreamSession {
        id: session_id,
        version,
        initialize: result,
    })
}
