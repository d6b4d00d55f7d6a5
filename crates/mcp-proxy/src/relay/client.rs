//! The client's side of a relayed SSE stream: the response and the body that
//! drains the relay's channel, with keep-alives.

use std::{convert::Infallible, time::Duration};

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::Response,
};
use bytes::Bytes;
use futures::StreamExt;
use session_store::SessionId;
use tokio::sync::mpsc;

use super::CLIENT_BUFFER_EVENTS;
use crate::{
    sse::{keep_alive_comment, SseEvent},
    upstream::SESSION_ID_HEADER,
};

/// A channel to the client, and the body that drains it: `priming` first (when
/// given), then what is sent on the channel, with an SSE comment whenever nothing
/// was sent for `keepalive`. The body ends when every sender is dropped; when the
/// client is gone (a keep-alive or event write failed) the receiver is dropped, so
/// `send` fails and `closed()` resolves.
pub fn client_channel(
    keepalive: Duration,
    priming: Option<SseEvent>,
) -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(CLIENT_BUFFER_EVENTS);
    let head = priming.map(|event| event.encode()).into_iter().collect();
    (tx, client_body(keepalive, head, rx))
}

/// The body of [`client_channel`]: the chunks of `head`, then what arrives on
/// `rx`, with an SSE comment whenever nothing arrived for `keepalive`.
pub(super) fn client_body(
    keepalive: Duration,
    head: Vec<Bytes>,
    rx: mpsc::Receiver<Bytes>,
) -> Body {
    let first = futures::stream::iter(head.into_iter().map(Ok::<_, Infallible>));
    let rest = futures::stream::unfold(rx, move |mut rx| async move {
        let chunk = match tokio::time::timeout(keepalive, rx.recv()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return None,
            Err(_) => keep_alive_comment(),
        };
        Some((Ok::<_, Infallible>(chunk), rx))
    });
    Body::from_stream(first.chain(rest))
}

/// An SSE response with `body` and the upstream's `passed_headers` (see
/// [`client_response_headers`](crate::headers::client_response_headers); empty
/// for a stream replayed from the store), carrying the proxy's session id when
/// there is one. `X-Accel-Buffering: no` asks nginx-style load balancers not to
/// buffer it.
pub fn sse_response(
    status: StatusCode,
    passed_headers: HeaderMap,
    session: Option<&SessionId>,
    body: Body,
) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = passed_headers;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    if let Some(value) = session.and_then(|id| HeaderValue::from_str(id.as_str()).ok()) {
        headers.insert(SESSION_ID_HEADER, value);
    }
    response
}

/// nginx's per-response switch for proxy buffering.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
