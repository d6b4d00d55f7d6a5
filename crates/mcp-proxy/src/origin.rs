//! Admission by `Origin`: a browser page may use the MCP endpoint only from an
//! allowed origin (MCP transport, "Security Warning": servers MUST validate
//! `Origin` against DNS rebinding; 2025-11-25: answer 403). Requests without
//! `Origin` (non-browser clients) pass. Runs before anything reaches the store or
//! the upstream.

use std::{net::IpAddr, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap},
    middleware::Next,
    response::{IntoResponse, Response},
};
use url::{Host, Url};

use crate::{
    config::{serialize_origin, AllowedOrigins},
    errors::ProxyError,
    log_text::ClientText,
    metrics::Rejection,
    state::AppState,
};

/// Middleware on the MCP route: 403 with a JSON-RPC error body for a request whose
/// `Origin` the policy does not allow.
pub async fn check_origin(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let policy = &app.settings.allowed_origins;
    let refused = refused_origin(policy, request.headers(), request.uri().authority())
        .filter(|refused| !is_public_origin(app.settings.public_url.as_ref(), policy, refused));
    if let Some(refused) = refused {
        tracing::info!(origin = %ClientText(refused), "Origin not allowed; answering 403");
        app.metrics.rejected(Rejection::Origin);
        return ProxyError::OriginNotAllowed.into_response();
    }
    next.run(request).await
}

/// The first `Origin` value `policy` does not allow, if any. `authority` is the
/// request target's authority (HTTP/2), used when there is no `Host`.
pub fn refused_origin<'h>(
    policy: &AllowedOrigins,
    headers: &'h HeaderMap,
    authority: Option<&axum::http::uri::Authority>,
) -> Option<&'h [u8]> {
    if *policy == AllowedOrigins::Any {
        return None;
    }
    headers
        .get_all(header::ORIGIN)
        .iter()
        .find(|value| {
            let allowed = value.to_str().ok().is_some_and(|origin| {
                allows(policy, origin, request_host(headers, authority).as_deref())
            });
            !allowed
        })
        .map(|value| value.as_bytes())
}

/// Under the same-host default, the origin of `public_url` (the URL clients are
/// told to use, e.g. behind a TLS terminator that rewrites `Host`) is allowed too.
fn is_public_origin(public_url: Option<&Url>, policy: &AllowedOrigins, origin: &[u8]) -> bool {
    let (Some(public_url), AllowedOrigins::SameHost) = (public_url, policy) else {
        return false;
    };
    let Some(origin) = std::str::from_utf8(origin).ok().and_then(serialize_origin) else {
        return false;
    };
    public_url.origin().ascii_serialization() == origin
}

fn allows(policy: &AllowedOrigins, origin: &str, host: Option<&str>) -> bool {
    let Some(serialized) = serialize_origin(origin) else {
        // `null` (opaque origins), other schemes, garbage.
        return false;
    };
    let Ok(url) = Url::parse(&serialized) else {
        return false;
    };
    match policy {
        AllowedOrigins::Any => true,
        AllowedOrigins::List(allowed) => allowed.contains(&serialized),
        AllowedOrigins::Loopback => is_loopback(&url),
        AllowedOrigins::SameHost => host.is_some_and(|host| same_host(&url, host)),
    }
}

/// `localhost` (and its subdomains, RFC 6761 §6.3), `127.0.0.0/8`, `[::1]`.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.');
            domain.eq_ignore_ascii_case("localhost")
                || domain.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Whether the origin names the host and port the request was sent to (`Host`,
/// its port defaulting to the origin scheme's).
fn same_host(origin: &Url, host: &str) -> bool {
    let Ok(authority) = host.parse::<axum::http::uri::Authority>() else {
        return false;
    };
    let Some(origin_host) = origin.host_str() else {
        return false;
    };
    origin_host.eq_ignore_ascii_case(authority.host())
        && origin.port_or_known_default() == authority.port_u16().or(origin.port_or_known_default())
}

fn request_host(
    headers: &HeaderMap,
    authority: Option<&axum::http::uri::Authority>,
) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| authority.map(ToString::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn request(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    fn allowed(policy: &AllowedOrigins, origin: Option<&str>, host: &str) -> bool {
        refused_origin(policy, &request(origin, host), None).is_none()
    }

    #[test]
    fn loopback_policy_allows_only_loopback_origins() {
        let policy = AllowedOrigins::Loopback;
        for origin in [
            "http://localhost",
            "http://localhost:6274",
            "https://LOCALHOST:1",
            "http://app.localhost:3000",
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://[::1]:9",
        ] {
            assert!(allowed(&policy, Some(origin), "127.0.0.1:8080"), "{origin}");
        }
        for origin in [
            "http://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "http://10.0.0.1",
            "null",
            "file://",
            "ftp://localhost",
            "http://localhost/path",
            "not an origin",
        ] {
            assert!(
                !allowed(&policy, Some(origin), "127.0.0.1:8080"),
                "{origin}"
            );
        }
        assert!(allowed(&policy, None, "127.0.0.1:8080"));
    }

    #[test]
    fn same_host_policy_allows_only_the_requests_own_origin() {
        let policy = AllowedOrigins::SameHost;
        assert!(allowed(
            &policy,
            Some("https://mcp.example.com"),
            "mcp.example.com"
        ));
        assert!(allowed(
            &policy,
            Some("http://mcp.example.com:8080"),
            "MCP.example.com:8080"
        ));
        assert!(allowed(
            &policy,
            Some("http://mcp.example.com"),
            "mcp.example.com:80"
        ));
        assert!(!allowed(
            &policy,
            Some("http://mcp.example.com:8081"),
            "mcp.example.com:8080"
        ));
        assert!(!allowed(
            &policy,
            Some("https://evil.example"),
            "mcp.example.com"
        ));
        assert!(!allowed(&policy, Some("null"), "mcp.example.com"));
        assert!(allowed(&policy, None, "mcp.example.com"));
    }

    #[test]
    fn the_public_urls_origin_is_allowed_under_the_same_host_default() {
        let public = Url::parse("https://mcp.example.com/mcp").unwrap();
        let same_host = AllowedOrigins::SameHost;
        assert!(is_public_origin(
            Some(&public),
            &same_host,
            b"https://mcp.example.com"
        ));
        assert!(!is_public_origin(
            Some(&public),
            &same_host,
            b"https://evil.example"
        ));
        assert!(!is_public_origin(
            None,
            &same_host,
            b"https://mcp.example.com"
        ));
        assert!(!is_public_origin(
            Some(&public),
            &AllowedOrigins::Loopback,
            b"https://mcp.example.com"
        ));
    }

    #[test]
    fn a_list_allows_exactly_its_origins_and_star_allows_all() {
        let policy = AllowedOrigins::List(vec!["https://app.example.com".into()]);
        assert!(allowed(&policy, Some("https://app.example.com"), "x"));
        assert!(allowed(&policy, Some("https://app.example.com:443"), "x"));
        assert!(!allowed(&policy, Some("http://app.example.com"), "x"));
        assert!(!allowed(&policy, Some("https://app.example.com:8443"), "x"));
        assert!(allowed(&AllowedOrigins::Any, Some("null"), "x"));
    }

    #[test]
    fn every_origin_header_must_be_allowed() {
        let mut headers = request(Some("http://localhost"), "localhost");
        headers.append(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert_eq!(
            refused_origin(&AllowedOrigins::Loopback, &headers, None),
            Some(&b"http://evil.example"[..])
        );
    }
}
