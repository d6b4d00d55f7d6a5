//! The `[proxy]` keys of the 2026-07-28 request path (`record_stateless` and the
//! `[proxy.cache]` table): their types, defaults and validation. Read and layered
//! with the other keys in [`config`](crate::config); used by [`modern`](crate::modern).

use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;

/// Default `[proxy.cache] max_entry_bytes`: results larger than this are not cached
/// (the store's own `max_kv_value_bytes` defaults to the same).
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 64 * 1024;

/// `record_stateless`: whether 2026-07-28 exchanges (which carry no session) are
/// recorded, grouped in a proxy-side session per client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordStateless {
    /// One session per (principal or client address, `clientInfo` name, upstream).
    #[default]
    PerClient,
    /// Forwarded without being recorded.
    Off,
}

/// The `[proxy.cache]` table as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CacheSection {
    enabled: bool,
    max_entry_bytes: usize,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            enabled: true,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
        }
    }
}

/// The validated `[proxy.cache]` settings: the cross-instance result cache of
/// SEP-2549 (2026-07-28 "Caching").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// Whether cacheable results are kept in the store and served from it.
    pub enabled: bool,
    /// Largest result (bytes of its JSON) that is kept.
    pub max_entry_bytes: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
        }
    }
}

/// The validated settings of the 2026-07-28 request path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModernSettings {
    /// `record_stateless`.
    pub record_stateless: RecordStateless,
    /// `[proxy.cache]`.
    pub cache: CacheSettings,
}

/// Validates the keys as written; errors name the key.
pub(crate) fn validate_modern(
    record_stateless: RecordStateless,
    cache: &CacheSection,
) -> Result<ModernSettings, ConfigError> {
    if cache.enabled && cache.max_entry_bytes == 0 {
        return Err(ConfigError::value(
            "proxy.cache.max_entry_bytes",
            0,
            "must be at least 1 (set proxy.cache.enabled = false to turn the cache off)",
        ));
    }
    Ok(ModernSettings {
        record_stateless,
        cache: CacheSettings {
            enabled: cache.enabled,
            max_entry_bytes: cache.max_entry_bytes,
        },
    })
}

#[cfg(test)]
mod tests {
    use crate::config::parse_proxy_keys as parse;

    use super::*;

    #[test]
    fn recording_and_cache_are_on_by_default() {
        let config = parse("").unwrap();
        assert_eq!(config.proxy.modern, ModernSettings::default());
        assert_eq!(
            config.proxy.modern.record_stateless,
            RecordStateless::PerClient
        );
        assert!(config.proxy.modern.cache.enabled);
    }

    #[test]
    fn keys_are_read_and_checked() {
        let config = parse(
            "record_stateless = \"off\"\n[proxy.cache]\nenabled = false\nmax_entry_bytes = 10\n",
        )
        .unwrap();
        assert_eq!(config.proxy.modern.record_stateless, RecordStateless::Off);
        assert_eq!(
            config.proxy.modern.cache,
            CacheSettings {
                enabled: false,
                max_entry_bytes: 10
            }
        );
        let error = parse("[proxy.cache]\nmax_entry_bytes = 0\n").unwrap_err();
        assert!(error.to_string().contains("max_entry_bytes"), "{error}");
        assert!(parse("record_stateless = \"sometimes\"\n").is_err());
        assert!(parse("[proxy.cache]\nttl = 3\n").is_err());
    }
}
