//! Building a [`MemoryStore`]: settings, session cap, shard count and clock.

use std::{fmt, sync::Arc};

use session_store_core::{Clock, Error, Result, StoreSettings, SystemClock};

use crate::MemoryStore;

/// Shards a store has unless told otherwise: enough that 64 busy tasks rarely meet
/// on one lock, few enough that an empty store stays small.
pub const DEFAULT_SHARDS: usize = 64;

/// Most shards a store accepts.
pub const MAX_SHARDS: usize = 4096;

/// Configures and builds a [`MemoryStore`]; start from [`MemoryStore::builder`].
///
/// ```
/// use std::sync::Arc;
/// use session_store_core::{ManualClock, StoreSettings};
/// use session_store_memory::MemoryStore;
///
/// let store = MemoryStore::builder()
///     .settings(StoreSettings::default())
///     .max_sessions(10_000)
///     .shards(32)
///     .clock(Arc::new(ManualClock::starting_now()))
///     .build()?;
/// # let _ = store;
/// # Ok::<(), session_store_core::Error>(())
/// ```
#[derive(Clone)]
pub struct MemoryStoreBuilder {
    pub(crate) settings: StoreSettings,
    pub(crate) max_sessions: Option<usize>,
    pub(crate) shards: usize,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Default for MemoryStoreBuilder {
    fn default() -> Self {
        MemoryStoreBuilder {
            settings: StoreSettings::default(),
            max_sessions: None,
            shards: DEFAULT_SHARDS,
            clock: Arc::new(SystemClock),
        }
    }
}

impl fmt::Debug for MemoryStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStoreBuilder")
            .field("settings", &self.settings)
            .field("max_sessions", &self.max_sessions)
            .field("shards", &self.shards)
            .field("clock", &self.clock)
            .finish()
    }
}

impl MemoryStoreBuilder {
    /// Expiry and size policy (default: [`StoreSettings::default`]).
    pub fn settings(mut self, settings: StoreSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Most sessions the store holds; creating one more is
    /// [`Error::CapacityExceeded`]. Unlimited unless set.
    pub fn max_sessions(mut self, max_sessions: usize) -> Self {
        self.max_sessions = Some(max_sessions);
        self
    }

    /// Number of shards, a power of two from 1 to [`MAX_SHARDS`] (default
    /// [`DEFAULT_SHARDS`]).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Where the store reads the time (default: [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the configuration and builds an empty store. Invalid settings, a zero
    /// `max_sessions` or a shard count that is not a power of two are
    /// [`Error::Config`].
    pub fn build(self) -> Result<MemoryStore> {
        self.settings.validate()?;
        if self.max_sessions == Some(0) {
            return Err(Error::config(
                "max_sessions must be at least 1 when set (leave it unset for no limit)",
            ));
        }
        if !self.shards.is_power_of_two() || self.shards > MAX_SHARDS {
            return Err(Error::config(format!(
                "shards must be a power of two from 1 to {MAX_SHARDS}, got {}",
                self.shards
            )));
        }
        Ok(MemoryStore::from_builder(self))
    }
}
