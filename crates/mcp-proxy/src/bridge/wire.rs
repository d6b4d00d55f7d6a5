//! The handshake-era wire as the bridge speaks it to the upstream: the headers
//! of a request into an upstream session, sending one JSON-RPC message, and
//! reading the reply (a JSON body or an SSE stream) message by message.

use axum::http::{header, HeaderMap, HeaderValue, Method};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::Value;

use crate::{
    errors::ProxyError,
    relay::MAX_EVENT_BYTES,
    sse::{is_event_stream, SseParser},
    state::AppState,
    upstream::{PROTOCOL_VERSION_HEADER, SESSION_ID_HEADER},
};

/// The headers of a handshake-era request into upstream session `session`
/// (`None`: the `initialize` that opens one) at `version`: the client's
/// forwarded headers (`base`) without any `Mcp-*` header of the 2026-07-28
/// request (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`, its protocol version).
pub fn handshake_headers(base: &HeaderMap, session: Option<&str>, version: &str) -> HeaderMap {
    let mut headers = base.clone();
    let modern: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("mcp-"))
        .cloned()
        .collect();
    for name in modern {
        headers.remove(name);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(version) {
        headers.insert(PROTOCOL_VERSION_HEADER, value);
    }
    if let Some(value) = session.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert(SESSION_ID_HEADER, value);
    }
    headers.remove(header::CONTENT_LENGTH);
    headers
}

/// POSTs one JSON-RPC `message` to the upstream with `headers`.
pub async fn post(
    app: &AppState,
    headers: HeaderMap,
    message: &Value,
) -> Result<reqwest::Response, ProxyError> {
    app.upstream
        .send(
            Method::POST,
            headers,
            Some(Bytes::from(message.to_string())),
        )
        .await
}

/// The JSON-RPC messages of an upstream reply, in order: the one message of a
/// JSON body, or each event of an SSE stream (priming events skipped). A
/// message that is not JSON ends the stream with an error.
pub fn messages(
    app: &AppState,
    response: reqwest::Response,
) -> impl Stream<Item = Result<Value, ProxyError>> + Send + 'static {
    let sse = is_event_stream(response.headers());
    let body_timeout = app.settings.upstream_body_timeout;
    let chunks = response.bytes_stream();
    futures::stream::unfold(
        (
            chunks,
            SseParser::new(MAX_EVENT_BYTES),
            Vec::<Value>::new(),
            Vec::new(),
            false,
        ),
        move |(mut chunks, mut parser, mut ready, mut whole, done)| async move {
            loop {
                if let Some(message) = ready.pop() {
                    return Some((Ok(message), (chunks, parser, ready, whole, done)));
                }
                if done {
                    return None;
                }
                let chunk = match tokio::time::timeout(body_timeout, chunks.next()).await {
                    Err(_) => {
                        let error = ProxyError::UpstreamBodyTimeout(body_timeout);
                        return Some((Err(error), (chunks, parser, ready, whole, true)));
                    }
                    Ok(None) if sse => return None,
                    Ok(None) => {
                        let parsed = serde_json::from_slice::<Value>(&whole)
                            .map_err(|error| ProxyError::NotJson(error.to_string()));
                        if whole.is_empty() {
                            return None;
                        }
                        return Some((parsed, (chunks, parser, ready, Vec::new(), true)));
                    }
                    Ok(Some(Err(error))) => {
                        let error = ProxyError::UpstreamUnreachable(format!(
                            "the upstream's reply broke off: {}",
                            error.without_url()
                        ));
                        return Some((Err(error), (chunks, parser, ready, whole, true)));
                    }
                    Ok(Some(Ok(chunk))) => chunk,
                };
                if !sse {
                    if whole.len() + chunk.len() > MAX_EVENT_BYTES {
                        let error = ProxyError::BadRequest(format!(
                            "the upstream's reply exceeds {MAX_EVENT_BYTES} bytes"
                        ));
                        return Some((Err(error), (chunks, parser, ready, whole, true)));
                    }
                    whole.extend_from_slice(&chunk);
                    continue;
                }
                match parser.push(&chunk) {
                    Ok(events) => {
                        // `ready` is popped from the back: keep the stream order.
                        let mut parsed: Vec<Value> = events
                            .iter()
                            .filter(|event| !event.is_empty())
                            .filter_map(|event| serde_json::from_str(&event.data).ok())
                            .collect();
                        parsed.reverse();
                        ready = parsed;
                    }
                    Err(error) => {
                        let error = ProxyError::BadRequest(error.to_string());
                        return Some((Err(error), (chunks, parser, ready, whole, true)));
                    }
                }
            }
        },
    )
}

/// Reads `response` until the response to request `id` and returns it (a
/// `result` or `error` member).
pub async fn response_to(
    app: &AppState,
    response: reqwest::Response,
    id: &Value,
) -> Result<Value, ProxyError> {
    let mut messages = Box::pin(messages(app, response));
    while let Some(message) = messages.next().await {
        let message = message?;
        if message.get("id") == Some(id)
            && (message.get("result").is_some() || message.get("error").is_some())
        {
            return Ok(message);
        }
    }
    Err(ProxyError::UpstreamUnreachable(
        "the upstream ended its reply without answering the request".to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_headers_drop_the_modern_ones_and_carry_the_session() {
        let mut base = HeaderMap::new();
        base.insert("mcp-method", HeaderValue::from_static("tools/call"));
        base.insert("mcp-param-x", HeaderValue::from_static("1"));
        base.insert(
            PROTOCOL_VERSION_HEADER,
            HeaderValue::from_static("2026-07-28"),
        );
        base.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let headers = handshake_headers(&base, Some("s1"), "2025-11-25");
        assert!(headers.get("mcp-method").is_none());
        assert!(headers.get("mcp-param-x").is_none());
        assert_eq!(headers[PROTOCOL_VERSION_HEADER], "2025-11-25");
        assert_eq!(headers[SESSION_ID_HEADER], "s1");
        assert_eq!(headers[header::AUTHORIZATION], "Bearer t");
    }
}
