//! `RedisStore`: a [`SessionStore`](session_store_core::SessionStore) on Redis 7+
//! (standalone, cluster or sentinel, optionally TLS) through a [fred] connection
//! pool, so several MCP proxy instances share sessions and survive restarts.
//!
//! Every key of a session carries the session id as hash tag
//! (`mcp:{<id>}:meta`, `mcp:{<id>}:frames`), so a session lives in one cluster slot
//! and the operations that need a condition (create-if-absent, the revision check
//! of update, append with its counters) are single Lua scripts. The hot `touch` is
//! plain commands. Expiry is absolute (`PEXPIREAT`) and checked against the
//! store's [`Clock`](session_store_core::Clock) on every read. The full layout,
//! command list and round trips are in `docs/redis-data-model.md`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use session_store_core::{NewSession, SessionId, SessionStore, StoreSettings, SystemClock};
//! use session_store_redis::{RedisConfig, RedisStore, Topology};
//!
//! # async fn run() -> session_store_core::Result<()> {
//! let config = RedisConfig {
//!     topology: Topology::Standalone { url: "redis://127.0.0.1:6379".into() },
//!     key_prefix: "mcp".into(),
//!     ..RedisConfig::default()
//! };
//! let store = RedisStore::connect(config, StoreSettings::default(), Arc::new(SystemClock)).await?;
//! let session = store.create(NewSession::new(SessionId::random()?)).await?;
//! store.touch(&session.id).await?;
//! assert_eq!(store.get(&session.id).await?.revision, 1);
//! # Ok(())
//! # }
//! ```

mod append_key;
mod ask;
mod batch;
mod clock_skew;
mod config;
mod failure;
mod frames;
mod keys;
mod kv;
mod liveness;
mod maintenance;
mod near_cache;
mod pool_readings;
mod record;
mod retry;
mod script_reply;
mod scripts;
mod sessions;
mod store;
mod typed;
mod write_back;

pub use append_key::{AppendKey, AppendKeys, REMEMBERED_APPEND_KEYS};
pub use config::{RedisConfig, Topology};
pub use frames::MAX_FRAMES_PER_READ;
pub use store::RedisStore;
pub use write_back::{KeyedFrame, SessionWriteBack, WriteBackReport};
