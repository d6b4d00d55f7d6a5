//! The `mcp-proxy` binary: parse flags, load configuration, serve (or run an
//! operator's subcommand, `src/commands/`).

use std::process::ExitCode;

use clap::Parser;
use mcp_proxy::{cli::Cli, commands, config::ProxyConfig, server};

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
    let config = match ProxyConfig::load(cli.config.as_deref(), &cli.overrides()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("mcp-proxy: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mcp-proxy: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(command) = command {
        return match runtime.block_on(commands::run(command, config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("mcp-proxy: {error}");
                error.exit_code()
            }
        };
    }
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mcp-proxy: {error}");
            ExitCode::FAILURE
        }
    }
}
