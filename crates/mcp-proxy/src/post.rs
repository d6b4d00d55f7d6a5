//! POST on the MCP endpoint: one JSON-RPC message or batch from the client,
//! forwarded upstream, its reply streamed back and every message recorded.
//!
//! `initialize` without a session creates the session once the upstream accepts
//! it; sessionless revisions (2026-07-28 and later) take [`modern`](crate::modern)'s
//! path.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;
use session_store::{
    Clock, Direction, Error as StoreError, Frame, FrameId, Session, SessionId, SystemClock,
};

use crate::{
    binding::{session_binding, Principal},
    bridge::handshake_client,
    errors::ProxyError,
    event_id::{StreamId, StreamKind},
    headers::{client_response_headers, with_upstream_session, ClientAddr},
    jsonrpc::{self, ClientMessage, InitializeRequest},
    lease::StreamLease,
    limits::{ClientAddress, SessionSlot},
    metrics::StreamFailure,
    recovery::{self, Answer, RestoreError},
    relay::{sse_response, Reconnect, Relay, StreamTarget, WhenClientLeaves, MAX_EVENT_BYTES},
    session::{self, client_session_id},
    state::AppState,
    upstream::{PROTOCOL_VERSION_HEADER, SESSION_ID_HEADER},
};

pub use crate::jsonrpc::SESSIONLESS_REVISION;

