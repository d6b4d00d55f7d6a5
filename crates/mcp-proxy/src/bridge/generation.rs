//! Which protocol generation the upstream speaks, learned by one `server/discover`
//! probe (2026-07-28 "Versioning": every 2026-07-28 server implements it; a
//! handshake-only server refuses it without a session) and kept in the store's
//! kv for [`GENERATION_TTL`], so every instance shares one verdict.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use futures::StreamExt;
use serde_json::{json, Value};
use session_store::{KvCondition, KvKey};

use crate::{
    bridge::wire, jsonrpc::SESSIONLESS_REVISION, modern::headers::METHOD_HEADER, state::AppState,
};

/// How long a verdict is kept before the upstream is probed again (an upstream
/// upgraded in place is bridged no longer after at most this long).
pub const GENERATION_TTL: Duration = Duration::from_secs(60);

/// The id of the probe request.
const PROBE_ID: &str = "mcp-proxy-bridge-probe";

/// The upstream's protocol generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// It answers 2026-07-28 requests: forward them unchanged.
    Modern,
    /// It speaks only the handshake revisions (2025-11-25 and before).
    Handshake,
}

impl Generation {
    fn as_str(self) -> &'static str {
        match self {
            Generation::Modern => "modern",
            Generation::Handshake => "handshake",
        }
    }
}

/// The kv key of the verdict on the upstream with digest `upstream`.
fn key(upstream: &str) -> Option<KvKey> {
    KvKey::new(format!("bridge:generation:{upstream}")).ok()
}

/// The upstream's generation: the shared verdict when one is live, else a probe
/// (with the client's forwarded headers `base`, so an upstream that wants
/// credentials gets them). A probe that decides nothing (the upstream is down,
/// 5xx, 401) is not kept, and the request is forwarded unchanged.
pub async fn detect(app: &AppState, base: &HeaderMap) -> Generation {
    decided(app, base).await.unwrap_or(Generation::Modern)
}

/// The upstream's generation as [`detect`] learns it; `None` when neither a
/// shared verdict nor the probe decides (the upstream is down, 5xx, 401).
pub async fn decided(app: &AppState, base: &HeaderMap) -> Option<Generation> {
    let key = key(&super::upstream_digest(app));
    if let Some(key) = &key {
        match app.store.kv_get(key).await {
            Ok(Some(entry)) if entry.value == b"handshake" => return Some(Generation::Handshake),
            Ok(Some(entry)) if entry.value == b"modern" => return Some(Generation::Modern),
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "bridge: generation verdict unreadable; probing"),
        }
    }
    let verdict = probe(app, base).await?;
    tracing::info!(
        generation = verdict.as_str(),
        "bridge: upstream generation detected"
    );
    if let Some(key) = &key {
        if let Err(error) = app
            .store
            .kv_put(
                key,
                verdict.as_str().as_bytes(),
                GENERATION_TTL,
                KvCondition::Any,
            )
            .await
        {
            tracing::debug!(%error, "bridge: generation verdict not shared");
        }
    }
    Some(verdict)
}

/// Sends `server/discover` at 2026-07-28 and reads the answer.
async fn probe(app: &AppState, base: &HeaderMap) -> Option<Generation> {
    let request = json!({
        "jsonrpc": "2.0",
        "id": PROBE_ID,
        "method": "server/discover",
        "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": SESSIONLESS_REVISION,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "mcp-proxy", "version": env!("CARGO_PKG_VERSION")},
        }},
    });
    let mut headers = wire::handshake_headers(base, None, SESSIONLESS_REVISION);
    headers.insert(METHOD_HEADER, HeaderValue::from_static("server/discover"));
    let response = match wire::post(app, headers, &request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, "bridge: generation probe failed");
            return None;
        }
    };
    let status = response.status();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        || status.is_server_error()
    {
        return None;
    }
    let mut messages = Box::pin(wire::messages(app, response));
    let answer = match messages.next().await {
        Some(Ok(message)) => message,
        _ if status.is_client_error() => return Some(Generation::Handshake),
        _ => return None,
    };
    Some(verdict(&answer))
}

/// A `server/discover` answer's verdict: modern when its `supportedVersions`
/// names 2026-07-28 or later; an error or a handshake-only list is handshake.
fn verdict(answer: &Value) -> Generation {
    let modern = answer
        .pointer("/result/supportedVersions")
        .and_then(Value::as_array)
        .is_some_and(|versions| {
            versions
                .iter()
                .filter_map(Value::as_str)
                .any(|version| version >= SESSIONLESS_REVISION)
        });
    if modern {
        Generation::Modern
    } else {
        Generation::Handshake
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discover_result_naming_a_modern_version_is_modern() {
        let modern = json!({"result": {"supportedVersions": ["2025-11-25", "2026-07-28"]}});
        assert_eq!(verdict(&modern), Generation::Modern);
        let legacy = json!({"result": {"supportedVersions": ["2025-11-25"]}});
        assert_eq!(verdict(&legacy), Generation::Handshake);
        let refused =
            json!({"error": {"code": -32000, "message": "Bad Request: Server not initialized"}});
        assert_eq!(verdict(&refused), Generation::Handshake);
    }
}
