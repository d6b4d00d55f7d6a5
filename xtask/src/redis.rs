//! Local `redis-server` processes as values: dropping one kills the process and
//! removes its temp dir, so no failure path (error, panic, Ctrl-C) leaves a
//! server running or a directory behind.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

use crate::process;
use crate::resp;

/// How long a server gets to answer PING after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a new cluster gets to report `cluster_state:ok` on every node.
const CLUSTER_OK_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on `redis-cli --cluster create`.
const CLUSTER_CREATE_TIMEOUT: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// Other workers on the machine may take a free port before redis-server binds it.
const START_ATTEMPTS: u32 = 3;
/// Redis puts a node's cluster bus on its port + 10000.
const CLUSTER_BUS_OFFSET: u16 = 10_000;
const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// What a server is started as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A plain server.
    Standalone,
    /// A server with `cluster-enabled yes`, not yet part of a cluster.
    ClusterNode,
}

/// A running `redis-server` bound to 127.0.0.1 on a free port.
pub struct RedisServer {
    process: Child,
    port: u16,
    // Declared after `process` and removed in its own Drop, after the kill.
    dir: TempDir,
}

impl RedisServer {
    /// Starts `binary` with its own temp dir and no persistence, and waits until
    /// it answers PING.
    pub fn start(binary: &Path, role: Role) -> Result<Self> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(binary, role) {
                Ok(server) => return Ok(server),
                Err(StartError::PortTaken(error)) => last_error = Some(error),
                Err(StartError::Failed(error)) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("no attempt to start redis-server was made")))
            .with_context(|| format!("{START_ATTEMPTS} attempts found no free port"))
    }

    fn start_once(binary: &Path, role: Role) -> Result<Self, StartError> {
        let port = free_port(role == Role::ClusterNode).map_err(StartError::Failed)?;
        let dir = TempDir::new("redis").map_err(StartError::Failed)?;
        let mut command = server_command(binary, role, port, dir.path());
        let line = process::display(&command);
        let process = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("could not start `{line}`"))
            .map_err(StartError::Failed)?;
        let mut server = Self { process, port, dir };
        match server.wait_until_ready() {
            Ok(()) => Ok(server),
            Err(error) => {
                let log = server.log_tail();
                let error = error.context(format!("`{line}`; its log ends with:\n{log}"));
                if log.contains("Address already in use") {
                    Err(StartError::PortTaken(error))
                } else {
                    Err(StartError::Failed(error))
                }
            }
        }
    }

    fn wait_until_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.process.try_wait()? {
                bail!("redis-server exited before answering PING ({status})");
            }
            let reply = resp::request(self.address(), &["PING"], REQUEST_TIMEOUT);
            if reply.is_ok_and(|reply| reply == resp::Reply::Status("PONG".into())) {
                return Ok(());
            }
            process::bail_if_interrupted()?;
            if Instant::now() > deadline {
                bail!(
                    "redis-server at {} did not answer PING within {READY_TIMEOUT:?}",
                    self.address()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.address())
    }

    /// The `redis_version` the server reports in `INFO server`.
    pub fn version(&self) -> Result<String> {
        server_version(self.address())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL: nothing is persisted, so there is nothing to flush.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

enum StartError {
    PortTaken(anyhow::Error),
    Failed(anyhow::Error),
}

fn server_command(binary: &Path, role: Role, port: u16, dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"));
    if role == Role::ClusterNode {
        command
            .args(["--cluster-enabled", "yes", "--cluster-config-file"])
            .arg(dir.join("nodes.conf"));
    }
    command
}

/// A 3-master Redis Cluster of local servers, no replicas.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster nodes, joins them with `redis-cli --cluster create`
    /// and waits until every node reports `cluster_state:ok`.
    pub fn start(server_binary: &Path, cli_binary: &Path) -> Result<Self> {
        let nodes = (0..3)
            .map(|_| RedisServer::start(server_binary, Role::ClusterNode))
            .collect::<Result<Vec<_>>>()?;
        let cluster = Self { nodes };
        let mut create = Command::new(cli_binary);
        create.args(["--cluster", "create"]);
        create.args(cluster.nodes.iter().map(|node| node.address().to_string()));
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let line = process::display(&create);
        let created = process::run_captured(&mut create, CLUSTER_CREATE_TIMEOUT)?;
        if !created.status.success() {
            bail!("`{line}` failed ({}):\n{}", created.status, created.text);
        }
        let addresses: Vec<SocketAddr> = cluster.nodes.iter().map(RedisServer::address).collect();
        wait_until_cluster_ok(&addresses)?;
        Ok(cluster)
    }

    /// The nodes as `127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn nodes_list(&self) -> String {
        let addresses: Vec<String> = self
            .nodes
            .iter()
            .map(|node| node.address().to_string())
            .collect();
        addresses.join(",")
    }

    /// The `redis_version` of the first node.
    pub fn version(&self) -> Result<String> {
        self.nodes
            .first()
            .context("a cluster without nodes")?
            .version()
    }
}

