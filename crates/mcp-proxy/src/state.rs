//! What every request handler shares (`AppState`): the metered store, the
//! upstream client, the settings, the counters and the limits. It sits below the
//! handlers and the routers, and imports none of them.

use std::sync::Arc;

use session_store::SessionStore;
use tokio::sync::watch;

use crate::{
    bridge::instance::Bridge, config::ProxySettings, limits::ClientLimits,
    metered_store::MeteredStore, metrics::Metrics, near_cache::NearCache, recorder::Recorder,
    upstream::Upstream,
};

/// What every request handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The session store (every call timed into `metrics`).
    pub store: Arc<dyn SessionStore>,
    /// The upstream MCP server.
    pub upstream: Upstream,
    /// The `[proxy]` settings.
    pub settings: ProxySettings,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Per-client limits on creating sessions.
    pub limits: Arc<ClientLimits>,
    /// The protocol-generation bridge's per-instance parts.
    pub bridge: Bridge,
    /// Active sessions this instance has seen (the request path's one-round-trip
    /// hit; never the authority on liveness).
    pub near_cache: NearCache,
    /// Store writes the client does not wait for (JSON replies, upstream resume
    /// points), written in the background and drained on a graceful stop.
    pub recorder: Recorder,
    /// Becomes `true` when shutdown begins: GET streams end so in-flight requests
    /// can drain.
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// State over `store` (which it meters) for `settings`. Starts the
    /// [`Recorder`]'s task, so it needs a tokio runtime.
    pub fn new(
        store: Arc<dyn SessionStore>,
        settings: ProxySettings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, String> {
        let metrics = Arc::new(Metrics::default());
        let upstream = Upstream::new(&settings)?;
        let store: Arc<dyn SessionStore> = Arc::new(MeteredStore::new(store, metrics.clone()));
        Ok(AppState {
            recorder: Recorder::start(store.clone(), metrics.clone()),
            store,
            upstream,
            limits: Arc::new(ClientLimits::new(&settings, metrics.clone())),
            bridge: Bridge::new(&settings),
            near_cache: NearCache::default(),
            settings,
            metrics,
            shutdown,
        })
    }
}
