//! The effective configuration as `check-config` prints it: every `[proxy]` and
//! `[storage]` key with the value the proxy runs with, in the configuration
//! file's own syntax (tables, `key = value`, durations as `"30s"`), one key a
//! line. Secrets print as `"***"`; a key left unset is a comment saying what
//! applies instead.

use std::{fmt::Write as _, path::Path, time::Duration};

use serde::Serialize;
use session_store::{RedisUrl, StorageConfig};

use crate::{
    client_config::{AllowedOrigins, BindingKey, Rate},
    config::ProxySettings,
    upstream::without_credentials,
};

/// A listing being written: tables and their keys.
#[derive(Default)]
struct Listing(String);

impl Listing {
    fn table(&mut self, name: &str) {
        if !self.0.is_empty() {
            self.0.push('\n');
        }
        let _ = writeln!(self.0, "[{name}]");
    }

    fn key(&mut self, key: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{key} = {value}");
    }

    /// A key without a value: a comment saying what applies.
    fn unset(&mut self, key: &str, meaning: &str) {
        let _ = writeln!(self.0, "# {key}: not set ({meaning})");
    }

    fn optional(&mut self, key: &str, value: Option<String>, meaning: &str) {
        match value {
            Some(value) => self.key(key, value),
            None => self.unset(key, meaning),
        }
    }
}

/// A TOML string.
fn quoted(text: &str) -> String {
    format!("{text:?}")
}

/// A duration as the configuration writes it, e.g. `"1m 30s"`.
fn duration(value: Duration) -> String {
    quoted(&duration_text(value))
}

/// Up to this, durations are written in seconds at most (`"60s"`, `"30s"`), as
/// the documentation writes them.
const SECONDS_UP_TO: Duration = Duration::from_secs(60);
/// Below this, durations are written in hours at most (`"24h"`, `"36h"`); from
/// it on in days (`"7d"`).
const DAYS_FROM: Duration = Duration::from_secs(48 * 3600);

/// `value` in the units the documentation uses, largest first, each at most
/// once: `"24h"` (where humantime writes `1day`), `"7d"`, `"60s"`, `"1m 30s"`,
/// `"1h"`, `"250ms"`, `"0s"`. Parses back (humantime) to exactly `value`.
pub(crate) fn duration_text(value: Duration) -> String {
    const UNITS: [(&str, u128); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let mut left = value.as_nanos();
    if left == 0 {
        return "0s".to_owned();
    }
    let units = if value <= SECONDS_UP_TO {
        &UNITS[3..]
    } else if value < DAYS_FROM {
        &UNITS[1..]
    } else {
        &UNITS[..]
    };
    let mut parts = Vec::new();
    for (name, nanos) in units {
        let count = left / nanos;
        if count > 0 {
            parts.push(format!("{count}{name}"));
            left %= nanos;
        }
    }
    parts.join(" ")
}

/// An enum value by the name the configuration uses for it, e.g. `subject`.
pub(crate) fn name_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "?".to_owned(),
    }
}

/// [`name_of`], quoted.
fn named<T: Serialize>(value: &T) -> String {
    quoted(&name_of(value))
}

fn list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.into_iter().map(quoted).collect();
    format!("[{}]", items.join(", "))
}

fn path(value: &Path) -> String {
    quoted(&value.display().to_string())
}

fn rate(rate: &Rate) -> String {
    let unit = match rate.period.as_secs() {
        1 => "s".to_owned(),
        60 => "min".to_owned(),
        3600 => "hour".to_owned(),
        _ => duration_text(rate.period),
    };
    quoted(&format!("{}/{unit}", rate.count))
}

fn redis_urls(nodes: &[RedisUrl]) -> String {
    let nodes: Vec<String> = nodes.iter().map(ToString::to_string).collect();
    list(nodes.iter().map(String::as_str))
}

/// The `[proxy]` and `[storage]` tables with every key, secrets as `"***"` and
/// URLs without their credentials.
pub fn listing(proxy: &ProxySettings, storage: &StorageConfig) -> String {
    let mut out = Listing::default();
    proxy_tables(&mut out, proxy);
    storage_tables(&mut out, storage);
    out.0
}

