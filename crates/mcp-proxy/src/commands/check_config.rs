//! `mcp-proxy check-config`: what the proxy would run with, checked before it
//! runs: the layered configuration loaded and validated, the store connected and
//! asked for its health, the upstream asked over HTTP, and the effective settings
//! printed with every secret redacted.

use std::io::Write;

use axum::http::{header, HeaderMap, HeaderValue, Method};
use clap::Args;
use session_store::{Backend, RedisUrl};

use super::{
    listing::{listing, name_of},
    open_store, CommandError,
};
use crate::{
    config::ProxyConfig,
    upstream::{without_credentials, Upstream},
};

/// `check-config`.
#[derive(Clone, Debug, Default, Args)]
pub struct CheckConfigArgs {
    /// Only load and validate the configuration; connect to neither the store nor
    /// the upstream (for files checked away from their deployment).
    #[arg(long)]
    pub offline: bool,
}

/// What the checks found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// One line per failed check, naming what to fix.
    pub failures: Vec<String>,
}

/// Prints that the configuration parsed and the effective settings (secrets
/// shown as `***`: `admin_token`, `binding_secret`,
/// `bridge_request_state_keys`, Redis passwords in URLs and `password`;
/// credentials in the upstream and public URLs left out), then, unless
/// `--offline`, checks the store (connect and health) and the upstream (any
/// HTTP answer below 500 means reachable: the check sends no MCP request, so 4xx
/// is expected), and last the verdict (`result: valid`, or `result: NOT valid
/// (failed: store, upstream)`).
///
/// Errors: writing to `out`. Failed checks are in the report, not errors.
pub async fn check(
    config: &ProxyConfig,
    args: &CheckConfigArgs,
    out: &mut dyn Write,
) -> Result<CheckReport, CommandError> {
    let io = || CommandError::io("writing the check");
    writeln!(out, "configuration: parsed").map_err(io())?;
    writeln!(out, "{}", effective_settings(config)).map_err(io())?;
    let mut report = CheckReport::default();
    if args.offline {
        writeln!(out, "store: not checked (--offline)").map_err(io())?;
        writeln!(out, "upstream: not checked (--offline)").map_err(io())?;
        writeln!(
            out,
            "result: valid (offline: the store and the upstream were not checked)"
        )
        .map_err(io())?;
        return Ok(report);
    }
    match check_store(config).await {
        Ok(line) => writeln!(out, "store: ok, {line}").map_err(io())?,
        Err(failure) => {
            writeln!(out, "store: FAILED: {failure}").map_err(io())?;
            report.failures.push(format!("store: {failure}"));
        }
    }
    match check_upstream(config).await {
        Ok(line) => writeln!(out, "upstream: reachable, {line}").map_err(io())?,
        Err(failure) => {
            writeln!(out, "upstream: FAILED: {failure}").map_err(io())?;
            report.failures.push(format!("upstream: {failure}"));
        }
    }
    if report.failures.is_empty() {
        writeln!(out, "result: valid").map_err(io())?;
    } else {
        let failed: Vec<&str> = report
            .failures
            .iter()
            .filter_map(|failure| failure.split_once(':').map(|(check, _)| check))
            .collect();
        writeln!(out, "result: NOT valid (failed: {})", failed.join(", ")).map_err(io())?;
    }
    Ok(report)
}

