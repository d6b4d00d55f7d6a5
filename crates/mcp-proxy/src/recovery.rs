//! Upstream session recovery: when the upstream has lost a session (it restarted,
//! or expired it), the proxy re-creates the upstream side from what it recorded,
//! so the client's session carries on without a new `initialize`.
//!
//! Loss is a 404 to a request carrying the upstream session id, or a 400 to one
//! carrying an id that worked before (the session is active) when a `ping` with
//! the same id is refused too, so an ordinary bad request is not mistaken for it.
//! A 404 or 405 to a GET is not loss (the upstream offers no standalone stream).
//!
//! Restoring replays the client's own recorded `initialize` (the session's first
//! `client_to_server` frame: its protocol version, capabilities and clientInfo)
//! and `notifications/initialized`, then stores the new upstream id with a
//! revision check: of several instances restoring at once one wins and the others
//! use its id (and end the upstream session they opened).

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use bytes::Bytes;
use serde_json::json;
use session_store::{Direction, Error as StoreError, Session, SessionStatus};

use crate::{
    config::SessionRecovery, errors::ProxyError, headers::with_upstream_session, jsonrpc,
    state::AppState, upstream::PROTOCOL_VERSION_HEADER, upstream::SESSION_ID_HEADER,
};

/// Store updates tried when other writers change the session meanwhile.
const UPDATE_ATTEMPTS: usize = 4;

/// Largest reply to the replayed `initialize` read.
const MAX_INITIALIZE_REPLY_BYTES: usize = 1024 * 1024;

/// What the upstream's answer to a request in a session says about the session.
#[derive(Debug)]
pub enum Answer {
    /// An answer to relay to the client.
    Relay(reqwest::Response),
    /// The upstream no longer knows the session.
    SessionLost,
}

/// Classifies the upstream's answer to a POST sent with `session`'s upstream id:
/// 404 is loss; a 400 is loss only when the session was active and a `ping` with
/// the same upstream id is refused with 400 or 404 too.
pub async fn classify(
    app: &AppState,
    session: &Session,
    upstream_base: &HeaderMap,
    upstream: reqwest::Response,
) -> Answer {
    match upstream.status() {
        StatusCode::NOT_FOUND => Answer::SessionLost,
        StatusCode::BAD_REQUEST
            if session.upstream_session_id.is_some()
                && session.status == SessionStatus::Active
                && ping_refused(app, session, upstream_base).await =>
        {
            Answer::SessionLost
        }
        _ => Answer::Relay(upstream),
    }
}

/// Whether a `ping` in the session is refused the way a lost session is.
async fn ping_refused(app: &AppState, session: &Session, upstream_base: &HeaderMap) -> bool {
    let ping = json!({
        "jsonrpc": "2.0",
        "id": format!("mcp-proxy-probe-{:08x}", rand::random::<u32>()),
        "method": "ping",
    });
    // The session's own protocol version, so a bad version header of the
    // client's request cannot make the probe fail too.
    let mut headers = with_upstream_session(upstream_base, session.upstream_session_id.as_deref());
    if let Some(version) = session
        .protocol_version
        .as_deref()
        .and_then(|version| HeaderValue::from_str(version).ok())
    {
        headers.insert(PROTOCOL_VERSION_HEADER, version);
    }
    match app
        .upstream
        .send(Method::POST, headers, Some(Bytes::from(ping.to_string())))
        .await
    {
        Ok(response) => matches!(
            response.status(),
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST
        ),
        Err(_) => false,
    }
}

/// Why a session could not be restored.
#[derive(Debug)]
pub enum RestoreError {
    /// The store or the upstream failed on the way (unreachable, timeout): the
    /// next request may restore it; the session is kept.
    Transient(ProxyError),
    /// It cannot be restored (the `initialize` is no longer recorded, or the
    /// upstream refused it): the session ends.
    Impossible(String),
}

impl From<ProxyError> for RestoreError {
    fn from(error: ProxyError) -> Self {
        RestoreError::Transient(error)
    }
}

impl From<StoreError> for RestoreError {
    fn from(error: StoreError) -> Self {
        RestoreError::Transient(error.into())
    }
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Transient(error) => write!(f, "{error}"),
            RestoreError::Impossible(reason) => f.write_str(reason),
        }
    }
}

