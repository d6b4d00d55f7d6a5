//! The GET stream of a handshake-era client served by a 2026-07-28-only
//! upstream, mapped onto one self-contained `subscriptions/listen` request
//! asking for every list-changed notification: the upstream's notifications
//! are relayed on the client's GET stream without the subscription's `_meta`
//! stamp (the acknowledgment stays with the proxy) until either side leaves.

use std::sync::Arc;

use axum::{
    http::{HeaderMap, StatusCode},
    response::Response,
};
use futures::StreamExt;
use serde_json::{json, Value};
use session_store::Session;

use crate::{
    bridge::{call::send_event, handshake_client, record, wire},
    errors::ProxyError,
    event_id::StreamId,
    modern::{record::Recording, reply::Exchange},
    relay::{client_channel, sse_response},
    state::AppState,
};

/// The `_meta` key stamping a notification with its subscription.
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// Serves the GET stream of bridged `session` (`base`: the client's headers as
/// forwarded). An upstream refusing the listen is answered 405 (no stream), as
/// for an upstream that offers none.
pub async fn listen(
    app: &Arc<AppState>,
    session: &Session,
    base: &HeaderMap,
) -> Result<Response, ProxyError> {
    let listen = json!({
        "jsonrpc": "2.0",
        "id": app.bridge.ids.mint(),
        "method": "subscriptions/listen",
        "params": {"notifications": {
            "toolsListChanged": true,
            "promptsListChanged": true,
            "resourcesListChanged": true,
        }},
    });
    let client_info = session.client_info.clone().unwrap_or_else(|| json!({}));
    let request = handshake_client::to_modern(&listen, &client_info);
    let response = wire::post(
        app,
        handshake_client::modern_headers(base, &request),
        &request,
    )
    .await?;
    if !response.status().is_success() {
        tracing::debug!(session = %session.id, status = %response.status(), "bridge: the upstream refused subscriptions/listen");
        return Err(ProxyError::NoStandaloneStream);
    }
    let exchange = Exchange {
        recording: Some(Recording {
            session: session.id.clone(),
            stream: StreamId::new_get(),
        }),
        ..Exchange::default()
    };
    record::upstream_form(app, &exchange, &request, true).await;
    let (tx, body) = client_channel(app.settings.sse_keepalive, None);
    let app = app.clone();
    tokio::spawn(async move {
        let mut messages = Box::pin(wire::messages(&app, response));
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                next = messages.next() => next,
            };
            let Some(Ok(mut message)) = next else {
                return;
            };
            record::upstream_form(&app, &exchange, &message, false).await;
            let method = message.get("method").and_then(Value::as_str);
            if method.is_none() || method == Some("notifications/subscriptions/acknowledged") {
                continue;
            }
            if let Some(meta) = message
                .pointer_mut("/params/_meta")
                .and_then(Value::as_object_mut)
            {
                meta.remove(SUBSCRIPTION_ID);
            }
            send_event(&app, &exchange, &tx, &message).await;
        }
    });
    Ok(sse_response(
        StatusCode::OK,
        HeaderMap::new(),
        Some(&session.id),
        body,
    ))
}
