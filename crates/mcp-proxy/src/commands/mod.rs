//! The operator's subcommands: `mcp-proxy sessions list|show|tail|export|import|
//! delete|revoke` and `mcp-proxy check-config`, on the same layered configuration
//! as the proxy (TOML < environment < flags). Each command is also a library
//! function, so tests drive them in-process (a memory store lives only there).
//!
//! The commands talk to the store directly, never through the fallback wrapper
//! (`fallback_to_memory` is ignored): a command writing into a local outage
//! journal that ends with the process would lose what it wrote.

use std::{process::ExitCode, sync::Arc};

use clap::{Subcommand, ValueEnum};
use session_store::{Backend, SessionStore};

use crate::config::ProxyConfig;

pub mod check_config;
pub mod export;
pub mod import;
pub mod listing;
pub mod sessions;

/// What an operator runs instead of serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work on the sessions of the configured store.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Load the configuration, connect to the store and the upstream, and print
    /// the effective settings (secrets redacted); non-zero exit on any failure.
    CheckConfig(check_config::CheckConfigArgs),
}

/// `mcp-proxy sessions ...`.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// One line per live session: id, client, upstream session, protocol
    /// revision, status, age, frames.
    List(sessions::ListArgs),
    /// A session's fields and its recorded frames.
    Show(sessions::ShowArgs),
    /// Print a session's last frames, then new ones as they are recorded, until
    /// the session ends (or Ctrl-C).
    Tail(sessions::TailArgs),
    /// Write every live session with its frames as JSON Lines.
    Export(export::ExportArgs),
    /// Read JSON Lines written by `export` into the store, keeping session ids and
    /// frame ids (Redis backend).
    Import(import::ImportArgs),
    /// End sessions by id (store only; see `revoke` for the upstream side).
    Delete(sessions::DeleteArgs),
    /// End every session bound to a principal, on every instance, and the
    /// upstream sessions behind them (DELETE with `Mcp-Session-Id`).
    Revoke(sessions::RevokeArgs),
}

/// What a command reports when it fails: the message names what to act on.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The store refused or could not be reached.
    #[error("session store: {0}")]
    Store(#[from] session_store::Error),
    /// Reading or writing a file or a terminal failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The input or the request cannot be used as given.
    #[error("{0}")]
    Usage(String),
    /// One or more checks failed (check-config); each was printed.
    #[error("{0}")]
    Failed(String),
}

impl CommandError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CommandError {
        let what = what.into();
        move |source| CommandError::Io { what, source }
    }

    /// The process exit code: 2 for unusable input, 1 for everything else.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CommandError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Runs `command` with `config`, printing to stdout (results) and stderr
/// (progress, warnings).
pub async fn run(command: Command, config: ProxyConfig) -> Result<(), CommandError> {
    match command {
        Command::CheckConfig(args) => check_config::run(&args, &config).await,
        Command::Sessions(command) => {
            if config.storage.backend == Backend::Memory
                && !matches!(command, SessionsCommand::Import(_))
            {
                eprintln!(
                    "mcp-proxy: warning: storage.backend is `memory`: this command has its own \
                     empty store; a running proxy's sessions are on its admin listener (/sessions)"
                );
            }
            let stdout = std::io::stdout();
            let out = &mut stdout.lock();
            match command {
                SessionsCommand::List(args) => {
                    sessions::list(&*open_store(&config).await?, &args, out).await?;
                }
                SessionsCommand::Show(args) => {
                    sessions::show(&*open_store(&config).await?, &args, out).await?;
                }
                SessionsCommand::Tail(args) => {
                    let tailed = sessions::tail(&*open_store(&config).await?, &args, out).await?;
                    if let Some(ended) = tailed.ended {
                        eprintln!("{ended}");
                    }
                }
                SessionsCommand::Delete(args) => {
                    sessions::delete(&*open_store(&config).await?, &args, out).await?;
                }
                SessionsCommand::Revoke(args) => {
                    sessions::revoke(open_store(&config).await?, &config.proxy, &args, out).await?;
                }
                SessionsCommand::Export(args) => {
                    export::run(&*open_store(&config).await?, &args).await?;
                }
                SessionsCommand::Import(args) => import::run(&config, &args).await?,
            }
            Ok(())
        }
    }
}

/// The configured store, connected, without the fallback wrapper.
pub async fn open_store(config: &ProxyConfig) -> Result<Arc<dyn SessionStore>, CommandError> {
    let mut storage = config.storage.clone();
    storage.redis.fallback_to_memory = false;
    Ok(session_store::build(&storage).await?)
}

/// How `import` treats a session id the store already holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OnConflict {
    /// Leave the stored session as it is and count it as skipped (the default).
    #[default]
    Skip,
    /// Replace the stored session's fields and frames with the imported ones.
    Overwrite,
}
