//! The relay's unit tests: stream ends, priming events, what is neither sent
//! nor recorded.

use std::{convert::Infallible, sync::Arc};

use axum::http::header;
use futures::FutureExt;

use super::*;
use crate::sse::keep_alive_comment;

#[tokio::test]
async fn a_client_stream_opens_with_its_priming_event_and_keeps_alive_when_idle() {
    let target = StreamTarget {
        session: SessionId::new("s1").unwrap(),
        stream: StreamId::for_request(FrameId::new(7, 0)),
        cursor: FrameId::new(7, 0),
    };
    let (tx, body) = client_channel(Duration::from_millis(20), Some(target.priming_event()));
    let mut body = body.into_data_stream();
    let priming = body.next().await.unwrap().unwrap();
    assert_eq!(&priming[..], b"id: 7-0@r7-0\ndata:\n\n");
    // Nothing sent for the keep-alive interval: a comment line.
    let idle = body.next().await.unwrap().unwrap();
    assert_eq!(idle, keep_alive_comment());
    tx.send(Bytes::from_static(b"data: x\n\n")).await.unwrap();
    assert_eq!(&body.next().await.unwrap().unwrap()[..], b"data: x\n\n");
    drop(tx);
    assert!(
        body.next().await.is_none(),
        "the body ends with its senders"
    );
}

/// An upstream reply stream that sends the response and then stays open
/// (as a resumed GET of the TypeScript SDK does).
fn open_ended_upstream(events: &'static str) -> reqwest::Response {
    let chunks = futures::stream::once(async move { Ok::<_, Infallible>(Bytes::from(events)) })
        .chain(futures::stream::pending());
    let response = axum::http::Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(reqwest::Body::wrap_stream(chunks))
        .unwrap();
    reqwest::Response::from(response)
}

fn app() -> Arc<AppState> {
    let settings = crate::config::ProxyConfig::from_toml_str(
        "[proxy]\nupstream = \"http://127.0.0.1:9/mcp\"\n",
        &crate::config::Overrides::default(),
    )
    .unwrap()
    .proxy;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let store =
        Arc::new(session_store::MemoryStore::new(session_store::StoreSettings::default()).unwrap());
    Arc::new(AppState::new(store, settings, shutdown).unwrap())
}

/// Relays `events` from an upstream that then stays open, on a reply stream
/// awaiting the response to request 3; returns what the client got.
async fn relayed_until_request_3_is_answered(events: &'static str) -> Vec<SseEvent> {
    let app = app();
    let mut relay = Relay::new(None, WhenClientLeaves::KeepRecording);
    relay.reconnect = Some(Reconnect {
        headers: HeaderMap::new(),
        awaiting: vec![json!(3)],
    });
    let (tx, mut rx) = mpsc::channel(8);
    // Bounded: a relay that waited for the upstream to close would never end.
    tokio::time::timeout(
        Duration::from_secs(30),
        relay.run(&app, open_ended_upstream(events), &tx),
    )
    .await
    .expect("the relay ended after the last response");
    drop(tx);
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    let mut relayed = Vec::new();
    while let Some(chunk) = rx.recv().await {
        relayed.extend(parser.push(&chunk).unwrap());
    }
    relayed
}

#[tokio::test]
async fn a_reply_stream_ends_once_every_request_is_answered_even_if_the_upstream_stays_open() {
    let relayed = relayed_until_request_3_is_answered(
        "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n\
         data: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n",
    )
    .await;
    assert_eq!(relayed.len(), 2, "the notification and the response");
}

/// server-everything's event store replays a session's priming events with
/// data `{}`: no JSON-RPC message, so neither recorded nor sent (the SDKs
/// fail to parse it).
#[tokio::test]
async fn an_upstream_event_whose_data_is_no_json_rpc_message_is_neither_sent_nor_recorded() {
    let relayed = relayed_until_request_3_is_answered(
        "id: prime-1\ndata: {}\n\n\
         id: ev-2\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n",
    )
    .await;
    assert!(
        relayed.iter().all(|event| event.data != "{}"),
        "{relayed:?}"
    );
    assert_eq!(
        relayed.iter().filter(|event| !event.is_empty()).count(),
        1,
        "only the response: {relayed:?}"
    );
    // Sessionless (nothing recorded): the events keep the upstream's ids,
    // the answer too.
    assert_eq!(
        relayed.last().and_then(|event| event.id.as_deref()),
        Some("ev-2")
    );
}