fn proxy_tables(out: &mut Listing, proxy: &ProxySettings) {
    out.table("proxy");
    out.key("listen", quoted(&proxy.listen.to_string()));
    out.key(
        "upstream",
        quoted(without_credentials(&proxy.upstream).as_str()),
    );
    out.key("endpoint_path", quoted(&proxy.endpoint_path));
    out.key("max_body_bytes", proxy.max_body_bytes);
    out.key("upstream_timeout", duration(proxy.upstream_timeout));
    out.key("shutdown_grace", duration(proxy.shutdown_grace));
    match &proxy.allowed_origins {
        AllowedOrigins::Any => out.key("allowed_origins", list(["*"])),
        AllowedOrigins::List(origins) => {
            out.key("allowed_origins", list(origins.iter().map(String::as_str)));
        }
        AllowedOrigins::Loopback => out.unset(
            "allowed_origins",
            "listen is a loopback address: localhost, 127.0.0.0/8 and [::1] origins, any port",
        ),
        AllowedOrigins::SameHost => out.unset(
            "allowed_origins",
            "only an Origin of the request's own Host",
        ),
    }
    out.key("session_binding", named(&proxy.session_binding));
    match proxy.binding_key {
        BindingKey::Configured(_) => out.key("binding_secret", quoted("***")),
        BindingKey::Derived(_) => out.unset(
            "binding_secret",
            "derived from the storage key prefix and the upstream; set it, the same on every instance",
        ),
    }
    out.optional(
        "admin_listen",
        proxy
            .admin_listen
            .map(|address| quoted(&address.to_string())),
        "no admin listener",
    );
    out.optional(
        "admin_token",
        proxy.admin_token.as_ref().map(|_| quoted("***")),
        "the admin listener asks for no token",
    );
    out.key("header_read_timeout", duration(proxy.header_read_timeout));
    out.key("idle_timeout", duration(proxy.idle_timeout));
    out.key("max_connections", proxy.max_connections);
    out.key("max_sessions_per_client", proxy.max_sessions_per_client);
    out.key(
        "initialize_rate",
        proxy.initialize_rate.as_ref().map_or(quoted("off"), rate),
    );
    out.key("record_stateless", named(&proxy.modern.record_stateless));
    out.key("bridge", named(&proxy.bridge.mode));
    if proxy.bridge.request_state_keys.is_empty() {
        out.unset(
            "bridge_request_state_keys",
            "a key derived from the binding key",
        );
    } else {
        out.key(
            "bridge_request_state_keys",
            list(proxy.bridge.request_state_keys.iter().map(|_| "***")),
        );
    }
    out.key(
        "upstream_body_timeout",
        duration(proxy.upstream_body_timeout),
    );
    let tls = &proxy.upstream_tls;
    for (key, file, meaning) in [
        (
            "upstream_ca_file",
            &tls.ca_file,
            "the system's root certificates",
        ),
        (
            "upstream_client_cert",
            &tls.client_cert,
            "no client certificate",
        ),
        (
            "upstream_client_key",
            &tls.client_key,
            "no client certificate",
        ),
    ] {
        out.optional(key, file.as_deref().map(path), meaning);
    }
    out.key(
        "request_header_deny",
        list(proxy.request_headers.deny.iter().map(|name| name.as_str())),
    );
    out.key("forwarded_headers", proxy.request_headers.forwarded);
    out.optional(
        "public_url",
        proxy
            .public_url
            .as_ref()
            .map(|url| quoted(without_credentials(url).as_str())),
        "derived from each request's Host and X-Forwarded-Proto",
    );
    out.key("rewrite_resource_metadata", proxy.rewrite_resource_metadata);
    out.key(
        "upstream_session_recovery",
        named(&proxy.upstream_session_recovery),
    );
    out.key(
        "upstream_poll_deadline",
        duration(proxy.upstream_poll_deadline),
    );
    out.key("sse_keepalive", duration(proxy.sse_keepalive));
    out.key("worker_threads", proxy.worker_threads.unwrap_or(0));

    out.table("proxy.cache");
    out.key("enabled", proxy.modern.cache.enabled);
    out.key("max_entry_bytes", proxy.modern.cache.max_entry_bytes);
}

