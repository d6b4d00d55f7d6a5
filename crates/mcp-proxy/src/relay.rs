//! Relaying an upstream SSE stream to the client: events are recorded as frames
//! first, then sent on with the proxy's event ids, as they arrive. The events
//! that arrived together (one upstream chunk and whatever further chunks were
//! already there) are recorded in one store call and sent as one chunk. The
//! batch that answers a reply stream's last open request is the exception: it
//! is sent at once, without event ids, and recorded in the background like a
//! JSON reply (a client that has it never resumes the stream).
//!
//! The relay runs in its own task, so a POST reply stream is read to its end even
//! when the client has gone: every event is recorded and can be replayed from the
//! store by any instance.

use std::{convert::Infallible, time::Duration};

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode},
    response::Response,
};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use session_store::{Clock, Direction, Frame, FrameId, SessionId, SystemClock};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    event_id::{ProxyEventId, StreamId, StreamKind},
    jsonrpc,
    lease::{PendingLease, RenewedLease},
    metrics::StreamFailure,
    recorder::append_batch,
    session::complete_initialize,
    sse::is_event_stream,
    sse::{encode_all, keep_alive_comment, take_ready_events, BatchEnd, SseEvent, SseParser},
    state::AppState,
    upstream::{LAST_EVENT_ID_HEADER, SESSION_ID_HEADER},
    upstream_cursor,
};

/// Largest SSE event accepted from the upstream.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Wait before polling a closed reply stream when the upstream gave no `retry`.
const DEFAULT_RECONNECT_MILLIS: u64 = 1_000;

/// How long a resumed upstream connection (a GET with `Last-Event-ID`) may bring
/// no event at all before it is treated as closed and resumed again (see
/// [`resumed_silence_bound`]).
pub const RESUMED_SILENCE: Duration = Duration::from_secs(30);

/// The silence bound of resumed upstream connections: [`RESUMED_SILENCE`], or
/// half of `upstream_poll_deadline` when that is shorter, so a silent upstream
/// is resumed again at least once before the deadline gives up on it.
pub fn resumed_silence_bound(settings: &crate::config::ProxySettings) -> Duration {
    RESUMED_SILENCE.min(settings.upstream_poll_deadline / 2)
}

/// Events buffered between the relay task and a slow client.
const CLIENT_BUFFER_EVENTS: usize = 64;

/// How long a new reply stream's response waits for the relay's first batch of
/// events before it is handed to the client without it. When the upstream
/// answers at once (most `tools/call`s), the response head, the proxy's priming
/// event, the reply and often the body's end then leave in one write to the
/// client instead of two or three; the priming event still comes first
/// (2025-11-25 transport, "Sending Messages to the Server"). A longer reply
/// delays the client's first bytes by this much, nothing else.
pub const FIRST_BATCH_HOLD: Duration = Duration::from_millis(5);

/// JSON-RPC error code of the responses the proxy writes for requests whose
/// stream could not be finished (server error range, like the proxy's own errors).
const STREAM_LOST_CODE: i64 = -32000;

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

