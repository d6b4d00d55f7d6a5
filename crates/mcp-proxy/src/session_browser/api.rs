//! The JSON the session browser calls: a filtered page of session summaries, a
//! session with a page of its frames as timeline entries, and the operator's
//! end and revoke actions.

use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    Json,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use session_store::{Cursor, Direction, FrameId, Session, SessionId, StoredFrame};

use crate::{
    binding::BINDING_TAG, bridge::record::FORM_HEADER, delete, errors::ProxyError,
    session_query::next_after, state::AppState,
};

/// Default number of sessions in a page of the list.
const DEFAULT_PAGE: usize = 50;
/// Largest page of sessions (and of frames) one call returns.
const MAX_PAGE: usize = 500;
/// Most sessions one filtered list call reads from the store before it answers
/// with what it found and a cursor to go on from, so a filter that matches
/// little cannot make one request scan a whole fleet's store.
const MAX_SCANNED: usize = 5_000;
/// Most sessions one revoke ends (the rest need another click).
const MAX_REVOKED: usize = 10_000;

/// Query of `GET /ui/api/sessions`.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Case-insensitive text found in the session id, client name or version,
    /// upstream server name or upstream session id.
    #[serde(default)]
    q: Option<String>,
    /// Exact status (`initializing`, `active`, `closed`).
    #[serde(default)]
    status: Option<String>,
    /// Exact negotiated protocol revision (e.g. `2025-06-18`).
    #[serde(default)]
    protocol: Option<String>,
    /// Where the previous page ended (`next_cursor`).
    #[serde(default)]
    cursor: Option<String>,
    /// Page size (default 50, at most 500).
    #[serde(default)]
    limit: Option<usize>,
}

impl ListQuery {
    fn matches(&self, summary: &SessionSummary) -> bool {
        let text = self
            .q
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_lowercase);
        let text_matches = text.is_none_or(|q| {
            [
                Some(summary.id.as_str()),
                summary.client_name.as_deref(),
                summary.client_version.as_deref(),
                summary.upstream.as_deref(),
                summary.upstream_session_id.as_deref(),
            ]
            .into_iter()
            .flatten()
            .any(|field| field.to_lowercase().contains(&q))
        });
        let status_matches = non_empty(&self.status).is_none_or(|status| summary.status == status);
        let protocol_matches = non_empty(&self.protocol)
            .is_none_or(|protocol| summary.protocol_version.as_deref() == Some(protocol));
        text_matches && status_matches && protocol_matches
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// One row of the session list.
#[derive(Debug, Serialize)]
pub struct SessionSummary {
    id: String,
    /// `clientInfo.name` of the client's `initialize`.
    client_name: Option<String>,
    /// `clientInfo.version`.
    client_version: Option<String>,
    /// `serverInfo.name` of the upstream's `initialize` result.
    upstream: Option<String>,
    upstream_session_id: Option<String>,
    protocol_version: Option<String>,
    status: String,
    /// Milliseconds since the Unix epoch.
    created_at: u64,
    last_activity: u64,
    expires_at: u64,
    frame_count: u64,
    /// Whether the session is bound to a principal (`binding` tag): revoke ends
    /// every session of that principal.
    bound: bool,
}

impl From<&Session> for SessionSummary {
    fn from(session: &Session) -> Self {
        let text = |info: &Option<Value>, object: &str, field: &str| {
            info.as_ref()
                .and_then(|info| info[object][field].as_str())
                .map(str::to_owned)
        };
        SessionSummary {
            id: session.id.as_str().to_owned(),
            client_name: text(&session.client_info, "clientInfo", "name"),
            client_version: text(&session.client_info, "clientInfo", "version"),
            upstream: text(&session.server_info, "serverInfo", "name"),
            upstream_session_id: session.upstream_session_id.clone(),
            protocol_version: session.protocol_version.clone(),
            status: serde_json::to_value(session.status)
                .ok()
                .and_then(|status| status.as_str().map(str::to_owned))
                .unwrap_or_else(|| "unknown".to_owned()),
            created_at: session.created_at.as_millis(),
            last_activity: session.last_activity.as_millis(),
            expires_at: session.expires_at.as_millis(),
            frame_count: session.frame_count,
            bound: session.tags.contains_key(BINDING_TAG),
        }
    }
}

/// `GET /ui/api/sessions?q=&status=&protocol=&cursor=&limit=`: the sessions
/// matching the filter, in the store's order, with `next_cursor` when more may
/// follow (also when the scan stopped after 5,000 sessions, `MAX_SCANNED`).
pub async fn list(
    State(app): State<Arc<AppState>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ProxyError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let mut cursor = query.cursor.clone().map(Cursor::new);
    let mut sessions = Vec::new();
    let mut scanned = 0;
    loop {
        // Never read more than still fits, so the cursor returned is exact.
        let page = app
            .store
            .list(cursor.as_ref(), limit - sessions.len())
            .await?;
        scanned += page.items.len();
        sessions.extend(
            page.items
                .iter()
                .map(SessionSummary::from)
                .filter(|summary| query.matches(summary)),
        );
        cursor = page.next_cursor;
        if cursor.is_none() || sessions.len() >= limit || scanned >= MAX_SCANNED {
            break;
        }
    }
    Ok(Json(json!({
        "sessions": sessions,
        "next_cursor": cursor.map(|cursor| cursor.as_str().to_owned()),
        "scanned": scanned,
        "now": session_store::Clock::now(&session_store::SystemClock).as_millis(),
    })))
}

/// Query of `GET /ui/api/sessions/{id}`.
#[derive(Debug, Default, Deserialize)]
pub struct FramesQuery {
    /// Frames after this frame id (`next_after` of the previous page).
    #[serde(default)]
    after: Option<String>,
    /// Page size (default 500, at most 500).
    #[serde(default)]
    limit: Option<usize>,
}

/// What kind of JSON-RPC message a frame holds.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum MessageKind {
    Request,
    Notification,
    Response,
    Error,
    Batch,
    /// Not a JSON-RPC message (not JSON, or an object without method or result).
    Other,
}