fn storage_tables(out: &mut Listing, storage: &StorageConfig) {
    out.table("storage");
    out.key("backend", quoted(storage.backend.as_str()));
    out.key("ttl", duration(storage.ttl));
    out.key(
        "max_lifetime",
        storage.max_lifetime.map_or(quoted("none"), duration),
    );
    out.key("max_frames_per_session", storage.max_frames_per_session);
    out.key("max_frame_bytes", storage.max_frame_bytes);
    out.key("max_session_bytes", storage.max_session_bytes);
    out.key("max_kv_value_bytes", storage.max_kv_value_bytes);
    out.key("max_session_frame_bytes", storage.max_session_frame_bytes);
    out.key("max_read_bytes", storage.max_read_bytes);
    out.key("purge_interval", duration(storage.purge_interval));

    out.table("storage.memory");
    out.optional(
        "max_sessions",
        storage.memory.max_sessions.map(|cap| cap.to_string()),
        "no cap",
    );
    out.key("shards", storage.memory.shards);

    let redis = &storage.redis;
    out.table("storage.redis");
    out.key("url", quoted(&redis.url.to_string()));
    out.optional(
        "username",
        redis.username.as_deref().map(quoted),
        "the URL's, else the default user",
    );
    out.optional(
        "password",
        redis.password.as_ref().map(|_| quoted("***")),
        "the URL's, else none",
    );
    out.key("tls", redis.tls);
    out.key("pool_size", redis.pool_size);
    out.key("connect_timeout", duration(redis.connect_timeout));
    out.key("command_timeout", duration(redis.command_timeout));
    out.key("reconnect_min_delay", duration(redis.reconnect_min_delay));
    out.key("reconnect_max_delay", duration(redis.reconnect_max_delay));
    out.key("reconnect_max_attempts", redis.reconnect_max_attempts);
    out.key("key_prefix", quoted(&redis.key_prefix));
    out.key("index_shards", redis.index_shards);
    out.key("fallback_to_memory", redis.fallback_to_memory);
    out.key("wait_for_replicas", redis.wait_for_replicas);
    out.key("replica_wait_timeout", duration(redis.replica_wait_timeout));
    out.key("near_cache_entries", redis.near_cache_entries);
    out.key("near_cache_max_age", duration(redis.near_cache_max_age));
    if let Some(cluster) = &redis.cluster {
        out.table("storage.redis.cluster");
        out.key("nodes", redis_urls(&cluster.nodes));
    }
    if let Some(sentinel) = &redis.sentinel {
        out.table("storage.redis.sentinel");
        out.key("service_name", quoted(&sentinel.service_name));
        out.key("nodes", redis_urls(&sentinel.nodes));
    }

    let breaker = &redis.breaker;
    out.table("storage.redis.breaker");
    out.key("failure_threshold", breaker.failure_threshold);
    out.key("cool_down", duration(breaker.cool_down));
    out.key("remembered_sessions", breaker.remembered_sessions);
    out.key("journal_max_bytes", breaker.journal_max_bytes);
    out.key("outage_id_grace", duration(breaker.outage_id_grace));
    out.optional(
        "journal_dir",
        breaker.journal_dir.as_deref().map(path),
        "the journal is kept in memory only",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProxyConfig, PROXY_KEYS};

    fn listed(toml: &str) -> String {
        let config = ProxyConfig::from_toml_str(toml, &crate::config::Overrides::default())
            .unwrap_or_else(|error| panic!("{error}"));
        listing(&config.proxy, &config.storage)
    }

    /// The keys a listing names, set or not, with their table.
    fn keys_of(listing: &str) -> Vec<String> {
        let mut table = String::new();
        let mut keys = Vec::new();
        for line in listing.lines() {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = name.to_owned();
            } else if let Some((key, _)) = line
                .trim_start_matches("# ")
                .split_once(" = ")
                .or_else(|| line.trim_start_matches("# ").split_once(": not set"))
            {
                keys.push(format!("{table}.{key}"));
            }
        }
        keys
    }

    #[test]
    fn every_proxy_key_is_listed_once() {
        let keys = keys_of(&listed("[proxy]\nupstream = \"http://127.0.0.1:9/mcp\"\n"));
        // admin_endpoints is removed: read only to name its replacement.
        for key in PROXY_KEYS.iter().filter(|key| **key != "admin_endpoints") {
            let key = format!("proxy.{key}");
            assert_eq!(
                keys.iter().filter(|listed| **listed == key).count(),
                1,
                "{key} in {keys:?}"
            );
        }
        assert!(keys.contains(&"proxy.cache.max_entry_bytes".to_owned()));
        assert!(keys.contains(&"storage.redis.breaker.journal_dir".to_owned()));
    }

    #[test]
    fn the_listing_reads_back_as_the_same_configuration() {
        let toml = "[proxy]\nupstream = \"http://127.0.0.1:9/mcp\"\nupstream_timeout = \"90s\"\n\
                    allowed_origins = [\"https://app.example.com\"]\ninitialize_rate = \"5/min\"\n\
                    request_header_deny = [\"x-internal\"]\n\
                    [storage]\nbackend = \"redis\"\nmax_lifetime = \"7d\"\n\
                    [storage.redis]\nurl = \"redis://cache:6380/2\"\n\
                    [storage.redis.breaker]\njournal_dir = \"/var/lib/mcp-proxy\"\n";
        let printed = listed(toml);
        println!("{printed}");
        let again = listed(&printed);
        assert_eq!(again, printed);
        assert!(
            printed.contains("upstream_timeout = \"1m 30s\"\n"),
            "{printed}"
        );
        assert!(
            printed.contains("initialize_rate = \"5/min\"\n"),
            "{printed}"
        );
        assert!(printed.contains("backend = \"redis\"\n"), "{printed}");
        assert!(!printed.contains("Some("), "no Debug forms: {printed}");
    }

    #[test]
    fn durations_print_as_the_docs_write_them_and_parse_back() {
        for (value, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_micros(1_500), "1ms 500us"),
            (Duration::from_secs(60), "60s"),
            (Duration::from_secs(90), "1m 30s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(600), "10m"),
            (Duration::from_secs(24 * 3600), "24h"),
            (Duration::from_secs(36 * 3600 + 1), "36h 1s"),
            (Duration::from_secs(48 * 3600), "2d"),
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::from_secs(7 * 86_400 + 3600), "7d 1h"),
            (Duration::new(5, 7), "5s 7ns"),
        ] {
            assert_eq!(duration_text(value), text, "{value:?}");
        }
        // Every duration parses back to itself, whatever its units.
        let mut value = Duration::from_nanos(1);
        while value < Duration::from_secs(400 * 86_400) {
            let text = duration_text(value);
            assert_eq!(humantime::parse_duration(&text).unwrap(), value, "{text}");
            value = value * 3 + Duration::from_nanos(value.subsec_nanos().into()) / 2;
        }
        // The defaults, as docs/configuration.md and docs/proxy.md write them.
        let printed = listed("[proxy]\nupstream = \"http://127.0.0.1:9/mcp\"\n");
        for line in [
            "ttl = \"24h\"",
            "max_lifetime = \"7d\"",
            "idle_timeout = \"60s\"",
        ] {
            assert!(printed.lines().any(|l| l == line), "{line} in {printed}");
        }
    }

    #[test]
    fn secrets_print_as_stars() {
        let printed = listed(
            "[proxy]\nupstream = \"http://user:s3cret-upstream@127.0.0.1:9/mcp\"\n\
             admin_listen = \"127.0.0.1:0\"\nadmin_token = \"s3cret-admin-token-0123\"\n\
             binding_secret = \"s3cret-binding-key-01234\"\n\
             bridge_request_state_keys = [\"s3cret-request-state-key-0123456789\"]\n\
             [storage.redis]\nurl = \"redis://:s3cret-redis@127.0.0.1:9/0\"\n\
             password = \"s3cret-password\"\n",
        );
        assert!(!printed.contains("s3cret"), "{printed}");
        for key in [
            "admin_token",
            "binding_secret",
            "bridge_request_state_keys",
            "password",
        ] {
            assert!(
                printed
                    .lines()
                    .any(|line| line.starts_with(key) && line.contains("***")),
                "{key}: {printed}"
            );
        }
    }
}
