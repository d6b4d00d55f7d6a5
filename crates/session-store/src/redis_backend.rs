//! The `redis` branch of [`build`](crate::build): maps `[storage.redis]` onto the
//! Redis backend and connects.

use std::sync::Arc;

use session_store_core::{Clock, Error, Result, SessionStore};

use crate::StorageConfig;

/// Connects the Redis backend described by `config.redis`.
///
/// Not wired yet: the Redis crate's `RedisStore::connect(RedisConfig,
/// StoreSettings, Arc<dyn Clock>)` is being written; until it lands this returns a
/// configuration error rather than a store that does not work.
pub(crate) async fn build_redis(
    config: &StorageConfig,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn SessionStore>> {
    let _ = (config.settings(), clock);
    Err(Error::config(
        "storage.backend = \"redis\": the Redis backend is not yet wired into the session-store facade",
    ))
}
