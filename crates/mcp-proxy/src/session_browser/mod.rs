//! The session browser: a web page on the admin listener (`/ui/`) that lists,
//! filters and opens sessions, shows a session's frames as a timeline, tails it
//! live and ends or revokes it. Plain HTML, CSS and JavaScript embedded in the
//! binary (no framework, no build step, no CDN); the JSON it calls is
//! [`api`], the live tail [`tail`]. See docs/operations.md, "Session browser".

pub mod api;
pub mod tail;

use std::sync::Arc;

use axum::{
    http::header,
    middleware,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};

use crate::{admin, state::AppState};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Every header a served asset carries: no inline scripts or styles, nothing
/// loaded from elsewhere, not framed, not sniffed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The browser's routes on the admin listener. The page and its assets need no
/// token (they hold no data; the page asks for the token); the JSON API needs
/// `admin_token` as a bearer token; the live tail needs a ticket the API hands
/// out ([`tail::ticket`]), because `EventSource` cannot send headers.
pub fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let api = Router::new()
        .route("/ui/api/sessions", get(api::list))
        .route("/ui/api/sessions/{id}", get(api::show).delete(api::end))
        .route("/ui/api/sessions/{id}/revoke", post(api::revoke))
        .route("/ui/api/sessions/{id}/ticket", post(tail::ticket))
        .layer(middleware::from_fn_with_state(
            state,
            admin::require_admin_token,
        ));
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/ui/api/sessions/{id}/tail", get(tail::tail))
        .merge(api)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
