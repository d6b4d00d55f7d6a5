//! No client stranded when a taken-over stream cannot be finished, over Redis
//! with several `mcp-proxy` processes and real SIGKILLs: a resumed upstream
//! stream that replays and then goes silent ends with a JSON-RPC error for the
//! call (not a hang), server-everything's (which delivers nothing live after a
//! resume) is resumed again until its result, a takeover whose client left stops and gives its lease up,
//! and a resumption whose request frame the store lost is refused with 410
//! instead of an empty stream the client would resume forever (with raw HTTP,
//! and with the Python SDK's client, which then fails the call). Needs Redis:
//! `cargo xtask integration` starts one and sets `TEST_REDIS_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{
    countdown_messages, read_events, start_proxy, start_upstream_with, RawClient, EXCHANGE_TIMEOUT,
};
use serde_json::{json, Value};

const REDIS_URL_VAR: &str = "TEST_REDIS_URL";

/// Short enough that the tests end quickly: resumed connections are bounded by
/// half of it (1.5 s).
const POLL_DEADLINE: &str = "upstream_poll_deadline = \"3s\"\n";

/// Bound of the waits for a lease to go (its TTL is 5 s).
const LEASE_GONE_LIMIT: Duration = Duration::from_secs(40);

fn redis_url() -> String {
    std::env::var(REDIS_URL_VAR)
        .unwrap_or_else(|_| panic!("{REDIS_URL_VAR} is not set: run `cargo xtask integration`"))
}

/// The `[storage]` section and the key prefix of a fresh Redis namespace.
fn redis_storage() -> (String, String) {
    let prefix = format!("mcp-proxy-stranded-{:08x}", rand::random::<u32>());
    let toml = format!(
        "[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n",
        redis_url()
    );
    (toml, prefix)
}

