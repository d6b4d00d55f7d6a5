//! The session browser's JSON on the admin listener, over HTTP: the token is
//! required, the filter, the live tail's ticket, and ending and revoking
//! sessions (a revoke ends every session of the same principal and no other).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{start_proxy, start_upstream, Process, RawClient, EXCHANGE_TIMEOUT};
use serde_json::{json, Value};

const MEMORY: &str = "[storage]\nbackend = \"memory\"\n";
const TOKEN: &str = "session-browser-api-test-token";

async fn admin(
    proxy: &Process,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, proxy.admin_url(path))
        .timeout(EXCHANGE_TIMEOUT);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, body)
}

async fn client(proxy: &Process, name: &str, user: &str) -> RawClient {
    let mut client = RawClient::new();
    client.authorization = Some(format!("Bearer {user}-opaque-token"));
    client.initialize_as(&proxy.mcp_url(), name).await;
    client
}

fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// An upstream and a proxy in front of it with the admin token set (the
/// upstream is returned to keep it running).
fn proxy_with_admin_token() -> (Process, Process) {
    let upstream = start_upstream();
    let proxy = start_proxy(
        &upstream.mcp_url(),
        "127.0.0.1:0",
        &format!("admin_token = \"{TOKEN}\"\n"),
        MEMORY,
    );
    (upstream, proxy)
}

#[tokio::test]
async fn the_browser_api_filters_tails_ends_and_revokes_with_the_admin_token() {
    let (_upstream, proxy) = proxy_with_admin_token();
    let alice_1 = client(&proxy, "alice-laptop", "alice").await;
    let alice_2 = client(&proxy, "alice-phone", "alice").await;
    let bob = client(&proxy, "bob-laptop", "bob").await;
    let session = |c: &RawClient| c.session.clone().unwrap();

    let get = reqwest::Method::GET;
    let (status, _) = admin(&proxy, get.clone(), "/ui/api/sessions", None).await;
    assert_eq!(status, 401, "the API needs the admin token");
    let (status, all) = admin(&proxy, get.clone(), "/ui/api/sessions", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(all["sessions"].as_array().unwrap().len(), 3);
    let (_, alices) = admin(&proxy, get.clone(), "/ui/api/sessions?q=ALICE", Some(TOKEN)).await;
    let mut expected = vec![session(&alice_1), session(&alice_2)];
    expected.sort();
    assert_eq!(ids(&alices), expected);
    let (_, page) = admin(&proxy, get.clone(), "/ui/api/sessions?limit=2", Some(TOKEN)).await;
    assert_eq!(page["sessions"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_string(), "{page}");
    let first = &alices["sessions"][0];
    assert_eq!(first["protocol_version"], "2025-06-18");
    assert_eq!(first["upstream"], "demo-upstream");
    assert_eq!(first["bound"], true);

    // The tail: a ticket opens it; none or a forged one does not.
    let tail = format!("/ui/api/sessions/{}/tail", session(&bob));
    let (status, _) = admin(&proxy, get.clone(), &tail, None).await;
    assert_eq!(status, 401);
    let (status, _) = admin(&proxy, get.clone(), &format!("{tail}?ticket=1.AAAA"), None).await;
    assert_eq!(status, 401);
    let (status, ticket) = admin(
        &proxy,
        reqwest::Method::POST,
        &format!("/ui/api/sessions/{}/ticket", session(&bob)),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let response = reqwest::Client::new()
        .get(proxy.admin_url(&format!("{tail}?ticket={ticket}")))
        .timeout(EXCHANGE_TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    drop(response);
    let other = format!(
        "/ui/api/sessions/{}/tail?ticket={ticket}",
        session(&alice_1)
    );
    let (status, _) = admin(&proxy, get.clone(), &other, None).await;
    assert_eq!(status, 401, "a ticket opens only its own session");

    // Revoke one of alice's sessions: both of hers end, bob's stays.
    let (status, revoked) = admin(
        &proxy,
        reqwest::Method::POST,
        &format!("/ui/api/sessions/{}/revoke", session(&alice_1)),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    let mut ended: Vec<String> = revoked["ended"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    ended.sort();
    assert_eq!(ended, expected);
    let after = alice_2
        .call_tool(&proxy.mcp_url(), 1, "add", json!({"a": 1, "b": 1}))
        .await;
    assert_eq!(after.status, 404, "a revoked session is gone");
    let (_, left) = admin(&proxy, get.clone(), "/ui/api/sessions", Some(TOKEN)).await;
    assert_eq!(ids(&left), vec![session(&bob)]);

    // End bob's: gone for him too.
    let (status, _) = admin(
        &proxy,
        reqwest::Method::DELETE,
        &format!("/ui/api/sessions/{}", session(&bob)),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    let after = bob
        .call_tool(&proxy.mcp_url(), 1, "add", json!({"a": 1, "b": 1}))
        .await;
    assert_eq!(after.status, 404);
    let (status, _) = admin(
        &proxy,
        reqwest::Method::DELETE,
        &format!("/ui/api/sessions/{}", session(&bob)),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 404, "ending it again: not found");
}

/// The live tail of a session ended from the API ends with an `ended` event
/// naming the last frame it sent and that frames recorded since its last poll
/// may be missing (the store removed them with the session).
#[tokio::test]
async fn the_live_tail_of_an_ended_session_names_its_last_frame_and_that_later_ones_may_be_missing()
{
    use futures::StreamExt;
    use mcp_proxy::sse::SseParser;

    let (_upstream, proxy) = proxy_with_admin_token();
    let carol = client(&proxy, "carol-laptop", "carol").await;
    let id = carol.session.clone().unwrap();
    let (status, ticket) = admin(
        &proxy,
        reqwest::Method::POST,
        &format!("/ui/api/sessions/{id}/ticket"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    let ticket = ticket["ticket"].as_str().unwrap();
    let response = reqwest::Client::new()
        .get(proxy.admin_url(&format!("/ui/api/sessions/{id}/tail?ticket={ticket}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut parser = SseParser::new(1024 * 1024);
    let called = carol
        .call_tool(&proxy.mcp_url(), 1, "add", json!({"a": 1, "b": 2}))
        .await;
    assert_eq!(called.status, 200, "{called:?}");

    let mut last_frame = None;
    let mut ended = None;
    let mut deleted = false;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(EXCHANGE_TIMEOUT, body.next()).await {
        for event in parser.push(&chunk).unwrap() {
            match event.event.as_deref() {
                Some("frame") => last_frame = event.id.clone(),
                Some("ended") => ended = Some(event.data.clone()),
                _ => {}
            }
        }
        if ended.is_some() {
            break;
        }
        if !deleted && last_frame.is_some() {
            // The call's frames reached the tail: end the session.
            deleted = true;
            let (status, _) = admin(
                &proxy,
                reqwest::Method::DELETE,
                &format!("/ui/api/sessions/{id}"),
                Some(TOKEN),
            )
            .await;
            assert_eq!(status, 200);
        }
    }
    let ended: Value = serde_json::from_str(&ended.expect("an `ended` event")).unwrap();
    println!("last frame sent {last_frame:?}; ended {ended}");
    assert_eq!(ended["frames_may_be_missing"], true, "{ended}");
    assert_eq!(
        ended["after"].as_str(),
        last_frame.as_deref(),
        "the last frame the tail sent: {ended}"
    );
}
