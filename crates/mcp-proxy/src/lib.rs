//! `mcp-proxy`: a reverse proxy for the MCP Streamable HTTP transport whose sessions
//! live in a pluggable session store (memory, or Redis shared by many instances).
//!
//! The proxy issues its own `Mcp-Session-Id` and maps it to the upstream's (dual
//! ids), records every JSON-RPC message that crosses it as a frame, gives SSE events
//! ids made of frame ids (`<frame_id>@<stream_id>`), and replays a stream from the
//! store after `Last-Event-ID`. Because the session lives in the store, any instance
//! can serve any session, and a restarted instance carries on. `docs/proxy.md`
//! describes the behaviour; the binary is `src/main.rs`.
//!
//! ```
//! use mcp_proxy::config::{Overrides, ProxyConfig};
//!
//! let config = ProxyConfig::from_toml_str(
//!     r#"
//!     [proxy]
//!     listen = "127.0.0.1:8080"
//!     upstream = "http://127.0.0.1:9000/mcp"
//!     upstream_timeout = "10s"
//!
//!     [storage]
//!     backend = "memory"
//!     ttl = "30m"
//!     "#,
//!     &Overrides::default(),
//! )?;
//! assert_eq!(config.proxy.endpoint_path, "/mcp");
//! assert_eq!(config.proxy.upstream_timeout, std::time::Duration::from_secs(10));
//! # Ok::<(), mcp_proxy::config::ConfigError>(())
//! ```

pub mod admin;
pub mod app;
pub mod binding;
pub mod bridge;
pub mod cli;
pub mod client_config;
pub mod commands;
pub mod config;
pub mod config_error;
pub mod delete;
pub mod errors;
pub mod event_id;
pub mod get_stream;
pub mod headers;
pub mod jsonrpc;
pub mod lease;
pub mod limits;
pub mod log_text;
pub mod metered_store;
pub mod metrics;
pub mod modern;
pub mod modern_config;
pub mod near_cache;
pub mod origin;
pub mod post;
pub mod recorder;
pub mod recovery;
pub mod relay;
pub mod replay;
pub mod server;
pub mod session;
pub mod session_browser;
pub mod session_query;
pub mod sse;
pub mod state;
pub mod telemetry;
pub mod upstream;
pub mod upstream_cursor;
pub mod upstream_tls;
pub mod well_known;
