//! What the proxy answers when it cannot forward a request: an HTTP status and a
//! JSON-RPC error body a client can act on.

use std::time::Duration;

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use session_store::Error as StoreError;

/// JSON-RPC error code for failures of the proxy itself (server error range).
const PROXY_ERROR_CODE: i64 = -32000;
/// JSON-RPC "Parse error".
const PARSE_ERROR_CODE: i64 = -32700;
/// JSON-RPC "Invalid Request".
const INVALID_REQUEST_CODE: i64 = -32600;

/// Seconds a client should wait before retrying while the store is unavailable.
const STORE_RETRY_AFTER_SECONDS: u32 = 1;

/// A request the proxy could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request body exceeds `proxy.max_body_bytes`.
    #[error("request body exceeds the proxy's limit of {limit} bytes (proxy.max_body_bytes)")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body could not be read.
    #[error("request body could not be read: {0}")]
    BodyUnreadable(String),
    /// The body is not JSON.
    #[error("request body is not a JSON-RPC message or batch: {0}")]
    NotJson(String),
    /// A header or message was malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A request other than `initialize` came without `Mcp-Session-Id`.
    #[error("missing Mcp-Session-Id header: only `initialize` may be sent without a session")]
    MissingSessionId,
    /// The session is unknown, deleted, expired, or bound to other credentials.
    #[error("session not found: it never existed, was deleted or expired; initialize a new one")]
    SessionNotFound,
    /// The upstream offers no server-to-client stream on GET (it answered 404 or
    /// 405); the session itself is fine.
    #[error("the upstream MCP server offers no standalone SSE stream (GET)")]
    NoStandaloneStream,
    /// The store is down or slow; the session may well still exist.
    #[error("session store unavailable, retry later: {0}")]
    StoreUnavailable(String),
    /// The store failed in a way retrying will not fix (corrupt data, ...).
    #[error("session store error: {0}")]
    Store(String),
    /// The upstream server could not be reached.
    #[error("upstream MCP server unreachable: {0}")]
    UpstreamUnreachable(String),
    /// The upstream server did not answer in time.
    #[error("upstream MCP server did not answer within {0:?} (proxy.upstream_timeout)")]
    UpstreamTimeout(Duration),
}

impl ProxyError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyUnreadable(_)
            | ProxyError::NotJson(_)
            | ProxyError::BadRequest(_)
            | ProxyError::MissingSessionId => StatusCode::BAD_REQUEST,
            ProxyError::SessionNotFound => StatusCode::NOT_FOUND,
            ProxyError::NoStandaloneStream => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn json_rpc_code(&self) -> i64 {
        match self {
            ProxyError::NotJson(_) => PARSE_ERROR_CODE,
            ProxyError::BadRequest(_) | ProxyError::MissingSessionId => INVALID_REQUEST_CODE,
            _ => PROXY_ERROR_CODE,
        }
    }
}

impl From<StoreError> for ProxyError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(_) => ProxyError::SessionNotFound,
            StoreError::Unavailable(_) => ProxyError::StoreUnavailable(error.to_string()),
            other => ProxyError::Store(other.to_string()),
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        } else {
            tracing::debug!(%status, error = %self, "request rejected");
        }
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": { "code": self.json_rpc_code(), "message": self.to_string() },
        });
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(self, ProxyError::StoreUnavailable(_)) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(STORE_RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_store::SessionId;

    #[test]
    fn store_errors_map_to_statuses_that_never_hide_a_live_session() {
        let id = SessionId::new("s1").unwrap();
        assert_eq!(
            ProxyError::from(StoreError::NotFound(id)).status(),
            StatusCode::NOT_FOUND
        );
        let unavailable = ProxyError::from(StoreError::unavailable("redis down"));
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = unavailable.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            ProxyError::from(StoreError::corrupt("bad bytes")).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
