//! Configuration: the `[proxy]` table and the facade's `[storage]` table of one TOML
//! file, layered file < environment < command-line flags.
//!
//! Proxy keys come from `MCP_PROXY_*` variables (`MCP_PROXY_UPSTREAM_TIMEOUT=5s`),
//! storage keys from the facade's `SESSION_STORE_*` variables. Every error names the
//! key and where its value came from.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use axum::http::HeaderName;

use figment::{
    providers::Env,
    value::{Dict, Map, Value},
    Figment, Metadata, Profile, Provider,
};
use serde::{Deserialize, Serialize};
use session_store::{
    describe_extraction_error, describe_source, env_layer_metadata, parse_url_as_written, Secret,
    StorageConfig, StorageOverrides, STORAGE_KEY,
};
use url::Url;

use crate::bridge::settings::{validate_bridge, BridgeMode, BridgeSettings};
pub use crate::client_config::{
    serialize_origin, AllowedOrigins, BindingKey, Rate, SessionBinding,
};
use crate::client_config::{validate_client_side, ClientKeys};
pub use crate::config_error::ConfigError;
use crate::modern_config::{validate_modern, CacheSection, ModernSettings, RecordStateless};
use crate::{headers::RequestHeaderPolicy, upstream_tls::UpstreamTlsFiles};

/// The table that holds the proxy's own settings.
pub const PROXY_KEY: &str = "proxy";

/// Prefix of the proxy's environment variables.
pub const PROXY_ENV_PREFIX: &str = "MCP_PROXY_";

/// Keys of `[proxy]`, as written in the file (and, upper-cased, in the environment).
pub(crate) const PROXY_KEYS: &[&str] = &[
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
    // The protocol-generation bridge (bridge/settings.rs).
    "bridge",
    "bridge_request_state_keys",
    // Removed keys, read only to name their replacement.
    "admin_endpoints",
    // The upstream side: TLS, header policy, OAuth metadata, long replies.
    "upstream_body_timeout",
    "upstream_ca_file",
    "upstream_client_cert",
    "upstream_client_key",
    "request_header_deny",
    "forwarded_headers",
    "public_url",
    "rewrite_resource_metadata",
    // Streams and upstream sessions: takeover, recovery, polling, keep-alive.
    "upstream_session_recovery",
    "upstream_poll_deadline",
    "sse_keepalive",
    // The process: the async runtime.
    "worker_threads",
];

/// The largest `worker_threads` accepted: a count beyond it is a typo (the
/// runtime would try to start that many threads, and abort when the system
/// refuses them), not a setting.
pub const MAX_WORKER_THREADS: usize = 256;

/// `worker_threads` when the key is absent: one worker. On the side-by-side
/// bench one worker spent ~25% less CPU per call than one per core (no futex
/// wake-ups between workers) and served as many calls/s at 16 clients
/// (docs/performance.md, "CPU per call").
pub const DEFAULT_WORKER_THREADS: usize = 1;

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
    // The protocol-generation bridge (bridge/settings.rs).
    pub(crate) bridge: BridgeMode,
    pub(crate) bridge_request_state_keys: Vec<String>,
    /// Removed; any value is an error naming `admin_listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) admin_endpoints: Option<figment::value::Value>,
    // The upstream side: TLS, header policy, OAuth metadata, long replies.
    #[serde(with = "humantime_serde")]
    upstream_body_timeout: Duration,
    upstream_ca_file: Option<PathBuf>,
    upstream_client_cert: Option<PathBuf>,
    upstream_client_key: Option<PathBuf>,
    request_header_deny: Vec<String>,
    forwarded_headers: bool,
    public_url: Option<String>,
    rewrite_resource_metadata: bool,
    upstream_session_recovery: SessionRecovery,
    #[serde(with = "humantime_serde")]
    upstream_poll_deadline: Duration,
    #[serde(with = "humantime_serde")]
    sse_keepalive: Duration,
    // The process: the async runtime.
    worker_threads: usize,
}

