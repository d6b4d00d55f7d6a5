//! Sessions as the proxy sees them: the client's `Mcp-Session-Id` resolved through
//! the store (so any instance can serve any session), bound to the principal that
//! created it (see [`binding`]), and filled in from the
//! `initialize` exchange.

use axum::http::{header, HeaderMap};
use session_store::{
    Error as StoreError, NewSession, Session, SessionId, SessionStatus, SessionStore, Transport,
};
use sha2::{Digest, Sha256};

use crate::{
    binding::{self, Principal, BINDING_TAG},
    errors::ProxyError,
    jsonrpc::{InitializeRequest, InitializeResult},
    log_text::ClientText,
    upstream::SESSION_ID_HEADER,
};

/// The tag of sessions created before [`BINDING_TAG`]: the SHA-256 (hex) of the
/// `Authorization` header that initialized the session. Still honoured, never
/// written, so a rolling upgrade keeps those sessions bound.
pub const LEGACY_CREDENTIAL_TAG: &str = "credential_sha256";

/// Updates of the session after `initialize` retried on a concurrent change.
const INITIALIZE_UPDATE_ATTEMPTS: usize = 3;

/// The client's `Mcp-Session-Id`, when it sent one. An id that is not a valid
/// session id can name no session: 404, like any unknown id.
pub fn client_session_id(headers: &HeaderMap) -> Result<Option<SessionId>, ProxyError> {
    let Some(value) = headers.get(SESSION_ID_HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| ProxyError::SessionNotFound)?;
    SessionId::new(text)
        .map(Some)
        .map_err(|_| ProxyError::SessionNotFound)
}

/// SHA-256 (hex) of the request's `Authorization` header, when it has one: only
/// to check sessions bound by [`LEGACY_CREDENTIAL_TAG`].
fn legacy_fingerprint(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?;
    let digest = Sha256::digest(value.as_bytes());
    Some(digest.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Loads the session `id` for a request whose binding under `session_binding` is
/// `presented` ([`binding::session_binding`]).
///
/// A session bound to another principal (or to none, when the request has one) is
/// reported as not found, so a stolen session id is useless without the
/// credentials of the user who created it.
pub async fn resolve(
    store: &dyn SessionStore,
    id: &SessionId,
    headers: &HeaderMap,
    presented: Option<&Principal>,
) -> Result<Session, ProxyError> {
    let session = store.get(id).await?;
    check_binding(&session, headers, presented)?;
    Ok(session)
}

/// 404 unless the request's credential is the one `session` is bound to (or
/// its legacy credential fingerprint matches).
pub fn check_binding(
    session: &Session,
    headers: &HeaderMap,
    presented: Option<&Principal>,
) -> Result<(), ProxyError> {
    let id = &session.id;
    let allowed = match (
        session.tags.get(BINDING_TAG),
        session.tags.get(LEGACY_CREDENTIAL_TAG),
    ) {
        (None, Some(legacy)) => legacy_fingerprint(headers)
            .is_some_and(|presented| constant_time_eq(legacy, &presented)),
        (bound, _) => binding::matches(bound.map(String::as_str), presented),
    };
    if !allowed {
        tracing::info!(session = %ClientText(id.as_str().as_bytes()), "request's principal differs from the session's binding; answering 404");
        return Err(ProxyError::SessionNotFound);
    }
    Ok(())
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Creates the session for a successful `initialize`: a fresh proxy id mapped to the
/// upstream's id, with what the client sent. The server's side is filled in by
/// [`complete_initialize`] when its result arrives.
pub async fn create_for_initialize(
    store: &dyn SessionStore,
    request: &InitializeRequest,
    upstream_session_id: Option<String>,
    binding: Option<Principal>,
) -> Result<Session, ProxyError> {
    let mut new = NewSession::new(store.new_session_id()?);
    new.upstream_session_id = upstream_session_id;
    new.transport = Transport::StreamableHttp;
    new.status = SessionStatus::Initializing;
    new.protocol_version = request.protocol_version.clone();
    new.client_info = Some(request.client_info.clone());
    if let Some(binding) = binding {
        new = new.with_tag(BINDING_TAG, binding.as_str());
    }
    Ok(store.create(new).await?)
}

/// Records the server's answer to `initialize`: negotiated version, server info and
/// capabilities; the session becomes active. Retries on a concurrent update.
pub async fn complete_initialize(
    store: &dyn SessionStore,
    id: &SessionId,
    result: InitializeResult,
) -> Result<(), StoreError> {
    let mut last_error = None;
    for _ in 0..INITIALIZE_UPDATE_ATTEMPTS {
        let mut session = store.get(id).await?;
        if result.protocol_version.is_some() {
            session.protocol_version = result.protocol_version.clone();
        }
        session.server_info = Some(result.server_info.clone());
        session.status = SessionStatus::Active;
        match store.update(&session).await {
            Ok(_) => return Ok(()),
            Err(conflict @ StoreError::Conflict { .. }) => last_error = Some(conflict),
            Err(other) => return Err(other),
        }
    }
    Err(last_error.unwrap_or_else(|| StoreError::unavailable("session update did not settle")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn legacy_fingerprint_is_sha256_hex_of_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(legacy_fingerprint(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("abc"));
        assert_eq!(
            legacy_fingerprint(&headers).as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }

    #[tokio::test]
    async fn sessions_bound_before_the_binding_tag_stay_bound() {
        let store =
            session_store::MemoryStore::new(session_store::StoreSettings::default()).unwrap();
        let id = SessionId::random().unwrap();
        let legacy = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        store
            .create(NewSession::new(id.clone()).with_tag(LEGACY_CREDENTIAL_TAG, legacy))
            .await
            .unwrap();
        let mut headers = HeaderMap::new();
        assert!(resolve(&store, &id, &headers, None).await.is_err());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("abd"));
        assert!(resolve(&store, &id, &headers, None).await.is_err());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("abc"));
        assert!(resolve(&store, &id, &headers, None).await.is_ok());
    }

    #[test]
    fn malformed_session_ids_are_not_found() {
        let mut headers = HeaderMap::new();
        assert!(client_session_id(&headers).unwrap().is_none());
        headers.insert(SESSION_ID_HEADER, HeaderValue::from_static("abc"));
        assert_eq!(
            client_session_id(&headers).unwrap().unwrap().as_str(),
            "abc"
        );
        headers.insert(SESSION_ID_HEADER, HeaderValue::from_static(""));
        assert!(matches!(
            client_session_id(&headers),
            Err(ProxyError::SessionNotFound)
        ));
    }
}
