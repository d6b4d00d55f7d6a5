//! What the proxy adds to a tool call: `tools/call echo` round trips straight to the
//! upstream, through nginx as a plain reverse proxy, and through `mcp-proxy` on the
//! memory store and on Redis, at 1 and 16 concurrent clients (each with its own
//! session), all in one run.
//!
//! The rows are measured in interleaved rounds (direct, nginx, memory, Redis, then
//! again, `--rounds` times) so that load from elsewhere on shared cores hits every
//! row alike; each row's figures pool its rounds. Besides p50, p99 and calls/s, each
//! proxy row has the proxy's CPU time per 1,000 calls from `/proc/<pid>/stat`
//! (nginx: master plus worker), the most stable figure on shared cores. A second
//! table states the issue's targets as ratios to the nginx row of the same run.
//!
//! Raw JSON-RPC over reqwest (one keep-alive connection per client) rather than an
//! MCP SDK client, so the client's own cost is small and the same on every row.
//! Every row is bounded by a call count and a time limit. The Redis rows need
//! `TEST_REDIS_URL` (`cargo xtask bench proxy` starts a server and sets it); the
//! nginx rows need nginx on PATH or at /usr/sbin/nginx (xtask installs it when
//! missing and running as root); without them those rows are skipped.
//!
//! ```text
//! cargo xtask bench proxy [-- --calls 2000 --seconds 20 --clients 1,16 --rounds 3 --upstream demo]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "overhead/cpu.rs"]
mod cpu;
#[path = "overhead/nginx.rs"]
mod nginx;
#[path = "overhead/report.rs"]
mod report;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{
    everything::Everything, scratch_path, start_proxy, start_proxy_binary, start_upstream, Process,
};
use nginx::Nginx;
use serde_json::{json, Value};

const REDIS_URL_VAR: &str = "TEST_REDIS_URL";
/// Unmeasured calls per client before a row starts: connections open, caches warm.
const WARMUP_CALLS_PER_CLIENT: usize = 5;
/// Longest wait for one HTTP exchange.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which MCP server answers the calls.
#[derive(Clone, Copy, PartialEq)]
enum Upstream {
    /// The workspace's rmcp `demo-upstream` (`echo` with `text`).
    Demo,
    /// `@modelcontextprotocol/server-everything` from `TEST_MCP_NPM_DIR` (`echo`
    /// with `message`, answering `Echo: <message>`).
    Everything,
}

/// The bench's flags (cargo adds `--bench`, which is ignored).
struct Options {
    /// Calls per row in total, shared by its rounds.
    calls: usize,
    /// Time limit per row in total, shared by its rounds.
    seconds: u64,
    clients: Vec<usize>,
    rounds: usize,
    upstream: Upstream,
    /// `storage.redis.pool_size` of the Redis proxy (the default, 8, when absent).
    redis_pool_size: Option<usize>,
    /// Another `mcp-proxy` build measured as a further memory row (`memory,
    /// baseline`): before/after a change in one run.
    baseline_proxy: Option<std::path::PathBuf>,
    /// `[proxy] worker_threads` values, each a further memory row.
    worker_threads: Vec<usize>,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            calls: 2_000,
            seconds: 20,
            clients: vec![1, 16],
            rounds: 3,
            upstream: Upstream::Demo,
            redis_pool_size: None,
            baseline_proxy: None,
            worker_threads: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
            match arg.as_str() {
                "--calls" => options.calls = value().parse().expect("--calls N"),
                "--seconds" => options.seconds = value().parse().expect("--seconds S"),
                "--rounds" => {
                    options.rounds = value().parse::<usize>().expect("--rounds R").max(1);
                }
                "--clients" => {
                    options.clients = value()
                        .split(',')
                        .map(|level| level.trim().parse().expect("--clients 1,16"))
                        .collect();
                }
                "--upstream" => {
                    options.upstream = match value().as_str() {
                        "demo" => Upstream::Demo,
                        "everything" => Upstream::Everything,
                        other => panic!("--upstream {other}: use `demo` or `everything`"),
                    };
                }
                "--redis-pool-size" => {
                    options.redis_pool_size = Some(value().parse().expect("--redis-pool-size N"));
                }
                "--baseline-proxy" => options.baseline_proxy = Some(value().into()),
                "--worker-threads" => {
                    options.worker_threads = value()
                        .split(',')
                        .map(|count| count.trim().parse().expect("--worker-threads 1,2"))
                        .collect();
                }
                "--bench" => {}
                other => panic!("unknown argument {other}; see `cargo xtask bench --help`"),
            }
        }
        options
    }
}