/// A resumed upstream GET stream carrying responses (server-everything's
/// event store replays earlier POST streams' responses into it): neither
/// sent nor recorded; its requests and notifications are.
#[tokio::test]
async fn responses_on_a_get_stream_are_neither_sent_nor_recorded() {
    let app = app();
    let session = app
        .store
        .create(session_store::NewSession::new(
            SessionId::new("s1").unwrap(),
        ))
        .await
        .unwrap()
        .id;
    let target = StreamTarget {
        session: session.clone(),
        stream: StreamId::new_get(),
        cursor: FrameId::new(0, 0),
    };
    // (`KeepRecording`: `app()` drops its shutdown sender, which a relay
    // that stops with the client reads as a shutdown.)
    let relay = Relay::new(Some(target), WhenClientLeaves::KeepRecording);
    let events = "id: up-1\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n\n\
         id: up-2\ndata: [{\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":1,\"message\":\"x\"}}]\n\n\
         id: up-3\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n";
    let upstream = axum::http::Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(reqwest::Body::from(events))
        .unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    tokio::time::timeout(
        Duration::from_secs(30),
        relay.run(&app, reqwest::Response::from(upstream), &tx),
    )
    .await
    .expect("the relay ended with the upstream");
    drop(tx);
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    let mut relayed = Vec::new();
    while let Some(chunk) = rx.recv().await {
        relayed.extend(parser.push(&chunk).unwrap());
    }
    let sent: Vec<&str> = relayed
        .iter()
        .filter(|event| !event.is_empty())
        .map(|event| event.data.as_str())
        .collect();
    assert_eq!(sent.len(), 1, "only the notification: {relayed:?}");
    assert!(sent[0].contains("notifications/message"), "{sent:?}");
    let recorded = app.store.read_frames(&session, None, 10).await.unwrap();
    assert_eq!(recorded.len(), 1, "only the notification: {recorded:?}");
    assert_eq!(recorded[0].frame.event_id.as_deref(), Some("up-3"));
}

/// A recorded reply stream of request 3 in a new session `s1` of `app`.
async fn reply_relay(app: &AppState) -> Relay {
    let session = SessionId::new("s1").unwrap();
    app.store
        .create(session_store::NewSession::new(session.clone()))
        .await
        .unwrap();
    let request = FrameId::new(1, 0);
    let target = StreamTarget {
        session,
        stream: StreamId::for_request(request),
        cursor: request,
    };
    let mut relay = Relay::new(Some(target), WhenClientLeaves::KeepRecording);
    relay.reconnect = Some(Reconnect {
        headers: HeaderMap::new(),
        awaiting: vec![json!(3)],
    });
    relay
}

/// Paused clock: the hold can only end early by the batch arriving, never
/// by a slow machine.
#[tokio::test(start_paused = true)]
async fn a_reply_the_upstream_had_ready_is_in_the_body_after_the_priming_event_from_its_start() {
    let app = app();
    let relay = reply_relay(&app).await;
    let body = relay
        .spawn(
            app.clone(),
            open_ended_upstream("data: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n"),
            None,
        )
        .await;
    let mut body = body.into_data_stream();
    let priming = body.next().now_or_never().flatten().unwrap().unwrap();
    assert_eq!(
        &priming[..],
        b"id: 1-0@r1-0\ndata:\n\n",
        "the priming event first"
    );
    let reply = body
        .next()
        .now_or_never()
        .expect("the reply is in the body when it is handed out")
        .unwrap()
        .unwrap();
    let events = SseParser::new(MAX_EVENT_BYTES).push(&reply).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].data.contains("\"result\""), "{events:?}");
    // The stream is complete: the body ends.
    assert!(body.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_reply_stream_whose_upstream_is_silent_opens_with_its_priming_event_after_the_hold() {
    let app = app();
    let relay = reply_relay(&app).await;
    let body = relay
        .spawn(app.clone(), open_ended_upstream(""), None)
        .await;
    let mut body = body.into_data_stream();
    let priming = body.next().now_or_never().flatten().unwrap().unwrap();
    assert_eq!(&priming[..], b"id: 1-0@r1-0\ndata:\n\n");
    assert!(
        body.next().now_or_never().is_none(),
        "nothing else yet: the upstream has sent nothing"
    );
}

#[test]
fn a_stream_awaiting_no_known_request_is_not_ended_early() {
    let mut relay = Relay::new(None, WhenClientLeaves::KeepRecording);
    relay.reconnect = Some(Reconnect {
        headers: HeaderMap::new(),
        awaiting: Vec::new(),
    });
    assert!(!relay.stream_complete());
    relay.reconnect = None;
    assert!(!relay.stream_complete());
}
