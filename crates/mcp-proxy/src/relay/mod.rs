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

mod client;
mod record;
#[cfg(test)]
mod tests;

use std::time::Duration;

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, Method},
};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use session_store::{FrameId, SessionId};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    event_id::{ProxyEventId, StreamId},
    lease::{PendingLease, RenewedLease},
    metrics::StreamFailure,
    sse::is_event_stream,
    sse::{encode_all, take_ready_events, BatchEnd, SseEvent, SseParser},
    state::AppState,
    upstream::LAST_EVENT_ID_HEADER,
};

use client::client_body;
pub use client::{client_channel, sse_response};

/// Largest SSE event accepted from the upstream.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Wait before polling a closed reply stream when the upstream gave no `retry`.
const DEFAULT_RECONNECT_MILLIS: u64 = 1_000;

/// How long a resumed upstream connection (a GET with `Last-Event-ID`) may bring
/// no event at all before it is treated as closed and resumed again (see
/// [`resumed_silence_bound`]). A resume costs the upstream one GET, so the
/// bound is short: server-everything's resumed stream goes quiet after its
/// replay, and a client whose stream was taken over waits for the next
/// re-resume (at 30 s a trial's takeover ended 36 s after the SIGKILL).
pub const RESUMED_SILENCE: Duration = Duration::from_secs(10);

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
        // Checked after every batch: no copy of the unanswered ids.
        self.reconnect.as_ref().is_some_and(|reconnect| {
            !reconnect.awaiting.is_empty()
                && reconnect
                    .awaiting
                    .iter()
                    .all(|id| self.answered.contains(id))
        })
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
