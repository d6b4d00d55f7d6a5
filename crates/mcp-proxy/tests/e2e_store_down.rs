//! End to end with the store down: a Redis server of the test's own is killed
//! under a running proxy (no fallback to memory). A request for an existing session
//! gets 503 with `Retry-After`, never 404 (the session may well still exist);
//! `/healthz` is 503. Restarted on the same port from its append-only file, Redis
//! has the session again, and the same session works. With the fallback, a proxy
//! started while Redis is down serves from memory and writes back once it answers,
//! and a streamed call relayed through a Redis outage goes on to its result (its
//! lease, absent from the fallback's memory, is taken again, not reported lost).
//!
//! Needs `redis-server`: `TEST_REDIS_SERVER` (set by `cargo xtask
//! integration`) or the one on PATH.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{scratch_path, start_proxy, start_upstream, RawClient, Reply, EXCHANGE_TIMEOUT};
use serde_json::{json, Value};

const SERVER_BINARY_VAR: &str = "TEST_REDIS_SERVER";
/// Longest wait for Redis to answer PING, and for the proxy to reconnect.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A `redis-server` with an append-only file fsynced on every write, so a kill
/// loses nothing; killed on drop.
struct DurableRedis {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl DurableRedis {
    fn start() -> DurableRedis {
        let binary = std::env::var_os(SERVER_BINARY_VAR)
            .map(PathBuf::from)
            .or_else(|| find_on_path("redis-server"))
            .unwrap_or_else(|| {
                panic!("no redis-server: set {SERVER_BINARY_VAR} or run `cargo xtask integration`")
            });
        let dir = scratch_path("redis-aof");
        std::fs::create_dir_all(&dir).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = DurableRedis {
            binary,
            dir,
            port,
            child: None,
        };
        redis.restart();
        redis
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self) -> String {
        format!("redis://{}", self.address())
    }