impl StreamTarget {
    /// The proxy's priming event for this stream (an event id and empty data,
    /// 2025-11-25): a client that has seen nothing else can resume from it.
    pub fn priming_event(&self) -> SseEvent {
        SseEvent {
            id: Some(
                ProxyEventId {
                    frame: self.cursor,
                    stream: self.stream.clone(),
                }
                .to_string(),
            ),
            ..SseEvent::default()
        }
    }
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
    /// The stream's lease, renewed while this relay runs (POST reply streams).
    pub lease: Option<RenewedLease>,
    /// The first upstream connection is already a resumption (a takeover's GET
    /// with `Last-Event-ID`): like every poll, it is bounded by
    /// [`resumed_silence_bound`].
    pub first_connection_resumed: bool,
    answered: Vec<Value>,
    upstream_event_id: Option<String>,
    retry_millis: Option<u64>,
    /// The `retry` of an upstream priming event not passed on, for the next
    /// event sent.
    pending_retry: Option<u64>,
    /// Frames of this stream were queued on the recorder (the completing
    /// batch): the lease is released behind them.
    recorded_in_background: bool,
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
    /// The relay is over: the client left a GET stream, or shutdown.
    Stop,
    /// Another instance holds the stream's lease now: it carries on, this one stops.
    LeaseLost,
    /// The stream cannot go on.
    Failed(StreamFailure),
}

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
fn client_body(keepalive: Duration, head: Vec<Bytes>, rx: mpsc::Receiver<Bytes>) -> Body {
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

impl Relay {
    /// A relay recording into `target` (when given).
    pub fn new(target: Option<StreamTarget>, when_client_leaves: WhenClientLeaves) -> Self {
        Relay {
            target,
            pending_initialize: None,
            when_client_leaves,
            reconnect: None,
            lease: None,
            first_connection_resumed: false,
            answered: Vec::new(),
            upstream_event_id: None,
            retry_millis: None,
            pending_retry: None,
            recorded_in_background: false,
        }
    }

    /// A relay that continues a stream of which `answered` responses were already
    /// recorded, the last recorded event having the upstream's id
    /// `upstream_event_id` (a takeover).
    pub fn continuing(mut self, answered: Vec<Value>, upstream_event_id: Option<String>) -> Self {
        self.answered = answered;
        self.upstream_event_id = upstream_event_id;
        self
    }

    /// Starts relaying `upstream` in a new task and returns the client's body,
    /// which opens with the proxy's priming event when the stream is recorded
    /// (a [`client_channel`]). Waits up to [`FIRST_BATCH_HOLD`] for the relay's
    /// first batch of events, so that a reply the upstream had ready is in the
    /// body, after the priming event, from its start: hyper then writes the
    /// response head and both in one go. `lease` (the renewal task of
    /// [`Relay::lease`]) is started then, unless the stream is complete already.
    pub async fn spawn(
        self,
        app: std::sync::Arc<AppState>,
        upstream: reqwest::Response,
        lease: Option<PendingLease>,
    ) -> Body {
        let mut head: Vec<Bytes> = self
            .target
            .as_ref()
            .map(|target| target.priming_event().encode())
            .into_iter()
            .collect();
        let keepalive = app.settings.sse_keepalive;
        let (tx, mut rx) = mpsc::channel::<Bytes>(CLIENT_BUFFER_EVENTS);
        tokio::spawn(async move { self.run(&app, upstream, &tx).await });
        let complete = match tokio::time::timeout(FIRST_BATCH_HOLD, rx.recv()).await {
            Ok(Some(batch)) => {
                head.push(batch);
                loop {
                    match rx.try_recv() {
                        Ok(batch) => head.push(batch),
                        Err(mpsc::error::TryRecvError::Empty) => break false,
                        Err(mpsc::error::TryRecvError::Disconnected) => break true,
                    }
                }
            }
            Ok(None) => true,
            Err(_) => false,
        };
        // A relay that ended has released its lease: nothing to take.
        if let (Some(lease), false) = (lease, complete) {
            lease.start();
        }
        client_body(keepalive, head, rx)
    }

    /// Relays `upstream` into `tx` until the upstream ends (or, with
    /// [`WhenClientLeaves::Stop`], the client leaves or the proxy shuts down). A
    /// POST reply stream the upstream closes before answering every request is
    /// polled again with `Last-Event-ID` after exactly the `retry` the upstream
    /// asked for, as a client would, and relayed on; when that cannot go on, every
    /// unanswered request gets a JSON-RPC error response (recorded and sent).
    pub async fn run(
        mut self,
        app: &AppState,
        upstream: reqwest::Response,
        tx: &mpsc::Sender<Bytes>,
    ) {
        let mut upstream = upstream;
        let mut client_open = true;
        let mut last_progress = Instant::now();
        let mut resumed = self.first_connection_resumed;
        let failure = loop {
            match self
                .relay_connection(app, upstream, tx, &mut client_open, resumed)
                .await
            {
                ConnectionEnd::Stop => break None,
                ConnectionEnd::LeaseLost => {
                    self.lease_lost(app);
                    return;
                }
                ConnectionEnd::Failed(reason) => break Some(reason),
                ConnectionEnd::Closed { relayed_events } => {
                    if relayed_events {
                        last_progress = Instant::now();
                    }
                }
            }
            if self.unanswered().is_empty() {
                break None;
            }
            match self.poll_upstream_again(app, last_progress).await {
                Ok(next) => {
                    upstream = next;
                    resumed = true;
                }
                Err(ConnectionEnd::LeaseLost) => {
                    self.lease_lost(app);
                    return;
                }
                Err(ConnectionEnd::Failed(reason)) => break Some(reason),
                Err(_) => break None,
            }
        };
        if let Some(reason) = failure {
            self.answer_unanswered_with_errors(app, reason, tx, client_open)
                .await;
        }
        self.release_lease(app).await;
    }

    /// Gives the stream's lease up: at once, or, when frames of the stream
    /// are still queued on the recorder, once they are written.
    async fn release_lease(&mut self, app: &AppState) {
        if let Some(lease) = self.lease.take() {
            if self.recorded_in_background {
                app.recorder.release_after_queued(lease).await;
            } else {
                lease.release();
            }
        }
    }

    /// Ends a stream that cannot be continued: every request it still owes an
    /// answer gets a JSON-RPC error response, recorded and sent (never a silent
    /// clean end), and the lease is given up.
    pub async fn give_up(
        mut self,
        app: &AppState,
        reason: StreamFailure,
        tx: &mpsc::Sender<Bytes>,
    ) {
        self.answer_unanswered_with_errors(app, reason, tx, true)
            .await;
        self.release_lease(app).await;
    }

    fn lease_lost(&self, app: &AppState) {
        app.metrics.stream_failed(StreamFailure::LeaseLost);
        if let Some(target) = &self.target {
            tracing::warn!(session = %target.session, stream = %target.stream, "stream lease found held by another instance (ours had lapsed, or was not taken yet, when that instance resumed the stream); it carries the stream on, this one stops relaying it");
        }
    }

    /// The ids of the requests of a POST reply stream not answered yet.
    fn unanswered(&self) -> Vec<Value> {
        self.reconnect.as_ref().map_or_else(Vec::new, |reconnect| {
            reconnect
                .awaiting
                .iter()
                .filter(|id| !self.answered.contains(id))
                .cloned()
                .collect()
        })
    }

    async fn answer_unanswered_with_errors(
        &mut self,
        app: &AppState,
        reason: StreamFailure,
        tx: &mpsc::Sender<Bytes>,
        client_open: bool,
    ) {
        let unanswered = self.unanswered();
        app.metrics.stream_failed(reason);
        let (session, stream) = self.target.as_ref().map_or_else(
            || (String::new(), String::new()),
            |target| (target.session.to_string(), target.stream.to_string()),
        );
        tracing::warn!(
            %session,
            %stream,
            reason = reason.as_str(),
            unanswered = unanswered.len(),
            "upstream stream cannot be finished: {}; answering its open requests with errors",
            describe(reason)
        );
        let errors = unanswered
            .into_iter()
            .map(|id| {
                let error = json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "error": {
                        "code": STREAM_LOST_CODE,
                        "message": format!(
                            "mcp-proxy: the upstream stream ended before this request was answered ({}); it may or may not have run",
                            describe(reason)
                        ),
                        "data": {"reason": reason.as_str()},
                    },
                });
                SseEvent {
                    data: error.to_string(),
                    ..SseEvent::default()
                }
            })
            .collect();
        let outgoing = self.record_batch(app, errors).await;
        if client_open && !outgoing.is_empty() {
            let _ = tx.send(encode_all(&outgoing)).await;
        }
    }

    async fn relay_connection(
        &mut self,
        app: &AppState,
        upstream: reqwest::Response,
        tx: &mpsc::Sender<Bytes>,
        client_open: &mut bool,
        resumed: bool,
    ) -> ConnectionEnd {
        // A resumed connection that brings no event (comments do not count: an
        // upstream can keep a connection alive that never delivers) for the
        // bound is treated as closed: it is resumed again, within the poll
        // deadline, from the newest event id.
        let silence = resumed.then(|| resumed_silence_bound(&app.settings));
        let mut silent_from = Instant::now();
        let mut parser = SseParser::new(MAX_EVENT_BYTES);
        let mut chunks = upstream.bytes_stream();
        let mut shutdown = app.shutdown.clone();
        let mut relayed_events = false;
        let stop_with_client = self.when_client_leaves == WhenClientLeaves::Stop;
        loop {
            let next = tokio::select! {
                next = chunks.next() => next,
                () = lease_lost(self.lease.as_mut()) => return ConnectionEnd::LeaseLost,
                () = tx.closed(), if stop_with_client => return ConnectionEnd::Stop,
                _ = shutdown.wait_for(|stopping| *stopping), if stop_with_client => return ConnectionEnd::Stop,
                () = sleep_for_silence(silent_from, silence) => {
                    tracing::info!(silence = ?silence, "resumed upstream stream sent no event within the bound; resuming it again");
                    return ConnectionEnd::Closed { relayed_events };
                }
            };
            let chunk = match next {
                None => return ConnectionEnd::Closed { relayed_events },
                Some(Ok(chunk)) => chunk,
                Some(Err(error)) => {
                    tracing::warn!(%error, "upstream SSE stream broke off");
                    return ConnectionEnd::Closed { relayed_events };
                }
            };
            let (events, end) = take_ready_events(&mut parser, &mut chunks, &chunk);
            if !events.is_empty() {
                silent_from = Instant::now();
            }
            relayed_events |= events.iter().any(|event| !event.is_empty());
            let outgoing = self.record_batch(app, events).await;
            if *client_open && !outgoing.is_empty() && tx.send(encode_all(&outgoing)).await.is_err()
            {
                *client_open = false;
                tracing::debug!("client left an SSE stream; still recording it");
            }
            if !*client_open && stop_with_client {
                return ConnectionEnd::Stop;
            }
            match end {
                Some(BatchEnd::Closed) => return ConnectionEnd::Closed { relayed_events },
                Some(BatchEnd::Rejected) => {
                    return ConnectionEnd::Failed(StreamFailure::StreamRejected)
                }
                None => {}
            }
            // A POST reply stream is complete once every request has its
            // response (transport, "Sending Messages to the Server": the server
            // then closes it). An upstream that keeps the connection open anyway
            // (a resumed GET the TypeScript SDK leaves open) must not keep this
            // relay, and with it the stream's lease, alive.
            if self.stream_complete() {
                return ConnectionEnd::Closed { relayed_events };
            }
        }
    }

    /// Whether this is a POST reply stream whose every request is answered.
    fn stream_complete(&self) -> bool {
        self.reconnect
            .as_ref()
            .is_some_and(|reconnect| !reconnect.awaiting.is_empty())
            && self.unanswered().is_empty()
    }

    /// The upstream's continuation of a reply stream it closed early: a GET with
    /// `Last-Event-ID` after exactly the `retry` it asked for, repeated while the
    /// upstream is unreachable or answers 5xx, until `upstream_poll_deadline` has
    /// passed since the stream last brought something new.
    async fn poll_upstream_again(
        &mut self,
        app: &AppState,
        last_progress: Instant,
    ) -> Result<reqwest::Response, ConnectionEnd> {
        let Some(reconnect) = self.reconnect.clone() else {
            return Err(ConnectionEnd::Stop);
        };
        let Some(last) = self
            .upstream_event_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        else {
            return Err(ConnectionEnd::Failed(StreamFailure::NotResumable));
        };
        loop {
            let wait = Duration::from_millis(self.retry_millis.unwrap_or(DEFAULT_RECONNECT_MILLIS));
            if last_progress.elapsed() + wait > app.settings.upstream_poll_deadline {
                return Err(ConnectionEnd::Failed(StreamFailure::PollDeadline));
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = lease_lost(self.lease.as_mut()) => return Err(ConnectionEnd::LeaseLost),
            }
            let mut headers = reconnect.headers.clone();
            headers.insert(LAST_EVENT_ID_HEADER, last.clone());
            match app.upstream.send(Method::GET, headers, None).await {
                Ok(response)
                    if response.status().is_success() && is_event_stream(response.headers()) =>
                {
                    tracing::debug!("upstream closed a reply stream early; resumed it");
                    return Ok(response);
                }
                Ok(response) if response.status().is_server_error() => {
                    tracing::info!(status = %response.status(), "upstream could not resume a reply stream yet; polling again");
                }
                Ok(response) => {
                    tracing::info!(status = %response.status(), "upstream refused to resume a reply stream");
                    return Err(ConnectionEnd::Failed(StreamFailure::ResumeRefused));
                }
                Err(error) => {
                    tracing::info!(%error, "upstream unreachable while resuming a reply stream; polling again");
                }
            }
        }
    }

    /// Records events that arrived together, in one store round trip where the
    /// store can ([`append_batch`]), and returns them as they are sent to the
    /// client: each message with its own frame id as event id (without one when
    /// it could not be recorded); the upstream's priming events are not sent
    /// (the client already has their id: one priming event per stream, the
    /// proxy's own, 2025-11-25 "Sending Messages to the Server").
    async fn record_batch(&mut self, app: &AppState, mut events: Vec<SseEvent>) -> Vec<SseEvent> {
        let on_get_stream = self
            .target
            .as_ref()
            .is_some_and(|target| target.stream.kind() == StreamKind::Get);
        for event in &mut events {
            if !carries_a_message(event) {
                // An upstream's priming event with data such as `{}` (seen when
                // server-everything's event store replays a session): its id is
                // a resume point, its data no JSON-RPC message to record or send.
                tracing::debug!(id = ?event.id, "upstream event without a JSON-RPC message; kept as a priming event");
                event.data.clear();
            } else if on_get_stream && !jsonrpc::response_ids(event.data.as_bytes()).is_empty() {
                // A response on a GET stream answers a request of some POST
                // stream, which the client already had or gets there (2025-11-25
                // transport, "Listening for Messages from the Server": the
                // server MUST NOT send responses on it). server-everything's
                // event store replays earlier POST streams' responses into a
                // resumed GET stream; passed on, the client would see answers
                // twice. Its id is still a resume point.
                tracing::debug!(id = ?event.id, "upstream response on a GET stream; not passed on");
                event.data.clear();
            }
        }
        for event in &events {
            if event.id.is_some() {
                self.upstream_event_id.clone_from(&event.id);
            }
            if event.retry.is_some() {
                self.retry_millis = event.retry;
            }
            if self.reconnect.is_some() && !event.is_empty() {
                self.answered
                    .extend(jsonrpc::response_ids(event.data.as_bytes()));
            }
        }
        // The batch that answers the stream's last open request is sent before
        // it is recorded (see `send_completing_batch`); the `initialize` reply
        // is recorded first, as on the JSON path.
        if self.target.is_some() && self.stream_complete() && self.pending_initialize.is_none() {
            return self.send_completing_batch(app, events).await;
        }
        let Some(target) = &mut self.target else {
            return events;
        };
        let now = SystemClock.now();
        let frames: Vec<Frame> = events
            .iter()
            .filter(|event| !event.is_empty())
            .map(|event| {
                let mut frame = Frame::new(Direction::ServerToClient, now, event.data.as_bytes())
                    .with_stream_id(target.stream.as_str());
                frame.event_id = event.id.clone();
                frame
            })
            .collect();
        let mut frame_ids = if frames.is_empty() {
            Vec::new()
        } else {
            append_batch(
                app.store.as_ref(),
                &app.metrics,
                &target.session,
                frames,
                "event",
            )
            .await
        }
        .into_iter();
        let mut outgoing = Vec::with_capacity(events.len());
        // The upstream's resume point when the batch's last event with an
        // upstream id is a priming event (which is not recorded as a frame).
        let mut resume_point = None;
        for event in events {
            if event.is_empty() {
                if let (Some(upstream_id), StreamKind::Request(_)) =
                    (&event.id, target.stream.kind())
                {
                    resume_point = Some((target.cursor, upstream_id.clone()));
                }
                // An upstream priming event is not passed on: the client's last
                // event id already is the one it would carry (the proxy's own
                // priming event's, or the last recorded event's), so it would
                // repeat it. Its `retry` rides on the next event sent.
                if event.retry.is_some() {
                    self.pending_retry = event.retry;
                }
                continue;
            }
            if let Some(request_id) = &self.pending_initialize {
                if let Some(result) = jsonrpc::initialize_result(event.data.as_bytes(), request_id)
                {
                    if let Err(error) =
                        complete_initialize(app.store.as_ref(), &target.session, result).await
                    {
                        tracing::warn!(session = %target.session, %error, "could not record the initialize result");
                    }
                    self.pending_initialize = None;
                }
            }
            let id = frame_ids.next().flatten().map(|frame_id| {
                target.cursor = frame_id;
                proxy_event_id(target, frame_id)
            });
            if id.is_some() && event.id.is_some() {
                resume_point = None; // the recorded frame carries a later one
            }
            let retry = event.retry.or(self.pending_retry.take());
            outgoing.push(SseEvent { id, retry, ..event });
        }
        // Kept for a takeover, which only a stream still open can need.
        if let (Some((after, upstream_id)), false) = (resume_point, self.stream_complete()) {
            if let Some(target) = &self.target {
                upstream_cursor::remember(
                    &app.recorder,
                    &target.session,
                    &target.stream,
                    after,
                    &upstream_id,
                )
                .await;
            }
        }
        outgoing
    }
}

