//! End to end through the protocol-generation bridge, direction 2: a
//! handshake-era client (the official TypeScript SDK 1.x,
//! `tests/node/handshake_client.mjs`) through a real `mcp-proxy` to the Python
//! SDK 2.x server serving 2026-07-28 only (`tests/python/modern_only_server.py`
//! refuses the handshake with 400): tools listed and called, an elicitation
//! (`InputRequiredResult`) answered, a list-changed notification on the GET
//! stream (`subscriptions/listen`), the session kept across an upstream restart.
//!
//! Needs the npm install (`TEST_MCP_NPM_DIR`) and the SDK's venv
//! (`TEST_MCP_PYTHON`); `cargo xtask integration` provides both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{path::PathBuf, process::Stdio};

use common::{
    admin_session, admin_sessions,
    python::{start_modern_only_upstream, start_python_upstream, upstream_count},
    start_proxy, RawClient, EXCHANGE_TIMEOUT,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};

/// `tests/node/handshake_client.mjs` running: its phase-1 line read on
/// [`HandshakeClient::next_json`], phase 2 started by [`HandshakeClient::go`].
struct HandshakeClient {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: Lines<BufReader<tokio::process::ChildStdout>>,
}

impl HandshakeClient {
    /// Starts it on `url`, its answers to server-to-client requests posted to
    /// `answer_url` when given.
    fn start(url: &str, answer_url: Option<&str>) -> Self {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/handshake_client.mjs");
        let mut command = tokio::process::Command::new("node");
        command.arg(script).arg(url);
        if let Some(answer_url) = answer_url {
            command.arg(answer_url);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start node (is it installed?)");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        HandshakeClient {
            child,
            stdin,
            lines,
        }
    }

    /// The next JSON line it prints, within three [`EXCHANGE_TIMEOUT`]s (a
    /// phase is several exchanges).
    async fn next_json(&mut self) -> Value {
        let line = tokio::time::timeout(EXCHANGE_TIMEOUT * 3, self.lines.next_line())
            .await
            .expect("the handshake client printed nothing in time")
            .unwrap()
            .expect("the handshake client ended without printing");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Starts phase 2 and returns its line, once the client ended well.
    async fn go(&mut self) -> Value {
        self.stdin.write_all(b"go\n").await.unwrap();
        self.stdin.flush().await.unwrap();
        let second = self.next_json().await;
        let status = tokio::time::timeout(EXCHANGE_TIMEOUT, self.child.wait())
            .await
            .expect("the handshake client did not end")
            .unwrap();
        assert!(status.success(), "{status}");
        second
    }
}

/// Phase 1's checks: the server's name, the tools, `add` and the elicitation
/// answered through `confirm`.
fn assert_first_phase(first: &Value) {
    assert_eq!(first["server"]["name"], "e2e-python-upstream", "{first}");
    let tools: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tools.contains(&"add") && tools.contains(&"slow"), "{first}");
    assert_eq!(first["add"], "5", "{first}");
    // The input-required round trip: the elicitation reached the client on the
    // POST's stream, its answer was collected and the call retried with it.
    assert_eq!(first["elicited"], json!(["Confirm launch?"]), "{first}");
    let confirm = first["confirm"].as_str().unwrap();
    assert!(
        confirm.starts_with("launch: accept {\"confirmed\": true}"),
        "{first}"
    );
    // The GET stream is a subscriptions/listen: add_tool's list_changed came.
    assert_eq!(first["notified"], true, "{first}");
}

/// A `[storage]` table on the test Redis with a key prefix of its own.
fn redis_storage() -> String {
    let url = std::env::var("TEST_REDIS_URL")
        .unwrap_or_else(|_| panic!("TEST_REDIS_URL is not set: run `cargo xtask integration`"));
    let prefix = format!("e2e-bridge-handshake-{:08x}:", rand::random::<u32>());
    format!("[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n")
}

