//! End to end through the protocol-generation bridge: the official Python MCP
//! SDK 2.x client speaking 2026-07-28 (`tests/python/bridge_client.py`) through
//! real `mcp-proxy` processes to `@modelcontextprotocol/server-everything`, which
//! speaks only the handshake revisions.
//!
//! Needs the SDK's venv (`TEST_MCP_PYTHON`) and the npm install
//! (`TEST_MCP_NPM_DIR`); the two-instance cases also need Redis
//! (`TEST_REDIS_URL`). `cargo xtask integration` provides all three.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    admin_session, admin_sessions,
    everything::{CountingForwarder, Everything},
    python::{python, run_to_json, script},
    start_proxy, Process, EXCHANGE_TIMEOUT,
};
use serde_json::{json, Value};

/// Two request-state keys: instance A seals with the first, instance B (rotated)
/// seals with the second and still opens A's.
const KEY_OLD: &str = "bridge-test-key-old-0123456789abcdef";
const KEY_NEW: &str = "bridge-test-key-new-0123456789abcdef";

/// Runs `bridge_client.py <url> [--retry-url retry] <args>` to its end (bounded)
/// and returns the JSON line it printed.
async fn bridge_client(url: &str, retry_url: Option<&str>, args: &[&str]) -> Value {
    let mut command = tokio::process::Command::new(python());
    command.arg(script("bridge_client.py")).arg(url);
    if let Some(retry_url) = retry_url {
        command.args(["--retry-url", retry_url]);
    }
    command.args(args);
    let what = format!("bridge client {args:?}");
    run_to_json(command, EXCHANGE_TIMEOUT * 3, &what).await
}

/// A `[storage]` table on the test Redis with a key prefix of its own.
fn redis_storage() -> String {
    let url = std::env::var("TEST_REDIS_URL")
        .unwrap_or_else(|_| panic!("TEST_REDIS_URL is not set: run `cargo xtask integration`"));
    let prefix = format!("e2e-bridge-{:08x}:", rand::random::<u32>());
    format!("[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n")
}

/// Two proxy instances on one Redis in front of `upstream`, A sealing with
/// [`KEY_OLD`], B rotated to [`KEY_NEW`] first.
fn two_instances(upstream: &str) -> (Process, Process) {
    let storage = redis_storage();
    let a = start_proxy(
        upstream,
        "127.0.0.1:0",
        &format!("bridge_request_state_keys = [\"{KEY_OLD}\"]"),
        &storage,
    );
    let b = start_proxy(
        upstream,
        "127.0.0.1:0",
        &format!("bridge_request_state_keys = [\"{KEY_NEW}\", \"{KEY_OLD}\"]"),
        &storage,
    );
    (a, b)
}

fn texts(reply: &Value) -> String {
    reply["text"].to_string()
}

#[tokio::test]
#[ignore = "needs the npm and PyPI MCP peers: cargo xtask integration"]
async fn a_modern_client_uses_a_handshake_only_server_through_two_instances() {
    let upstream = Everything::start();
    let (a, b) = two_instances(&upstream.mcp_url());

    let discovered = bridge_client(&a.mcp_url(), None, &["discover"]).await;
    assert_eq!(discovered["protocolVersion"], "2026-07-28", "{discovered}");

    let tools = bridge_client(&b.mcp_url(), None, &["list-tools"]).await;
    let names = tools["tools"].as_array().unwrap();
    for tool in [
        "echo",
        "trigger-long-running-operation",
        "trigger-elicitation-request",
    ] {
        assert!(names.contains(&json!(tool)), "{tool} missing: {tools}");
    }

    let echoed = bridge_client(&a.mcp_url(), None, &["call", "echo", r#"{"message":"hi"}"#]).await;
    assert_eq!(echoed["text"], json!(["Echo: hi"]), "{echoed}");

    let progress = bridge_client(&b.mcp_url(), None, &["progress", "3"]).await;
    println!("progress notifications relayed: {}", progress["progress"]);
    assert_eq!(progress["progress"], json!([1.0, 2.0, 3.0]), "{progress}");
    assert!(texts(&progress).contains("completed"), "{progress}");

    // The elicitation is raised on A's upstream stream; the client's answer goes
    // to B, which opens A's requestState with its second key.
    let elicited = bridge_client(&a.mcp_url(), Some(&b.mcp_url()), &["elicit"]).await;
    println!(
        "elicitation retries sent to the other instance: {}",
        elicited["rerouted"]
    );
    assert!(elicited["rerouted"].as_u64().unwrap() >= 1, "{elicited}");
    assert!(texts(&elicited).contains("Ada"), "{elicited}");

    // Sampling takes the same road (A seals with the key B still opens).
    let sampled = bridge_client(
        &a.mcp_url(),
        Some(&b.mcp_url()),
        &["sample", "hello bridge"],
    )
    .await;
    assert!(sampled["rerouted"].as_u64().unwrap() >= 1, "{sampled}");
    assert!(texts(&sampled).contains("sampled: "), "{sampled}");
    assert!(texts(&sampled).contains("hello bridge"), "{sampled}");
}

/// A 2026-07-28 `tools/list` with capabilities `{}`.
fn modern_list(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "racer", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }}})
}

