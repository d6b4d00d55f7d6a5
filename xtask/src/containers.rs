//! Redis in Docker containers, for machines without redis-server (feature
//! `containers`). Each container uses the host network and binds 127.0.0.1 on a
//! free port, exactly like the local processes: cluster nodes then announce
//! addresses that work both between containers and from the tests. Host
//! networking needs a Linux Docker engine.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Context, Result};
use testcontainers_modules::redis::Redis;
use testcontainers_modules::testcontainers::core::{CmdWaitFor, ExecCommand};
use testcontainers_modules::testcontainers::runners::SyncRunner;
use testcontainers_modules::testcontainers::{Container, ImageExt};

use crate::redis::{free_port, server_version, wait_until_cluster_ok};
use crate::test_redis::TestRedis;

/// The module defaults to Redis 5.0; the suites need 7+.
const REDIS_TAG: &str = "7.4";

/// Starts a standalone container and a 3-master cluster of containers.
pub fn start() -> Result<TestRedis> {
    println!("xtask: starting redis:{REDIS_TAG} containers (host network)");
    let (standalone, standalone_address) = start_container(false)?;
    let mut nodes = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..3 {
        let (node, address) = start_container(true)?;
        nodes.push(node);
        addresses.push(address);
    }
    let mut create = vec!["redis-cli", "--cluster", "create"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    create.extend(addresses.iter().map(SocketAddr::to_string));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
    let first = nodes.first().context("no cluster node started")?;
    let mut created = first
        .exec(ExecCommand::new(create.clone()).with_cmd_ready_condition(CmdWaitFor::exit()))
        .context("docker exec redis-cli --cluster create")?;
    let output = String::from_utf8_lossy(&created.stdout_to_vec().unwrap_or_default()).into_owned();
    let exit_code = created.exit_code().ok().flatten();
    if exit_code != Some(0) {
        bail!(
            "`{}` exited with {exit_code:?}:\n{output}",
            create.join(" ")
        );
    }
    wait_until_cluster_ok(&addresses)?;

    let version = server_version(standalone_address)?;
    let standalone_url = format!("redis://{standalone_address}");
    let cluster_nodes = addresses
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let description = format!(
        "standalone redis {version} (container) at {standalone_url}, \
         3-master cluster (containers) at {cluster_nodes}"
    );
    // No local binary: tests that start their own servers cannot run here.
    Ok(TestRedis::new(
        standalone_url,
        cluster_nodes,
        None,
        description,
        (standalone, nodes),
    ))
}

fn start_container(cluster_node: bool) -> Result<(Container<Redis>, SocketAddr)> {
    let port = free_port(cluster_node)?;
    let mut command: Vec<String> = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        "/data",
    ]
    .map(String::from)
    .to_vec();
    if cluster_node {
        command.extend(
            [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "/data/nodes.conf",
            ]
            .map(String::from),
        );
    }
    let container = Redis::default()
        .with_tag(REDIS_TAG)
        .with_network("host")
        .with_cmd(command)
        .start()
        .with_context(|| format!("starting container redis:{REDIS_TAG} on port {port}"))?;
    Ok((container, SocketAddr::from((Ipv4Addr::LOCALHOST, port))))
}
