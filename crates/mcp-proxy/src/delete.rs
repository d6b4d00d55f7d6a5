//! DELETE on the MCP endpoint: the client ends its session, upstream and in the
//! store, so it is over for every proxy instance.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};

use crate::{
    binding::session_binding,
    errors::ProxyError,
    headers::{client_response_headers, ClientAddr},
    session::{self, client_session_id},
    state::AppState,
};

/// Handles `DELETE <endpoint>`.
pub async fn handle(
    State(app): State<Arc<AppState>>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    match end_session(app, peer, headers).await {
        Ok((status, passed_headers)) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = status;
            *response.headers_mut() = passed_headers;
            response
        }
        Err(error) => error.into_response(),
    }
}

/// Forwards the DELETE (when the upstream issued a session id), then deletes the
/// session in the store, unless the upstream refuses with 405 (it does not let
/// clients end sessions). An unreachable upstream still ends the proxy's session:
/// the client asked for it, and the upstream's side expires on its own. Answers
/// with the upstream's status and headers (see [`client_response_headers`]) when it
/// answered 2xx or 405.
async fn end_session(
    app: Arc<AppState>,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
) -> Result<(StatusCode, HeaderMap), ProxyError> {
    let id = client_session_id(&headers)?.ok_or(ProxyError::MissingSessionId)?;
    let binding = session_binding(&headers, &app.settings);
    let session = session::resolve(app.store.as_ref(), &id, &headers, binding.as_ref()).await?;
    let upstream = match session.upstream_session_id.as_deref() {
        Some(upstream_id) => Some(
            app.upstream
                .send(
                    Method::DELETE,
                    app.upstream
                        .request_headers(&headers, peer, Some(upstream_id)),
                    None,
                )
                .await,
        ),
        None => None,
    };
    let answer = match upstream {
        Some(Ok(response)) if response.status() == StatusCode::METHOD_NOT_ALLOWED => {
            return Ok((
                StatusCode::METHOD_NOT_ALLOWED,
                client_response_headers(response.headers()),
            ));
        }
        Some(Ok(response)) if response.status().is_success() => (
            response.status(),
            client_response_headers(response.headers()),
        ),
        Some(Ok(response)) => {
            tracing::info!(session = %id, status = %response.status(), "upstream refused DELETE; ending the proxy session anyway");
            (StatusCode::OK, HeaderMap::new())
        }
        Some(Err(error)) => {
            tracing::warn!(session = %id, %error, "upstream unreachable for DELETE; ending the proxy session anyway");
            (StatusCode::OK, HeaderMap::new())
        }
        None => (StatusCode::OK, HeaderMap::new()),
    };
    app.near_cache.remove(&session.id);
    app.store.delete(&session.id).await?;
    tracing::info!(session = %id, "session deleted");
    Ok(answer)
}

/// Ends `session` for an operator (the session browser's end and revoke): sends
/// the upstream its DELETE when the upstream issued a session id (with no client
/// headers; a refusal or an unreachable upstream is logged, the upstream's side
/// then expires on its own), then deletes the session from the store, so it is
/// over on every instance.
pub async fn end_for_operator(
    app: &AppState,
    session: &session_store::Session,
) -> Result<(), ProxyError> {
    if let Some(upstream_id) = session.upstream_session_id.as_deref() {
        let headers = app
            .upstream
            .request_headers(&HeaderMap::new(), None, Some(upstream_id));
        match app.upstream.send(Method::DELETE, headers, None).await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::info!(session = %session.id, status = %response.status(), "upstream refused the operator's DELETE; ending the proxy session anyway");
            }
            Err(error) => {
                tracing::warn!(session = %session.id, %error, "upstream unreachable for the operator's DELETE; ending the proxy session anyway");
            }
        }
    }
    app.store.delete(&session.id).await?;
    tracing::info!(session = %session.id, "session ended by the operator");
    Ok(())
}
