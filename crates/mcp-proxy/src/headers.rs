//! Which headers cross the proxy, each way (RFC 9110 §7.6.1): every end-to-end
//! header passes, hop-by-hop ones and the few the proxy owns do not.
//!
//! [`upstream_request_headers`] decides for a client request on its way upstream,
//! [`client_response_headers`] for an upstream answer on its way to the client.
//! The table test at the end of this file is the specification.

use std::{convert::Infallible, net::SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue},
};

/// The MCP session header, on both sides of the proxy (with different values).
pub const SESSION_ID_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
/// The SSE resumption header.
pub const LAST_EVENT_ID_HEADER: HeaderName = HeaderName::from_static("last-event-id");
/// `X-Forwarded-For`: the chain of client addresses.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the `Host` the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the pre-standard `Keep-Alive` and
/// `Proxy-Connection`): they describe one connection, never the message, so they
/// never cross. `Proxy-Authenticate`/`Proxy-Authorization` (§11.7) are for a
/// forward proxy on the client's connection, which this proxy is not.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// How client request headers are passed upstream (`[proxy]` settings).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHeaderPolicy {
    /// `request_header_deny`: end-to-end headers that still must not reach the
    /// upstream (lower-case names).
    pub deny: Vec<HeaderName>,
    /// `forwarded_headers`: add `X-Forwarded-For/-Proto/-Host`.
    pub forwarded: bool,
}

/// The client's socket address, when the server recorded it (axum's
/// `ConnectInfo`); `None` when the router runs without it (in-process tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0),
        ))
    }
}

/// `forwarded` (headers already chosen for the upstream by
/// [`upstream_request_headers`]) with `Mcp-Session-Id` set to `upstream_session_id`,
/// or removed when it is `None`: the same request sent into another upstream session
/// (a restored one, a resumed stream).
pub fn with_upstream_session(
    forwarded: &HeaderMap,
    upstream_session_id: Option<&str>,
) -> HeaderMap {
    let mut headers = forwarded.clone();
    headers.remove(SESSION_ID_HEADER);
    if let Some(id) = upstream_session_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert(SESSION_ID_HEADER, id);
    }
    headers
}

/// The headers sent upstream for a client request with `client` headers from
/// `peer`.
///
/// Every end-to-end header passes (credentials, cookies, API keys, `traceparent`,
/// `tracestate`, MCP's headers) except:
/// - hop-by-hop headers and every header the client's `Connection` names;
/// - `Host` (the HTTP client sets the upstream's), `Content-Length` (recomputed)
///   and `Expect` (the proxy has already read the body);
/// - `Accept-Encoding`: the proxy reads each message to record it, so it asks the
///   upstream for unencoded bodies;
/// - `Mcp-Session-Id` and `Last-Event-ID`: they hold the proxy's ids; the upstream
///   gets `upstream_session_id` (and its own event ids, set by the caller);
/// - the names in `policy.deny`.
///
/// With `policy.forwarded`, `X-Forwarded-For` gets the client's address appended,
/// and `X-Forwarded-Proto` (`http`) and `X-Forwarded-Host` (the client's `Host`)
/// are set unless a proxy in front already set them.
pub fn upstream_request_headers(
    client: &HeaderMap,
    policy: &RequestHeaderPolicy,
    peer: Option<SocketAddr>,
    upstream_session_id: Option<&str>,
) -> HeaderMap {
    let named_by_connection = connection_options(client);
    let mut headers = HeaderMap::with_capacity(client.len() + 3);
    for (name, value) in client {
        let owned_by_proxy = matches!(
            *name,
            header::HOST | header::CONTENT_LENGTH | header::EXPECT | header::ACCEPT_ENCODING
        ) || *name == SESSION_ID_HEADER
            || *name == LAST_EVENT_ID_HEADER;
        if owned_by_proxy || is_hop_by_hop(name, &named_by_connection) || policy.deny.contains(name)
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    if policy.forwarded {
        add_forwarded(&mut headers, client, peer);
    }
    if let Some(id) = upstream_session_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert(SESSION_ID_HEADER, id);
    }
    headers
}

