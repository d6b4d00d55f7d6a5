//! End to end over the memory store: the real `mcp-proxy` binary in front of the
//! rmcp demo upstream, driven by an rmcp client and by raw HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};

use common::{
    admin_session, countdown_messages, metrics, read_events, start_proxy, start_upstream,
    start_upstream_with, RawClient, EXCHANGE_TIMEOUT,
};
use mcp_proxy::event_id::ProxyEventId;
use rmcp::{
    model::{
        CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
    },
    transport::StreamableHttpClientTransport,
    ServiceExt,
};
use serde_json::{json, Value};

const MEMORY: &str = "[storage]\nbackend = \"memory\"\n";

#[tokio::test]
async fn rmcp_client_works_through_the_proxy_and_every_message_is_recorded() {
    rmcp_session_through_the_proxy(ProtocolVersion::V_2025_06_18).await;
}

#[tokio::test]
async fn rmcp_client_on_2025_11_25_works_through_the_proxy() {
    rmcp_session_through_the_proxy(ProtocolVersion::V_2025_11_25).await;
}

async fn rmcp_session_through_the_proxy(version: ProtocolVersion) {
    let upstream = start_upstream();
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", MEMORY);

    let transport = StreamableHttpClientTransport::from_uri(proxy.mcp_url());
    let info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("e2e-rmcp-client", "1.0"),
    )
    .with_protocol_version(version.clone());
    let client = info.serve(transport).await.unwrap();
    let server = client.peer_info().unwrap();
    assert_eq!(server.server_info.as_ref().unwrap().name, "demo-upstream");

    let tools = client.list_tools(None).await.unwrap();
    let mut names: Vec<&str> = tools.tools.iter().map(|tool| tool.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(names, ["add", "countdown", "echo"]);

    let sum = client
        .call_tool(
            CallToolRequestParams::new("add")
                .with_arguments(json!({"a": 20, "b": 22}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(&sum.content).unwrap()[0]["text"], "42");
    let echo = client
        .call_tool(
            CallToolRequestParams::new("echo").with_arguments(
                json!({"text": "through the proxy"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&echo.content).unwrap()[0]["text"],
        "through the proxy"
    );

    // The store holds one session with both sides of the handshake and every message.
    let listing: Value = serde_json::from_slice(
        &reqwest::get(proxy.admin_url("/sessions"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let sessions = listing["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{listing}");
    let id = sessions[0]["id"].as_str().unwrap();
    let view = admin_session(&proxy, id).await;
    let session = &view["session"];
    assert_eq!(session["status"], "active");
    assert_eq!(session["protocol_version"], version.as_str());
    assert_eq!(
        session["client_info"]["clientInfo"]["name"],
        "e2e-rmcp-client"
    );
    assert_eq!(
        session["server_info"]["serverInfo"]["name"],
        "demo-upstream"
    );
    assert!(session["upstream_session_id"].is_string());
    assert_ne!(session["upstream_session_id"], session["id"], "dual ids");

    let frames = view["frames"].as_array().unwrap();
    let payloads = |direction: &str| -> Vec<Value> {
        frames
            .iter()
            .filter(|frame| frame["direction"] == direction)
            .map(|frame| serde_json::from_str(frame["payload"].as_str().unwrap()).unwrap())
            .collect()
    };
    let sent = payloads("client_to_server");
    let received = payloads("server_to_client");
    let methods: Vec<&str> = sent.iter().filter_map(|m| m["method"].as_str()).collect();
    assert_eq!(
        methods,
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "tools/call",
            "tools/call"
        ]
    );
    // One response per request, each recorded with the id of the request.
    let request_ids: Vec<&Value> = sent
        .iter()
        .filter(|m| m.get("id").is_some())
        .map(|m| &m["id"])
        .collect();
    let response_ids: Vec<&Value> = received
        .iter()
        .filter(|m| m.get("result").is_some())
        .map(|m| &m["id"])
        .collect();
    assert_eq!(request_ids, response_ids);
    assert_eq!(
        session["frame_count"].as_u64().unwrap(),
        frames.len() as u64
    );

    client.cancel().await.unwrap();
}

#[tokio::test]
async fn refusals_have_the_statuses_the_spec_and_the_brief_ask_for() {
    let upstream = start_upstream();
    let proxy = start_proxy(
        &upstream.mcp_url(),
        "127.0.0.1:0",
        "max_body_bytes = 2048",
        MEMORY,
    );
    let url = proxy.mcp_url();
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});

    let mut client = RawClient::new();
    // No session id on a request other than initialize: 400.
    let missing = client.post(&url, &list).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json.as_ref().unwrap()["error"]["code"], -32600);
    // An id the proxy never issued: 404.
    client.session = Some("0123456789abcdef0123456789abcdef".into());
    assert_eq!(client.post(&url, &list).await.status, 404);
    // Not JSON: 400 with a parse error.
    client.session = None;
    let garbage = client.post_bytes(&url, b"{not json".to_vec()).await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.json.as_ref().unwrap()["error"]["code"], -32700);
    // Larger than max_body_bytes: 413.
    client.initialize(&url).await;
    let big = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{
        "name":"echo","arguments":{"text":"x".repeat(4096)}}});
    let too_large = client.post(&url, &big).await;
    assert_eq!(too_large.status, 413);
    assert!(too_large.json.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_body_bytes"));
    // GET without a session: 400; with an unknown Last-Event-ID format: 400.
    let bare = reqwest::Client::new()
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 400);
    let foreign = client.resume(&url, "not-ours").await;
    assert_eq!(foreign.status, 400);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_with_a_json_rpc_error() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let proxy = start_proxy(
        &format!("http://127.0.0.1:{closed_port}/mcp"),
        "127.0.0.1:0",
        "",
        MEMORY,
    );
    let mut client = RawClient::new();
    let reply = client
        .post(
            &proxy.mcp_url(),
            &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
        )
        .await;
    assert_eq!(reply.status, 502);
    let body = reply.json.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unreachable"));
    // No session was created for the failed initialize.
    client.session = None;
    let listing: Value = serde_json::from_slice(
        &reqwest::get(proxy.admin_url("/sessions"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(listing["sessions"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_cut_sse_stream_resumes_with_exactly_the_missed_events() {
    let upstream = start_upstream();
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", MEMORY);
    let url = proxy.mcp_url();
    let mut client = RawClient::new();
    client.initialize(&url).await;

    let call = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{
        "name":"countdown","arguments":{"from":6,"interval_ms":100},"_meta":{"progressToken":"cut"}}});
    let stream = client.post_stream(&url, &call).await;
    let first = tokio::time::timeout(EXCHANGE_TIMEOUT, read_events(stream, 2))
        .await
        .unwrap();
    // The stream is dropped here: the client is gone, the proxy keeps recording.
    let last_id = first.last().unwrap().id.clone().unwrap();
    let parsed: ProxyEventId = last_id.parse().unwrap();
    assert!(parsed.stream.as_str().starts_with('r'));

    let resumed = client.resume(&url, &last_id).await;
    assert_eq!(resumed.status, 200);
    let mut messages: Vec<Value> = first
        .iter()
        .filter(|event| !event.data.is_empty())
        .map(|event| serde_json::from_str(&event.data).unwrap())
        .collect();
    messages.extend(resumed.messages());
    let (progress, results) = countdown_messages(&messages);
    assert_eq!(progress, [1, 2, 3, 4, 5, 6], "none lost, none repeated");
    assert_eq!(results, ["countdown from 6 done"]);
    // Every resumed event names the same stream, after the last one seen.
    for event in resumed.events.iter().filter(|event| !event.data.is_empty()) {
        let id: ProxyEventId = event.id.as_deref().unwrap().parse().unwrap();
        assert_eq!(id.stream, parsed.stream);
        assert!(id.frame > parsed.frame);
    }
    // Resuming from the end gives nothing more.
    let last_of_all = resumed.events.last().unwrap().id.clone().unwrap();
    assert!(client
        .resume(&url, &last_of_all)
        .await
        .messages()
        .is_empty());
}

#[tokio::test]
async fn delete_ends_the_session_and_credentials_bind_it() {
    let upstream = start_upstream();
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", MEMORY);
    let url = proxy.mcp_url();
    let mut client = RawClient::new();
    client.authorization = Some("Bearer alice".into());
    client.initialize(&url).await;
    let session = client.session.clone().unwrap();
    let view = admin_session(&proxy, &session).await;
    // An opaque token: bound to a keyed hash of the token (docs/proxy.md).
    let binding = view["session"]["tags"]["binding"].as_str().unwrap();
    assert!(
        binding.starts_with("tok:") && binding.len() == 68,
        "{binding}"
    );

    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
    assert_eq!(client.post(&url, &list).await.status, 200);
    let mut thief = RawClient::new();
    thief.session = Some(session.clone());
    assert_eq!(thief.post(&url, &list).await.status, 404, "no credentials");
    thief.authorization = Some("Bearer mallory".into());
    assert_eq!(
        thief.post(&url, &list).await.status,
        404,
        "other credentials"
    );
    assert_eq!(thief.delete(&url).await, 404);

    assert!(client.delete(&url).await.is_success());
    assert_eq!(client.post(&url, &list).await.status, 404);
    assert_eq!(client.delete(&url).await, 404);
}

#[tokio::test]
async fn health_and_metrics_report_the_store_and_the_traffic() {
    let upstream = start_upstream();
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", MEMORY);
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    let reply = client
        .call_tool(&proxy.mcp_url(), 1, "add", json!({"a": 1, "b": 2}))
        .await;
    assert_eq!(reply.status, 200);

    let health = reqwest::get(proxy.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let health: Value = serde_json::from_slice(&health.bytes().await.unwrap()).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["backend"], "memory");
    // Whole microseconds: at most 3 decimals of a millisecond, no float noise.
    let latency = health["latency_ms"].to_string();
    assert!(
        latency
            .split_once('.')
            .is_none_or(|(_, decimals)| decimals.len() <= 3),
        "{latency}"
    );
    // Each listener's start line names the listener; only the MCP one a backend.
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    let line = |what: &str| {
        log.lines()
            .find(|line| line.contains(what))
            .unwrap_or_else(|| panic!("no `{what}` line in\n{log}"))
            .to_owned()
    };
    let (mcp, admin) = (
        line("mcp-proxy listening"),
        line("mcp-proxy admin listening"),
    );
    println!("start lines:\n{mcp}\n{admin}");
    assert!(
        mcp.contains("listener=\"mcp\"")
            && mcp.contains("backend=\"memory\"")
            && mcp.contains("state=\"ok\""),
        "{mcp}"
    );
    assert!(
        admin.contains("listener=\"admin\"")
            && !admin.contains("backend")
            && !admin.contains("state"),
        "{admin}"
    );

    let metrics = reqwest::get(proxy.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "mcp_proxy_sessions_created_total 1",
        "mcp_proxy_active_sessions 1",
        "mcp_proxy_frames_appended_total{direction=\"client_to_server\"} 3",
        "mcp_proxy_store_operation_duration_seconds_count{operation=\"append_frame\"}",
        "mcp_proxy_http_requests_total{method=\"POST\",status=\"202\"} 1",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn sessionless_requests_get_no_session_id_and_are_recorded_per_client_unless_off() {
    let upstream = start_upstream();
    for (record_stateless, recorded) in [("per-client", 1), ("off", 0)] {
        let proxy = start_proxy(
            &upstream.mcp_url(),
            "127.0.0.1:0",
            &format!("record_stateless = \"{record_stateless}\""),
            MEMORY,
        );
        let response = modern_tools_call(
            &proxy.mcp_url(),
            "add",
            json!({"a": 1, "b": 2}),
            json!({"io.modelcontextprotocol/clientInfo":{"name":"sessionless","version":"1"}}),
        )
        .await;
        assert!(response.headers().get("mcp-session-id").is_none());
        let reply = common::read_reply(response).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let messages = reply.messages();
        assert_eq!(
            messages.last().unwrap()["result"]["content"][0]["text"],
            "3"
        );
        let listing: Value = serde_json::from_slice(
            &reqwest::get(proxy.admin_url("/sessions"))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        let sessions = listing["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), recorded, "{record_stateless}: {listing}");
        if let Some(session) = sessions.first() {
            assert_eq!(session["protocol_version"], "2026-07-28");
            assert_eq!(session["frame_count"], 2, "request and response: {session}");
        }
    }
}

/// 2026-07-28 has no SSE resumption: a resumable upstream's event ids (the demo
/// upstream's event store numbers them `ev<n>`) must not reach a 2026-07-28
/// client, which would answer a broken stream with a `Last-Event-ID` GET the
/// proxy refuses (405); priming events, nothing but an id, are not sent at all.
#[tokio::test]
async fn a_modern_reply_stream_carries_no_event_ids_even_from_a_resumable_upstream() {
    let upstream = start_upstream_with("127.0.0.1:0", &["--event-store"]);
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", MEMORY);
    let response = modern_tools_call(
        &proxy.mcp_url(),
        "countdown",
        json!({"from": 3, "interval_ms": 10}),
        json!({"progressToken":"t",
               "io.modelcontextprotocol/clientInfo":{"name":"no-ids","version":"1"}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = String::from_utf8(response.bytes().await.unwrap().to_vec()).unwrap();
    println!("{body}");
    assert!(body.contains("countdown from 3 done"), "{body}");
    assert_eq!(body.matches("notifications/progress").count(), 3, "{body}");
    for line in body.lines() {
        assert!(
            !line.starts_with("id:") && !line.starts_with("retry:"),
            "a resumption field reached a 2026-07-28 client: {line:?}"
        );
    }
}

/// A 2026-07-28 `tools/call` (no session: its protocol version and client
/// capabilities in `_meta`, plus `meta`'s fields) sent to `url`.
async fn modern_tools_call(
    url: &str,
    tool: &str,
    arguments: Value,
    meta: Value,
) -> reqwest::Response {
    let mut all_meta = json!({
        "io.modelcontextprotocol/protocolVersion":"2026-07-28",
        "io.modelcontextprotocol/clientCapabilities":{}});
    if let (Some(all), Some(extra)) = (all_meta.as_object_mut(), meta.as_object()) {
        all.extend(extra.clone());
    }
    reqwest::Client::new()
        .post(url)
        .timeout(EXCHANGE_TIMEOUT)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .body(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
                "name":tool,"arguments":arguments,"_meta":all_meta}})
            .to_string(),
        )
        .send()
        .await
        .unwrap()
}

#[test]
fn a_bad_configuration_exits_non_zero_with_a_clear_message() {
    let config = common::scratch_path("bad.toml");
    std::fs::write(
        &config,
        "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream_timeout = \"soon\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
        .env_clear()
        .envs(common::coverage_env())
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("upstream_timeout"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
        .env_clear()
        .envs(common::coverage_env())
        .args(["--config", "/nonexistent/mcp-proxy.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/mcp-proxy.toml"));
}

#[tokio::test]
async fn a_silent_upstream_is_a_504_with_a_json_rpc_error() {
    // The kernel accepts connections into the backlog; nobody ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}/mcp", silent.local_addr().unwrap());
    let proxy = start_proxy(
        &upstream,
        "127.0.0.1:0",
        "upstream_timeout = \"1s\"",
        MEMORY,
    );
    let reply = RawClient::new()
        .post(
            &proxy.mcp_url(),
            &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
        )
        .await;
    assert_eq!(reply.status, 504);
    let body = reply.json.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("upstream_timeout"));
    drop(silent);
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish() {
    let upstream = start_upstream();
    let mut proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", MEMORY);
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    let call = json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{
        "name":"countdown","arguments":{"from":5,"interval_ms":100},"_meta":{"progressToken":"term"}}});
    let stream = client.post_stream(&proxy.mcp_url(), &call).await;

    let status = Command::new("kill")
        .args(["-TERM", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let reply = common::read_reply(stream).await;
    let (progress, results) = countdown_messages(&reply.messages());
    assert_eq!(progress, [1, 2, 3, 4, 5]);
    assert_eq!(results, ["countdown from 5 done"]);
    // With nothing left in flight, the proxy exits cleanly.
    assert!(proxy
        .wait_exit(EXCHANGE_TIMEOUT)
        .is_some_and(|code| code == 0));
}

#[tokio::test]
async fn new_per_client_sessions_count_against_max_sessions_per_client() {
    let upstream = start_upstream();
    let proxy = start_proxy(
        &upstream.mcp_url(),
        "127.0.0.1:0",
        "max_sessions_per_client = 2",
        MEMORY,
    );
    let call = |name: &'static str| {
        let url = proxy.mcp_url();
        async move {
            modern_tools_call(
                &url,
                "add",
                json!({"a": 1, "b": 2}),
                json!({"io.modelcontextprotocol/clientInfo":{"name":name,"version":"1"}}),
            )
            .await
            .status()
        }
    };
    assert_eq!(call("first").await, 200);
    assert_eq!(call("second").await, 200);
    // A third clientInfo name from the same address would be a third session.
    assert_eq!(call("third").await, 429);
    // The sessions the client holds keep working.
    assert_eq!(call("first").await, 200);
}

#[tokio::test]
async fn resuming_after_trimmed_events_counts_a_replay_gap_and_sends_what_is_kept() {
    let upstream = start_upstream();
    let storage = format!("{MEMORY}max_frames_per_session = 4\n");
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let url = proxy.mcp_url();
    let mut client = RawClient::new();
    client.initialize(&url).await;
    let session = client.session.clone().unwrap();

    let call = json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{
        "name":"countdown","arguments":{"from":8,"interval_ms":20},"_meta":{"progressToken":"gap"}}});
    let stream = client.post_stream(&url, &call).await;
    let first = tokio::time::timeout(EXCHANGE_TIMEOUT, read_events(stream, 2))
        .await
        .unwrap();
    // The client leaves; the proxy records the rest, and the store keeps only
    // the newest 4 frames of the session.
    let last_id = first.last().unwrap().id.clone().unwrap();
    let mut recorded = false;
    for _ in 0..200 {
        let view = admin_session(&proxy, &session).await;
        let frames = view["frames"].as_array().unwrap();
        if frames.iter().any(|f| {
            f["payload"]
                .as_str()
                .unwrap()
                .contains("countdown from 8 done")
        }) {
            recorded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(recorded, "the proxy recorded the countdown's result");
    assert_eq!(
        metrics(&proxy)
            .await
            .lines()
            .find(|l| l.starts_with("mcp_proxy_replay_gaps_total")),
        Some("mcp_proxy_replay_gaps_total 0")
    );

    let resumed = client.resume(&url, &last_id).await;
    assert_eq!(resumed.status, 200);
    let (progress, results) = countdown_messages(&resumed.messages());
    println!("resumed after progress 2 with progress {progress:?}");
    assert_eq!(
        results,
        ["countdown from 8 done"],
        "the kept result is sent"
    );
    assert!(
        progress.len() < 6 && progress.iter().all(|p| *p > 2),
        "the events trimmed from the store are missing: {progress:?}"
    );
    assert_eq!(
        metrics(&proxy)
            .await
            .lines()
            .find(|l| l.starts_with("mcp_proxy_replay_gaps_total")),
        Some("mcp_proxy_replay_gaps_total 1"),
        "the replay counted the gap"
    );
    // Resuming after the last event loses nothing more.
    let last_of_all = resumed.events.last().unwrap().id.clone().unwrap();
    assert!(client
        .resume(&url, &last_of_all)
        .await
        .messages()
        .is_empty());
    assert!(metrics(&proxy)
        .await
        .contains("mcp_proxy_replay_gaps_total 1\n"));
}
