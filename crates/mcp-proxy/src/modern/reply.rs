//! Relaying the upstream's reply to a 2026-07-28 request: a JSON response or an
//! SSE stream, each message recorded on the exchange's stream, watched for
//! notifications that invalidate the cache, and kept in the cache when it is the
//! cacheable result.
//!
//! Cancellation (2026-07-28 transport, "Cancellation"; basic/patterns
//! "Cancellation"): closing the response stream is the only cancellation signal
//! of this revision, so when the client goes away the relay drops its upstream
//! request at once, which closes that stream for the upstream in turn. What
//! arrived until then is recorded. (Handshake-era streams keep reading to the end:
//! see [`relay`](crate::relay).) On shutdown the proxy ends these streams, as it
//! ends GET streams.

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    http::{header, HeaderMap, StatusCode},
    response::Response,
};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{
    binding::Principal,
    errors::ProxyError,
    headers::client_response_headers,
    modern::{
        cache::{self, CacheSlot},
        record::{self, Recording},
    },
    relay::{client_channel, sse_response, MAX_EVENT_BYTES},
    sse::{keep_alive_comment, SseParser},
    state::AppState,
};

/// One 2026-07-28 exchange in flight.
#[derive(Clone, Debug, Default)]
pub struct Exchange {
    /// Where its messages are recorded; `None`: not recorded.
    pub recording: Option<Recording>,
    /// Who sent it (keys `private` cache entries).
    pub principal: Option<Principal>,
    /// Where its result is cached, when the request is cacheable and missed.
    pub cache: Option<CacheSlot>,
}

/// Sends the upstream's reply to the client: SSE relayed event by event (until
/// the client leaves), anything else read whole.
pub async fn relay(
    app: &Arc<AppState>,
    exchange: Exchange,
    upstream: reqwest::Response,
) -> Result<Response, ProxyError> {
    let status = upstream.status();
    let passed_headers = client_response_headers(upstream.headers());
    let content_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
    let starts_with = |prefix: &str| {
        content_type
            .as_ref()
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with(prefix))
    };
    if starts_with("text/event-stream") {
        // No priming event: 2026-07-28 has no resumption to prime for.
        let (tx, body) = client_channel(app.settings.sse_keepalive, None);
        tokio::spawn(relay_events(app.clone(), exchange, upstream, tx));
        return Ok(sse_response(status, passed_headers, None, body));
    }
    let body = app.upstream.read_body(upstream, MAX_EVENT_BYTES).await?;
    if starts_with("application/json") && !body.is_empty() {
        observe(app, &exchange, &body).await;
    }
    Ok(json_response(status, passed_headers, body))
}

/// A response carrying `body` with the upstream's status and the headers that
/// cross the proxy (see [`client_response_headers`]).
pub fn json_response(status: StatusCode, passed_headers: HeaderMap, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = passed_headers;
    response
}

/// What the proxy does with every message of a reply: record it, let an
/// invalidating notification reach every instance, keep a cacheable result.
pub async fn observe(app: &AppState, exchange: &Exchange, payload: &[u8]) {
    if let Some(recording) = &exchange.recording {
        record::record_reply(app, recording, payload).await;
    }
    let Ok(message) = serde_json::from_slice::<Value>(payload) else {
        return;
    };
    if cache::invalidates(&message) {
        match cache::invalidate(app.store.as_ref(), &app.settings.upstream).await {
            Ok(()) => app.metrics.modern.cache_invalidated(),
            Err(error) => {
                tracing::warn!(%error, "a list-changed notification could not invalidate the shared cache")
            }
        }
    }
    let is_response = message.get("result").is_some() || message.get("error").is_some();
    if let (Some(slot), true) = (&exchange.cache, is_response) {
        let kept = cache::keep(
            app.store.as_ref(),
            slot,
            exchange.principal.as_ref(),
            &message,
            app.settings.modern.cache.max_entry_bytes,
        )
        .await;
        match kept {
            Ok(Ok(())) => app.metrics.modern.cache_stored(),
            Ok(Err(reason)) => tracing::debug!(?reason, "result not cached"),
            Err(error) => tracing::warn!(%error, "result not cached: store error"),
        }
    }
}

/// Relays an upstream SSE stream; returns when it ends, breaks, or the client
/// leaves (then the upstream request is dropped with `upstream`).
async fn relay_events(
    app: Arc<AppState>,
    exchange: Exchange,
    upstream: reqwest::Response,
    tx: mpsc::Sender<Bytes>,
) {
    let started = Instant::now();
    let mut chunks = upstream.bytes_stream();
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    let mut shutdown = app.shutdown.clone();
    loop {
        let chunk = tokio::select! {
            biased;
            () = tx.closed() => break,
            // A `subscriptions/listen` stream never ends on its own: shutdown
            // ends it, as it ends handshake-era GET streams.
            _ = shutdown.wait_for(|stopping| *stopping) => return,
            chunk = chunks.next() => chunk,
        };
        let chunk = match chunk {
            Some(Ok(chunk)) => chunk,
            Some(Err(error)) => {
                tracing::debug!(%error, "upstream reply stream broke off");
                return;
            }
            None => return,
        };
        let events = match parser.push(&chunk) {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, "upstream reply stream dropped");
                return;
            }
        };
        // The upstream's keep-alive comments keep idle intermediaries and the
        // client's read timeout content, so they pass on.
        if events.is_empty() && chunk.first() == Some(&b':') {
            let _ = tx.send(keep_alive_comment()).await;
        }
        for mut event in events {
            // 2026-07-28 has no SSE resumption: an upstream's event ids and
            // retry hints would only invite a `Last-Event-ID` GET the proxy
            // answers 405, so they are left out, and a priming event (nothing
            // but an id) is not sent at all.
            event.id = None;
            event.retry = None;
            if event.is_empty() {
                continue;
            }
            observe(&app, &exchange, event.data.as_bytes()).await;
            if tx.send(event.encode()).await.is_err() {
                break;
            }
        }
        if tx.is_closed() {
            break;
        }
    }
    app.metrics.modern.cancelled();
    tracing::debug!(after = ?started.elapsed(), "client closed a 2026-07-28 response stream; upstream request dropped");
}
