//! Configuration: the `[proxy]` table and the facade's `[storage]` table of one TOML
//! file, layered file < environment < command-line flags.
//!
//! Proxy keys come from `MCP_PROXY_*` variables (`MCP_PROXY_UPSTREAM_TIMEOUT=5s`),
//! storage keys from the facade's `SESSION_STORE_*` variables. Every error names the
//! key and where its value came from.

use std::{net::SocketAddr, path::Path, time::Duration};

use figment::{
    providers::{Env, Serialized},
    Figment, Provider,
};
use serde::{Deserialize, Serialize};
use session_store::{Secret, StorageConfig, StorageOverrides, STORAGE_KEY};
use url::Url;

use crate::client_config::validate_client_side;
pub use crate::client_config::{
    serialize_origin, AllowedOrigins, BindingKey, Rate, SessionBinding,
};
use crate::modern_config::{validate_modern, CacheSection, ModernSettings, RecordStateless};

/// The table that holds the proxy's own settings.
pub const PROXY_KEY: &str = "proxy";

/// Prefix of the proxy's environment variables.
pub const PROXY_ENV_PREFIX: &str = "MCP_PROXY_";

/// Keys of `[proxy]`, as written in the file (and, upper-cased, in the environment).
const PROXY_KEYS: &[&str] = &[
    "listen",
    "upstream",
    "endpoint_path",
    "max_body_bytes",
    "upstream_timeout",
    "shutdown_grace",
    // Client side: admission, session binding, admin listener, limits.
    "allowed_origins",
    "session_binding",
    "binding_secret",
    "admin_listen",
    "admin_token",
    "header_read_timeout",
    "idle_timeout",
    "max_connections",
    "max_sessions_per_client",
    "initialize_rate",
    // The 2026-07-28 request path (modern_config.rs).
    "record_stateless",
    // Removed keys, read only to name their replacement.
    "admin_endpoints",
];

/// A configuration that cannot be used; the message names the key and its source.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }
}

/// The `[proxy]` table as written, before validation.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ProxySection {
    listen: String,
    upstream: Option<String>,
    endpoint_path: String,
    max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    upstream_timeout: Duration,
    #[serde(with = "humantime_serde")]
    shutdown_grace: Duration,
    // Client side: admission, session binding, admin listener, limits.
    pub(crate) allowed_origins: Option<Vec<String>>,
    pub(crate) session_binding: SessionBinding,
    pub(crate) binding_secret: Option<String>,
    pub(crate) admin_listen: Option<String>,
    pub(crate) admin_token: Option<String>,
    #[serde(with = "humantime_serde")]
    pub(crate) header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_sessions_per_client: usize,
    pub(crate) initialize_rate: String,
    // The 2026-07-28 request path (modern_config.rs).
    pub(crate) record_stateless: RecordStateless,
    pub(crate) cache: CacheSection,
    /// Removed; any value is an error naming `admin_listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) admin_endpoints: Option<figment::value::Value>,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            listen: "127.0.0.1:8080".to_owned(),
            upstream: None,
            endpoint_path: "/mcp".to_owned(),
            max_body_bytes: 4 * 1024 * 1024,
            upstream_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            allowed_origins: None,
            session_binding: SessionBinding::Subject,
            binding_secret: None,
            admin_listen: None,
            admin_token: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_sessions_per_client: 100,
            initialize_rate: "20/min".to_owned(),
            record_stateless: RecordStateless::PerClient,
            cache: CacheSection::default(),
            admin_endpoints: None,
        }
    }
}