/// What the proxy does when the upstream has lost a session
/// (`upstream_session_recovery`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionRecovery {
    /// Re-create the upstream session from the recorded `initialize` and carry on
    /// (the default).
    #[default]
    Restore,
    /// End the proxy's session too and answer 404, so the client re-initializes.
    Propagate,
}

impl ProxySection {
    /// The client-side keys as written, for [`validate_client_side`].
    fn client_keys(&self) -> ClientKeys<'_> {
        ClientKeys {
            allowed_origins: self.allowed_origins.as_deref(),
            binding_secret: self.binding_secret.as_deref(),
            admin_listen: self.admin_listen.as_deref(),
            admin_token: self.admin_token.as_deref(),
            admin_endpoints_set: self.admin_endpoints.is_some(),
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            initialize_rate: &self.initialize_rate,
        }
    }
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
            bridge: BridgeMode::Auto,
            bridge_request_state_keys: Vec::new(),
            admin_endpoints: None,
            upstream_body_timeout: Duration::from_secs(600),
            upstream_ca_file: None,
            upstream_client_cert: None,
            upstream_client_key: None,
            request_header_deny: Vec::new(),
            forwarded_headers: true,
            public_url: None,
            rewrite_resource_metadata: false,
            upstream_session_recovery: SessionRecovery::Restore,
            upstream_poll_deadline: Duration::from_secs(600),
            sse_keepalive: Duration::from_secs(15),
            worker_threads: DEFAULT_WORKER_THREADS,
        }
    }
}

/// The validated `[proxy]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// `listen`: the address the proxy accepts clients on (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// `upstream`: the MCP endpoint of the upstream server, `http://` or
    /// `https://host:port/path`.
    pub upstream: Url,
    /// `endpoint_path`: the path clients POST/GET/DELETE on (default `/mcp`).
    pub endpoint_path: String,
    /// `max_body_bytes`: largest request body accepted; larger is 413 (default 4 MiB).
    pub max_body_bytes: usize,
    /// `upstream_timeout`: how long connecting to the upstream and waiting for its
    /// response headers may take; longer is 504 (default `30s`).
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
    // The upstream side: TLS, header policy, OAuth metadata, long replies.
    /// `upstream_body_timeout`: how long reading a complete JSON reply may take once
    /// its headers arrived; longer is 504 (default `10m`).
    pub upstream_body_timeout: Duration,
    /// `upstream_ca_file`, `upstream_client_cert`, `upstream_client_key`: TLS to an
    /// `https://` upstream (each file checked at load).
    pub upstream_tls: UpstreamTlsFiles,
    /// `request_header_deny` (lower-cased header names) and `forwarded_headers`
    /// (default true): which client headers the upstream gets.
    pub request_headers: RequestHeaderPolicy,
    /// `public_url`: the MCP endpoint URL clients use (default: derived from each
    /// request's `Host` and `X-Forwarded-Proto`); the target of
    /// `rewrite_resource_metadata`.
    pub public_url: Option<Url>,
    /// `rewrite_resource_metadata`: rewrite the upstream's URL to `public_url` in
    /// its protected-resource metadata and `WWW-Authenticate` (default false).
    pub rewrite_resource_metadata: bool,
    /// `upstream_session_recovery`: `restore` (default) re-creates a session the
    /// upstream lost; `propagate` ends the proxy's session and answers 404.
    pub upstream_session_recovery: SessionRecovery,
    /// `upstream_poll_deadline`: how long the proxy keeps polling an upstream that
    /// closed a reply stream early (SEP-1699) without sending anything new before
    /// it answers the stream's requests with errors (default `10m`).
    pub upstream_poll_deadline: Duration,
    /// `sse_keepalive`: the interval of the comment lines that keep an idle SSE
    /// stream to a client open through load balancers (default `15s`).
    pub sse_keepalive: Duration,
    /// `worker_threads`: the async runtime's worker threads (default 1: the
    /// least CPU per call, docs/performance.md); `None` (the key set to 0) is
    /// tokio's default, one per core (or `TOKIO_WORKER_THREADS`). Read before
    /// the runtime is built ([`ProxyConfig::load`] runs outside it).
    pub worker_threads: Option<usize>,
    /// `record_stateless` and `[proxy.cache]`: the 2026-07-28 request path.
    pub modern: ModernSettings,
    /// `bridge` and `bridge_request_state_keys`: the protocol-generation bridge.
    pub bridge: BridgeSettings,
}

