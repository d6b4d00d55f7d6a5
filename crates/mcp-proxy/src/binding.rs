//! Session binding: who a request speaks for (its [`Principal`]), read from
//! `Authorization`, and what a session is bound to under `[proxy] session_binding`,
//! so a leaked session id is useless to anyone else.
//!
//! The proxy does **not** verify tokens; the upstream does. A JWT's `iss` and `sub`
//! are read from its payload unverified, which is enough to tell a refreshed token
//! of the same user from another user's token. Every value that reaches the store
//! is an HMAC-SHA256 under the deployment's `binding_secret`, never a bare hash of
//! a token.

use axum::http::{header, HeaderMap};
use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{ProxySettings, SessionBinding};

/// The session tag holding the session's binding ([`Principal::as_str`]).
pub const BINDING_TAG: &str = "binding";

/// Longest `Authorization` value whose payload is decoded as a JWT; longer ones
/// are treated as opaque tokens.
const MAX_JWT_BYTES: usize = 16 * 1024;

/// base64url as JWTs use it (RFC 7515 §2: no padding), tolerating padding.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Who a request speaks for: a keyed hash of a JWT's (`iss`, `sub`), or of an
/// opaque token. Equal for every token of one user (JWT) or for one token
/// (opaque); it never contains the token.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(String);