/// The validated `[proxy]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// `listen`: the address the proxy accepts clients on (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// `upstream`: the MCP endpoint of the upstream server, `http://host:port/path`.
    pub upstream: Url,
    /// `endpoint_path`: the path clients POST/GET/DELETE on (default `/mcp`).
    pub endpoint_path: String,
    /// `max_body_bytes`: largest request body accepted; larger is 413 (default 4 MiB).
    pub max_body_bytes: usize,
    /// `upstream_timeout`: how long to wait for the upstream's response headers and
    /// for a complete JSON reply; longer is 504 (default `30s`).
    pub upstream_timeout: Duration,
    /// `shutdown_grace`: how long in-flight requests may run after SIGTERM/SIGINT
    /// (default `30s`).
    pub shutdown_grace: Duration,
    // Client side: admission, session binding, admin listener, limits.
    /// `allowed_origins`: which browser `Origin`s may use the MCP endpoint (MCP
    /// transport, "Security Warning": servers MUST validate `Origin`).
    pub allowed_origins: AllowedOrigins,
    /// `session_binding`: what a session is bound to (default `subject`).
    pub session_binding: SessionBinding,
    /// `binding_secret`: the HMAC key of session bindings, or (unset) a salt
    /// derived from the deployment, with a warning at start.
    pub binding_key: BindingKey,
    /// `admin_listen`: where `/sessions*`, `/metrics` and `/healthz` are served
    /// (default none: no admin listener).
    pub admin_listen: Option<SocketAddr>,
    /// `admin_token`: the bearer token the admin listener requires, when set.
    pub admin_token: Option<Secret>,
    /// `header_read_timeout`: longest wait for a complete request head once its
    /// first byte arrived (default `10s`).
    pub header_read_timeout: Duration,
    /// `idle_timeout`: a connection with no request in flight and no bytes moving
    /// for this long is closed (default `60s`).
    pub idle_timeout: Duration,
    /// `max_connections`: client connections served at once per listener; more
    /// wait to be accepted (default `4096`).
    pub max_connections: usize,
    /// `max_sessions_per_client`: live sessions one client (binding, else
    /// address) may hold through this instance; 0 = no cap (default `100`).
    pub max_sessions_per_client: usize,
    /// `initialize_rate`: `initialize` requests one client may send per period,
    /// per instance (default `20/min`; `None` = `"off"`).
    pub initialize_rate: Option<Rate>,
    /// `record_stateless` and `[proxy.cache]`: the 2026-07-28 request path.
    pub modern: ModernSettings,
}

/// Everything the proxy needs to start: its own settings and the store's.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The `[proxy]` table.
    pub proxy: ProxySettings,
    /// The `[storage]` table (the `session-store` facade's configuration).
    pub storage: StorageConfig,
}

/// Values from command-line flags; they override the environment and the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--admin-listen`.
    pub admin_listen: Option<String>,
    /// `--upstream`.
    pub upstream: Option<String>,
    /// `--storage` (`memory` or `redis`).
    pub storage_backend: Option<String>,
    /// `--redis-url`.
    pub redis_url: Option<String>,
}

impl ProxyConfig {
    /// Loads the configuration from the TOML file at `path` (optional), the
    /// environment and `overrides`, and validates it.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<ProxyConfig, ConfigError> {
        let figment = StorageConfig::figment(path)
            .map_err(|error| ConfigError::new(error.to_string()))?
            .merge(proxy_env());
        ProxyConfig::from_figment(figment, overrides)
    }

    /// Parses a TOML document without reading the environment: for tests.
    pub fn from_toml_str(toml: &str, overrides: &Overrides) -> Result<ProxyConfig, ConfigError> {
        use figment::providers::{Format, Toml};
        ProxyConfig::from_figment(Figment::from(Toml::string(toml)), overrides)
    }

    fn from_figment(
        mut figment: Figment,
        overrides: &Overrides,
    ) -> Result<ProxyConfig, ConfigError> {
        if let Some(listen) = &overrides.listen {
            figment = figment.merge(Serialized::default("proxy.listen", listen));
        }
        if let Some(admin_listen) = &overrides.admin_listen {
            figment = figment.merge(Serialized::default("proxy.admin_listen", admin_listen));
        }
        if let Some(upstream) = &overrides.upstream {
            figment = figment.merge(Serialized::default("proxy.upstream", upstream));
        }
        let mut storage_overrides = StorageOverrides::new();
        if let Some(backend) = &overrides.storage_backend {
            storage_overrides = storage_overrides.set("backend", backend.as_str());
        }
        if let Some(url) = &overrides.redis_url {
            storage_overrides = storage_overrides.set("redis.url", url.as_str());
        }
        figment = figment.merge(storage_overrides);

        reject_unknown_tables(&figment)?;
        let section = if figment.contains(PROXY_KEY) {
            figment
                .extract_inner::<ProxySection>(PROXY_KEY)
                .map_err(|error| ConfigError::new(describe_figment_error(&error)))?
        } else {
            ProxySection::default()
        };
        let storage = StorageConfig::from_figment(&figment, STORAGE_KEY)
            .map_err(|error| ConfigError::new(error.to_string()))?;
        Ok(ProxyConfig {
            proxy: validate(section, &storage)?,
            storage,
        })
    }
}

