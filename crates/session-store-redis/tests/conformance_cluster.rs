//! The conformance suite against a Redis Cluster
//! (`TEST_REDIS_CLUSTER_NODES`, comma-separated host:port).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::ClusterFactory;

session_store_core::conformance_tests!(
    #[ignore = "needs Redis: cargo xtask integration"]
    ClusterFactory
);