/// Everything the proxy needs to start: its own settings and the store's.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The `[proxy]` table.
    pub proxy: ProxySettings,
    /// The `[storage]` table (the `session-store` facade's configuration).
    pub storage: StorageConfig,
    /// The layers the settings were read from, so a hint can name where a
    /// value came from ([`source_of`](ProxyConfig::source_of)).
    layers: Figment,
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
        warn_about_unknown_env(std::env::vars().map(|(name, _)| name));
        let figment = StorageConfig::figment(path)
            .map_err(storage_error)?
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
        figment = figment.merge(ProxyFlags::of(overrides));
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
            // `focus` rather than `extract_inner`, whose error paths put the
            // root last.
            figment
                .focus(PROXY_KEY)
                .extract::<ProxySection>()
                .map_err(|error| {
                    ConfigError::new(describe_extraction_error(error, &figment, PROXY_KEY))
                })?
        } else {
            ProxySection::default()
        };
        let storage = StorageConfig::from_figment(&figment, STORAGE_KEY).map_err(storage_error)?;
        let proxy = validate(section, &storage)
            .map_err(|error| error.with_source(|key| describe_source(&figment, key)))?;
        Ok(ProxyConfig {
            proxy,
            storage,
            layers: figment,
        })
    }

    /// Where the value of the dotted `key` (`proxy.upstream`,
    /// `storage.redis.url`) came from, as configuration errors name it:
    /// `/etc/mcp-proxy.toml: proxy.upstream`, `environment variable
    /// MCP_PROXY_UPSTREAM`, `command-line override proxy.upstream` (`--upstream`),
    /// or `default`.
    pub fn source_of(&self, key: &str) -> String {
        describe_source(&self.layers, key)
    }
}

/// `[proxy]` with a placeholder upstream and the lines `extra`, parsed without
/// the environment: the tests of the modules that validate parts of `[proxy]`.
#[cfg(test)]
pub(crate) fn parse_proxy_keys(extra: &str) -> Result<ProxyConfig, ConfigError> {
    ProxyConfig::from_toml_str(
        &format!("[proxy]\nupstream = \"http://127.0.0.1:9/mcp\"\n{extra}\n"),
        &Overrides::default(),
    )
}

/// `MCP_PROXY_LISTEN` and friends, nested under `[proxy]`. Only the known keys are
/// read, so unrelated `MCP_PROXY_*` variables are not an error.
fn proxy_env() -> ProxyEnv {
    ProxyEnv(
        Env::prefixed(PROXY_ENV_PREFIX)
            .only(PROXY_KEYS)
            .map(|key| format!("{PROXY_KEY}.{key}").into()),
    )
}

/// The `MCP_PROXY_*` layer, named as the storage layer's environment is
/// ([`env_layer_metadata`]), so an error names the variable itself
/// (`environment variable MCP_PROXY_UPSTREAM`).
struct ProxyEnv(Env);

impl Provider for ProxyEnv {
    fn metadata(&self) -> Metadata {
        env_layer_metadata(PROXY_ENV_PREFIX, PROXY_KEY, "_")
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        self.0.data()
    }
}

/// The `[proxy]` flags (`--listen`, `--admin-listen`, `--upstream`): the top
/// layer, named `command-line override` as the storage flags are.
struct ProxyFlags(Dict);

impl ProxyFlags {
    fn of(overrides: &Overrides) -> Self {
        let mut proxy = Dict::new();
        for (key, value) in [
            ("listen", &overrides.listen),
            ("admin_listen", &overrides.admin_listen),
            ("upstream", &overrides.upstream),
        ] {
            if let Some(value) = value {
                proxy.insert(key.to_owned(), Value::from(value.clone()));
            }
        }
        ProxyFlags(proxy)
    }
}

