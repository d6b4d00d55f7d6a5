//! Checks serde cannot express (zero sizes, URL schemes, key prefixes, backends
//! whose cargo feature is off), each reported with the key and its source.

use std::{fmt, time::Duration};

use session_store_core::{Error, Result};

use super::{origin::Origins, Backend, RedisUrl, StorageConfig};

/// The memory backend's shard limit, repeated here so the check (and its message
/// naming the source) works whether or not the `memory` feature is compiled in.
const MAX_MEMORY_SHARDS: usize = 4096;

/// Collects every problem, so one run reports them all.
struct Problems<'a> {
    origins: &'a dyn Origins,
    found: Vec<String>,
}

impl Problems<'_> {
    fn push(&mut self, relative: &str, value: impl fmt::Display, problem: &str) {
        let key = self.origins.key(relative);
        let source = self.origins.source(relative);
        self.found
            .push(format!("{key} = {value} (from {source}): {problem}"));
    }

    /// For values that may hold credentials: the value is not repeated.
    fn push_hidden(&mut self, relative: &str, problem: &str) {
        let key = self.origins.key(relative);
        let source = self.origins.source(relative);
        self.found.push(format!("{key} (from {source}): {problem}"));
    }

    fn at_least_one(&mut self, relative: &str, value: u64) {
        if value == 0 {
            self.push(relative, value, "must be at least 1");
        }
    }

    fn positive_duration(&mut self, relative: &str, value: Duration) {
        if value.as_millis() == 0 {
            self.push(
                relative,
                format!("\"{}\"", humantime::format_duration(value)),
                "must be at least 1ms",
            );
        }
    }

    fn redis_url(&mut self, relative: &str, url: &RedisUrl) {
        if let Err(problem) = url.parse() {
            self.push_hidden(relative, &problem);
        }
    }

    fn redis_nodes(&mut self, relative: &str, nodes: &[RedisUrl]) {
        if nodes.is_empty() {
            self.push_hidden(relative, "must list at least one node");
        }
        for (index, node) in nodes.iter().enumerate() {
            if let Err(problem) = node.parse() {
                self.push_hidden(relative, &format!("node {index}: {problem}"));
            }
        }
    }
}