/// Handles `POST <endpoint>`.
pub async fn handle(
    State(app): State<Arc<AppState>>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match forward_post(app, peer, headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn forward_post(
    app: Arc<AppState>,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ProxyError> {
    let body = read_limited(body, &headers, app.settings.max_body_bytes).await?;
    let message = jsonrpc::inspect_client_message(&body).map_err(ProxyError::NotJson)?;
    let binding = session_binding(&headers, &app.settings);

    if let Some(id) = client_session_id(&headers)? {
        // The client's headers as the upstream gets them, without a session id:
        // recovery sends the same request into a restored upstream session.
        let upstream_base = app.upstream.request_headers(&headers, peer, None);
        let cached = app
            .near_cache
            .get(&id)
            .filter(|session| !handshake_client::is_bridged(session));
        let (session, stream, upstream, mut reconnect) = if let Some(session) = cached {
            session::check_binding(&session, &headers, binding.as_ref())?;
            let request = Request {
                headers: &headers,
                binding: binding.as_ref(),
                upstream_base: &upstream_base,
                message: &message,
                body: &body,
            };
            forward_while_recording(&app, session, request).await?
        } else {
            let (session, stream) =
                resolve_and_record(&app, &id, &headers, binding.as_ref(), &body).await?;
            if handshake_client::is_bridged(&session) {
                return handshake_client::forward(&app, &session, stream, &upstream_base, &body)
                    .await;
            }
            let forwarded =
                with_upstream_session(&upstream_base, session.upstream_session_id.as_deref());
            let reconnect = reconnect_for(&message, &forwarded);
            let upstream = app
                .upstream
                .send(Method::POST, forwarded, Some(body.clone()))
                .await?;
            (session, stream, upstream, reconnect)
        };
        let upstream = match recovery::classify(&app, &session, &upstream_base, upstream).await {
            Answer::Relay(upstream) => upstream,
            Answer::SessionLost if recovery::should_restore(&app, &session) => {
                // A cached upstream id may be one another instance replaced:
                // recovery reads the store's current one.
                app.near_cache.remove(&session.id);
                let restored = match recovery::restore(&app, &session, &upstream_base).await {
                    Ok(restored) => restored,
                    Err(RestoreError::Transient(error)) => {
                        tracing::warn!(session = %session.id, %error, "upstream lost the session; restoring it failed for now, the session is kept");
                        return Err(error);
                    }
                    Err(RestoreError::Impossible(reason)) => {
                        app.metrics.stream_failed(StreamFailure::RestoreFailed);
                        tracing::warn!(session = %session.id, %reason, "upstream lost the session and it cannot be restored; ending it");
                        return Err(upstream_lost_session(&app, &session.id).await);
                    }
                };
                // The session rejection proves the request never reached the
                // upstream's handler: sending it once more is safe.
                let forwarded = with_upstream_session(&upstream_base, Some(&restored));
                reconnect = reconnect_for(&message, &forwarded);
                let retried = app
                    .upstream
                    .send(Method::POST, forwarded, Some(body))
                    .await?;
                if retried.status() == StatusCode::NOT_FOUND {
                    return Err(upstream_lost_session(&app, &session.id).await);
                }
                retried
            }
            Answer::SessionLost => return Err(upstream_lost_session(&app, &session.id).await),
        };
        let reply = Reply {
            target: Some((session.id.clone(), stream)),
            pending_initialize: None,
            reconnect,
        };
        return relay_reply(&app, reply, upstream).await;
    }
    if let Some(initialize) = message.initialize.clone() {
        let slot = app
            .limits
            .admit_initialize(
                app.store.as_ref(),
                binding.as_ref(),
                ClientAddress::from(ClientAddr(peer)),
            )
            .await?;
        let client = Client {
            headers: &headers,
            peer,
        };
        return initialize_session(&app, client, body, &message, initialize, binding, slot).await;
    }
    if is_sessionless(&headers, &message) {
        return crate::modern::forward(&app, ClientAddr(peer), &headers, body).await;
    }
    Err(ProxyError::MissingSessionId)
}

/// Whether a request without a session belongs to a sessionless revision, by its
/// `MCP-Protocol-Version` header or its `_meta` protocol version. Revisions are
/// dates, so they compare as text.
pub fn is_sessionless(headers: &HeaderMap, message: &ClientMessage) -> bool {
    let header = headers
        .get(PROTOCOL_VERSION_HEADER)
        .and_then(|value| value.to_str().ok());
    header
        .or(message.meta_protocol_version.as_deref())
        .is_some_and(|version| version >= SESSIONLESS_REVISION)
}

/// The client side of a request: its headers and address.
#[derive(Clone, Copy)]
struct Client<'a> {
    headers: &'a HeaderMap,
    peer: Option<SocketAddr>,
}

impl Client<'_> {
    fn upstream_headers(&self, app: &AppState, upstream_session_id: Option<&str>) -> HeaderMap {
        app.upstream
            .request_headers(self.headers, self.peer, upstream_session_id)
    }
}

async fn initialize_session(
    app: &Arc<AppState>,
    client: Client<'_>,
    body: Bytes,
    message: &ClientMessage,
    request: InitializeRequest,
    binding: Option<Principal>,
    slot: SessionSlot,
) -> Result<Response, ProxyError> {
    let upstream = app
        .upstream
        .send(
            Method::POST,
            client.upstream_headers(app, None),
            Some(body.clone()),
        )
        .await?;
    if !upstream.status().is_success() {
        // A 2026-07-28-only upstream refuses the handshake: the bridge answers it.
        let base = client.upstream_headers(app, None);
        if handshake_client::upstream_is_modern_only(app, &base).await {
            return handshake_client::initialize(app, &base, &body, &request, binding, slot).await;
        }
        return relay_reply(app, Reply::unrecorded(), upstream).await;
    }
    let upstream_session_id = upstream
        .headers()
        .get(SESSION_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let created = session::create_for_initialize(
        app.store.as_ref(),
        &request,
        upstream_session_id.clone(),
        binding,
    )
    .await;
    let session = match created {
        Ok(session) => session,
        Err(error) => {
            if let Some(upstream_id) = upstream_session_id {
                abandon_upstream_session(app, client.upstream_headers(app, Some(&upstream_id)));
            }
            return Err(error);
        }
    };
    slot.fill(session.id.clone());
    tracing::info!(session = %session.id, upstream_session = ?session.upstream_session_id, "session created");
    let stream = match record_request(app, &session.id, &body, client.headers).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(session = %session.id, %error, "initialize request not recorded");
            StreamId::new_unrecorded()
        }
    };
    let forwarded = client.upstream_headers(app, session.upstream_session_id.as_deref());
    let reply = Reply {
        reconnect: reconnect_for(message, &forwarded),
        target: Some((session.id, stream)),
        pending_initialize: Some(request.id),
    };
    relay_reply(app, reply, upstream).await
}

