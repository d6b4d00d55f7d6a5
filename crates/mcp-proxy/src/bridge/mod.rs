//! The protocol-generation bridge (`[proxy] bridge = "auto"`): a 2026-07-28
//! client served by a handshake-only upstream. The era of each request is
//! decided in [`post`](crate::post); a 2026-07-28 request reaches
//! [`modern`](crate::modern), which asks [`serve`] before forwarding: when the
//! upstream is of the handshake generation ([`generation`]), the bridge answers
//! instead.
//!
//! In request order (one module each):
//! 1. [`generation`]: the upstream's generation, probed once and shared in kv;
//! 2. [`pool`]: the upstream session the request runs in, shared in kv;
//! 3. [`translate`], [`ids`]: the request in handshake form under a minted id;
//! 4. [`call`]: the reply relayed, server-to-client requests turned into an
//!    `InputRequiredResult` with a sealed [`request_state`], and retries served;
//!    [`listen`]: `subscriptions/listen` on the upstream session's GET stream;
//! 5. [`record`]: both forms of every message recorded.
//!
//! The other direction, a handshake-era client served by a 2026-07-28-only
//! upstream, enters from [`post`](crate::post) (a refused `initialize`, a
//! session tagged by [`handshake_client`]) and
//! [`get_stream`](crate::get_stream): [`handshake_client`] answers `initialize`
//! and sends requests self-contained, [`handshake_input`] relays input
//! requests, [`handshake_listen`] maps the GET stream.
//!
//! What is not bridged is in `docs/bridge.md`.

pub mod call;
pub mod generation;
pub mod handshake_client;
pub mod handshake_input;
pub mod handshake_listen;
pub mod ids;
pub mod instance;
pub mod listen;
pub mod pool;
pub mod record;
pub mod request_state;
pub mod settings;
pub mod translate;
pub mod wire;

use std::sync::Arc;

use axum::{
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{errors::ProxyError, modern::reply::Exchange, state::AppState};

use self::{generation::Generation, settings::BridgeMode};

/// SHA-256 of `text`, hex, first 32 digits.
pub(crate) fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(16)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The digest naming the upstream in kv keys.
pub(crate) fn upstream_digest(app: &AppState) -> String {
    digest(app.settings.upstream.as_str())
}

/// Serves the 2026-07-28 `message` through the bridge when the upstream is of
/// the handshake generation; `None`: forward it unchanged (the bridge is off or
/// the upstream speaks 2026-07-28). `base`: the client's headers as forwarded.
pub async fn serve(
    app: &Arc<AppState>,
    exchange: &Exchange,
    base: &HeaderMap,
    message: &Value,
) -> Option<Result<Response, ProxyError>> {
    if app.settings.bridge.mode == BridgeMode::Off
        || generation::detect(app, base).await == Generation::Modern
    {
        return None;
    }
    Some(bridge(app, exchange.clone(), base, message).await)
}

async fn bridge(
    app: &Arc<AppState>,
    exchange: Exchange,
    base: &HeaderMap,
    message: &Value,
) -> Result<Response, ProxyError> {
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        // A response or a stray message: 2026-07-28 clients answer input
        // requests in a retry, so there is nothing to deliver.
        return Ok(StatusCode::ACCEPTED.into_response());
    };
    if message.get("id").is_none() {
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    match method {
        "server/discover" => {
            let (_, _, session) = pool::for_request(app, &exchange, base, message).await?;
            let answer = serde_json::json!({
                "jsonrpc": "2.0",
                "id": id,
                "result": translate::discover_result(&session.initialize),
            });
            Ok(call::json_reply(app, &exchange, &answer).await)
        }
        "subscriptions/listen" => listen::listen(app, exchange, base, message).await,
        _ => match message
            .pointer("/params/requestState")
            .and_then(Value::as_str)
        {
            Some(sealed) => call::resume(app, exchange, base, message, sealed).await,
            None => call::start(app, exchange, base, message).await,
        },
    }
}