/// Every semantic problem of `config`, as one [`Error::Config`].
pub(crate) fn validate(config: &StorageConfig, origins: &dyn Origins) -> Result<()> {
    let mut problems = Problems {
        origins,
        found: Vec::new(),
    };
    check_backend_feature(config.backend, &mut problems);

    problems.positive_duration("ttl", config.ttl);
    if let Some(cap) = config.max_lifetime {
        problems.positive_duration("max_lifetime", cap);
    }
    problems.at_least_one("max_frames_per_session", config.max_frames_per_session);
    problems.at_least_one("max_frame_bytes", widen(config.max_frame_bytes));
    problems.at_least_one("max_session_bytes", widen(config.max_session_bytes));
    problems.at_least_one("max_kv_value_bytes", widen(config.max_kv_value_bytes));
    if config.max_session_frame_bytes < widen(config.max_frame_bytes) {
        problems.push(
            "max_session_frame_bytes",
            config.max_session_frame_bytes,
            &format!(
                "must be at least max_frame_bytes ({}), so the newest frame always fits",
                config.max_frame_bytes
            ),
        );
    }
    problems.at_least_one("max_read_bytes", widen(config.max_read_bytes));
    problems.positive_duration("purge_interval", config.purge_interval);

    let shards = config.memory.shards;
    if !shards.is_power_of_two() || shards > MAX_MEMORY_SHARDS {
        problems.push(
            "memory.shards",
            shards,
            &format!("must be a power of two from 1 to {MAX_MEMORY_SHARDS}"),
        );
    }
    if let Some(cap) = config.memory.max_sessions {
        problems.at_least_one("memory.max_sessions", widen(cap));
    }

    let redis = &config.redis;
    problems.redis_url("redis.url", &redis.url);
    problems.at_least_one("redis.pool_size", widen(redis.pool_size));
    problems.positive_duration("redis.connect_timeout", redis.connect_timeout);
    problems.positive_duration("redis.command_timeout", redis.command_timeout);
    problems.positive_duration("redis.reconnect_min_delay", redis.reconnect_min_delay);
    if redis.reconnect_min_delay > redis.reconnect_max_delay {
        let max_source = origins.source("redis.reconnect_max_delay");
        problems.push(
            "redis.reconnect_min_delay",
            format!(
                "\"{}\"",
                humantime::format_duration(redis.reconnect_min_delay)
            ),
            &format!(
                "must not exceed {} = \"{}\" (from {max_source})",
                origins.key("redis.reconnect_max_delay"),
                humantime::format_duration(redis.reconnect_max_delay)
            ),
        );
    }
    check_key_prefix(&redis.key_prefix, &mut problems);
    problems.at_least_one("redis.index_shards", u64::from(redis.index_shards));
    if let Some(cluster) = &redis.cluster {
        problems.redis_nodes("redis.cluster.nodes", &cluster.nodes);
    }
    if let Some(sentinel) = &redis.sentinel {
        if sentinel.service_name.trim().is_empty() {
            problems.push(
                "redis.sentinel.service_name",
                "\"\"",
                "must name the monitored primary",
            );
        }
        problems.redis_nodes("redis.sentinel.nodes", &sentinel.nodes);
    }
    if redis.near_cache_entries > 0 {
        problems.positive_duration("redis.near_cache_max_age", redis.near_cache_max_age);
        if redis.cluster.is_some() {
            problems.push(
                "redis.near_cache_entries",
                redis.near_cache_entries,
                &format!(
                    "must be 0 with [{}] (from {}): the near cache relies on CLIENT TRACKING, \
                     which the Redis client does not turn on for the connections it opens to a \
                     slot's new owner",
                    origins.key("redis.cluster"),
                    origins.source("redis.cluster")
                ),
            );
        }
    }
    if redis.cluster.is_some() && redis.sentinel.is_some() {
        problems.push_hidden(
            "redis.sentinel",
            &format!(
                "cannot be combined with [{}] (from {}); configure one of them",
                origins.key("redis.cluster"),
                origins.source("redis.cluster")
            ),
        );
    }
    if redis.wait_for_replicas > 0 {
        problems.positive_duration("redis.replica_wait_timeout", redis.replica_wait_timeout);
        if redis.replica_wait_timeout >= redis.command_timeout {
            problems.push(
                "redis.replica_wait_timeout",
                format!(
                    "\"{}\"",
                    humantime::format_duration(redis.replica_wait_timeout)
                ),
                &format!(
                    "must be shorter than {} = \"{}\" (from {}): the write and its WAIT share one command timeout",
                    origins.key("redis.command_timeout"),
                    humantime::format_duration(redis.command_timeout),
                    origins.source("redis.command_timeout")
                ),
            );
        }
    }
    problems.at_least_one(
        "redis.breaker.failure_threshold",
        u64::from(redis.breaker.failure_threshold),
    );
    problems.positive_duration("redis.breaker.cool_down", redis.breaker.cool_down);
    problems.at_least_one(
        "redis.breaker.journal_max_bytes",
        redis.breaker.journal_max_bytes,
    );

    if problems.found.is_empty() {
        Ok(())
    } else {
        Err(Error::config(problems.found.join("; ")))
    }
}

fn widen(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

fn check_key_prefix(prefix: &str, problems: &mut Problems<'_>) {
    let shown = format!("{prefix:?}");
    if prefix.is_empty() {
        problems.push("redis.key_prefix", shown, "must not be empty");
    } else if prefix.contains(['{', '}']) {
        problems.push(
            "redis.key_prefix",
            shown,
            "must not contain `{` or `}`: they would break the per-session hash tag",
        );
    } else if prefix.chars().any(char::is_whitespace) {
        problems.push("redis.key_prefix", shown, "must not contain whitespace");
    }
}

/// A backend whose cargo feature is off is a configuration error, found before any
/// connection is attempted.
fn check_backend_feature(backend: Backend, problems: &mut Problems<'_>) {
    let enabled = match backend {
        Backend::Memory => cfg!(feature = "memory"),
        Backend::Redis => cfg!(feature = "redis"),
    };
    if !enabled {
        problems
            .found
            .push(backend_feature_message(backend, problems.origins));
    }
}

/// `storage.backend = "redis" (from <source>) needs the `redis` feature ...`.
pub(crate) fn backend_feature_message(backend: Backend, origins: &dyn Origins) -> String {
    let name = backend.as_str();
    format!(
        "{} = \"{name}\" (from {}) needs the `{name}` feature of the session-store crate: \
         cargo add session-store --features {name}",
        origins.key("backend"),
        origins.source("backend"),
    )
}
