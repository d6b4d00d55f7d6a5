//! Relaying an upstream SSE stream to the client: each event is recorded as a frame
//! first, then sent on with the proxy's event id, as it arrives.
//!
//! The relay runs in its own task, so a POST reply stream is read to its end even
//! when the client has gone: every event is recorded and can be replayed from the
//! store by any instance.

use std::{convert::Infallible, time::Duration};

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::Response,
};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use session_store::{Clock, Direction, Frame, FrameId, SessionId, SystemClock};
use tokio::sync::mpsc;

use crate::{
    app::AppState,
    event_id::{ProxyEventId, StreamId},
    get_stream::is_event_stream,
    jsonrpc,
    session::complete_initialize,
    sse::{keep_alive_comment, SseEvent, SseParser},
    upstream::{LAST_EVENT_ID_HEADER, SESSION_ID_HEADER},
};

/// Largest SSE event accepted from the upstream.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Reconnects to an upstream that closes a reply stream without sending anything
/// new, before the relay gives up on the stream.
const MAX_FRUITLESS_RECONNECTS: u32 = 3;
/// Wait before polling a closed reply stream when the upstream gave no `retry`.
const DEFAULT_RECONNECT_MILLIS: u64 = 500;
/// Longest wait before polling, whatever `retry` the upstream asked for.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// Events buffered between the relay task and a slow client.
const CLIENT_BUFFER_EVENTS: usize = 64;

/// Where a relayed stream's events are recorded.
#[derive(Clone, Debug)]
pub struct StreamTarget {
    /// The proxy's session id.
    pub session: SessionId,
    /// The stream the events belong to.
    pub stream: StreamId,
    /// The last frame sent on this stream (or the point it started after): the
    /// event id a priming event gets.
    pub cursor: FrameId,
}

/// What the relay does when the client disconnects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenClientLeaves {
    /// Keep reading and recording until the upstream ends the stream (POST replies:
    /// they end with the response).
    KeepRecording,
    /// Stop and drop the upstream connection (GET streams, which never end).
    Stop,
}

/// One upstream SSE stream being relayed.
#[derive(Debug)]
pub struct Relay {
    /// Where events are recorded; `None` relays verbatim without recording
    /// (sessionless requests).
    pub target: Option<StreamTarget>,
    /// The id of an `initialize` request whose result completes the session.
    pub pending_initialize: Option<Value>,
    /// Behaviour on client disconnect.
    pub when_client_leaves: WhenClientLeaves,
    /// Set for POST reply streams: how to poll the upstream for the rest of a
    /// stream it closed before answering.
    pub reconnect: Option<Reconnect>,
    answered: Vec<Value>,
    upstream_event_id: Option<String>,
    retry_millis: Option<u64>,
}

/// What polling the upstream for the rest of a POST reply stream needs.
#[derive(Clone, Debug)]
pub struct Reconnect {
    /// The headers of the upstream GET (session id, credentials, protocol version).
    pub headers: HeaderMap,
    /// The ids of the POST's requests: the stream is complete once all are answered.
    pub awaiting: Vec<Value>,
}

/// How one upstream connection of a relay ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnectionEnd {
    /// The upstream closed it (or it broke off).
    Closed { relayed_events: bool },
    /// The relay is over: the client left a GET stream, shutdown, or bad data.
    Stop,
}

/// A channel to the client, and the body that drains it.
pub fn client_channel() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(CLIENT_BUFFER_EVENTS);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    (tx, Body::from_stream(stream))
}

/// An SSE response with `body` and the upstream's `passed_headers` (see
/// [`client_response_headers`](crate::headers::client_response_headers); empty
/// for a stream replayed from the store), carrying the proxy's session id when
/// there is one.
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
    if let Some(value) = session.and_then(|id| HeaderValue::from_str(id.as_str()).ok()) {
        headers.insert(SESSION_ID_HEADER, value);
    }
    response
}

impl Relay {
    /// A relay recording into `target` (when given).
    pub fn new(target: Option<StreamTarget>, when_client_leaves: WhenClientLeaves) -> Self {
        Relay {
            target,
            pending_initialize: None,
            when_client_leaves,
            reconnect: None,
            answered: Vec::new(),
            upstream_event_id: None,
            retry_millis: None,
        }
    }

    /// Starts relaying `upstream` in a new task and returns the client's body.
    pub fn spawn(self, app: std::sync::Arc<AppState>, upstream: reqwest::Response) -> Body {
        let (tx, body) = client_channel();
        tokio::spawn(async move { self.run(&app, upstream, &tx).await });
        body
    }

    /// Relays `upstream` into `tx` until the upstream ends (or, with
    /// [`WhenClientLeaves::Stop`], the client leaves or the proxy shuts down). A
    /// POST reply stream the upstream closes before answering every request is
    /// polled again with `Last-Event-ID`, as a client would, and relayed on.
    pub async fn run(
        mut self,
        app: &AppState,
        upstream: reqwest::Response,
        tx: &mpsc::Sender<Bytes>,
    ) {
        let mut upstream = upstream;
        let mut client_open = true;
        let mut fruitless_reconnects = 0;
        loop {
            match self
                .relay_connection(app, upstream, tx, &mut client_open)
                .await
            {
                ConnectionEnd::Stop => return,
                ConnectionEnd::Closed { relayed_events } => {
                    if relayed_events {
                        fruitless_reconnects = 0;
                    }
                }
            }
            if fruitless_reconnects >= MAX_FRUITLESS_RECONNECTS {
                tracing::warn!("upstream closed a reply stream repeatedly without sending more; giving up on it");
                return;
            }
            let Some(next) = self.poll_upstream_again(app).await else {
                return;
            };
            fruitless_reconnects += 1;
            upstream = next;
        }
    }

