//! The running proxy's shared state and its two routers: the MCP listener's and
//! the admin listener's. The server loop is [`server`](crate::server).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::{self, Next},
    response::Response,
    routing::get,
    Router,
};
use session_store::SessionStore;
use tokio::sync::watch;

use crate::{
    admin, config::ProxySettings, delete, get_stream, limits::ClientLimits,
    metered_store::MeteredStore, metrics::Metrics, origin, post, upstream::Upstream, well_known,
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
            limits: Arc::new(ClientLimits::new(&settings, metrics.clone())),
            settings,
            metrics,
            shutdown,
        })
    }
}

/// The MCP listener's routes: the MCP endpoint (every method admitted by
/// `Origin` first), the upstream's `/.well-known` OAuth metadata and `/healthz`.
/// Nothing that shows sessions or metrics.
pub fn router(state: Arc<AppState>) -> Router {
    let endpoint = axum::routing::post(post::handle)
        .get(get_stream::handle)
        .delete(delete::handle)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            origin::check_origin,
        ));
    let mut router = Router::new()
        .route(&state.settings.endpoint_path, endpoint)
        .route("/healthz", get(admin::healthz))
        .merge(well_known::routes());
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

/// The admin listener's routes (`admin_listen`): `/healthz`, `/metrics` and the
/// read-only `/sessions` endpoints, behind `admin_token` when it is set.
pub fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/metrics", get(admin::metrics))
        .route("/sessions", get(admin::list_sessions))
        .route("/sessions/{id}", get(admin::show_session))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin_token,
        ))
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
    let method = request.method().clone();
    let response = next.run(request).await;
    state.metrics.request(&method, response.status().as_u16());
    response
}
