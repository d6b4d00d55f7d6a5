//! `RedisConfig`: where Redis is and how to talk to it, validated before any I/O.

use std::{fmt, time::Duration};

use fred::{
    prelude::{Config as FredConfig, ReconnectPolicy, ServerConfig},
    types::config::Server,
};
use session_store_core::{Error, Result};
use url::Url;

/// Where the Redis deployment is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One server (or a proxy in front of several), e.g. `redis://10.0.0.1:6379/0`.
    /// `rediss://` turns TLS on; credentials in the URL are used when the config's
    /// `username`/`password` are unset.
    Standalone {
        /// `redis://` or `rediss://` URL.
        url: String,
    },
    /// A Redis Cluster. One reachable node is enough; the rest are discovered.
    Cluster {
        /// `host:port` or `redis://host:port` (`rediss://` turns TLS on).
        nodes: Vec<String>,
    },
    /// A primary found through Redis Sentinel.
    Sentinel {
        /// The monitored primary's name (`sentinel monitor <name> ...`).
        service_name: String,
        /// Sentinel nodes, `host:port` or `redis://host:port`.
        nodes: Vec<String>,
    },
}

/// How [`RedisStore`](crate::RedisStore) connects to Redis and names its keys.
///
/// A plain struct: the `session-store` facade maps its `[storage.redis]` TOML into
/// it. [`RedisStore::connect`](crate::RedisStore::connect) validates it first.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Standalone, cluster or sentinel.
    pub topology: Topology,
    /// ACL user name (Redis 6+), if any.
    pub username: Option<String>,
    /// Password (`AUTH`); never printed by `Debug` nor put in error messages.
    pub password: Option<String>,
    /// Use TLS (rustls, system roots). A `rediss://` URL implies it.
    pub tls: bool,
    /// Connections in the pool, at least 1.
    pub pool_size: usize,
    /// Limit on establishing a connection (TCP, TLS, AUTH); also bounds
    /// [`connect`](crate::RedisStore::connect) when Redis is unreachable.
    pub connect_timeout: Duration,
    /// Limit on every command or pipeline; a late answer is
    /// [`Error::Unavailable`].
    pub command_timeout: Duration,
    /// First delay before reconnecting after a lost connection.
    pub reconnect_min_delay: Duration,
    /// Longest delay between reconnect attempts (exponential backoff up to it).
    pub reconnect_max_delay: Duration,
    /// Reconnect attempts before giving up; 0 retries forever.
    pub reconnect_max_attempts: u32,
    /// First part of every key (`<key_prefix>:{<id>}:meta`). No `{`, `}` or
    /// whitespace: a brace would break the per-session hash tag.
    pub key_prefix: String,
    /// Buckets of the list and expiry indexes, at least 1. Spreads index writes
    /// over cluster slots; changing it on a live deployment orphans index entries
    /// until the sessions expire (they are still readable by id).
    pub index_shards: u16,
    /// Replicas that must acknowledge every write before it returns (`WAIT`);
    /// 0 (the default) does not wait. Replication is asynchronous, so without it a
    /// write acknowledged by the primary can be lost in a failover. A write that
    /// is not acknowledged by this many replicas within
    /// [`replica_wait_timeout`](Self::replica_wait_timeout) is
    /// [`Error::Unavailable`] (it may still have been applied).
    pub wait_for_replicas: u32,
    /// How long a write waits for [`wait_for_replicas`](Self::wait_for_replicas)
    /// acknowledgements; keep it below `command_timeout`.
    pub replica_wait_timeout: Duration,
    /// Sessions the near cache keeps in memory; 0 (the default) turns it off.
    ///
    /// With it on, [`get`](session_store_core::SessionStore::get) of a session
    /// this instance read before is answered from memory with no round trip,
    /// until Redis reports the session changed, expired or deleted by any
    /// instance (RESP3 client tracking on one extra connection; Redis 6 or
    /// later), this instance writes it, or
    /// [`near_cache_max_age`](Self::near_cache_max_age) passes. Standalone and
    /// sentinel only: refused with a cluster. Each entry holds one decoded
    /// session (its size in memory is about its record's).
    pub near_cache_entries: usize,
    /// How long a cached session is served without reading Redis again
    /// (default 10 s): the bound on staleness when an invalidation cannot
    /// arrive, i.e. a tracking connection that died without the client
    /// noticing yet, or `FLUSHALL`/`FLUSHDB` (fred 10.1 drops the null
    /// invalidation Redis sends for them). Must be greater than zero.
    pub near_cache_max_age: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            topology: Topology::Standalone {
                url: "redis://127.0.0.1:6379".to_owned(),
            },
            username: None,
            password: None,
            tls: false,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(1),
            reconnect_min_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(10),
            reconnect_max_attempts: 0,
            key_prefix: "mcp".to_owned(),
            index_shards: 16,
            wait_for_replicas: 0,
            replica_wait_timeout: Duration::from_millis(500),
            near_cache_entries: 0,
            near_cache_max_age: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("topology", &self.redacted_topology())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("reconnect_min_delay", &self.reconnect_min_delay)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("reconnect_max_attempts", &self.reconnect_max_attempts)
            .field("key_prefix", &self.key_prefix)
            .field("index_shards", &self.index_shards)
            .field("wait_for_replicas", &self.wait_for_replicas)
            .field("replica_wait_timeout", &self.replica_wait_timeout)
            .field("near_cache_entries", &self.near_cache_entries)
            .field("near_cache_max_age", &self.near_cache_max_age)
            .finish()
    }
}

