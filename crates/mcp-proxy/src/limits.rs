//! Per-client limits on creating sessions: live sessions per client
//! (`max_sessions_per_client`, keyed by the session binding, else the client's
//! address) and an `initialize` rate (`initialize_rate`, a token bucket per client
//! address), so one client can fill neither the store nor the upstream. Both are
//! answered with 429 and `Retry-After`.
//!
//! Both are kept **per instance**: a client spread over N instances by a load
//! balancer may hold up to N × `max_sessions_per_client` sessions. Sessions are
//! counted from the ids this instance created, pruned against the store
//! (`get_many`) when the cap is reached, so a session deleted or expired anywhere
//! stops counting.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use session_store::{SessionId, SessionStore};

use crate::{
    binding::Principal,
    config::{ProxySettings, Rate},
    errors::ProxyError,
    metrics::{Metrics, Rejection},
};

/// Clients remembered before idle entries are dropped.
const REMEMBERED_CLIENTS: usize = 10_000;
/// An entry whose client sent no `initialize` for this long may be dropped once
/// [`REMEMBERED_CLIENTS`] are remembered (its sessions then stop counting).
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// `Retry-After` when the session cap is reached: sessions end by DELETE or
/// expiry, which the proxy cannot predict.
const SESSION_CAP_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The IP address of the client connection, when the server loop recorded it
/// (from [`ClientAddr`](crate::headers::ClientAddr)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientAddress(pub Option<IpAddr>);

impl From<crate::headers::ClientAddr> for ClientAddress {
    fn from(address: crate::headers::ClientAddr) -> Self {
        ClientAddress(address.0.map(|peer| peer.ip()))
    }
}

/// Who a limit counts for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ClientKey {
    Principal(Principal),
    Address(IpAddr),
    Unknown,
}

impl ClientKey {
    fn of(binding: Option<&Principal>, address: ClientAddress) -> Self {
        match (binding, address.0) {
            (Some(principal), _) => ClientKey::Principal(principal.clone()),
            (None, Some(address)) => ClientKey::Address(address),
            (None, None) => ClientKey::Unknown,
        }
    }
}

#[derive(Debug)]
struct Sessions {
    ids: Vec<SessionId>,
    /// Slots handed out whose `initialize` is still under way.
    pending: usize,
    last_initialize: Instant,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// The per-client limits of one instance.
#[derive(Debug)]
pub struct ClientLimits {
    max_sessions: usize,
    rate: Option<Rate>,
    sessions: Mutex<HashMap<ClientKey, Sessions>>,
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
    metrics: Arc<Metrics>,
}

impl ClientLimits {
    /// Limits as `settings` configure them, counted into `metrics`.
    pub fn new(settings: &ProxySettings, metrics: Arc<Metrics>) -> Self {
        ClientLimits {
            max_sessions: settings.max_sessions_per_client,
            rate: settings.initialize_rate,
            sessions: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Admits an `initialize` from `address` whose session would be bound to
    /// `binding`: a slot to [`fill`](SessionSlot::fill) with the new session's id,
    /// or 429 ([`ProxyError::TooManyRequests`]) naming the limit.
    ///
    /// # Errors
    ///
    /// `TooManyRequests` when the client holds `max_sessions_per_client` live
    /// sessions or exceeded `initialize_rate`; store errors from counting.
    pub async fn admit_initialize(
        self: &Arc<Self>,
        store: &dyn SessionStore,
        binding: Option<&Principal>,
        address: ClientAddress,
    ) -> Result<SessionSlot, ProxyError> {
        let key = ClientKey::of(binding, address);
        if self.max_sessions > 0 && self.at_cap(&key) {
            self.prune(store, &key).await?;
            if self.at_cap(&key) {
                self.metrics.rejected(Rejection::SessionsPerClient);
                tracing::info!(client = ?key_kind(&key), limit = self.max_sessions, "session cap reached; answering 429");
                return Err(ProxyError::TooManyRequests {
                    limit: format!(
                        "this client holds {} live sessions (proxy.max_sessions_per_client); end one with DELETE",
                        self.max_sessions
                    ),
                    retry_after: SESSION_CAP_RETRY_AFTER,
                });
            }
        }
        if let Some(rate) = self.rate {
            let rate_key = match address.0 {
                Some(address) => ClientKey::Address(address),
                None => key.clone(),
            };
            if let Err(retry_after) = self.take_token(rate_key, rate) {
                self.metrics.rejected(Rejection::InitializeRate);
                tracing::info!(client = ?key_kind(&key), "initialize rate exceeded; answering 429");
                return Err(ProxyError::TooManyRequests {
                    limit: format!(
                        "more than {} initialize requests per {:?} from this client (proxy.initialize_rate)",
                        rate.count, rate.period
                    ),
                    retry_after,
                });
            }
        }
        let mut sessions = self.sessions.lock();
        forget_idle(&mut sessions);
        let entry = sessions.entry(key.clone()).or_insert_with(|| Sessions {
            ids: Vec::new(),
            pending: 0,
            last_initialize: Instant::now(),
        });
        entry.pending += 1;
        entry.last_initialize = Instant::now();
        Ok(SessionSlot {
            limits: self.clone(),
            key: Some(key),
        })
    }

    fn at_cap(&self, key: &ClientKey) -> bool {
        self.sessions
            .lock()
            .get(key)
            .is_some_and(|entry| entry.ids.len() + entry.pending >= self.max_sessions)
    }

    /// Drops the ids of sessions that no longer exist in the store.
    async fn prune(&self, store: &dyn SessionStore, key: &ClientKey) -> Result<(), ProxyError> {
        let ids = match self.sessions.lock().get(key) {
            Some(entry) => entry.ids.clone(),
            None => return Ok(()),
        };
        let found = store.get_many(&ids).await?;
        let gone: Vec<&SessionId> = ids
            .iter()
            .zip(&found)
            .filter(|(_, session)| session.is_none())
            .map(|(id, _)| id)
            .collect();
        if let Some(entry) = self.sessions.lock().get_mut(key) {
            entry.ids.retain(|id| !gone.contains(&id));
        }
        Ok(())
    }

    /// Takes one token from the client's bucket, or says how long until one is
    /// there.
    fn take_token(&self, key: ClientKey, rate: Rate) -> Result<(), Duration> {
        let now = Instant::now();
        let capacity = f64::from(rate.count);
        let per_second = capacity / rate.period.as_secs_f64();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= REMEMBERED_CLIENTS {
            // Full buckets carry no information.
            buckets.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.refilled).as_secs_f64() * per_second
                    < capacity
            });
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            refilled: now,
        });
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }

    fn release(&self, key: &ClientKey, id: Option<SessionId>) {
        let mut sessions = self.sessions.lock();
        if let Some(entry) = sessions.get_mut(key) {
            entry.pending = entry.pending.saturating_sub(1);
            if let Some(id) = id {
                entry.ids.push(id);
            }
            if entry.ids.is_empty() && entry.pending == 0 {
                sessions.remove(key);
            }
        }
    }
}

