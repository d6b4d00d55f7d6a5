//! The whole conformance suite against a Redis store made by `build_with_clock` from
//! configuration, so `[storage.redis]` -> `RedisConfig` is checked end to end
//! (`TEST_REDIS_URL`, set by `cargo xtask integration`).
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use async_trait::async_trait;
use session_store::{
    build_with_clock, Backend, ManualClock, RedisUrl, SessionId, SessionStore, StorageConfig,
    StoreSettings,
};
use session_store_core::testing::StoreFactory;

/// Builds Redis stores through the facade's configuration path, each under a fresh
/// key prefix so they share nothing.
struct FacadeRedisFactory;

#[async_trait]
impl StoreFactory for FacadeRedisFactory {
    async fn build(&self, clock: ManualClock, settings: StoreSettings) -> Arc<dyn SessionStore> {
        let url = std::env::var("TEST_REDIS_URL")
            .expect("set TEST_REDIS_URL to a redis:// URL (cargo xtask integration does)");
        let mut config = StorageConfig {
            backend: Backend::Redis,
            ttl: settings.ttl,
            max_lifetime: settings.max_lifetime,
            max_frames_per_session: settings.max_frames_per_session,
            max_frame_bytes: settings.max_frame_bytes,
            max_session_bytes: settings.max_session_bytes,
            max_kv_value_bytes: settings.max_kv_value_bytes,
            max_session_frame_bytes: settings.max_session_frame_bytes,
            max_read_bytes: settings.max_read_bytes,
            ..StorageConfig::default()
        };
        config.redis.url = RedisUrl::new(url);
        config.redis.pool_size = 1;
        config.redis.key_prefix = format!("facade-{}", SessionId::random().unwrap());
        build_with_clock(&config, Arc::new(clock)).await.unwrap()
    }

    /// The append script trims exactly.
    fn frame_trim_slack(&self) -> u64 {
        0
    }
}

session_store_core::conformance_tests!(
    #[ignore = "needs Redis: cargo xtask integration"]
    FacadeRedisFactory
);