/// The `tools/call` every client sends and the text its reply must carry.
#[derive(Clone)]
struct Echo {
    arguments: Value,
    expected: String,
}

impl Echo {
    fn for_upstream(upstream: Upstream) -> Echo {
        match upstream {
            Upstream::Demo => Echo {
                arguments: json!({"text": "bench"}),
                expected: "bench".to_owned(),
            },
            Upstream::Everything => Echo {
                arguments: json!({"message": "bench"}),
                expected: "Echo: bench".to_owned(),
            },
        }
    }
}

/// Every bench client comes from one address: the per-client limits would
/// answer 429 to the load itself.
const UNLIMITED_CLIENTS: &str = "max_sessions_per_client = 0\ninitialize_rate = \"off\"";

/// Where the calls go.
struct Target {
    name: &'static str,
    url: String,
    /// The proxy's `/metrics`, for the time spent in the store; `None` otherwise.
    metrics_url: Option<String>,
    /// Processes whose CPU time the row charges (empty for direct).
    pids: Vec<u32>,
}

/// Latencies of one row (one round, or a row's rounds pooled).
struct Row {
    target: &'static str,
    clients: usize,
    calls: usize,
    elapsed: Duration,
    /// Sorted, in microseconds.
    latencies: Vec<u64>,
    /// Store operations the proxy made during the row: name -> (count, seconds).
    store: BTreeMap<String, (u64, f64)>,
    /// CPU time of the target's processes during the row, in milliseconds.
    cpu_ms: f64,
    /// Whether the row has processes to charge CPU time to.
    has_cpu: bool,
}

impl Row {
    fn percentile(&self, fraction: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((self.latencies.len() as f64) * fraction).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[index] as f64 / 1000.0
    }

    fn ops_per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    /// CPU milliseconds per 1,000 calls; NaN without processes to charge.
    fn cpu_per_thousand(&self) -> f64 {
        if !self.has_cpu || self.calls == 0 {
            return f64::NAN;
        }
        self.cpu_ms * 1000.0 / self.calls as f64
    }

    /// Adds another round of the same target and clients.
    fn pool(&mut self, round: Row) {
        self.calls += round.calls;
        self.elapsed += round.elapsed;
        self.latencies.extend(round.latencies);
        self.latencies.sort_unstable();
        self.cpu_ms += round.cpu_ms;
        for (operation, (count, seconds)) in round.store {
            let entry = self.store.entry(operation).or_insert((0, 0.0));
            entry.0 += count;
            entry.1 += seconds;
        }
    }
}

fn main() {
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(options));
}

/// The upstream server, kept alive for the run.
enum UpstreamProcess {
    Demo(Process),
    Everything(Everything),
}

impl UpstreamProcess {
    fn start(upstream: Upstream) -> UpstreamProcess {
        match upstream {
            Upstream::Demo => UpstreamProcess::Demo(start_upstream()),
            Upstream::Everything => UpstreamProcess::Everything(Everything::start()),
        }
    }

    fn mcp_url(&self) -> String {
        match self {
            UpstreamProcess::Demo(process) => process.mcp_url(),
            UpstreamProcess::Everything(everything) => everything.mcp_url(),
        }
    }

    fn address(&self) -> SocketAddr {
        match self {
            UpstreamProcess::Demo(process) => process.address,
            UpstreamProcess::Everything(everything) => everything.address,
        }
    }
}

