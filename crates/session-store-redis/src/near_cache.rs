//! The near cache: sessions this instance read recently, kept in memory and
//! dropped the moment Redis reports their meta key changed (RESP3 client
//! tracking, <https://redis.io/docs/latest/develop/reference/client-side-caching/>),
//! so a `get` of a hot session costs no round trip.
//!
//! Reads that may fill the cache go through one dedicated RESP3 connection with
//! `CLIENT TRACKING on` (default mode: Redis remembers the keys this connection
//! read and sends an invalidation push when any client changes, expires or
//! deletes one). Every other command stays on the RESP2 pool.
//!
//! What keeps a cached session true:
//! - an invalidation push removes the key (an empty one, after `FLUSHALL`,
//!   removes everything); a read whose invalidation was handled before its
//!   reply is not cached (the key's slot holds the read's ticket, which the
//!   invalidation removed);
//! - this store's own writes forget the session when they return, so a `get`
//!   after this instance's `update` never sees the older record;
//! - a lost, re-established or unresponsive tracking connection, or
//!   invalidations this process fell behind on, empty the cache and stop
//!   filling it until `CLIENT TRACKING` is on again on the new connection;
//! - an entry is served only while the session is live at the store's clock
//!   and for at most `near_cache_max_age`, the bound on staleness where no
//!   invalidation can arrive: a connection that died without the client
//!   noticing, and `FLUSHALL`/`FLUSHDB`, whose null invalidation fred 10.1
//!   drops (it only passes on key arrays).
//!
//! Standalone and sentinel only: on a cluster, fred 10.1 opens connections to
//! a slot's new owner without tracking (`RedisConfig::validate` refuses it).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use fred::{
    clients::Client,
    error::Error as FredError,
    interfaces::{ClientLike, EventInterface, TrackingInterface},
    types::client::Invalidation,
};
use session_store_core::{Error, Result, Session};
use tokio::sync::broadcast::error::RecvError;

use crate::failure;

/// A read of one session's meta that may fill the cache once it returns.
#[derive(Debug)]
pub(crate) struct Ticket {
    key: String,
    token: u64,
    epoch: u64,
}

enum Slot {
    /// A read is under way; only the read holding this token may fill it.
    Reading(u64),
    Ready {
        session: Box<Session>,
        read_at: Instant,
    },
}

#[derive(Default)]
struct State {
    /// `CLIENT TRACKING on` was confirmed on the connection of this epoch.
    tracking: bool,
    /// A task is turning tracking on again.
    restarting: bool,
    /// Bumped on every connection event: tickets of an older epoch fill nothing.
    epoch: u64,
    next_token: u64,
    entries: HashMap<String, Slot>,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
    resets: AtomicU64,
}

struct Shared {
    state: Mutex<State>,
    counters: Counters,
    capacity: usize,
    max_age: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-changed in
        // a way that matters: every entry is a copy of Redis.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Empties the cache and stops filling it until tracking is on again.
    fn reset(&self, why: &str) {
        let mut state = self.lock();
        state.epoch += 1;
        state.tracking = false;
        state.entries.clear();
        drop(state);
        self.counters.resets.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(why, "redis near cache emptied");
    }

    fn invalidate(&self, invalidation: &Invalidation) {
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        if invalidation.keys.is_empty() {
            // `FLUSHALL`/`FLUSHDB`: Redis sends a null key list.
            state.entries.clear();
            return;
        }
        for key in &invalidation.keys {
            if let Some(key) = key.as_str() {
                state.entries.remove(key);
            }
        }
    }
}

/// The near cache of a [`RedisStore`](crate::RedisStore); see the module docs.
#[derive(Clone)]
pub(crate) struct NearCache {
    client: Client,
    shared: Arc<Shared>,
}

