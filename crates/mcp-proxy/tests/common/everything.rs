//! `@modelcontextprotocol/server-everything` (handshake-only, TypeScript SDK
//! 1.x) as a test upstream, started from the node_modules `cargo xtask
//! integration` installs (`TEST_MCP_NPM_DIR`), on a loopback port that survives
//! a restart; and a counting forwarder to put in front of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    response::Response,
    routing::any,
    Router,
};

/// The variable naming the npm install (set by `cargo xtask integration`).
pub const NPM_VAR: &str = "TEST_MCP_NPM_DIR";

/// Longest wait for the server to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server-everything, killed when dropped.
pub struct Everything {
    child: Child,
    /// Where it listens.
    pub address: SocketAddr,
}

impl Everything {
    /// Starts it on a free loopback port.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Starts it on `address` (a restart reuses the address of the one before).
    pub fn start_on(address: SocketAddr) -> Self {
        let npm = std::env::var_os(NPM_VAR).map(PathBuf::from).unwrap_or_else(|| {
            panic!("{NPM_VAR} is not set: run `cargo xtask integration`, which installs server-everything")
        });
        let child = Command::new("node")
            .arg("-r")
            .arg(npm.join("loopback.cjs"))
            .arg(npm.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js"))
            .arg("streamableHttp")
            .env("PORT", address.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start node (is it installed?)");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect(address).is_err() {
            assert!(
                Instant::now() < deadline,
                "server-everything did not listen on {address} in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Everything { child, address }
    }

    /// Its MCP endpoint.
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.address)
    }

    /// Kills it (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Everything {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A forwarder on a free loopback port that passes every request to `target`
/// and counts the `initialize` requests it sees.
pub struct CountingForwarder {
    /// Where it listens.
    pub address: SocketAddr,
    initializes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Forward {
    target: String,
    client: reqwest::Client,
    initializes: Arc<AtomicU64>,
}

impl CountingForwarder {
    /// Starts forwarding to `target` (an MCP endpoint URL).
    pub async fn start(target: &str) -> Self {
        let initializes = Arc::new(AtomicU64::new(0));
        let state = Forward {
            target: target.to_owned(),
            client: reqwest::Client::new(),
            initializes: initializes.clone(),
        };
        let app = Router::new().route("/mcp", any(forward)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CountingForwarder {
            address,
            initializes,
            task,
        }
    }

    /// Its MCP endpoint.
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.address)
    }

    /// How many `initialize` requests passed.
    pub fn initializes(&self) -> u64 {
        self.initializes.load(Ordering::SeqCst)
    }
}

impl Drop for CountingForwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    State(state): State<Forward>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const INITIALIZE: &[u8] = b"\"method\":\"initialize\"";
    if body
        .windows(INITIALIZE.len())
        .any(|window| window == INITIALIZE)
    {
        state.initializes.fetch_add(1, Ordering::SeqCst);
    }
    let mut request = state.client.request(method, &state.target).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(upstream) => {
            let mut response = Response::builder().status(upstream.status());
            for (name, value) in upstream.headers() {
                if name != "content-length" && name != "transfer-encoding" {
                    response = response.header(name, value);
                }
            }
            response
                .body(Body::from_stream(upstream.bytes_stream()))
                .unwrap()
        }
        Err(_) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .unwrap(),
    }
}
