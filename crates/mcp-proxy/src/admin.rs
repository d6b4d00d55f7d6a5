//! The proxy's own endpoints: `/healthz` (on both listeners), and on the admin
//! listener only (`admin_listen`, behind `admin_token`) `/metrics`, the read-only
//! `/sessions` listing and `/sessions/{id}` with its recorded frames.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Path, Query, Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use session_store::{BreakerState, Cursor, Direction, FrameId, Session, SessionId, StoredFrame};

use crate::{errors::ProxyError, metrics::Rejection, session_query::next_after, state::AppState};

/// The store reading that holds the fallback breaker's state as a number
/// ([`BreakerState::as_gauge`]).
const BREAKER_STATE_READING: &str = "session_store_breaker_state";
/// Default page size of the `/sessions` endpoints.
const DEFAULT_PAGE: usize = 100;
/// Largest page of frames `/sessions/{id}` returns.
const MAX_FRAME_PAGE: usize = 1_000;

/// Middleware of the admin listener: with `admin_token` set, every request must
/// carry `Authorization: Bearer <admin_token>` (compared in constant time), else
/// 401.
pub async fn require_admin_token(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &app.settings.admin_token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let allowed = presented.is_some_and(|presented| {
        use subtle::ConstantTimeEq;
        bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes()))
    });
    if !allowed {
        app.metrics.rejected(Rejection::AdminToken);
        return ProxyError::AdminUnauthorized.into_response();
    }
    next.run(request).await
}

/// `GET /healthz`: 200 when the store answers, 503 when it does not. While the
/// store serves from its fallback journal (Redis unreachable or being written
/// back to) it is still 200, with status `degraded` and the store's readings
/// (breaker state, journal bytes, ...) under `store`; with the fallback,
/// `breaker` names the breaker's state (`closed`, `half_open`, `open`). The body names no address
/// (it is served on the MCP listener too): the store's `detail` is logged at
/// debug level only.
pub async fn healthz(State(app): State<Arc<AppState>>) -> Response {
    match app.store.health().await {
        Ok(health) => {
            tracing::debug!(detail = ?health.detail, "health check");
            let readings: serde_json::Map<String, Value> = health
                .readings
                .iter()
                .map(|(name, value)| ((*name).to_owned(), json!(value)))
                .collect();
            let mut body = json!({
                "status": if health.degraded { "degraded" } else { "ok" },
                "backend": health.backend,
                "latency_ms": milliseconds(health.latency),
                "store": readings,
            });
            if let Some(state) = breaker_state(&health.readings) {
                body["breaker"] = json!(state.as_str());
            }
            Json(body).into_response()
        }
        Err(error) => {
            // The store's error names its address: the log gets it, the client
            // not. Debug: the store logs the outage once (when it stops
            // answering and when it answers again), not once per health check.
            tracing::debug!(%error, "health check: the session store is unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "error": "session store unavailable" })),
            )
                .into_response()
        }
    }
}

/// The fallback breaker's state (`closed`, `half_open`, `open`) from the
/// `session_store_breaker_state` reading, when the store has a breaker.
fn breaker_state(readings: &[(&'static str, f64)]) -> Option<BreakerState> {
    readings
        .iter()
        .find(|(name, _)| *name == BREAKER_STATE_READING)
        .and_then(|(_, value)| BreakerState::from_gauge(*value))
}

/// `duration` in milliseconds rounded to the nearest microsecond (3 decimals), so
/// JSON carries `0.822`, not the float noise of `0.8217640000000001`.
pub fn milliseconds(duration: Duration) -> f64 {
    let micros = duration.as_nanos().saturating_add(500) / 1000;
    let micros = u32::try_from(micros).unwrap_or(u32::MAX);
    f64::from(micros) / 1000.0
}

/// `GET /metrics`: the OpenMetrics text format (which Prometheus scrapes),
/// including the store's own readings (the fallback breaker and journal, see
/// docs/operations.md).
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let active = app.store.count().await.ok();
    let readings = match app.store.health().await {
        Ok(health) => health.readings,
        // Unreachable: the readings the store holds itself, so the series
        // (pool, near cache) continue through the outage.
        Err(_) => app.store.readings(),
    };
    let out = app.metrics.render_with_readings(active, &readings);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], out).into_response()
}

/// Paging parameters of `/sessions`.
#[derive(Debug, Deserialize)]
pub struct ListParams {
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `GET /sessions?cursor=&limit=`: a page of live sessions.
pub async fn list_sessions(
    State(app): State<Arc<AppState>>,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ProxyError> {
    let cursor = params.cursor.map(Cursor::new);
    let page = app
        .store
        .list(cursor.as_ref(), params.limit.unwrap_or(DEFAULT_PAGE))
        .await?;
    Ok(Json(json!({
        "sessions": page.items,
        "next_cursor": page.next_cursor.map(|cursor| cursor.as_str().to_owned()),
    })))
}

/// Paging parameters of `/sessions/{id}`.
#[derive(Debug, Deserialize)]
pub struct FrameParams {
    after: Option<String>,
    limit: Option<usize>,
}

/// One frame as the admin endpoint shows it: payload as text.
#[derive(Debug, Serialize)]
struct FrameView {
    id: String,
    direction: Direction,
    timestamp: u64,
    stream_id: Option<String>,
    event_id: Option<String>,
    /// The frame's recorded headers (e.g. `mcp-proxy-bridge-form`), when any.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    headers: std::collections::BTreeMap<String, String>,
    payload: String,
}

impl From<StoredFrame> for FrameView {
    fn from(stored: StoredFrame) -> Self {
        FrameView {
            id: stored.id.to_string(),
            direction: stored.frame.direction,
            timestamp: stored.frame.timestamp.as_millis(),
            stream_id: stored.frame.stream_id,
            event_id: stored.frame.event_id,
            headers: stored.frame.headers,
            payload: String::from_utf8_lossy(&stored.frame.payload).into_owned(),
        }
    }
}

/// `GET /sessions/{id}?after=&limit=`: the session and a page of its frames.
pub async fn show_session(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(params): Query<FrameParams>,
) -> Result<Json<Value>, ProxyError> {
    let id = SessionId::new(id).map_err(|_| ProxyError::SessionNotFound)?;
    let after = params
        .after
        .map(|after| after.parse::<FrameId>())
        .transpose()
        .map_err(|error| ProxyError::BadRequest(error.to_string()))?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE).min(MAX_FRAME_PAGE);
    let session: Session = app.store.get(&id).await?;
    let frames = app.store.read_frames(&id, after, limit).await?;
    let next_after = next_after(app.store.as_ref(), &id, &frames, limit)
        .await?
        .map(|id| id.to_string());
    let frames: Vec<FrameView> = frames.into_iter().map(FrameView::from).collect();
    Ok(Json(json!({
        "session": session,
        "frames": frames,
        "next_after": next_after,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_whole_microseconds_in_milliseconds() {
        for (nanos, text) in [
            (821_764_123, "821.764"),
            (1_234_567, "1.235"),
            (300_000, "0.3"),
            (999, "0.001"),
            (0, "0.0"),
        ] {
            let json = serde_json::json!(milliseconds(Duration::from_nanos(nanos))).to_string();
            assert_eq!(json, text, "{nanos} ns");
        }
    }
}
