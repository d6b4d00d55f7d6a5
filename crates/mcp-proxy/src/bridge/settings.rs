//! The bridge's keys in `[proxy]` (`bridge`, `bridge_request_state_keys`): their
//! types, defaults and validation. Read and layered with the other keys in
//! [`config`](crate::config); used by [`bridge`](crate::bridge).

use serde::{Deserialize, Serialize};
use session_store::Secret;

use crate::config_error::ConfigError;

/// Shortest accepted `bridge_request_state_keys` entry, in bytes (HMAC-SHA256
/// keys shorter than this are guessable).
pub const MIN_REQUEST_STATE_KEY_BYTES: usize = 32;

/// `bridge`: whether the proxy translates between the protocol generations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BridgeMode {
    /// Detect the upstream's generation and bridge a 2026-07-28 client to a
    /// handshake-only upstream (default).
    #[default]
    Auto,
    /// Forward every request in its own era, unchanged.
    Off,
}

/// The validated bridge settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeSettings {
    /// `bridge`.
    pub mode: BridgeMode,
    /// `bridge_request_state_keys`: the key ring sealing `requestState`; the first
    /// key seals, every key opens. Empty: a key derived from the binding key
    /// (`binding_secret`), the same on every instance that shares it.
    pub request_state_keys: Vec<Secret>,
}

/// Validates the keys as written; errors name the key and never its value.
pub(crate) fn validate_bridge(
    mode: BridgeMode,
    keys: &[String],
) -> Result<BridgeSettings, ConfigError> {
    if let Some(position) = keys
        .iter()
        .position(|key| key.len() < MIN_REQUEST_STATE_KEY_BYTES)
    {
        return Err(ConfigError::key(
            "proxy.bridge_request_state_keys",
            format!("the key at [{position}] is shorter than {MIN_REQUEST_STATE_KEY_BYTES} bytes: use a random key of at least {MIN_REQUEST_STATE_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)"),
        ));
    }
    Ok(BridgeSettings {
        mode,
        request_state_keys: keys.iter().map(|key| Secret::new(key.clone())).collect(),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::parse_proxy_keys as parse;

    use super::*;

    #[test]
    fn bridge_is_auto_by_default_and_can_be_turned_off() {
        let config = parse("").unwrap();
        assert_eq!(config.proxy.bridge.mode, BridgeMode::Auto);
        assert!(config.proxy.bridge.request_state_keys.is_empty());
        let off = parse("bridge = \"off\"").unwrap();
        assert_eq!(off.proxy.bridge.mode, BridgeMode::Off);
        assert!(parse("bridge = \"sometimes\"").is_err());
    }

    #[test]
    fn request_state_keys_are_read_and_short_ones_refused_without_echoing_them() {
        let long = "k".repeat(MIN_REQUEST_STATE_KEY_BYTES);
        let config = parse(&format!(
            "bridge_request_state_keys = [\"{long}\", \"{long}2\"]"
        ))
        .unwrap();
        assert_eq!(config.proxy.bridge.request_state_keys.len(), 2);
        let error = parse("bridge_request_state_keys = [\"short-secret\"]").unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("proxy.bridge_request_state_keys (from ")
                && text.contains("the key at [0] is shorter"),
            "{text}"
        );
        assert!(!text.contains("short-secret"), "{text}");
    }
}