impl Relay {
    /// The batch that answers a reply stream's last open request: its messages
    /// are queued on the instance's [`Recorder`](crate::recorder::Recorder),
    /// like a JSON reply, and returned to be sent at once, without event ids
    /// (an id is the frame id the append returns). No store round trip sits
    /// between the upstream's answer and the client (issue 14). A client that
    /// has the answer does not resume the stream; one that lost the connection
    /// before it resumes from the last id it has (the priming event's or an
    /// earlier message's) and is replayed these frames once they are written.
    /// The stream's lease is released only after they are (see
    /// [`Relay::run`]), so an instance resuming the stream meanwhile finds it
    /// held and tails the store instead of taking the upstream over.
    async fn send_completing_batch(
        &mut self,
        app: &AppState,
        events: Vec<SseEvent>,
    ) -> Vec<SseEvent> {
        let mut outgoing = Vec::with_capacity(events.len());
        let mut frames = Vec::with_capacity(events.len());
        let now = SystemClock.now();
        for event in events {
            if event.is_empty() {
                if event.retry.is_some() {
                    self.pending_retry = event.retry;
                }
                continue;
            }
            if let Some(target) = &self.target {
                let mut frame = Frame::new(Direction::ServerToClient, now, event.data.as_bytes())
                    .with_stream_id(target.stream.as_str());
                frame.event_id.clone_from(&event.id);
                frames.push(frame);
            }
            let retry = event.retry.or(self.pending_retry.take());
            outgoing.push(SseEvent {
                id: None,
                retry,
                ..event
            });
        }
        if let (Some(target), false) = (&self.target, frames.is_empty()) {
            app.recorder.record_all(&target.session, frames).await;
            self.recorded_in_background = true;
        }
        outgoing
    }
}