    /// Starts the server on its port and data dir (replaying the append-only file)
    /// and waits until it answers PING.
    fn restart(&mut self) {
        let child = Command::new(&self.binary)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        while !answers_ping(self.address()) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("redis-server exited ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not answer PING; log:\n{}",
                self.address(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for DurableRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| Path::is_file(candidate))
}

fn answers_ping(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

async fn healthz(url: &str) -> (reqwest::StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(EXCHANGE_TIMEOUT)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    (status, body)
}

/// `[storage]` on `redis` under `prefix` with the fallback on and a breaker that
/// opens at the first failure and probes every 200 ms.
fn quick_fallback_storage(redis: &DurableRedis, prefix: &str) -> String {
    format!(
        "[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"{}\"\n\
         key_prefix = \"{prefix}\"\nfallback_to_memory = true\n\
         connect_timeout = \"1s\"\ncommand_timeout = \"500ms\"\n\
         [storage.redis.breaker]\nfailure_threshold = 1\ncool_down = \"200ms\"\n",
        redis.url()
    )
}

/// The proxy's log so far, its `session store` and `redis connection` lines
/// printed (the outage as an operator greps it).
fn log_with_store_lines_printed(proxy: &common::Process) -> String {
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    let store_lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("session store") || line.contains("redis connection"))
        .collect();
    println!("store lines:\n{}", store_lines.join("\n"));
    log
}

fn result_text(reply: &Reply) -> Value {
    reply.messages().last().unwrap()["result"]["content"][0]["text"].clone()
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn with_the_store_down_an_existing_session_gets_503_and_works_again_after_recovery() {
    let mut redis = DurableRedis::start();
    let upstream = start_upstream();
    let storage = format!(
        "[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"{}\"\n\
         key_prefix = \"store-down\"\nfallback_to_memory = false\n\
         connect_timeout = \"1s\"\ncommand_timeout = \"500ms\"\n",
        redis.url()
    );
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    let before = client
        .call_tool(&proxy.mcp_url(), 1, "add", json!({"a": 1, "b": 2}))
        .await;
    assert_eq!(before.status, 200, "{before:?}");
    assert_eq!(result_text(&before), "3");

    redis.kill();

    // The first request after the kill finds the session in the near cache:
    // forwarded while its append fails, so the upstream ran it and its reply
    // comes back unrecorded (a 503 would invite a second run). The session
    // leaves the near cache; from then on the store is asked first.
    let onset = client
        .call_tool(&proxy.mcp_url(), 2, "echo", json!({"text": "onset"}))
        .await;
    assert_eq!(
        onset.status, 200,
        "the request at the outage's onset: {onset:?}"
    );
    assert_eq!(result_text(&onset), "onset", "{onset:?}");

    for id in 3..6 {
        let during = client
            .call_tool(&proxy.mcp_url(), id, "echo", json!({"text": "down"}))
            .await;
        assert_eq!(
            during.status, 503,
            "an existing session with the store down must be 503, never 404: {during:?}"
        );
        assert_eq!(during.headers["retry-after"], "1", "{during:?}");
        let error = &during.json.as_ref().unwrap()["error"];
        assert!(
            error["message"].as_str().unwrap().contains("unavailable"),
            "{error}"
        );
        let redis_address = redis.url().trim_start_matches("redis://").to_owned();
        assert!(
            !during
                .json
                .as_ref()
                .unwrap()
                .to_string()
                .contains(&redis_address),
            "the client is not told where Redis is: {error}"
        );
    }
    let (status, body) = healthz(&proxy.url("/healthz")).await;
    assert_eq!(status, 503, "{body}");
    // The store's own readings stay on /metrics while its health check fails.
    let metrics = common::metrics(&proxy).await;
    for series in [
        "session_store_redis_pool_clients",
        "session_store_redis_reconnects_total",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    assert_eq!(body["status"], "unavailable", "{body}");
    assert!(
        !body
            .to_string()
            .contains(redis.url().trim_start_matches("redis://")),
        "{body}"
    );

    // A new session cannot be recorded either: 503, not a session the store lacks.
    let newcomer = RawClient::new();
    let refused = newcomer
        .post(
            &proxy.mcp_url(),
            &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                "protocolVersion":"2025-06-18","capabilities":{},
                "clientInfo":{"name":"store-down-test","version":"1.0"}}}),
        )
        .await;
    assert_eq!(refused.status, 503, "{refused:?}");

    redis.restart();

    // The proxy reconnects on its own; the session was replayed from the AOF.
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    let mut id = 10;
    let after = loop {
        id += 1;
        let reply = client
            .call_tool(&proxy.mcp_url(), id, "echo", json!({"text": "back"}))
            .await;
        assert_ne!(reply.status, 404, "the session was lost: {reply:?}");
        if reply.status == 200 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        after.status, 200,
        "no recovery within {RECOVERY_TIMEOUT:?}: {after:?}"
    );
    assert_eq!(result_text(&after), "back");
    let (status, body) = healthz(&proxy.url("/healthz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");

    // Without the fallback the store says when Redis stopped answering and
    // when it answered again, once each; no line per refused request.
    let log = log_with_store_lines_printed(&proxy);
    assert_eq!(
        log.matches("session store: redis unavailable; calls fail until it answers again")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("session store: redis answers again").count(),
        1,
        "{log}"
    );
    let down = log.find("session store: redis unavailable").unwrap();
    let up = log.find("session store: redis answers again").unwrap();
    assert!(down < up, "{log}");
    assert_eq!(
        log.lines()
            .filter(|line| line.contains(" WARN ") && line.contains("request failed"))
            .count(),
        0,
        "the 503s are told by the store's line, not one line each:\n{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|line| line.contains(" WARN ") && line.contains("without being recorded"))
            .count(),
        0,
        "nor the messages forwarded unrecorded meanwhile (counted in \
         mcp_proxy_frames_not_recorded_total):\n{log}"
    );
    assert!(
        !log.contains("redis connection re-established"),
        "nor one line per pooled connection that reconnected:\n{log}"
    );
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn with_fallback_a_blip_that_leaves_the_breaker_closed_is_logged_once_down_and_once_up() {
    let mut redis = DurableRedis::start();
    let upstream = start_upstream();
    // A breaker that does not open within the blip.
    let storage = format!(
        "[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"{}\"\n\
         key_prefix = \"store-blip\"\nfallback_to_memory = true\n\
         connect_timeout = \"1s\"\ncommand_timeout = \"300ms\"\n\
         [storage.redis.breaker]\nfailure_threshold = 1000\ncool_down = \"200ms\"\n",
        redis.url()
    );
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;

    redis.kill();
    // Served from memory: the session is remembered.
    for id in 1..4 {
        let during = client
            .call_tool(&proxy.mcp_url(), id, "echo", json!({"text": "blip"}))
            .await;
        assert_eq!(during.status, 200, "{during:?}");
    }
    redis.restart();
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    let mut id = 10;
    loop {
        id += 1;
        let reply = client
            .call_tool(&proxy.mcp_url(), id, "echo", json!({"text": "back"}))
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let log = std::fs::read_to_string(&proxy.log).unwrap();
        if log.contains("are written back") || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = healthz(&proxy.url("/healthz")).await;
    assert_eq!(body["breaker"], "closed", "{body}");
    let log = log_with_store_lines_printed(&proxy);
    for (line, expected) in [
        (
            "session store: primary unavailable; calls it fails are served from memory",
            1,
        ),
        (
            "session store: primary answers again; circuit breaker stayed closed",
            1,
        ),
        ("are written back", 1),
        ("circuit breaker opened", 0),
        ("answers the probe", 0),
    ] {
        assert_eq!(log.matches(line).count(), expected, "{line}:\n{log}");
    }
    let down = log.find("primary unavailable; calls it fails").unwrap();
    let up = log
        .find("primary answers again; circuit breaker stayed closed")
        .unwrap();
    assert!(down < up, "{log}");
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn with_fallback_and_the_store_down_healthz_says_degraded_and_metrics_show_the_breaker() {
    let mut redis = DurableRedis::start();
    let upstream = start_upstream();
    let storage = quick_fallback_storage(&redis, "store-degraded");
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    let (status, body) = healthz(&proxy.url("/healthz")).await;
    assert_eq!(
        (status.as_u16(), &body["status"]),
        (200, &json!("ok")),
        "{body}"
    );

    redis.kill();
    // The session is remembered: served from memory, the breaker opens.
    let during = client
        .call_tool(&proxy.mcp_url(), 2, "add", json!({"a": 2, "b": 2}))
        .await;
    assert_eq!(during.status, 200, "{during:?}");
    let (status, body) = healthz(&proxy.url("/healthz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["store"]["session_store_breaker_state"], 2.0, "{body}");
    assert_eq!(body["breaker"], "open", "{body}");
    let metrics = common::metrics(&proxy).await;
    for expected in [
        "session_store_breaker_state 2",
        "# TYPE session_store_fallback_journal_bytes gauge",
        "session_store_fallback_dirty_sessions 1",
        "session_store_fallback_quarantined_sessions 0",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = healthz(&proxy.url("/healthz")).await;
        if (status == 200 && body["status"] == "ok") || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("degraded healthz and breaker metrics while Redis was down; back to ok: {body}");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["breaker"], "closed", "{body}");
    // Losing Redis is told by the breaker, once; not by each of the pool's
    // connections (fred's `Broadcasting error ... Connection closed`).
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    let fred_lines = log.lines().filter(|line| line.contains(" fred")).count();
    assert_eq!(fred_lines, 0, "{log}");
    assert_eq!(log.matches("circuit breaker opened").count(), 1, "{log}");
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn with_fallback_and_redis_unreachable_at_start_the_log_says_so_once_per_probe() {
    let port = closed_port();
    let upstream = start_upstream();
    let storage = format!(
        "[storage]\nbackend = \"redis\"\n[storage.redis]\n\
         url = \"redis://operator:s3cret@127.0.0.1:{port}\"\nfallback_to_memory = true\n\
         connect_timeout = \"1s\"\n[storage.redis.breaker]\ncool_down = \"100ms\"\n"
    );
    let mut proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let (status, body) = healthz(&proxy.url("/healthz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["backend"], &body["status"], &body["breaker"]),
        (
            &json!("memory-fallback"),
            &json!("degraded"),
            &json!("open")
        ),
        "{body}"
    );
    let probe_line = "primary still unreachable; serving from memory";
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&proxy.log)
        .unwrap()
        .matches(probe_line)
        .count()
        < 3
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.stop();
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    let probes = log.matches(probe_line).count();
    let fred_lines = log.lines().filter(|line| line.contains(" fred")).count();
    println!("{probes} failed probes logged, {fred_lines} lines from fred");
    assert!(probes >= 3, "one line per failed probe:\n{log}");
    assert_eq!(fred_lines, 0, "no quit of already stopped clients:\n{log}");
    assert!(!log.contains("already stopped"), "{log}");
    // The start line agrees with /healthz, and names Redis without its credentials.
    let start = log
        .lines()
        .find(|line| line.contains("mcp-proxy listening") && line.contains("listener=\"mcp\""))
        .unwrap_or_else(|| panic!("no start line:\n{log}"));
    assert!(
        start.contains(&format!(
            "backend=\"redis\" state=\"degraded: serving from memory, Redis unreachable at 127.0.0.1:{port}"
        )),
        "{start}"
    );
    assert!(!log.contains("s3cret"), "{log}");
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn with_fallback_the_proxy_starts_while_redis_is_down_and_writes_back_once_it_answers() {
    // Nothing listens on the port when the proxy starts.
    let mut redis = DurableRedis::start();
    redis.kill();
    let upstream = start_upstream();
    let url = redis.url();
    let storage = |fallback: bool| {
        format!(
            "[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"{url}\"\n\
             key_prefix = \"store-late\"\nfallback_to_memory = {fallback}\n\
             connect_timeout = \"1s\"\ncommand_timeout = \"500ms\"\n\
             [storage.redis.breaker]\ncool_down = \"200ms\"\n"
        )
    };
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage(true));
    let (status, body) = healthz(&proxy.url("/healthz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["store"]["session_store_breaker_state"], 2.0, "{body}");

    let mut client = RawClient::new();
    let initialized = client.initialize(&proxy.mcp_url()).await;
    assert_eq!(initialized.status, 200, "{initialized:?}");
    let during = client
        .call_tool(&proxy.mcp_url(), 1, "add", json!({"a": 2, "b": 2}))
        .await;
    assert_eq!(during.status, 200, "{during:?}");
    assert_eq!(result_text(&during), "4");

    redis.restart();
    let started = Instant::now();
    let body = loop {
        let (status, body) = healthz(&proxy.url("/healthz")).await;
        if (status == 200 && body["status"] == "ok") || started.elapsed() > RECOVERY_TIMEOUT {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "proxy started with redis down; redis up -> healthz ok after {:?}: {body}",
        started.elapsed()
    );
    assert_eq!(body["status"], "ok", "{body}");

    // Written back: a second proxy on the same Redis, without the fallback,
    // serves the session made while Redis was down.
    let second = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage(false));
    let after = client
        .call_tool(
            &second.mcp_url(),
            2,
            "echo",
            json!({"text": "written back"}),
        )
        .await;
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(result_text(&after), "written back");
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn with_fallback_a_redis_blip_does_not_stop_a_streamed_call_nor_blame_another_instance() {
    use futures::StreamExt;
    use mcp_proxy::sse::SseParser;

    let mut redis = DurableRedis::start();
    let upstream = common::start_upstream_with("127.0.0.1:0", &["--event-store"]);
    let storage = quick_fallback_storage(&redis, "store-blip");
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", &storage);
    let mut client = RawClient::new();
    client.initialize(&proxy.mcp_url()).await;
    // 16 steps of 500 ms: the lease is renewed (every second) through the outage.
    let call = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{
        "name":"countdown","arguments":{"from":16,"interval_ms":500},
        "_meta":{"progressToken":"blip"}}});
    let stream = client.post_stream(&proxy.mcp_url(), &call).await;
    let mut body = stream.bytes_stream();
    let mut parser = SseParser::new(16 * 1024 * 1024);
    let mut messages: Vec<Value> = Vec::new();
    let mut blipped = false;
    let started = Instant::now();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(EXCHANGE_TIMEOUT, body.next()).await {
        for event in parser.push(&chunk).unwrap() {
            if !event.data.is_empty() {
                messages.push(serde_json::from_str(&event.data).unwrap());
            }
        }
        if !blipped && !messages.is_empty() {
            // After the first progress event (the lease is taken within 20 ms):
            // Redis is gone for over two renewals, then back from its AOF.
            blipped = true;
            redis.kill();
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            redis.restart();
        }
    }
    let (progress, results) = common::countdown_messages(&messages);
    let metrics = common::metrics(&proxy).await;
    let lost = common::metric(
        &metrics,
        "mcp_proxy_streams_failed_total{reason=\"lease_lost\"}",
    );
    println!(
        "streamed call through a 2.5 s Redis outage: {} progress events, results {results:?}, \
         ended {:?} after it started; streams failed with lease_lost: {lost}",
        progress.len(),
        started.elapsed()
    );
    assert!(blipped, "Redis went down during the stream");
    assert_eq!(progress, (1..=16).collect::<Vec<u64>>(), "{messages:?}");
    assert_eq!(results, ["countdown from 16 done"]);
    assert_eq!(lost, 0.0, "no other instance exists to lose the lease to");
}
