//! What a batch of upstream events becomes: frames recorded in the store and
//! the events sent to the client with the proxy's event ids (or, for the batch
//! that answers a reply stream, sent first and recorded in the background).

use session_store::{Clock, Direction, Frame, FrameId, SystemClock};

use super::{Relay, StreamTarget};
use crate::{
    event_id::StreamKind, jsonrpc, recorder::append_batch, session::complete_initialize,
    sse::SseEvent, state::AppState, upstream_cursor,
};

impl Relay {
    /// Records events that arrived together, in one store round trip where the
    /// store can ([`append_batch`]), and returns them as they are sent to the
    /// client: each message with its own frame id as event id (without one when
    /// it could not be recorded); the upstream's priming events are not sent
    /// (the client already has their id: one priming event per stream, the
    /// proxy's own, 2025-11-25 "Sending Messages to the Server").
    pub(super) async fn record_batch(
        &mut self,
        app: &AppState,
        mut events: Vec<SseEvent>,
    ) -> Vec<SseEvent> {
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
