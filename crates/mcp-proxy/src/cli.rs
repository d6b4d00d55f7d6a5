//! The command line: `mcp-proxy --config FILE [--listen ADDR] [--admin-listen ADDR]
//! [--upstream URL] [--storage memory|redis] [--redis-url URL]` serves; the
//! subcommands `sessions ...` and `check-config` ([`crate::commands`]) work on the
//! same layered configuration.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::{commands::Command, config::Overrides};

/// A Streamable HTTP MCP reverse proxy whose sessions live in a session store.
///
/// Settings are layered: the TOML file, then the environment (`MCP_PROXY_*` for
/// `[proxy]`, `SESSION_STORE_*` for `[storage]`), then these flags. Without a
/// subcommand the proxy serves.
#[derive(Debug, Parser)]
#[command(name = "mcp-proxy", version)]
pub struct Cli {
    /// The TOML file with `[proxy]` and `[storage]` tables.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Address to accept clients on (`proxy.listen`), e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR", global = true)]
    pub listen: Option<String>,
    /// Address of the admin listener (`proxy.admin_listen`: /sessions, /metrics),
    /// e.g. 127.0.0.1:8081.
    #[arg(long, value_name = "ADDR", global = true)]
    pub admin_listen: Option<String>,
    /// The upstream MCP endpoint (`proxy.upstream`), e.g. http://127.0.0.1:9000/mcp.
    #[arg(long, value_name = "URL", global = true)]
    pub upstream: Option<String>,
    /// The session store backend (`storage.backend`).
    #[arg(long, value_enum, value_name = "BACKEND", global = true)]
    pub storage: Option<StorageBackend>,
    /// The Redis server (`storage.redis.url`), e.g. redis://127.0.0.1:6379.
    #[arg(long, value_name = "URL", global = true)]
    pub redis_url: Option<String>,
    /// An operator's command instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The `--storage` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StorageBackend {
    /// In-process; sessions end with the process.
    Memory,
    /// Redis; sessions are shared by every instance and survive restarts.
    Redis,
}

impl Cli {
    /// The flags as configuration overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            admin_listen: self.admin_listen.clone(),
            upstream: self.upstream.clone(),
            storage_backend: self.storage.map(|backend| match backend {
                StorageBackend::Memory => "memory".to_owned(),
                StorageBackend::Redis => "redis".to_owned(),
            }),
            redis_url: self.redis_url.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::commands::SessionsCommand;

    #[test]
    fn every_subcommand_is_well_formed() {
        // clap checks ids, conflicts and requirements of every subcommand here,
        // not when a user first runs the one that is wrong.
        Cli::command().debug_assert();
    }

    #[test]
    fn serving_flags_still_parse_and_work_after_a_subcommand() {
        let serve =
            Cli::try_parse_from(["mcp-proxy", "--config", "p.toml", "--listen", "x"]).unwrap();
        assert!(serve.command.is_none());
        let list =
            Cli::try_parse_from(["mcp-proxy", "sessions", "list", "--config", "p.toml"]).unwrap();
        assert_eq!(list.config.as_deref(), Some(std::path::Path::new("p.toml")));
        assert!(matches!(
            list.command,
            Some(Command::Sessions(SessionsCommand::List(_)))
        ));
        let revoke = ["mcp-proxy", "sessions", "revoke", "--no-upstream"];
        assert!(
            Cli::try_parse_from(revoke).is_err(),
            "a principal is required"
        );
    }
}
