//! Relaying an upstream SSE stream to the client: each event is recorded as a frame
//! first, then sent on with the proxy's event id, as it arrives.
//!
//! The relay runs in its own task, so a POST reply stream is read to its end even
//! when the client has gone: every event is recorded and can be replayed from the
//! store by any instance.

use std::convert::Infallible;

use axum::{
    body::Body,
    http::{header, HeaderValue, StatusCode},
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
    jsonrpc,
    session::complete_initialize,
    sse::{keep_alive_comment, SseEvent, SseParser},
    upstream::SESSION_ID_HEADER,
};

/// Largest SSE event accepted from the upstream.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

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

/// An SSE response with `body`, carrying the proxy's session id when there is one.
pub fn sse_response(status: StatusCode, session: Option<&SessionId>, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(value) = session.and_then(|id| HeaderValue::from_str(id.as_str()).ok()) {
        headers.insert(SESSION_ID_HEADER, value);
    }
    response
}

impl Relay {
    /// Starts relaying `upstream` in a new task and returns the client's body.
    pub fn spawn(self, app: std::sync::Arc<AppState>, upstream: reqwest::Response) -> Body {
        let (tx, body) = client_channel();
        tokio::spawn(async move { self.run(&app, upstream, &tx).await });
        body
    }

    /// Relays `upstream` into `tx` until the upstream ends (or, with
    /// [`WhenClientLeaves::Stop`], the client leaves or the proxy shuts down).
    pub async fn run(
        mut self,
        app: &AppState,
        upstream: reqwest::Response,
        tx: &mpsc::Sender<Bytes>,
    ) {
        let mut parser = SseParser::new(MAX_EVENT_BYTES);
        let mut chunks = upstream.bytes_stream();
        let mut shutdown = app.shutdown.clone();
        let mut client_open = true;
        loop {
            let next = match self.when_client_leaves {
                WhenClientLeaves::KeepRecording => chunks.next().await,
                WhenClientLeaves::Stop => tokio::select! {
                    next = chunks.next() => next,
                    () = tx.closed() => break,
                    _ = shutdown.wait_for(|stopping| *stopping) => break,
                },
            };
            let chunk = match next {
                None => break,
                Some(Ok(chunk)) => chunk,
                Some(Err(error)) => {
                    tracing::warn!(%error, "upstream SSE stream broke off");
                    break;
                }
            };
            let events = match parser.push(&chunk) {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(%error, "upstream SSE stream rejected");
                    break;
                }
            };
            if events.is_empty() && chunk.first() == Some(&b':') && client_open {
                client_open = tx.send(keep_alive_comment()).await.is_ok();
            }
            for event in events {
                let outgoing = self.record(app, event).await;
                if client_open && tx.send(outgoing.encode()).await.is_err() {
                    client_open = false;
                    tracing::debug!("client left an SSE stream; still recording it");
                }
                if !client_open && self.when_client_leaves == WhenClientLeaves::Stop {
                    return;
                }
            }
        }
    }

    /// Records one upstream event and returns the event to send to the client.
    async fn record(&mut self, app: &AppState, event: SseEvent) -> SseEvent {
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
