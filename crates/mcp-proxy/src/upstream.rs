//! The upstream MCP server: the HTTP client (TLS through rustls), and how a request
//! is sent with a deadline on the upstream's first answer and another on its body.

use std::{net::SocketAddr, time::Duration};

use axum::http::{HeaderMap, HeaderName, Method};
use bytes::Bytes;
use tracing::Instrument;
use url::Url;

use crate::{
    config::ProxySettings,
    errors::ProxyError,
    headers::{upstream_request_headers, RequestHeaderPolicy},
    telemetry,
};

pub use crate::headers::{LAST_EVENT_ID_HEADER, SESSION_ID_HEADER};

/// The MCP protocol version header.
pub const PROTOCOL_VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// The HTTP client for one upstream MCP endpoint.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: reqwest::Client,
    url: Url,
    timeout: Duration,
    body_timeout: Duration,
    header_policy: RequestHeaderPolicy,
}

impl Upstream {
    /// A client for `settings.upstream`: `upstream_timeout` bounds connecting and
    /// the wait for response headers, `upstream_body_timeout` the reading of a
    /// complete JSON body; TLS trusts the platform's and Mozilla's roots plus
    /// `upstream_ca_file`, and presents `upstream_client_cert` when asked.
    ///
    /// # Errors
    /// A TLS file that cannot be used (named by key and path), or an HTTP client
    /// that cannot be built.
    pub fn new(settings: &ProxySettings) -> Result<Self, String> {
        let tls = settings
            .upstream_tls
            .client_config()
            .map_err(|error| error.to_string())?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(settings.upstream_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|error| format!("cannot build the upstream HTTP client: {error}"))?;
        Ok(Upstream {
            client,
            url: settings.upstream.clone(),
            timeout: settings.upstream_timeout,
            body_timeout: settings.upstream_body_timeout,
            header_policy: settings.request_headers.clone(),
        })
    }

    /// The upstream's MCP endpoint URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// How long the upstream may take to send its response headers.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The headers of the upstream request for a client request with `client`
    /// headers from `peer`, carrying `upstream_session_id` (see
    /// [`upstream_request_headers`]).
    pub fn request_headers(
        &self,
        client: &HeaderMap,
        peer: Option<SocketAddr>,
        upstream_session_id: Option<&str>,
    ) -> HeaderMap {
        upstream_request_headers(client, &self.header_policy, peer, upstream_session_id)
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
        self.send_to(self.url.clone(), method, headers, body).await
    }

    /// Like [`send`](Self::send), to another `url` of the upstream (its
    /// `/.well-known` documents).
    pub async fn send_to(
        &self,
        url: Url,
        method: Method,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, ProxyError> {
        // Named in errors only: built when one happens (a URL copy and edit per
        // call otherwise).
        let target = || without_credentials(&url);
        let mut headers = headers;
        let span = telemetry::upstream_span(&method, &mut headers);
        let mut request = self.client.request(method, url.clone()).headers(headers);
        if let Some(body) = body {
            request = request.body(body);
        }
        let sent = tokio::time::timeout(self.timeout, request.send()).instrument(span);
        match sent.await {
            Err(_) => Err(ProxyError::UpstreamTimeout(self.timeout)),
            Ok(Err(error)) if error.is_timeout() => Err(ProxyError::UpstreamTimeout(self.timeout)),
            Ok(Err(error)) => Err(ProxyError::UpstreamUnreachable(format!(
                "{}: {}",
                target(),
                error_chain(&error.without_url())
            ))),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// Reads a complete (JSON) response body of at most `limit` bytes within
    /// `upstream_body_timeout`.
    pub async fn read_body(
        &self,
        response: reqwest::Response,
        limit: usize,
    ) -> Result<Bytes, ProxyError> {
        use futures::StreamExt;
        let target = without_credentials(response.url());
        let read = async {
            let mut body = Vec::new();
            let mut chunks = response.bytes_stream();
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|error| {
                    ProxyError::UpstreamUnreachable(format!(
                        "{target}: reading the reply failed: {}",
                        error_chain(&error.without_url())
                    ))
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(ProxyError::UpstreamReplyTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(body))
        };
        tokio::time::timeout(self.body_timeout, read)
            .await
            .map_err(|_| ProxyError::UpstreamBodyTimeout(self.body_timeout))?
    }
}

/// `url` without user name and password, for logs.
pub fn without_credentials(url: &Url) -> Url {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
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
    fn logged_urls_carry_no_credentials() {
        let url = Url::parse("https://user:secret@mcp.example:8443/mcp").unwrap();
        assert_eq!(
            without_credentials(&url).as_str(),
            "https://mcp.example:8443/mcp"
        );
    }
}
