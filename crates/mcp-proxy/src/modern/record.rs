//! Recording 2026-07-28 exchanges: the revision has no session, so the proxy
//! groups a client's exchanges in a proxy-side session of its own, whose id every
//! instance derives alike (a keyed hash of who the client is, its `clientInfo`
//! name and the upstream), created on the first request and slid by every one.
//!
//! Who the client is: its [`principal`](crate::binding::principal) (a JWT's
//! subject, else its token, both keyed hashes), or without any credential the
//! client address as the proxy sees it. Each exchange is its own stream
//! (`r<frame id of the request>`); the reply's messages are frames on it.

use axum::http::HeaderMap;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::Value;
use session_store::{
    Clock, Direction, Error as StoreError, Frame, NewSession, SessionId, SessionStatus,
    SystemClock, Transport,
};
use sha2::Sha256;

use crate::{
    binding::Principal, config::ProxySettings, errors::ProxyError, event_id::StreamId,
    jsonrpc::SESSIONLESS_REVISION, limits::ClientAddress, state::AppState,
    upstream::PROTOCOL_VERSION_HEADER,
};

/// The session tag marking a proxy-side session of sessionless exchanges; its
/// value is how the client was told apart (`principal` or `address`).
pub const PER_CLIENT_TAG: &str = "per_client";
/// `_meta` key of the client's software (schema `RequestMetaObject`).
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key of the client's capabilities for one request.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// Hex digits of the session id (128 bits of the HMAC).
const SESSION_ID_HEX_DIGITS: usize = 32;

/// Where one exchange is recorded.
#[derive(Clone, Debug)]
pub struct Recording {
    /// The client's proxy-side session.
    pub session: SessionId,
    /// This exchange's stream.
    pub stream: StreamId,
}

/// The proxy-side session of a client: HMAC-SHA256 under the deployment's
/// binding key of (principal or address, `clientInfo` name, upstream URL), as 32
/// hex digits, so the same client lands in the same session on every instance.
pub fn session_id(
    settings: &ProxySettings,
    principal: Option<&Principal>,
    client: ClientAddress,
    client_name: &str,
) -> Result<SessionId, StoreError> {
    let who = match (principal, client.0) {
        (Some(principal), _) => format!("principal:{}", principal.as_str()),
        (None, Some(address)) => format!("address:{address}"),
        (None, None) => "address:unknown".to_owned(),
    };
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; the
    // fallback keeps this function total without a panic.
    let mut mac = Hmac::<Sha256>::new_from_slice(settings.binding_key.as_bytes())
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
    mac.update(b"mcp-proxy per-client session v1\0");
    for part in [
        who.as_bytes(),
        client_name.as_bytes(),
        settings.upstream.as_str().as_bytes(),
    ] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    SessionId::new(&hex[..SESSION_ID_HEX_DIGITS])
}

/// The `_meta` of a request's params, when it has one.
pub fn request_meta(message: &Value) -> Option<&Value> {
    message.get("params").and_then(|params| params.get("_meta"))
}