async fn run(options: Options) {
    let upstream = UpstreamProcess::start(options.upstream);
    let echo = Echo::for_upstream(options.upstream);
    let nginx = match Nginx::binary() {
        Some(binary) => Some(Nginx::start(
            &binary,
            upstream.address(),
            scratch_path("nginx"),
        )),
        None => {
            eprintln!("nginx is not on PATH nor at /usr/sbin/nginx: the nginx rows are skipped");
            None
        }
    };
    let memory_toml = "[storage]\nbackend = \"memory\"\n";
    let memory = start_proxy(
        &upstream.mcp_url(),
        "127.0.0.1:0",
        UNLIMITED_CLIENTS,
        memory_toml,
    );
    // Further memory rows: the baseline build, and each `worker_threads` value
    // on this build (and on the baseline's, when given).
    let this_build = std::path::PathBuf::from(env!("CARGO_BIN_EXE_mcp-proxy"));
    let mut extra_memory: Vec<(String, Process)> = Vec::new();
    for (build, binary) in std::iter::once(("memory", Some(&this_build))).chain(std::iter::once((
        "baseline",
        options.baseline_proxy.as_ref(),
    ))) {
        let Some(binary) = binary else { continue };
        let mut variants: Vec<(String, String)> = options
            .worker_threads
            .iter()
            .map(|threads| {
                (
                    format!("{build}, {threads} wkr"),
                    format!("{UNLIMITED_CLIENTS}\nworker_threads = {threads}"),
                )
            })
            .collect();
        if build == "baseline" {
            variants.insert(
                0,
                ("memory, baseline".to_owned(), UNLIMITED_CLIENTS.to_owned()),
            );
        }
        for (name, keys) in variants {
            let proxy = start_proxy_binary(
                binary,
                &upstream.mcp_url(),
                "127.0.0.1:0",
                &keys,
                memory_toml,
                &[],
            );
            extra_memory.push((name, proxy));
        }
    }
    let redis: Option<Process> = std::env::var(REDIS_URL_VAR).ok().map(|url| {
        let prefix = format!("mcp-proxy-bench-{:08x}", rand::random::<u32>());
        let pool = options
            .redis_pool_size
            .map(|size| format!("pool_size = {size}\n"))
            .unwrap_or_default();
        start_proxy(
            &upstream.mcp_url(),
            "127.0.0.1:0",
            UNLIMITED_CLIENTS,
            &format!(
                "[storage]\nbackend = \"redis\"\n[storage.redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n{pool}"
            ),
        )
    });
    let mut targets = vec![Target {
        name: "direct",
        url: upstream.mcp_url(),
        metrics_url: None,
        pids: Vec::new(),
    }];
    if let Some(nginx) = &nginx {
        targets.push(Target {
            name: "nginx",
            url: nginx.mcp_url(),
            metrics_url: None,
            pids: nginx.pids(),
        });
    }
    targets.push(Target {
        name: "proxy, memory",
        url: memory.mcp_url(),
        metrics_url: Some(memory.admin_url("/metrics")),
        pids: vec![memory.pid()],
    });
    for (name, proxy) in &extra_memory {
        targets.push(Target {
            name: Box::leak(name.clone().into_boxed_str()),
            url: proxy.mcp_url(),
            metrics_url: Some(proxy.admin_url("/metrics")),
            pids: vec![proxy.pid()],
        });
    }
    match &redis {
        Some(proxy) => targets.push(Target {
            name: "proxy, Redis",
            url: proxy.mcp_url(),
            metrics_url: Some(proxy.admin_url("/metrics")),
            pids: vec![proxy.pid()],
        }),
        None => eprintln!("{REDIS_URL_VAR} is not set: the Redis rows are skipped"),
    }
    let rounds = options.rounds;
    let calls_per_round = options.calls.div_ceil(rounds);
    let time_per_round = Duration::from_secs(options.seconds) / rounds as u32;
    println!(
        "tools/call echo round trips ({} upstream); at most {} calls or {} s per row, \
         in {rounds} interleaved rounds; host: {} cores",
        match options.upstream {
            Upstream::Demo => "demo-upstream",
            Upstream::Everything => "server-everything",
        },
        options.calls,
        options.seconds,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let mut rows: Vec<Row> = Vec::new();
    for &clients in &options.clients {
        let first = rows.len();
        for round in 0..rounds {
            for target in &targets {
                let measured =
                    measure(target, clients, calls_per_round, time_per_round, &echo).await;
                eprintln!(
                    "  round {}: {} x{clients}: {} calls in {:.1}s",
                    round + 1,
                    target.name,
                    measured.calls,
                    measured.elapsed.as_secs_f64()
                );
                match rows[first..]
                    .iter_mut()
                    .find(|row| row.target == target.name)
                {
                    Some(row) => row.pool(measured),
                    None => rows.push(measured),
                }
            }
        }
    }
    report::print_table(&rows);
    report::print_targets(&rows);
}

/// Runs `clients` sessions against `target` until `calls` calls in total
/// completed or `limit` passed.
async fn measure(
    target: &Target,
    clients: usize,
    calls: usize,
    limit: Duration,
    echo: &Echo,
) -> Row {
    let mut sessions = Vec::with_capacity(clients);
    for _ in 0..clients {
        let session = BenchClient::initialize(&target.url, echo.clone()).await;
        for call in 0..WARMUP_CALLS_PER_CLIENT {
            session.call_echo(call as u64 + 1).await;
        }
        sessions.push(session);
    }
    let store_before = store_operations(target).await;
    let cpu_before = cpu::total_milliseconds(&target.pids);
    let remaining = Arc::new(AtomicUsize::new(calls));
    let deadline = Instant::now() + limit;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for session in sessions {
        let remaining = remaining.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut id = 1_000;
            while Instant::now() < deadline
                && remaining
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        left.checked_sub(1)
                    })
                    .is_ok()
            {
                id += 1;
                let sent = Instant::now();
                session.call_echo(id).await;
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let cpu_ms = cpu::total_milliseconds(&target.pids) - cpu_before;
    latencies.sort_unstable();
    let mut store = store_operations(target).await;
    for (operation, (count, seconds)) in &mut store {
        let (count_before, seconds_before) =
            store_before.get(operation).copied().unwrap_or_default();
        *count -= count_before;
        *seconds -= seconds_before;
    }
    // Drops what the /metrics scrapes themselves cost (one `count` each).
    let calls = latencies.len() as u64;
    store.retain(|_, (count, _)| *count * 100 >= calls.max(1));
    Row {
        target: target.name,
        clients,
        calls: calls as usize,
        elapsed,
        latencies,
        store,
        cpu_ms,
        has_cpu: !target.pids.is_empty(),
    }
}

/// The proxy's store operations so far, from its `/metrics`: name -> (count, seconds).
async fn store_operations(target: &Target) -> BTreeMap<String, (u64, f64)> {
    let mut operations = BTreeMap::new();
    let Some(url) = &target.metrics_url else {
        return operations;
    };
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let family = "mcp_proxy_store_operation_duration_seconds";
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some(operation) = series
            .split_once("operation=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(operation, _)| operation.to_owned())
        else {
            continue;
        };
        let entry = operations.entry(operation).or_insert((0, 0.0));
        if series.starts_with(&format!("{family}_count")) {
            entry.0 = value.parse().unwrap();
        } else if series.starts_with(&format!("{family}_sum")) {
            entry.1 = value.parse().unwrap();
        }
    }
    operations
}

/// One MCP session over raw HTTP: its own connection, its own session id.
struct BenchClient {
    http: reqwest::Client,
    url: String,
    session: String,
    echo: Echo,
}

impl BenchClient {
    async fn initialize(url: &str, echo: Echo) -> BenchClient {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .build()
            .unwrap();
        let mut client = BenchClient {
            http,
            url: url.to_owned(),
            session: String::new(),
            echo,
        };
        let initialize = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},
            "clientInfo":{"name":"proxy-overhead-bench","version":"1.0"}}});
        let response = client.post(&initialize).await;
        client.session = response
            .headers()
            .get("mcp-session-id")
            .expect("initialize reply without Mcp-Session-Id")
            .to_str()
            .unwrap()
            .to_owned();
        reply_message(response, &json!(0)).await;
        let initialized = client
            .post(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await;
        assert_eq!(initialized.status(), 202);
        client
    }

    async fn post(&self, body: &Value) -> reqwest::Response {
        let mut request = self
            .http
            .post(&self.url)
            .timeout(REQUEST_TIMEOUT)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2025-06-18");
        if !self.session.is_empty() {
            request = request.header("mcp-session-id", &self.session);
        }
        request
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .unwrap()
    }

    async fn call_echo(&self, id: u64) {
        let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
            "params":{"name":"echo","arguments":self.echo.arguments}});
        let response = self.post(&call).await;
        let message = reply_message(response, &json!(id)).await;
        assert_eq!(
            message["result"]["content"][0]["text"],
            self.echo.expected.as_str(),
            "unexpected reply: {message}"
        );
    }
}

/// The JSON-RPC response with `id` from a JSON or SSE reply, read to its end.
async fn reply_message(response: reqwest::Response, id: &Value) -> Value {
    let status = response.status();
    let is_sse = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    let body = response.bytes().await.unwrap();
    assert!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    if !is_sse {
        return serde_json::from_slice(&body).unwrap();
    }
    let text = std::str::from_utf8(&body).unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim_start()).ok())
        .find(|message| &message["id"] == id)
        .unwrap_or_else(|| panic!("no response with id {id} in the SSE reply:\n{text}"))
}
