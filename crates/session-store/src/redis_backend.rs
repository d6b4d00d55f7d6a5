//! The `redis` branch of [`build`](crate::build): maps `[storage.redis]` onto the
//! Redis backend's [`RedisConfig`], connects, and wraps the store in a
//! [`FallbackStore`] when `fallback_to_memory` is set. With the fallback, Redis
//! unreachable at start is an outage like any other: the store starts with its
//! breaker open and connects in the background. Without it, the store logs
//! when Redis stops answering and when it answers again (`reachability`).

use std::sync::Arc;

use session_store_core::{Clock, Error, Result, SessionStore};
use session_store_redis::{RedisConfig, RedisStore, Topology};

use crate::{
    config::{BreakerSection, RedisSection},
    fallback::DeferredRedis,
    reachability::LoggedReachability,
    FallbackSettings, FallbackStore, StorageConfig,
};

/// Connects the Redis backend described by `config.redis`, behind a
/// [`FallbackStore`] when `fallback_to_memory` is set.
///
/// Errors: as [`RedisStore::connect`]. With `fallback_to_memory`, Redis
/// unreachable (Unavailable) is no error: the store is returned with its
/// breaker open, serving from memory, and its probe connects once Redis answers
/// (then the journal is written back as after any outage).
pub(crate) async fn build_redis(
    config: &StorageConfig,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn SessionStore>> {
    let redis = redis_config(&config.redis);
    let connected = RedisStore::connect(redis.clone(), config.settings(), clock.clone()).await;
    if !config.redis.fallback_to_memory {
        // Nothing else would log an outage: one line when calls start failing,
        // one when Redis answers again.
        return Ok(Arc::new(LoggedReachability::new(connected?)));
    }
    let fallback = fallback_settings(&config.redis.breaker);
    match connected {
        Ok(store) => Ok(Arc::new(FallbackStore::new(
            store,
            config.settings(),
            fallback,
            clock,
        )?)),
        Err(error @ Error::Unavailable(_)) => {
            let primary = DeferredRedis::new(redis, config.settings(), clock.clone());
            let store = FallbackStore::new(primary, config.settings(), fallback, clock)?;
            store.open_breaker(&error);
            Ok(Arc::new(store))
        }
        Err(error) => Err(error),
    }
}

/// The breaker settings for `[storage.redis.breaker]`.
pub fn fallback_settings(section: &BreakerSection) -> FallbackSettings {
    FallbackSettings {
        failure_threshold: section.failure_threshold,
        cool_down: section.cool_down,
        remembered_sessions: section.remembered_sessions,
        journal_max_bytes: section.journal_max_bytes,
        outage_id_grace: section.outage_id_grace,
        journal_dir: section.journal_dir.clone(),
    }
}

/// The backend's connection settings for `[storage.redis]`. Cluster wins over
/// sentinel, which wins over `url` (validation rejects cluster and sentinel together).
pub fn redis_config(section: &RedisSection) -> RedisConfig {
    let urls = |nodes: &[crate::config::RedisUrl]| -> Vec<String> {
        nodes.iter().map(|node| node.as_str().to_owned()).collect()
    };
    let topology = match (&section.cluster, &section.sentinel) {
        (Some(cluster), _) => Topology::Cluster {
            nodes: urls(&cluster.nodes),
        },
        (None, Some(sentinel)) => Topology::Sentinel {
            service_name: sentinel.service_name.clone(),
            nodes: urls(&sentinel.nodes),
        },
        (None, None) => Topology::Standalone {
            url: section.url.as_str().to_owned(),
        },
    };
    RedisConfig {
        topology,
        username: section.username.clone(),
        password: section
            .password
            .as_ref()
            .map(|secret| secret.expose().to_owned()),
        tls: section.tls,
        pool_size: section.pool_size,
        connect_timeout: section.connect_timeout,
        command_timeout: section.command_timeout,
        reconnect_min_delay: section.reconnect_min_delay,
        reconnect_max_delay: section.reconnect_max_delay,
        reconnect_max_attempts: section.reconnect_max_attempts,
        key_prefix: section.key_prefix.clone(),
        index_shards: section.index_shards,
        wait_for_replicas: section.wait_for_replicas,
        replica_wait_timeout: section.replica_wait_timeout,
        near_cache_entries: section.near_cache_entries,
        near_cache_max_age: section.near_cache_max_age,
    }
}
