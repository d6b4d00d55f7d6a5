//! What the proxy adds to a tool call: `tools/call echo` round trips straight to the
//! demo upstream and through `mcp-proxy` on the memory store and on Redis, at 1 and
//! 32 concurrent clients (each with its own session), all in one run.
//!
//! Raw JSON-RPC over reqwest (one keep-alive connection per client) rather than an
//! MCP SDK client, so the client's own cost is small and the same on every row.
//! Every configuration is bounded by a call count and a time limit. The Redis rows
//! need `TEST_REDIS_URL` (`cargo xtask bench proxy` starts a server
//! and sets it); without it they are skipped.
//!
//! ```text
//! cargo xtask bench proxy [-- --calls 2000 --seconds 20 --clients 1,32]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{start_proxy, start_upstream, Process};
use serde_json::{json, Value};

const REDIS_URL_VAR: &str = "TEST_REDIS_URL";
/// Unmeasured calls per client before a row starts: connections open, caches warm.
const WARMUP_CALLS_PER_CLIENT: usize = 5;
/// Longest wait for one HTTP exchange.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The bench's flags (cargo adds `--bench`, which is ignored).
struct Options {
    calls: usize,
    seconds: u64,
    clients: Vec<usize>,
    /// `storage.redis.pool_size` of the Redis proxy (the default, 8, when absent).
    redis_pool_size: Option<usize>,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            calls: 2_000,
            seconds: 20,
            clients: vec![1, 32],
            redis_pool_size: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
            match arg.as_str() {
                "--calls" => options.calls = value().parse().expect("--calls N"),
                "--seconds" => options.seconds = value().parse().expect("--seconds S"),
                "--clients" => {
                    options.clients = value()
                        .split(',')
                        .map(|level| level.trim().parse().expect("--clients 1,32"))
                        .collect();
                }
                "--redis-pool-size" => {
                    options.redis_pool_size = Some(value().parse().expect("--redis-pool-size N"));
                }
                "--bench" => {}
                other => panic!("unknown argument {other}; see `cargo xtask bench --help`"),
            }
        }
        options
    }
}

/// Every bench client comes from one address: the per-client limits would
/// answer 429 to the load itself.
const UNLIMITED_CLIENTS: &str = "max_sessions_per_client = 0\ninitialize_rate = \"off\"";

/// Where the calls go.
struct Target {
    name: &'static str,
    url: String,
    /// The proxy's `/metrics`, for the time spent in the store; `None` for direct.
    metrics_url: Option<String>,
}

/// Latencies of one row.
struct Row {
    target: &'static str,
    clients: usize,
    calls: usize,
    elapsed: Duration,
    /// Sorted, in microseconds.
    latencies: Vec<u64>,
    /// Store operations the proxy made during the row: name -> (count, seconds).
    store: BTreeMap<String, (u64, f64)>,
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

async fn run(options: Options) {
    let upstream = start_upstream();
    let memory = start_proxy(
        &upstream.mcp_url(),
        "127.0.0.1:0",
        UNLIMITED_CLIENTS,
        "[storage]\nbackend = \"memory\"\n",
    );
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
    let mut targets = vec![
        Target {
            name: "direct",
            url: upstream.mcp_url(),
            metrics_url: None,
        },
        Target {
            name: "proxy, memory",
            url: memory.mcp_url(),
            metrics_url: Some(memory.admin_url("/metrics")),
        },
    ];
    match &redis {
        Some(proxy) => targets.push(Target {
            name: "proxy, Redis",
            url: proxy.mcp_url(),
            metrics_url: Some(proxy.admin_url("/metrics")),
        }),
        None => eprintln!("{REDIS_URL_VAR} is not set: the Redis rows are skipped"),
    }
    println!(
        "tools/call echo round trips; at most {} calls or {} s per row; host: {} cores",
        options.calls,
        options.seconds,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let mut rows = Vec::new();
    for &clients in &options.clients {
        for target in &targets {
            let row = measure(target, clients, &options).await;
            eprintln!(
                "  {} x{clients}: {} calls in {:.1}s",
                target.name,
                row.calls,
                row.elapsed.as_secs_f64()
            );
            rows.push(row);
        }
    }
    print_table(&rows);
}

/// Runs `clients` sessions against `target` until `options.calls` calls in total
/// completed or `options.seconds` passed.
async fn measure(target: &Target, clients: usize, options: &Options) -> Row {
    let mut sessions = Vec::with_capacity(clients);
    for _ in 0..clients {
        let session = BenchClient::initialize(&target.url).await;
        for call in 0..WARMUP_CALLS_PER_CLIENT {
            session.call_echo(call as u64 + 1).await;
        }
        sessions.push(session);
    }
    let store_before = store_operations(target).await;
    let remaining = Arc::new(AtomicUsize::new(options.calls));
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
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
}

impl BenchClient {
    async fn initialize(url: &str) -> BenchClient {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .build()
            .unwrap();
        let mut client = BenchClient {
            http,
            url: url.to_owned(),
            session: String::new(),
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
            "params":{"name":"echo","arguments":{"text":"bench"}}});
        let response = self.post(&call).await;
        let message = reply_message(response, &json!(id)).await;
        assert_eq!(
            message["result"]["content"][0]["text"], "bench",
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

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| clients | target        | calls | p50 ms | p99 ms |  ops/s | added p50 ms | added p99 ms | p50 vs direct |"
    );
    println!(
        "|--------:|---------------|------:|-------:|-------:|-------:|-------------:|-------------:|--------------:|"
    );
    for row in rows {
        let direct = rows
            .iter()
            .find(|other| other.clients == row.clients && other.target == "direct");
        let (added_p50, added_p99, ratio) = match direct {
            Some(direct) if row.target != "direct" => (
                format!("{:+.3}", row.percentile(0.5) - direct.percentile(0.5)),
                format!("{:+.3}", row.percentile(0.99) - direct.percentile(0.99)),
                format!("{:.2}x", row.percentile(0.5) / direct.percentile(0.5)),
            ),
            _ => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        println!(
            "| {:>7} | {:<13} | {:>5} | {:>6.3} | {:>6.3} | {:>6.0} | {:>12} | {:>12} | {:>13} |",
            row.clients,
            row.target,
            row.calls,
            row.percentile(0.5),
            row.percentile(0.99),
            row.ops_per_second(),
            added_p50,
            added_p99,
            ratio
        );
    }
    println!();
    println!("Store operations per call and their mean latency, as the proxy timed them:");
    for row in rows.iter().filter(|row| !row.store.is_empty()) {
        let operations: Vec<String> = row
            .store
            .iter()
            .map(|(operation, (count, seconds))| {
                format!(
                    "{operation} {:.2}/call {:.3} ms",
                    *count as f64 / row.calls as f64,
                    seconds * 1000.0 / *count as f64
                )
            })
            .collect();
        println!(
            "  {} x{}: {}",
            row.target,
            row.clients,
            operations.join(", ")
        );
    }
}