impl Provider for ProxyFlags {
    fn metadata(&self) -> Metadata {
        Metadata::named("command-line override")
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        let tables = if self.0.is_empty() {
            Dict::new()
        } else {
            Dict::from([(PROXY_KEY.to_owned(), Value::from(self.0.clone()))])
        };
        Ok(Map::from([(Profile::Default, tables)]))
    }
}

/// `MCP_PROXY_*` variables that name no `[proxy]` key: not read (other tools may
/// share the prefix), but most likely a typo, so each gets a warning naming it.
/// Returns the names warned about.
fn warn_about_unknown_env(names: impl Iterator<Item = String>) -> Vec<String> {
    let unknown: Vec<String> = names
        .filter(|name| {
            name.strip_prefix(PROXY_ENV_PREFIX).is_some_and(|key| {
                !PROXY_KEYS
                    .iter()
                    .any(|known| known.eq_ignore_ascii_case(key))
            })
        })
        .collect();
    for name in &unknown {
        tracing::warn!(
            variable = %name,
            "environment variable names no [proxy] key and is ignored (a typo?); the keys are listed in docs/proxy.md"
        );
    }
    unknown
}

fn reject_unknown_tables(figment: &Figment) -> Result<(), ConfigError> {
    let data = figment
        .data()
        .map_err(|error| ConfigError::new(describe_extraction_error(error, figment, "")))?;
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

fn validate(section: ProxySection, storage: &StorageConfig) -> Result<ProxySettings, ConfigError> {
    let upstream_side = validate_upstream_side(&section)?;
    let listen: SocketAddr = section.listen.parse().map_err(|_| {
        ConfigError::value(
            "proxy.listen",
            quoted(&section.listen),
            "not a socket address such as 127.0.0.1:8080",
        )
    })?;
    let client = validate_client_side(&section.client_keys(), listen)?;
    let modern = validate_modern(section.record_stateless, &section.cache)?;
    let bridge = validate_bridge(section.bridge, &section.bridge_request_state_keys)?;
    let raw_upstream = section.upstream.ok_or_else(|| {
        ConfigError::new(
            "proxy.upstream is not set: set `upstream` in [proxy], MCP_PROXY_UPSTREAM or --upstream",
        )
    })?;
    let upstream =
        parse_http_url(&raw_upstream, "http://127.0.0.1:3000/mcp").map_err(|problem| {
            ConfigError::value("proxy.upstream", shown_url(&raw_upstream), problem)
        })?;
    if !section.endpoint_path.starts_with('/') || section.endpoint_path.len() < 2 {
        return Err(ConfigError::value(
            "proxy.endpoint_path",
            quoted(&section.endpoint_path),
            "must start with `/` and name a path, such as /mcp",
        ));
    }
    if reserved_path(&section.endpoint_path) {
        return Err(ConfigError::value(
            "proxy.endpoint_path",
            quoted(&section.endpoint_path),
            "collides with the proxy's own endpoints (/healthz, /metrics, /sessions, /.well-known)",
        ));
    }
    if section.max_body_bytes == 0 {
        return Err(ConfigError::value(
            "proxy.max_body_bytes",
            0,
            "must be at least 1",
        ));
    }
    if section.worker_threads > MAX_WORKER_THREADS {
        return Err(ConfigError::value(
            "proxy.worker_threads",
            section.worker_threads,
            format!(
                "must be at most {MAX_WORKER_THREADS} (0: one per core); more workers than cores only add wake-ups"
            ),
        ));
    }
    for (key, value) in [
        ("proxy.upstream_timeout", section.upstream_timeout),
        (
            "proxy.upstream_poll_deadline",
            section.upstream_poll_deadline,
        ),
        ("proxy.sse_keepalive", section.sse_keepalive),
    ] {
        if value.is_zero() {
            return Err(ConfigError::value(key, "\"0s\"", "must be longer than 0s"));
        }
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
        bridge,
        upstream,
        upstream_body_timeout: upstream_side.upstream_body_timeout,
        upstream_tls: upstream_side.upstream_tls,
        request_headers: upstream_side.request_headers,
        public_url: upstream_side.public_url,
        rewrite_resource_metadata: upstream_side.rewrite_resource_metadata,
        upstream_session_recovery: section.upstream_session_recovery,
        upstream_poll_deadline: section.upstream_poll_deadline,
        sse_keepalive: section.sse_keepalive,
        worker_threads: (section.worker_threads > 0).then_some(section.worker_threads),
    })
}

