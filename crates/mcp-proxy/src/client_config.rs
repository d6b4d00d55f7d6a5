//! The client side of `[proxy]`: who may use the proxy and how much
//! (`allowed_origins`, `session_binding`, `binding_secret`, `admin_listen`,
//! `admin_token`, `header_read_timeout`, `idle_timeout`, `max_connections`,
//! `max_sessions_per_client`, `initialize_rate`): their types and validation.
//! Read and layered with the other keys in [`config`](crate::config).

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};
use session_store::{Secret, StorageConfig};
use url::Url;

use crate::config_error::ConfigError;

/// Largest `max_connections` accepted.
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// `session_binding`: what a session is bound to, so a leaked session id is
/// useless to anyone else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionBinding {
    /// The user: `iss` and `sub` of a JWT bearer token (not verified by the proxy),
    /// else the token itself. A refreshed token of the same user keeps the session.
    #[default]
    Subject,
    /// The exact `Authorization` value: a refreshed token ends the session.
    Token,
    /// Nothing: anyone with the session id may use it.
    None,
}

/// `allowed_origins`, resolved against `listen`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `["*"]`: no check.
    Any,
    /// Default on a loopback `listen`: `http(s)://localhost`, `127.0.0.0/8` and
    /// `[::1]`, any port.
    Loopback,
    /// Default on other addresses: only an `Origin` whose host and port equal the
    /// request's `Host` (same origin).
    SameHost,
    /// These origins (ASCII serialization, `scheme://host[:port]`, default ports
    /// omitted).
    List(Vec<String>),
}

/// The HMAC key of session bindings (`binding_secret`, or a salt derived from the
/// deployment when it is unset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindingKey {
    /// `binding_secret` as configured.
    Configured(Secret),
    /// SHA-256 of the storage key prefix and the upstream URL: the same on every
    /// instance of a deployment, but guessable by whoever knows both.
    Derived(Secret),
}

impl BindingKey {
    /// The key's bytes, for the HMAC.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            BindingKey::Configured(secret) | BindingKey::Derived(secret) => {
                secret.expose().as_bytes()
            }
        }
    }

    pub(crate) fn derive(storage: &StorageConfig, upstream: &Url) -> BindingKey {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"mcp-proxy session binding salt\0");
        hasher.update(storage.redis.key_prefix.as_bytes());
        hasher.update(b"\0");
        hasher.update(upstream.as_str().as_bytes());
        let hex: String = hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        BindingKey::Derived(Secret::new(hex))
    }
}

/// A rate such as `20/min`: `count` events per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per period (also the burst).
    pub count: u32,
    /// The period.
    pub period: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;

    /// Parses `<count>/<unit>` with unit `s`, `sec`, `m`, `min`, `h` or `hour`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (count, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a rate such as \"20/min\""))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{text}`: `{count}` is not a whole number"))?;
        if count == 0 {
            return Err(format!(
                "`{text}`: the count must be at least 1 (use \"off\")"
            ));
        }
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("`{text}`: unit `{other}` is not one of s, min, h")),
        };
        Ok(Rate { count, period })
    }
}

/// The client-side keys that need more than a copy into `ProxySettings`.
pub(crate) struct ClientSide {
    pub(crate) allowed_origins: AllowedOrigins,
    pub(crate) binding_secret: Option<BindingKey>,
    pub(crate) admin_listen: Option<SocketAddr>,
    pub(crate) admin_token: Option<Secret>,
    pub(crate) initialize_rate: Option<Rate>,
}

/// The client-side keys of `[proxy]` as written (borrowed from the table that
/// [`config`](crate::config) reads), for [`validate_client_side`].
pub(crate) struct ClientKeys<'a> {
    pub(crate) allowed_origins: Option<&'a [String]>,
    pub(crate) binding_secret: Option<&'a str>,
    pub(crate) admin_listen: Option<&'a str>,
    pub(crate) admin_token: Option<&'a str>,
    /// Whether the removed `admin_endpoints` key is set.
    pub(crate) admin_endpoints_set: bool,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) initialize_rate: &'a str,
}

