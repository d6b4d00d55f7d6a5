//! The conformance suite against a standalone Redis (`TEST_REDIS_URL`) with the
//! near cache on: every `get` after the first may be answered from memory, so
//! each contract about what a `get` sees after a write is checked through it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::NearCacheFactory;

session_store_core::conformance_tests!(
    #[ignore = "needs Redis: cargo xtask integration"]
    NearCacheFactory
);
