//! Turning a [`StorageConfig`] into a running `Arc<dyn SessionStore>`.

use std::sync::Arc;

use session_store_core::{Clock, Result, SessionStore, SystemClock};

use crate::{config::Backend, StorageConfig};

/// Builds the store `config` describes, reading time from the system clock.
///
/// Errors: [`Error::Config`](crate::Error::Config) when the configuration is
/// invalid or names a backend whose cargo feature is off;
/// [`Error::Unavailable`](crate::Error::Unavailable) when a server-backed store
/// cannot connect.
pub async fn build(config: &StorageConfig) -> Result<Arc<dyn SessionStore>> {
    build_with_clock(config, Arc::new(SystemClock)).await
}

/// As [`build`], reading time from `clock` (a
/// [`ManualClock`](crate::ManualClock) in tests).
pub async fn build_with_clock(
    config: &StorageConfig,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn SessionStore>> {
    config.validate()?;
    match config.backend {
        Backend::Memory => build_memory(config, clock),
        Backend::Redis => build_redis(config, clock).await,
    }
}

#[cfg(feature = "memory")]
fn build_memory(config: &StorageConfig, clock: Arc<dyn Clock>) -> Result<Arc<dyn SessionStore>> {
    let mut builder = session_store_memory::MemoryStore::builder()
        .settings(config.settings())
        .shards(config.memory.shards)
        .clock(clock);
    if let Some(cap) = config.memory.max_sessions {
        builder = builder.max_sessions(cap);
    }
    Ok(Arc::new(builder.build()?))
}

#[cfg(not(feature = "memory"))]
fn build_memory(_config: &StorageConfig, _clock: Arc<dyn Clock>) -> Result<Arc<dyn SessionStore>> {
    Err(missing_feature(Backend::Memory))
}

#[cfg(feature = "redis")]
async fn build_redis(
    config: &StorageConfig,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn SessionStore>> {
    crate::redis_backend::build_redis(config, clock).await
}

#[cfg(not(feature = "redis"))]
async fn build_redis(
    _config: &StorageConfig,
    _clock: Arc<dyn Clock>,
) -> Result<Arc<dyn SessionStore>> {
    Err(missing_feature(Backend::Redis))
}

/// Unreachable after `validate`, which reports the same; kept so `build` never
/// depends on that ordering.
#[cfg(not(all(feature = "memory", feature = "redis")))]
fn missing_feature(backend: Backend) -> crate::Error {
    crate::Error::config(crate::config::validate::backend_feature_message(
        backend,
        &crate::config::origin::CodeOrigins,
    ))
}
