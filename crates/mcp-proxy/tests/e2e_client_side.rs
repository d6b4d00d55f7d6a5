//! End to end, the client side of the proxy: `Origin` admission, sessions bound to
//! the user (not the token), the admin listener, and the connection and client
//! limits, with the real `mcp-proxy` binary on the memory store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use common::{
    admin_session, metric, metrics, start_proxy, start_upstream, RawClient, EXCHANGE_TIMEOUT,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const MEMORY: &str = "[storage]\nbackend = \"memory\"\n";

fn initialize() -> Value {
    json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},
        "clientInfo":{"name":"client-side-test","version":"1"}}})
}

fn tools_list() -> Value {
    json!({"jsonrpc":"2.0","id":1,"method":"tools/list"})
}

/// A bearer JWT with these claims (unsigned: the proxy never verifies tokens).
fn jwt(claims: Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("Bearer {header}.{payload}.c2lnbmF0dXJl")
}

/// An upstream that accepts connections, counts them, and never answers.
async fn counting_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (url, seen)
}

async fn send(
    method: reqwest::Method,
    url: &str,
    origin: Option<&str>,
    session: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .timeout(EXCHANGE_TIMEOUT)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(initialize().to_string());
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request.send().await.unwrap()
}

/// The demo upstream and a proxy in front of it with `proxy_keys`, on the memory
/// store.
fn proxy_with(proxy_keys: &str) -> (common::Process, common::Process) {
    let upstream = start_upstream();
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", proxy_keys, MEMORY);
    (upstream, proxy)
}

