//! No client stranded, over Redis with several `mcp-proxy` processes: the instance
//! relaying a streamed tool call is killed with SIGKILL after the first progress
//! event; the client resumes on another instance, which takes the stream over once
//! the dead instance's lease lapses, resumes the upstream stream at the upstream's
//! own last event id and delivers the remaining events and the result, each
//! exactly once (and of instances racing for it, exactly one takes it over).
//! Instances restoring a lost upstream session at once agree on one. Needs Redis:
//! `cargo xtask integration` starts one and sets `TEST_REDIS_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Instant;

use common::{
    countdown_messages, counter, read_events, start_proxy, start_upstream_with, RawClient,
    EXCHANGE_TIMEOUT,
};
use serde_json::{json, Value};

const REDIS_URL_VAR: &str = "TEST_REDIS_URL";

fn redis_storage() -> String {
    let url = std::env::var(REDIS_URL_VAR)
        .unwrap_or_else(|_| panic!("{REDIS_URL_VAR} is not set: run `cargo xtask integration`"));
    let prefix = format!("mcp-proxy-takeover-{:08x}", rand::random::<u32>());
    format!("[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n")
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_stream_whose_instance_is_killed_is_taken_over_with_every_event_once() {
    let upstream = start_upstream_with("127.0.0.1:0", &["--event-store"]);
    let storage = redis_storage();
    let mut a = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let b = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let mut client = RawClient::new();
    client.initialize(&a.mcp_url()).await;

    let call = json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{
        "name":"countdown","arguments":{"from":10,"interval_ms":500},"_meta":{"progressToken":"kill"}}});
    let stream = client.post_stream(&a.mcp_url(), &call).await;
    let first = tokio::time::timeout(EXCHANGE_TIMEOUT, read_events(stream, 1))
        .await
        .unwrap();
    let last_id = first.last().unwrap().id.clone().unwrap();
    a.kill(); // SIGKILL: no goodbye, its lease just stops being renewed
    let killed = Instant::now();

    let resumed = client.resume(&b.mcp_url(), &last_id).await;
    let time_to_finish = killed.elapsed();
    assert_eq!(resumed.status, 200);
    let mut messages: Vec<Value> = first
        .iter()
        .filter(|event| !event.data.is_empty())
        .map(|event| serde_json::from_str(&event.data).unwrap())
        .collect();
    messages.extend(resumed.messages());
    let (progress, results) = countdown_messages(&messages);
    let takeovers = counter(&b, "mcp_proxy_stream_takeovers_total ").await;
    let first_after_kill = resumed
        .events
        .iter()
        .position(|event| !event.data.is_empty());
    println!(
        "takeovers on B: {takeovers}; stream finished {time_to_finish:?} after the SIGKILL \
         (events after resuming: {}, first message at event {first_after_kill:?})",
        resumed.events.len()
    );
    assert_eq!(
        progress,
        (1..=10).collect::<Vec<u64>>(),
        "none lost, none repeated"
    );
    assert_eq!(results, ["countdown from 10 done"]);
    assert_eq!(takeovers, 1);
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn when_two_instances_race_to_take_a_stream_over_exactly_one_does() {
    let upstream = start_upstream_with("127.0.0.1:0", &["--event-store"]);
    let storage = redis_storage();
    let mut a = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let b = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let c = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let mut client = RawClient::new();
    client.initialize(&a.mcp_url()).await;

    let call = json!({"jsonrpc":"2.0","id":6,"method":"tools/call","params":{
        "name":"countdown","arguments":{"from":8,"interval_ms":500},"_meta":{"progressToken":"race"}}});
    let stream = client.post_stream(&a.mcp_url(), &call).await;
    let first = tokio::time::timeout(EXCHANGE_TIMEOUT, read_events(stream, 1))
        .await
        .unwrap();
    let last_id = first.last().unwrap().id.clone().unwrap();
    a.kill();

    // The same client resumes on both (as two tabs behind a load balancer would).
    let (b_url, c_url) = (b.mcp_url(), c.mcp_url());
    let (on_b, on_c) = tokio::join!(
        client.resume(&b_url, &last_id),
        client.resume(&c_url, &last_id)
    );
    let takeovers = counter(&b, "mcp_proxy_stream_takeovers_total ").await
        + counter(&c, "mcp_proxy_stream_takeovers_total ").await;
    println!("takeovers on B and C together: {takeovers}");
    for resumed in [&on_b, &on_c] {
        let mut messages: Vec<Value> = first
            .iter()
            .filter(|event| !event.data.is_empty())
            .map(|event| serde_json::from_str(&event.data).unwrap())
            .collect();
        messages.extend(resumed.messages());
        let (progress, results) = countdown_messages(&messages);
        assert_eq!(
            progress,
            (1..=8).collect::<Vec<u64>>(),
            "none lost, none repeated"
        );
        assert_eq!(results, ["countdown from 8 done"]);
    }
    assert_eq!(takeovers, 1, "exactly one instance took the stream over");
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn when_two_instances_restore_a_lost_upstream_session_at_once_one_wins_and_both_use_it() {
    let mut upstream = start_upstream_with("127.0.0.1:0", &["--event-store"]);
    let storage = redis_storage();
    let a = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let b = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let mut client = RawClient::new();
    client.initialize(&a.mcp_url()).await;
    let address = upstream.address.to_string();
    upstream.kill();
    let _upstream = start_upstream_with(&address, &["--event-store"]);

    let started = Instant::now();
    let (a_url, b_url) = (a.mcp_url(), b.mcp_url());
    let (on_a, on_b) = tokio::join!(
        client.call_tool(&a_url, 1, "add", json!({"a": 1, "b": 2})),
        client.call_tool(&b_url, 2, "add", json!({"a": 3, "b": 4}))
    );
    let restores = counter(&a, "mcp_proxy_upstream_sessions_restored_total ").await
        + counter(&b, "mcp_proxy_upstream_sessions_restored_total ").await;
    println!(
        "two instances restoring at once: {restores} restore stored, both calls answered in {:?}",
        started.elapsed()
    );
    assert_eq!(on_a.status, 200, "{on_a:?}");
    assert_eq!(on_b.status, 200, "{on_b:?}");
    assert_eq!(
        on_a.messages().last().unwrap()["result"]["content"][0]["text"],
        "3"
    );
    assert_eq!(
        on_b.messages().last().unwrap()["result"]["content"][0]["text"],
        "7"
    );
    assert_eq!(restores, 1, "one instance's upstream session won");
    let next = client
        .call_tool(&b.mcp_url(), 3, "add", json!({"a": 5, "b": 6}))
        .await;
    assert_eq!(next.status, 200, "both use the winner's upstream session");
}
