//! [`ConfigError`]: a configuration the proxy cannot use. Its own module, below
//! [`config`](crate::config) and the modules that validate parts of `[proxy]`
//! ([`client_config`](crate::client_config), [`modern_config`](crate::modern_config),
//! [`bridge::settings`](crate::bridge::settings)), so none of them imports `config`.

use std::fmt;

/// A configuration that cannot be used. An error about one key reads as the
/// `[storage]` errors do: `proxy.upstream = "ftp://host/mcp" (from
/// environment variable MCP_PROXY_UPSTREAM): <what is wrong>`; the source is
/// added where the layered configuration is known (`ConfigError::with_source`).
#[derive(Debug)]
pub struct ConfigError {
    /// The dotted key (`proxy.upstream`), when the error is about one key.
    key: Option<String>,
    /// The value as it may be shown (quoted, credentials left out), if at all.
    value: Option<String>,
    /// Where the key's value came from (`/etc/mcp-proxy.toml: proxy.upstream`).
    source: Option<String>,
    /// What is wrong (the whole message when there is no key).
    problem: String,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration: ")?;
        let Some(key) = &self.key else {
            return f.write_str(&self.problem);
        };
        f.write_str(key)?;
        if let Some(value) = &self.value {
            write!(f, " = {value}")?;
        }
        if let Some(source) = &self.source {
            write!(f, " (from {source})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl ConfigError {
    /// An error whose `message` says everything (several keys, or a whole layer).
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ConfigError {
            key: None,
            value: None,
            source: None,
            problem: message.into(),
        }
    }

    /// An error about `key` whose value is not repeated (a secret, or nothing
    /// worth showing).
    pub(crate) fn key(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: Some(key.into()),
            value: None,
            source: None,
            problem: problem.into(),
        }
    }

    /// An error about `key` holding `value` (shown as given: quote it, and
    /// leave credentials out).
    pub(crate) fn value(
        key: impl Into<String>,
        value: impl fmt::Display,
        problem: impl Into<String>,
    ) -> Self {
        ConfigError {
            key: Some(key.into()),
            value: Some(value.to_string()),
            source: None,
            problem: problem.into(),
        }
    }

    /// Names where the key's value came from, `describe(key)` (file and key,
    /// environment variable, command-line override, or default).
    pub(crate) fn with_source(mut self, describe: impl FnOnce(&str) -> String) -> Self {
        if let Some(key) = &self.key {
            self.source = Some(describe(key));
        }
        self
    }
}
