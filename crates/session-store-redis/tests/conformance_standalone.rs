//! The conformance suite against a standalone Redis (`TEST_REDIS_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::StandaloneFactory;

session_store_core::conformance_tests!(
    #[ignore = "needs Redis: cargo xtask integration"]
    StandaloneFactory
);