/// Whether this proxy restores lost upstream sessions of `session` (it must have
/// an upstream session id to replace).
pub fn should_restore(app: &AppState, session: &Session) -> bool {
    app.settings.upstream_session_recovery == SessionRecovery::Restore
        && session.upstream_session_id.is_some()
}

/// Re-creates the upstream session of `session` and returns the upstream id to
/// use from now on (ours, or that of an instance that restored it first).
pub async fn restore(
    app: &Arc<AppState>,
    session: &Session,
    upstream_base: &HeaderMap,
) -> Result<String, RestoreError> {
    let lost = session.upstream_session_id.clone();
    let initialize = recorded_initialize(app, session).await?;
    let opened = open_upstream_session(app, upstream_base, initialize).await?;
    for _ in 0..UPDATE_ATTEMPTS {
        let mut current = app.store.get(&session.id).await?;
        if current.upstream_session_id != lost {
            // Another instance restored it first: use its upstream session.
            abandon(app, upstream_base, opened);
            return current.upstream_session_id.ok_or_else(|| {
                RestoreError::Impossible("another instance removed the upstream session id".into())
            });
        }
        current.upstream_session_id = Some(opened.clone());
        match app.store.update(&current).await {
            Ok(_) => {
                app.metrics.upstream_session_restored();
                tracing::info!(session = %session.id, "upstream lost the session; restored it by replaying the recorded initialize");
                return Ok(opened);
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(StoreError::NotFound(_)) => {
                abandon(app, upstream_base, opened);
                return Err(RestoreError::Impossible(
                    "the session ended meanwhile".into(),
                ));
            }
            Err(error) => {
                abandon(app, upstream_base, opened);
                return Err(error.into());
            }
        }
    }
    abandon(app, upstream_base, opened);
    Err(RestoreError::Transient(ProxyError::StoreUnavailable(
        format!(
            "session `{}` kept changing while its upstream session was restored",
            session.id
        ),
    )))
}

/// The client's `initialize` as recorded: the session's first frame.
async fn recorded_initialize(app: &AppState, session: &Session) -> Result<Bytes, RestoreError> {
    let first = app.store.read_frames(&session.id, None, 1).await?;
    first
        .into_iter()
        .next()
        .filter(|stored| stored.frame.direction == Direction::ClientToServer)
        .map(|stored| stored.frame.payload)
        .filter(|payload| {
            jsonrpc::inspect_client_message(payload)
                .is_ok_and(|message| message.initialize.is_some())
        })
        .map(Bytes::from)
        .ok_or_else(|| {
            RestoreError::Impossible(format!(
                "the initialize of session `{}` is no longer recorded (trimmed by max_frames_per_session)",
                session.id
            ))
        })
}

/// Sends `initialize` and `notifications/initialized`; the new upstream id.
async fn open_upstream_session(
    app: &AppState,
    upstream_base: &HeaderMap,
    initialize: Bytes,
) -> Result<String, RestoreError> {
    let reply = app
        .upstream
        .send(
            Method::POST,
            with_upstream_session(upstream_base, None),
            Some(initialize),
        )
        .await?;
    let status = reply.status();
    let id = reply
        .headers()
        .get(SESSION_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    // The reply (JSON or a short SSE stream) is read to its end, so the upstream
    // has finished the exchange before the next message arrives.
    app.upstream
        .read_body(reply, MAX_INITIALIZE_REPLY_BYTES)
        .await?;
    let id = match (status.is_success(), id) {
        (true, Some(id)) => id,
        _ => {
            return Err(RestoreError::Impossible(format!(
                "the upstream answered {status} without a session id to the replayed initialize"
            )))
        }
    };
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let reply = app
        .upstream
        .send(
            Method::POST,
            with_upstream_session(upstream_base, Some(&id)),
            Some(Bytes::from(initialized.to_string())),
        )
        .await?;
    if !reply.status().is_success() {
        return Err(RestoreError::Impossible(format!(
            "the upstream answered {} to the replayed notifications/initialized",
            reply.status()
        )));
    }
    Ok(id)
}

/// Ends an upstream session this instance opened but does not use.
fn abandon(app: &Arc<AppState>, upstream_base: &HeaderMap, upstream_id: String) {
    let app = app.clone();
    let headers = with_upstream_session(upstream_base, Some(&upstream_id));
    tokio::spawn(async move {
        if let Err(error) = app.upstream.send(Method::DELETE, headers, None).await {
            tracing::debug!(%error, "could not end an unused upstream session");
        }
    });
}
