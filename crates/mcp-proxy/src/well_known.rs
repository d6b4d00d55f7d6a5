//! OAuth discovery through the proxy (MCP Authorization, 2025-06-18 and
//! 2025-11-25): the upstream's `/.well-known` metadata documents relayed from the
//! upstream's origin, and, with `rewrite_resource_metadata`, the upstream's URL
//! replaced by the proxy's public URL in the protected-resource metadata (RFC 9728
//! `resource`) and in `WWW-Authenticate` (`resource_metadata`).

use std::{net::SocketAddr, sync::Arc};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, Uri},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use url::Url;

use crate::{
    errors::ProxyError,
    headers::{client_response_headers, ClientAddr, X_FORWARDED_PROTO},
    state::AppState,
};

/// RFC 9728 protected-resource metadata.
pub const PROTECTED_RESOURCE: &str = "/.well-known/oauth-protected-resource";
/// RFC 8414 authorization-server metadata.
pub const AUTHORIZATION_SERVER: &str = "/.well-known/oauth-authorization-server";
/// OpenID Connect discovery.
pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";

/// Largest metadata document relayed.
const MAX_METADATA_BYTES: usize = 1024 * 1024;

/// The `/.well-known` routes, each also path-suffixed (RFC 9728 §3.1, RFC 8414
/// §3.1): `/.well-known/oauth-protected-resource/mcp` and the like.
pub fn routes() -> Router<Arc<AppState>> {
    let mut router = Router::new();
    for document in [
        PROTECTED_RESOURCE,
        AUTHORIZATION_SERVER,
        OPENID_CONFIGURATION,
    ] {
        router = router
            .route(document, get(relay))
            .route(&format!("{document}/{{*suffix}}"), get(relay));
    }
    router
}