/// Validates the client-side keys; `listen` decides the default of
/// `allowed_origins`. Errors name the key.
pub(crate) fn validate_client_side(
    keys: &ClientKeys<'_>,
    listen: SocketAddr,
) -> Result<ClientSide, ConfigError> {
    if keys.admin_endpoints_set {
        return Err(ConfigError::key(
            "proxy.admin_endpoints",
            "was removed: set proxy.admin_listen (e.g. \"127.0.0.1:8081\") to serve /sessions and /metrics on a separate listener, and proxy.admin_token to require a bearer token there",
        ));
    }
    let allowed_origins = allowed_origins(keys.allowed_origins, listen)?;
    let admin_listen = keys
        .admin_listen
        .map(|text| {
            text.parse::<SocketAddr>().map_err(|_| {
                ConfigError::value(
                    "proxy.admin_listen",
                    format!("{text:?}"),
                    "not a socket address such as 127.0.0.1:8081",
                )
            })
        })
        .transpose()?;
    if admin_listen.is_some_and(|admin| admin == listen && admin.port() != 0) {
        return Err(ConfigError::value(
            "proxy.admin_listen",
            format!("\"{listen}\""),
            "is the MCP listener's address (proxy.listen): the admin endpoints must not be reachable on the MCP port",
        ));
    }
    let secret = |key: &str, value: Option<&str>, min: usize| match value {
        Some(value) if value.len() < min => Err(ConfigError::key(
            format!("proxy.{key}"),
            format!(
                "shorter than {min} bytes: use a long random value (e.g. `openssl rand -hex 32`)"
            ),
        )),
        Some(value) => Ok(Some(Secret::new(value.to_owned()))),
        None => Ok(None),
    };
    let binding_secret =
        secret("binding_secret", keys.binding_secret, 16)?.map(BindingKey::Configured);
    let admin_token = secret("admin_token", keys.admin_token, 16)?;
    for (key, value) in [
        ("header_read_timeout", keys.header_read_timeout),
        ("idle_timeout", keys.idle_timeout),
    ] {
        if value.is_zero() {
            return Err(ConfigError::value(
                format!("proxy.{key}"),
                "\"0s\"",
                "must be longer than 0s",
            ));
        }
    }
    if !(1..=MAX_CONNECTIONS_LIMIT).contains(&keys.max_connections) {
        return Err(ConfigError::value(
            "proxy.max_connections",
            keys.max_connections,
            format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}"),
        ));
    }
    let initialize_rate = match keys.initialize_rate.trim() {
        "off" => None,
        text => Some(
            text.parse::<Rate>()
                .map_err(|error| ConfigError::key("proxy.initialize_rate", error))?,
        ),
    };
    Ok(ClientSide {
        allowed_origins,
        binding_secret,
        admin_listen,
        admin_token,
        initialize_rate,
    })
}

/// `allowed_origins` as written, resolved: unset is [`AllowedOrigins::Loopback`]
/// on a loopback `listen`, else [`AllowedOrigins::SameHost`].
fn allowed_origins(
    configured: Option<&[String]>,
    listen: SocketAddr,
) -> Result<AllowedOrigins, ConfigError> {
    let Some(configured) = configured else {
        return Ok(if listen.ip().is_loopback() {
            AllowedOrigins::Loopback
        } else {
            AllowedOrigins::SameHost
        });
    };
    if configured.iter().any(|origin| origin == "*") {
        return Ok(AllowedOrigins::Any);
    }
    let mut origins = Vec::with_capacity(configured.len());
    for text in configured {
        // Written out as `scheme://host`: `https:/app.example.com` would be
        // repaired silently by the URL parser (as for proxy.upstream).
        let written_out = session_store::parse_url_as_written(
            text,
            &["http", "https"],
            "https://app.example.com",
        )
        .is_ok();
        let origin = serialize_origin(text).filter(|_| written_out).ok_or_else(|| {
            ConfigError::key(
                "proxy.allowed_origins",
                format!("entry `{text}` is not an origin such as https://app.example.com (scheme, host and optional port; no path), nor \"*\""),
            )
        })?;
        origins.push(origin);
    }
    Ok(AllowedOrigins::List(origins))
}