/// The `clientInfo` name a request reports (empty when it reports none).
pub fn client_name(message: &Value) -> &str {
    request_meta(message)
        .and_then(|meta| meta.get(META_CLIENT_INFO))
        .and_then(|info| info.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Records the client's request in its session (creating the session on its first
/// request; an `AlreadyExists` means another instance just made it). `Ok(None)`:
/// not recorded (counted and logged; the request is forwarded all the same).
///
/// # Errors
///
/// A new session is admitted like an `initialize` (`max_sessions_per_client`,
/// `initialize_rate`), so a client cannot fill the store by varying its
/// `clientInfo` name: [`ProxyError::TooManyRequests`] when refused.
pub async fn record_request(
    app: &AppState,
    session: &SessionId,
    who: (Option<&Principal>, ClientAddress),
    message: &Value,
    body: &Bytes,
    headers: &HeaderMap,
) -> Result<Option<Recording>, ProxyError> {
    let (principal, client) = who;
    let mut frame = Frame::new(Direction::ClientToServer, SystemClock.now(), body.to_vec());
    if let Some(version) = headers
        .get(PROTOCOL_VERSION_HEADER)
        .and_then(|value| value.to_str().ok())
    {
        frame = frame.with_header(PROTOCOL_VERSION_HEADER.as_str(), version);
    }
    // Appending slides the session's expiry, so a live session costs one call.
    let appended = match app.store.append_frame(session, frame.clone()).await {
        Err(StoreError::NotFound(_)) => {
            let slot = match app
                .limits
                .admit_initialize(app.store.as_ref(), principal, client)
                .await
            {
                Ok(slot) => slot,
                Err(refused @ ProxyError::TooManyRequests { .. }) => return Err(refused),
                Err(error) => {
                    app.metrics.frame_not_recorded();
                    tracing::warn!(session = %session, %error, "2026-07-28 request forwarded without being recorded");
                    return Ok(None);
                }
            };
            match create_session(app, session, principal, message).await {
                Ok(created) => {
                    if created {
                        slot.fill(session.clone());
                    }
                    app.store.append_frame(session, frame).await
                }
                Err(error) => Err(error),
            }
        }
        other => other,
    };
    match appended {
        Ok(frame_id) => Ok(Some(Recording {
            session: session.clone(),
            stream: StreamId::for_request(frame_id),
        })),
        Err(error) => {
            app.metrics.frame_not_recorded();
            crate::recorder::log_not_recorded(
                session,
                1,
                &error,
                error.is_retryable(),
                "2026-07-28 request forwarded without being recorded",
            );
            Ok(None)
        }
    }
}

/// Creates the session; `false` when another instance created it first.
async fn create_session(
    app: &AppState,
    id: &SessionId,
    principal: Option<&Principal>,
    message: &Value,
) -> Result<bool, StoreError> {
    let meta = request_meta(message);
    let field = |key: &str| meta.and_then(|meta| meta.get(key)).cloned();
    let mut new = NewSession::new(id.clone())
        .with_protocol_version(SESSIONLESS_REVISION)
        .with_tag(
            PER_CLIENT_TAG,
            if principal.is_some() {
                "principal"
            } else {
                "address"
            },
        );
    new.transport = Transport::StreamableHttp;
    new.status = SessionStatus::Active;
    new.client_info = Some(serde_json::json!({
        "clientInfo": field(META_CLIENT_INFO),
        "capabilities": field(META_CLIENT_CAPABILITIES),
    }));
    match app.store.create(new).await {
        Ok(_) => {
            app.metrics.session_created();
            tracing::info!(session = %id, "per-client session created for 2026-07-28 exchanges");
            Ok(true)
        }
        Err(StoreError::AlreadyExists(_)) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Records one message the upstream (or the cache) sent on `recording`'s stream.
pub async fn record_reply(app: &AppState, recording: &Recording, payload: &[u8]) {
    let frame = Frame::new(
        Direction::ServerToClient,
        SystemClock.now(),
        payload.to_vec(),
    )
    .with_stream_id(recording.stream.as_str());
    if let Err(error) = app.store.append_frame(&recording.session, frame).await {
        app.metrics.frame_not_recorded();
        tracing::warn!(session = %recording.session, %error, "2026-07-28 reply forwarded without being recorded");
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use axum::http::{header, HeaderValue};

    use super::*;
    use crate::{
        binding::principal,
        config::{Overrides, ProxyConfig},
    };

    fn settings(upstream: &str) -> ProxySettings {
        ProxyConfig::from_toml_str(
            &format!("[proxy]\nupstream = \"{upstream}\"\nbinding_secret = \"0123456789abcdef0123456789abcdef\"\n"),
            &Overrides::default(),
        )
        .unwrap()
        .proxy
    }

    #[test]
    fn session_ids_are_stable_per_client_name_and_upstream() {
        let a = settings("http://127.0.0.1:9/mcp");
        let b = settings("http://127.0.0.1:10/mcp");
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t1"));
        let alice = principal(&headers, &a);
        let here = ClientAddress(Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let there = ClientAddress(Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));

        let id = session_id(&a, alice.as_ref(), here, "cli").unwrap();
        assert_eq!(id.as_str().len(), SESSION_ID_HEX_DIGITS);
        // The principal wins over the address: the same user from anywhere.
        assert_eq!(id, session_id(&a, alice.as_ref(), there, "cli").unwrap());
        assert_ne!(id, session_id(&a, alice.as_ref(), here, "other").unwrap());
        assert_ne!(id, session_id(&b, alice.as_ref(), here, "cli").unwrap());
        assert_ne!(id, session_id(&a, None, here, "cli").unwrap());
        assert_ne!(
            session_id(&a, None, here, "cli").unwrap(),
            session_id(&a, None, there, "cli").unwrap()
        );
    }

    #[test]
    fn client_name_comes_from_meta() {
        let message = serde_json::json!({"params": {"_meta": {META_CLIENT_INFO: {"name": "n", "version": "1"}}}});
        assert_eq!(client_name(&message), "n");
        assert_eq!(client_name(&serde_json::json!({})), "");
    }
}
