//! The contract of MCP session storage: the [`SessionStore`] trait, its types and
//! errors, the versioned [`codec`], and (feature `testing`) the conformance suite that
//! every backend runs.
//!
//! Backends live in their own crates (`session-store-memory`, `session-store-redis`)
//! and depend on this one only; applications use the `session-store` facade.
//!
//! ```
//! use session_store_core::{Error, FrameId, SessionId};
//!
//! let id = SessionId::new("3f2a9c")?;
//! assert!(matches!(SessionId::new("bad id"), Err(Error::InvalidInput(_))));
//! assert_eq!("12-0".parse::<FrameId>()?, FrameId::new(12, 0));
//! # let _ = id;
//! # Ok::<(), Error>(())
//! ```

mod clock;
pub mod codec;
mod error;
mod frame;
mod frame_page;
mod id;
mod kv;
mod page;
mod session;
mod settings;
mod store;

#[cfg(feature = "testing")]
pub mod testing;

pub use clock::{duration_millis, Clock, ManualClock, SystemClock, Timestamp};
pub use error::{Error, Result};
pub use frame::{Direction, Frame, FrameId, StoredFrame};
pub use frame_page::{frames_within_budget, FrameGap, FramePage};
pub use id::{SessionId, MAX_SESSION_ID_LEN};
pub use kv::{
    check_kv_put, kv_condition_holds, next_kv_revision, KvCondition, KvEntry, KvKey, KvPut,
    MAX_KV_KEY_LEN,
};
pub use page::{Cursor, Page, MAX_PAGE_SIZE};
pub use session::{expiry_after_activity, NewSession, Session, SessionStatus, Transport};
pub use settings::StoreSettings;
pub use store::{Health, SessionStore};