/// A config checked and translated for fred, plus what error messages may show.
pub(crate) struct ResolvedConfig {
    pub(crate) fred: FredConfig,
    pub(crate) policy: ReconnectPolicy,
    /// The addresses, without credentials: safe to put in an error message.
    pub(crate) address: String,
    /// `standalone`, `cluster` or `sentinel`, for health details.
    pub(crate) mode: &'static str,
}

impl RedisConfig {
    /// Checks every value; the message names the offending key.
    pub fn validate(&self) -> Result<()> {
        self.resolve().map(|_| ())
    }

    fn redacted_topology(&self) -> Topology {
        match &self.topology {
            Topology::Standalone { url } => Topology::Standalone { url: redact(url) },
            Topology::Cluster { nodes } => Topology::Cluster {
                nodes: nodes.iter().map(|n| redact(n)).collect(),
            },
            Topology::Sentinel {
                service_name,
                nodes,
            } => Topology::Sentinel {
                service_name: service_name.clone(),
                nodes: nodes.iter().map(|n| redact(n)).collect(),
            },
        }
    }

    pub(crate) fn resolve(&self) -> Result<ResolvedConfig> {
        validate_key_prefix(&self.key_prefix)?;
        if self.index_shards == 0 {
            return Err(Error::config("redis.index_shards must be at least 1"));
        }
        if self.pool_size == 0 {
            return Err(Error::config("redis.pool_size must be at least 1"));
        }
        if self.near_cache_entries > 0 && matches!(self.topology, Topology::Cluster { .. }) {
            return Err(Error::config(
                "redis.near_cache_entries must be 0 with a cluster: the near cache relies on \
                 CLIENT TRACKING, which fred 10.1 does not turn on for the connections it opens \
                 to a slot's new owner, so an invalidation could be missed",
            ));
        }
        for (name, value) in [
            ("redis.connect_timeout", self.connect_timeout),
            ("redis.command_timeout", self.command_timeout),
            ("redis.near_cache_max_age", self.near_cache_max_age),
        ] {
            if value.is_zero() {
                return Err(Error::config(format!("{name} must be greater than zero")));
            }
        }
        if self.wait_for_replicas > 0 {
            if self.replica_wait_timeout.as_millis() == 0 {
                return Err(Error::config(
                    "redis.replica_wait_timeout must be at least 1ms when redis.wait_for_replicas is set",
                ));
            }
            if self.replica_wait_timeout >= self.command_timeout {
                return Err(Error::config(format!(
                    "redis.replica_wait_timeout ({:?}) must be shorter than redis.command_timeout ({:?}): \
                     the write and its WAIT share one command timeout",
                    self.replica_wait_timeout, self.command_timeout
                )));
            }
        }
        if self.reconnect_min_delay > self.reconnect_max_delay {
            return Err(Error::config(
                "redis.reconnect_min_delay must not exceed redis.reconnect_max_delay",
            ));
        }

        let mut tls = self.tls;
        let (server, address, mode, nodes, key) = match &self.topology {
            Topology::Standalone { url } => {
                let node = parse_node(url, "redis.url")?;
                let address = node.address();
                let server = ServerConfig::Centralized {
                    server: Server::new(node.host.clone(), node.port),
                };
                (server, address, "standalone", vec![node], "redis.url")
            }
            Topology::Cluster { nodes } => {
                let key = "redis.cluster.nodes";
                let parsed = parse_nodes(nodes, key)?;
                if let Some(node) = parsed.iter().find(|n| n.database.unwrap_or(0) != 0) {
                    return Err(Error::config(format!(
                        "{key}: `{}` selects database {}, but Redis Cluster has only database 0 \
                         (remove the /<db> path)",
                        node.address(),
                        node.database.unwrap_or(0)
                    )));
                }
                let address = join_addresses(&parsed);
                let hosts = parsed.iter().map(|n| (n.host.clone(), n.port)).collect();
                (
                    ServerConfig::new_clustered(hosts),
                    address,
                    "cluster",
                    parsed,
                    key,
                )
            }
            Topology::Sentinel {
                service_name,
                nodes,
            } => {
                if service_name.trim().is_empty() {
                    return Err(Error::config(
                        "redis.sentinel.service_name must not be empty",
                    ));
                }
                let key = "redis.sentinel.nodes";
                let parsed = parse_nodes(nodes, key)?;
                let address = format!("sentinel {} of {}", service_name, join_addresses(&parsed));
                let hosts = parsed.iter().map(|n| (n.host.clone(), n.port)).collect();
                (
                    ServerConfig::new_sentinel(hosts, service_name.clone()),
                    address,
                    "sentinel",
                    parsed,
                    key,
                )
            }
        };
        tls |= nodes.iter().any(|n| n.tls);
        let url_credentials = agreed(&nodes, key, "credentials", |n| {
            (n.username.clone(), n.password.clone())
        })?
        .unwrap_or((None, None));
        let database = agreed(&nodes, key, "database", |n| n.database)?
            .flatten()
            .filter(|_| mode != "cluster");

        let mut fred = FredConfig {
            server,
            username: self.username.clone().or(url_credentials.0),
            password: self.password.clone().or(url_credentials.1),
            database,
            // Connect reports the first failure instead of retrying forever; the
            // reconnect policy applies once connected.
            fail_fast: true,
            ..FredConfig::default()
        };
        if tls {
            let connector = fred::types::config::TlsConnector::default_rustls().map_err(|e| {
                Error::config(format!(
                    "redis.tls: cannot build a rustls connector from the system roots: {e}"
                ))
            })?;
            fred.tls = Some(connector.into());
        }

        let policy = ReconnectPolicy::new_exponential(
            self.reconnect_max_attempts,
            millis_u32(self.reconnect_min_delay).max(1),
            millis_u32(self.reconnect_max_delay).max(1),
            2,
        );
        Ok(ResolvedConfig {
            fred,
            policy,
            address,
            mode,
        })
    }
}