/// The upstream response headers the client receives: every end-to-end header
/// (`WWW-Authenticate`, `Allow`, `Retry-After`, `Cache-Control`, CORS headers,
/// `Set-Cookie`, ...) except hop-by-hop ones (and those its `Connection` names),
/// `Content-Length` (the proxy frames the body itself), `Alt-Svc` (it describes
/// the upstream's endpoints, not the proxy's) and `Mcp-Session-Id` (the caller
/// sets the proxy's).
pub fn client_response_headers(upstream: &HeaderMap) -> HeaderMap {
    let named_by_connection = connection_options(upstream);
    let mut headers = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        let owned_by_proxy =
            matches!(*name, header::CONTENT_LENGTH | header::ALT_SVC) || *name == SESSION_ID_HEADER;
        if owned_by_proxy || is_hop_by_hop(name, &named_by_connection) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers
}

fn is_hop_by_hop(name: &HeaderName, named_by_connection: &[HeaderName]) -> bool {
    HOP_BY_HOP.contains(name) || named_by_connection.contains(name)
}

/// The header names listed in `Connection` (RFC 9110 §7.6.1: they are hop-by-hop
/// too).
fn connection_options(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|option| HeaderName::try_from(option.trim()).ok())
        .collect()
}

fn add_forwarded(headers: &mut HeaderMap, client: &HeaderMap, peer: Option<SocketAddr>) {
    if let Some(peer) = peer {
        let earlier: Vec<&str> = client
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        let mut chain = earlier.join(", ");
        if !chain.is_empty() {
            chain.push_str(", ");
        }
        chain.push_str(&peer.ip().to_string());
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(X_FORWARDED_HOST) {
        if let Some(host) = client.get(header::HOST) {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::try_from(*name).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    /// Request headers: (name, value sent by the client, what the upstream gets;
    /// `None`: the header does not cross).
    const REQUEST_TABLE: &[(&str, &str, Option<&str>)] = &[
        ("authorization", "Bearer t", Some("Bearer t")),
        ("cookie", "a=1", Some("a=1")),
        ("x-api-key", "k1", Some("k1")),
        ("traceparent", "00-0af7-b7ad-01", Some("00-0af7-b7ad-01")),
        ("tracestate", "v=1", Some("v=1")),
        ("accept", "application/json", Some("application/json")),
        ("content-type", "application/json", Some("application/json")),
        ("user-agent", "ua/1", Some("ua/1")),
        ("mcp-protocol-version", "2025-06-18", Some("2025-06-18")),
        ("origin", "http://localhost", Some("http://localhost")),
        ("x-custom", "c", Some("c")),
        ("mcp-session-id", "proxy-id", Some("upstream-id")),
        ("last-event-id", "1-0@g1", None),
        ("host", "proxy:8080", None),
        ("content-length", "12", None),
        ("expect", "100-continue", None),
        ("accept-encoding", "gzip", None),
        ("connection", "keep-alive, x-hop", None),
        ("x-hop", "named by Connection", None),
        ("keep-alive", "timeout=5", None),
        ("proxy-connection", "keep-alive", None),
        ("te", "trailers", None),
        ("trailer", "x-t", None),
        ("transfer-encoding", "chunked", None),
        ("upgrade", "websocket", None),
        ("proxy-authorization", "Basic cHJveHk=", None),
        ("x-internal", "denied", None),
        (
            "x-forwarded-for",
            "203.0.113.7",
            Some("203.0.113.7, 127.0.0.9"),
        ),
        ("x-forwarded-proto", "https", Some("https")),
    ];

    #[test]
    fn request_headers_that_cross_to_the_upstream() {
        let client = map(&REQUEST_TABLE
            .iter()
            .map(|(name, value, _)| (*name, *value))
            .collect::<Vec<_>>());
        let policy = RequestHeaderPolicy {
            deny: vec![HeaderName::from_static("x-internal")],
            forwarded: true,
        };
        let peer: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        let sent = upstream_request_headers(&client, &policy, Some(peer), Some("upstream-id"));
        for (name, _, expected) in REQUEST_TABLE {
            let got = sent.get(*name).map(|value| value.to_str().unwrap());
            assert_eq!(got, *expected, "request header {name}");
        }
        assert_eq!(
            sent[X_FORWARDED_HOST], "proxy:8080",
            "from the client's Host"
        );
        let expected_count = REQUEST_TABLE.iter().filter(|row| row.2.is_some()).count() + 1;
        assert_eq!(sent.len(), expected_count, "{sent:?}");
    }

    #[test]
    fn forwarded_headers_are_added_only_when_enabled() {
        let client = map(&[("host", "proxy:1"), ("x-forwarded-for", "10.1.1.1")]);
        let peer: SocketAddr = "127.0.0.2:1".parse().unwrap();
        let on = RequestHeaderPolicy {
            deny: Vec::new(),
            forwarded: true,
        };
        let sent = upstream_request_headers(&client, &on, Some(peer), None);
        assert_eq!(sent[X_FORWARDED_FOR], "10.1.1.1, 127.0.0.2");
        assert_eq!(sent[X_FORWARDED_PROTO], "http");
        assert_eq!(sent[X_FORWARDED_HOST], "proxy:1");
        assert!(sent.get(SESSION_ID_HEADER).is_none());
        let off = RequestHeaderPolicy::default();
        let sent = upstream_request_headers(&client, &off, Some(peer), None);
        assert_eq!(sent[X_FORWARDED_FOR], "10.1.1.1", "passed as sent");
        assert!(sent.get(X_FORWARDED_PROTO).is_none());
        assert!(sent.get(X_FORWARDED_HOST).is_none());
    }

    /// Response headers: (name, value from the upstream, whether the client gets it).
    const RESPONSE_TABLE: &[(&str, &str, bool)] = &[
        ("www-authenticate", "Bearer resource_metadata=\"x\"", true),
        ("allow", "POST, DELETE", true),
        ("retry-after", "3", true),
        ("cache-control", "no-store", true),
        ("access-control-allow-origin", "*", true),
        ("access-control-expose-headers", "mcp-session-id", true),
        ("set-cookie", "s=1; HttpOnly", true),
        ("content-type", "application/json", true),
        ("content-encoding", "identity", true),
        ("x-request-id", "r1", true),
        ("traceparent", "00-1-2-01", true),
        ("mcp-session-id", "upstream-id", false),
        ("content-length", "10", false),
        ("alt-svc", "h3=\":443\"", false),
        ("connection", "close, x-hop", false),
        ("x-hop", "named by Connection", false),
        ("keep-alive", "timeout=5", false),
        ("transfer-encoding", "chunked", false),
        ("trailer", "x-t", false),
        ("upgrade", "h2c", false),
        ("proxy-authenticate", "Basic", false),
    ];

    #[test]
    fn response_headers_that_cross_to_the_client() {
        let upstream = map(&RESPONSE_TABLE
            .iter()
            .map(|(name, value, _)| (*name, *value))
            .collect::<Vec<_>>());
        let passed = client_response_headers(&upstream);
        for (name, value, crosses) in RESPONSE_TABLE {
            let got = passed.get(*name).map(|value| value.to_str().unwrap());
            assert_eq!(got, crosses.then_some(*value), "response header {name}");
        }
    }

    #[test]
    fn repeated_headers_keep_every_value() {
        let upstream = map(&[("set-cookie", "a=1"), ("set-cookie", "b=2")]);
        let passed = client_response_headers(&upstream);
        assert_eq!(passed.get_all("set-cookie").iter().count(), 2);
    }
}
