//! The proxy's two routers: the MCP listener's and the admin listener's. The
//! shared state is [`state`](crate::state), below every handler; the server loop
//! is [`server`](crate::server).

use std::sync::Arc;

use crate::{
    admin, delete, get_stream, origin, post, session_browser, state::AppState, telemetry,
    well_known,
};
use axum::{
    extract::{Request, State},
    middleware::{self, Next},
    response::Response,
    routing::get,
    Router,
};
use tracing::Instrument;

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
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

/// Runs the request inside its span ([`telemetry::request_span`]), which
/// continues the client's `traceparent` when traces are exported.
async fn trace_request(request: Request, next: Next) -> Response {
    let span = telemetry::request_span(request.method(), request.uri().path(), request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// The admin listener's routes (`admin_listen`): `/healthz`, `/metrics` and the
/// read-only `/sessions` endpoints, behind `admin_token` when it is set, and the
/// session browser under `/ui/` ([`session_browser::routes`], which checks the
/// token itself).
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
        .merge(session_browser::routes(state.clone()))
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