/// How the reply to a POST is handled.
struct Reply {
    /// The session and stream it is recorded under; `None`: not recorded.
    target: Option<(SessionId, StreamId)>,
    /// The id of an `initialize` request whose result completes the session.
    pending_initialize: Option<Value>,
    /// How to poll the upstream when it closes the reply stream early.
    reconnect: Option<Reconnect>,
}

impl Reply {
    fn unrecorded() -> Self {
        Reply {
            target: None,
            pending_initialize: None,
            reconnect: None,
        }
    }
}

/// Polling the upstream for an unfinished reply stream, for a message with requests.
fn reconnect_for(message: &ClientMessage, forwarded: &HeaderMap) -> Option<Reconnect> {
    (!message.request_ids.is_empty()).then(|| Reconnect {
        headers: forwarded.clone(),
        awaiting: message.request_ids.clone(),
    })
}

/// The upstream no longer knows the session and it is not restored: it is over
/// for every instance.
async fn upstream_lost_session(app: &AppState, id: &SessionId) -> ProxyError {
    tracing::info!(session = %id, "upstream lost the session; ending it (404 to the client)");
    app.near_cache.remove(id);
    if let Err(error) = app.store.delete(id).await {
        tracing::warn!(session = %id, %error, "could not delete a session the upstream lost");
    }
    ProxyError::SessionNotFound
}

/// The store refused the session after the upstream created its side: end the
/// upstream's session rather than leave it to time out.
fn abandon_upstream_session(app: &Arc<AppState>, headers: HeaderMap) {
    let app = app.clone();
    tokio::spawn(async move {
        if let Err(error) = app.upstream.send(Method::DELETE, headers, None).await {
            tracing::debug!(%error, "could not end an abandoned upstream session");
        }
    });
}

/// A POST on a session, as the upstream gets it.
struct Request<'a> {
    headers: &'a HeaderMap,
    binding: Option<&'a Principal>,
    /// The client's headers as forwarded, without an upstream session id.
    upstream_base: &'a HeaderMap,
    message: &'a ClientMessage,
    body: &'a Bytes,
}

/// Forwards a request on a session in the near cache while its append is in
/// flight: the append's round trip overlaps the upstream's. Its result (the
/// request's frame id, which names the reply stream and comes before every
/// reply event's id) is first needed when the reply is relayed, so both are
/// awaited before anything reaches the client. The append checks liveness:
/// when it finds the session gone (`NotFound`, deleted on any instance), the
/// upstream's reply is dropped and the client gets 404, as when the append came
/// first; only the upstream has then seen the request (docs/proxy.md, "Near
/// cache"). When the append fails otherwise (the store unavailable, a timeout)
/// but the upstream took the request, its reply is relayed unrecorded: the
/// upstream has run the request, and a 503 would invite the client to run it
/// again; the session leaves the near cache, so its next request asks the store
/// first and, while the store stays down, is refused (503) before the upstream
/// sees it. The reply's frames are recorded after the request's, since the relay
/// starts only once the append returned.
async fn forward_while_recording(
    app: &AppState,
    session: Arc<Session>,
    request: Request<'_>,
) -> Result<(Arc<Session>, StreamId, reqwest::Response, Option<Reconnect>), ProxyError> {
    let forwarded = with_upstream_session(
        request.upstream_base,
        session.upstream_session_id.as_deref(),
    );
    let reconnect = reconnect_for(request.message, &forwarded);
    let (recorded, sent) = tokio::join!(
        record_request(app, &session.id, request.body, request.headers),
        app.upstream
            .send(Method::POST, forwarded, Some(request.body.clone())),
    );
    let stream = match recorded {
        Ok(stream) => stream,
        Err(error) if matches!(error, ProxyError::SessionNotFound) || sent.is_err() => {
            app.near_cache.remove(&session.id);
            return Err(error);
        }
        Err(error) => {
            // The next request on the session takes the path that asks the
            // store first, so while the store stays down it is refused (503)
            // before the upstream sees it.
            app.near_cache.remove(&session.id);
            app.metrics.frame_not_recorded();
            crate::recorder::log_not_recorded(
                &session.id,
                1,
                &error,
                matches!(error, ProxyError::StoreUnavailable(_)),
                "request forwarded while the store failed; its reply is relayed without being recorded",
            );
            return Ok((session, StreamId::new_unrecorded(), sent?, reconnect));
        }
    };
    if matches!(stream.kind(), StreamKind::Unrecorded) {
        // Not recorded (too large): liveness is confirmed by the store anyway.
        if let Err(error) = session::resolve(
            app.store.as_ref(),
            &session.id,
            request.headers,
            request.binding,
        )
        .await
        {
            app.near_cache.remove(&session.id);
            return Err(error);
        }
    }
    Ok((session, stream, sent?, reconnect))
}

