//! No client stranded by its upstream: a restarted upstream gets the session
//! restored from the recorded `initialize` (for upstreams answering 404 and 400
//! to a lost session), an upstream closing a reply stream early is polled after
//! exactly its `retry`, an idle stream carries keep-alives, and a replay checks
//! the session's credentials. Real `mcp-proxy` and `demo-upstream` processes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{
    admin_session, countdown_messages, counter, start_proxy, start_upstream, start_upstream_with,
    Process, RawClient,
};
use futures::StreamExt;
use mcp_proxy::sse::SseParser;
use serde_json::{json, Value};

/// The client's methods recorded in the session, in order.
async fn client_methods(proxy: &Process, session: &str) -> Vec<String> {
    let view = admin_session(proxy, session).await;
    view["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|frame| frame["direction"] == "client_to_server")
        .map(|frame| serde_json::from_str::<Value>(frame["payload"].as_str().unwrap()).unwrap())
        .filter_map(|message| message["method"].as_str().map(str::to_owned))
        .collect()
}

/// Starts an upstream, a proxy with `proxy_keys`, initializes a client and makes
/// one call; then restarts the upstream on the same address (its sessions are
/// gone) and makes the next call. Returns the second reply and the proxy.
async fn call_across_an_upstream_restart(
    lost_session_status: &str,
    proxy_keys: &str,
) -> (common::Reply, Process, RawClient, Process) {
    let flags = ["--lost-session-status", lost_session_status];
    let mut upstream = start_upstream_with("127.0.0.1:0", &flags);
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", proxy_keys, "");
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    let first = client
        .call_tool(&proxy.mcp_url(), 1, "add", json!({"a": 2, "b": 3}))
        .await;
    assert_eq!(first.status, 200, "{first:?}");

    let address = upstream.address.to_string();
    upstream.kill();
    let upstream = start_upstream_with(&address, &flags);
    let started = Instant::now();
    let second = client
        .call_tool(&proxy.mcp_url(), 2, "echo", json!({"text": "still here"}))
        .await;
    println!(
        "upstream answering {lost_session_status} to a lost session: next call answered {} in {:?}",
        second.status,
        started.elapsed()
    );
    (second, proxy, client, upstream)
}

async fn restored_without_a_new_initialize(lost_session_status: &str) {
    let (second, proxy, client, _upstream) =
        call_across_an_upstream_restart(lost_session_status, "").await;
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(
        second.messages().last().unwrap()["result"]["content"][0]["text"],
        "still here"
    );
    let methods = client_methods(&proxy, client.session.as_deref().unwrap()).await;
    assert_eq!(
        methods.iter().filter(|m| *m == "initialize").count(),
        1,
        "the client initialized once: {methods:?}"
    );
    let restores = counter(&proxy, "mcp_proxy_upstream_sessions_restored_total ").await;
    println!("upstream sessions restored: {restores}");
    assert_eq!(restores, 1);
}

#[tokio::test]
async fn an_upstream_restart_answering_404_is_restored_without_a_new_initialize() {
    restored_without_a_new_initialize("404").await;
}

#[tokio::test]
async fn an_upstream_restart_answering_400_is_restored_without_a_new_initialize() {
    restored_without_a_new_initialize("400").await;
}

#[tokio::test]
async fn with_propagate_a_lost_upstream_session_is_a_404_for_the_client() {
    let (second, proxy, client, _upstream) =
        call_across_an_upstream_restart("404", "upstream_session_recovery = \"propagate\"\n").await;
    assert_eq!(second.status, 404, "{second:?}");
    let again = client
        .call_tool(&proxy.mcp_url(), 3, "add", json!({"a": 1, "b": 1}))
        .await;
    assert_eq!(again.status, 404, "the proxy's session ended too");
    assert_eq!(
        counter(&proxy, "mcp_proxy_upstream_sessions_restored_total ").await,
        0
    );
}

#[tokio::test]
async fn an_ordinary_400_with_a_live_session_passes_through_and_nothing_is_restored() {
    let upstream = start_upstream_with("127.0.0.1:0", &["--lost-session-status", "400"]);
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", "");
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    // An unsupported protocol version header is refused by the upstream with 400,
    // like a lost session; the proxy's ping probe (with the session's version)
    // shows the session alive, so the 400 is the client's to see.
    let refused = client
        .http
        .post(proxy.mcp_url())
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "1999-01-01")
        .header("mcp-session-id", client.session.clone().unwrap())
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let after = client
        .call_tool(&proxy.mcp_url(), 2, "add", json!({"a": 1, "b": 2}))
        .await;
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(
        counter(&proxy, "mcp_proxy_upstream_sessions_restored_total ").await,
        0,
        "the ping probe showed the session alive"
    );
}

