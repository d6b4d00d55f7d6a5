//! Readings of the Redis connection pool for the proxy's `/metrics`, from what
//! fred 10 exposes without its `metrics` feature: the connections each pool
//! client has open (and to how many nodes), the commands queued or awaiting a
//! reply, the reconnections (fred's `on_reconnect` events) and the commands
//! fred sent again (after a reconnection or a cluster redirection).
//!
//! Not available, and so not reported: the time spent waiting for a connection
//! (fred multiplexes every command of a pool client on its connections; a
//! command never waits for a free connection, only in the client's queue, which
//! `commands_in_flight` counts), and `MOVED`/`ASK` redirections as such (fred
//! follows them inside its router without an event; the resends they cause are
//! part of `redeliveries`). Per-node figures would need labelled readings,
//! which [`Health::readings`](session_store_core::Health::readings) cannot
//! carry: the totals are reported.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use fred::{
    clients::Pool,
    interfaces::{ClientLike, EventInterface, MetricsInterface},
};

/// Counts every reconnection of every client of `pool` into `reconnects`, from
/// now on (the listener tasks end when the clients are dropped).
pub(crate) fn count_reconnects(pool: &Pool, reconnects: &Arc<AtomicU64>) {
    for client in pool.clients() {
        let reconnects = reconnects.clone();
        let _listener = client.on_reconnect(move |server| {
            reconnects.fetch_add(1, Ordering::Relaxed);
            // One per pooled connection (pool_size per node): debug. The store's
            // own lines say once that Redis answers again (docs/operations.md).
            tracing::debug!(%server, "redis connection re-established");
            async { Ok(()) }
        });
    }
}

/// The pool's readings, named as `/metrics` shows them.
pub(crate) fn readings(pool: &Pool, reconnects: &AtomicU64) -> Vec<(&'static str, f64)> {
    let mut connections = 0usize;
    let mut nodes = BTreeSet::new();
    let mut in_flight = 0usize;
    let mut redeliveries = 0usize;
    for client in pool.clients() {
        let active = client.active_connections();
        connections += active.len();
        nodes.extend(active.into_iter().map(|server| server.to_string()));
        in_flight += client.command_queue_len();
        redeliveries += client.read_redelivery_count();
    }
    let n = |v: usize| v as f64;
    vec![
        ("session_store_redis_pool_clients", n(pool.clients().len())),
        ("session_store_redis_connections", n(connections)),
        ("session_store_redis_nodes_connected", n(nodes.len())),
        ("session_store_redis_commands_in_flight", n(in_flight)),
        (
            "session_store_redis_reconnects_total",
            reconnects.load(Ordering::Relaxed) as f64,
        ),
        ("session_store_redis_redeliveries_total", n(redeliveries)),
    ]
}
