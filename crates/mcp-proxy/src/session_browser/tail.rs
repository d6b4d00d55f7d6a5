//! The session browser's live tail: an SSE stream of a session's new frames,
//! read from the store (so it shows frames recorded by any instance), and the
//! short-lived tickets that let a browser's `EventSource`, which cannot send an
//! `Authorization` header, open it when `admin_token` is set.
//!
//! A ticket is `<expiry millis>.<base64url HMAC-SHA256>` of the session id and
//! the expiry, keyed with `admin_token`; it is valid for [`TICKET_LIFETIME`] and
//! for one session only. The token itself never appears in a URL.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::HeaderMap,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Json,
};
use base64::Engine;
use futures::Stream;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use session_store::{Clock, FrameId, SessionId, SystemClock};
use sha2::Sha256;

use super::api::{parse_frame_id, TimelineFrame};
use crate::{errors::ProxyError, metrics::Rejection, state::AppState};

/// How long a tail ticket opens the tail.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(60);
/// How often the tail reads the store for new frames.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Most frames one poll reads.
const POLL_FRAMES: usize = 200;
/// How long one tail stream lasts; the browser then reconnects (with
/// `Last-Event-ID`, and a fresh ticket).
const TAIL_LIFETIME: Duration = Duration::from_secs(600);
/// Interval of the keep-alive comments.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `POST /ui/api/sessions/{id}/ticket` (behind `admin_token`): a ticket for the
/// tail of session `id`: `{"ticket": ..., "expires_in_ms": ...}`.
pub async fn ticket(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Json<Value> {
    let expires = SystemClock.now().as_millis() + TICKET_LIFETIME.as_millis() as u64;
    let ticket = app
        .settings
        .admin_token
        .as_ref()
        .map(|token| sign(token.expose(), &id, expires))
        .unwrap_or_default();
    Json(json!({ "ticket": ticket, "expires_in_ms": TICKET_LIFETIME.as_millis() as u64 }))
}

fn mac(token: &str, session: &str, expires: u64) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).ok()?;
    mac.update(b"mcp-proxy session tail\n");
    mac.update(session.as_bytes());
    mac.update(b"\n");
    mac.update(expires.to_string().as_bytes());
    Some(mac)
}

