//! [`ConfigError`]: a configuration the proxy cannot use. Its own module, below
//! [`config`](crate::config) and the modules that validate parts of `[proxy]`
//! ([`client_config`](crate::client_config), [`modern_config`](crate::modern_config),
//! [`bridge::settings`](crate::bridge::settings)), so none of them imports `config`.

/// A configuration that cannot be used; the message names the key and its source.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }
}