impl NearCache {
    /// Turns tracking on for `client` (connected, RESP3) and starts listening
    /// to its invalidations and connection events.
    ///
    /// Errors: [`Error::Config`] when Redis refuses `CLIENT TRACKING` (Redis
    /// before 6, or a proxy in front of Redis that does not pass RESP3 pushes).
    pub(crate) async fn start(
        client: Client,
        capacity: usize,
        max_age: Duration,
        address: &str,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            capacity,
            max_age,
        });
        // Subscribed before tracking starts, so no push is missed.
        listen(&client, &shared);
        client
            .start_tracking(None, false, false, false, false)
            .await
            .map_err(|e| {
                Error::config(format!(
                    "redis.near_cache_entries: redis at {address} refused CLIENT TRACKING on a RESP3 \
                     connection ({}); the near cache needs Redis 6 or later and, for an ACL \
                     user, the rule +client|tracking; or set it to 0",
                    e.details()
                ))
            })?;
        shared.lock().tracking = true;
        Ok(NearCache { client, shared })
    }

    /// The connection reads that may fill the cache go through.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The cached session under meta key `key`, if live at `now_ms` (the
    /// store's clock) and read less than `near_cache_max_age` ago.
    pub(crate) fn lookup(&self, key: &str, now_ms: u64) -> Option<Session> {
        let found = self.cached(key, now_ms);
        let counter = match found {
            Some(_) => &self.shared.counters.hits,
            None => &self.shared.counters.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn cached(&self, key: &str, now_ms: u64) -> Option<Session> {
        if !self.client.is_connected() {
            return None;
        }
        let state = self.shared.lock();
        if !state.tracking {
            return None;
        }
        match state.entries.get(key)? {
            Slot::Ready { session, read_at }
                if session.expires_at.as_millis() > now_ms
                    && read_at.elapsed() < self.shared.max_age =>
            {
                Some(Session::clone(session))
            }
            _ => None,
        }
    }

    /// Starts a read of `key` that may fill the cache: `None` (read through the
    /// pool, cache nothing) while tracking is off, which also starts turning it
    /// on again.
    pub(crate) fn begin(&self, key: &str) -> Option<Ticket> {
        let mut state = self.shared.lock();
        if !state.tracking {
            if !state.restarting {
                state.restarting = true;
                self.restart_tracking(state.epoch);
            }
            return None;
        }
        state.next_token += 1;
        let token = state.next_token;
        let epoch = state.epoch;
        state.entries.insert(key.to_owned(), Slot::Reading(token));
        Some(Ticket {
            key: key.to_owned(),
            token,
            epoch,
        })
    }

    /// Ends the read of `ticket`: caches `session` unless the key was
    /// invalidated, forgotten or read again since the read began, or the
    /// connection changed.
    pub(crate) fn finish(&self, ticket: Ticket, session: Option<&Session>) {
        let mut state = self.shared.lock();
        let ours = matches!(state.entries.get(&ticket.key), Some(Slot::Reading(token)) if *token == ticket.token);
        if !ours {
            return;
        }
        match session {
            Some(session) if state.tracking && state.epoch == ticket.epoch => {
                // The map holds this read's own slot already.
                if state.entries.len() > self.shared.capacity {
                    let victim = state.entries.keys().find(|k| **k != ticket.key).cloned();
                    if let Some(victim) = victim {
                        state.entries.remove(&victim);
                    }
                }
                state.entries.insert(
                    ticket.key,
                    Slot::Ready {
                        session: Box::new(session.clone()),
                        read_at: Instant::now(),
                    },
                );
            }
            _ => {
                state.entries.remove(&ticket.key);
            }
        }
    }

    /// Drops `key` (this instance wrote it): the next `get` reads Redis.
    pub(crate) fn forget(&self, key: &str) {
        self.shared.lock().entries.remove(key);
    }

    /// The cache's readings, named as `/metrics` shows them.
    pub(crate) fn readings(&self) -> Vec<(&'static str, f64)> {
        let counters = &self.shared.counters;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let entries = self
            .shared
            .lock()
            .entries
            .values()
            .filter(|slot| matches!(slot, Slot::Ready { .. }))
            .count();
        vec![
            ("session_store_redis_near_cache_entries", entries as f64),
            (
                "session_store_redis_near_cache_hits_total",
                n(&counters.hits),
            ),
            (
                "session_store_redis_near_cache_misses_total",
                n(&counters.misses),
            ),
            (
                "session_store_redis_near_cache_invalidations_total",
                n(&counters.invalidations),
            ),
            (
                "session_store_redis_near_cache_resets_total",
                n(&counters.resets),
            ),
        ]
    }

    /// Sends `CLIENT TRACKING on` on the current connection in the background;
    /// tracking counts as on only if no connection event came meanwhile.
    fn restart_tracking(&self, epoch: u64) {
        let client = self.client.clone();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let outcome: std::result::Result<(), FredError> = if client.is_connected() {
                client
                    .start_tracking(None, false, false, false, false)
                    .await
            } else {
                Ok(())
            };
            let connected = client.is_connected();
            let mut state = shared.lock();
            state.restarting = false;
            match outcome {
                Ok(()) if connected && state.epoch == epoch => state.tracking = true,
                Ok(()) => {}
                Err(error) => tracing::debug!(
                    error = %failure::readable_details(&error),
                    "turning redis client tracking on again failed; the near cache stays empty"
                ),
            }
        });
    }
}

/// Handles the tracking connection's invalidations and connection events
/// until its event channels close.
fn listen(client: &Client, shared: &Arc<Shared>) {
    let mut invalidations = client.invalidation_rx();
    let mut reconnects = client.reconnect_rx();
    let mut errors = client.error_rx();
    let mut unresponsive = client.unresponsive_rx();
    let shared = shared.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                invalidation = invalidations.recv() => match invalidation {
                    Ok(invalidation) => shared.invalidate(&invalidation),
                    // Invalidations were dropped: any entry may be stale.
                    Err(RecvError::Lagged(_)) => shared.reset("invalidations were missed"),
                    Err(RecvError::Closed) => break,
                },
                event = reconnects.recv() => match event {
                    Ok(_) | Err(RecvError::Lagged(_)) => shared.reset("tracking connection re-established"),
                    Err(RecvError::Closed) => break,
                },
                event = errors.recv() => match event {
                    Ok(_) | Err(RecvError::Lagged(_)) => shared.reset("tracking connection failed"),
                    Err(RecvError::Closed) => break,
                },
                event = unresponsive.recv() => match event {
                    Ok(_) | Err(RecvError::Lagged(_)) => shared.reset("tracking connection unresponsive"),
                    Err(RecvError::Closed) => break,
                },
            }
        }
        shared.reset("tracking connection closed");
    });
}