/// One frame as a timeline entry.
#[derive(Debug, Serialize)]
pub struct TimelineFrame {
    /// The frame id (`<millis>-<seq>`).
    pub id: String,
    direction: Direction,
    /// Milliseconds since the Unix epoch.
    timestamp: u64,
    stream_id: Option<String>,
    event_id: Option<String>,
    kind: MessageKind,
    /// The request or notification method.
    method: Option<String>,
    /// The JSON-RPC id, as JSON text.
    rpc_id: Option<String>,
    /// Payload size in bytes.
    size: usize,
    /// The payload as text (invalid UTF-8 replaced); the page escapes it.
    payload: String,
    /// For a frame the bridge recorded in the upstream's form (its
    /// `mcp-proxy-bridge-form` header, docs/bridge.md): that form, e.g.
    /// `upstream`; the page marks the frame as a translation.
    #[serde(skip_serializing_if = "Option::is_none")]
    bridge_form: Option<String>,
}

impl From<StoredFrame> for TimelineFrame {
    fn from(stored: StoredFrame) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(&stored.frame.payload).ok();
        let (kind, method, rpc_id) = match &parsed {
            Some(Value::Array(_)) => (MessageKind::Batch, None, None),
            Some(message @ Value::Object(_)) => {
                let method = message["method"].as_str().map(str::to_owned);
                let rpc_id = message.get("id").map(Value::to_string);
                let kind = match (&method, &rpc_id) {
                    (Some(_), Some(_)) => MessageKind::Request,
                    (Some(_), None) => MessageKind::Notification,
                    (None, _) if message.get("error").is_some() => MessageKind::Error,
                    (None, _) if message.get("result").is_some() => MessageKind::Response,
                    (None, _) => MessageKind::Other,
                };
                (kind, method, rpc_id)
            }
            _ => (MessageKind::Other, None, None),
        };
        TimelineFrame {
            id: stored.id.to_string(),
            direction: stored.frame.direction,
            timestamp: stored.frame.timestamp.as_millis(),
            stream_id: stored.frame.stream_id,
            event_id: stored.frame.event_id,
            kind,
            method,
            rpc_id,
            size: stored.frame.payload.len(),
            payload: String::from_utf8_lossy(&stored.frame.payload).into_owned(),
            bridge_form: stored.frame.headers.get(FORM_HEADER).cloned(),
        }
    }
}

/// `GET /ui/api/sessions/{id}?after=&limit=`: the session's summary and a page
/// of its frames in append order, `next_after` when more follow.
pub async fn show(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<FramesQuery>,
) -> Result<Json<Value>, ProxyError> {
    let id = SessionId::new(id).map_err(|_| ProxyError::SessionNotFound)?;
    let after = parse_frame_id(query.after.as_deref())?;
    let limit = query.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let session = app.store.get(&id).await?;
    let frames = app.store.read_frames(&id, after, limit).await?;
    let next_after = next_after(app.store.as_ref(), &id, &frames, limit)
        .await?
        .map(|id| id.to_string());
    let frames: Vec<TimelineFrame> = frames.into_iter().map(TimelineFrame::from).collect();
    Ok(Json(json!({
        "session": SessionSummary::from(&session),
        "frames": frames,
        "next_after": next_after,
        "now": session_store::Clock::now(&session_store::SystemClock).as_millis(),
    })))
}

/// A frame id from a query, `None` when absent; 400 naming the parameter when
/// malformed.
pub(super) fn parse_frame_id(text: Option<&str>) -> Result<Option<FrameId>, ProxyError> {
    text.filter(|text| !text.is_empty())
        .map(str::parse::<FrameId>)
        .transpose()
        .map_err(|error| ProxyError::BadRequest(format!("after: {error}")))
}

