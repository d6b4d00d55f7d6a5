//! GET on the MCP endpoint: the server-to-client SSE stream, live from the
//! upstream, or resumed after `Last-Event-ID` from the store (see
//! [`replay`]).

use std::{net::SocketAddr, sync::Arc};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};
use session_store::FrameId;

use crate::{
    binding::session_binding,
    errors::ProxyError,
    event_id::{ProxyEventId, StreamId},
    headers::{client_response_headers, ClientAddr},
    jsonrpc::ClientMessage,
    post::is_sessionless,
    relay::{client_channel, sse_response, Relay, StreamTarget, WhenClientLeaves},
    replay,
    session::{self, client_session_id},
    sse::is_event_stream,
    state::AppState,
    upstream::LAST_EVENT_ID_HEADER,
};

/// Handles `GET <endpoint>`.
pub async fn handle(
    State(app): State<Arc<AppState>>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    match open_stream(app, peer, headers).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn open_stream(
    app: Arc<AppState>,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ProxyError> {
    let Some(id) = client_session_id(&headers)? else {
        if is_sessionless(&headers, &ClientMessage::default()) {
            let forwarded = app.upstream.request_headers(&headers, peer, None);
            return live_stream(&app, forwarded, None).await;
        }
        return Err(ProxyError::MissingSessionId);
    };
    let binding = session_binding(&headers, &app.settings);
    let session = session::resolve(app.store.as_ref(), &id, &headers, binding.as_ref()).await?;
    app.store.touch(&session.id).await?;
    let last_event_id = headers
        .get(LAST_EVENT_ID_HEADER)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| ProxyError::BadRequest("Last-Event-ID is not visible ASCII".into()))?
                .parse::<ProxyEventId>()
                .map_err(ProxyError::BadRequest)
        })
        .transpose()?;
    match last_event_id {
        Some(last) => {
            let forwarded = app.upstream.request_headers(&headers, peer, None);
            replay::resume(app, session, last, forwarded).await
        }
        None if crate::bridge::handshake_client::is_bridged(&session) => {
            let base = app.upstream.request_headers(&headers, peer, None);
            crate::bridge::handshake_listen::listen(&app, &session, &base).await
        }
        None => {
            let target = StreamTarget {
                session: session.id.clone(),
                stream: StreamId::new_get(),
                cursor: FrameId::ZERO,
            };
            let forwarded = app.upstream.request_headers(
                &headers,
                peer,
                session.upstream_session_id.as_deref(),
            );
            live_stream(&app, forwarded, Some(target)).await
        }
    }
}

/// Opens the upstream's GET stream with the `forwarded` headers and relays it,
/// recorded under `target`.
async fn live_stream(
    app: &Arc<AppState>,
    forwarded: HeaderMap,
    target: Option<StreamTarget>,
) -> Result<Response, ProxyError> {
    let upstream = app.upstream.send(Method::GET, forwarded, None).await?;
    let session = target.as_ref().map(|target| target.session.clone());
    if upstream.status() == StatusCode::NOT_FOUND && session.is_some() {
        // Some upstreams answer a GET they offer no stream for with 404: that is
        // not the loss of the session (a POST finds out), so the client is told
        // what 405 means, and keeps its session.
        tracing::debug!(session = ?session, "upstream answered 404 to GET; answering 405");
        return Err(ProxyError::NoStandaloneStream);
    }
    if !upstream.status().is_success() || !is_event_stream(upstream.headers()) {
        return Ok(pass_through(app, upstream).await);
    }
    let passed_headers = client_response_headers(upstream.headers());
    let priming = target.as_ref().map(StreamTarget::priming_event);
    let relay = Relay::new(target, WhenClientLeaves::Stop);
    let (tx, body) = client_channel(app.settings.sse_keepalive, priming);
    let app = app.clone();
    tokio::spawn(async move { relay.run(&app, upstream, &tx).await });
    Ok(sse_response(
        StatusCode::OK,
        passed_headers,
        session.as_ref(),
        body,
    ))
}

/// Largest non-stream answer to a GET passed through (an error description).
const MAX_PASSED_ERROR_BYTES: usize = 64 * 1024;

/// The upstream's non-stream answer (405, an error): status, headers (see
/// [`client_response_headers`]) and small body as is.
pub async fn pass_through(app: &AppState, upstream: reqwest::Response) -> Response {
    let status = upstream.status();
    let passed_headers = client_response_headers(upstream.headers());
    let body = app
        .upstream
        .read_body(upstream, MAX_PASSED_ERROR_BYTES)
        .await
        .unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = passed_headers;
    response
}
