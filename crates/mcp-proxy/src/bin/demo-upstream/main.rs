//! `demo-upstream`: a small MCP server (rmcp, Streamable HTTP, sessions) to put
//! behind the proxy in demos and tests. Tools: `echo`, `add`, and `countdown`,
//! which streams progress notifications over SSE before its result.
//!
//! `demo-upstream --listen 127.0.0.1:0` prints `demo-upstream listening on <addr>`
//! and serves MCP on `/mcp`. With `--event-store` every event is kept, so a reply
//! stream can be resumed with `Last-Event-ID` after its connection was dropped
//! (see `event_store`). For the proxy's tests it can also answer
//! an unknown session with 400 (`--lost-session-status 400`) and close reply
//! streams early with a `retry` (`--close-streams-early N --close-retry-ms MS`):
//! see `faults`. `--resume-goes-silent` (with `--event-store`) makes a resumed
//! stream replay what is stored and then send nothing more, live events included,
//! while the connection stays open (as `@modelcontextprotocol/server-everything`
//! does).

mod event_store;
mod faults;

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use axum::{http::StatusCode, serve::ListenerExt};
use clap::Parser;
use rmcp::{
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{
        Implementation, ProgressNotificationParam, RequestMetaObject, ServerCapabilities,
        ServerConfig,
    },
    schemars, tool, tool_handler, tool_router,
    transport::streamable_http_server::{
        session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
    },
    ErrorData, Peer, RoleServer, ServerHandler,
};
use serde::Deserialize;
use std::io::Write;

/// The demo MCP server's command line.
#[derive(Debug, Parser)]
#[command(name = "demo-upstream", version)]
struct Args {
    /// Address to serve MCP on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Keep every SSE event so reply streams can be resumed with `Last-Event-ID`.
    #[arg(long)]
    event_store: bool,
    /// HTTP status answered for an unknown (lost) session id: 404 or 400.
    #[arg(long, default_value_t = 404, value_parser = parse_lost_session_status)]
    lost_session_status: u16,
    /// Close this many reply streams right after a progress notification, before
    /// their response (the client resumes them with `Last-Event-ID`).
    #[arg(long, default_value_t = 0)]
    close_streams_early: u32,
    /// The `retry` (milliseconds) sent before each early close.
    #[arg(long, default_value_t = 3_000)]
    close_retry_ms: u64,
    /// A resumed stream replays the stored events and then goes silent: no live
    /// event ever follows (needs `--event-store`).
    #[arg(long, requires = "event_store")]
    resume_goes_silent: bool,
}

fn parse_lost_session_status(value: &str) -> Result<u16, String> {
    match value {
        "404" => Ok(404),
        "400" => Ok(400),
        other => Err(format!("`{other}` is not 404 or 400")),
    }
}

/// Arguments of `echo`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// The text to send back.
    text: String,
}

/// Arguments of `add`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct AddArgs {
    /// Left operand.
    a: i64,
    /// Right operand.
    b: i64,
}

/// Arguments of `countdown`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct CountdownArgs {
    /// How many progress notifications to send (at most 100).
    from: u32,
    /// Pause between notifications in milliseconds (at most 5000; default 100).
    interval_ms: Option<u64>,
}

/// The demo server's tools.
#[derive(Debug, Clone)]
struct Demo {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Demo {
    fn new() -> Self {
        Demo {
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Returns the text it is given")]
    async fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(description = "Adds two integers")]
    async fn add(
        &self,
        Parameters(AddArgs { a, b }): Parameters<AddArgs>,
    ) -> Result<String, ErrorData> {
        a.checked_add(b)
            .map(|sum| sum.to_string())
            .ok_or_else(|| ErrorData::invalid_params("the sum overflows a 64-bit integer", None))
    }

    #[tool(
        description = "Counts down from `from`, sending one progress notification per step over SSE (needs a progress token)"
    )]
    async fn countdown(
        &self,
        Parameters(CountdownArgs { from, interval_ms }): Parameters<CountdownArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> Result<String, ErrorData> {
        let from = from.min(100);
        let interval = Duration::from_millis(interval_ms.unwrap_or(100).min(5_000));
        let token = meta.get_progress_token();
        for step in 0..from {
            if let Some(token) = &token {
                let progress = ProgressNotificationParam::new(token.clone(), f64::from(step + 1))
                    .with_total(f64::from(from))
                    .with_message(format!("{} left", from - step - 1));
                if let Err(error) = peer.notify_progress(progress).await {
                    return Err(ErrorData::internal_error(
                        format!("progress not sent: {error}"),
                        None,
                    ));
                }
            }
            tokio::time::sleep(interval).await;
        }
        Ok(format!("countdown from {from} done"))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Demo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "demo-upstream",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("A demo MCP server: echo, add, countdown.")
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("demo-upstream: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let lost_session_status =
        StatusCode::from_u16(args.lost_session_status).unwrap_or(StatusCode::NOT_FOUND);
    let faults = Arc::new(faults::Faults::new(
        lost_session_status,
        args.close_streams_early,
        args.close_retry_ms,
        args.resume_goes_silent,
    ));
    match runtime.block_on(serve(args.listen, args.event_store, faults)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo-upstream: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    listen: SocketAddr,
    event_store: bool,
    faults: Arc<faults::Faults>,
) -> Result<(), String> {
    let mut sessions = LocalSessionManager::default();
    if event_store {
        sessions = sessions.with_event_store(Arc::new(event_store::MemoryEventStore::default()));
    }
    let service = StreamableHttpService::new(
        || Ok(Demo::new()),
        Arc::new(sessions),
        StreamableHttpServerConfig::default(),
    );
    let router = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(
            faults.clone(),
            faults::close_streams_early,
        ))
        .layer(axum::middleware::from_fn_with_state(
            faults.clone(),
            faults::resume_goes_silent,
        ))
        .layer(axum::middleware::from_fn_with_state(
            faults,
            faults::lost_session_status,
        ));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| format!("cannot listen on {listen}: {error}"))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("cannot read the listening address: {error}"))?;
    // Without TCP_NODELAY, each SSE reply's second write waits ~40 ms for the
    // client's delayed ACK (Nagle's algorithm).
    let listener = listener.tap_io(|stream| mcp_proxy::server::disable_nagle(stream));
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "demo-upstream listening on {address}");
    let _ = stdout.flush();
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|error| format!("server failed: {error}"))
}
