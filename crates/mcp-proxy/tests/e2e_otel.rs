//! With the `otel` feature: the proxy exports its spans over OTLP/HTTP to a
//! collector stub in the test (an HTTP server that keeps what is POSTed to
//! `/v1/traces`), continuing the client's `traceparent`: one span per client
//! request, with the store operations and the upstream call inside it.
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{body::Bytes, extract::State, routing::post, Router};
use common::{start_proxy_with_env, start_upstream, EXCHANGE_TIMEOUT};
use serde_json::json;

/// The trace the client's request belongs to (W3C trace context).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

type Received = Arc<Mutex<Vec<Bytes>>>;

/// A collector stub on a free loopback port: every OTLP/HTTP trace export
/// (protobuf) it receives; stopped when the test's runtime ends.
async fn collector() -> (String, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(received): State<Received>, body: Bytes| async move {
                received.lock().unwrap().push(body);
                ""
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), received)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test]
async fn spans_reach_an_otlp_collector_continuing_the_clients_trace() {
    let (endpoint, received) = collector().await;
    let upstream = start_upstream();
    let proxy = start_proxy_with_env(
        &upstream.mcp_url(),
        "127.0.0.1:0",
        "",
        "[storage]\nbackend = \"memory\"\n",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let response = reqwest::Client::new()
        .post(proxy.mcp_url())
        .timeout(EXCHANGE_TIMEOUT)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("traceparent", TRACEPARENT)
        .json(
            &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},
            "clientInfo":{"name":"otel-test","version":"1.0"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await.unwrap();

    // OTLP protobuf carries the trace id as its 16 raw bytes and span names as
    // plain strings: enough to see the trace continued and the spans present.
    let trace_id: Vec<u8> = (0..TRACE_ID.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&TRACE_ID[i..i + 2], 16).unwrap())
        .collect();
    let wanted: [&[u8]; 4] = [
        &trace_id,
        b"POST /mcp",
        b"session_store create",
        b"upstream POST",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let exports = loop {
        let exports: Vec<u8> = received.lock().unwrap().concat();
        if wanted.iter().all(|needle| contains(&exports, needle)) || Instant::now() > deadline {
            break exports;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "otel: {} export requests, {} bytes",
        received.lock().unwrap().len(),
        exports.len()
    );
    for needle in wanted {
        assert!(
            contains(&exports, needle),
            "{:?} not in the exported spans",
            String::from_utf8_lossy(needle)
        );
    }
}