#[tokio::test]
#[ignore = "needs the npm and PyPI MCP peers: cargo xtask integration"]
async fn a_handshake_client_uses_a_modern_only_upstream_and_keeps_its_session_across_a_restart() {
    let mut upstream = start_modern_only_upstream(0);
    let port = upstream.address.port();
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", "");

    let mut client = HandshakeClient::start(&proxy.mcp_url(), None);

    // initialize answered from server/discover, tools listed and called.
    let first = client.next_json().await;
    println!("phase 1: {first}");
    assert_first_phase(&first);
    assert_eq!(upstream_count(&upstream, "asked").await, 1);
    let session = first["session"].as_str().unwrap().to_owned();
    let refused = upstream_count(&upstream, "refused").await;
    println!("handshake requests the upstream refused: {refused}");
    assert_eq!(
        refused, 1,
        "only the client's initialize reached the upstream in handshake form"
    );

    // The upstream restarts (SIGKILL, same port): it kept nothing per client.
    upstream.kill();
    let _upstream = start_modern_only_upstream(port);
    let second = client.go().await;
    println!("phase 2: {second}");
    assert_eq!(second["add"], "9", "{second}");
    assert_eq!(second["session"], session.as_str(), "the session survived");

    // One session, tagged; both forms recorded.
    let sessions = admin_sessions(&proxy).await;
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    let view = admin_session(&proxy, &session).await;
    let frames = view["frames"].as_array().unwrap();
    let upstream_form = frames
        .iter()
        .filter(|f| f["headers"]["mcp-proxy-bridge-form"] == "upstream")
        .count();
    let client_form = frames.len() - upstream_form;
    println!("recorded: {client_form} client-form frames, {upstream_form} upstream-form frames");
    assert!(
        frames.iter().any(|f| {
            f["headers"]["mcp-proxy-bridge-form"] == "upstream"
                && f["payload"].as_str().unwrap().contains("server/discover")
        }),
        "the discover answering initialize is recorded: {frames:#?}"
    );
    assert!(
        upstream_form >= 6 && client_form >= 6,
        "both forms of initialize, tools/list and two tools/call: {frames:#?}"
    );
}

#[tokio::test]
#[ignore = "needs the npm and PyPI MCP peers and Redis: cargo xtask integration"]
async fn an_input_answer_posted_to_another_instance_completes_the_call() {
    let upstream = start_modern_only_upstream(0);
    let storage = redis_storage();
    let a = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let b = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let mut client = HandshakeClient::start(&a.mcp_url(), Some(&b.mcp_url()));

    let first = client.next_json().await;
    println!("phase 1 (answers through B): {first}");
    assert_first_phase(&first);
    assert_eq!(first["answersElsewhere"], 1, "{first}");
    let second = client.go().await;
    assert_eq!(second["add"], "9", "{second}");

    // The session is shared: B lists it too.
    let session = first["session"].as_str().unwrap();
    let listed = admin_sessions(&b).await;
    assert!(listed.iter().any(|s| s["id"] == session), "{listed:#?}");
}

#[tokio::test]
#[ignore = "needs the npm and PyPI MCP peers: cargo xtask integration"]
async fn a_server_serving_both_eras_gets_the_handshake_forwarded_unchanged() {
    // The Python SDK server accepts the handshake too (its discover still
    // names only 2026-07-28): the client's initialize opens an upstream session.
    let upstream = start_python_upstream();
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", "");
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    let listed = client
        .post(
            &proxy.mcp_url(),
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
        .await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let messages = listed.messages();
    assert!(
        messages.iter().any(|m| m["result"]["tools"].is_array()),
        "{messages:#?}"
    );
    let view = admin_session(&proxy, client.session.as_deref().unwrap()).await;
    println!("session: {}", view["session"]);
    assert!(
        view["session"]["upstream_session_id"].is_string(),
        "the upstream opened a session of its own: {view:#}"
    );
    assert!(
        view["session"]["tags"].get("bridge").is_none(),
        "not bridged: {view:#}"
    );
}