/// The ASCII serialization of an `http(s)` origin (`scheme://host[:port]`, the
/// scheme's default port omitted, host lower-cased), or `None` for anything
/// else: an opaque origin (`null`), another scheme, a path.
pub fn serialize_origin(text: &str) -> Option<String> {
    let url = Url::parse(text).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || !matches!(url.path(), "" | "/")
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, ProxyConfig};

    #[test]
    fn an_allowed_origin_not_written_scheme_slash_slash_is_refused() {
        for origin in [
            "https:/app.example.com",
            "https:app.example.com",
            " https://app.example.com",
        ] {
            let error = crate::config::parse_proxy_keys(&format!(
                "allowed_origins = [\"{}\"]",
                origin.escape_default()
            ))
            .unwrap_err()
            .to_string();
            assert!(
                error.contains("proxy.allowed_origins (from "),
                "{origin}: {error}"
            );
        }
        let config = crate::config::parse_proxy_keys(
            "allowed_origins = [\"https://app.example.com\", \"HTTP://Local:8080\"]",
        )
        .unwrap();
        assert_eq!(
            config.proxy.allowed_origins,
            AllowedOrigins::List(vec![
                "https://app.example.com".to_owned(),
                "http://local:8080".to_owned()
            ])
        );
    }

    #[test]
    fn client_side_defaults() {
        let config = ProxyConfig::from_toml_str(
            "[proxy]\nupstream = \"http://a/mcp\"\n",
            &Overrides::default(),
        )
        .unwrap();
        let proxy = config.proxy;
        assert_eq!(proxy.allowed_origins, AllowedOrigins::Loopback);
        assert_eq!(proxy.session_binding, SessionBinding::Subject);
        assert!(matches!(proxy.binding_key, BindingKey::Derived(_)));
        assert_eq!(proxy.admin_listen, None);
        assert_eq!(proxy.header_read_timeout, Duration::from_secs(10));
        assert_eq!(proxy.idle_timeout, Duration::from_secs(60));
        assert_eq!(proxy.max_connections, 4096);
        assert_eq!(proxy.max_sessions_per_client, 100);
        assert_eq!(
            proxy.initialize_rate,
            Some(Rate {
                count: 20,
                period: Duration::from_secs(60)
            })
        );
        let public = ProxyConfig::from_toml_str(
            "[proxy]\nupstream = \"http://a/mcp\"\nlisten = \"0.0.0.0:8080\"\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(public.proxy.allowed_origins, AllowedOrigins::SameHost);
    }

    #[test]
    fn client_side_values() {
        let config = ProxyConfig::from_toml_str(
            r#"
            [proxy]
            upstream = "http://a/mcp"
            allowed_origins = ["https://App.example.com:443", "http://localhost:3000"]
            session_binding = "token"
            binding_secret = "0123456789abcdef0123456789abcdef"
            admin_listen = "127.0.0.1:9100"
            admin_token = "admin-token-0123456789"
            header_read_timeout = "2s"
            idle_timeout = "5m"
            max_connections = 10
            max_sessions_per_client = 0
            initialize_rate = "off"
            "#,
            &Overrides::default(),
        )
        .unwrap();
        let proxy = config.proxy;
        assert_eq!(
            proxy.allowed_origins,
            AllowedOrigins::List(vec![
                "https://app.example.com".into(),
                "http://localhost:3000".into()
            ])
        );
        assert_eq!(proxy.session_binding, SessionBinding::Token);
        assert!(matches!(proxy.binding_key, BindingKey::Configured(_)));
        assert_eq!(proxy.admin_listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(proxy.initialize_rate, None);
        // Secrets never appear in Debug output.
        let debug = format!("{proxy:?}");
        assert!(
            !debug.contains("0123456789abcdef") && !debug.contains("admin-token"),
            "{debug}"
        );
        let any = ProxyConfig::from_toml_str(
            "[proxy]\nupstream = \"http://a/mcp\"\nallowed_origins = [\"*\"]\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(any.proxy.allowed_origins, AllowedOrigins::Any);
    }

    #[test]
    fn bad_client_side_values_name_their_key() {
        for (line, key) in [
            (
                "allowed_origins = [\"https://a.example/path\"]",
                "proxy.allowed_origins",
            ),
            ("allowed_origins = [\"null\"]", "proxy.allowed_origins"),
            ("session_binding = \"user\"", "session_binding"),
            ("binding_secret = \"short\"", "proxy.binding_secret"),
            ("admin_listen = \"nope\"", "proxy.admin_listen"),
            ("admin_listen = \"127.0.0.1:8080\"", "proxy.admin_listen"),
            ("admin_token = \"short\"", "proxy.admin_token"),
            ("header_read_timeout = \"0s\"", "proxy.header_read_timeout"),
            ("idle_timeout = \"0s\"", "proxy.idle_timeout"),
            ("max_connections = 0", "proxy.max_connections"),
            ("initialize_rate = \"20\"", "proxy.initialize_rate"),
            ("initialize_rate = \"0/min\"", "proxy.initialize_rate"),
            ("initialize_rate = \"20/week\"", "proxy.initialize_rate"),
        ] {
            let toml = format!("[proxy]\nupstream = \"http://a/mcp\"\n{line}\n");
            let error = ProxyConfig::from_toml_str(&toml, &Overrides::default()).unwrap_err();
            assert!(error.to_string().contains(key), "{line}: {error}");
        }
    }

    #[test]
    fn admin_endpoints_is_removed_and_names_admin_listen() {
        for value in ["true", "false"] {
            let error = ProxyConfig::from_toml_str(
                &format!("[proxy]\nupstream = \"http://a/mcp\"\nadmin_endpoints = {value}\n"),
                &Overrides::default(),
            )
            .unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains("admin_endpoints") && message.contains("admin_listen"),
                "{message}"
            );
        }
    }
}