/// The `redis_version` the server at `address` reports in `INFO server`.
pub fn server_version(address: SocketAddr) -> Result<String> {
    let info = resp::request(address, &["INFO", "server"], REQUEST_TIMEOUT)
        .and_then(resp::Reply::into_text)
        .with_context(|| format!("INFO server on {address}"))?;
    resp::info_field(&info, "redis_version")
        .map(str::to_string)
        .with_context(|| format!("no redis_version in INFO server of {address}"))
}

/// Waits until every node of a new cluster reports `cluster_state:ok` and knows
/// all the others.
pub fn wait_until_cluster_ok(nodes: &[SocketAddr]) -> Result<()> {
    let deadline = Instant::now() + CLUSTER_OK_TIMEOUT;
    loop {
        let states: Vec<String> = nodes
            .iter()
            .map(|&node| cluster_state(node, nodes.len()))
            .collect();
        if states.iter().all(|state| state == "ok") {
            return Ok(());
        }
        process::bail_if_interrupted()?;
        if Instant::now() > deadline {
            bail!("cluster not ok after {CLUSTER_OK_TIMEOUT:?}: {states:?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `ok` when the node is healthy and knows `node_count` nodes, else what it reports.
fn cluster_state(node: SocketAddr, node_count: usize) -> String {
    let info = match resp::request(node, &["CLUSTER", "INFO"], REQUEST_TIMEOUT)
        .and_then(resp::Reply::into_text)
    {
        Ok(info) => info,
        Err(error) => return format!("{node}: {error}"),
    };
    let state = resp::info_field(&info, "cluster_state").unwrap_or("?");
    let known = resp::info_field(&info, "cluster_known_nodes").unwrap_or("?");
    if state == "ok" && known == node_count.to_string() {
        "ok".to_string()
    } else {
        format!("{node}: cluster_state:{state} cluster_known_nodes:{known}")
    }
}

/// A port on 127.0.0.1 that was free a moment ago; with `with_cluster_bus`,
/// port + 10000 was free too.
pub fn free_port(with_cluster_bus: bool) -> Result<u16> {
    for _ in 0..100 {
        let listener = TcpListener::bind((LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if !with_cluster_bus {
            return Ok(port);
        }
        let Some(bus_port) = port.checked_add(CLUSTER_BUS_OFFSET) else {
            continue;
        };
        if TcpListener::bind((LOCALHOST, bus_port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("found no free port pair (p, p+{CLUSTER_BUS_OFFSET}) on 127.0.0.1 in 100 tries")
}

/// A directory under the system temp dir, removed with everything in it on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a new, empty, uniquely named directory.
    pub fn new(label: &str) -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "xtask-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// Where the directory is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.path) {
            eprintln!(
                "xtask: warning: could not remove {}: {error}",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_with_cluster_bus_leaves_room_for_the_bus() {
        let port = free_port(true).unwrap();
        assert!(port.checked_add(CLUSTER_BUS_OFFSET).is_some());
    }

    #[test]
    fn temp_dir_is_removed_with_its_contents() {
        let dir = TempDir::new("test").unwrap();
        let path = dir.path().to_path_buf();
        fs::write(path.join("nodes.conf"), "x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn cluster_nodes_get_cluster_flags_and_every_server_its_own_dir() {
        let dir = Path::new("/tmp/node");
        let command = server_command(Path::new("redis-server"), Role::ClusterNode, 7000, dir);
        let line = process::display(&command);
        assert!(line.contains("--bind 127.0.0.1 --port 7000 --save '' --appendonly no"));
        assert!(line.contains("--dir /tmp/node"));
        assert!(line.contains("--cluster-enabled yes --cluster-config-file /tmp/node/nodes.conf"));
        let standalone = server_command(Path::new("redis-server"), Role::Standalone, 7000, dir);
        assert!(!process::display(&standalone).contains("cluster"));
    }

    #[test]
    #[ignore = "needs redis-server on PATH: cargo test -p xtask -- --ignored"]
    fn servers_start_form_a_cluster_and_leave_nothing_behind() {
        let binary = process::find_on_path("redis-server").unwrap();
        let cli = process::find_on_path("redis-cli").unwrap();
        let server = RedisServer::start(&binary, Role::Standalone).unwrap();
        assert!(server
            .version()
            .unwrap()
            .starts_with(|c: char| c.is_ascii_digit()));
        let dir = server.dir.path().to_path_buf();
        let address = server.address();
        drop(server);
        assert!(!dir.exists());
        assert!(resp::request(address, &["PING"], REQUEST_TIMEOUT).is_err());

        let cluster = RedisCluster::start(&binary, &cli).unwrap();
        assert_eq!(cluster.nodes_list().split(',').count(), 3);
    }
}
