//! `/metrics` of a running proxy, read with a Prometheus text-format parser:
//! the families an operator's dashboards use are there, typed, with the counts
//! of what the test did.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{start_proxy, start_upstream, RawClient, EXCHANGE_TIMEOUT};
use prometheus_parse::{Scrape, Value};
use serde_json::json;

const MEMORY: &str = "[storage]\nbackend = \"memory\"\n";

#[tokio::test]
async fn metrics_parse_as_prometheus_text_with_every_family() {
    let upstream = start_upstream();
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", MEMORY);
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    let reply = client
        .call_tool(&proxy.mcp_url(), 1, "add", json!({"a": 1, "b": 2}))
        .await;
    assert_eq!(reply.status, 200);

    let response = reqwest::Client::new()
        .get(proxy.admin_url("/metrics"))
        .timeout(EXCHANGE_TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap();
    println!(
        "/metrics: {} samples, {} documented families",
        scrape.samples.len(),
        scrape.docs.len()
    );
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|sample| {
                sample.metric == name
                    && label.is_none_or(|(key, value)| sample.labels.get(key) == Some(value))
            })
            .map(|sample| sample.value.clone())
            .unwrap_or_else(|| panic!("no sample {name} {label:?} in\n{text}"))
    };
    let number = |value: Value| match value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        other => panic!("not a number: {other:?}"),
    };
    assert_eq!(number(value("mcp_proxy_sessions_created_total", None)), 1.0);
    assert_eq!(
        number(value("mcp_proxy_active_sessions", None)),
        1.0,
        "a gauge"
    );
    // initialize, initialized, tools/call: three client messages recorded.
    assert_eq!(
        number(value(
            "mcp_proxy_frames_appended_total",
            Some(("direction", "client_to_server"))
        )),
        3.0
    );
    let posts: f64 = scrape
        .samples
        .iter()
        .filter(|sample| {
            sample.metric == "mcp_proxy_http_requests_total"
                && sample.labels.get("method") == Some("POST")
        })
        .map(|sample| number(sample.value.clone()))
        .sum();
    assert_eq!(posts, 3.0, "initialize, initialized, tools/call");
    match value(
        "mcp_proxy_store_operation_duration_seconds",
        Some(("operation", "append_frame")),
    ) {
        Value::Histogram(buckets) => {
            let total = buckets.last().map(|bucket| bucket.count).unwrap_or(0.0);
            println!("/metrics: {total} append_frame operations timed");
            assert!(total >= 3.0);
        }
        other => panic!("the store latency is a histogram, not {other:?}"),
    }
    assert!(matches!(
        value("mcp_proxy_connections_open", None),
        Value::Gauge(_)
    ));
    for family in [
        "mcp_proxy_sessions_created",
        "mcp_proxy_store_operation_duration_seconds",
        "mcp_proxy_rejected",
        "mcp_proxy_cache_lookups",
    ] {
        assert!(scrape.docs.contains_key(family), "no HELP for {family}");
    }
}
