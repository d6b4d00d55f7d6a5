//! End to end through the protocol-generation bridge, direction 2: a
//! handshake-era client (the official TypeScript SDK 1.x,
//! `tests/node/handshake_client.mjs`) through a real `mcp-proxy` to the Python
//! SDK 2.x server serving 2026-07-28 only (`tests/python/modern_only_server.py`
//! refuses the handshake with 400): tools listed and called, an elicitation
//! (`InputRequiredResult`) answered, the session kept across an upstream restart.
//!
//! Needs the npm install (`TEST_MCP_NPM_DIR`) and the SDK's venv
//! (`TEST_MCP_PYTHON`); `cargo xtask integration` provides both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{path::PathBuf, process::Stdio};

use common::{
    admin_session, admin_sessions,
    python::{start_modern_only_upstream, upstream_count},
    start_proxy, EXCHANGE_TIMEOUT,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The next JSON line `lines` yields, within [`EXCHANGE_TIMEOUT`] (three times:
/// a phase is several exchanges).
async fn next_json(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = tokio::time::timeout(EXCHANGE_TIMEOUT * 3, lines.next_line())
        .await
        .expect("the handshake client printed nothing in time")
        .unwrap()
        .expect("the handshake client ended without printing");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test]
#[ignore = "needs the npm and PyPI MCP peers: cargo xtask integration"]
async fn a_handshake_client_uses_a_modern_only_upstream_and_keeps_its_session_across_a_restart() {
    let mut upstream = start_modern_only_upstream(0);
    let port = upstream.address.port();
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", "");

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/handshake_client.mjs");
    let mut child = tokio::process::Command::new("node")
        .arg(script)
        .arg(proxy.mcp_url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cannot start node (is it installed?)");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    // initialize answered from server/discover, tools listed and called.
    let first = next_json(&mut lines).await;
    println!("phase 1: {first}");
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
    assert_eq!(
        first["elicited"],
        serde_json::json!(["Confirm launch?"]),
        "{first}"
    );
    let confirm = first["confirm"].as_str().unwrap();
    assert!(
        confirm.starts_with("launch: accept {\"confirmed\": true}"),
        "{first}"
    );
    assert_eq!(upstream_count(&upstream, "asked").await, 1);
    let session = first["session"].as_str().unwrap().to_owned();
    let refused = upstream_count(&upstream, "refused").await;
    println!("handshake requests the upstream refused: {refused}");
    assert!(refused >= 1, "the client's initialize reached the upstream");

    // The upstream restarts (SIGKILL, same port): it kept nothing per client.
    upstream.kill();
    let _upstream = start_modern_only_upstream(port);
    stdin.write_all(b"go\n").await.unwrap();
    stdin.flush().await.unwrap();
    let second = next_json(&mut lines).await;
    println!("phase 2: {second}");
    assert_eq!(second["add"], "9", "{second}");
    assert_eq!(second["session"], session.as_str(), "the session survived");
    let status = tokio::time::timeout(EXCHANGE_TIMEOUT, child.wait())
        .await
        .expect("the handshake client did not end")
        .unwrap();
    assert!(status.success(), "{status}");

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