/// The `[proxy]` and `[storage]` settings as the proxy would use them, secrets
/// redacted: a summary of what is most often wrong, then every key in the
/// configuration file's syntax ([`listing`]).
pub fn effective_settings(config: &ProxyConfig) -> String {
    let mut proxy = config.proxy.clone();
    proxy.upstream = without_credentials(&proxy.upstream);
    proxy.public_url = proxy.public_url.as_ref().map(without_credentials);
    let storage = &config.storage;
    let store = match storage.backend {
        Backend::Memory => "memory (sessions end with the process)".to_owned(),
        Backend::Redis => {
            let redis = &storage.redis;
            let nodes = |nodes: &[RedisUrl]| {
                let nodes: Vec<String> = nodes.iter().map(ToString::to_string).collect();
                nodes.join(", ")
            };
            let topology = match (&redis.cluster, &redis.sentinel) {
                (Some(cluster), _) => format!("cluster {}", nodes(&cluster.nodes)),
                (None, Some(sentinel)) => format!(
                    "sentinel `{}` of {}",
                    sentinel.service_name,
                    nodes(&sentinel.nodes)
                ),
                (None, None) => redis.url.to_string(),
            };
            let near_cache = match redis.near_cache_entries {
                0 => String::new(),
                entries => format!(", near cache {entries} sessions"),
            };
            format!(
                "redis {topology}, key_prefix `{}`, fallback_to_memory {}{near_cache}",
                redis.key_prefix, redis.fallback_to_memory
            )
        }
    };
    let admin = match (proxy.admin_listen, &proxy.admin_token) {
        (None, _) => "none".to_owned(),
        (Some(address), Some(_)) => format!("{address} (admin_token set)"),
        (Some(address), None) => format!("{address} (no admin_token: anyone who reaches it)"),
    };
    format!(
        "listen:        {}\nupstream:      {}\nadmin listen:  {admin}\nstore:         {store}\n\
         binding:       {}, key {}\n\n{}",
        proxy.listen,
        proxy.upstream,
        name_of(&proxy.session_binding),
        match proxy.binding_key {
            crate::client_config::BindingKey::Configured(_) => "binding_secret (set)",
            crate::client_config::BindingKey::Derived(_) => {
                "derived from the deployment (set binding_secret)"
            }
        },
        listing(&proxy, storage),
    )
}

/// Connects the store and asks its health. A store that cannot be reached gets
/// a hint at the key that says where it is, with the source its value came from
/// ([`where_the_store_is`]); other errors (refused credentials, a clock too far
/// from Redis's, an invalid setting) name what to fix themselves, so they get no
/// second, generic one.
async fn check_store(config: &ProxyConfig) -> Result<String, String> {
    let store = open_store(config).await.map_err(|error| match error {
        CommandError::Store(session_store::Error::Unavailable(_)) => {
            format!("{error} (check {})", where_the_store_is(config))
        }
        other => other.to_string(),
    })?;
    let health = store
        .health()
        .await
        .map_err(|error| format!("connected, but the health check failed: {error}"))?;
    Ok(format!(
        "backend {} answered in {:.1} ms ({})",
        health.backend,
        health.latency.as_secs_f64() * 1000.0,
        health.detail
    ))
}

/// The key that says where Redis is (the cluster's or the sentinels' nodes, or
/// the URL, credentials left out), where its value came from, and the other keys
/// that decide whether a connection succeeds.
fn where_the_store_is(config: &ProxyConfig) -> String {
    let redis = &config.storage.redis;
    let (key, value) = match (&redis.cluster, &redis.sentinel) {
        (Some(_), _) => ("storage.redis.cluster.nodes", None),
        (None, Some(_)) => ("storage.redis.sentinel.nodes", None),
        (None, None) => ("storage.redis.url", Some(redis.url.to_string())),
    };
    let value = value.map_or_else(String::new, |value| format!(" = \"{value}\""));
    format!(
        "{key}{value}, from {}; and storage.redis.tls",
        config.source_of(key)
    )
}

async fn check_upstream(config: &ProxyConfig) -> Result<String, String> {
    let upstream = Upstream::new(&config.proxy)?;
    let target = without_credentials(upstream.url());
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    let response = upstream
        .send(Method::GET, headers, None)
        .await
        .map_err(|error| {
            format!(
                "{error} (check proxy.upstream = \"{target}\", from {})",
                config.source_of("proxy.upstream")
            )
        })?;
    let status = response.status();
    if status.is_server_error() {
        return Err(format!(
            "GET {target} answered {status} (is the MCP server behind it running?)"
        ));
    }
    Ok(format!("GET {target} answered {status}"))
}

/// `check-config` from the command line: prints to stdout, fails when a check
/// failed.
pub async fn run(args: &CheckConfigArgs, config: &ProxyConfig) -> Result<(), CommandError> {
    let stdout = std::io::stdout();
    let report = check(config, args, &mut stdout.lock()).await?;
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(CommandError::Failed(format!(
            "check-config: {} check(s) failed: {}",
            report.failures.len(),
            report.failures.join("; ")
        )))
    }
}
