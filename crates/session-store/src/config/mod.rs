//! `[storage]` configuration: what it holds, its defaults, and how it maps onto the
//! core's [`StoreSettings`].
//!
//! Loading (figment layers) lives in `load`, naming where a value came from in
//! `origin`, semantic checks in `validate`. Every struct rejects unknown keys, and
//! every field has a default, so an empty `[storage]` table is a working memory store.

mod load;
pub(crate) mod origin;
pub use origin::{describe_extraction_error, describe_source};
pub(crate) mod validate;
mod values;

use std::time::Duration;

use serde::Deserialize;
use session_store_core::StoreSettings;

pub use load::{
    env_layer_metadata, StorageEnv, StorageOverrides, ENV_PREFIX, ENV_SEPARATOR, STORAGE_KEY,
};
pub use values::{parse_url_as_written, RedisUrl, Secret};

/// Which backend [`build`](crate::build) creates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process storage (cargo feature `memory`, on by default).
    #[default]
    Memory,
    /// Redis standalone, cluster or sentinel (cargo feature `redis`).
    Redis,
}

impl Backend {
    /// The name used in configuration files: `memory` or `redis`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
        }
    }
}

/// The `[storage]` table: backend choice, expiry and size policy, and one sub-table
/// per backend. See `docs/configuration.md` for every key and its environment
/// variable.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `backend`: `"memory"` (default) or `"redis"`.
    pub backend: Backend,
    /// `ttl`: idle time after which a session expires (default `"24h"`).
    #[serde(deserialize_with = "values::duration")]
    pub ttl: Duration,
    /// `max_lifetime`: absolute cap from creation (default `"7d"`); the string
    /// `"none"` removes the cap.
    #[serde(deserialize_with = "values::duration_or_none")]
    pub max_lifetime: Option<Duration>,
    /// `max_frames_per_session`: frames kept per session (default 10000).
    pub max_frames_per_session: u64,
    /// `max_frame_bytes`: largest frame accepted (default 4 MiB).
    pub max_frame_bytes: usize,
    /// `max_session_bytes`: largest encoded session metadata (default 64 KiB).
    pub max_session_bytes: usize,
    /// `max_kv_value_bytes`: largest small keyed value (leases, cache entries;
    /// default 64 KiB).
    pub max_kv_value_bytes: usize,
    /// `max_session_frame_bytes`: bytes of frames kept per session, the oldest
    /// trimmed first (default 64 MiB; at least `max_frame_bytes`).
    pub max_session_frame_bytes: u64,
    /// `max_read_bytes`: bytes of frames one read page holds at most, but at
    /// least one frame (default 16 MiB).
    pub max_read_bytes: usize,
    /// `purge_interval`: how often the purge task removes expired sessions
    /// (default `"60s"`).
    #[serde(deserialize_with = "values::duration")]
    pub purge_interval: Duration,
    /// `[storage.memory]`.
    pub memory: MemorySection,
    /// `[storage.redis]`.
    pub redis: RedisSection,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let policy = StoreSettings::default();
        StorageConfig {
            backend: Backend::Memory,
            ttl: policy.ttl,
            max_lifetime: policy.max_lifetime,
            max_frames_per_session: policy.max_frames_per_session,
            max_frame_bytes: policy.max_frame_bytes,
            max_session_bytes: policy.max_session_bytes,
            max_kv_value_bytes: policy.max_kv_value_bytes,
            max_session_frame_bytes: policy.max_session_frame_bytes,
            max_read_bytes: policy.max_read_bytes,
            purge_interval: Duration::from_secs(60),
            memory: MemorySection::default(),
            redis: RedisSection::default(),
        }
    }
}

