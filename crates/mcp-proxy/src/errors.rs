//! What the proxy answers when it cannot forward a request: an HTTP status and a
//! JSON-RPC error body a client can act on.
//!
//! The `Display` text of an error is its full detail, for the proxy's log; the body
//! a client receives ([`ProxyError::client_message`]) never names an internal
//! address (the upstream's URL, the Redis server) or a credential.

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
    /// A resumption (`GET` with `Last-Event-ID`) of a reply stream the store can
    /// no longer serve: its request frame is gone (trimmed, or lost with a store
    /// that restarted without persistence) and no response of it is recorded.
    /// 410, so SDK clients stop retrying and fail the
    /// call instead of resuming an empty stream forever.
    #[error("this stream cannot be resumed: its request is no longer in the session store (trimmed, or lost by the store) and no response to it was recorded; send the request again")]
    StreamNotResumable,
    /// The store is down or slow; the session may well still exist.
    #[error("session store unavailable, retry later: {0}")]
    StoreUnavailable(String),
    /// The store failed in a way retrying will not fix (corrupt data, ...).
    #[error("session store error: {0}")]
    Store(String),
    /// The upstream server could not be reached (connection refused, TLS handshake
    /// failed, the reply broke off); the detail names the upstream and the reason.
    #[error("upstream MCP server unreachable: {0}")]
    UpstreamUnreachable(String),
    /// The upstream server did not send its response headers in time.
    #[error("upstream MCP server did not answer within {0:?} (proxy.upstream_timeout)")]
    UpstreamTimeout(Duration),
    // Client side: admission and limits.
    /// The request's `Origin` is not in `proxy.allowed_origins` (MCP transport:
    /// servers MUST validate `Origin`; 2025-11-25: 403).
    #[error("Origin not allowed: a browser page from this origin may not use this MCP server (proxy.allowed_origins)")]
    OriginNotAllowed,
    /// A per-client limit was reached; retry after `retry_after`.
    #[error("too many requests: {limit}; retry after {retry_after:?}")]
    TooManyRequests {
        /// Which limit, naming its key.
        limit: String,
        /// When the client may retry (sent as `Retry-After`, whole seconds).
        retry_after: Duration,
    },
    /// The admin listener requires `Authorization: Bearer <proxy.admin_token>`.
    #[error("admin endpoints require Authorization: Bearer <proxy.admin_token>")]
    AdminUnauthorized,
    /// The upstream server did not finish a JSON reply in time.
    #[error(
        "upstream MCP server did not finish its reply within {0:?} (proxy.upstream_body_timeout)"
    )]
    UpstreamBodyTimeout(Duration),
    /// The upstream's reply exceeds what the proxy reads into memory.
    #[error("upstream MCP server's reply exceeds {limit} bytes")]
    UpstreamReplyTooLarge {
        /// The proxy's limit.
        limit: usize,
    },
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
            ProxyError::StreamNotResumable => StatusCode::GONE,
            ProxyError::NoStandaloneStream => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::UpstreamUnreachable(_) | ProxyError::UpstreamReplyTooLarge { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout(_) | ProxyError::UpstreamBodyTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::OriginNotAllowed => StatusCode::FORBIDDEN,
            ProxyError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::AdminUnauthorized => StatusCode::UNAUTHORIZED,
        }
    }

    /// The message a client receives: the detail when it is the client's own
    /// (its body, its headers, a limit or key), a generic sentence when the detail
    /// would name an internal address (the store's or the upstream's), which only
    /// the log gets.
    pub fn client_message(&self) -> String {
        match self {
            ProxyError::StoreUnavailable(_) => "session store unavailable, retry later".to_owned(),
            ProxyError::Store(_) => {
                "session store error; the proxy's log has the detail".to_owned()
            }
            ProxyError::UpstreamUnreachable(_) => {
                "upstream MCP server unreachable; the proxy's log has the detail".to_owned()
            }
            other => other.to_string(),
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
        // The detail may quote client input (a Last-Event-ID, a JSON error):
        // escaped, so it cannot forge log lines.
        let detail = self.to_string();
        if matches!(self, ProxyError::StoreUnavailable(_)) {
            // The store logs when it stops answering and when it answers again
            // (docs/operations.md); a line per refused request would bury them.
            tracing::debug!(%status, error = %detail.escape_debug(), "request refused: session store unavailable");
        } else if status.is_server_error() {
            tracing::warn!(%status, error = %detail.escape_debug(), "request failed");
        } else {
            tracing::debug!(%status, error = %detail.escape_debug(), "request rejected");
        }
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": { "code": self.json_rpc_code(), "message": self.client_message() },
        });
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match &self {
            ProxyError::StoreUnavailable(_) => Some(u64::from(STORE_RETRY_AFTER_SECONDS)),
            // Whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3).
            ProxyError::TooManyRequests { retry_after, .. } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
                    .map(|s| s.max(1))
            }
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if matches!(self, ProxyError::AdminUnauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mcp-proxy admin\""),
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

    #[test]
    fn too_many_requests_says_when_to_retry_in_whole_seconds() {
        for (wait, header) in [
            (Duration::from_millis(1), "1"),
            (Duration::from_millis(2500), "3"),
            (Duration::from_secs(60), "60"),
        ] {
            let response = ProxyError::TooManyRequests {
                limit: "test".into(),
                retry_after: wait,
            }
            .into_response();
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(response.headers()[header::RETRY_AFTER], header, "{wait:?}");
        }
    }

    /// A log line never carries client input raw: a forged line break in a
    /// `Last-Event-ID` (or any detail) is escaped.
    #[test]
    fn logged_details_are_escaped() {
        #[derive(Clone, Default)]
        struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let forged = "1-0@g1\n2026-01-01T00:00:00Z  INFO forged line";
            let _ = ProxyError::BadRequest(format!("Last-Event-ID `{forged}`")).into_response();
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("\\n2026-01-01"), "{log}");
    }

    /// Every variant: the status, and a client body that names no internal address
    /// or credential even when the detail (for the log) does.
    #[tokio::test]
    async fn client_bodies_name_no_internal_address() {
        const SECRETS: [&str; 4] = ["10.0.0.5", "redis://", "s3cret", "upstream.internal"];
        let internal =
            "https://user:s3cret@upstream.internal:8443/mcp (10.0.0.5): connection refused";
        let cases = [
            (ProxyError::BodyTooLarge { limit: 10 }, 413, "10 bytes"),
            (
                ProxyError::BodyUnreadable("eof".into()),
                400,
                "could not be read",
            ),
            (
                ProxyError::NotJson("expected value".into()),
                400,
                "expected value",
            ),
            (
                ProxyError::BadRequest("Last-Event-ID `x`".into()),
                400,
                "Last-Event-ID",
            ),
            (ProxyError::MissingSessionId, 400, "Mcp-Session-Id"),
            (ProxyError::SessionNotFound, 404, "session not found"),
            (
                ProxyError::from(StoreError::unavailable(
                    "redis://:s3cret@10.0.0.5:6379 timed out",
                )),
                503,
                "retry later",
            ),
            (
                ProxyError::from(StoreError::corrupt("redis://10.0.0.5 key mcp:{a}:meta")),
                500,
                "session store error",
            ),
            (
                ProxyError::UpstreamUnreachable(internal.into()),
                502,
                "unreachable",
            ),
            (
                ProxyError::UpstreamTimeout(Duration::from_secs(30)),
                504,
                "proxy.upstream_timeout",
            ),
            (
                ProxyError::UpstreamBodyTimeout(Duration::from_secs(600)),
                504,
                "proxy.upstream_body_timeout",
            ),
            (
                ProxyError::UpstreamReplyTooLarge { limit: 5 },
                502,
                "5 bytes",
            ),
        ];
        for (error, status, expected) in cases {
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(expected), "{message}");
            for secret in SECRETS {
                assert!(!message.contains(secret), "{message} names {secret}");
            }
            assert_eq!(body["jsonrpc"], "2.0");
        }
    }
}