/// The session a request names, checked against the request's credential, and
/// the request recorded in it. A session in the near cache costs one store
/// round trip (the append, which checks liveness atomically: a session deleted
/// on any instance is `NotFound` here); otherwise `get`, then the append. When
/// the request is not recorded (too large), a cached session is confirmed with
/// a `get`, so liveness is always checked by the store.
async fn resolve_and_record(
    app: &AppState,
    id: &SessionId,
    headers: &HeaderMap,
    binding: Option<&Principal>,
    body: &Bytes,
) -> Result<(Arc<Session>, StreamId), ProxyError> {
    // Appending the request is the session's activity mark (it slides the
    // expiry like a touch), so no separate touch is needed.
    let mut unrecorded = None;
    if let Some(session) = app.near_cache.get(id) {
        session::check_binding(&session, headers, binding)?;
        match record_request(app, id, body, headers).await {
            Ok(stream) if matches!(stream.kind(), StreamKind::Unrecorded) => {
                unrecorded = Some(stream);
            }
            Ok(stream) => return Ok((session, stream)),
            Err(error) => {
                app.near_cache.remove(id);
                return Err(error);
            }
        }
    }
    let session = match session::resolve(app.store.as_ref(), id, headers, binding).await {
        Ok(session) => Arc::new(session),
        Err(error) => {
            app.near_cache.remove(id);
            return Err(error);
        }
    };
    let stream = match unrecorded {
        Some(stream) => stream,
        None => record_request(app, &session.id, body, headers).await?,
    };
    app.near_cache.insert(&session);
    Ok((session, stream))
}

/// Records the client's message; the reply stream is named after its frame.
async fn record_request(
    app: &AppState,
    session: &SessionId,
    body: &Bytes,
    headers: &HeaderMap,
) -> Result<StreamId, ProxyError> {
    let mut frame = Frame::new(Direction::ClientToServer, SystemClock.now(), body.to_vec());
    if let Some(version) = headers
        .get(PROTOCOL_VERSION_HEADER)
        .and_then(|value| value.to_str().ok())
    {
        frame = frame.with_header(PROTOCOL_VERSION_HEADER.as_str(), version);
    }
    match app.store.append_frame(session, frame).await {
        Ok(frame_id) => Ok(StreamId::for_request(frame_id)),
        Err(error @ (StoreError::InvalidInput(_) | StoreError::CapacityExceeded(_))) => {
            app.metrics.frame_not_recorded();
            tracing::warn!(session = %session, %error, "request forwarded without being recorded");
            Ok(StreamId::new_unrecorded())
        }
        Err(error) => Err(error.into()),
    }
}

/// Sends the upstream's reply to the client: SSE relayed event by event, anything
/// else read whole (a single JSON message), recorded, and returned.
async fn relay_reply(
    app: &Arc<AppState>,
    reply: Reply,
    upstream: reqwest::Response,
) -> Result<Response, ProxyError> {
    let Reply {
        target,
        pending_initialize,
        reconnect,
    } = reply;
    let status = upstream.status();
    let passed_headers = client_response_headers(upstream.headers());
    let content_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
    let is_sse = content_type
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    let session = target.as_ref().map(|(session, _)| session.clone());

    if is_sse {
        let target = target.map(|(session, stream)| StreamTarget {
            cursor: match stream.kind() {
                StreamKind::Request(request) => request,
                StreamKind::Get | StreamKind::Unrecorded => FrameId::ZERO,
            },
            session,
            stream,
        });
        let (lease, lease_start) = match &target {
            Some(target) if matches!(target.stream.kind(), StreamKind::Request(_)) => {
                take_stream_lease(app, target).unzip()
            }
            _ => (None, None),
        };
        let mut relay = Relay::new(target, WhenClientLeaves::KeepRecording);
        relay.pending_initialize = pending_initialize;
        relay.reconnect = reconnect;
        relay.lease = lease;
        let body = relay.spawn(app.clone(), upstream, lease_start).await;
        return Ok(sse_response(status, passed_headers, session.as_ref(), body));
    }

    let body = app.upstream.read_body(upstream, MAX_EVENT_BYTES).await?;
    let is_json = content_type
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if let (Some((session, stream)), true, false) = (&target, is_json, body.is_empty()) {
        record_reply(app, session, stream, &body, pending_initialize.as_ref()).await;
    }
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = passed_headers;
    if let Some(value) = session.and_then(|id| HeaderValue::from_str(id.as_str()).ok()) {
        response.headers_mut().insert(SESSION_ID_HEADER, value);
    }
    Ok(response)
}

