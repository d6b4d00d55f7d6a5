//! Shared by the Redis integration tests: building stores against the servers that
//! `cargo xtask integration` starts (or that a developer started by hand).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use session_store_core::{testing::StoreFactory, ManualClock, SessionStore, StoreSettings};
use session_store_redis::{RedisConfig, RedisStore, Topology};

pub const URL_VAR: &str = "TEST_REDIS_URL";
pub const CLUSTER_VAR: &str = "TEST_REDIS_CLUSTER_NODES";

/// The standalone server's URL; a missing variable fails the test loudly.
pub fn standalone_url() -> String {
    std::env::var(URL_VAR)
        .unwrap_or_else(|_| panic!("set {URL_VAR} (cargo xtask integration does)"))
}

/// The cluster's nodes, `host:port` comma-separated.
pub fn cluster_nodes() -> Vec<String> {
    let raw = std::env::var(CLUSTER_VAR)
        .unwrap_or_else(|_| panic!("set {CLUSTER_VAR} (cargo xtask integration does)"));
    raw.split(',')
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect()
}

/// A key prefix no other test or run uses.
pub fn fresh_prefix() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("test-{hex}")
}

pub fn config(topology: Topology) -> RedisConfig {
    RedisConfig {
        topology,
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        key_prefix: fresh_prefix(),
        index_shards: 4,
        ..RedisConfig::default()
    }
}

pub async fn connect(
    config: RedisConfig,
    clock: ManualClock,
    settings: StoreSettings,
) -> RedisStore {
    RedisStore::connect(config, settings, Arc::new(clock))
        .await
        .unwrap()
}

/// The append script trims exactly (oldest first, by count and by bytes), so
/// no frame beyond `max_frames_per_session` remains.
pub const FRAME_TRIM_SLACK: u64 = 0;

/// Builds standalone stores, each with a fresh key prefix.
pub struct StandaloneFactory;

#[async_trait]
impl StoreFactory for StandaloneFactory {
    async fn build(&self, clock: ManualClock, settings: StoreSettings) -> Arc<dyn SessionStore> {
        let url = standalone_url();
        Arc::new(connect(config(Topology::Standalone { url }), clock, settings).await)
    }

    fn frame_trim_slack(&self) -> u64 {
        FRAME_TRIM_SLACK
    }
}

/// Builds standalone stores with the near cache on, each with a fresh key prefix.
pub struct NearCacheFactory;

#[async_trait]
impl StoreFactory for NearCacheFactory {
    async fn build(&self, clock: ManualClock, settings: StoreSettings) -> Arc<dyn SessionStore> {
        let url = standalone_url();
        let config = RedisConfig {
            near_cache_entries: 1_000,
            ..config(Topology::Standalone { url })
        };
        Arc::new(connect(config, clock, settings).await)
    }

    fn frame_trim_slack(&self) -> u64 {
        FRAME_TRIM_SLACK
    }
}

/// Builds cluster stores, each with a fresh key prefix.
pub struct ClusterFactory;

#[async_trait]
impl StoreFactory for ClusterFactory {
    async fn build(&self, clock: ManualClock, settings: StoreSettings) -> Arc<dyn SessionStore> {
        let nodes = cluster_nodes();
        Arc::new(connect(config(Topology::Cluster { nodes }), clock, settings).await)
    }

    fn frame_trim_slack(&self) -> u64 {
        FRAME_TRIM_SLACK
    }
}

/// Sends one raw command through `client` (routed by its first key) and
/// returns the reply; a failing command fails the test.
pub async fn raw_command(
    client: &fred::prelude::Client,
    command: &'static str,
    args: Vec<fred::types::Value>,
) -> fred::types::Value {
    use fred::interfaces::ClientLike;
    client
        .custom(
            fred::types::CustomCommand::new(command, fred::types::ClusterHash::FirstKey, false),
            args,
        )
        .await
        .unwrap()
}

/// A redis-server of this test's own on a free loopback port, so no other test's
/// commands mix into its statistics. Killed on drop.
pub struct DedicatedRedis {
    child: Child,
    pub port: u16,
}

impl DedicatedRedis {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (cargo xtask integration provides it)");
        let server = DedicatedRedis { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {port} did not start");
    }
}

impl Drop for DedicatedRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
