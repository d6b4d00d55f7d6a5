//! Shared harness of the end-to-end tests: the real `mcp-proxy` and
//! `demo-upstream` binaries as child processes on free loopback ports (stopped
//! by a signal on drop, so that an instrumented binary under `cargo xtask
//! coverage` exits cleanly and writes its profile), and a small raw MCP client
//! over reqwest.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

pub mod everything;
pub mod python;

use futures::StreamExt;
use mcp_proxy::sse::{SseEvent, SseParser};
use serde_json::{json, Value};

/// Longest wait for a process to print its listening address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for any single HTTP exchange in a test.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// How a test process is asked to exit when it is dropped.
#[derive(Clone, Copy, Debug)]
pub enum StopBy {
    /// SIGTERM (mcp-proxy), waiting up to 15 s: above the `shutdown_grace`
    /// [`start_proxy`] gives it.
    Term,
    /// SIGINT (demo-upstream waits for Ctrl-C), waiting up to 5 s: it also
    /// waits for open streams, which a proxy still running may hold.
    Interrupt,
    /// SIGKILL (peers that are not instrumented).
    Kill,
}

impl StopBy {
    /// The signal as `kill` spells it, and the longest wait for the exit.
    fn signal(self) -> (&'static str, Duration) {
        match self {
            StopBy::Term => ("-TERM", Duration::from_secs(15)),
            StopBy::Interrupt => ("-INT", Duration::from_secs(5)),
            StopBy::Kill => ("-KILL", Duration::from_secs(5)),
        }
    }
}

/// The variable naming where an instrumented binary writes its coverage
/// profile (`cargo xtask coverage` sets it, with `%p` in it so that every
/// process writes its own file).
const PROFILE_FILE_VAR: &str = "LLVM_PROFILE_FILE";

/// The variables a child keeps when a test clears its environment:
/// `LLVM_PROFILE_FILE` when set, so that under `cargo xtask coverage` the
/// child's lines count too. Empty in an ordinary test run.
pub fn coverage_env() -> Vec<(&'static str, String)> {
    std::env::var(PROFILE_FILE_VAR)
        .map(|value| vec![(PROFILE_FILE_VAR, value)])
        .unwrap_or_default()
}

/// A child process, stopped when dropped ([`Process::stop`]).
pub struct Process {
    child: Child,
    /// How it is asked to exit.
    stop_by: StopBy,
    /// The address it printed as listening on.
    pub address: SocketAddr,
    /// The address of its admin listener (`mcp-proxy admin listening on`), if any.
    pub admin: Option<SocketAddr>,
    /// Where its stderr goes (for debugging a failure).
    pub log: PathBuf,
}

impl Process {
    /// Starts `command` and waits (bounded) for its `... listening on <addr>` line,
    /// and with `admin` also for its `... admin listening on <addr>` line.
    fn start(mut command: Command, name: &str, admin: bool, stop_by: StopBy) -> Process {
        let log = scratch_path(&format!("{name}.log"));
        let stderr = std::fs::File::create(&log).unwrap();
        command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .stdin(Stdio::null());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some((what, address)) = line.split_once("listening on ") {
                    let _ = tx.send((what.contains("admin"), address.trim().to_owned()));
                }
            }
        });
        let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
        let (mut address, mut admin_address) = (None, None);
        while std::time::Instant::now() < deadline {
            if let Ok((is_admin, line)) = rx.recv_timeout(Duration::from_millis(50)) {
                let parsed: SocketAddr = line.parse().unwrap();
                if is_admin {
                    admin_address = Some(parsed);
                } else {
                    address = Some(parsed);
                }
            }
            if let Some(address) = address.filter(|_| !admin || admin_address.is_some()) {
                return Process {
                    child,
                    stop_by,
                    address,
                    admin: admin_address,
                    log,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("{name} exited at start ({status}); its log:\n{log_text}");
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("{name} did not start within {STARTUP_TIMEOUT:?}; its log:\n{log_text}");
    }

    /// Kills the process now (SIGKILL: no goodbye, no coverage profile) and
    /// waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to exit (its [`StopBy`] signal), waits for it (bounded),
    /// then kills it if it is still running. Its exit code, or `None` when it had
    /// to be killed or was ended by a signal. A clean exit is what lets an
    /// instrumented binary write its coverage profile.
    pub fn stop(&mut self) -> Option<i32> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.code();
        }
        let (signal, patience) = self.stop_by.signal();
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let code = self.wait_exit(patience);
        self.kill();
        code
    }

    /// The operating system's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (polling, bounded by `limit`) for the process to exit on its own;
    /// its exit code, or `None` when it is still running or was killed by a signal.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The process's MCP endpoint URL.
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.address)
    }

    /// A URL on the process.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A URL on the process's admin listener (`/sessions`, `/metrics`).
    pub fn admin_url(&self, path: &str) -> String {
        let admin = self.admin.expect("this process has no admin listener");
        format!("http://{admin}{path}")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A file path unique to this test process in cargo's scratch directory.
pub fn scratch_path(name: &str) -> PathBuf {
    let unique = format!(
        "{}-{:08x}-{name}",
        std::process::id(),
        rand::random::<u32>()
    );
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique)
}

