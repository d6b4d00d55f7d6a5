//! `subscriptions/listen` of a 2026-07-28 client mapped onto the pooled upstream
//! session's GET stream (handshake transport, "Listening for Messages from the
//! Server"): the subscription is acknowledged with the part of the filter the
//! upstream's capabilities honor, resource subscriptions become
//! `resources/subscribe` requests in the session, and the notifications the
//! filter asks for are relayed, stamped with the subscription's id, until the
//! client closes the stream.

use std::sync::Arc;

use axum::{
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::Response,
};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::{
    bridge::{
        call::{json_reply, send_event},
        pool::{self, UpstreamSession},
        record, translate, wire,
    },
    errors::ProxyError,
    modern::reply::Exchange,
    relay::{client_channel, sse_response},
    state::AppState,
};

/// The `_meta` key stamping a notification with its subscription.
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// The filter keys of list-changed notifications, with the capability that
/// honors each and the notification it admits.
const LIST_CHANGED: [(&str, &str, &str); 3] = [
    (
        "toolsListChanged",
        "tools",
        "notifications/tools/list_changed",
    ),
    (
        "promptsListChanged",
        "prompts",
        "notifications/prompts/list_changed",
    ),
    (
        "resourcesListChanged",
        "resources",
        "notifications/resources/list_changed",
    ),
];

/// Serves `subscriptions/listen` (see the module).
pub async fn listen(
    app: &Arc<AppState>,
    exchange: Exchange,
    base: &HeaderMap,
    message: &Value,
) -> Result<Response, ProxyError> {
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let (client, key, mut session) = pool::for_request(app, &exchange, base, message).await?;
    let requested = message
        .pointer("/params/notifications")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let honored = honored(&requested, &session.initialize);
    let mut upstream = open_stream(app, base, &session).await?;
    if pool::is_lost(app, base, &session, upstream.status()).await {
        pool::forget(app, &key, &session).await;
        session = pool::session(app, &key, &client, base, &exchange).await?;
        upstream = open_stream(app, base, &session).await?;
    }
    if !upstream.status().is_success() {
        let refused = translate::error(
            &id,
            -32603,
            &format!(
                "the upstream offers no notification stream (GET answered HTTP {})",
                upstream.status()
            ),
            None,
        );
        return Ok(json_reply(app, &exchange, &refused).await);
    }
    for uri in honored
        .get("resourceSubscriptions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        subscribe(app, &exchange, base, &session, uri).await?;
    }
    let (tx, body) = client_channel(app.settings.sse_keepalive, None);
    let acknowledged = json!({
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {"notifications": honored, "_meta": {SUBSCRIPTION_ID: id}},
    });
    send_event(app, &exchange, &tx, &acknowledged).await;
    tokio::spawn(relay(app.clone(), exchange, upstream, tx, honored, id));
    Ok(sse_response(StatusCode::OK, HeaderMap::new(), None, body))
}

/// The part of `requested` the upstream's `initialize` capabilities honor.
fn honored(requested: &Value, initialize: &Value) -> Value {
    let capabilities = initialize
        .get("capabilities")
        .cloned()
        .unwrap_or(Value::Null);
    let mut honored = Map::new();
    for (filter, capability, _) in LIST_CHANGED {
        let asked = requested.get(filter).and_then(Value::as_bool) == Some(true);
        let offered =
            capabilities.pointer(&format!("/{capability}/listChanged")) == Some(&Value::Bool(true));
        if asked && offered {
            honored.insert(filter.to_owned(), Value::Bool(true));
        }
    }
    let subscribable = capabilities.pointer("/resources/subscribe") == Some(&Value::Bool(true));
    if let (true, Some(uris)) = (
        subscribable,
        requested
            .get("resourceSubscriptions")
            .filter(|uris| uris.is_array()),
    ) {
        honored.insert("resourceSubscriptions".to_owned(), uris.clone());
    }
    Value::Object(honored)
}