impl StorageConfig {
    /// The expiry and size policy every backend enforces.
    pub fn settings(&self) -> StoreSettings {
        StoreSettings {
            ttl: self.ttl,
            max_lifetime: self.max_lifetime,
            max_frames_per_session: self.max_frames_per_session,
            max_frame_bytes: self.max_frame_bytes,
            max_session_bytes: self.max_session_bytes,
            max_kv_value_bytes: self.max_kv_value_bytes,
            max_session_frame_bytes: self.max_session_frame_bytes,
            max_read_bytes: self.max_read_bytes,
        }
    }
}

/// The `[storage.memory]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemorySection {
    /// `max_sessions`: refuse new sessions beyond this many (default: no cap).
    pub max_sessions: Option<usize>,
    /// `shards`: lock shards of the session map, a power of two from 1 to 4096
    /// (default 64).
    pub shards: usize,
}

impl Default for MemorySection {
    fn default() -> Self {
        MemorySection {
            max_sessions: None,
            shards: 64,
        }
    }
}

/// The `[storage.redis]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSection {
    /// `url`: the standalone server (default `redis://127.0.0.1:6379`); ignored
    /// when `[storage.redis.cluster]` or `[storage.redis.sentinel]` is set.
    pub url: RedisUrl,
    /// `username`: ACL user (default: none).
    #[serde(deserialize_with = "values::optional_string_like")]
    pub username: Option<String>,
    /// `password`: ACL or `requirepass` password (default: none). Never printed.
    pub password: Option<Secret>,
    /// `tls`: connect with TLS (default false; a `rediss://` URL implies it).
    pub tls: bool,
    /// `pool_size`: connections in the pool (default 8, at least 1).
    pub pool_size: usize,
    /// `connect_timeout`: per connection attempt (default `"5s"`).
    #[serde(deserialize_with = "values::duration")]
    pub connect_timeout: Duration,
    /// `command_timeout`: per command, after which it is Unavailable (default `"1s"`).
    #[serde(deserialize_with = "values::duration")]
    pub command_timeout: Duration,
    /// `reconnect_min_delay`: first reconnect backoff (default `"100ms"`).
    #[serde(deserialize_with = "values::duration")]
    pub reconnect_min_delay: Duration,
    /// `reconnect_max_delay`: backoff ceiling (default `"10s"`).
    #[serde(deserialize_with = "values::duration")]
    pub reconnect_max_delay: Duration,
    /// `reconnect_max_attempts`: give up after this many (default 0 = never).
    pub reconnect_max_attempts: u32,
    /// `key_prefix`: first part of every key (default `"mcp"`; no braces or
    /// whitespace, because braces would break the per-session hash tag).
    #[serde(deserialize_with = "values::string_like")]
    pub key_prefix: String,
    /// `index_shards`: buckets of the expiry index (default 16, at least 1).
    pub index_shards: u16,
    /// `fallback_to_memory`: serve from memory while Redis is down (default false).
    pub fallback_to_memory: bool,
    /// `wait_for_replicas`: replicas a write waits for (`WAIT`; default 0).
    pub wait_for_replicas: u32,
    /// `replica_wait_timeout`: how long a write waits for those replicas
    /// (default `"500ms"`; must be shorter than `command_timeout`).
    #[serde(deserialize_with = "values::duration")]
    pub replica_wait_timeout: Duration,
    /// `near_cache_entries`: sessions kept in this instance's near cache,
    /// dropped on Redis's invalidation (RESP3 client tracking; default 0 = off;
    /// standalone and sentinel only).
    pub near_cache_entries: usize,
    /// `near_cache_max_age`: longest a cached session is served without
    /// reading Redis (default `"10s"`, at least 1ms).
    #[serde(deserialize_with = "values::duration")]
    pub near_cache_max_age: Duration,
    /// `[storage.redis.cluster]`: connect to a Redis Cluster instead of `url`.
    pub cluster: Option<ClusterSection>,
    /// `[storage.redis.sentinel]`: discover the primary through Sentinel.
    pub sentinel: Option<SentinelSection>,
    /// `[storage.redis.breaker]`: the circuit breaker of `fallback_to_memory`.
    pub breaker: BreakerSection,
}

