//! The running proxy: shared state, the router, and the server loop with graceful
//! shutdown.

use std::{io::Write, net::SocketAddr, sync::Arc};

use axum::{
    extract::{Request, State},
    middleware::{self, Next},
    response::Response,
    routing::get,
    serve::ListenerExt,
    Router,
};
use session_store::{PurgeTask, SessionStore};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    admin, config::ProxyConfig, config::ProxySettings, delete, get_stream,
    metered_store::MeteredStore, metrics::Metrics, post, upstream::Upstream, well_known,
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
    /// Becomes `true` when shutdown begins: GET streams end so in-flight requests
    /// can drain.
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// State over `store` (which it meters) for `settings`.
    pub fn new(
        store: Arc<dyn SessionStore>,
        settings: ProxySettings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, String> {
        let metrics = Arc::new(Metrics::default());
        let upstream = Upstream::new(&settings)?;
        Ok(AppState {
            store: Arc::new(MeteredStore::new(store, metrics.clone())),
            upstream,
            settings,
            metrics,
            shutdown,
        })
    }
}

/// The proxy's routes: the MCP endpoint, the upstream's `/.well-known` OAuth
/// metadata, `/healthz`, `/metrics` and, when enabled, the read-only `/sessions`
/// endpoints.
pub fn router(state: Arc<AppState>) -> Router {
    let endpoint = axum::routing::post(post::handle)
        .get(get_stream::handle)
        .delete(delete::handle);
    let mut router = Router::new()
        .route(&state.settings.endpoint_path, endpoint)
        .route("/healthz", get(admin::healthz))
        .route("/metrics", get(admin::metrics))
        .merge(well_known::routes());
    if state.settings.admin_endpoints {
        router = router
            .route("/sessions", get(admin::list_sessions))
            .route("/sessions/{id}", get(admin::show_session));
    }
    if state.settings.rewrite_resource_metadata {
        router = router.layer(middleware::from_fn_with_state(
            state.clone(),
            well_known::rewrite_challenges,
        ));
    }
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    state.metrics.request(&method, response.status().as_u16());
    response
}

/// Builds the store, binds the listener and serves until SIGTERM/SIGINT, then lets
/// in-flight requests finish (at most `shutdown_grace`).
pub async fn run(config: ProxyConfig) -> Result<(), String> {
    let store = session_store::build(&config.storage)
        .await
        .map_err(|error| format!("cannot open the session store: {error}"))?;
    let listener = TcpListener::bind(config.proxy.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", config.proxy.listen))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("cannot read the listening address: {error}"))?;
    let listener = listener.tap_io(disable_nagle);
    let (stop, stopping) = watch::channel(false);
    let grace = config.proxy.shutdown_grace;
    let state = Arc::new(AppState::new(store, config.proxy, stopping.clone())?);
    let purge = PurgeTask::spawn(state.store.clone(), config.storage.purge_interval);
    announce(address, config.storage.backend.as_str());

    // The client's address feeds X-Forwarded-For (see `headers::ClientAddr`).
    let service = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop.send(true);
    });
    let mut stopping_for_grace = stopping;
    let grace_expired = async move {
        let _ = stopping_for_grace.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    let outcome = tokio::select! {
        served = server => served.map_err(|error| format!("server failed: {error}")),
        () = grace_expired => {
            tracing::warn!(?grace, "in-flight requests still running after the shutdown grace period; exiting");
            Ok(())
        }
    };
    purge.shutdown().await;
    outcome
}

/// Sends each write at once. An SSE reply is several small writes; with Nagle's
/// algorithm the second one waits for the client's ACK, which Linux delays by
/// ~40 ms, so every streamed tool call would take 40 ms longer.
pub fn disable_nagle(connection: &mut tokio::net::TcpStream) {
    if let Err(error) = connection.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY on a client connection");
    }
}

fn announce(address: SocketAddr, backend: &str) {
    tracing::info!(%address, backend, "mcp-proxy listening");
    // One machine-readable line for scripts and tests that start with port 0.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "mcp-proxy listening on {address}");
    let _ = stdout.flush();
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