/// Whether `notification` is one `honored` admits.
fn admits(honored: &Value, notification: &Value) -> bool {
    let Some(method) = notification.get("method").and_then(Value::as_str) else {
        return false;
    };
    if method == "notifications/resources/updated" {
        let uri = notification.pointer("/params/uri");
        return honored
            .get("resourceSubscriptions")
            .and_then(Value::as_array)
            .is_some_and(|uris| uri.is_some_and(|uri| uris.contains(uri)));
    }
    LIST_CHANGED.iter().any(|(filter, _, admitted)| {
        *admitted == method && honored.get(*filter) == Some(&Value::Bool(true))
    })
}

async fn open_stream(
    app: &AppState,
    base: &HeaderMap,
    session: &UpstreamSession,
) -> Result<reqwest::Response, ProxyError> {
    let mut headers = wire::handshake_headers(base, session.id.as_deref(), &session.version);
    headers.remove(header::CONTENT_TYPE);
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    app.upstream.send(Method::GET, headers, None).await
}

async fn subscribe(
    app: &AppState,
    exchange: &Exchange,
    base: &HeaderMap,
    session: &UpstreamSession,
    uri: &Value,
) -> Result<(), ProxyError> {
    let id = app.bridge.ids.mint();
    let request = json!({"jsonrpc": "2.0", "id": id, "method": "resources/subscribe", "params": {"uri": uri}});
    record::upstream_form(app, exchange, &request, true).await;
    let headers = wire::handshake_headers(base, session.id.as_deref(), &session.version);
    let response = wire::post(app, headers, &request).await?;
    let answer = wire::response_to(app, response, &id).await?;
    record::upstream_form(app, exchange, &answer, false).await;
    Ok(())
}

/// Relays the admitted notifications until the client or the upstream closes
/// its side, or the proxy shuts down.
async fn relay(
    app: Arc<AppState>,
    exchange: Exchange,
    upstream: reqwest::Response,
    tx: mpsc::Sender<Bytes>,
    honored: Value,
    id: Value,
) {
    let mut messages = Box::pin(wire::messages(&app, upstream));
    let mut shutdown = app.shutdown.clone();
    loop {
        let next = tokio::select! {
            biased;
            () = tx.closed() => return,
            _ = shutdown.wait_for(|stopping| *stopping) => return,
            next = messages.next() => next,
        };
        let Some(Ok(mut message)) = next else {
            return;
        };
        record::upstream_form(&app, &exchange, &message, false).await;
        if !admits(&honored, &message) {
            continue;
        }
        if let Some(params) = message
            .as_object_mut()
            .map(|object| object.entry("params").or_insert_with(|| json!({})))
        {
            params["_meta"][SUBSCRIPTION_ID] = id.clone();
        }
        send_event(&app, &exchange, &tx, &message).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_upstream_offers_is_honored_and_relayed() {
        let initialize = json!({"capabilities": {"tools": {"listChanged": true}, "resources": {"subscribe": true}}});
        let requested = json!({"toolsListChanged": true, "promptsListChanged": true, "resourceSubscriptions": ["a://x"]});
        let honored = honored(&requested, &initialize);
        assert_eq!(
            honored,
            json!({"toolsListChanged": true, "resourceSubscriptions": ["a://x"]})
        );
        let tools = json!({"method": "notifications/tools/list_changed"});
        let prompts = json!({"method": "notifications/prompts/list_changed"});
        let updated =
            json!({"method": "notifications/resources/updated", "params": {"uri": "a://x"}});
        let other =
            json!({"method": "notifications/resources/updated", "params": {"uri": "a://y"}});
        assert!(admits(&honored, &tools));
        assert!(!admits(&honored, &prompts));
        assert!(admits(&honored, &updated));
        assert!(!admits(&honored, &other));
        assert!(!admits(
            &honored,
            &json!({"method": "notifications/message"})
        ));
    }
}