fn validate_key_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Err(Error::config("redis.key_prefix must not be empty"));
    }
    if let Some(bad) = prefix
        .chars()
        .find(|c| *c == '{' || *c == '}' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::config(format!(
            "redis.key_prefix `{prefix}` contains {bad:?}; braces would break the per-session \
             hash tag and whitespace is not allowed"
        )));
    }
    Ok(())
}

fn millis_u32(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

struct Node {
    host: String,
    port: u16,
    tls: bool,
    username: Option<String>,
    password: Option<String>,
    /// The `/<db>` path, when given.
    database: Option<u8>,
}

/// The value `of` gives for every node that sets it (credentials, database),
/// or a config error naming `key` when two nodes disagree. `None` when no node
/// sets it.
fn agreed<T: PartialEq + Default>(
    nodes: &[Node],
    key: &str,
    what: &str,
    of: impl Fn(&Node) -> T,
) -> Result<Option<T>> {
    let mut found: Option<(T, String)> = None;
    for node in nodes {
        let value = of(node);
        if value == T::default() {
            continue;
        }
        match &found {
            Some((first, address)) if *first != value => {
                return Err(Error::config(format!(
                    "{key}: `{address}` and `{}` give different {what}; give the same on \
                     every node (or set them once in redis.username / redis.password)",
                    node.address()
                )))
            }
            Some(_) => {}
            None => found = Some((value, node.address())),
        }
    }
    Ok(found.map(|(value, _)| value))
}

impl Node {
    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn join_addresses(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(Node::address)
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_nodes(nodes: &[String], key: &str) -> Result<Vec<Node>> {
    if nodes.is_empty() {
        return Err(Error::config(format!(
            "{key} must list at least one host:port"
        )));
    }
    nodes.iter().map(|n| parse_node(n, key)).collect()
}

/// Accepts `redis://[user:pass@]host[:port][/db]`, `rediss://...` or bare `host:port`.
fn parse_node(text: &str, key: &str) -> Result<Node> {
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("redis://{text}")
    };
    let bad = |why: &str| {
        Error::config(format!(
            "{key}: `{}` is not a Redis address: {why}",
            redact(text)
        ))
    };
    let url = Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
    let tls = match url.scheme() {
        "redis" | "valkey" => false,
        "rediss" | "valkeys" => true,
        other => {
            return Err(bad(&format!(
                "scheme `{other}` (expected redis:// or rediss://)"
            )))
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let username = Some(url.username().to_owned()).filter(|u| !u.is_empty());
    let password = url.password().map(str::to_owned);
    let path = url.path().trim_start_matches('/');
    let database = if path.is_empty() {
        None
    } else {
        Some(path.parse::<u8>().map_err(|_| {
            bad(&format!(
                "the path `/{path}` must be a database number (e.g. redis://host:6379/3)"
            ))
        })?)
    };
    Ok(Node {
        host,
        port: url.port().unwrap_or(6379),
        tls,
        username,
        password,
        database,
    })
}

/// `text` with any password in it replaced, for messages and `Debug`.
pub(crate) fn redact(text: &str) -> String {
    match Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("<redacted>"));
            url.to_string()
        }
        Ok(url) if url.has_host() => text.to_owned(),
        // Not a URL with a host (`user:pass@host:port` parses as a URL of
        // scheme `user`, its password in the path): only an `@` can hide
        // credentials.
        _ => match text.rsplit_once('@') {
            Some((_, host)) => format!("<redacted>@{host}"),
            None => text.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_errors_never_show_the_password() {
        let config = RedisConfig {
            topology: Topology::Standalone {
                url: "redis://u:s3cret@db:6380".into(),
            },
            password: Some("hunter2".into()),
            ..RedisConfig::default()
        };
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("hunter2"),
            "{debug}"
        );
        let resolved = config.resolve().unwrap();
        assert_eq!(resolved.address, "db:6380");
        assert_eq!(resolved.fred.password.as_deref(), Some("hunter2"));

        let bad = RedisConfig {
            topology: Topology::Standalone {
                url: "http://u:s3cret@db".into(),
            },
            ..RedisConfig::default()
        };
        let message = bad.validate().unwrap_err().to_string();
        assert!(
            message.contains("redis.url") && !message.contains("s3cret"),
            "{message}"
        );
    }

    #[test]
    fn debug_redacts_every_node_of_a_cluster_or_sentinel_also_when_not_a_url() {
        let cluster = RedisConfig {
            topology: Topology::Cluster {
                nodes: vec!["redis://u:s3cret@a:7000".into(), "u:s3cret@b:7001".into()],
            },
            ..RedisConfig::default()
        };
        let sentinel = RedisConfig {
            topology: Topology::Sentinel {
                service_name: "primary".into(),
                nodes: vec!["u:s3cret@c:26379".into(), "d:26379".into()],
            },
            ..RedisConfig::default()
        };
        for config in [cluster, sentinel] {
            let debug = format!("{config:?}");
            assert!(!debug.contains("s3cret"), "{debug}");
            assert!(debug.contains("<redacted>"), "{debug}");
        }
        assert_eq!(redact("u:s3cret@b:7001"), "<redacted>@b:7001");
        assert_eq!(redact("d:26379"), "d:26379");
    }

    #[test]
    fn url_credentials_and_rediss_are_used() {
        let config = RedisConfig {
            topology: Topology::Standalone {
                url: "redis://alice:pw@127.0.0.1:7000/0".into(),
            },
            ..RedisConfig::default()
        };
        let resolved = config.resolve().unwrap();
        assert_eq!(resolved.fred.username.as_deref(), Some("alice"));
        assert_eq!(resolved.fred.password.as_deref(), Some("pw"));
        assert!(resolved.fred.tls.is_none());
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        let cases: Vec<(RedisConfig, &str)> = vec![
            (
                RedisConfig {
                    key_prefix: "a{b".into(),
                    ..Default::default()
                },
                "redis.key_prefix",
            ),
            (
                RedisConfig {
                    key_prefix: "a b".into(),
                    ..Default::default()
                },
                "redis.key_prefix",
            ),
            (
                RedisConfig {
                    key_prefix: String::new(),
                    ..Default::default()
                },
                "redis.key_prefix",
            ),
            (
                RedisConfig {
                    index_shards: 0,
                    ..Default::default()
                },
                "redis.index_shards",
            ),
            (
                RedisConfig {
                    pool_size: 0,
                    ..Default::default()
                },
                "redis.pool_size",
            ),
            (
                RedisConfig {
                    command_timeout: Duration::ZERO,
                    ..Default::default()
                },
                "redis.command_timeout",
            ),
            (
                RedisConfig {
                    topology: Topology::Cluster { nodes: vec![] },
                    ..Default::default()
                },
                "redis.cluster.nodes",
            ),
            (
                RedisConfig {
                    wait_for_replicas: 1,
                    replica_wait_timeout: Duration::ZERO,
                    ..Default::default()
                },
                "redis.replica_wait_timeout must be at least 1ms",
            ),
            (
                RedisConfig {
                    wait_for_replicas: 1,
                    replica_wait_timeout: Duration::from_secs(2),
                    command_timeout: Duration::from_secs(1),
                    ..Default::default()
                },
                "must be shorter than redis.command_timeout",
            ),
            (
                RedisConfig {
                    reconnect_min_delay: Duration::from_secs(20),
                    reconnect_max_delay: Duration::from_secs(10),
                    ..Default::default()
                },
                "redis.reconnect_min_delay must not exceed redis.reconnect_max_delay",
            ),
            (
                RedisConfig {
                    topology: Topology::Sentinel {
                        service_name: " ".into(),
                        nodes: vec!["redis://127.0.0.1:26379".into()],
                    },
                    ..Default::default()
                },
                "redis.sentinel.service_name must not be empty",
            ),
            (
                RedisConfig {
                    topology: Topology::Cluster {
                        nodes: vec!["redis://127.0.0.1:7000".into()],
                    },
                    near_cache_entries: 1_000,
                    ..Default::default()
                },
                "redis.near_cache_entries must be 0 with a cluster",
            ),
        ];
        for (config, key) in cases {
            match config.validate() {
                Err(Error::Config(message)) => assert!(message.contains(key), "{message}"),
                other => panic!("expected Config error naming {key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_database_in_the_url_is_selected_and_bad_paths_are_config_errors() {
        let standalone = |url: &str| RedisConfig {
            topology: Topology::Standalone { url: url.into() },
            ..RedisConfig::default()
        };
        let resolved = standalone("redis://127.0.0.1:6379/3").resolve().unwrap();
        assert_eq!(resolved.fred.database, Some(3));
        assert_eq!(
            standalone("redis://127.0.0.1:6379")
                .resolve()
                .unwrap()
                .fred
                .database,
            None
        );
        let sentinel = RedisConfig {
            topology: Topology::Sentinel {
                service_name: "main".into(),
                nodes: vec!["redis://127.0.0.1:26379/2".into(), "127.0.0.1:26380".into()],
            },
            ..RedisConfig::default()
        };
        assert_eq!(sentinel.resolve().unwrap().fred.database, Some(2));
        let cluster = |nodes: &[&str]| RedisConfig {
            topology: Topology::Cluster {
                nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            },
            ..RedisConfig::default()
        };
        for (config, key) in [
            (standalone("redis://127.0.0.1:6379/x"), "redis.url"),
            (standalone("redis://127.0.0.1:6379/300"), "redis.url"),
            (
                cluster(&["redis://127.0.0.1:7000/1"]),
                "redis.cluster.nodes",
            ),
        ] {
            match config.validate() {
                Err(Error::Config(message)) => assert!(message.contains(key), "{message}"),
                other => panic!("expected a Config error naming {key}, got {other:?}"),
            }
        }
        assert_eq!(
            cluster(&["redis://127.0.0.1:7000/0"])
                .resolve()
                .unwrap()
                .fred
                .database,
            None
        );
    }

    #[test]
    fn credentials_in_cluster_and_sentinel_node_urls_are_used() {
        let cluster = RedisConfig {
            topology: Topology::Cluster {
                nodes: vec![
                    "redis://app:pw@127.0.0.1:7000".into(),
                    "127.0.0.1:7001".into(),
                ],
            },
            ..RedisConfig::default()
        };
        let resolved = cluster.resolve().unwrap();
        assert_eq!(resolved.fred.username.as_deref(), Some("app"));
        assert_eq!(resolved.fred.password.as_deref(), Some("pw"));
        assert!(!resolved.address.contains("pw"));
        let sentinel = RedisConfig {
            topology: Topology::Sentinel {
                service_name: "main".into(),
                nodes: vec!["redis://:secret@127.0.0.1:26379".into()],
            },
            ..RedisConfig::default()
        };
        assert_eq!(
            sentinel.resolve().unwrap().fred.password.as_deref(),
            Some("secret")
        );
        let disagreeing = RedisConfig {
            topology: Topology::Cluster {
                nodes: vec![
                    "redis://a:one@127.0.0.1:7000".into(),
                    "redis://a:two@127.0.0.1:7001".into(),
                ],
            },
            ..RedisConfig::default()
        };
        match disagreeing.validate() {
            Err(Error::Config(message)) => {
                assert!(message.contains("redis.cluster.nodes"), "{message}");
                assert!(
                    !message.contains("one") && !message.contains("two"),
                    "{message}"
                );
            }
            other => panic!("expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn cluster_nodes_accept_host_port_and_urls() {
        let config = RedisConfig {
            topology: Topology::Cluster {
                nodes: vec!["127.0.0.1:7001".into(), "redis://127.0.0.1:7002".into()],
            },
            ..RedisConfig::default()
        };
        let resolved = config.resolve().unwrap();
        assert_eq!(resolved.address, "127.0.0.1:7001, 127.0.0.1:7002");
        assert_eq!(resolved.mode, "cluster");
    }
}