/// `DELETE /ui/api/sessions/{id}`: ends the session as its client's DELETE
/// would (the upstream session too, see [`delete::end_for_operator`]).
pub async fn end(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ProxyError> {
    let id = SessionId::new(id).map_err(|_| ProxyError::SessionNotFound)?;
    let session = app.store.get(&id).await?;
    delete::end_for_operator(&app, &session).await?;
    Ok(Json(json!({ "ended": [session.id.as_str()] })))
}

/// `POST /ui/api/sessions/{id}/revoke`: ends every session bound to the same
/// principal as this one (its `binding` tag), on every instance (they share
/// the store), at most 10,000 (`MAX_REVOKED`) per call. A session without a binding
/// is ended alone.
pub async fn revoke(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ProxyError> {
    let id = SessionId::new(id).map_err(|_| ProxyError::SessionNotFound)?;
    let session = app.store.get(&id).await?;
    let Some(binding) = session.tags.get(BINDING_TAG).cloned() else {
        delete::end_for_operator(&app, &session).await?;
        return Ok(Json(json!({ "ended": [session.id.as_str()] })));
    };
    let mut ended = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = app.store.list(cursor.as_ref(), MAX_PAGE).await?;
        for other in &page.items {
            if other.tags.get(BINDING_TAG) == Some(&binding) && ended.len() < MAX_REVOKED {
                delete::end_for_operator(&app, other).await?;
                ended.push(other.id.as_str().to_owned());
            }
        }
        cursor = page.next_cursor;
        if cursor.is_none() || ended.len() >= MAX_REVOKED {
            break;
        }
    }
    tracing::info!(
        sessions = ended.len(),
        "operator revoked a principal's sessions"
    );
    Ok(Json(json!({ "ended": ended })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_store::{Frame, Timestamp};

    fn stored(payload: &str) -> StoredFrame {
        StoredFrame {
            id: FrameId::new(5, 1),
            frame: Frame::new(
                Direction::ClientToServer,
                Timestamp::from_millis(5),
                payload.as_bytes(),
            ),
        }
    }

    #[test]
    fn timeline_frames_name_their_kind_and_method() {
        let request = TimelineFrame::from(stored(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}"#,
        ));
        assert_eq!(request.kind, MessageKind::Request);
        assert_eq!(request.method.as_deref(), Some("tools/call"));
        assert_eq!(request.rpc_id.as_deref(), Some("7"));
        assert_eq!(request.id, "5-1");
        let note = TimelineFrame::from(stored(
            r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#,
        ));
        assert_eq!(note.kind, MessageKind::Notification);
        let error = TimelineFrame::from(stored(r#"{"jsonrpc":"2.0","id":"a","error":{}}"#));
        assert_eq!(error.kind, MessageKind::Error);
        assert_eq!(error.rpc_id.as_deref(), Some("\"a\""));
        let result = TimelineFrame::from(stored(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#));
        assert_eq!(result.kind, MessageKind::Response);
        assert_eq!(TimelineFrame::from(stored("[]")).kind, MessageKind::Batch);
        assert_eq!(request.bridge_form, None);
        let mut translated =
            stored(r#"{"jsonrpc":"2.0","id":"mcp-proxy:1:2","method":"tools/call"}"#);
        translated
            .frame
            .headers
            .insert(FORM_HEADER.to_owned(), "upstream".to_owned());
        assert_eq!(
            TimelineFrame::from(translated).bridge_form.as_deref(),
            Some("upstream")
        );
        let junk = TimelineFrame::from(stored("<html>"));
        assert_eq!((junk.kind, junk.size), (MessageKind::Other, 6));
    }

    #[test]
    fn the_list_filter_matches_text_status_and_protocol() {
        let summary = SessionSummary {
            id: "abc".into(),
            client_name: Some("Claude Desktop".into()),
            client_version: None,
            upstream: Some("demo".into()),
            upstream_session_id: None,
            protocol_version: Some("2025-06-18".into()),
            status: "active".into(),
            created_at: 0,
            last_activity: 0,
            expires_at: 0,
            frame_count: 0,
            bound: false,
        };
        let query = |q: &str, status: &str, protocol: &str| ListQuery {
            q: Some(q.into()),
            status: Some(status.into()),
            protocol: Some(protocol.into()),
            ..ListQuery::default()
        };
        assert!(query("claude", "", "").matches(&summary));
        assert!(query(" DEMO ", "active", "2025-06-18").matches(&summary));
        assert!(!query("cursor", "", "").matches(&summary));
        assert!(!query("", "closed", "").matches(&summary));
        assert!(!query("", "", "2025-03-26").matches(&summary));
        assert!(ListQuery::default().matches(&summary));
    }
}