/// Whether an event's data is a JSON-RPC message (or batch) rather than empty or
/// some other JSON (an empty object a server sends as a priming event's data).
/// A substring check, not a parse: the hot path reads each event once more only
/// as bytes.
fn carries_a_message(event: &SseEvent) -> bool {
    !event.data.is_empty() && event.data.contains("\"jsonrpc\"")
}

/// The proxy's event id of frame `frame` of `target`'s stream.
fn proxy_event_id(target: &StreamTarget, frame: FrameId) -> String {
    // `ProxyEventId`'s form, without a copy of the stream id per event.
    format!("{frame}@{}", target.stream)
}

/// Resolves `silence` after `from`; never without a bound.
async fn sleep_for_silence(from: Instant, silence: Option<Duration>) {
    match silence {
        Some(bound) => tokio::time::sleep_until(from + bound).await,
        None => std::future::pending().await,
    }
}

/// Resolves when `lease` is lost; never when there is none.
async fn lease_lost(lease: Option<&mut RenewedLease>) {
    match lease {
        Some(lease) => lease.lost().await,
        None => std::future::pending().await,
    }
}

/// The cause of a stream failure, for a log line and a client's error message.
fn describe(reason: StreamFailure) -> &'static str {
    match reason {
        StreamFailure::NotResumable => "the upstream gave no event id to resume the stream from",
        StreamFailure::ResumeRefused => "the upstream refused to resume the stream",
        StreamFailure::PollDeadline => {
            "the upstream sent nothing new within proxy.upstream_poll_deadline"
        }
        StreamFailure::StreamRejected => "the upstream sent an invalid or oversized SSE event",
        StreamFailure::LeaseLost => "another proxy instance took the stream over",
        StreamFailure::RestoreFailed => {
            "the upstream lost the session and it could not be restored"
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_client_stream_opens_with_its_priming_event_and_keeps_alive_when_idle() {
        let target = StreamTarget {
            session: SessionId::new("s1").unwrap(),
            stream: StreamId::for_request(FrameId::new(7, 0)),
            cursor: FrameId::new(7, 0),
        };
        let (tx, body) = client_channel(Duration::from_millis(20), Some(target.priming_event()));
        let mut body = body.into_data_stream();
        let priming = body.next().await.unwrap().unwrap();
        assert_eq!(&priming[..], b"id: 7-0@r7-0\ndata:\n\n");
        // Nothing sent for the keep-alive interval: a comment line.
        let idle = body.next().await.unwrap().unwrap();
        assert_eq!(idle, keep_alive_comment());
        tx.send(Bytes::from_static(b"data: x\n\n")).await.unwrap();
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"data: x\n\n");
        drop(tx);
        assert!(
            body.next().await.is_none(),
            "the body ends with its senders"
        );
    }

    /// An upstream reply stream that sends the response and then stays open
    /// (as a resumed GET of the TypeScript SDK does).
    fn open_ended_upstream(events: &'static str) -> reqwest::Response {
        let chunks = futures::stream::once(async move { Ok::<_, Infallible>(Bytes::from(events)) })
            .chain(futures::stream::pending());
        let response = axum::http::Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(reqwest::Body::wrap_stream(chunks))
            .unwrap();
        reqwest::Response::from(response)
    }

    fn app() -> Arc<AppState> {
        let settings = crate::config::ProxyConfig::from_toml_str(
            "[proxy]\nupstream = \"http://127.0.0.1:9/mcp\"\n",
            &crate::config::Overrides::default(),
        )
        .unwrap()
        .proxy;
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let store = Arc::new(
            session_store::MemoryStore::new(session_store::StoreSettings::default()).unwrap(),
        );
        Arc::new(AppState::new(store, settings, shutdown).unwrap())
    }

    /// Relays `events` from an upstream that then stays open, on a reply stream
    /// awaiting the response to request 3; returns what the client got.
    async fn relayed_until_request_3_is_answered(events: &'static str) -> Vec<SseEvent> {
        let app = app();
        let mut relay = Relay::new(None, WhenClientLeaves::KeepRecording);
        relay.reconnect = Some(Reconnect {
            headers: HeaderMap::new(),
            awaiting: vec![json!(3)],
        });
        let (tx, mut rx) = mpsc::channel(8);
        // Bounded: a relay that waited for the upstream to close would never end.
        tokio::time::timeout(
            Duration::from_secs(30),
            relay.run(&app, open_ended_upstream(events), &tx),
        )
        .await
        .expect("the relay ended after the last response");
        drop(tx);
        let mut parser = SseParser::new(MAX_EVENT_BYTES);
        let mut relayed = Vec::new();
        while let Some(chunk) = rx.recv().await {
            relayed.extend(parser.push(&chunk).unwrap());
        }
        relayed
    }

    #[tokio::test]
    async fn a_reply_stream_ends_once_every_request_is_answered_even_if_the_upstream_stays_open() {
        let relayed = relayed_until_request_3_is_answered(
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n\
             data: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n",
        )
        .await;
        assert_eq!(relayed.len(), 2, "the notification and the response");
    }

    /// server-everything's event store replays a session's priming events with
    /// data `{}`: no JSON-RPC message, so neither recorded nor sent (the SDKs
    /// fail to parse it).
    #[tokio::test]
    async fn an_upstream_event_whose_data_is_no_json_rpc_message_is_neither_sent_nor_recorded() {
        let relayed = relayed_until_request_3_is_answered(
            "id: prime-1\ndata: {}\n\n\
             id: ev-2\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n",
        )
        .await;
        assert!(
            relayed.iter().all(|event| event.data != "{}"),
            "{relayed:?}"
        );
        assert_eq!(
            relayed.iter().filter(|event| !event.is_empty()).count(),
            1,
            "only the response: {relayed:?}"
        );
        // Sessionless (nothing recorded): the events keep the upstream's ids,
        // the answer too.
        assert_eq!(
            relayed.last().and_then(|event| event.id.as_deref()),
            Some("ev-2")
        );
    }

    /// A resumed upstream GET stream carrying responses (server-everything's
    /// event store replays earlier POST streams' responses into it): neither
    /// sent nor recorded; its requests and notifications are.
    #[tokio::test]
    async fn responses_on_a_get_stream_are_neither_sent_nor_recorded() {
        let app = app();
        let session = app
            .store
            .create(session_store::NewSession::new(
                SessionId::new("s1").unwrap(),
            ))
            .await
            .unwrap()
            .id;
        let target = StreamTarget {
            session: session.clone(),
            stream: StreamId::new_get(),
            cursor: FrameId::new(0, 0),
        };
        // (`KeepRecording`: `app()` drops its shutdown sender, which a relay
        // that stops with the client reads as a shutdown.)
        let relay = Relay::new(Some(target), WhenClientLeaves::KeepRecording);
        let events = "id: up-1\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n\n\
             id: up-2\ndata: [{\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":1,\"message\":\"x\"}}]\n\n\
             id: up-3\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n";
        let upstream = axum::http::Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(reqwest::Body::from(events))
            .unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        tokio::time::timeout(
            Duration::from_secs(30),
            relay.run(&app, reqwest::Response::from(upstream), &tx),
        )
        .await
        .expect("the relay ended with the upstream");
        drop(tx);
        let mut parser = SseParser::new(MAX_EVENT_BYTES);
        let mut relayed = Vec::new();
        while let Some(chunk) = rx.recv().await {
            relayed.extend(parser.push(&chunk).unwrap());
        }
        let sent: Vec<&str> = relayed
            .iter()
            .filter(|event| !event.is_empty())
            .map(|event| event.data.as_str())
            .collect();
        assert_eq!(sent.len(), 1, "only the notification: {relayed:?}");
        assert!(sent[0].contains("notifications/message"), "{sent:?}");
        let recorded = app.store.read_frames(&session, None, 10).await.unwrap();
        assert_eq!(recorded.len(), 1, "only the notification: {recorded:?}");
        assert_eq!(recorded[0].frame.event_id.as_deref(), Some("up-3"));
    }

    /// A recorded reply stream of request 3 in a new session `s1` of `app`.
    async fn reply_relay(app: &AppState) -> Relay {
        let session = SessionId::new("s1").unwrap();
        app.store
            .create(session_store::NewSession::new(session.clone()))
            .await
            .unwrap();
        let request = FrameId::new(1, 0);
        let target = StreamTarget {
            session,
            stream: StreamId::for_request(request),
            cursor: request,
        };
        let mut relay = Relay::new(Some(target), WhenClientLeaves::KeepRecording);
        relay.reconnect = Some(Reconnect {
            headers: HeaderMap::new(),
            awaiting: vec![json!(3)],
        });
        relay
    }

    /// Paused clock: the hold can only end early by the batch arriving, never
    /// by a slow machine.
    #[tokio::test(start_paused = true)]
    async fn a_reply_the_upstream_had_ready_is_in_the_body_after_the_priming_event_from_its_start()
    {
        let app = app();
        let relay = reply_relay(&app).await;
        let body = relay
            .spawn(
                app.clone(),
                open_ended_upstream("data: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n"),
                None,
            )
            .await;
        let mut body = body.into_data_stream();
        let priming = body.next().now_or_never().flatten().unwrap().unwrap();
        assert_eq!(
            &priming[..],
            b"id: 1-0@r1-0\ndata:\n\n",
            "the priming event first"
        );
        let reply = body
            .next()
            .now_or_never()
            .expect("the reply is in the body when it is handed out")
            .unwrap()
            .unwrap();
        let events = SseParser::new(MAX_EVENT_BYTES).push(&reply).unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].data.contains("\"result\""), "{events:?}");
        // The stream is complete: the body ends.
        assert!(body.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_stream_whose_upstream_is_silent_opens_with_its_priming_event_after_the_hold() {
        let app = app();
        let relay = reply_relay(&app).await;
        let body = relay
            .spawn(app.clone(), open_ended_upstream(""), None)
            .await;
        let mut body = body.into_data_stream();
        let priming = body.next().now_or_never().flatten().unwrap().unwrap();
        assert_eq!(&priming[..], b"id: 1-0@r1-0\ndata:\n\n");
        assert!(
            body.next().now_or_never().is_none(),
            "nothing else yet: the upstream has sent nothing"
        );
    }

    #[test]
    fn a_stream_awaiting_no_known_request_is_not_ended_early() {
        let mut relay = Relay::new(None, WhenClientLeaves::KeepRecording);
        relay.reconnect = Some(Reconnect {
            headers: HeaderMap::new(),
            awaiting: Vec::new(),
        });
        assert!(!relay.stream_complete());
        relay.reconnect = None;
        assert!(!relay.stream_complete());
    }
}
