//! The official Python MCP SDK (2.x, protocol 2026-07-28) as test peers: the
//! server `tests/python/server.py` as a child process and the client
//! `tests/python/client.py`, one command per run. The interpreter is the venv
//! `cargo xtask integration` installs, named by [`PYTHON_VAR`].

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};

use super::{Process, StopBy, EXCHANGE_TIMEOUT};

/// The variable naming the venv's interpreter (set by `cargo xtask integration`).
pub const PYTHON_VAR: &str = "TEST_MCP_PYTHON";

/// The venv's `python`.
pub fn python() -> PathBuf {
    std::env::var_os(PYTHON_VAR).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{PYTHON_VAR} is not set: run `cargo xtask integration`, which installs the Python MCP SDK")
    })
}

/// A script of `tests/python`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Starts the Python SDK's 2026-07-28 server on a free loopback port.
pub fn start_python_upstream() -> Process {
    let mut command = std::process::Command::new(python());
    command.arg(script("server.py"));
    Process::start(command, "python-upstream", false, StopBy::Kill)
}

/// Starts `modern_only_server.py`: the same server refusing the handshake era
/// (400), on loopback `port` (0: a free one; a restart passes the port of the
/// one before).
pub fn start_modern_only_upstream(port: u16) -> Process {
    let mut command = std::process::Command::new(python());
    command
        .arg(script("modern_only_server.py"))
        .args(["--port", &port.to_string()]);
    Process::start(command, "python-modern-only-upstream", false, StopBy::Kill)
}

/// What reached the Python upstream: POSTs by `Mcp-Method`, `Mcp-Param-*`
/// headers, `cancelled` tool calls.
pub async fn upstream_counts(upstream: &Process) -> Value {
    let response = reqwest::Client::new()
        .get(upstream.url("/counts"))
        .timeout(EXCHANGE_TIMEOUT)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

/// One count of [`upstream_counts`], 0 when absent.
pub async fn upstream_count(upstream: &Process, key: &str) -> u64 {
    upstream_counts(upstream).await[key].as_u64().unwrap_or(0)
}

/// Runs `client.py <url> [--token token] --name name <args>` to its end (bounded)
/// and returns the JSON line it printed.
pub async fn python_client(url: &str, token: Option<&str>, name: &str, args: &[&str]) -> Value {
    let command = client_command(url, token, name, args);
    run_to_json(
        command,
        EXCHANGE_TIMEOUT,
        &format!("python client {args:?}"),
    )
    .await
}

/// Runs a client script `command` to its end within `limit` and returns the
/// last line it printed, as JSON; `what` names the run in failures.
pub async fn run_to_json(
    mut command: tokio::process::Command,
    limit: Duration,
    what: &str,
) -> Value {
    command.stdin(Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in time"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {stdout}"))
}

/// A `client.py ... listen` run: a `subscriptions/listen` stream held open.
pub struct PythonListener {
    child: tokio::process::Child,
    lines: Lines<BufReader<tokio::process::ChildStdout>>,
}

impl PythonListener {
    /// Starts listening for tool-list changes and waits for the acknowledgment.
    pub async fn start(url: &str, token: Option<&str>, name: &str) -> Self {
        let mut command = client_command(url, token, name, &["listen"]);
        command.stdout(Stdio::piped()).kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut listener = PythonListener {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        let ack = listener.next_line(EXCHANGE_TIMEOUT).await;
        assert_eq!(ack["acknowledged"], true, "{ack}");
        listener
    }

    /// The next JSON line the listener prints, within `limit`.
    pub async fn next_line(&mut self, limit: Duration) -> Value {
        let line = tokio::time::timeout(limit, self.lines.next_line())
            .await
            .expect("the Python listener printed nothing in time")
            .unwrap()
            .expect("the Python listener ended without printing");
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for PythonListener {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn client_command(
    url: &str,
    token: Option<&str>,
    name: &str,
    args: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(python());
    command.arg(script("client.py")).arg(url);
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    command
        .args(["--name", name])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}