#[tokio::test]
async fn an_upstream_closing_the_stream_three_times_with_retry_3000_still_answers() {
    let upstream = start_upstream_with(
        "127.0.0.1:0",
        &[
            "--event-store",
            "--close-streams-early",
            "3",
            "--close-retry-ms",
            "3000",
        ],
    );
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", "");
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    let started = Instant::now();
    let response = client
        .http
        .post(proxy.mcp_url())
        .timeout(Duration::from_secs(60))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2025-06-18")
        .header("mcp-session-id", client.session.clone().unwrap())
        .json(
            &json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{
            "name":"countdown","arguments":{"from":5,"interval_ms":200},
            "_meta":{"progressToken":"slow"}}}),
        )
        .send()
        .await
        .unwrap();
    let events = common::read_events(response, usize::MAX).await;
    let messages: Vec<Value> = events
        .iter()
        .filter(|event| !event.data.is_empty())
        .map(|event| serde_json::from_str(&event.data).unwrap())
        .collect();
    let (progress, results) = countdown_messages(&messages);
    println!(
        "three early closes with retry 3000 ms: result after {:?}",
        started.elapsed()
    );
    assert_eq!(progress, [1, 2, 3, 4, 5], "each progress event once");
    assert_eq!(results, ["countdown from 5 done"]);
    assert!(
        events
            .first()
            .is_some_and(|event| event.data.is_empty() && event.id.is_some()),
        "the stream opens with the proxy's priming event"
    );
}

#[tokio::test]
async fn an_idle_sse_stream_of_60s_with_sse_keepalive_5s_carries_keepalives_and_stays_open() {
    let upstream = start_upstream();
    let proxy = start_proxy(
        &upstream.mcp_url(),
        "127.0.0.1:0",
        "sse_keepalive = \"5s\"\n",
        "",
    );
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    let response = client
        .http
        .get(proxy.mcp_url())
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("mcp-session-id", client.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut body = response.bytes_stream();
    let mut parser = SseParser::new(1024 * 1024);
    let mut keepalives = 0;
    let mut priming = 0;
    let idle = Duration::from_secs(60);
    let started = Instant::now();
    while started.elapsed() < idle {
        let left = idle.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, body.next()).await {
            Err(_) => break, // 60 s passed with the stream open
            Ok(Some(Ok(chunk))) => {
                keepalives += chunk
                    .windows(b": keep-alive".len())
                    .filter(|window| *window == b": keep-alive")
                    .count();
                priming += parser
                    .push(&chunk)
                    .unwrap()
                    .iter()
                    .filter(|event| event.data.is_empty())
                    .count();
            }
            Ok(other) => panic!(
                "the idle stream ended after {:?}: {other:?}",
                started.elapsed()
            ),
        }
    }
    println!("idle GET stream: {keepalives} keep-alives in {idle:?} (sse_keepalive 5s)");
    assert!(priming >= 1, "the stream opens with a priming event");
    assert!(
        keepalives >= 6,
        "expected a keep-alive about every 5 s, saw {keepalives}"
    );
}

#[tokio::test]
async fn a_replay_with_another_users_token_is_404() {
    let upstream = start_upstream();
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", "");
    let mut alice = RawClient::new();
    alice.authorization = Some("Bearer alice".into());
    alice.initialize(&proxy.mcp_url()).await;
    let reply = alice
        .call_tool(
            &proxy.mcp_url(),
            1,
            "countdown",
            json!({"from": 2, "interval_ms": 10}),
        )
        .await;
    let last_id = reply
        .events
        .iter()
        .rev()
        .find_map(|event| event.id.clone())
        .unwrap();

    let mut mallory = RawClient::new();
    mallory.session = alice.session.clone();
    mallory.authorization = Some("Bearer mallory".into());
    let stolen = mallory.resume(&proxy.mcp_url(), &last_id).await;
    assert_eq!(stolen.status, 404, "{stolen:?}");
    let own = alice.resume(&proxy.mcp_url(), &last_id).await;
    assert_eq!(own.status, 200, "{own:?}");
}

#[tokio::test]
async fn an_upstream_that_cannot_resume_gets_its_open_requests_answered_with_errors() {
    // Closes the stream once and, without its event store, cannot resume it: the
    // proxy polls until upstream_poll_deadline, then answers the call itself.
    let upstream = start_upstream_with(
        "127.0.0.1:0",
        &["--close-streams-early", "1", "--close-retry-ms", "500"],
    );
    let proxy = start_proxy(
        &upstream.mcp_url(),
        "127.0.0.1:0",
        "upstream_poll_deadline = \"3s\"\n",
        "",
    );
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    let started = Instant::now();
    let reply = client
        .call_tool(
            &proxy.mcp_url(),
            8,
            "countdown",
            json!({"from": 3, "interval_ms": 100}),
        )
        .await;
    let messages = reply.messages();
    println!(
        "an unresumable stream was answered with an error after {:?}",
        started.elapsed()
    );
    let last = messages.last().unwrap();
    assert_eq!(last["id"], 8, "{messages:?}");
    assert_eq!(last["error"]["data"]["reason"], "poll_deadline", "{last}");
    assert_eq!(
        counter(
            &proxy,
            "mcp_proxy_streams_failed_total{reason=\"poll_deadline\"} "
        )
        .await,
        1
    );
    // The error is recorded: a resumption replays it.
    let view = admin_session(&proxy, client.session.as_deref().unwrap()).await;
    assert!(view["frames"]
        .as_array()
        .unwrap()
        .iter()
        .any(|frame| frame["payload"].as_str().unwrap().contains("poll_deadline")));
}