/// `MCP_PROXY_LISTEN` and friends, nested under `[proxy]`. Only the known keys are
/// read, so unrelated `MCP_PROXY_*` variables are not an error.
fn proxy_env() -> Env {
    Env::prefixed(PROXY_ENV_PREFIX)
        .only(PROXY_KEYS)
        .map(|key| format!("{PROXY_KEY}.{key}").into())
}

fn reject_unknown_tables(figment: &Figment) -> Result<(), ConfigError> {
    let data = figment
        .data()
        .map_err(|error| ConfigError::new(describe_figment_error(&error)))?;
    for dict in data.values() {
        if let Some(unknown) = dict
            .keys()
            .find(|key| key.as_str() != PROXY_KEY && key.as_str() != STORAGE_KEY)
        {
            return Err(ConfigError::new(format!(
                "unknown table or key `{unknown}`: the file holds only [{PROXY_KEY}] and [{STORAGE_KEY}]"
            )));
        }
    }
    Ok(())
}

fn describe_figment_error(error: &figment::Error) -> String {
    // figment's Display already names the key path and the source (file or
    // environment variable) of every error in the chain.
    error
        .clone()
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn validate(section: ProxySection, storage: &StorageConfig) -> Result<ProxySettings, ConfigError> {
    let listen: SocketAddr = section.listen.parse().map_err(|_| {
        ConfigError::new(format!(
            "proxy.listen `{}` is not a socket address such as 127.0.0.1:8080",
            section.listen
        ))
    })?;
    let client = validate_client_side(&section, listen)?;
    let modern = validate_modern(section.record_stateless, &section.cache)?;
    let raw_upstream = section.upstream.ok_or_else(|| {
        ConfigError::new(
            "proxy.upstream is not set: set `upstream` in [proxy], MCP_PROXY_UPSTREAM or --upstream",
        )
    })?;
    let upstream = Url::parse(&raw_upstream).map_err(|error| {
        ConfigError::new(format!(
            "proxy.upstream `{raw_upstream}` is not a URL: {error}"
        ))
    })?;
    if upstream.scheme() != "http" {
        return Err(ConfigError::new(format!(
            "proxy.upstream `{raw_upstream}`: only http:// upstreams are supported (terminate TLS in front of the upstream or use a sidecar)"
        )));
    }
    if !section.endpoint_path.starts_with('/') || section.endpoint_path.len() < 2 {
        return Err(ConfigError::new(format!(
            "proxy.endpoint_path `{}` must start with `/` and name a path, such as /mcp",
            section.endpoint_path
        )));
    }
    if reserved_path(&section.endpoint_path) {
        return Err(ConfigError::new(format!(
            "proxy.endpoint_path `{}` collides with the proxy's own endpoints (/healthz, /metrics, /sessions)",
            section.endpoint_path
        )));
    }
    if section.max_body_bytes == 0 {
        return Err(ConfigError::new("proxy.max_body_bytes must be at least 1"));
    }
    if section.upstream_timeout.is_zero() {
        return Err(ConfigError::new(
            "proxy.upstream_timeout must be longer than 0s",
        ));
    }
    Ok(ProxySettings {
        listen,
        endpoint_path: section.endpoint_path,
        max_body_bytes: section.max_body_bytes,
        upstream_timeout: section.upstream_timeout,
        shutdown_grace: section.shutdown_grace,
        allowed_origins: client.allowed_origins,
        session_binding: section.session_binding,
        binding_key: client
            .binding_secret
            .unwrap_or_else(|| BindingKey::derive(storage, &upstream)),
        admin_listen: client.admin_listen,
        admin_token: client.admin_token,
        header_read_timeout: section.header_read_timeout,
        idle_timeout: section.idle_timeout,
        max_connections: section.max_connections,
        max_sessions_per_client: section.max_sessions_per_client,
        initialize_rate: client.initialize_rate,
        modern,
        upstream,
    })
}

fn reserved_path(path: &str) -> bool {
    ["/healthz", "/metrics", "/sessions"]
        .iter()
        .any(|reserved| path == *reserved || path.starts_with(&format!("{reserved}/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_and_defaults() {
        let config = ProxyConfig::from_toml_str(
            r#"
            [proxy]
            upstream = "http://127.0.0.1:9000/mcp"
            upstream_timeout = "5s"
            [storage]
            backend = "memory"
            ttl = "1h"
            "#,
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.proxy.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.proxy.endpoint_path, "/mcp");
        assert_eq!(config.proxy.upstream_timeout, Duration::from_secs(5));
        assert_eq!(config.storage.ttl, Duration::from_secs(3600));
    }

    #[test]
    fn flags_override_the_file() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:9999".into()),
            upstream: Some("http://127.0.0.1:1/x".into()),
            ..Overrides::default()
        };
        let config = ProxyConfig::from_toml_str(
            "[proxy]\nlisten = \"127.0.0.1:1234\"\nupstream = \"http://127.0.0.1:2/mcp\"\n",
            &overrides,
        )
        .unwrap();
        assert_eq!(config.proxy.listen.port(), 9999);
        assert_eq!(config.proxy.upstream.as_str(), "http://127.0.0.1:1/x");
    }

    #[test]
    fn missing_upstream_names_every_way_to_set_it() {
        let error = ProxyConfig::from_toml_str("[proxy]\n", &Overrides::default()).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("proxy.upstream") && message.contains("MCP_PROXY_UPSTREAM"),
            "{message}"
        );
    }

    #[test]
    fn unknown_keys_and_tables_are_errors() {
        let error = ProxyConfig::from_toml_str(
            "[proxy]\nupstream = \"http://127.0.0.1:2/mcp\"\nlisten_port = 3\n",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("listen_port"), "{error}");
        let error = ProxyConfig::from_toml_str(
            "[proxy]\nupstream = \"http://127.0.0.1:2/mcp\"\n[prxy]\n",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("prxy"), "{error}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (toml, key) in [
            (
                "[proxy]\nupstream = \"http://a/mcp\"\nlisten = \"nope\"\n",
                "proxy.listen",
            ),
            ("[proxy]\nupstream = \"ftp://a/mcp\"\n", "proxy.upstream"),
            (
                "[proxy]\nupstream = \"http://a/mcp\"\nendpoint_path = \"mcp\"\n",
                "proxy.endpoint_path",
            ),
            (
                "[proxy]\nupstream = \"http://a/mcp\"\nendpoint_path = \"/metrics\"\n",
                "proxy.endpoint_path",
            ),
            (
                "[proxy]\nupstream = \"http://a/mcp\"\nmax_body_bytes = 0\n",
                "proxy.max_body_bytes",
            ),
        ] {
            let error = ProxyConfig::from_toml_str(toml, &Overrides::default()).unwrap_err();
            assert!(error.to_string().contains(key), "{toml}: {error}");
        }
        let error = ProxyConfig::from_toml_str(
            "[proxy]\nupstream = \"http://a/mcp\"\nupstream_timeout = \"soon\"\n",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("upstream_timeout"), "{error}");
    }

    #[test]
    fn storage_flags_reach_the_storage_table() {
        let overrides = Overrides {
            storage_backend: Some("memory".into()),
            redis_url: Some("redis://127.0.0.1:7000".into()),
            ..Overrides::default()
        };
        let config =
            ProxyConfig::from_toml_str("[proxy]\nupstream = \"http://a/mcp\"\n", &overrides)
                .unwrap();
        assert_eq!(config.storage.redis.url.as_str(), "redis://127.0.0.1:7000");
    }

    fn example(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn the_memory_example_is_valid() {
        let config =
            ProxyConfig::from_toml_str(&example("mcp-proxy.toml"), &Overrides::default()).unwrap();
        assert_eq!(config.storage.backend.as_str(), "memory");
        let admin = config
            .proxy
            .admin_listen
            .expect("the example has an admin listener");
        assert!(admin.ip().is_loopback() && admin != config.proxy.listen);
    }

    #[cfg(feature = "redis")]
    #[test]
    fn the_redis_example_is_valid() {
        let config =
            ProxyConfig::from_toml_str(&example("mcp-proxy-redis.toml"), &Overrides::default())
                .unwrap();
        assert_eq!(config.storage.backend.as_str(), "redis");
        let admin = config
            .proxy
            .admin_listen
            .expect("the example has an admin listener");
        assert!(admin.ip().is_loopback() && admin != config.proxy.listen);
    }
}
