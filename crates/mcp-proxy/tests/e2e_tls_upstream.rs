//! End to end against `https://` upstreams: the real `mcp-proxy` binary in front of
//! the rmcp demo upstream behind a TLS terminator whose CA and certificates the
//! test generates (rcgen), driven by an rmcp client that speaks plain HTTP to the
//! proxy and needs no change for a TLS upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/tls_upstream.rs"]
mod tls_upstream;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::{start_proxy, start_upstream, Process, RawClient, Reply};
use rmcp::{
    model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation},
    transport::StreamableHttpClientTransport,
    ServiceExt,
};
use serde_json::json;
use tls_upstream::{server_config, TestCa, TlsTerminator};

const MEMORY: &str = "[storage]\nbackend = \"memory\"\n";

/// The rmcp client's `add` call through the proxy: the sum, or the error text.
async fn add_through(proxy: &Process) -> Result<String, String> {
    let transport = StreamableHttpClientTransport::from_uri(proxy.mcp_url());
    let info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("e2e-tls-client", "1.0"),
    );
    let client = info
        .serve(transport)
        .await
        .map_err(|error| error.to_string())?;
    let server = client.peer_info().unwrap();
    assert_eq!(server.server_info.as_ref().unwrap().name, "demo-upstream");
    let sum = client
        .call_tool(
            CallToolRequestParams::new("add")
                .with_arguments(json!({"a": 40, "b": 2}).as_object().unwrap().clone()),
        )
        .await
        .map_err(|error| error.to_string())?;
    let text = serde_json::to_value(&sum.content).unwrap()[0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    client.cancel().await.unwrap();
    Ok(text)
}

/// A raw `initialize` through the proxy.
async fn raw_initialize(proxy: &Process) -> Reply {
    let message = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    RawClient::new().post(&proxy.mcp_url(), &message).await
}

/// Runs the proxy with `args`, which must be a configuration error (exit 2); its
/// stderr.
fn configuration_error(args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
        .env_clear()
        .envs(common::coverage_env())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    stderr
}

fn log_of(process: &Process) -> String {
    std::fs::read_to_string(&process.log).unwrap_or_default()
}

/// The proxy log mentions `needle` within a few seconds (logs are written as
/// requests fail, just after the reply).
fn wait_for_log(process: &Process, needle: &str) -> String {
    for _ in 0..50 {
        let log = log_of(process);
        if log.contains(needle) {
            return log;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    log_of(process)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_works_through_the_proxy_to_a_tls_upstream_with_a_private_ca() {
    let demo = start_upstream();
    let ca = TestCa::new("private");
    let tls =
        TlsTerminator::start(server_config(&ca.server_certificate(), None), demo.address).await;
    let proxy = start_proxy(
        &tls.mcp_url(),
        "127.0.0.1:0",
        &format!("upstream_ca_file = \"{}\"", ca.pem_file.display()),
        MEMORY,
    );
    assert_eq!(add_through(&proxy).await.unwrap(), "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_upstream_with_an_unknown_ca_is_a_502_and_the_log_names_host_and_reason() {
    let demo = start_upstream();
    let trusted = TestCa::new("trusted");
    let other = TestCa::new("other");
    let tls = TlsTerminator::start(
        server_config(&other.server_certificate(), None),
        demo.address,
    )
    .await;
    let proxy = start_proxy(
        &tls.mcp_url(),
        "127.0.0.1:0",
        &format!("upstream_ca_file = \"{}\"", trusted.pem_file.display()),
        MEMORY,
    );
    let reply = raw_initialize(&proxy).await;
    assert_eq!(reply.status, 502);
    let body = reply.json.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    println!("client sees: {message}");
    assert!(message.contains("unreachable"), "{message}");
    let port = tls.address.port().to_string();
    assert!(
        !message.contains(&port),
        "the client body names no address: {message}"
    );
    let log = wait_for_log(&proxy, "UnknownIssuer");
    let line = log
        .lines()
        .find(|line| line.contains("UnknownIssuer"))
        .unwrap_or_else(|| panic!("no certificate error in the log:\n{log}"));
    println!("proxy logs: {line}");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(line.contains("invalid peer certificate"), "{line}");
    // The rmcp client gets the failure too, not a hang.
    assert!(add_through(&proxy).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_upstream_accepts_the_proxys_client_certificate_and_refuses_a_proxy_without() {
    let demo = start_upstream();
    let ca = TestCa::new("mtls");
    let client_certificate = ca.client_certificate();
    let tls = TlsTerminator::start(
        server_config(&ca.server_certificate(), Some(&ca)),
        demo.address,
    )
    .await;
    let with_certificate = start_proxy(
        &tls.mcp_url(),
        "127.0.0.1:0",
        &format!(
            "upstream_ca_file = \"{}\"\nupstream_client_cert = \"{}\"\nupstream_client_key = \"{}\"",
            ca.pem_file.display(),
            client_certificate.cert_file.display(),
            client_certificate.key_file.display()
        ),
        MEMORY,
    );
    assert_eq!(add_through(&with_certificate).await.unwrap(), "42");

    let without_certificate = start_proxy(
        &tls.mcp_url(),
        "127.0.0.1:0",
        &format!("upstream_ca_file = \"{}\"", ca.pem_file.display()),
        MEMORY,
    );
    let reply = raw_initialize(&without_certificate).await;
    assert_eq!(reply.status, 502, "{reply:?}");
    let port = tls.address.port().to_string();
    let log = wait_for_log(&without_certificate, "upstream MCP server unreachable");
    let line = log
        .lines()
        .find(|line| line.contains("upstream MCP server unreachable"))
        .unwrap_or_else(|| panic!("no upstream error in the log:\n{log}"));
    println!("proxy without a client certificate logs: {line}");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(
        line.contains("CertificateRequired"),
        "rustls' reason: {line}"
    );
}

#[test]
fn upstream_schemes_other_than_http_and_https_are_config_errors_naming_the_key() {
    let stderr = configuration_error(&["--upstream".as_ref(), "ftp://x".as_ref()]);
    println!("{stderr}");
    assert!(stderr.contains("proxy.upstream"), "{stderr}");

    let config = common::scratch_path("bad-ca.toml");
    std::fs::write(
        &config,
        "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"https://127.0.0.1:1/mcp\"\nupstream_ca_file = \"/nonexistent/ca.pem\"\n",
    )
    .unwrap();
    let stderr = configuration_error(&["--config".as_ref(), config.as_os_str()]);
    println!("{stderr}");
    assert!(
        stderr.contains("proxy.upstream_ca_file") && stderr.contains("/nonexistent/ca.pem"),
        "{stderr}"
    );
}
