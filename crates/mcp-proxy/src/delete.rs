//! DELETE on the MCP endpoint: the client ends its session, upstream and in the
//! store, so it is over for every proxy instance.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};

use crate::{
    app::AppState,
    binding::session_binding,
    errors::ProxyError,
    session::{self, client_session_id},
    upstream::forwarded_headers,
};

/// Handles `DELETE <endpoint>`.
pub async fn handle(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match end_session(app, headers).await {
        Ok(status) => status.into_response(),
        Err(error) => error.into_response(),
    }
}

/// Forwards the DELETE (when the upstream issued a session id), then deletes the
/// session in the store, unless the upstream refuses with 405 (it does not let
/// clients end sessions). An unreachable upstream still ends the proxy's session:
/// the client asked for it, and the upstream's side expires on its own.
async fn end_session(app: Arc<AppState>, headers: HeaderMap) -> Result<StatusCode, ProxyError> {
    let id = client_session_id(&headers)?.ok_or(ProxyError::MissingSessionId)?;
    let binding = session_binding(&headers, &app.settings);
    let session = session::resolve(app.store.as_ref(), &id, &headers, binding.as_ref()).await?;
    let upstream = match session.upstream_session_id.as_deref() {
        Some(upstream_id) => Some(
            app.upstream
                .send(
                    Method::DELETE,
                    forwarded_headers(&headers, Some(upstream_id)),
                    None,
                )
                .await,
        ),
        None => None,
    };
    let status = match upstream {
        Some(Ok(response)) if response.status() == StatusCode::METHOD_NOT_ALLOWED => {
            return Ok(StatusCode::METHOD_NOT_ALLOWED);
        }
        Some(Ok(response)) if response.status().is_success() => response.status(),
        Some(Ok(response)) => {
            tracing::info!(session = %id, status = %response.status(), "upstream refused DELETE; ending the proxy session anyway");
            StatusCode::OK
        }
        Some(Err(error)) => {
            tracing::warn!(session = %id, %error, "upstream unreachable for DELETE; ending the proxy session anyway");
            StatusCode::OK
        }
        None => StatusCode::OK,
    };
    app.store.delete(&session.id).await?;
    tracing::info!(session = %id, "session deleted");
    Ok(status)
}