fn redis_cli(args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-u")
        .arg(redis_url())
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// How many live stream leases exist under `prefix`. A released lease's hash
/// lives 1 ms more, and one removed with `kv_delete` is kept, expired (`exp` =
/// the time of the delete), until its own expiry, so liveness is read from `exp`
/// against Redis's clock.
fn leases(prefix: &str) -> usize {
    let now = redis_cli(&["TIME"]);
    let mut now = now.lines().map(|line| line.trim().parse::<u64>().unwrap());
    let now_ms = now.next().unwrap() * 1000 + now.next().unwrap() / 1000;
    redis_cli(&["--scan", "--pattern", &format!("{prefix}:kv:*lease:*")])
        .lines()
        .filter(|key| !key.trim().is_empty())
        .filter(|key| {
            redis_cli(&["HGET", key.trim(), "exp"])
                .trim()
                .parse::<u64>()
                .is_ok_and(|exp| exp > now_ms)
        })
        .count()
}

/// Waits (bounded) until no live stream lease exists under `prefix`; whether it
/// went.
async fn leases_gone(prefix: &str) -> bool {
    let started = Instant::now();
    while started.elapsed() < LEASE_GONE_LIMIT {
        if leases(prefix) == 0 {
            println!("lease gone {:?} after the wait began", started.elapsed());
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Starts `countdown` on `url` and returns the first event with data and its
/// event id (`<frame>@r<request frame>`).
async fn start_countdown(
    client: &RawClient,
    url: &str,
    id: u64,
    from: u32,
    interval_ms: u32,
) -> (Value, String) {
    let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
        "name":"countdown","arguments":{"from":from,"interval_ms":interval_ms},
        "_meta":{"progressToken":"stranded"}}});
    let stream = client.post_stream(url, &call).await;
    let first = tokio::time::timeout(EXCHANGE_TIMEOUT, read_events(stream, 1))
        .await
        .unwrap();
    let event = first.last().unwrap();
    (
        serde_json::from_str(&event.data).unwrap(),
        event.id.clone().unwrap(),
    )
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_taken_over_stream_that_goes_silent_ends_with_a_json_rpc_error_and_its_lease_goes() {
    let upstream = start_upstream_with("127.0.0.1:0", &["--event-store", "--resume-goes-silent"]);
    let (storage, prefix) = redis_storage();
    let mut a = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", POLL_DEADLINE, &storage);
    let b = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", POLL_DEADLINE, &storage);
    let mut client = RawClient::new();
    client.initialize(&a.mcp_url()).await;
    // 40 steps of 500 ms: still running long after the takeover.
    let (_first, last_id) = start_countdown(&client, &a.mcp_url(), 5, 40, 500).await;
    a.kill();
    let killed = Instant::now();

    let resumed = client.resume(&b.mcp_url(), &last_id).await;
    let ended = killed.elapsed();
    assert_eq!(resumed.status, 200);
    let messages = resumed.messages();
    let (progress, results) = countdown_messages(&messages);
    let errors: Vec<&Value> = messages
        .iter()
        .filter(|message| message["id"] == 5 && message.get("error").is_some())
        .collect();
    println!(
        "stream ended {ended:?} after the SIGKILL: {} progress events replayed by the upstream, \
         then silence; error: {errors:?}",
        progress.len()
    );
    assert!(
        results.is_empty(),
        "the upstream never finished: {messages:?}"
    );
    assert_eq!(
        errors.len(),
        1,
        "one JSON-RPC error for the call: {messages:?}"
    );
    assert_eq!(errors[0]["error"]["code"], -32000);
    assert_eq!(errors[0]["error"]["data"]["reason"], "poll_deadline");
    assert!(
        leases_gone(&prefix).await,
        "the takeover's lease is released once the stream ended"
    );
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_takeover_whose_client_left_stops_relaying_and_its_lease_goes() {
    let upstream = start_upstream_with("127.0.0.1:0", &["--event-store"]);
    let (storage, prefix) = redis_storage();
    let mut a = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", POLL_DEADLINE, &storage);
    let b = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", POLL_DEADLINE, &storage);
    let mut client = RawClient::new();
    client.initialize(&a.mcp_url()).await;
    // 100 steps of a second: the upstream streams far longer than the test.
    let (_first, last_id) = start_countdown(&client, &a.mcp_url(), 5, 100, 1_000).await;
    a.kill();

    let resumed = client
        .http
        .get(b.mcp_url())
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("mcp-session-id", client.session.clone().unwrap())
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let events = tokio::time::timeout(EXCHANGE_TIMEOUT, read_events(resumed, 3))
        .await
        .unwrap();
    assert_eq!(
        leases(&prefix),
        1,
        "B relays the stream and holds its lease"
    );
    // read_events dropped the stream after its third message: the client left.
    assert!(events.iter().filter(|event| !event.data.is_empty()).count() >= 3);
    let left = Instant::now();
    let gone = leases_gone(&prefix).await;
    println!(
        "lease gone: {gone}, {:?} after the client left (countdown still running upstream)",
        left.elapsed()
    );
    assert!(gone, "B stopped relaying for nobody and its lease went");
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_resume_whose_request_frame_the_store_lost_is_refused_with_410_not_an_empty_stream() {
    let upstream = start_upstream_with("127.0.0.1:0", &["--event-store"]);
    let (storage, prefix) = redis_storage();
    let a = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let b = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let mut client = RawClient::new();
    client.initialize(&a.mcp_url()).await;
    let (_first, last_id) = start_countdown(&client, &a.mcp_url(), 5, 40, 500).await;
    // `<frame>@r<request frame>`: the request frame is the stream's own id.
    let request_frame = last_id.split_once("@r").unwrap().1;
    let session = client.session.clone().unwrap();
    let deleted = redis_cli(&[
        "XDEL",
        &format!("{prefix}:{{{session}}}:frames"),
        request_frame,
    ]);
    assert_eq!(deleted.trim(), "1", "the request frame was in the store");

    let resumed = client.resume(&b.mcp_url(), &last_id).await;
    println!(
        "resume of a stream whose request is lost: {} {:?}",
        resumed.status, resumed.json
    );
    assert_eq!(resumed.status, 410, "{resumed:?}");
    let body = resumed.json.clone().unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["error"]["code"], -32000);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot be resumed"), "{message}");
    assert!(
        !message.contains("redis://"),
        "no internal detail: {message}"
    );

    // A stream whose request is still there resumes as before.
    let (_, other_id) = start_countdown(&client, &a.mcp_url(), 6, 2, 100).await;
    let other = client.resume(&b.mcp_url(), &other_id).await;
    assert_eq!(other.status, 200);
    let (_, results) = countdown_messages(&other.messages());
    assert_eq!(results, ["countdown from 2 done"]);
}

/// The next JSON line a client script prints (bounded).
async fn next_json_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Value {
    let line = tokio::time::timeout(EXCHANGE_TIMEOUT, lines.next_line())
        .await
        .expect("the Python client printed in time")
        .unwrap()
        .expect("the Python client printed a line");
    serde_json::from_str(&line).unwrap()
}

#[tokio::test]
#[ignore = "needs Redis and the Python MCP SDK: cargo xtask integration"]
async fn the_python_sdk_gives_up_with_an_error_when_its_stream_record_was_lost() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let upstream = start_upstream_with("127.0.0.1:0", &["--event-store"]);
    let (storage, prefix) = redis_storage();
    let mut a = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let address = a.address.to_string();
    let mut client = tokio::process::Command::new(common::python::python())
        .arg(common::python::script("resume_client.py"))
        .arg(a.mcp_url())
        .args(["40", "500"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let first = next_json_line(&mut lines).await;
    assert_eq!(first["progress"], 1.0, "{first}");

    // The session's record is lost (as with a Redis restarted without
    // persistence), and the instance relaying the call dies; it comes back on the
    // same address, where the SDK resumes.
    let frames = redis_cli(&["--scan", "--pattern", &format!("{prefix}:{{*}}:frames")]);
    let frames = frames.lines().next().expect("the session's frame stream");
    a.kill();
    assert_eq!(redis_cli(&["DEL", frames.trim()]).trim(), "1");
    let restarted = start_proxy(&upstream.mcp_url(), &address, "", &storage);
    let started = Instant::now();
    let outcome = next_json_line(&mut lines).await;
    let refused = std::fs::read_to_string(&restarted.log)
        .unwrap()
        .matches("resumption refused with 410")
        .count();
    println!(
        "Python SDK after its stream's record was lost: {outcome} after {:?}, {refused} resumes refused with 410",
        started.elapsed()
    );
    assert!(outcome["error"].is_string(), "{outcome}");
    assert!(
        refused >= 1,
        "the SDK's resume was refused, not answered 200-and-close"
    );
    assert!(refused <= 3, "the SDK stopped retrying: {refused} resumes");
}

#[tokio::test]
#[ignore = "needs Redis and server-everything: cargo xtask integration"]
async fn a_taken_over_server_everything_stream_ends_with_one_response_never_a_hang() {
    let everything = common::everything::Everything::start();
    let (storage, prefix) = redis_storage();
    let mut a = start_proxy(
        &everything.mcp_url(),
        "127.0.0.1:0",
        POLL_DEADLINE,
        &storage,
    );
    let b = start_proxy(
        &everything.mcp_url(),
        "127.0.0.1:0",
        POLL_DEADLINE,
        &storage,
    );
    let mut client = RawClient::new();
    client.initialize(&a.mcp_url()).await;
    let call = json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{
        "name":"trigger-long-running-operation","arguments":{"duration":12,"steps":12},
        "_meta":{"progressToken":"everything"}}});
    let stream = client.post_stream(&a.mcp_url(), &call).await;
    let first = tokio::time::timeout(EXCHANGE_TIMEOUT, read_events(stream, 2))
        .await
        .unwrap();
    let last_id = first.last().unwrap().id.clone().unwrap();
    a.kill();
    let killed = Instant::now();

    let resumed = client.resume(&b.mcp_url(), &last_id).await;
    assert_eq!(resumed.status, 200);
    let messages = resumed.messages();
    let responses: Vec<&Value> = messages.iter().filter(|m| m["id"] == 8).collect();
    let progress = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .count();
    println!(
        "server-everything taken over: {progress} progress events after the takeover, \
         stream ended {:?} after the SIGKILL with {responses:?}",
        killed.elapsed()
    );
    assert_eq!(
        responses.len(),
        1,
        "exactly one response (the result, or the proxy's JSON-RPC error): {messages:?}"
    );
    assert!(
        leases_gone(&prefix).await,
        "the takeover's lease is released once the stream ended"
    );
}
