//! End to end: OAuth discovery entirely through the real `mcp-proxy` binary (MCP
//! Authorization 2025-06-18 / 2025-11-25): unauthorized request -> 401 with
//! `WWW-Authenticate` -> protected-resource metadata (RFC 9728) through the proxy
//! -> authorization-server metadata -> token -> an rmcp client's authorized
//! session, in both deployments: an upstream that names the proxy's URL as its
//! resource (nothing rewritten), and an upstream that names its own URL with
//! `rewrite_resource_metadata = true`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/scripted_upstream.rs"]
mod scripted_upstream;

use common::{start_proxy, Process, EXCHANGE_TIMEOUT};
use rmcp::{
    model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation},
    transport::{
        streamable_http_client::StreamableHttpClientTransportConfig, StreamableHttpClientTransport,
    },
    ServiceExt,
};
use scripted_upstream::{OAuthMetadata, ScriptedUpstream, TOKEN};
use serde_json::{json, Value};

const MEMORY: &str = "[storage]\nbackend = \"memory\"\n";

/// The proxy's origin, `http://127.0.0.1:port`.
fn origin(proxy: &Process) -> String {
    format!("http://{}", proxy.address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_discovery_through_the_proxy_with_an_upstream_that_names_the_proxy() {
    let upstream = ScriptedUpstream::start().await;
    let proxy = start_proxy(&upstream.mcp_url(), "127.0.0.1:0", "", MEMORY);
    // The normal deployment: the upstream is configured with the proxy's public
    // URL as its resource, and is its own authorization server behind the proxy.
    upstream.demand_bearer(OAuthMetadata {
        resource: proxy.mcp_url(),
        resource_metadata: format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            origin(&proxy)
        ),
        issuer: origin(&proxy),
    });
    discover_and_call(&proxy, &upstream).await;
    assert!(
        !upstream
            .seen_at("/.well-known/oauth-authorization-server")
            .is_empty(),
        "authorization-server metadata was relayed by the proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_discovery_through_the_proxy_with_resource_metadata_rewritten() {
    let upstream = ScriptedUpstream::start().await;
    upstream.demand_bearer(upstream.own_oauth_metadata());
    let proxy = start_proxy(
        &upstream.mcp_url(),
        "127.0.0.1:0",
        "rewrite_resource_metadata = true",
        MEMORY,
    );
    discover_and_call(&proxy, &upstream).await;
}

async fn json_of(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{response:?}");
    response.json().await.unwrap()
}

/// The whole discovery as a client does it, starting from nothing but the
/// proxy's MCP URL; then an rmcp client with the token. Asserts that every step
/// went through the proxy and that the upstream received the client's token
/// unchanged.
async fn discover_and_call(proxy: &Process, upstream: &ScriptedUpstream) {
    let http = reqwest::Client::builder()
        .timeout(EXCHANGE_TIMEOUT)
        .build()
        .unwrap();
    let unauthorized = http
        .post(proxy.mcp_url())
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(
            json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                "protocolVersion":"2025-06-18","capabilities":{},
                "clientInfo":{"name":"oauth-test","version":"1"}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let challenge = unauthorized.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    println!("401 challenge: {challenge}");
    let metadata_url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(
        metadata_url,
        format!("{}/.well-known/oauth-protected-resource/mcp", origin(proxy)),
        "the challenge sends the client to the proxy"
    );

    let metadata = http.get(&metadata_url).send().await.unwrap();
    assert_eq!(metadata.status(), 200);
    assert_eq!(metadata.headers()["cache-control"], "max-age=60");
    assert_eq!(metadata.headers()["access-control-allow-origin"], "*");
    let metadata: Value = metadata.json().await.unwrap();
    println!("protected-resource metadata: {metadata}");
    assert_eq!(
        metadata["resource"],
        proxy.mcp_url(),
        "RFC 9728 §3.3: the resource is the URL the client called"
    );
    let issuer = metadata["authorization_servers"][0].as_str().unwrap();
    let server =
        json_of(http.get(format!("{issuer}/.well-known/oauth-authorization-server"))).await;
    assert_eq!(server["issuer"], issuer);
    let token = json_of(
        http.post(server["token_endpoint"].as_str().unwrap())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&resource={}",
                proxy.mcp_url()
            )),
    )
    .await;
    let access_token = token["access_token"].as_str().unwrap().to_owned();
    assert_eq!(access_token, TOKEN);

    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(proxy.mcp_url()).auth_header(access_token),
    );
    let client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("e2e-oauth-client", "1.0"),
    )
    .serve(transport)
    .await
    .unwrap();
    assert_eq!(
        client
            .peer_info()
            .unwrap()
            .server_info
            .as_ref()
            .unwrap()
            .name,
        "scripted-upstream"
    );
    let whoami = client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&whoami.content).unwrap()[0]["text"],
        format!("Bearer {TOKEN}"),
        "the upstream received the client's token unchanged"
    );
    client.cancel().await.unwrap();

    let authorized: Vec<_> = upstream
        .seen_at("/mcp")
        .into_iter()
        .filter(|seen| seen.headers.contains_key("authorization"))
        .collect();
    assert!(authorized.len() >= 3, "initialize, initialized, tools/call");
    for seen in authorized {
        assert_eq!(
            seen.headers["authorization"],
            format!("Bearer {TOKEN}").as_str()
        );
    }
    assert_eq!(
        upstream
            .seen_at("/.well-known/oauth-protected-resource/mcp")
            .len(),
        1,
        "the metadata came from the upstream, through the proxy"
    );
}
