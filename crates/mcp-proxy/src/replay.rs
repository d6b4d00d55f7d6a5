//! SSE resumption from the store: a client reconnects (to any instance) with
//! `Last-Event-ID: <frame_id>@<stream_id>` and receives the events of that stream
//! recorded after that frame, then the rest of the stream live.
//!
//! "Live" depends on the stream. A POST reply stream is being recorded by whichever
//! instance holds its lease (see [`crate::lease`]), so the store is tailed
//! until every request of the POST has its response. When the lease lapses (the
//! recording instance died), this instance takes the stream over: it resumes the
//! upstream stream at the upstream's own id of the last recorded event, relays
//! and records it under the same stream id, and holds the lease. A GET stream
//! continues from a new upstream GET, resumed the same way.
//!
//! A resumption of a reply stream the store can no longer serve (its request
//! frame is gone and no response of it is recorded) is
//! refused with 410 before any event is sent, so the client gives up instead of
//! resuming an empty stream again and again.

use std::{sync::Arc, time::Duration};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use bytes::Bytes;
use serde_json::Value;
use session_store::{
    Direction, Error as StoreError, FrameGap, FrameId, Session, SessionId, SessionStore,
    StoredFrame,
};
use tokio::sync::mpsc;

use crate::{
    errors::ProxyError,
    event_id::{ProxyEventId, StreamId, StreamKind},
    headers::with_upstream_session,
    jsonrpc,
    lease::{self, lease_key, RenewedLease, StreamLease},
    metrics::StreamFailure,
    relay::{
        client_channel, resumed_silence_bound, sse_response, Reconnect, Relay, StreamTarget,
        WhenClientLeaves,
    },
    sse::is_event_stream,
    sse::SseEvent,
    state::AppState,
    upstream::{LAST_EVENT_ID_HEADER, SESSION_ID_HEADER},
    upstream_cursor,
};

/// Frames read per store call while replaying.
const REPLAY_PAGE: usize = 256;

/// How often a POST reply stream still being recorded elsewhere is polled.
const TAIL_POLL: Duration = Duration::from_millis(100);

/// Answers a GET with `Last-Event-ID`; the replay runs in its own task.
/// `forwarded` are the client's headers as the upstream gets them (without a
/// session id), for continuing a GET stream live.
///
/// # Errors
///
/// [`ProxyError::StreamNotResumable`] (410) for a reply stream the store answers
/// it can no longer serve (see `servable`). When the store cannot be read for
/// that check (Redis down, the fallback lacking older frames), the replay is
/// tried as before: the loss of a record is only concluded from an answer.
pub async fn resume(
    app: Arc<AppState>,
    session: Session,
    last: ProxyEventId,
    forwarded: HeaderMap,
) -> Result<axum::response::Response, ProxyError> {
    let servable = servable(app.store.as_ref(), &session.id, &last)
        .await
        .unwrap_or_else(|error| {
            tracing::debug!(session = %session.id, %error, "could not check whether the stream's record is kept; replaying");
            true
        });
    if !servable {
        tracing::warn!(session = %session.id, stream = %last.stream, delivered = %last.frame, "resumption refused with 410: the stream's request frame is not in the store (trimmed, or lost by the store) and no response of it is recorded");
        return Err(ProxyError::StreamNotResumable);
    }
    let priming = StreamTarget {
        session: session.id.clone(),
        stream: last.stream.clone(),
        cursor: last.frame,
    }
    .priming_event();
    let (tx, body) = client_channel(app.settings.sse_keepalive, Some(priming));
    let id = session.id.clone();
    tokio::spawn(async move {
        let mut replay = Replay::new(&last);
        match replay.run(&app, &session, &forwarded, &tx).await {
            Ok(()) | Err(ReplayEnd::ClientLeft) => {}
            Err(ReplayEnd::Store(error)) => {
                tracing::warn!(session = %session.id, %error, "replay ended by a store error; the client may resume again");
            }
        }
    });
    Ok(sse_response(
        StatusCode::OK,
        HeaderMap::new(),
        Some(&id),
        body,
    ))
}