fn sign(token: &str, session: &str, expires: u64) -> String {
    let signature = mac(token, session, expires)
        .map(|mac| mac.finalize().into_bytes().to_vec())
        .unwrap_or_default();
    format!(
        "{expires}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Whether `ticket` opens the tail of `session` at `now` (milliseconds).
fn ticket_valid(token: &str, session: &str, ticket: &str, now: u64) -> bool {
    let Some((expires, signature)) = ticket.split_once('.') else {
        return false;
    };
    let (Ok(expires), Ok(signature)) = (
        expires.parse::<u64>(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature),
    ) else {
        return false;
    };
    // `verify_slice` compares in constant time.
    expires >= now
        && mac(token, session, expires).is_some_and(|mac| mac.verify_slice(&signature).is_ok())
}

/// Query of the tail.
#[derive(Debug, Deserialize)]
pub struct TailQuery {
    /// The ticket from [`ticket`]; needed when `admin_token` is set.
    #[serde(default)]
    ticket: Option<String>,
    /// Start after this frame id (else after `Last-Event-ID`, else at the end).
    #[serde(default)]
    after: Option<String>,
}

/// `GET /ui/api/sessions/{id}/tail?ticket=&after=`: SSE, one `frame` event per
/// new frame (data: the timeline entry as JSON, id: the frame id), an `ended`
/// event when the session is gone (data: `{"after": "<last frame id sent>",
/// "frames_may_be_missing": true}`: frames recorded since the last poll went
/// with the session), keep-alive comments meanwhile. Lasts at most
/// 10 minutes (`TAIL_LIFETIME`) and ends when the proxy shuts down.
pub async fn tail(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<TailQuery>,
    headers: HeaderMap,
) -> Result<Response, ProxyError> {
    if let Some(token) = &app.settings.admin_token {
        let now = SystemClock.now().as_millis();
        let presented = query.ticket.as_deref().unwrap_or_default();
        if !ticket_valid(token.expose(), &id, presented, now) {
            app.metrics.rejected(Rejection::AdminToken);
            return Err(ProxyError::AdminUnauthorized);
        }
    }
    let id = SessionId::new(id).map_err(|_| ProxyError::SessionNotFound)?;
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok());
    let after = match parse_frame_id(query.after.as_deref().or(resume))? {
        Some(after) => after,
        None => {
            // Start at the end: the page already shows what came before.
            app.store.get(&id).await?;
            last_frame_id(&app, &id).await?
        }
    };
    Ok(Sse::new(frames(app, id, after))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// The id of the session's last frame, [`FrameId::ZERO`] when it has none.
async fn last_frame_id(app: &AppState, id: &SessionId) -> Result<FrameId, ProxyError> {
    let mut after = FrameId::ZERO;
    loop {
        let page = app.store.read_frames(id, Some(after), POLL_FRAMES).await?;
        // A page may be short of POLL_FRAMES (bounded by bytes): read on until
        // one is empty.
        match page.last() {
            Some(last) => after = last.id,
            None => return Ok(after),
        }
    }
}

/// The tail's events: polls the store every [`POLL_INTERVAL`].
fn frames(
    app: Arc<AppState>,
    id: SessionId,
    after: FrameId,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    let deadline = tokio::time::Instant::now() + TAIL_LIFETIME;
    let pending: Vec<Event> = Vec::new();
    futures::stream::unfold(
        (app, id, after, pending, false),
        move |(app, id, mut after, mut pending, mut done)| async move {
            loop {
                if let Some(event) = pending.pop() {
                    return Some((Ok(event), (app, id, after, pending, done)));
                }
                if done || *app.shutdown.borrow() || tokio::time::Instant::now() >= deadline {
                    return None;
                }
                match app.store.read_frames(&id, Some(after), POLL_FRAMES).await {
                    Ok(read) if !read.is_empty() => {
                        if let Some(last) = read.last() {
                            after = last.id;
                        }
                        // Popped from the end: keep them in reverse.
                        pending = read.into_iter().rev().map(frame_event).collect();
                    }
                    Ok(_) => {
                        if matches!(
                            app.store.get(&id).await,
                            Err(session_store::Error::NotFound(_))
                        ) {
                            pending.push(ended_event(after));
                            done = true;
                            continue;
                        }
                        tokio::time::sleep(POLL_INTERVAL).await;
                    }
                    Err(session_store::Error::NotFound(_)) => {
                        pending.push(ended_event(after));
                        done = true;
                    }
                    Err(error) => {
                        tracing::debug!(session = %id, %error, "session tail: reading frames failed; retrying");
                        tokio::time::sleep(POLL_INTERVAL).await;
                    }
                }
            }
        },
    )
}

/// The `ended` event: the store removes a session's frames with it, so frames
/// recorded after `after` (the last frame sent) since the last poll may be
/// missing: `{"after": "<frame id>", "frames_may_be_missing": true}`.
fn ended_event(after: FrameId) -> Event {
    Event::default().event("ended").data(
        serde_json::json!({ "after": after.to_string(), "frames_may_be_missing": true })
            .to_string(),
    )
}

fn frame_event(frame: session_store::StoredFrame) -> Event {
    let id = frame.id.to_string();
    let view = TimelineFrame::from(frame);
    Event::default()
        .event("frame")
        .id(id)
        .json_data(&view)
        .unwrap_or_else(|_| Event::default().event("frame").data("{}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_only_its_session_until_it_expires() {
        let ticket = sign("s3cret", "session-a", 2_000);
        assert!(ticket_valid("s3cret", "session-a", &ticket, 1_000));
        assert!(ticket_valid("s3cret", "session-a", &ticket, 2_000));
        assert!(!ticket_valid("s3cret", "session-a", &ticket, 2_001));
        assert!(!ticket_valid("s3cret", "session-b", &ticket, 1_000));
        assert!(!ticket_valid("other", "session-a", &ticket, 1_000));
        let (_, signature) = ticket.split_once('.').unwrap();
        assert!(!ticket_valid(
            "s3cret",
            "session-a",
            &format!("9999999.{signature}"),
            1_000
        ));
        assert!(!ticket_valid("s3cret", "session-a", "", 1_000));
        assert!(!ticket_valid("s3cret", "session-a", "12.%%%", 1_000));
    }
}
