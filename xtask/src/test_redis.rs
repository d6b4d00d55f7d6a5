//! The Redis servers handed to the suites (`TestRedis`) and the environment
//! variables that name them; started by `integration` (local processes) or
//! `containers` (Docker).

use std::any::Any;
use std::path::PathBuf;

/// Variable naming the standalone server, as `redis://127.0.0.1:<port>`.
pub const URL_VAR: &str = "TEST_REDIS_URL";
/// Variable naming the cluster nodes, as `127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
pub const CLUSTER_NODES_VAR: &str = "TEST_REDIS_CLUSTER_NODES";
/// Variable naming the redis-server binary, for tests that start their own servers.
pub const SERVER_BINARY_VAR: &str = "TEST_REDIS_SERVER";

/// Redis servers for the suites; dropping it stops them.
pub struct TestRedis {
    /// `redis://127.0.0.1:<port>` of the standalone server.
    pub standalone_url: String,
    /// Comma-separated `host:port` of the cluster's masters.
    pub cluster_nodes: String,
    /// The local redis-server binary, when the servers are local processes.
    pub server_binary: Option<PathBuf>,
    /// Human description, e.g. "standalone redis 7.0.15 at redis://127.0.0.1:1234".
    pub description: String,
    /// Whatever owns the servers; dropping it stops them.
    _servers: Box<dyn Any>,
}

impl TestRedis {
    /// Describes running servers; `servers` owns them and stops them on drop.
    pub fn new(
        standalone_url: String,
        cluster_nodes: String,
        server_binary: Option<PathBuf>,
        description: String,
        servers: impl Any,
    ) -> Self {
        Self {
            standalone_url,
            cluster_nodes,
            server_binary,
            description,
            _servers: Box::new(servers),
        }
    }

    /// The environment the suites read.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (URL_VAR, self.standalone_url.clone()),
            (CLUSTER_NODES_VAR, self.cluster_nodes.clone()),
        ];
        if let Some(binary) = &self.server_binary {
            env.push((SERVER_BINARY_VAR, binary.display().to_string()));
        }
        env
    }
}