/// Whether a resumption after `last` can be served from the store: always for a
/// GET stream (it continues live); for a reply stream when its request frame is
/// there (it tells which responses end the stream), or, when it is gone, when a
/// response on the stream is still recorded (the replay delivers it, or the
/// client already has it, and the stream ends). Otherwise a replay could only send the priming event and close, and
/// the client would resume again, forever. Reads one frame in the usual case.
async fn servable(
    store: &dyn SessionStore,
    session: &SessionId,
    last: &ProxyEventId,
) -> Result<bool, StoreError> {
    let StreamKind::Request(request) = last.stream.kind() else {
        return Ok(true);
    };
    let first = store
        .read_frames_page(session, frame_before(request), 1)
        .await?;
    if first
        .frames
        .first()
        .is_some_and(|stored| stored.id == request)
    {
        return Ok(true);
    }
    let mut cursor = frame_before(request);
    loop {
        let page = store.read_frames_page(session, cursor, REPLAY_PAGE).await?;
        let Some(newest) = page.frames.last() else {
            return Ok(false);
        };
        cursor = Some(newest.id);
        if page.frames.iter().any(|stored| {
            stored.frame.direction == Direction::ServerToClient
                && stored.frame.stream_id.as_deref() == Some(last.stream.as_str())
                && !jsonrpc::response_ids(&stored.frame.payload).is_empty()
        }) {
            return Ok(true);
        }
    }
}

/// Why a replay stopped early.
#[derive(Debug)]
enum ReplayEnd {
    ClientLeft,
    Store(StoreError),
}

impl From<StoreError> for ReplayEnd {
    fn from(error: StoreError) -> Self {
        ReplayEnd::Store(error)
    }
}

/// The state of one resumption.
#[derive(Debug)]
struct Replay {
    stream: StreamId,
    /// The client has every event of the stream up to this frame.
    delivered: FrameId,
    /// The last frame read from the store (of any stream).
    read_cursor: Option<FrameId>,
    /// The ids of the requests of the POST that opened the stream, once read.
    request_ids: Option<Vec<Value>>,
    /// Responses seen on the stream.
    answered: Vec<Value>,
    /// The upstream's event id of the last event on the stream.
    upstream_event_id: Option<String>,
    /// The frame that carried `upstream_event_id`.
    upstream_event_frame: Option<FrameId>,
}

impl Replay {
    fn new(last: &ProxyEventId) -> Self {
        let first_needed = match last.stream.kind() {
            // Read from the request, to learn which responses end the stream.
            StreamKind::Request(request) => request.min(last.frame),
            // Read the last delivered frame too, for its upstream event id.
            StreamKind::Get | StreamKind::Unrecorded => last.frame,
        };
        Replay {
            stream: last.stream.clone(),
            delivered: last.frame,
            read_cursor: frame_before(first_needed),
            request_ids: None,
            answered: Vec::new(),
            upstream_event_id: None,
            upstream_event_frame: None,
        }
    }