/// `GET /.well-known/...`: the same path (and query) fetched from the upstream's
/// origin, answered with the upstream's status, headers and body. The
/// protected-resource metadata of the proxy's endpoint
/// (`/.well-known/oauth-protected-resource<endpoint_path>`) is fetched from the
/// upstream endpoint's own (`...<upstream path>`), and, with
/// `rewrite_resource_metadata`, its `resource` is rewritten to the public URL.
pub async fn relay(
    State(app): State<Arc<AppState>>,
    ClientAddr(peer): ClientAddr,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match fetch(&app, peer, &uri, &headers).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn fetch(
    app: &AppState,
    peer: Option<SocketAddr>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ProxyError> {
    let upstream_url = app.upstream.url();
    let path = uri.path();
    let proxy_resource_path = format!("{PROTECTED_RESOURCE}{}", app.settings.endpoint_path);
    let upstream_path = if path == proxy_resource_path {
        format!(
            "{PROTECTED_RESOURCE}{}",
            upstream_url.path().trim_end_matches('/')
        )
    } else {
        path.to_owned()
    };
    let mut target = upstream_url.clone();
    target.set_path(&upstream_path);
    target.set_query(uri.query());
    target.set_fragment(None);
    let forwarded = app.upstream.request_headers(headers, peer, None);
    let upstream = app
        .upstream
        .send_to(target, Method::GET, forwarded, None)
        .await?;
    let status = upstream.status();
    let passed_headers = client_response_headers(upstream.headers());
    let mut body = app.upstream.read_body(upstream, MAX_METADATA_BYTES).await?;
    let is_resource_metadata = path.starts_with(PROTECTED_RESOURCE);
    if app.settings.rewrite_resource_metadata && is_resource_metadata && status.is_success() {
        if let Some(public) = public_url(
            &app.settings.public_url,
            &app.settings.endpoint_path,
            headers,
        ) {
            if let Some(rewritten) = rewrite_resource(&body, upstream_url, &public) {
                body = rewritten.into();
            }
        }
    }
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = passed_headers;
    Ok(response)
}

/// Middleware (installed with `rewrite_resource_metadata = true`): every
/// `WWW-Authenticate` the client receives has its `resource_metadata` pointing at
/// the proxy instead of the upstream.
pub async fn rewrite_challenges(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let public = public_url(
        &app.settings.public_url,
        &app.settings.endpoint_path,
        request.headers(),
    );
    let mut response = next.run(request).await;
    let Some(public) = public else {
        return response;
    };
    let challenges: Vec<HeaderValue> = response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .cloned()
        .collect();
    if challenges.is_empty() {
        return response;
    }
    let headers = response.headers_mut();
    headers.remove(header::WWW_AUTHENTICATE);
    for challenge in challenges {
        let rewritten = challenge
            .to_str()
            .ok()
            .and_then(|text| rewrite_challenge(text, app.upstream.url(), &public))
            .and_then(|text| HeaderValue::from_str(&text).ok())
            .unwrap_or(challenge);
        headers.append(header::WWW_AUTHENTICATE, rewritten);
    }
    response
}

/// The proxy's public MCP endpoint URL: `public_url` when configured, else
/// `<scheme>://<Host><endpoint_path>` from the request, where the scheme is
/// `https` only when a TLS terminator in front said so in `X-Forwarded-Proto`
/// (the proxy itself listens on plain HTTP). `None` without a usable `Host`.
pub fn public_url(
    configured: &Option<Url>,
    endpoint_path: &str,
    headers: &HeaderMap,
) -> Option<Url> {
    if let Some(url) = configured {
        return Some(url.clone());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let scheme = match headers
        .get(X_FORWARDED_PROTO)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .map(str::trim)
    {
        Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let url = Url::parse(&format!("{scheme}://{host}{endpoint_path}")).ok()?;
    // A Host with a path, user info or the like is not a host.
    (url.path() == endpoint_path && url.username().is_empty()).then_some(url)
}

/// Where `value` (a URL of the upstream's) points from the client's side: the
/// upstream endpoint becomes `public`; its protected-resource metadata becomes the
/// proxy's; any other URL on the upstream's origin moves to the public origin.
/// `None`: not the upstream's URL, left unchanged.
pub fn map_upstream_url(value: &str, upstream: &Url, public: &Url) -> Option<String> {
    let trimmed = value.trim_end_matches('/');
    let upstream_origin = upstream.origin().ascii_serialization();
    let public_origin = public.origin().ascii_serialization();
    if trimmed == upstream.as_str().trim_end_matches('/') {
        return Some(public.to_string());
    }
    let upstream_metadata = format!(
        "{upstream_origin}{PROTECTED_RESOURCE}{}",
        upstream.path().trim_end_matches('/')
    );
    if trimmed == upstream_metadata {
        return Some(format!(
            "{public_origin}{PROTECTED_RESOURCE}{}",
            public.path()
        ));
    }
    let rest = value.strip_prefix(&upstream_origin)?;
    (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
        .then(|| format!("{public_origin}{rest}"))
}

/// The protected-resource metadata `body` with `resource` mapped by
/// [`map_upstream_url`]; `None` when it is not a JSON object or nothing changes.
fn rewrite_resource(body: &[u8], upstream: &Url, public: &Url) -> Option<Vec<u8>> {
    let mut metadata: serde_json::Value = serde_json::from_slice(body).ok()?;
    let resource = metadata.get("resource")?.as_str()?;
    let mapped = map_upstream_url(resource, upstream, public)?;
    metadata["resource"] = serde_json::Value::String(mapped);
    serde_json::to_vec(&metadata).ok()
}

/// A `WWW-Authenticate` value with each `resource_metadata` parameter mapped by
/// [`map_upstream_url`]; `None` when nothing changes.
pub fn rewrite_challenge(challenge: &str, upstream: &Url, public: &Url) -> Option<String> {
    const PARAMETER: &str = "resource_metadata=";
    let lower = challenge.to_ascii_lowercase();
    let mut out = String::with_capacity(challenge.len());
    let mut copied = 0;
    let mut changed = false;
    let mut search = 0;
    while let Some(found) = lower[search..].find(PARAMETER) {
        let start = search + found + PARAMETER.len();
        let (value_start, value_end) = if challenge[start..].starts_with('"') {
            let end = challenge[start + 1..]
                .find('"')
                .map(|end| start + 1 + end)?;
            (start + 1, end)
        } else {
            let end = challenge[start..]
                .find([',', ' '])
                .map_or(challenge.len(), |end| start + end);
            (start, end)
        };
        search = value_end;
        let Some(mapped) = map_upstream_url(&challenge[value_start..value_end], upstream, public)
        else {
            continue;
        };
        out.push_str(&challenge[copied..value_start]);
        out.push_str(&mapped);
        copied = value_end;
        changed = true;
    }
    out.push_str(&challenge[copied..]);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn upstream_urls_map_to_the_public_url() {
        let upstream = url("https://up.internal:8443/v1/mcp");
        let public = url("https://mcp.example.com/mcp");
        for (value, expected) in [
            (
                "https://up.internal:8443/v1/mcp",
                Some("https://mcp.example.com/mcp"),
            ),
            (
                "https://up.internal:8443/v1/mcp/",
                Some("https://mcp.example.com/mcp"),
            ),
            (
                "https://up.internal:8443/.well-known/oauth-protected-resource/v1/mcp",
                Some("https://mcp.example.com/.well-known/oauth-protected-resource/mcp"),
            ),
            (
                "https://up.internal:8443/.well-known/oauth-protected-resource",
                Some("https://mcp.example.com/.well-known/oauth-protected-resource"),
            ),
            ("https://up.internal:8443", Some("https://mcp.example.com")),
            ("https://up.internal:8443x/v1/mcp", None),
            ("https://auth.example.com/", None),
        ] {
            assert_eq!(
                map_upstream_url(value, &upstream, &public).as_deref(),
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn challenges_point_at_the_proxy() {
        let upstream = url("http://127.0.0.1:9000/mcp");
        let public = url("http://127.0.0.1:8080/mcp");
        assert_eq!(
            rewrite_challenge(
                r#"Bearer error="invalid_token", resource_metadata="http://127.0.0.1:9000/.well-known/oauth-protected-resource/mcp", scope="a b""#,
                &upstream,
                &public
            )
            .as_deref(),
            Some(
                r#"Bearer error="invalid_token", resource_metadata="http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp", scope="a b""#
            )
        );
        assert_eq!(
            rewrite_challenge(
                "Bearer Resource_Metadata=http://127.0.0.1:9000/.well-known/oauth-protected-resource",
                &upstream,
                &public
            )
            .as_deref(),
            Some("Bearer Resource_Metadata=http://127.0.0.1:8080/.well-known/oauth-protected-resource")
        );
        assert_eq!(
            rewrite_challenge(r#"Bearer realm="x""#, &upstream, &public),
            None
        );
        assert_eq!(
            rewrite_challenge(
                r#"Bearer resource_metadata="unterminated"#,
                &upstream,
                &public
            ),
            None
        );
    }

    #[test]
    fn resource_is_rewritten_and_the_rest_kept() {
        let upstream = url("http://127.0.0.1:9000/mcp");
        let public = url("https://mcp.example.com/mcp");
        let body = br#"{"resource":"http://127.0.0.1:9000/mcp","authorization_servers":["https://as.example"]}"#;
        let rewritten: serde_json::Value =
            serde_json::from_slice(&rewrite_resource(body, &upstream, &public).unwrap()).unwrap();
        assert_eq!(rewritten["resource"], "https://mcp.example.com/mcp");
        assert_eq!(rewritten["authorization_servers"][0], "https://as.example");
        assert!(rewrite_resource(b"not json", &upstream, &public).is_none());
    }

    #[test]
    fn public_url_is_configured_or_derived_from_host_and_forwarded_proto() {
        let mut headers = HeaderMap::new();
        assert_eq!(public_url(&None, "/mcp", &headers), None);
        headers.insert(header::HOST, HeaderValue::from_static("proxy.local:8080"));
        assert_eq!(
            public_url(&None, "/mcp", &headers).unwrap().as_str(),
            "http://proxy.local:8080/mcp"
        );
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        assert_eq!(
            public_url(&None, "/mcp", &headers).unwrap().as_str(),
            "https://proxy.local:8080/mcp"
        );
        headers.insert(header::HOST, HeaderValue::from_static("evil/path"));
        assert_eq!(public_url(&None, "/mcp", &headers), None);
        let configured = Some(url("https://mcp.example.com/mcp"));
        assert_eq!(
            public_url(&configured, "/mcp", &headers).unwrap().as_str(),
            "https://mcp.example.com/mcp"
        );
    }
}
