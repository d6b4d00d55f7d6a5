//! The `requestState` the bridge hands a 2026-07-28 client in an
//! `InputRequiredResult` (2026-07-28 "Multi round-trip requests"): it names the
//! pending upstream call and is sealed with HMAC-SHA256 under the key ring
//! (`bridge_request_state_keys`: the first key seals, every key opens, so keys
//! rotate by a rolling restart with the new key first and the old one second),
//! bound to the principal, the request and an expiry. Any instance opens it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{binding::Principal, bridge::settings::BridgeSettings, client_config::BindingKey};

/// How long a sealed `requestState` is accepted after it was issued.
pub const REQUEST_STATE_TTL: Duration = Duration::from_secs(600);

/// What a sealed `requestState` carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCall {
    /// The pending upstream call (its kv record).
    pub call: String,
    /// SHA-256 of the principal (hex), or empty for an anonymous client.
    pub principal: String,
    /// SHA-256 of the request (method and params without `_meta`,
    /// `inputResponses` and `requestState`), hex.
    pub request: String,
    /// Keys of the input requests already answered.
    pub answered: Vec<String>,
    /// Expiry, Unix milliseconds.
    pub expires: u64,
}

/// Why a `requestState` was refused (logged; the client gets one generic error).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// Not sealed by any key of the ring, or malformed.
    #[error("not sealed by this deployment")]
    Seal,
    /// Past its expiry.
    #[error("expired")]
    Expired,
    /// Issued to another principal or for another request.
    #[error("issued for another principal or request")]
    Binding,
}

/// The key ring.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({} keys)", self.keys.len())
    }
}

impl KeyRing {
    /// The configured keys, or one derived from the binding key.
    pub fn new(settings: &BridgeSettings, binding_key: &BindingKey) -> Self {
        let keys = if settings.request_state_keys.is_empty() {
            let mut hasher = Sha256::new();
            hasher.update(b"mcp-proxy bridge requestState key v1\0");
            hasher.update(binding_key.as_bytes());
            vec![hasher.finalize().to_vec()]
        } else {
            settings
                .request_state_keys
                .iter()
                .map(|key| key.expose().as_bytes().to_vec())
                .collect()
        };
        KeyRing { keys }
    }

    fn mac(key: &[u8], payload: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(key)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        mac.update(b"mcp-proxy requestState v1\0");
        mac.update(payload);
        mac.finalize().into_bytes().to_vec()
    }

    /// `pending` sealed with the first key: `<payload>.<mac>`, base64url.
    pub fn seal(&self, pending: &PendingCall) -> String {
        let payload = serde_json::to_vec(pending).unwrap_or_default();
        let mac = self
            .keys
            .first()
            .map(|key| Self::mac(key, &payload))
            .unwrap_or_default();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// Opens `sealed` with any key of the ring and checks its expiry and that it
    /// was issued to `principal` for `request`.
    pub fn open(
        &self,
        sealed: &str,
        principal: &str,
        request: &str,
        now: u64,
    ) -> Result<PendingCall, Refused> {
        let (payload, mac) = sealed.split_once('.').ok_or(Refused::Seal)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| Refused::Seal)?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| Refused::Seal)?;
        let genuine = self.keys.iter().any(|key| {
            use subtle::ConstantTimeEq;
            bool::from(Self::mac(key, &payload).ct_eq(&mac))
        });
        if !genuine {
            return Err(Refused::Seal);
        }
        let pending: PendingCall = serde_json::from_slice(&payload).map_err(|_| Refused::Seal)?;
        if pending.expires < now {
            return Err(Refused::Expired);
        }
        if pending.principal != principal || pending.request != request {
            return Err(Refused::Binding);
        }
        Ok(pending)
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default()
}

/// The principal's digest as sealed.
pub fn principal_digest(principal: Option<&Principal>) -> String {
    principal.map_or_else(String::new, |principal| hex(principal.as_str().as_bytes()))
}

/// The request's digest as sealed: its method and params, without `_meta`,
/// `inputResponses` and `requestState` (which change between rounds).
pub fn request_digest(message: &Value) -> String {
    let mut params = message.get("params").cloned().unwrap_or(Value::Null);
    if let Some(object) = params.as_object_mut() {
        for key in ["_meta", "inputResponses", "requestState"] {
            object.remove(key);
        }
    }
    let method = message.get("method").and_then(Value::as_str).unwrap_or("");
    hex(format!("{method}\0{params}").as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use session_store::Secret;

    use super::*;

    fn ring(keys: &[&str]) -> KeyRing {
        let settings = BridgeSettings {
            request_state_keys: keys
                .iter()
                .map(|key| Secret::new((*key).to_owned()))
                .collect(),
            ..BridgeSettings::default()
        };
        KeyRing::new(&settings, &BindingKey::Derived(Secret::new("b".to_owned())))
    }

    fn pending() -> PendingCall {
        PendingCall {
            call: "c1".into(),
            principal: "p".into(),
            request: "r".into(),
            answered: vec!["0".into()],
            expires: 1_000,
        }
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let old = ring(&["old-key"]);
        let rotated = ring(&["new-key", "old-key"]);
        let sealed_by_old = old.seal(&pending());
        assert_eq!(rotated.open(&sealed_by_old, "p", "r", 10), Ok(pending()));
        let sealed_by_new = rotated.seal(&pending());
        assert_eq!(old.open(&sealed_by_new, "p", "r", 10), Err(Refused::Seal));
        assert_eq!(
            ring(&["new-key"]).open(&sealed_by_new, "p", "r", 10),
            Ok(pending())
        );
    }

    #[test]
    fn a_request_state_is_bound_to_principal_request_and_expiry() {
        let keys = ring(&["k"]);
        let sealed = keys.seal(&pending());
        assert_eq!(keys.open(&sealed, "q", "r", 10), Err(Refused::Binding));
        assert_eq!(keys.open(&sealed, "p", "other", 10), Err(Refused::Binding));
        assert_eq!(keys.open(&sealed, "p", "r", 2_000), Err(Refused::Expired));
        let mut tampered = sealed.clone();
        tampered.insert(0, 'A');
        assert_eq!(keys.open(&tampered, "p", "r", 10), Err(Refused::Seal));
        assert_eq!(keys.open("garbage", "p", "r", 10), Err(Refused::Seal));
    }

    #[test]
    fn the_request_digest_ignores_what_changes_between_rounds() {
        let first =
            serde_json::json!({"method": "tools/call", "params": {"name": "t", "_meta": {"a": 1}}});
        let retry = serde_json::json!({"method": "tools/call", "params": {"name": "t", "_meta": {"a": 2}, "requestState": "s", "inputResponses": {}}});
        assert_eq!(request_digest(&first), request_digest(&retry));
        let other = serde_json::json!({"method": "tools/call", "params": {"name": "u"}});
        assert_ne!(request_digest(&first), request_digest(&other));
    }
}