    async fn relay_connection(
        &mut self,
        app: &AppState,
        upstream: reqwest::Response,
        tx: &mpsc::Sender<Bytes>,
        client_open: &mut bool,
    ) -> ConnectionEnd {
        let mut parser = SseParser::new(MAX_EVENT_BYTES);
        let mut chunks = upstream.bytes_stream();
        let mut shutdown = app.shutdown.clone();
        let mut relayed_events = false;
        loop {
            let next = match self.when_client_leaves {
                WhenClientLeaves::KeepRecording => chunks.next().await,
                WhenClientLeaves::Stop => tokio::select! {
                    next = chunks.next() => next,
                    () = tx.closed() => return ConnectionEnd::Stop,
                    _ = shutdown.wait_for(|stopping| *stopping) => return ConnectionEnd::Stop,
                },
            };
            let chunk = match next {
                None => return ConnectionEnd::Closed { relayed_events },
                Some(Ok(chunk)) => chunk,
                Some(Err(error)) => {
                    tracing::warn!(%error, "upstream SSE stream broke off");
                    return ConnectionEnd::Closed { relayed_events };
                }
            };
            let events = match parser.push(&chunk) {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(%error, "upstream SSE stream rejected");
                    return ConnectionEnd::Stop;
                }
            };
            if events.is_empty() && chunk.first() == Some(&b':') && *client_open {
                *client_open = tx.send(keep_alive_comment()).await.is_ok();
            }
            for event in events {
                relayed_events |= !event.is_empty();
                let outgoing = self.record(app, event).await;
                if *client_open && tx.send(outgoing.encode()).await.is_err() {
                    *client_open = false;
                    tracing::debug!("client left an SSE stream; still recording it");
                }
                if !*client_open && self.when_client_leaves == WhenClientLeaves::Stop {
                    return ConnectionEnd::Stop;
                }
            }
        }
    }

    /// The upstream's continuation of a reply stream it closed early: a GET with
    /// `Last-Event-ID` after the `retry` it asked for. `None` when the stream is
    /// complete, cannot be resumed, or the upstream will not resume it.
    async fn poll_upstream_again(&self, app: &AppState) -> Option<reqwest::Response> {
        let reconnect = self.reconnect.as_ref()?;
        let unanswered = reconnect
            .awaiting
            .iter()
            .any(|id| !self.answered.contains(id));
        if !unanswered {
            return None;
        }
        let last = HeaderValue::from_str(self.upstream_event_id.as_deref()?).ok()?;
        let wait = Duration::from_millis(self.retry_millis.unwrap_or(DEFAULT_RECONNECT_MILLIS))
            .min(MAX_RECONNECT_WAIT);
        tokio::time::sleep(wait).await;
        let mut headers = reconnect.headers.clone();
        headers.insert(LAST_EVENT_ID_HEADER, last);
        match app.upstream.send(Method::GET, headers, None).await {
            Ok(response)
                if response.status().is_success() && is_event_stream(response.headers()) =>
            {
                tracing::debug!("upstream closed a reply stream early; resumed it");
                Some(response)
            }
            Ok(response) => {
                tracing::warn!(status = %response.status(), "upstream refused to resume a reply stream it closed early");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "upstream closed a reply stream early and cannot be reached to resume it");
                None
            }
        }
    }

    /// Records one upstream event and returns the event to send to the client.
    async fn record(&mut self, app: &AppState, event: SseEvent) -> SseEvent {
        if event.id.is_some() {
            self.upstream_event_id.clone_from(&event.id);
        }
        if event.retry.is_some() {
            self.retry_millis = event.retry;
        }
        if self.reconnect.is_some() {
            self.answered
                .extend(jsonrpc::response_ids(event.data.as_bytes()));
        }
        let Some(target) = &mut self.target else {
            return event;
        };
        let stream = target.stream.clone();
        let proxy_id = |frame| ProxyEventId {
            frame,
            stream: stream.clone(),
        };
        if event.is_empty() {
            // A priming event: resuming from it replays the whole stream so far.
            return SseEvent {
                id: Some(proxy_id(target.cursor).to_string()),
                data: String::new(),
                ..event
            };
        }
        let mut frame = Frame::new(
            Direction::ServerToClient,
            SystemClock.now(),
            event.data.as_bytes(),
        )
        .with_stream_id(target.stream.as_str());
        frame.event_id = event.id.clone();
        let recorded = app.store.append_frame(&target.session, frame).await;
        if let Some(request_id) = &self.pending_initialize {
            if let Some(result) = jsonrpc::initialize_result(event.data.as_bytes(), request_id) {
                if let Err(error) =
                    complete_initialize(app.store.as_ref(), &target.session, result).await
                {
                    tracing::warn!(session = %target.session, %error, "could not record the initialize result");
                }
                self.pending_initialize = None;
            }
        }
        match recorded {
            Ok(frame_id) => {
                target.cursor = frame_id;
                SseEvent {
                    id: Some(proxy_id(frame_id).to_string()),
                    ..event
                }
            }
            Err(error) => {
                app.metrics.frame_not_recorded();
                tracing::warn!(session = %target.session, %error, "event forwarded without being recorded");
                SseEvent { id: None, ..event }
            }
        }
    }
}
