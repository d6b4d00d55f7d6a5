//! The stores of the fault tests: a Redis configuration with short timeouts
//! and a fast breaker, and the Redis and fallback stores built from it.
#![allow(clippy::unwrap_used, dead_code)]

use std::{sync::Arc, time::Duration};

use session_store::{
    fallback_settings, redis_config, Backend, FallbackStore, RedisStore, RedisUrl, SessionId,
    StorageConfig, SystemClock,
};

/// Redis at `url` under a fresh key prefix, pool of 4, reconnects within
/// 20-200 ms, breaker threshold 3 and cool-down 300 ms.
pub fn config(url: &str, fallback: bool, command_timeout: Duration) -> StorageConfig {
    let mut config = StorageConfig {
        backend: Backend::Redis,
        ..StorageConfig::default()
    };
    config.redis.url = RedisUrl::new(url);
    config.redis.pool_size = 4;
    config.redis.command_timeout = command_timeout;
    config.redis.connect_timeout = Duration::from_secs(2);
    config.redis.reconnect_min_delay = Duration::from_millis(20);
    config.redis.reconnect_max_delay = Duration::from_millis(200);
    config.redis.key_prefix = format!("fault-{}", SessionId::random().unwrap());
    config.redis.fallback_to_memory = fallback;
    config.redis.breaker.failure_threshold = 3;
    config.redis.breaker.cool_down = Duration::from_millis(300);
    config
}

pub async fn redis_store(config: &StorageConfig) -> RedisStore {
    RedisStore::connect(
        redis_config(&config.redis),
        config.settings(),
        Arc::new(SystemClock),
    )
    .await
    .unwrap()
}

pub async fn fallback_store(config: &StorageConfig) -> Arc<FallbackStore> {
    Arc::new(
        FallbackStore::new(
            redis_store(config).await,
            config.settings(),
            fallback_settings(&config.redis.breaker),
            Arc::new(SystemClock),
        )
        .unwrap(),
    )
}

/// The `seq` of a load payload `{"task":T,"seq":N}`.
pub fn payload_seq(payload: &[u8]) -> u64 {
    String::from_utf8_lossy(payload)
        .rsplit_once("\"seq\":")
        .and_then(|(_, rest)| rest.trim_end_matches('}').parse().ok())
        .unwrap()
}