/// The validated upstream-side keys (TLS, header policy, OAuth metadata, long
/// replies).
struct UpstreamSide {
    upstream_body_timeout: Duration,
    upstream_tls: UpstreamTlsFiles,
    request_headers: RequestHeaderPolicy,
    public_url: Option<Url>,
    rewrite_resource_metadata: bool,
}

fn validate_upstream_side(section: &ProxySection) -> Result<UpstreamSide, ConfigError> {
    if section.upstream_body_timeout.is_zero() {
        return Err(ConfigError::value(
            "proxy.upstream_body_timeout",
            "\"0s\"",
            "must be longer than 0s",
        ));
    }
    let upstream_tls = UpstreamTlsFiles {
        ca_file: section.upstream_ca_file.clone(),
        client_cert: section.upstream_client_cert.clone(),
        client_key: section.upstream_client_key.clone(),
    };
    upstream_tls
        .check()
        .map_err(crate::upstream_tls::TlsFileError::into_config_error)?;
    let deny = section
        .request_header_deny
        .iter()
        .map(|name| {
            HeaderName::try_from(name.trim().to_ascii_lowercase()).map_err(|_| {
                ConfigError::key(
                    "proxy.request_header_deny",
                    format!("`{}` is not an HTTP header name", name.escape_debug()),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let public_url = section
        .public_url
        .as_deref()
        .map(|raw| {
            parse_http_url(raw, "https://mcp.example.com/mcp")
                .map_err(|problem| ConfigError::value("proxy.public_url", shown_url(raw), problem))
        })
        .transpose()?;
    Ok(UpstreamSide {
        upstream_body_timeout: section.upstream_body_timeout,
        upstream_tls,
        request_headers: RequestHeaderPolicy {
            deny,
            forwarded: section.forwarded_headers,
        },
        public_url,
        rewrite_resource_metadata: section.rewrite_resource_metadata,
    })
}

fn reserved_path(path: &str) -> bool {
    ["/healthz", "/metrics", "/sessions", "/.well-known"]
        .iter()
        .any(|reserved| path == *reserved || path.starts_with(&format!("{reserved}/")))
}

/// A `[storage]` error as a proxy configuration error, without a second
/// "configuration error:" before its message.
fn storage_error(error: session_store::Error) -> ConfigError {
    match error {
        session_store::Error::Config(message) => ConfigError::new(message),
        other => ConfigError::new(other.to_string()),
    }
}

/// A TOML string, for a value shown in an error.
fn quoted(text: &str) -> String {
    format!("{text:?}")
}

/// Parses an `http://` or `https://` URL written out in full (no repair of
/// `http:/host`, backslashes, tabs, spaces: see [`parse_url_as_written`]).
fn parse_http_url(raw: &str, example: &str) -> Result<Url, String> {
    parse_url_as_written(raw, &["http", "https"], example)
}

/// A URL as a config error may show it, quoted: anything up to the last `@`
/// (user name and password) left out. The text as written, not as a URL
/// parser would repair it (`http:/user:pass@host` has no host, so its password
/// would stay in the repaired form's path).
fn shown_url(raw: &str) -> String {
    match raw.rsplit_once('@') {
        Some((before, host)) => match before.split_once("://") {
            Some((scheme, _)) => quoted(&format!("{scheme}://***@{host}")),
            None => quoted(&format!("***@{host}")),
        },
        None => quoted(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_upstream_url_is_named_without_its_credentials() {
        for raw in [
            "admin:s3cret@upstream.example:8443/mcp",
            "ftp://admin:s3cret@upstream.example/mcp",
            "http://admin:s3cret@[bad/mcp",
        ] {
            let error = ProxyConfig::from_toml_str(
                &format!("[proxy]\nupstream = \"{raw}\"\n"),
                &Overrides::default(),
            )
            .unwrap_err();
            let text = error.to_string();
            assert!(text.contains("proxy.upstream"), "{raw}: {text}");
            assert!(!text.contains("s3cret"), "{raw}: {text}");
        }
    }

    #[test]
    fn a_url_not_written_scheme_slash_slash_is_refused_without_its_credentials() {
        // The URL parser would turn each into `http://h/mcp` (or drop the
        // stray character) silently.
        for (raw, problem) in [
            (
                "http:/user:s3cret@h/mcp",
                "`http:` is followed by 1 slash(es), not two",
            ),
            (
                "http:user:s3cret@h/mcp",
                "`http:` is followed by 0 slash(es), not two",
            ),
            (
                "https:///user:s3cret@h/mcp",
                "`https:` is followed by 3 slash(es), not two",
            ),
            (
                "http:\\\\user:s3cret@h\\mcp",
                "not a URL as written: backslash",
            ),
            (
                "http://user:s3cret@h/m\tcp",
                "not a URL as written: tabs or newlines",
            ),
            (
                " http://user:s3cret@h/mcp",
                "not a URL as written: leading or trailing",
            ),
        ] {
            for key in ["upstream", "public_url"] {
                let base = if key == "upstream" {
                    ""
                } else {
                    "upstream = \"http://127.0.0.1:9/mcp\"\n"
                };
                let toml = format!("[proxy]\n{base}{key} = \"{}\"\n", raw.escape_default());
                let error = ProxyConfig::from_toml_str(&toml, &Overrides::default())
                    .unwrap_err()
                    .to_string();
                assert!(error.contains(&format!("proxy.{key} = ")), "{raw}: {error}");
                assert!(error.contains(problem), "{raw}: {error}");
                assert!(
                    error.contains("expected `http://` or `https://` and a host"),
                    "{raw}: {error}"
                );
                assert!(!error.contains("s3cret"), "{raw}: {error}");
            }
        }
        for raw in [
            "HTTP://h/mcp",
            "https://user:pw@h:8443/mcp",
            "http://[::1]:3000/mcp",
        ] {
            ProxyConfig::from_toml_str(
                &format!("[proxy]\nupstream = \"{raw}\"\npublic_url = \"{raw}\"\n"),
                &Overrides::default(),
            )
            .unwrap_or_else(|error| panic!("{raw}: {error}"));
        }
    }

    #[test]
    fn proxy_errors_name_where_the_value_came_from() {
        let flag = Overrides {
            upstream: Some("http:/user:s3cret@h/mcp".into()),
            ..Overrides::default()
        };
        let error = ProxyConfig::from_toml_str("[proxy]\nupstream = \"http://a/mcp\"\n", &flag)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(
                "invalid configuration: proxy.upstream = \"***@h/mcp\" (from command-line override proxy.upstream): "
            ),
            "{error}"
        );
        for (toml, key) in [
            ("listen = \"nope\"", "proxy.listen"),
            ("upstream_timeout = \"0s\"", "proxy.upstream_timeout"),
            ("idle_timeout = \"0s\"", "proxy.idle_timeout"),
            ("max_connections = 0", "proxy.max_connections"),
            ("initialize_rate = \"5/fortnight\"", "proxy.initialize_rate"),
            ("admin_token = \"short\"", "proxy.admin_token"),
            (
                "upstream_ca_file = \"/nonexistent/ca.pem\"",
                "proxy.upstream_ca_file",
            ),
            (
                "[proxy.cache]\nmax_entry_bytes = 0",
                "proxy.cache.max_entry_bytes",
            ),
        ] {
            let toml = format!("[proxy]\nupstream = \"http://a/mcp\"\n{toml}\n");
            let error = ProxyConfig::from_toml_str(&toml, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{toml}: {error}");
            assert!(
                error.contains(&format!("(from TOML source string {key}): ")),
                "{toml}: {error}"
            );
        }
    }

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
        assert_eq!(
            config.proxy.upstream_session_recovery,
            SessionRecovery::Restore
        );
        assert_eq!(
            config.proxy.upstream_poll_deadline,
            Duration::from_secs(600)
        );
        assert_eq!(config.proxy.sse_keepalive, Duration::from_secs(15));
    }

    #[test]
    fn worker_threads_defaults_to_one_and_zero_means_one_per_core() {
        for (line, expected) in [
            ("", Some(DEFAULT_WORKER_THREADS)),
            ("worker_threads = 0", None),
            ("worker_threads = 1", Some(1)),
            ("worker_threads = 4", Some(4)),
        ] {
            let config = parse_proxy_keys(line).unwrap_or_else(|error| panic!("{line}: {error}"));
            assert_eq!(config.proxy.worker_threads, expected, "{line}");
        }
        let error = parse_proxy_keys("worker_threads = -1").unwrap_err();
        assert!(error.to_string().contains("worker_threads"), "{error}");
        // A count the system would refuse threads for is a clear error, not
        // an abort while the runtime starts (a trial's `100000`).
        let error = parse_proxy_keys("worker_threads = 100000").unwrap_err();
        assert!(
            error.to_string().contains("proxy.worker_threads")
                && error.to_string().contains("at most 256"),
            "{error}"
        );
        assert!(parse_proxy_keys("worker_threads = 256").is_ok());
    }

    #[test]
    fn stream_keys_parse_and_bad_ones_name_their_key() {
        let config = ProxyConfig::from_toml_str(
            "[proxy]\nupstream = \"http://a/mcp\"\nupstream_session_recovery = \"propagate\"\nupstream_poll_deadline = \"2m\"\nsse_keepalive = \"5s\"\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            config.proxy.upstream_session_recovery,
            SessionRecovery::Propagate
        );
        assert_eq!(
            config.proxy.upstream_poll_deadline,
            Duration::from_secs(120)
        );
        assert_eq!(config.proxy.sse_keepalive, Duration::from_secs(5));
        for (toml, key) in [
            (
                "upstream_session_recovery = \"retry\"",
                "upstream_session_recovery",
            ),
            (
                "upstream_poll_deadline = \"0s\"",
                "proxy.upstream_poll_deadline",
            ),
            ("sse_keepalive = \"0s\"", "proxy.sse_keepalive"),
        ] {
            let text = format!("[proxy]\nupstream = \"http://a/mcp\"\n{toml}\n");
            let error = ProxyConfig::from_toml_str(&text, &Overrides::default()).unwrap_err();
            assert!(error.to_string().contains(key), "{toml}: {error}");
        }
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
        // The key path reads from the root, named once, with its source, as
        // [storage] errors do (not figment's reversed `default.listen_port.proxy`).
        let message = error.to_string();
        assert!(
            message.contains("proxy.listen_port (from ")
                && message.contains("): unknown key `listen_port`"),
            "{error}"
        );
        let error = ProxyConfig::from_toml_str(
            "[proxy]\nupstream = \"http://127.0.0.1:2/mcp\"\nidle_timeout = 60\n",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("configuration: proxy.idle_timeout (from "),
            "{error}"
        );
        let error = ProxyConfig::from_toml_str(
            "[proxy]\nupstream = \"http://127.0.0.1:2/mcp\"\n[prxy]\n",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("prxy"), "{error}");
    }

    #[test]
    fn mcp_proxy_variables_naming_no_key_are_warned_about() {
        let names = [
            "MCP_PROXY_UPSTREAM",
            "MCP_PROXY_UPSTREM",
            "mcp_proxy_listen",
            "SESSION_STORE_TTL",
            "PATH",
        ];
        assert_eq!(
            warn_about_unknown_env(names.iter().map(|name| (*name).to_owned())),
            vec!["MCP_PROXY_UPSTREM".to_owned()]
        );
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
                "[proxy]\nupstream = \"http://a/mcp\"\nendpoint_path = \"/.well-known/oauth-protected-resource\"\n",
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

    #[test]
    fn the_remote_example_is_valid() {
        let config =
            ProxyConfig::from_toml_str(&example("mcp-proxy-remote.toml"), &Overrides::default())
                .unwrap();
        assert_eq!(config.proxy.upstream.scheme(), "https");
        assert!(config.proxy.rewrite_resource_metadata);
        assert!(config.proxy.public_url.is_some());
    }

    #[test]
    fn https_upstreams_are_accepted_and_other_schemes_name_the_key() {
        let config = ProxyConfig::from_toml_str(
            "[proxy]\nupstream = \"https://mcp.example.com/mcp\"\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.proxy.upstream.scheme(), "https");
        assert_eq!(config.proxy.upstream_body_timeout, Duration::from_secs(600));
        assert!(config.proxy.request_headers.forwarded);
        for upstream in ["ftp://x", "file:///tmp/mcp", "mailto:a@b"] {
            let overrides = Overrides {
                upstream: Some(upstream.into()),
                ..Overrides::default()
            };
            let error = ProxyConfig::from_toml_str("", &overrides).unwrap_err();
            assert!(error.to_string().contains("proxy.upstream"), "{error}");
        }
    }

    #[test]
    fn upstream_side_keys_are_read_and_checked() {
        let config = ProxyConfig::from_toml_str(
            r#"
            [proxy]
            upstream = "https://mcp.example.com/mcp"
            upstream_body_timeout = "45s"
            request_header_deny = ["X-Internal", "cookie"]
            forwarded_headers = false
            public_url = "https://proxy.example.com/mcp"
            rewrite_resource_metadata = true
            "#,
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.proxy.upstream_body_timeout, Duration::from_secs(45));
        assert_eq!(
            config.proxy.request_headers.deny,
            [
                HeaderName::from_static("x-internal"),
                HeaderName::from_static("cookie")
            ]
        );
        assert!(!config.proxy.request_headers.forwarded);
        assert_eq!(
            config.proxy.public_url.unwrap().as_str(),
            "https://proxy.example.com/mcp"
        );
        for (keys, named) in [
            (
                "upstream_body_timeout = \"0s\"",
                "proxy.upstream_body_timeout",
            ),
            (
                "request_header_deny = [\"bad header\"]",
                "proxy.request_header_deny",
            ),
            ("public_url = \"not a url\"", "proxy.public_url"),
            ("public_url = \"ftp://x/mcp\"", "proxy.public_url"),
            (
                "upstream_ca_file = \"/nonexistent/ca.pem\"",
                "proxy.upstream_ca_file = \"/nonexistent/ca.pem\"",
            ),
            (
                "upstream_client_key = \"/nonexistent/key.pem\"",
                "proxy.upstream_client_key",
            ),
        ] {
            let toml = format!("[proxy]\nupstream = \"https://a/mcp\"\n{keys}\n");
            let error = ProxyConfig::from_toml_str(&toml, &Overrides::default()).unwrap_err();
            assert!(error.to_string().contains(named), "{toml}: {error}");
        }
    }

    /// The list key from the environment, as docs/proxy.md shows it. (No other
    /// unit test reads the environment, so setting it here is safe.)
    #[test]
    fn request_header_deny_comes_from_the_environment_as_a_list() {
        std::env::set_var("MCP_PROXY_REQUEST_HEADER_DENY", "[x-a, X-B]");
        let figment = Figment::from(figment::providers::Serialized::default(
            "proxy.upstream",
            "http://a/mcp",
        ))
        .merge(proxy_env());
        let config = ProxyConfig::from_figment(figment, &Overrides::default());
        std::env::remove_var("MCP_PROXY_REQUEST_HEADER_DENY");
        assert_eq!(
            config.unwrap().proxy.request_headers.deny,
            [
                HeaderName::from_static("x-a"),
                HeaderName::from_static("x-b")
            ]
        );
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
