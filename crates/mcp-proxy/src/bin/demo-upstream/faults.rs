//! Faults the demo upstream can play, for the proxy's end-to-end tests: how it
//! answers a session it does not know, closing reply streams early
//! (2025-11-25, SEP-1699) so its client must come back with `Last-Event-ID`, and
//! resumed streams that replay and then go silent.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, Method, StatusCode},
    middleware::Next,
    response::Response,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use mcp_proxy::sse::{SseEvent, SseParser};

/// How long a resumed stream passes on what the event store replays (it replays
/// what it holds at once) before it goes silent.
const REPLAY_WINDOW: Duration = Duration::from_secs(1);

/// Largest SSE event the cutter parses.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The faults this process plays.
#[derive(Debug)]
pub struct Faults {
    /// The status answered for an unknown `Mcp-Session-Id` (rmcp answers 404; a
    /// widely used reference server answers 400).
    pub lost_session_status: StatusCode,
    /// Reply streams still to be closed early.
    closes_left: AtomicU32,
    /// The `retry` (ms) sent before closing a stream early.
    close_retry_ms: u64,
    /// Resumed streams replay, then send nothing more.
    resume_goes_silent: bool,
    /// Whether a stream was resumed already (later resumes replay nothing).
    resumed_once: AtomicBool,
}

impl Faults {
    /// `closes` early closes, each announced with `retry: <close_retry_ms>`;
    /// with `resume_goes_silent`, resumed streams go silent after their replay.
    pub fn new(
        lost_session_status: StatusCode,
        closes: u32,
        close_retry_ms: u64,
        resume_goes_silent: bool,
    ) -> Self {
        Faults {
            lost_session_status,
            closes_left: AtomicU32::new(closes),
            close_retry_ms,
            resume_goes_silent,
            resumed_once: AtomicBool::new(false),
        }
    }

    /// Uses up one early close, when any is left.
    fn take_close(&self) -> bool {
        self.closes_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }
}

/// Answers an unknown session with the configured status instead of rmcp's 404.
pub async fn lost_session_status(
    State(faults): State<Arc<Faults>>,
    request: Request,
    next: Next,
) -> Response {
    let had_session = request.headers().contains_key("mcp-session-id");
    let mut response = next.run(request).await;
    if had_session && response.status() == StatusCode::NOT_FOUND {
        *response.status_mut() = faults.lost_session_status;
    }
    response
}

/// Plays an upstream whose resumed stream (a GET with `Last-Event-ID`) replays
/// the stored events and then never delivers another byte, live events, comments
/// and the response included, while the connection stays open: what
/// `@modelcontextprotocol/server-everything` does after a resume. Only the
/// process's first resume replays; later ones (the proxy resuming the silent
/// stream again) deliver nothing at all.
pub async fn resume_goes_silent(
    State(faults): State<Arc<Faults>>,
    request: Request,
    next: Next,
) -> Response {
    let resumed = faults.resume_goes_silent
        && request.method() == Method::GET
        && request.headers().contains_key("last-event-id");
    let response = next.run(request).await;
    if !resumed || !is_sse(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let first = !faults.resumed_once.swap(true, Ordering::SeqCst);
    let window = if first { REPLAY_WINDOW } else { Duration::ZERO };
    let silent_from = tokio::time::Instant::now() + window;
    let replay_only = body
        .into_data_stream()
        .filter(move |_| std::future::ready(tokio::time::Instant::now() < silent_from))
        .chain(futures::stream::pending());
    Response::from_parts(parts, Body::from_stream(replay_only))
}

fn is_sse(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"))
}

/// Closes an SSE reply right after a progress notification, with a `retry`, while
/// early closes are left: the request goes on, and its client resumes the
/// stream with `Last-Event-ID`.
pub async fn close_streams_early(
    State(faults): State<Arc<Faults>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if !is_sse(&response) || faults.closes_left.load(Ordering::SeqCst) == 0 {
        return response;
    }
    let (parts, body) = response.into_parts();
    let events = cut_after_progress(body.into_data_stream(), faults);
    Response::from_parts(parts, Body::from_stream(events))
}

struct Cutter<S> {
    inner: S,
    parser: SseParser,
    faults: Arc<Faults>,
    closed: bool,
}

fn cut_after_progress<S>(
    inner: S,
    faults: Arc<Faults>,
) -> impl Stream<Item = Result<Bytes, axum::Error>> + Send
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Send + Unpin + 'static,
{
    let cutter = Cutter {
        inner,
        parser: SseParser::new(MAX_EVENT_BYTES),
        faults,
        closed: false,
    };
    futures::stream::unfold(cutter, |mut cutter| async move {
        if cutter.closed {
            return None;
        }
        let chunk = match cutter.inner.next().await? {
            Ok(chunk) => chunk,
            Err(error) => return Some((Err(error), cutter)),
        };
        let Ok(events) = cutter.parser.push(&chunk) else {
            return None;
        };
        let mut out = Vec::new();
        for event in events {
            out.extend_from_slice(&event.encode());
            let progress = event.id.is_some() && event.data.contains("notifications/progress");
            if progress && cutter.faults.take_close() {
                let retry = SseEvent {
                    retry: Some(cutter.faults.close_retry_ms),
                    ..SseEvent::default()
                };
                out.extend_from_slice(&retry.encode());
                cutter.closed = true;
                break;
            }
        }
        Some((Ok(Bytes::from(out)), cutter))
    })
}
