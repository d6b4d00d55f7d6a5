//! An upstream that closes a POST reply stream before the response and expects the
//! client to poll it with `Last-Event-ID` (2025-11-25, SEP-1699). The proxy polls
//! on the client's behalf, so the client sees one uninterrupted stream and every
//! event is recorded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use common::{admin_session, countdown_messages, start_proxy, RawClient};
use serde_json::{json, Value};

const UPSTREAM_SESSION: &str = "upstream-session-1";

fn sse(body: String) -> Response {
    ([("content-type", "text/event-stream")], body).into_response()
}

async fn upstream_post(body: Bytes) -> Response {
    let message: Value = serde_json::from_slice(&body).unwrap();
    match message["method"].as_str() {
        Some("initialize") => (
            [
                ("content-type", "application/json"),
                ("mcp-session-id", UPSTREAM_SESSION),
            ],
            json!({"jsonrpc":"2.0","id":message["id"],"result":{
                "protocolVersion":"2025-11-25","capabilities":{"tools":{}},
                "serverInfo":{"name":"polling-upstream","version":"1"}}})
            .to_string(),
        )
            .into_response(),
        Some("tools/call") => {
            let progress = json!({"jsonrpc":"2.0","method":"notifications/progress",
                "params":{"progressToken":"poll","progress":1.0}});
            // Primes, sends one event, and closes before the response.
            sse(format!(
                "id: e0\nretry: 20\ndata:\n\nid: e1\ndata: {progress}\n\n"
            ))
        }
        _ => StatusCode::ACCEPTED.into_response(),
    }
}

async fn upstream_get(headers: HeaderMap) -> Response {
    assert_eq!(headers["mcp-session-id"], UPSTREAM_SESSION);
    assert_eq!(
        headers["last-event-id"], "e1",
        "the proxy resumes after the last event"
    );
    let progress = json!({"jsonrpc":"2.0","method":"notifications/progress",
        "params":{"progressToken":"poll","progress":2.0}});
    let result = json!({"jsonrpc":"2.0","id":4,"result":{"content":[{"type":"text","text":"countdown from 2 done"}]}});
    sse(format!(
        "id: e2\ndata: {progress}\n\nid: e3\ndata: {result}\n\n"
    ))
}

#[tokio::test]
async fn a_reply_stream_closed_early_upstream_is_polled_and_relayed_on() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new().route("/mcp", post(upstream_post).get(upstream_get));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let proxy = start_proxy(&format!("http://{address}/mcp"), "127.0.0.1:0", "", "");

    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    let reply = client
        .call_tool(&proxy.mcp_url(), 4, "countdown", json!({"from": 2}))
        .await;
    assert_eq!(reply.status, 200);
    let (progress, results) = countdown_messages(&reply.messages());
    assert_eq!(progress, [1, 2]);
    assert_eq!(results, ["countdown from 2 done"]);

    let view = admin_session(&proxy, client.session.as_deref().unwrap()).await;
    let upstream_ids: Vec<&str> = view["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|frame| frame["event_id"].as_str())
        .collect();
    assert_eq!(upstream_ids, ["e1", "e2", "e3"]);
    let streams: Vec<&str> = view["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|frame| frame["event_id"].is_string())
        .map(|frame| frame["stream_id"].as_str().unwrap())
        .collect();
    assert!(
        streams.windows(2).all(|pair| pair[0] == pair[1]),
        "one stream: {streams:?}"
    );
}
