//! The Redis pool's readings in `health()` (shown on the proxy's `/metrics`):
//! connections, nodes, commands in flight and reconnections, against real
//! servers. The only test of this binary that uses the standalone server kills
//! connections there: those that appeared when its store connected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use fred::{
    interfaces::ClientLike,
    prelude::{Builder, Config},
    types::{ClusterHash, CustomCommand, Value},
};
use session_store_core::{testing::suite_settings, ManualClock, SessionStore};
use session_store_redis::Topology;

fn reading(readings: &[(&'static str, f64)], name: &str) -> f64 {
    readings
        .iter()
        .find(|(reading, _)| *reading == name)
        .map(|(_, value)| *value)
        .unwrap_or_else(|| panic!("no reading {name} in {readings:?}"))
}

/// The ids of the clients connected to the standalone server.
async fn client_ids(client: &fred::prelude::Client) -> BTreeSet<String> {
    let list: Value = client
        .custom(
            CustomCommand::new("CLIENT", ClusterHash::FirstKey, false),
            vec![Value::String("LIST".into())],
        )
        .await
        .unwrap();
    let text = list.as_string().unwrap();
    text.lines()
        .filter_map(|line| line.split_whitespace().next()?.strip_prefix("id="))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn pool_readings_count_connections_nodes_and_reconnects() {
    let url = common::standalone_url();
    let observer = Builder::from_config(Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    observer.init().await.unwrap();
    let before = client_ids(&observer).await;

    let config = common::config(Topology::Standalone { url });
    let pool_size = config.pool_size;
    let store = common::connect(config, ManualClock::starting_now(), suite_settings()).await;
    let readings = store.health().await.unwrap().readings;
    println!("pool readings: {readings:?}");
    assert_eq!(
        reading(&readings, "session_store_redis_connections"),
        pool_size as f64
    );
    assert_eq!(
        reading(&readings, "session_store_redis_nodes_connected"),
        1.0
    );
    assert_eq!(
        reading(&readings, "session_store_redis_reconnects_total"),
        0.0
    );
    assert_eq!(
        reading(&readings, "session_store_redis_commands_in_flight"),
        0.0
    );

    // Kill the store's connections on the server: fred reconnects, counted.
    let mine: Vec<String> = client_ids(&observer)
        .await
        .difference(&before)
        .cloned()
        .collect();
    assert!(!mine.is_empty(), "the store's connections are listed");
    for id in &mine {
        let _: Value = observer
            .custom(
                CustomCommand::new("CLIENT", ClusterHash::FirstKey, false),
                vec![
                    Value::String("KILL".into()),
                    Value::String("ID".into()),
                    Value::String(id.clone().into()),
                ],
            )
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let reconnects = loop {
        // health() also makes the clients use (and so re-open) their connections.
        let readings = store.health().await.map(|h| h.readings).unwrap_or_default();
        let reconnects = readings
            .iter()
            .find(|(name, _)| *name == "session_store_redis_reconnects_total")
            .map_or(0.0, |(_, v)| *v);
        if reconnects >= 1.0 || Instant::now() > deadline {
            break reconnects;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "killed {} connections; {reconnects} reconnects counted",
        mine.len()
    );
    assert!(reconnects >= 1.0, "the reconnection is counted");
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn pool_readings_see_every_cluster_node() {
    let nodes = common::cluster_nodes();
    let config = common::config(Topology::Cluster {
        nodes: nodes.clone(),
    });
    let store = common::connect(config, ManualClock::starting_now(), suite_settings()).await;
    let readings = store.health().await.unwrap().readings;
    println!("cluster pool readings: {readings:?}");
    assert_eq!(
        reading(&readings, "session_store_redis_nodes_connected"),
        nodes.len() as f64
    );
}
