//! `MemoryStore`: the default [`SessionStore`](session_store_core::SessionStore)
//! backend, keeping MCP sessions and their frames in this process.
//!
//! Use it when one proxy instance serves its clients alone; sessions die with the
//! process. It needs no external service, enforces the same [`StoreSettings`]
//! policy as every backend (TTL, max lifetime, frame limits) and passes the same
//! conformance suite.
//!
//! ```
//! use session_store_core::{Direction, Frame, NewSession, SessionId, SessionStore, StoreSettings};
//! use session_store_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_store_core::Result<()> {
//! let store = MemoryStore::new(StoreSettings::default())?;
//! let id = SessionId::random()?;
//! let session = store.create(NewSession::new(id.clone())).await?;
//!
//! let request = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
//! let frame_id = store
//!     .append_frame(&id, Frame::new(Direction::ClientToServer, session.created_at, &request[..]))
//!     .await?;
//!
//! let replay = store.read_frames(&id, None, 100).await?;
//! assert_eq!(replay[0].id, frame_id);
//! assert_eq!(replay[0].frame.payload, request);
//!
//! store.touch(&id).await?;
//! assert_eq!(store.get(&id).await?.frame_count, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # How it is built
//!
//! - `store`: sessions are spread over a power-of-two number of shards by a hash
//!   of their id; each operation takes one shard lock, never a global one.
//! - `entry`: a session's last-activity and expiry times are atomics, so a touch
//!   needs only its shard's read lock; metadata and frames sit behind a per-session
//!   mutex, frames in a `VecDeque` trimmed from the front.
//! - `shard`: each shard keeps a lazy expiry index that the hot path never writes;
//!   purge looks only at sessions filed as due, so its cost grows with the expired
//!   sessions, not with all of them.
//! - `cursor`: `list` walks shards in order and each shard in id order; its cursor
//!   is that position.
//! - `kv`: small keyed values with a TTL and compare-and-set, one map with its
//!   own expiry index.
//!
//! [`StoreSettings`]: session_store_core::StoreSettings

mod builder;
mod capacity;
mod cursor;
mod entry;
mod kv;
mod shard;
mod store;

pub use builder::{MemoryStoreBuilder, DEFAULT_SHARDS, MAX_SHARDS};
pub use store::MemoryStore;

#[cfg(test)]
mod tests;
