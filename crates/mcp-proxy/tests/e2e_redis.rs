//! End to end over Redis: two `mcp-proxy` processes sharing one Redis serve the same
//! sessions. Needs a Redis server: `cargo xtask integration` starts one and sets
//! `TEST_REDIS_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    admin_session, countdown_messages, read_events, start_proxy, start_upstream, Process,
    RawClient, SharedOutput, EXCHANGE_TIMEOUT,
};
use mcp_proxy::event_id::ProxyEventId;
use serde_json::{json, Value};

const REDIS_URL_VAR: &str = "TEST_REDIS_URL";

/// A `[storage]` table on the test Redis with a key prefix of its own, so tests
/// never see each other's sessions.
fn redis_storage() -> String {
    let url = std::env::var(REDIS_URL_VAR)
        .unwrap_or_else(|_| panic!("{REDIS_URL_VAR} is not set: run `cargo xtask integration`"));
    let prefix = format!("mcp-proxy-e2e-{:08x}", rand::random::<u32>());
    format!("[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n")
}

fn two_proxies(upstream: &Process) -> (Process, Process, String) {
    let storage = redis_storage();
    let a = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let b = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    (a, b, storage)
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_session_started_on_one_instance_continues_on_another_and_after_a_restart() {
    let upstream = start_upstream();
    let (mut a, b, storage) = two_proxies(&upstream);
    let mut client = RawClient::new();
    client.initialize(&a.mcp_url()).await;

    let on_b = client
        .call_tool(&b.mcp_url(), 1, "add", json!({"a": 2, "b": 3}))
        .await;
    assert_eq!(on_b.status, 200, "{on_b:?}");
    assert_eq!(
        on_b.messages().last().unwrap()["result"]["content"][0]["text"],
        "5"
    );

    // Kill A and start it again on the same address: the session carries on there.
    let address = a.address.to_string();
    a.kill();
    let a = start_proxy(&upstream.mcp_url(), &address, "", &storage);
    let on_a = client
        .call_tool(&a.mcp_url(), 2, "echo", json!({"text": "again"}))
        .await;
    assert_eq!(on_a.status, 200, "{on_a:?}");
    assert_eq!(
        on_a.messages().last().unwrap()["result"]["content"][0]["text"],
        "again"
    );

    // Both instances recorded into the one session.
    let view = admin_session(&b, client.session.as_deref().unwrap()).await;
    let methods: Vec<String> = view["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|frame| frame["direction"] == "client_to_server")
        .map(|frame| serde_json::from_str::<Value>(frame["payload"].as_str().unwrap()).unwrap())
        .filter_map(|message| message["method"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        methods,
        [
            "initialize",
            "notifications/initialized",
            "tools/call",
            "tools/call"
        ]
    );
    assert_eq!(
        view["session"]["server_info"]["serverInfo"]["name"],
        "demo-upstream"
    );

    // DELETE through B ends the session for A too.
    assert!(client.delete(&b.mcp_url()).await.is_success());
    let after = client
        .call_tool(&a.mcp_url(), 3, "add", json!({"a": 1, "b": 1}))
        .await;
    assert_eq!(after.status, 404);
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_stream_cut_on_one_instance_resumes_on_the_other_with_exactly_the_missed_events() {
    let upstream = start_upstream();
    let (a, b, _storage) = two_proxies(&upstream);
    let mut client = RawClient::new();
    client.initialize(&a.mcp_url()).await;

    let call = json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{
        "name":"countdown","arguments":{"from":8,"interval_ms":100},"_meta":{"progressToken":"cut"}}});
    let stream = client.post_stream(&a.mcp_url(), &call).await;
    let first = tokio::time::timeout(EXCHANGE_TIMEOUT, read_events(stream, 3))
        .await
        .unwrap();
    let last_id = first.last().unwrap().id.clone().unwrap();

    let resumed = client.resume(&b.mcp_url(), &last_id).await;
    assert_eq!(resumed.status, 200);
    let mut messages: Vec<Value> = first
        .iter()
        .filter(|event| !event.data.is_empty())
        .map(|event| serde_json::from_str(&event.data).unwrap())
        .collect();
    let resumed_messages = resumed.messages();
    assert!(!resumed_messages.is_empty(), "B replayed nothing");
    messages.extend(resumed_messages);
    let (progress, results) = countdown_messages(&messages);
    assert_eq!(
        progress,
        [1, 2, 3, 4, 5, 6, 7, 8],
        "none lost, none repeated"
    );
    assert_eq!(results, ["countdown from 8 done"]);
    let cut: ProxyEventId = last_id.parse().unwrap();
    for event in resumed.events.iter().filter(|event| !event.data.is_empty()) {
        let id: ProxyEventId = event.id.as_deref().unwrap().parse().unwrap();
        assert_eq!(id.stream, cut.stream, "only the cut stream is replayed");
        assert!(id.frame > cut.frame);
    }
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_session_deleted_on_one_instance_is_404_on_the_next_call_to_another_that_cached_it() {
    let upstream = start_upstream();
    let (a, b, _storage) = two_proxies(&upstream);
    let mut client = RawClient::new();
    client.initialize(&a.mcp_url()).await;

    // Calls on both instances: each holds the active session in its near cache,
    // the second call on each served from it.
    for (n, proxy) in [(1, &a), (2, &b), (3, &a), (4, &b)] {
        let reply = client
            .call_tool(&proxy.mcp_url(), n, "add", json!({"a": n, "b": 1}))
            .await;
        assert_eq!(reply.status, 200, "call {n}: {reply:?}");
        assert_eq!(
            reply.messages().last().unwrap()["result"]["content"][0]["text"],
            (n + 1).to_string()
        );
    }

    // Deleted through A: B's cached copy does not keep it alive; the very next
    // call there is 404, and so is the one after it (the entry is gone).
    assert!(client.delete(&a.mcp_url()).await.is_success());
    for n in [5, 6] {
        let after = client
            .call_tool(&b.mcp_url(), n, "add", json!({"a": 1, "b": 1}))
            .await;
        assert_eq!(after.status, 404, "call {n} on B after the delete on A");
    }
    let on_a = client
        .call_tool(&a.mcp_url(), 7, "add", json!({"a": 1, "b": 1}))
        .await;
    assert_eq!(on_a.status, 404);
}

/// `mcp-proxy sessions tail` on the store a proxy records into: the client's
/// call and DELETE land between two of the tail's polls, so the call's frames
/// go with the session before the tail could read them; the tail says so.
#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn sessions_tail_of_a_session_deleted_between_its_polls_says_the_last_frames_may_be_missing()
{
    use mcp_proxy::{
        commands::{open_store, sessions},
        config::{Overrides, ProxyConfig},
    };

    let upstream = start_upstream();
    let storage = redis_storage();
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    let id = client.session.clone().unwrap();
    let config = ProxyConfig::from_toml_str(
        &format!("[proxy]\nupstream = \"{}\"\n{storage}", upstream.mcp_url()),
        &Overrides::default(),
    )
    .unwrap();
    let store = open_store(&config).await.unwrap();
    let args = sessions::TailArgs {
        id: id.clone(),
        lines: 10,
        // Long: the call and the DELETE below land within one interval.
        interval: std::time::Duration::from_secs(5),
        count: None,
        payload: false,
    };
    let output = SharedOutput::default();
    let mut writer = output.clone();
    let session = async {
        for _ in 0..2_000 {
            if output.text().contains("FRAME") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let called = client
            .call_tool(&proxy.mcp_url(), 1, "echo", json!({"text": "gone with it"}))
            .await;
        assert_eq!(called.status, 200, "{called:?}");
        assert!(client.delete(&proxy.mcp_url()).await.is_success());
    };
    let (tailed, ()) = tokio::join!(
        tokio::time::timeout(
            EXCHANGE_TIMEOUT,
            sessions::tail(store.as_ref(), &args, &mut writer)
        ),
        session
    );
    let tailed = tailed.expect("the tail ends with the session").unwrap();
    let text = output.text();
    println!("{text}{:?}", tailed.ended);
    assert!(
        text.contains("initialize"),
        "the newest frames first: {text}"
    );
    assert_eq!(tailed.printed, 0, "{text}");
    assert!(!text.contains("tools/call"), "{text}");
    let ended = tailed.ended.expect("the tail says the session ended");
    assert!(
        ended.contains(&format!("session `{id}` ended"))
            && ended.contains("frames recorded after frame ")
            && ended.contains("may be missing"),
        "{ended}"
    );
}