#[tokio::test]
#[ignore = "needs the npm and PyPI MCP peers: cargo xtask integration"]
async fn racing_first_requests_on_two_instances_open_one_upstream_session() {
    let upstream = Everything::start();
    let counting = CountingForwarder::start(&upstream.mcp_url()).await;
    let (a, b) = two_instances(&counting.mcp_url());
    let client = reqwest::Client::new();
    let requests = (0..8u64).map(|id| {
        let url = if id % 2 == 0 {
            a.mcp_url()
        } else {
            b.mcp_url()
        };
        let request = client
            .post(url)
            .timeout(EXCHANGE_TIMEOUT)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/list")
            .body(modern_list(id).to_string());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (
                status,
                String::from_utf8_lossy(&response.bytes().await.unwrap()).into_owned(),
            )
        }
    });
    let replies = futures::future::join_all(requests).await;
    for (status, body) in &replies {
        assert!(status.is_success(), "{status}: {body}");
        assert!(body.contains("\"echo\""), "{body}");
    }
    println!(
        "upstream initialize requests for 8 racing first requests: {}",
        counting.initializes()
    );
    assert_eq!(counting.initializes(), 1);
}

#[tokio::test]
#[ignore = "needs the npm and PyPI MCP peers: cargo xtask integration"]
async fn restarting_the_handshake_upstream_mid_test_loses_no_client() {
    let mut upstream = Everything::start();
    let address = upstream.address;
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", "");
    let url = proxy.mcp_url();

    let before = bridge_client(&url, None, &["call", "echo", r#"{"message":"before"}"#]).await;
    assert_eq!(before["text"], json!(["Echo: before"]), "{before}");

    upstream.kill();
    let _restarted = Everything::start_on(address);

    // The pooled upstream session is gone with the old process: the bridge
    // answers 404 by opening a new one, and the client sees nothing of it.
    let after = bridge_client(&url, None, &["call", "echo", r#"{"message":"after"}"#]).await;
    assert_eq!(after["text"], json!(["Echo: after"]), "{after}");
    let elicited = bridge_client(&url, None, &["elicit"]).await;
    assert!(texts(&elicited).contains("Ada"), "{elicited}");

    // Both forms are recorded: the client's, and the upstream's marked.
    let sessions = admin_sessions(&proxy).await;
    let session = sessions
        .iter()
        .find(|s| s["client_info"]["clientInfo"]["name"] == "e2e-bridge-client")
        .unwrap_or_else(|| panic!("no per-client session: {sessions:#?}"));
    let view = admin_session(&proxy, session["id"].as_str().unwrap()).await;
    let frames = view["frames"].as_array().unwrap();
    let upstream_form = |direction: &str| {
        frames
            .iter()
            .filter(|f| {
                f["direction"] == direction && f["headers"]["mcp-proxy-bridge-form"] == "upstream"
            })
            .count()
    };
    let (sent, received) = (
        upstream_form("client_to_server"),
        upstream_form("server_to_client"),
    );
    let client_form = frames.iter().filter(|f| f.get("headers").is_none()).count();
    println!("recorded: {client_form} client-form frames, {sent} sent to and {received} from the upstream");
    assert!(
        sent >= 3 && received >= 3 && client_form >= 3,
        "{frames:#?}"
    );
    assert!(
        frames
            .iter()
            .any(|f| f["payload"].as_str().unwrap().contains("\"initialize\"")),
        "the re-opening initialize is recorded: {frames:#?}"
    );
}

#[tokio::test]
#[ignore = "needs the npm and PyPI MCP peers: cargo xtask integration"]
async fn subscriptions_listen_rides_the_upstream_sessions_get_stream() {
    let upstream = Everything::start();
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", "");
    let uri = "demo://resource/static/document/architecture.md";
    let event = bridge_client(&proxy.mcp_url(), None, &["listen-resource", uri]).await;
    assert_eq!(event["honored"], json!([uri]), "{event}");
    assert_eq!(event["event"], "ResourceUpdated", "{event}");
}

#[tokio::test]
#[ignore = "needs the npm and PyPI MCP peers: cargo xtask integration"]
async fn with_the_bridge_off_a_modern_request_reaches_the_upstream_unchanged() {
    let upstream = Everything::start();
    let counting = CountingForwarder::start(&upstream.mcp_url()).await;
    let proxy = start_proxy(&counting.mcp_url(), "127.0.0.1:0", "bridge = \"off\"", "");
    let response = reqwest::Client::new()
        .post(proxy.mcp_url())
        .timeout(EXCHANGE_TIMEOUT)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .body(modern_list(1).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = String::from_utf8_lossy(&response.bytes().await.unwrap()).into_owned();
    // server-everything refuses a request without a session, and no upstream
    // session was opened for it.
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Server not initialized"), "{body}");
    assert_eq!(counting.initializes(), 0);
}
