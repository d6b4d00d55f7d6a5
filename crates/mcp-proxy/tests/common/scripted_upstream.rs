//! A scripted MCP upstream for the end-to-end tests: axum on 127.0.0.1:0 in the
//! test's runtime, answering the few JSON-RPC messages an MCP client sends
//! (`initialize`, notifications, `tools/list`, `tools/call`, `ping`) in JSON mode,
//! recording every request's headers, and, when asked, demanding a bearer token
//! and serving OAuth metadata (RFC 9728 protected resource, RFC 8414 authorization
//! server, a token endpoint that mints one fixed token).
//!
//! Tools: `whoami` (answers the `Authorization` header it received), `slow`
//! (headers at once, the JSON body after `body_delay`), `streamed` (an SSE reply).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};

/// The token the fake authorization server mints.
pub const TOKEN: &str = "test-access-token-7d1f";

/// What the OAuth side says about itself; the URLs may be set after the proxy
/// started (its address is known only then).
#[derive(Clone, Debug, Default)]
pub struct OAuthMetadata {
    /// `resource` of the protected-resource metadata.
    pub resource: String,
    /// `resource_metadata` of the `WWW-Authenticate` challenge.
    pub resource_metadata: String,
    /// `authorization_servers[0]` and the authorization server's `issuer`.
    pub issuer: String,
}

/// A request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    oauth: Mutex<Option<OAuthMetadata>>,
    body_delay: Mutex<Duration>,
    sessions: Mutex<u32>,
    address: Mutex<Option<SocketAddr>>,
}

/// The running upstream; stops when dropped.
pub struct ScriptedUpstream {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedUpstream {
    /// Starts the upstream on a free loopback port, open to everyone.
    pub async fn start() -> ScriptedUpstream {
        let shared = Arc::new(Shared::default());
        let router = Router::new()
            .route("/mcp", post(mcp_post).get(mcp_get).delete(mcp_delete))
            .route(
                "/.well-known/oauth-protected-resource",
                get(protected_resource),
            )
            .route(
                "/.well-known/oauth-protected-resource/mcp",
                get(protected_resource),
            )
            .route(
                "/.well-known/oauth-authorization-server",
                get(authorization_server),
            )
            .route("/token", post(token))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        *shared.address.lock().unwrap() = Some(address);
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        ScriptedUpstream {
            address,
            shared,
            task,
        }
    }

    /// The MCP endpoint.
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.address)
    }

    /// The origin (`http://127.0.0.1:port`).
    pub fn origin(&self) -> String {
        format!("http://{}", self.address)
    }

    /// OAuth metadata of an upstream that knows only its own URL and is its own
    /// authorization server.
    pub fn own_oauth_metadata(&self) -> OAuthMetadata {
        OAuthMetadata {
            resource: self.mcp_url(),
            resource_metadata: format!(
                "{}/.well-known/oauth-protected-resource/mcp",
                self.origin()
            ),
            issuer: self.origin(),
        }
    }

    /// From now on, `/mcp` demands `Authorization: Bearer <TOKEN>` and the OAuth
    /// documents say `metadata`.
    pub fn demand_bearer(&self, metadata: OAuthMetadata) {
        *self.shared.oauth.lock().unwrap() = Some(metadata);
    }

    /// How long the `slow` tool holds its body back after sending the headers.
    pub fn set_body_delay(&self, delay: Duration) {
        *self.shared.body_delay.lock().unwrap() = delay;
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The requests to `path` received so far.
    pub fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|seen| seen.path == path)
            .collect()
    }
}

fn record(shared: &Shared, method: Method, uri: &Uri, headers: &HeaderMap) {
    shared.seen.lock().unwrap().push(Seen {
        method,
        path: uri.path().to_owned(),
        headers: headers.clone(),
    });
}

/// `None` when the request may pass; else the 401 with the challenge.
fn challenge(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let oauth = shared.oauth.lock().unwrap().clone()?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if presented == Some(format!("Bearer {TOKEN}").as_str()) {
        return None;
    }
    let error = if presented.is_some() {
        ", error=\"invalid_token\""
    } else {
        ""
    };
    let value = format!(
        "Bearer resource_metadata=\"{}\"{error}",
        oauth.resource_metadata
    );
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, value),
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
        )
            .into_response(),
    )
}

/// Headers every MCP answer carries, so tests see end-to-end headers cross.
fn upstream_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert("x-upstream-header", HeaderValue::from_static("yes"));
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_static("upstream=1; Path=/"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("mcp-session-id"),
    );
}

