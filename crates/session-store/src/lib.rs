//! Pluggable session storage for MCP proxies: one [`StorageConfig`] picks the
//! backend, [`build`] turns it into an `Arc<dyn SessionStore>`, [`PurgeTask`] keeps
//! expired sessions from piling up.
//!
//! The memory backend (feature `memory`, on by default) needs no service; the
//! Redis backend (feature `redis`) shares sessions between proxy instances, and
//! with `fallback_to_memory = true` keeps serving through a Redis outage
//! (`FallbackStore`, feature `redis`; `docs/operations.md`).
//! Configuration is layered: defaults < TOML file < `SESSION_STORE_*`
//! environment variables < command-line overrides; every invalid value is an
//! [`Error::Config`] naming the key and where it came from. `docs/configuration.md`
//! lists every key.
//!
//! ```
//! use session_store::prelude::*;
//! use session_store::{build, NewSession, SessionId, StorageConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_store::Result<()> {
//! let config = StorageConfig::from_toml_str(
//!     r#"
//!     [storage]
//!     backend = "memory"
//!     ttl = "30m"
//!     max_frames_per_session = 500
//!     "#,
//! )?;
//! let store = build(&config).await?;
//!
//! let id = SessionId::random()?;
//! let session = store.create(NewSession::new(id.clone())).await?;
//! assert_eq!(session.revision, 1);
//! store.touch(&id).await?;
//! assert_eq!(store.count().await?, 1);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod build;
mod config;
#[cfg(feature = "redis")]
pub mod fallback;
mod purge;
#[cfg(feature = "redis")]
mod reachability;
#[cfg(feature = "redis")]
mod redis_backend;

#[doc(inline)]
pub use session_store_core::Error;
pub use session_store_core::{
    codec, duration_millis, expiry_after_activity, Clock, Cursor, Direction, Frame, FrameGap,
    FrameId, FramePage, Health, KvCondition, KvEntry, KvKey, KvPut, ManualClock, NewSession, Page,
    Result, Session, SessionId, SessionStatus, SessionStore, StoreSettings, StoredFrame,
    SystemClock, Timestamp, Transport, MAX_KV_KEY_LEN, MAX_PAGE_SIZE, MAX_SESSION_ID_LEN,
};

#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use session_store_memory::MemoryStore;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use session_store_redis::{
    AppendKey, AppendKeys, KeyedFrame, RedisConfig, RedisStore, SessionWriteBack, Topology,
    WriteBackReport,
};

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_backend::{fallback_settings, redis_config};

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use fallback::{BreakerState, FallbackPrimary, FallbackSettings, FallbackStats, FallbackStore};

pub use build::{build, build_with_clock};
pub use config::{
    describe_extraction_error, describe_source, env_layer_metadata, parse_url_as_written, Backend,
    BreakerSection, ClusterSection, MemorySection, RedisSection, RedisUrl, Secret, SentinelSection,
    StorageConfig, StorageEnv, StorageOverrides, ENV_PREFIX, ENV_SEPARATOR, STORAGE_KEY,
};
pub use purge::PurgeTask;

/// The traits a user of a store imports: `use session_store::prelude::*;`.
pub mod prelude {
    pub use session_store_core::{Clock, SessionStore};
}