impl Default for RedisSection {
    fn default() -> Self {
        RedisSection {
            url: RedisUrl::default(),
            username: None,
            password: None,
            tls: false,
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(1),
            reconnect_min_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(10),
            reconnect_max_attempts: 0,
            key_prefix: "mcp".to_owned(),
            index_shards: 16,
            fallback_to_memory: false,
            wait_for_replicas: 0,
            replica_wait_timeout: Duration::from_millis(500),
            near_cache_entries: 0,
            near_cache_max_age: Duration::from_secs(10),
            cluster: None,
            sentinel: None,
            breaker: BreakerSection::default(),
        }
    }
}

impl RedisSection {
    /// Where the store connects, without credentials, for log lines:
    /// `127.0.0.1:6379`, `cluster 10.0.0.1:7000, 10.0.0.2:7000` or
    /// `sentinel service mymaster via 10.0.0.1:26379`.
    pub fn addresses(&self) -> String {
        let join = |nodes: &[RedisUrl]| {
            nodes
                .iter()
                .map(RedisUrl::address)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (&self.cluster, &self.sentinel) {
            (Some(cluster), _) => format!("cluster {}", join(&cluster.nodes)),
            (None, Some(sentinel)) => format!(
                "sentinel service {} via {}",
                sentinel.service_name,
                join(&sentinel.nodes)
            ),
            (None, None) => self.url.address(),
        }
    }

    /// Whether connections use TLS: `tls = true` or a `rediss://` address.
    pub fn tls_enabled(&self) -> bool {
        self.tls
            || self.url.is_tls()
            || self
                .cluster
                .iter()
                .flat_map(|c| &c.nodes)
                .any(RedisUrl::is_tls)
            || self
                .sentinel
                .iter()
                .flat_map(|s| &s.nodes)
                .any(RedisUrl::is_tls)
    }
}

/// The `[storage.redis.cluster]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// `nodes`: seed nodes, `redis://` or `rediss://` (at least one).
    pub nodes: Vec<RedisUrl>,
}

/// The `[storage.redis.sentinel]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelSection {
    /// `service_name`: the monitored primary's name.
    #[serde(deserialize_with = "values::string_like")]
    pub service_name: String,
    /// `nodes`: sentinel addresses, `redis://` or `rediss://` (at least one).
    pub nodes: Vec<RedisUrl>,
}

/// The `[storage.redis.breaker]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSection {
    /// `failure_threshold`: consecutive failures that open the breaker (default 5).
    pub failure_threshold: u32,
    /// `cool_down`: time open before a trial call (default `"5s"`).
    #[serde(deserialize_with = "values::duration")]
    pub cool_down: Duration,
    /// `remembered_sessions`: recently used sessions kept in memory so they can
    /// be served while Redis is unreachable (default 100000).
    pub remembered_sessions: usize,
    /// `journal_max_bytes`: most bytes the outage journal holds; beyond it
    /// writes are Unavailable (default 268435456, 256 MiB).
    pub journal_max_bytes: u64,
    /// `outage_id_grace`: how long after its mint time a fallback-minted session
    /// id missing in Redis is answered Unavailable rather than NotFound
    /// (default `"10m"`).
    #[serde(deserialize_with = "values::duration")]
    pub outage_id_grace: Duration,
    /// `journal_dir`: keep the outage journal on local disk there too (fsynced
    /// before acknowledging, replayed at start); unset: memory only.
    pub journal_dir: Option<std::path::PathBuf>,
}

impl Default for BreakerSection {
    fn default() -> Self {
        BreakerSection {
            failure_threshold: 5,
            cool_down: Duration::from_secs(5),
            remembered_sessions: 100_000,
            journal_max_bytes: 256 * 1024 * 1024,
            outage_id_grace: Duration::from_secs(600),
            journal_dir: None,
        }
    }
}