    async fn run(
        &mut self,
        app: &Arc<AppState>,
        session: &Session,
        headers: &HeaderMap,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<(), ReplayEnd> {
        self.catch_up(app, &session.id, tx).await?;
        match self.stream.kind() {
            StreamKind::Request(_) => self.tail_until_answered(app, session, headers, tx).await,
            StreamKind::Get => {
                self.continue_upstream(app, session, headers, tx).await;
                Ok(())
            }
            StreamKind::Unrecorded => Ok(()),
        }
    }

    /// Sends every recorded event of the stream after `delivered`; returns whether
    /// there were any. Pages are bounded by bytes too, so only an empty page
    /// ends the catch-up.
    async fn catch_up(
        &mut self,
        app: &AppState,
        session: &SessionId,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<bool, ReplayEnd> {
        let mut sent_any = false;
        loop {
            let page = app
                .store
                .read_frames_page(session, self.read_cursor, REPLAY_PAGE)
                .await?;
            if let Some(gap) = page.gap {
                self.report_gap(app, session, gap);
            }
            if page.frames.is_empty() {
                return Ok(sent_any);
            }
            for stored in &page.frames {
                self.read_cursor = Some(stored.id);
                sent_any |= self.replay_frame(stored, tx).await?;
            }
        }
    }

    /// Counts and logs frames the store trimmed (or deleted) before this replay
    /// read them, when the client had not received them: its events after
    /// `delivered` up to `last_removed` are lost.
    fn report_gap(&self, app: &AppState, session: &SessionId, gap: FrameGap) {
        if gap.last_removed <= self.delivered {
            return; // only frames the client already had are gone
        }
        app.metrics.replay_gap();
        tracing::warn!(
            session = %session,
            stream = %self.stream,
            delivered = %self.delivered,
            lost_through = %gap.last_removed,
            first_kept = ?gap.first_kept.map(|id| id.to_string()),
            "replay gap: frames after the client's Last-Event-ID were trimmed from the store \
             (max_frames_per_session or max_session_frame_bytes) or deleted; the client missed \
             events up to lost_through"
        );
    }

    async fn replay_frame(
        &mut self,
        stored: &StoredFrame,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<bool, ReplayEnd> {
        let frame = &stored.frame;
        if self.stream.kind() == StreamKind::Request(stored.id)
            && frame.direction == Direction::ClientToServer
        {
            self.request_ids = Some(
                jsonrpc::inspect_client_message(&frame.payload)
                    .map(|message| message.request_ids)
                    .unwrap_or_default(),
            );
            return Ok(false);
        }
        if frame.stream_id.as_deref() != Some(self.stream.as_str())
            || frame.direction != Direction::ServerToClient
        {
            return Ok(false);
        }
        self.answered.extend(jsonrpc::response_ids(&frame.payload));
        if frame.event_id.is_some() {
            self.upstream_event_id = frame.event_id.clone();
            self.upstream_event_frame = Some(stored.id);
        }
        if stored.id <= self.delivered {
            return Ok(false);
        }
        let event = SseEvent {
            id: Some(
                ProxyEventId {
                    frame: stored.id,
                    stream: self.stream.clone(),
                }
                .to_string(),
            ),
            event: None,
            data: String::from_utf8_lossy(&frame.payload).into_owned(),
            retry: None,
        };
        tx.send(event.encode())
            .await
            .map_err(|_| ReplayEnd::ClientLeft)?;
        self.delivered = stored.id;
        Ok(true)
    }

    fn all_answered(&self) -> bool {
        match &self.request_ids {
            // The request is not in the store (trimmed, or never recorded): nothing
            // tells what is still to come, so the recorded events are all there is.
            None => true,
            Some(ids) => ids.iter().all(|id| self.answered.contains(id)),
        }
    }

    /// Tails the store until every request of the stream is answered, taking the
    /// stream over when no instance holds its lease any more.
    async fn tail_until_answered(
        &mut self,
        app: &Arc<AppState>,
        session: &Session,
        headers: &HeaderMap,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<(), ReplayEnd> {
        let mut shutdown = app.shutdown.clone();
        let lease_key = lease_key(&session.id, &self.stream)?;
        while !self.all_answered() {
            tokio::select! {
                () = tokio::time::sleep(TAIL_POLL) => {}
                () = tx.closed() => return Err(ReplayEnd::ClientLeft),
                _ = shutdown.wait_for(|stopping| *stopping) => return Ok(()),
            }
            if self.catch_up(app, &session.id, tx).await?
                || lease::is_held(app.store.as_ref(), &lease_key).await?
            {
                continue;
            }
            let Some(lease) = StreamLease::take_over(app.store.as_ref(), &lease_key).await? else {
                continue; // another instance won the race for it
            };
            // The holder may have finished the stream just before its lease went.
            self.catch_up(app, &session.id, tx).await?;
            let lease = lease.keep_renewed(app.store.clone());
            if self.all_answered() {
                lease.release();
                return Ok(());
            }
            self.take_over(app, session, headers, tx, lease).await;
            return Ok(());
        }
        Ok(())
    }

    /// Continues a POST reply stream whose relaying instance is gone: a GET with
    /// `Last-Event-ID` set to the upstream's id of the last recorded event,
    /// relayed and recorded under the same stream id. When the upstream cannot
    /// resume it, every unanswered request gets a JSON-RPC error response.
    async fn take_over(
        &mut self,
        app: &Arc<AppState>,
        session: &Session,
        headers: &HeaderMap,
        tx: &mpsc::Sender<Bytes>,
        lease: RenewedLease,
    ) {
        app.metrics.stream_takeover();
        // A priming event after the last recorded one is a later resume point.
        if let Some((after, upstream_id)) =
            upstream_cursor::recall(app.store.as_ref(), &session.id, &self.stream).await
        {
            if self.upstream_event_frame.is_none_or(|frame| after >= frame) {
                self.upstream_event_id = Some(upstream_id);
            }
        }
        let forwarded = with_upstream_session(headers, session.upstream_session_id.as_deref());
        let target = StreamTarget {
            session: session.id.clone(),
            stream: self.stream.clone(),
            cursor: self.delivered,
        };
        let mut relay = Relay::new(Some(target), WhenClientLeaves::KeepRecording)
            .continuing(self.answered.clone(), self.upstream_event_id.clone());
        relay.reconnect = Some(Reconnect {
            headers: forwarded.clone(),
            awaiting: self.request_ids.clone().unwrap_or_default(),
        });
        relay.lease = Some(lease);
        relay.first_connection_resumed = true;
        tracing::info!(session = %session.id, stream = %self.stream, upstream_event_id = ?self.upstream_event_id, "no instance holds the stream's lease (its relaying instance stopped renewing it, or the store lost it); taking the stream over");
        let Some(last) = self
            .upstream_event_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        else {
            relay.give_up(app, StreamFailure::NotResumable, tx).await;
            return;
        };
        let mut resume = forwarded;
        resume.insert(LAST_EVENT_ID_HEADER, last);
        match app.upstream.send(Method::GET, resume, None).await {
            Ok(upstream)
                if upstream.status().is_success() && is_event_stream(upstream.headers()) =>
            {
                let bound = resumed_silence_bound(&app.settings);
                tokio::select! {
                    () = relay.run(app, upstream, tx) => {}
                    () = client_gone_for(tx, bound) => {
                        tracing::info!(session = %session.id, stream = %self.stream, ?bound, "client left a taken-over stream and did not come back; stopped relaying it and released its lease (a later resumption takes the stream over again)");
                    }
                }
            }
            Ok(upstream) => {
                tracing::info!(session = %session.id, status = %upstream.status(), "upstream refused to resume a stream being taken over");
                relay.give_up(app, StreamFailure::ResumeRefused, tx).await;
            }
            Err(error) => {
                tracing::info!(session = %session.id, %error, "upstream unreachable for a stream being taken over");
                relay.give_up(app, StreamFailure::ResumeRefused, tx).await;
            }
        }
    }

    /// Continues a GET stream from a new upstream GET, asking the upstream to resume
    /// after the last event recorded (when it gave event ids).
    async fn continue_upstream(
        &self,
        app: &Arc<AppState>,
        session: &Session,
        headers: &HeaderMap,
        tx: &mpsc::Sender<Bytes>,
    ) {
        let mut forwarded = headers.clone();
        if let Some(id) = session
            .upstream_session_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            forwarded.insert(SESSION_ID_HEADER, id);
        }
        if let Some(value) = self
            .upstream_event_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            forwarded.insert(LAST_EVENT_ID_HEADER, value);
        }
        let upstream = match app.upstream.send(Method::GET, forwarded, None).await {
            Ok(upstream)
                if upstream.status().is_success() && is_event_stream(upstream.headers()) =>
            {
                upstream
            }
            Ok(upstream) => {
                tracing::info!(session = %session.id, status = %upstream.status(), "replayed GET stream not continued by the upstream");
                return;
            }
            Err(error) => {
                tracing::info!(session = %session.id, %error, "replayed GET stream not continued");
                return;
            }
        };
        let target = StreamTarget {
            session: session.id.clone(),
            stream: self.stream.clone(),
            cursor: self.delivered,
        };
        let relay = Relay::new(Some(target), WhenClientLeaves::Stop);
        relay.run(app, upstream, tx).await;
    }
}

/// Resolves `bound` after the client of `tx` has gone: a takeover relay records
/// for a client that may resume, not for nobody forever (a client that resumes
/// later gets the stream taken over again).
async fn client_gone_for(tx: &mpsc::Sender<Bytes>, bound: Duration) {
    tx.closed().await;
    tokio::time::sleep(bound).await;
}

/// The largest frame id below `id`, so reading "after" it starts at `id`; `None`
/// (read from the start) for the smallest ids.
fn frame_before(id: FrameId) -> Option<FrameId> {
    if id.seq > 0 {
        Some(FrameId::new(id.millis, id.seq - 1))
    } else if id.millis > 0 {
        Some(FrameId::new(id.millis - 1, u64::MAX))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_before_reads_from_the_given_frame() {
        assert_eq!(frame_before(FrameId::new(5, 2)), Some(FrameId::new(5, 1)));
        assert_eq!(
            frame_before(FrameId::new(5, 0)),
            Some(FrameId::new(4, u64::MAX))
        );
        assert_eq!(frame_before(FrameId::ZERO), None);
    }
}
