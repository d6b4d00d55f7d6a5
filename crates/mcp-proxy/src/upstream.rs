//! The upstream MCP server: which client headers cross the proxy, and how a
//! request is sent with a deadline on the upstream's first answer.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use bytes::Bytes;
use url::Url;

use crate::errors::ProxyError;

/// The MCP session header, on both sides of the proxy (with different values).
pub const SESSION_ID_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
/// The MCP protocol version header.
pub const PROTOCOL_VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// The SSE resumption header.
pub const LAST_EVENT_ID_HEADER: HeaderName = HeaderName::from_static("last-event-id");

/// The HTTP client for one upstream MCP endpoint.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: reqwest::Client,
    url: Url,
    timeout: Duration,
}

impl Upstream {
    /// A client for the endpoint at `url`; `timeout` bounds the wait for response
    /// headers (and for connecting).
    pub fn new(url: Url, timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|error| format!("cannot build the upstream HTTP client: {error}"))?;
        Ok(Upstream {
            client,
            url,
            timeout,
        })
    }

    /// How long the upstream may take to answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `method` to the upstream endpoint with `headers` and `body`, waiting at
    /// most the timeout for the response headers. The body is then streamed by the
    /// caller.
    pub async fn send(
        &self,
        method: Method,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, ProxyError> {
        let mut request = self
            .client
            .request(method, self.url.clone())
            .headers(headers);
        if let Some(body) = body {
            request = request.body(body);
        }
        match tokio::time::timeout(self.timeout, request.send()).await {
            Err(_) => Err(ProxyError::UpstreamTimeout(self.timeout)),
            Ok(Err(error)) if error.is_timeout() => Err(ProxyError::UpstreamTimeout(self.timeout)),
            Ok(Err(error)) => Err(ProxyError::UpstreamUnreachable(format!(
                "{} ({})",
                self.url,
                error_chain(&error)
            ))),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// Reads a complete (JSON) response body of at most `limit` bytes within the
    /// timeout.
    pub async fn read_body(
        &self,
        response: reqwest::Response,
        limit: usize,
    ) -> Result<Bytes, ProxyError> {
        use futures::StreamExt;
        let read = async {
            let mut body = Vec::new();
            let mut chunks = response.bytes_stream();
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|error| {
                    ProxyError::UpstreamUnreachable(format!(
                        "reading the reply from {} failed: {}",
                        self.url,
                        error_chain(&error)
                    ))
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(ProxyError::UpstreamUnreachable(format!(
                        "the reply from {} exceeds {limit} bytes",
                        self.url
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(body))
        };
        tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| ProxyError::UpstreamTimeout(self.timeout))?
    }
}

/// The headers a client request passes on to the upstream: content negotiation,
/// credentials, and MCP's own headers, except the session id, which the proxy
/// replaces with `upstream_session_id` (when the upstream issued one).
pub fn forwarded_headers(client: &HeaderMap, upstream_session_id: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in client {
        let passes = matches!(
            *name,
            header::ACCEPT | header::CONTENT_TYPE | header::AUTHORIZATION | header::USER_AGENT
        ) || (name.as_str().starts_with("mcp-") && *name != SESSION_ID_HEADER);
        if passes {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(id) = upstream_session_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert(SESSION_ID_HEADER, id);
    }
    headers
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_header_is_replaced_and_hop_headers_dropped() {
        let mut client = HeaderMap::new();
        client.insert(SESSION_ID_HEADER, HeaderValue::from_static("proxy-id"));
        client.insert(
            PROTOCOL_VERSION_HEADER,
            HeaderValue::from_static("2025-06-18"),
        );
        client.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        client.insert(header::HOST, HeaderValue::from_static("proxy:8080"));
        client.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let headers = forwarded_headers(&client, Some("upstream-id"));
        assert_eq!(headers[SESSION_ID_HEADER], "upstream-id");
        assert_eq!(headers[PROTOCOL_VERSION_HEADER], "2025-06-18");
        assert_eq!(headers[header::AUTHORIZATION], "Bearer t");
        assert!(headers.get(header::HOST).is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(forwarded_headers(&client, None)
            .get(SESSION_ID_HEADER)
            .is_none());
    }
}