fn forget_idle(sessions: &mut HashMap<ClientKey, Sessions>) {
    if sessions.len() >= REMEMBERED_CLIENTS {
        sessions
            .retain(|_, entry| entry.pending > 0 || entry.last_initialize.elapsed() < FORGET_AFTER);
    }
}

/// What kind of key a limit was counted under, for logs (never the key itself).
fn key_kind(key: &ClientKey) -> &'static str {
    match key {
        ClientKey::Principal(_) => "principal",
        ClientKey::Address(_) => "address",
        ClientKey::Unknown => "unknown",
    }
}

/// A place for one more session of a client, held while its `initialize` is under
/// way. [`fill`](Self::fill) it with the session created; dropped unfilled (the
/// upstream refused, the store failed), it frees the place.
#[derive(Debug)]
pub struct SessionSlot {
    limits: Arc<ClientLimits>,
    key: Option<ClientKey>,
}

impl SessionSlot {
    /// Counts `id` as one of the client's live sessions.
    pub fn fill(mut self, id: SessionId) {
        if let Some(key) = self.key.take() {
            self.limits.release(&key, Some(id));
        }
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.limits.release(&key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, ProxyConfig};
    use session_store::{MemoryStore, NewSession};

    fn limits(extra: &str) -> Arc<ClientLimits> {
        let settings = ProxyConfig::from_toml_str(
            &format!("[proxy]\nupstream = \"http://127.0.0.1:9/mcp\"\n{extra}\n"),
            &Overrides::default(),
        )
        .unwrap()
        .proxy;
        Arc::new(ClientLimits::new(&settings, Arc::new(Metrics::default())))
    }

    fn address(last: u8) -> ClientAddress {
        ClientAddress(Some(IpAddr::from([10, 0, 0, last])))
    }

    async fn session(store: &MemoryStore) -> SessionId {
        let id = SessionId::random().unwrap();
        store.create(NewSession::new(id.clone())).await.unwrap();
        id
    }

    #[tokio::test]
    async fn the_session_cap_counts_live_sessions_per_client() {
        let limits = limits("max_sessions_per_client = 2\ninitialize_rate = \"off\"");
        let store = MemoryStore::new(session_store::StoreSettings::default()).unwrap();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let slot = limits
                .admit_initialize(&store, None, address(1))
                .await
                .unwrap();
            let id = session(&store).await;
            slot.fill(id.clone());
            ids.push(id);
        }
        let refused = limits.admit_initialize(&store, None, address(1)).await;
        assert!(
            matches!(refused, Err(ProxyError::TooManyRequests { .. })),
            "{refused:?}"
        );
        // Another client is not affected.
        drop(
            limits
                .admit_initialize(&store, None, address(2))
                .await
                .unwrap(),
        );
        // A session deleted (on any instance) stops counting.
        store.delete(&ids[0]).await.unwrap();
        let slot = limits
            .admit_initialize(&store, None, address(1))
            .await
            .unwrap();
        // An unfilled slot (initialize failed) frees its place.
        drop(slot);
        assert!(limits
            .admit_initialize(&store, None, address(1))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn the_initialize_rate_is_a_bucket_per_address() {
        let limits = limits("max_sessions_per_client = 0\ninitialize_rate = \"3/min\"");
        let store = MemoryStore::new(session_store::StoreSettings::default()).unwrap();
        for _ in 0..3 {
            drop(
                limits
                    .admit_initialize(&store, None, address(1))
                    .await
                    .unwrap(),
            );
        }
        match limits.admit_initialize(&store, None, address(1)).await {
            Err(ProxyError::TooManyRequests { retry_after, .. }) => {
                assert!(
                    retry_after > Duration::from_secs(10) && retry_after <= Duration::from_secs(20),
                    "{retry_after:?}"
                );
            }
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limits
            .admit_initialize(&store, None, address(2))
            .await
            .is_ok());
    }
}