/// GET `path` on the admin listener with `token` as bearer, if any.
async fn admin_get(proxy: &common::Process, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(proxy.admin_url(path))
        .timeout(EXCHANGE_TIMEOUT);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn session_count(proxy: &common::Process) -> usize {
    let listing: Value = reqwest::get(proxy.admin_url("/sessions"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listing["sessions"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_foreign_origin_is_403_and_never_reaches_the_upstream_or_the_store() {
    let (upstream, seen) = counting_upstream().await;
    let proxy = start_proxy(
        &upstream,
        "127.0.0.1:0",
        "upstream_timeout = \"1s\"",
        MEMORY,
    );
    let url = proxy.mcp_url();
    for method in [
        reqwest::Method::POST,
        reqwest::Method::GET,
        reqwest::Method::DELETE,
    ] {
        for origin in [
            "http://evil.example",
            "null",
            "http://localhost.evil.example",
        ] {
            let response = send(method.clone(), &url, Some(origin), Some("s1")).await;
            assert_eq!(response.status(), 403, "{method} from {origin}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["jsonrpc"], "2.0");
            assert!(body["id"].is_null());
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("allowed_origins"),
                "{body}"
            );
        }
    }
    let refused = send(
        reqwest::Method::POST,
        &url,
        Some("https://evil.example"),
        None,
    )
    .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "the upstream saw a refused request"
    );
    assert_eq!(session_count(&proxy).await, 0);

    // A loopback origin and no origin at all pass (to the silent upstream: 504).
    let local = send(
        reqwest::Method::POST,
        &url,
        Some("http://localhost:6274"),
        None,
    )
    .await;
    assert_eq!(local.status(), 504);
    let plain = send(reqwest::Method::POST, &url, None, None).await;
    assert_eq!(plain.status(), 504);
    assert!(seen.load(Ordering::SeqCst) >= 1);
    let text = metrics(&proxy).await;
    assert_eq!(
        metric(&text, "mcp_proxy_rejected_total{reason=\"origin\"}"),
        10.0
    );
    println!(
        "refused 10 foreign origins; upstream connections after the 2 allowed requests: {}",
        seen.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn configured_origins_replace_the_loopback_default() {
    let (_upstream, proxy) = proxy_with("allowed_origins = [\"https://app.example.com\"]");
    let url = proxy.mcp_url();
    let allowed = send(
        reqwest::Method::POST,
        &url,
        Some("https://app.example.com"),
        None,
    )
    .await;
    assert_eq!(allowed.status(), 200);
    let loopback = send(
        reqwest::Method::POST,
        &url,
        Some("http://localhost:3000"),
        None,
    )
    .await;
    assert_eq!(loopback.status(), 403);
}

/// Initializes with `authorization` and returns the client (holding the session).
async fn client_with(url: &str, authorization: Option<String>) -> RawClient {
    let mut client = RawClient::new();
    client.authorization = authorization;
    client.initialize(url).await;
    client
}

/// The status of `tools/list` on `client`'s session with `authorization` instead.
async fn list_with(url: &str, client: &RawClient, authorization: Option<String>) -> u16 {
    let mut other = RawClient::new();
    other.session = client.session.clone();
    other.authorization = authorization;
    other.post(url, &tools_list()).await.status.as_u16()
}

#[tokio::test]
async fn subject_binding_keeps_the_session_across_token_refresh_and_refuses_others() {
    let (_upstream, proxy) = proxy_with("");
    let url = proxy.mcp_url();
    let alice = |exp: u64| {
        Some(jwt(
            json!({"iss":"https://as.example","sub":"alice","exp":exp}),
        ))
    };
    let client = client_with(&url, alice(1)).await;

    let view = admin_session(&proxy, client.session.as_deref().unwrap()).await;
    let tags = &view["session"]["tags"];
    let binding = tags["binding"].as_str().unwrap();
    assert!(binding.starts_with("sub:"), "{tags}");
    assert!(tags.get("credential_sha256").is_none(), "{tags}");
    assert!(!binding.contains("alice"), "{binding}");

    assert_eq!(list_with(&url, &client, alice(1)).await, 200, "same token");
    assert_eq!(
        list_with(&url, &client, alice(2)).await,
        200,
        "refreshed token"
    );
    let bob = jwt(json!({"iss":"https://as.example","sub":"bob","exp":1}));
    assert_eq!(
        list_with(&url, &client, Some(bob)).await,
        404,
        "another user"
    );
    let other_issuer = jwt(json!({"iss":"https://other.example","sub":"alice"}));
    assert_eq!(
        list_with(&url, &client, Some(other_issuer)).await,
        404,
        "another issuer"
    );
    assert_eq!(list_with(&url, &client, None).await, 404, "missing token");

    // An opaque token binds to itself, as before.
    let opaque = client_with(&url, Some("Bearer opaque-1".into())).await;
    let view = admin_session(&proxy, opaque.session.as_deref().unwrap()).await;
    assert!(view["session"]["tags"]["binding"]
        .as_str()
        .unwrap()
        .starts_with("tok:"));
    assert_eq!(
        list_with(&url, &opaque, Some("Bearer opaque-1".into())).await,
        200
    );
    assert_eq!(
        list_with(&url, &opaque, Some("Bearer opaque-2".into())).await,
        404
    );
    assert_eq!(list_with(&url, &opaque, None).await, 404);

    // A session initialized without a token is unbound and refuses tokens.
    let anonymous = client_with(&url, None).await;
    assert_eq!(list_with(&url, &anonymous, None).await, 200);
    assert_eq!(list_with(&url, &anonymous, alice(1)).await, 404);
}

#[tokio::test]
async fn token_binding_ends_the_session_on_refresh_and_none_binds_nothing() {
    let upstream = start_upstream();
    let alice = |exp: u64| {
        Some(jwt(
            json!({"iss":"https://as.example","sub":"alice","exp":exp}),
        ))
    };

    let token_mode = start_proxy(
        &upstream.mcp_url(),
        "127.0.0.1:0",
        "session_binding = \"token\"",
        MEMORY,
    );
    let url = token_mode.mcp_url();
    let client = client_with(&url, alice(1)).await;
    assert_eq!(list_with(&url, &client, alice(1)).await, 200);
    assert_eq!(
        list_with(&url, &client, alice(2)).await,
        404,
        "refreshed token"
    );

    let none_mode = start_proxy(
        &upstream.mcp_url(),
        "127.0.0.1:0",
        "session_binding = \"none\"",
        MEMORY,
    );
    let url = none_mode.mcp_url();
    let client = client_with(&url, alice(1)).await;
    let view = admin_session(&none_mode, client.session.as_deref().unwrap()).await;
    assert!(view["session"]["tags"].get("binding").is_none(), "{view}");
    assert_eq!(list_with(&url, &client, None).await, 200);
    assert_eq!(list_with(&url, &client, Some("Bearer x".into())).await, 200);
}

#[tokio::test]
async fn admin_endpoints_live_only_on_the_admin_listener_behind_the_token() {
    let token = "admin-token-for-the-test-0123";
    let (_upstream, proxy) = proxy_with(&format!("admin_token = \"{token}\""));
    let http = reqwest::Client::new();
    for path in ["/sessions", "/sessions/abc", "/metrics"] {
        let on_mcp = http.get(proxy.url(path)).send().await.unwrap();
        assert_eq!(on_mcp.status(), 404, "{path} on the MCP listener");
        let anonymous = admin_get(&proxy, path, None).await;
        assert_eq!(anonymous.status(), 401, "{path} without the token");
        assert!(anonymous.headers().contains_key("www-authenticate"));
        let wrong = admin_get(&proxy, path, Some("admin-token-for-the-test-0124")).await;
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
    }
    assert_eq!(
        admin_get(&proxy, "/sessions", Some(token)).await.status(),
        200
    );
    let text = admin_get(&proxy, "/metrics", Some(token))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&text, "mcp_proxy_rejected_total{reason=\"admin_token\"}"),
        6.0
    );
    // A method no client should grow a label with is counted as `other`.
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    let _ = http.request(brew, proxy.mcp_url()).send().await.unwrap();
    let text = admin_get(&proxy, "/metrics", Some(token))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("mcp_proxy_http_requests_total{method=\"other\",status=\"405\"} 1"),
        "{text}"
    );
    assert!(!text.contains("BREW"));
    // /healthz is on both listeners (the admin one behind the token).
    let health = http.get(proxy.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        admin_get(&proxy, "/healthz", Some(token)).await.status(),
        200
    );
}

#[test]
fn a_config_with_admin_endpoints_is_refused_with_the_replacement() {
    let config = common::scratch_path("admin-endpoints.toml");
    std::fs::write(
        &config,
        "[proxy]\nupstream = \"http://127.0.0.1:9/mcp\"\nadmin_endpoints = true\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
        .env_clear()
        .envs(common::coverage_env())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("admin_endpoints") && stderr.contains("admin_listen"),
        "{stderr}"
    );
}

/// Reads until EOF or error (a closed connection), at most `limit`; whether it
/// closed.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn half_open_connections_are_closed_after_the_header_read_timeout() {
    let (_upstream, proxy) = proxy_with("header_read_timeout = \"1s\"");
    let started = Instant::now();
    let mut connections = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(proxy.address).await.unwrap();
        stream
            .write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
            .await
            .unwrap();
        connections.push(stream);
    }
    // One that sends nothing at all is a half-open connection too.
    connections.push(TcpStream::connect(proxy.address).await.unwrap());
    let mut closed = 0;
    for stream in &mut connections {
        closed += usize::from(closed_within(stream, EXCHANGE_TIMEOUT).await);
    }
    println!(
        "{closed} of {} half-open connections closed; the last after {:?} (header_read_timeout 1s)",
        connections.len(),
        started.elapsed()
    );
    assert_eq!(closed, connections.len());
    // The proxy still serves complete requests.
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    let text = metrics(&proxy).await;
    assert_eq!(
        metric(&text, "mcp_proxy_rejected_total{reason=\"header_timeout\"}"),
        51.0,
        "{text}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (_upstream, proxy) = proxy_with("idle_timeout = \"1s\"\nheader_read_timeout = \"5s\"");
    let mut stream = TcpStream::connect(proxy.address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut response = vec![0u8; 4096];
    let read = stream.read(&mut response).await.unwrap();
    assert!(
        response[..read].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&response[..read])
    );
    let started = Instant::now();
    assert!(closed_within(&mut stream, EXCHANGE_TIMEOUT).await);
    println!(
        "idle keep-alive connection closed after {:?} (idle_timeout 1s)",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_connection_cap_holds_and_a_waiting_connection_is_served_when_one_closes() {
    let (_upstream, proxy) = proxy_with("max_connections = 2\nheader_read_timeout = \"30s\"");
    let first = TcpStream::connect(proxy.address).await.unwrap();
    let _second = TcpStream::connect(proxy.address).await.unwrap();
    // A third client: its connection waits in the accept queue.
    let health = proxy.url("/healthz");
    let waiting = tokio::spawn(async move {
        reqwest::Client::new()
            .get(health)
            .timeout(EXCHANGE_TIMEOUT)
            .send()
            .await
            .map(|response| response.status())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served while 2 were open"
    );
    drop(first);
    let status = waiting.await.unwrap().unwrap();
    assert_eq!(status, 200);
    let text = metrics(&proxy).await;
    assert!(
        metric(&text, "mcp_proxy_connections_waited_total") >= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn the_per_client_session_cap_answers_429_with_retry_after() {
    let (_upstream, proxy) = proxy_with("max_sessions_per_client = 3\ninitialize_rate = \"off\"");
    let url = proxy.mcp_url();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(client_with(&url, None).await);
    }
    let refused = RawClient::new().post(&url, &initialize()).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert!(
        refused.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let body = refused.json.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_sessions_per_client"),
        "{body}"
    );
    // Another user (by its binding) has its own count.
    let other = client_with(&url, Some(jwt(json!({"iss":"a","sub":"bob"})))).await;
    assert!(other.session.is_some());
    // Ending a session frees its place.
    assert!(clients[0].delete(&url).await.is_success());
    client_with(&url, None).await;
    assert_eq!(session_count(&proxy).await, 4);
    let text = metrics(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "mcp_proxy_rejected_total{reason=\"sessions_per_client\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn the_initialize_rate_answers_429_with_retry_after() {
    let (_upstream, proxy) = proxy_with("max_sessions_per_client = 0\ninitialize_rate = \"3/min\"");
    let url = proxy.mcp_url();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let reply = RawClient::new().post(&url, &initialize()).await;
        if reply.status == 429 {
            retry_after = reply
                .headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
        }
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let retry_after: u64 = retry_after.unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(session_count(&proxy).await, 3);
    let text = metrics(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "mcp_proxy_rejected_total{reason=\"initialize_rate\"}"
        ),
        2.0
    );
}

#[cfg(unix)]
#[tokio::test]
async fn after_sigterm_new_connections_are_refused_while_a_stream_finishes() {
    let (_upstream, mut proxy) = proxy_with("");
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    let call = json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{
        "name":"countdown","arguments":{"from":20,"interval_ms":100},"_meta":{"progressToken":"t"}}});
    let stream = client.post_stream(&proxy.mcp_url(), &call).await;
    let reading = tokio::spawn(common::read_reply(stream));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut refused_after = None;
    for attempt in 0..100 {
        if TcpStream::connect(proxy.address).await.is_err() {
            refused_after = Some(attempt);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!reading.is_finished(), "the stream ended before the check");
    assert!(
        refused_after.is_some(),
        "new connections were still accepted"
    );
    let reply = reading.await.unwrap();
    let (progress, results) = common::countdown_messages(&reply.messages());
    assert_eq!(progress.len(), 20);
    assert_eq!(results, ["countdown from 20 done"]);
    assert_eq!(proxy.wait_exit(EXCHANGE_TIMEOUT), Some(0));
    println!(
        "connections refused {} attempts after SIGTERM",
        refused_after.unwrap_or(0)
    );
}
