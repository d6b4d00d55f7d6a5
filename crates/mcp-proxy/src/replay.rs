//! SSE resumption from the store: a client reconnects (to any instance) with
//! `Last-Event-ID: <frame_id>@<stream_id>` and receives the events of that stream
//! recorded after that frame, then the rest of the stream live.
//!
//! "Live" depends on the stream. A POST reply stream is being recorded by whichever
//! instance forwarded the POST, so the store is tailed until every request of the
//! POST has its response (or nothing arrives for `upstream_timeout`). A GET stream
//! continues from a new upstream GET, resumed at the upstream's own event id of
//! the last recorded event, recorded under the same stream id.

use std::{sync::Arc, time::Duration};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use bytes::Bytes;
use serde_json::Value;
use session_store::{Direction, Error as StoreError, FrameId, Session, SessionId, StoredFrame};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    app::AppState,
    event_id::{ProxyEventId, StreamId, StreamKind},
    get_stream::{accept_stream, is_event_stream},
    jsonrpc,
    relay::{client_channel, sse_response, Relay, StreamTarget, WhenClientLeaves},
    sse::SseEvent,
    upstream::{LAST_EVENT_ID_HEADER, SESSION_ID_HEADER},
};

/// Frames read per store call while replaying.
const REPLAY_PAGE: usize = 256;

/// How often a POST reply stream still being recorded elsewhere is polled.
const TAIL_POLL: Duration = Duration::from_millis(100);

/// Answers a GET with `Last-Event-ID` at once; the replay runs in its own task.
/// `forwarded` are the client's headers as the upstream gets them (without a
/// session id), for continuing a GET stream live.
pub fn resume(
    app: Arc<AppState>,
    session: Session,
    last: ProxyEventId,
    forwarded: HeaderMap,
) -> axum::response::Response {
    let (tx, body) = client_channel();
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
    sse_response(StatusCode::OK, HeaderMap::new(), Some(&id), body)
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
            StreamKind::Request(_) => self.tail_until_answered(app, &session.id, tx).await,
            StreamKind::Get => {
                self.continue_upstream(app, session, headers, tx).await;
                Ok(())
            }
            StreamKind::Unrecorded => Ok(()),
        }
    }

    /// Sends every recorded event of the stream after `delivered`; returns whether
    /// there were any.
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
                .read_frames(session, self.read_cursor, REPLAY_PAGE)
                .await?;
            for stored in &page {
                self.read_cursor = Some(stored.id);
                sent_any |= self.replay_frame(stored, tx).await?;
            }
            if page.len() < REPLAY_PAGE {
                return Ok(sent_any);
            }
        }
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
        self.upstream_event_id = frame.event_id.clone();
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

    async fn tail_until_answered(
        &mut self,
        app: &AppState,
        session: &SessionId,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<(), ReplayEnd> {
        let mut shutdown = app.shutdown.clone();
        let mut last_progress = Instant::now();
        while !self.all_answered() {
            if last_progress.elapsed() > app.settings.upstream_timeout {
                tracing::info!(session = %session, stream = %self.stream, "resumed stream idle for upstream_timeout; closing it");
                return Ok(());
            }
            tokio::select! {
                () = tokio::time::sleep(TAIL_POLL) => {}
                () = tx.closed() => return Err(ReplayEnd::ClientLeft),
                _ = shutdown.wait_for(|stopping| *stopping) => return Ok(()),
            }
            if self.catch_up(app, session, tx).await? {
                last_progress = Instant::now();
            }
        }
        Ok(())
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
            Ok(upstream) => upstream,
            Err(error) => {
                tracing::info!(session = %session.id, %error, "replayed GET stream not continued");
                return;
            }
        };
        let upstream = match accept_stream(app, Some(&session.id), upstream).await {
            Ok(Some(upstream))
                if upstream.status().is_success() && is_event_stream(upstream.headers()) =>
            {
                upstream
            }
            _ => return,
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