/// Starts the rmcp demo upstream on a free loopback port.
pub fn start_upstream() -> Process {
    start_upstream_with("127.0.0.1:0", &[])
}

/// Starts the demo upstream on `listen` with extra flags (faults to play).
pub fn start_upstream_with(listen: &str, flags: &[&str]) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo-upstream"));
    command
        .args(["--listen", listen])
        .args(flags)
        .env("RUST_LOG", "warn");
    Process::start(command, "demo-upstream", false, StopBy::Interrupt)
}

/// The value of one counter (`name` with its labels, trailing spaces ignored) in
/// the proxy's `/metrics`, read from its admin listener; 0 when absent.
pub async fn counter(proxy: &Process, name: &str) -> u64 {
    metric(&metrics(proxy).await, name.trim_end()) as u64
}

/// Starts `mcp-proxy` with `[proxy]` pointing at `upstream`, `listen` (use
/// `127.0.0.1:0` for a free port), an admin listener on a free loopback port
/// (unless `proxy_keys` sets `admin_listen`), `initialize_rate = "off"` (unless
/// `proxy_keys` sets it), and `extra_toml` appended (e.g. a
/// `[storage]` table). The environment is cleared so stray `MCP_PROXY_*` or
/// `SESSION_STORE_*` variables cannot change the test.
pub fn start_proxy(upstream: &str, listen: &str, proxy_keys: &str, extra_toml: &str) -> Process {
    start_proxy_with_env(upstream, listen, proxy_keys, extra_toml, &[])
}

/// [`start_proxy`] with `env` set in the proxy's (otherwise cleared) environment.
pub fn start_proxy_with_env(
    upstream: &str,
    listen: &str,
    proxy_keys: &str,
    extra_toml: &str,
    env: &[(&str, &str)],
) -> Process {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_mcp-proxy"));
    start_proxy_binary(binary, upstream, listen, proxy_keys, extra_toml, env)
}

/// [`start_proxy_with_env`] running the `mcp-proxy` at `binary` (another build,
/// for a before/after benchmark in one run).
pub fn start_proxy_binary(
    binary: &std::path::Path,
    upstream: &str,
    listen: &str,
    proxy_keys: &str,
    extra_toml: &str,
    env: &[(&str, &str)],
) -> Process {
    let config = scratch_path("mcp-proxy.toml");
    let timeout = if proxy_keys.contains("upstream_timeout") {
        ""
    } else {
        "upstream_timeout = \"10s\"\n"
    };
    let admin = if proxy_keys.contains("admin_listen") {
        ""
    } else {
        "admin_listen = \"127.0.0.1:0\"\n"
    };
    // Every test client comes from 127.0.0.1: the initialize rate is off unless a
    // test sets it, so tests that open many sessions are not refused.
    let rate = if proxy_keys.contains("initialize_rate") {
        ""
    } else {
        "initialize_rate = \"off\"\n"
    };
    // Dropping the process stops it with SIGTERM: a short grace keeps that quick
    // when a test leaves a request in flight.
    let grace = if proxy_keys.contains("shutdown_grace") {
        ""
    } else {
        "shutdown_grace = \"5s\"\n"
    };
    let toml = format!(
        "[proxy]\nlisten = \"{listen}\"\nupstream = \"{upstream}\"\n{admin}{rate}{grace}{timeout}{proxy_keys}\n{extra_toml}\n"
    );
    std::fs::write(&config, toml).unwrap();
    let mut command = Command::new(binary);
    command
        .env_clear()
        .envs(coverage_env())
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .arg("--config")
        .arg(&config);
    Process::start(command, "mcp-proxy", true, StopBy::Term)
}

/// A raw MCP client: reqwest with the MCP headers.
pub struct RawClient {
    pub http: reqwest::Client,
    pub session: Option<String>,
    pub authorization: Option<String>,
}

/// A reply: status, headers and either the JSON messages (from a JSON body or
/// every SSE event) or nothing.
#[derive(Debug)]
pub struct Reply {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub events: Vec<SseEvent>,
    pub json: Option<Value>,
}

impl Reply {
    /// Every JSON-RPC message of the reply, in order.
    pub fn messages(&self) -> Vec<Value> {
        let mut messages: Vec<Value> = self
            .events
            .iter()
            .filter(|event| !event.data.is_empty())
            .map(|event| serde_json::from_str(&event.data).unwrap())
            .collect();
        messages.extend(self.json.clone());
        messages
    }
}

