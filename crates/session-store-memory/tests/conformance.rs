//! The shared conformance suite, run against `MemoryStore`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use async_trait::async_trait;
use session_store_core::{testing::StoreFactory, ManualClock, SessionStore, StoreSettings};
use session_store_memory::MemoryStore;

/// Builds a fresh, empty `MemoryStore` per behaviour.
struct MemoryFactory;

#[async_trait]
impl StoreFactory for MemoryFactory {
    async fn build(&self, clock: ManualClock, settings: StoreSettings) -> Arc<dyn SessionStore> {
        let store = MemoryStore::builder()
            .settings(settings)
            .clock(Arc::new(clock))
            .build()
            .unwrap();
        Arc::new(store)
    }
}

session_store_core::conformance_tests!(MemoryFactory);