async fn mcp_post(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&shared, Method::POST, &uri, &headers);
    if let Some(refusal) = challenge(&shared, &headers) {
        return refusal;
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let method = message["method"].as_str().unwrap_or_default().to_owned();
    let id = message["id"].clone();
    if id.is_null() {
        return StatusCode::ACCEPTED.into_response();
    }
    let result = match method.as_str() {
        "initialize" => {
            let mut sessions = shared.sessions.lock().unwrap();
            *sessions += 1;
            let session = format!("upstream-session-{}", *sessions);
            let version = message["params"]["protocolVersion"].clone();
            let mut response = reply(
                &id,
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "scripted-upstream", "version": "1.0"},
                }),
            );
            response
                .headers_mut()
                .insert("mcp-session-id", HeaderValue::from_str(&session).unwrap());
            return response;
        }
        "ping" => json!({}),
        "tools/list" => json!({"tools": [
            {"name": "whoami", "description": "The Authorization header received",
             "inputSchema": {"type": "object"}},
            {"name": "slow", "description": "Answers after the body delay",
             "inputSchema": {"type": "object"}},
            {"name": "streamed", "description": "Answers over SSE",
             "inputSchema": {"type": "object"}},
        ]}),
        "tools/call" => match message["params"]["name"].as_str() {
            Some("whoami") => {
                let authorization = headers
                    .get(header::AUTHORIZATION)
                    .map(|value| value.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                text_result(&authorization)
            }
            Some("slow") => {
                let delay = *shared.body_delay.lock().unwrap();
                return slow_reply(&id, delay);
            }
            Some("streamed") => return sse_reply(&id, text_result("streamed")),
            _ => {
                return reply_error(&id, "unknown tool");
            }
        },
        _ => return reply_error(&id, "method not found"),
    };
    reply(&id, result)
}

fn text_result(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": false})
}

fn reply(id: &Value, result: Value) -> Response {
    let mut response = Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response();
    upstream_headers(&mut response);
    response
}

fn reply_error(id: &Value, message: &str) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": message}}))
        .into_response()
}

/// The headers at once, the body after `delay`.
fn slow_reply(id: &Value, delay: Duration) -> Response {
    let body =
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "result": text_result("slow")}))
            .unwrap();
    let stream = futures::stream::once(async move {
        tokio::time::sleep(delay).await;
        Ok::<_, Infallible>(Bytes::from(body))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    upstream_headers(&mut response);
    response
}

fn sse_reply(id: &Value, result: Value) -> Response {
    let message = json!({"jsonrpc": "2.0", "id": id, "result": result});
    let mut response = Response::new(Body::from(format!("event: message\ndata: {message}\n\n")));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    upstream_headers(&mut response);
    response
}

async fn mcp_get(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    record(&shared, Method::GET, &uri, &headers);
    if let Some(refusal) = challenge(&shared, &headers) {
        return refusal;
    }
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST, DELETE")],
    )
        .into_response()
}

async fn mcp_delete(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    record(&shared, Method::DELETE, &uri, &headers);
    if let Some(refusal) = challenge(&shared, &headers) {
        return refusal;
    }
    (StatusCode::OK, [("x-upstream-deleted", "yes")]).into_response()
}

/// Records a metadata request; the metadata, or `None` (404) before
/// `demand_bearer`.
fn oauth_request(shared: &Shared, uri: &Uri, headers: &HeaderMap) -> Option<OAuthMetadata> {
    record(shared, Method::GET, uri, headers);
    shared.oauth.lock().unwrap().clone()
}

async fn protected_resource(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(oauth) = oauth_request(&shared, &uri, &headers) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CACHE_CONTROL, "max-age=60"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        Json(json!({
            "resource": oauth.resource,
            "authorization_servers": [oauth.issuer],
            "bearer_methods_supported": ["header"],
        })),
    )
        .into_response()
}

async fn authorization_server(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(oauth) = oauth_request(&shared, &uri, &headers) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // The token endpoint is on the upstream itself, whatever the issuer says.
    let token_endpoint = format!("http://{}/token", shared.address.lock().unwrap().unwrap());
    Json(json!({
        "issuer": oauth.issuer,
        "token_endpoint": token_endpoint,
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["code"],
    }))
    .into_response()
}

async fn token(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    record(&shared, Method::POST, &uri, &headers);
    Json(json!({"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600})).into_response()
}