impl Principal {
    /// The text stored in the session tag: `sub:<hex>` (a JWT subject) or
    /// `tok:<hex>` (a token), the hex being HMAC-SHA256 under the binding key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The principal of a request: for a bearer JWT with string `iss` and `sub`
/// claims, a keyed hash of both; for any other `Authorization` value, a keyed hash
/// of the value; `None` without `Authorization`. Independent of
/// `session_binding` (later caches key `private` entries on it).
pub fn principal(headers: &HeaderMap, settings: &ProxySettings) -> Option<Principal> {
    let authorization = headers.get(header::AUTHORIZATION)?.as_bytes();
    Some(match jwt_subject(authorization) {
        Some((issuer, subject)) => keyed(settings, "sub", &[issuer.as_bytes(), subject.as_bytes()]),
        None => token_principal(authorization, settings),
    })
}

/// What a new session is bound to, and what a request must present to use it,
/// under `session_binding`: `subject` the [`principal`], `token` a keyed hash of
/// the exact `Authorization` value, `none` nothing.
pub fn session_binding(headers: &HeaderMap, settings: &ProxySettings) -> Option<Principal> {
    match settings.session_binding {
        SessionBinding::Subject => principal(headers, settings),
        SessionBinding::Token => headers
            .get(header::AUTHORIZATION)
            .map(|value| token_principal(value.as_bytes(), settings)),
        SessionBinding::None => None,
    }
}

/// Whether a request presenting `presented` may use a session bound to `bound`
/// (the stored tag), in constant time for equal lengths.
pub fn matches(bound: Option<&str>, presented: Option<&Principal>) -> bool {
    use subtle::ConstantTimeEq;
    match (bound, presented) {
        (None, None) => true,
        (Some(bound), Some(presented)) => {
            bool::from(bound.as_bytes().ct_eq(presented.as_str().as_bytes()))
        }
        _ => false,
    }
}

/// The principal of every bearer JWT with these `iss` and `sub` claims under
/// this deployment's binding key: what an operator who knows the user (not a
/// token) names, e.g. `mcp-proxy sessions revoke --subject ISS SUB`.
pub fn subject_principal(settings: &ProxySettings, issuer: &str, subject: &str) -> Principal {
    keyed(settings, "sub", &[issuer.as_bytes(), subject.as_bytes()])
}

fn token_principal(authorization: &[u8], settings: &ProxySettings) -> Principal {
    keyed(settings, "tok", &[authorization])
}

/// `kind:` and the hex HMAC-SHA256 of `parts`, each length-prefixed so that no
/// two different part lists hash alike.
fn keyed(settings: &ProxySettings, kind: &str, parts: &[&[u8]]) -> Principal {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; the
    // fallback keeps this function total without a panic.
    let mut mac = Hmac::<Sha256>::new_from_slice(settings.binding_key.as_bytes())
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
    mac.update(b"mcp-proxy session binding v1\0");
    mac.update(kind.as_bytes());
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    Principal(format!("{kind}:{hex}"))
}

/// `iss` and `sub` of a `Bearer` JWT (three base64url segments, a JSON object
/// payload with both claims as non-empty strings), unverified.
fn jwt_subject(authorization: &[u8]) -> Option<(String, String)> {
    if authorization.len() > MAX_JWT_BYTES {
        return None;
    }
    let text = std::str::from_utf8(authorization).ok()?;
    let (scheme, token) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut segments = token.trim().split('.');
    let (_header, payload, _signature) = (segments.next()?, segments.next()?, segments.next()?);
    if segments.next().is_some() || payload.is_empty() {
        return None;
    }
    let payload = BASE64URL.decode(payload).ok()?;
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&payload).ok()?;
    let claim = |name: &str| {
        claims
            .get(name)
            .and_then(serde_json::Value::as_str)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    Some((claim("iss")?, claim("sub")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, ProxyConfig};
    use axum::http::HeaderValue;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn settings(extra: &str) -> ProxySettings {
        ProxyConfig::from_toml_str(
            &format!("[proxy]\nupstream = \"http://127.0.0.1:9/mcp\"\n{extra}\n"),
            &Overrides::default(),
        )
        .unwrap()
        .proxy
    }

    /// A bearer JWT with these claims (unsigned: the proxy never verifies).
    pub(crate) fn jwt(claims: serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("Bearer {header}.{payload}.c2lnbmF0dXJl")
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        headers
    }

    #[test]
    fn a_refreshed_token_of_the_same_user_has_the_same_principal() {
        let settings = settings("");
        let first = jwt(serde_json::json!({"iss":"https://as","sub":"alice","exp":1}));
        let refreshed = jwt(serde_json::json!({"iss":"https://as","sub":"alice","exp":2}));
        assert_ne!(first, refreshed);
        let first = session_binding(&headers(&first), &settings).unwrap();
        assert!(first.as_str().starts_with("sub:"), "{first:?}");
        assert_eq!(
            Some(first),
            session_binding(&headers(&refreshed), &settings)
        );
    }

    #[test]
    fn an_operator_names_the_principal_of_a_users_tokens_by_issuer_and_subject() {
        let settings = settings("binding_secret = \"0123456789abcdef0123456789abcdef\"");
        let token = jwt(serde_json::json!({"iss":"https://as","sub":"alice","exp":1}));
        let presented = session_binding(&headers(&token), &settings).unwrap();
        assert_eq!(
            subject_principal(&settings, "https://as", "alice"),
            presented
        );
        assert_ne!(subject_principal(&settings, "https://as", "bob"), presented);
    }

    #[test]
    fn another_user_or_issuer_has_another_principal() {
        let settings = settings("");
        let alice = principal(
            &headers(&jwt(serde_json::json!({"iss":"a","sub":"alice"}))),
            &settings,
        );
        let bob = principal(
            &headers(&jwt(serde_json::json!({"iss":"a","sub":"bob"}))),
            &settings,
        );
        let other_issuer = principal(
            &headers(&jwt(serde_json::json!({"iss":"b","sub":"alice"}))),
            &settings,
        );
        // Length prefixes: ("ab", "c") and ("a", "bc") differ.
        let split_1 = principal(
            &headers(&jwt(serde_json::json!({"iss":"ab","sub":"c"}))),
            &settings,
        );
        let split_2 = principal(
            &headers(&jwt(serde_json::json!({"iss":"a","sub":"bc"}))),
            &settings,
        );
        assert_ne!(alice, bob);
        assert_ne!(alice, other_issuer);
        assert_ne!(split_1, split_2);
    }

    #[test]
    fn opaque_and_malformed_tokens_bind_to_the_token() {
        let settings = settings("");
        for opaque in [
            "Bearer opaque-token-123",
            "Bearer a.b",
            "Bearer a.!!!.c",
            "Basic dXNlcjpwYXNz",
            // A JWT without `sub`, and one whose payload is not an object.
            &jwt(serde_json::json!({"iss":"a"})),
            &format!("Bearer x.{}.y", URL_SAFE_NO_PAD.encode("[1,2]")),
        ] {
            let principal = session_binding(&headers(opaque), &settings).unwrap();
            assert!(
                principal.as_str().starts_with("tok:"),
                "{opaque}: {principal:?}"
            );
            assert!(!principal.as_str().contains(opaque), "{opaque}");
        }
        assert_ne!(
            principal(&headers("Bearer one"), &settings),
            principal(&headers("Bearer two"), &settings)
        );
    }

    #[test]
    fn token_mode_binds_the_exact_value_and_none_mode_nothing() {
        let token_mode = settings("session_binding = \"token\"");
        let first = jwt(serde_json::json!({"iss":"a","sub":"alice","exp":1}));
        let refreshed = jwt(serde_json::json!({"iss":"a","sub":"alice","exp":2}));
        assert_ne!(
            session_binding(&headers(&first), &token_mode),
            session_binding(&headers(&refreshed), &token_mode)
        );
        let none_mode = settings("session_binding = \"none\"");
        assert_eq!(session_binding(&headers(&first), &none_mode), None);
        // The principal does not depend on the mode.
        assert_eq!(
            principal(&headers(&first), &none_mode),
            principal(&headers(&refreshed), &none_mode)
        );
    }

    #[test]
    fn the_binding_is_keyed_by_the_deployment() {
        let token = headers("Bearer opaque");
        let derived = principal(&token, &settings(""));
        let other_prefix = principal(
            &token,
            &settings("[storage]\nbackend = \"memory\"\n[storage.redis]\nkey_prefix = \"other\""),
        );
        let secret = principal(
            &token,
            &settings("binding_secret = \"0123456789abcdef0123\""),
        );
        assert_ne!(derived, other_prefix);
        assert_ne!(derived, secret);
        // Never a bare SHA-256 of the token.
        let bare = {
            use sha2::Digest;
            let digest = Sha256::digest(b"Bearer opaque");
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert!(!derived.unwrap().as_str().contains(&bare));
    }

    #[test]
    fn binding_matches_only_the_same_principal() {
        let settings = settings("");
        let alice = principal(&headers("Bearer a"), &settings).unwrap();
        let bob = principal(&headers("Bearer b"), &settings).unwrap();
        assert!(matches(None, None));
        assert!(matches(Some(alice.as_str()), Some(&alice)));
        assert!(!matches(Some(alice.as_str()), Some(&bob)));
        assert!(!matches(Some(alice.as_str()), None));
        assert!(!matches(None, Some(&alice)));
    }
}