impl RawClient {
    pub fn new() -> Self {
        RawClient {
            // No pooled connections: a test restarts a proxy on the same address,
            // and a connection to the killed process must not be reused.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            session: None,
            authorization: None,
        }
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, url)
            .timeout(EXCHANGE_TIMEOUT)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2025-06-18");
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization);
        }
        request
    }

    /// POSTs `body` and reads the whole reply.
    pub async fn post(&self, url: &str, body: &Value) -> Reply {
        self.post_bytes(url, serde_json::to_vec(body).unwrap())
            .await
    }

    /// POSTs raw bytes and reads the whole reply.
    pub async fn post_bytes(&self, url: &str, body: Vec<u8>) -> Reply {
        let response = self
            .request(reqwest::Method::POST, url)
            .body(body)
            .send()
            .await
            .unwrap();
        read_reply(response).await
    }

    /// Sends `initialize` and keeps the session id the proxy returns.
    pub async fn initialize(&mut self, url: &str) -> Reply {
        self.initialize_as(url, "raw-test-client").await
    }

    /// [`initialize`](Self::initialize) with `name` as `clientInfo.name`.
    pub async fn initialize_as(&mut self, url: &str, name: &str) -> Reply {
        let reply = self
            .post(
                url,
                &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                    "protocolVersion":"2025-06-18","capabilities":{},
                    "clientInfo":{"name":name,"version":"1.0"}}}),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        self.session = Some(reply.headers["mcp-session-id"].to_str().unwrap().to_owned());
        let accepted = self
            .post(
                url,
                &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
            )
            .await;
        assert_eq!(accepted.status, 202, "{accepted:?}");
        reply
    }

    /// Calls a tool and returns every message of the reply.
    pub async fn call_tool(&self, url: &str, id: u64, name: &str, arguments: Value) -> Reply {
        self.post(
            url,
            &json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
                "name":name,"arguments":arguments,"_meta":{"progressToken":format!("p{id}")}}}),
        )
        .await
    }

    /// POSTs `body` and returns the open SSE response (for reading part of it).
    pub async fn post_stream(&self, url: &str, body: &Value) -> reqwest::Response {
        let response = self
            .http
            .request(reqwest::Method::POST, url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2025-06-18")
            .header("mcp-session-id", self.session.clone().unwrap())
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response
    }

    /// GET with `Last-Event-ID`: the resumed stream, read to its end.
    pub async fn resume(&self, url: &str, last_event_id: &str) -> Reply {
        let response = self
            .request(reqwest::Method::GET, url)
            .header("accept", "text/event-stream")
            .header("last-event-id", last_event_id)
            .send()
            .await
            .unwrap();
        read_reply(response).await
    }

    /// DELETE the session.
    pub async fn delete(&self, url: &str) -> reqwest::StatusCode {
        self.request(reqwest::Method::DELETE, url)
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// Reads a reply to its end (bounded by [`EXCHANGE_TIMEOUT`]).
pub async fn read_reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let is_sse = headers
        .get("content-type")
        .is_some_and(|value| value.to_str().unwrap().starts_with("text/event-stream"));
    if is_sse {
        let events = tokio::time::timeout(EXCHANGE_TIMEOUT, read_events(response, usize::MAX))
            .await
            .expect("SSE stream did not end in time");
        return Reply {
            status,
            headers,
            events,
            json: None,
        };
    }
    let body = response.bytes().await.unwrap();
    let json = (!body.is_empty()).then(|| serde_json::from_slice(&body).unwrap());
    Reply {
        status,
        headers,
        events: Vec::new(),
        json,
    }
}

/// Reads SSE events until the stream ends or `count` events with data arrived.
pub async fn read_events(response: reqwest::Response, count: usize) -> Vec<SseEvent> {
    let mut parser = SseParser::new(16 * 1024 * 1024);
    let mut events = Vec::new();
    let mut with_data = 0;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        for event in parser.push(&chunk).unwrap() {
            with_data += usize::from(!event.data.is_empty());
            events.push(event);
            if with_data >= count {
                return events;
            }
        }
    }
    events
}

/// Every session the proxy lists (`GET /sessions?limit=1000` on its admin
/// listener).
pub async fn admin_sessions(proxy: &Process) -> Vec<Value> {
    let response = reqwest::Client::new()
        .get(proxy.admin_url("/sessions?limit=1000"))
        .timeout(EXCHANGE_TIMEOUT)
        .send()
        .await
        .unwrap();
    let page: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    page["sessions"].as_array().unwrap().clone()
}

/// The admin view of a session: `{session, frames, next_after}`, from the proxy's
/// admin listener.
pub async fn admin_session(proxy: &Process, session: &str) -> Value {
    let response = reqwest::Client::new()
        .get(proxy.admin_url(&format!("/sessions/{session}?limit=1000")))
        .timeout(EXCHANGE_TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

/// The proxy's `/metrics` text, from its admin listener.
pub async fn metrics(proxy: &Process) -> String {
    let response = reqwest::Client::new()
        .get(proxy.admin_url("/metrics"))
        .timeout(EXCHANGE_TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The value of the metric line `name` (with its labels) in `metrics`, 0 when absent.
pub fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The `progress` values and final result text of a countdown reply's messages.
pub fn countdown_messages(messages: &[Value]) -> (Vec<u64>, Vec<String>) {
    let progress = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .map(|m| m["params"]["progress"].as_f64().unwrap() as u64)
        .collect();
    let results = messages
        .iter()
        .filter_map(|m| m["result"]["content"][0]["text"].as_str())
        .map(str::to_owned)
        .collect();
    (progress, results)
}

/// What a command writes (a tail's frame table), readable while it runs.
#[derive(Clone, Default)]
pub struct SharedOutput(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedOutput {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedOutput {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}
