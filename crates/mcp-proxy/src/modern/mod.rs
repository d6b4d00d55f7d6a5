//! The request path of protocol revision 2026-07-28 and later: every POST is a
//! self-contained request (no `initialize`, no `Mcp-Session-Id`, no GET stream,
//! no `Last-Event-ID`), carrying its protocol version, client info and
//! capabilities in `params._meta`.
//!
//! Which era a request belongs to is decided per request by
//! [`post`](crate::post), as the revision's "Versioning" section has a dual-era
//! server do: a session id or an `initialize` selects the handshake era; a
//! request that declares 2026-07-28 or later (header or `_meta`) comes here.
//!
//! In request order (one module each):
//! 1. [`headers`]: the standard headers must match the body (transport,
//!    "Server Validation"), else 400 with JSON-RPC `-32020` and the upstream
//!    never sees the request;
//! 2. [`record`]: the request is recorded in the client's proxy-side session
//!    (`[proxy] record_stateless`);
//! 3. [`cache`]: a cacheable request ("Caching", SEP-2549) is answered from the
//!    store when a fresh result is there (`[proxy.cache]`);
//! 4. [`reply`]: otherwise the upstream is asked, and its reply relayed,
//!    recorded, watched for invalidating notifications and cached; a client that
//!    closes the stream cancels the upstream request ("Cancellation").

pub mod cache;
pub mod headers;
pub mod record;
pub mod reply;

use std::sync::Arc;

use axum::{
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::{
    binding, errors::ProxyError, headers::ClientAddr, limits::ClientAddress,
    modern_config::RecordStateless, state::AppState,
};

use self::{
    cache::{CacheHit, CacheableRequest},
    headers::{HeaderMismatch, HEADER_MISMATCH_CODE},
    reply::Exchange,
};

/// Serves one 2026-07-28 POST (`body`: its bytes, already size-limited).
pub async fn forward(
    app: &Arc<AppState>,
    peer: ClientAddr,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ProxyError> {
    let client = ClientAddress::from(peer);
    let message: Value =
        serde_json::from_slice(&body).map_err(|error| ProxyError::NotJson(error.to_string()))?;
    if !message.is_object() {
        return Err(ProxyError::BadRequest(
            "a 2026-07-28 POST carries one JSON-RPC message, not a batch".to_owned(),
        ));
    }
    if let Err(mismatch) = headers::validate(headers, &message) {
        app.metrics.modern.header_mismatch();
        tracing::debug!(%mismatch, "2026-07-28 request refused before the upstream");
        return Ok(header_mismatch_response(&message, &mismatch));
    }
    let principal = binding::principal(headers, &app.settings);
    let mut exchange = Exchange {
        principal,
        ..Exchange::default()
    };
    if app.settings.modern.record_stateless == RecordStateless::PerClient {
        if let Ok(session) = record::session_id(
            &app.settings,
            exchange.principal.as_ref(),
            client,
            record::client_name(&message),
        ) {
            exchange.recording = record::record_request(
                app,
                &session,
                (exchange.principal.as_ref(), client),
                &message,
                &body,
                headers,
            )
            .await?;
        }
    }
    if app.settings.modern.cache.enabled {
        if let Some(request) = CacheableRequest::of(&message, &app.settings.upstream) {
            match cache::lookup(app.store.as_ref(), &request, exchange.principal.as_ref()).await {
                Ok((Some(hit), _)) => {
                    app.metrics.modern.cache_hit();
                    return Ok(serve_hit(app, &exchange, &message, hit).await);
                }
                Ok((None, slot)) => {
                    app.metrics.modern.cache_miss();
                    exchange.cache = Some(slot);
                }
                Err(error) => {
                    tracing::warn!(%error, "shared cache unreadable; asking the upstream");
                }
            }
        }
    }
    let forwarded = app.upstream.request_headers(headers, peer.0, None);
    if let Some(bridged) = crate::bridge::serve(app, &exchange, &forwarded, &message).await {
        return bridged;
    }
    let upstream = app
        .upstream
        .send(Method::POST, forwarded, Some(body))
        .await?;
    reply::relay(app, exchange, upstream).await
}

/// Answers `message` with a cached result, recorded like any reply.
async fn serve_hit(
    app: &AppState,
    exchange: &Exchange,
    message: &Value,
    hit: CacheHit,
) -> Response {
    let response = json!({
        "jsonrpc": "2.0",
        "id": message.get("id").cloned().unwrap_or(Value::Null),
        "result": hit.result,
    });
    let body = Bytes::from(response.to_string());
    if let Some(recording) = &exchange.recording {
        record::record_reply(app, recording, &body).await;
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    reply::json_response(StatusCode::OK, headers, body)
}

/// 400 with JSON-RPC error `-32020` (`HeaderMismatch`) answering `message`'s id.
fn header_mismatch_response(message: &Value, mismatch: &HeaderMismatch) -> Response {
    let body = json!({
        "jsonrpc": "2.0",
        "id": message.get("id").cloned().unwrap_or(Value::Null),
        "error": { "code": HEADER_MISMATCH_CODE, "message": mismatch.to_string() },
    });
    let mut response = (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
