//! The `mcp-proxy` binary: parse flags, load configuration, serve (or run an
//! operator's subcommand, `src/commands/`).

use std::process::ExitCode;

use clap::Parser;
use mcp_proxy::{
    cli::Cli,
    commands::{self, Command, CommandError, SessionsCommand},
    config::ProxyConfig,
    server,
};

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let command = cli.command.take();
    // Both rustls providers are compiled in (ring: the proxy's and fred's;
    // aws-lc-rs: reqwest's default), so the process default is chosen here:
    // without one, `rustls::ClientConfig::builder()` (Redis over TLS) panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Logs, and with the `otel` feature the trace exporter (flushed when the
    // guard drops, after the server stopped). A subcommand's output is its own:
    // the library's info lines would only interleave with it.
    let _telemetry = mcp_proxy::telemetry::init(if command.is_some() { "warn" } else { "info" });
    // Checking an export file needs neither a store nor a configuration.
    if let Some(Command::Sessions(SessionsCommand::Import(args))) = &command {
        if args.check {
            let Some(runtime) = runtime(None) else {
                return ExitCode::FAILURE;
            };
            return finish(runtime.block_on(commands::import::check(args)));
        }
    }
    let config = match ProxyConfig::load(cli.config.as_deref(), &cli.overrides()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("mcp-proxy: {error}");
            return ExitCode::from(2);
        }
    };
    // Built after the configuration is read: `[proxy] worker_threads` sizes it.
    let Some(runtime) = runtime(config.proxy.worker_threads) else {
        return ExitCode::FAILURE;
    };
    if let Some(command) = command {
        return finish(runtime.block_on(commands::run(command, config)));
    }
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mcp-proxy: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-threaded tokio runtime with `worker_threads` workers (`None`:
/// tokio's default, one per core, or `TOKIO_WORKER_THREADS`); `None` after
/// saying why on stderr when it cannot be built.
fn runtime(worker_threads: Option<usize>) -> Option<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = worker_threads {
        builder.worker_threads(threads);
    }
    match builder.enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("mcp-proxy: cannot start the async runtime: {error}");
            None
        }
    }
}

/// The exit of an operator's subcommand: 0, or its error on stderr and its code.
fn finish(outcome: Result<(), CommandError>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mcp-proxy: {error}");
            error.exit_code()
        }
    }
}
