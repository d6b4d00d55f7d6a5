//! The whole conformance suite against a memory store made by `build_with_clock`,
//! so the facade's mapping from configuration to store is checked end to end.
#![cfg(feature = "memory")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use async_trait::async_trait;
use session_store::{
    build_with_clock, Backend, ManualClock, SessionStore, StorageConfig, StoreSettings,
};
use session_store_core::testing::StoreFactory;

/// Builds memory stores through the facade's configuration path.
struct FacadeMemoryFactory;

#[async_trait]
impl StoreFactory for FacadeMemoryFactory {
    async fn build(&self, clock: ManualClock, settings: StoreSettings) -> Arc<dyn SessionStore> {
        let config = StorageConfig {
            backend: Backend::Memory,
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
        assert_eq!(config.settings(), settings);
        build_with_clock(&config, Arc::new(clock)).await.unwrap()
    }
}

session_store_core::conformance_tests!(FacadeMemoryFactory);