/// The lease of a new reply stream, taken and renewed in the background while
/// it is relayed (the relay does not wait for the store; see
/// [`lease`](crate::lease) for the window that opens), by a task that
/// [`Relay::spawn`] starts unless the stream is complete at once. Without one
/// (ids that make no key) the stream is still relayed; an instance resuming it
/// may then take it over early.
fn take_stream_lease(
    app: &Arc<AppState>,
    target: &StreamTarget,
) -> Option<(crate::lease::RenewedLease, crate::lease::PendingLease)> {
    match StreamLease::take_when_started(app.store.clone(), &target.session, &target.stream) {
        Ok(lease) => Some(lease),
        Err(error) => {
            tracing::warn!(session = %target.session, stream = %target.stream, %error, "reply stream relayed without a lease");
            None
        }
    }
}

/// Records a JSON reply. Any reply but `initialize`'s is queued on the
/// instance's [`Recorder`](crate::recorder::Recorder) and written after the
/// client has it (no store round trip before sending; a SIGKILL can lose the
/// recording, never the reply). The `initialize` reply is recorded, and the
/// session completed with its result, before it is sent: the client's next
/// request, on any instance, must find the session `active` with the
/// negotiated protocol version, and one rare message is not worth a second
/// ordering rule.
async fn record_reply(
    app: &AppState,
    session: &SessionId,
    stream: &StreamId,
    body: &Bytes,
    pending_initialize: Option<&Value>,
) {
    let frame = Frame::new(Direction::ServerToClient, SystemClock.now(), body.to_vec())
        .with_stream_id(stream.as_str());
    let Some(initialize_id) = pending_initialize else {
        app.recorder.record(session, frame).await;
        return;
    };
    if let Err(error) = app.store.append_frame(session, frame).await {
        app.metrics.frame_not_recorded();
        crate::recorder::log_not_recorded(
            session,
            1,
            &error,
            error.is_retryable(),
            "reply forwarded without being recorded",
        );
    }
    if let Some(result) = jsonrpc::initialize_result(body, initialize_id) {
        if let Err(error) = session::complete_initialize(app.store.as_ref(), session, result).await
        {
            tracing::warn!(session = %session, %error, "could not record the initialize result");
        }
    }
}

/// Reads the request body, refusing more than `limit` bytes with 413.
async fn read_limited(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ProxyError::BodyTooLarge { limit })
        }
        Err(error) => Err(ProxyError::BodyUnreadable(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessionless_by_header_or_meta() {
        let message = ClientMessage::default();
        let mut headers = HeaderMap::new();
        assert!(!is_sessionless(&headers, &message));
        headers.insert(
            PROTOCOL_VERSION_HEADER,
            HeaderValue::from_static("2025-06-18"),
        );
        assert!(!is_sessionless(&headers, &message));
        headers.insert(
            PROTOCOL_VERSION_HEADER,
            HeaderValue::from_static("2026-07-28"),
        );
        assert!(is_sessionless(&headers, &message));
        let with_meta = ClientMessage {
            meta_protocol_version: Some("2026-07-28".into()),
            ..ClientMessage::default()
        };
        assert!(is_sessionless(&HeaderMap::new(), &with_meta));
    }
}
