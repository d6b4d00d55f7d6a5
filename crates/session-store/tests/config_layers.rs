//! Loading `[storage]`: defaults < TOML file < environment < overrides, human
//! durations, and the proxy's nested form. The default backend is memory, so these
//! need the `memory` feature.
#![cfg(feature = "memory")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// `figment::Jail` closures must return `figment::Result`, whose error is large.
#![allow(clippy::result_large_err)]

use std::{path::Path, time::Duration};

use figment::{
    providers::{Format, Toml},
    Figment, Jail,
};
use session_store::{Backend, StorageConfig, StorageOverrides, StoreSettings, STORAGE_KEY};

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn empty_storage_table_is_every_default() {
    let config = StorageConfig::from_toml_str("[storage]").unwrap();
    assert_eq!(config, StorageConfig::default());
    assert_eq!(config.backend, Backend::Memory);
    assert_eq!(config.settings(), StoreSettings::default());
    assert_eq!(config.purge_interval, Duration::from_secs(60));
    assert_eq!(config.redis.pool_size, 8);
    assert_eq!(config.redis.key_prefix, "mcp");
    assert_eq!(config.redis.breaker.failure_threshold, 5);
}

#[test]
fn missing_storage_table_is_every_default() {
    let config = StorageConfig::from_toml_str("[proxy]\nlisten = \"127.0.0.1:0\"").unwrap();
    assert_eq!(config, StorageConfig::default());
}

#[test]
fn file_overrides_defaults_env_overrides_file_and_overrides_win() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "storage.toml",
            r#"
            [storage]
            ttl = "1h"
            max_frames_per_session = 50
            [storage.redis]
            pool_size = 2
            key_prefix = "from-file"
            "#,
        )?;
        jail.set_env("SESSION_STORE_TTL", "2h");
        jail.set_env("SESSION_STORE_REDIS__POOL_SIZE", "4");
        let overrides = StorageOverrides::new().set("ttl", "3h");

        let config =
            StorageConfig::load_with_overrides(Some(Path::new("storage.toml")), overrides).unwrap();
        assert_eq!(config.ttl, 3 * HOUR, "override beats env and file");
        assert_eq!(config.redis.pool_size, 4, "env beats file");
        assert_eq!(config.redis.key_prefix, "from-file", "file beats default");
        assert_eq!(config.max_frames_per_session, 50);
        assert_eq!(
            config.max_frame_bytes,
            4 * 1024 * 1024,
            "default where no layer sets it"
        );

        let without_overrides = StorageConfig::load(Some(Path::new("storage.toml"))).unwrap();
        assert_eq!(without_overrides.ttl, 2 * HOUR);
        Ok(())
    });
}

#[test]
fn env_alone_configures_nested_tables() {
    Jail::expect_with(|jail| {
        jail.set_env("SESSION_STORE_BACKEND", "memory");
        jail.set_env("SESSION_STORE_MEMORY__MAX_SESSIONS", "1000");
        jail.set_env("SESSION_STORE_REDIS__PASSWORD", "1234");
        jail.set_env(
            "SESSION_STORE_REDIS__CLUSTER__NODES",
            "[\"redis://10.0.0.1:6379\", \"rediss://10.0.0.2:6379\"]",
        );
        jail.set_env("SESSION_STORE_REDIS__BREAKER__COOL_DOWN", "250ms");
        let config = StorageConfig::load(None).unwrap();
        assert_eq!(config.memory.max_sessions, Some(1000));
        assert_eq!(config.redis.password.as_ref().unwrap().expose(), "1234");
        let nodes = &config.redis.cluster.as_ref().unwrap().nodes;
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].as_str(), "rediss://10.0.0.2:6379");
        assert!(config.redis.tls_enabled(), "a rediss:// node implies TLS");
        assert_eq!(config.redis.breaker.cool_down, Duration::from_millis(250));
        Ok(())
    });
}

#[test]
fn durations_are_human_strings() {
    let config = StorageConfig::from_toml_str(
        r#"
        [storage]
        ttl = "1h 30m"
        max_lifetime = "7d"
        purge_interval = "90s"
        [storage.redis]
        command_timeout = "250ms"
        "#,
    )
    .unwrap();
    assert_eq!(config.ttl, Duration::from_secs(90 * 60));
    assert_eq!(
        config.max_lifetime,
        Some(Duration::from_secs(7 * 24 * 3600))
    );
    assert_eq!(config.purge_interval, Duration::from_secs(90));
    assert_eq!(config.redis.command_timeout, Duration::from_millis(250));
}

#[test]
fn max_lifetime_none_means_unbounded_and_absent_means_seven_days() {
    let unbounded = StorageConfig::from_toml_str("[storage]\nmax_lifetime = \"none\"").unwrap();
    assert_eq!(unbounded.max_lifetime, None);
    assert_eq!(unbounded.settings().max_lifetime, None);
    let absent = StorageConfig::from_toml_str("[storage]").unwrap();
    assert_eq!(
        absent.max_lifetime,
        Some(Duration::from_secs(7 * 24 * 3600))
    );
}

#[test]
fn settings_maps_the_policy_fields() {
    let config = StorageConfig::from_toml_str(
        r#"
        [storage]
        ttl = "10m"
        max_lifetime = "1h"
        max_frames_per_session = 7
        max_frame_bytes = 1024
        max_session_bytes = 512
        max_session_frame_bytes = 4096
        max_read_bytes = 2048
        "#,
    )
    .unwrap();
    let expected = StoreSettings {
        ttl: Duration::from_secs(600),
        max_lifetime: Some(HOUR),
        max_frames_per_session: 7,
        max_frame_bytes: 1024,
        max_session_bytes: 512,
        max_kv_value_bytes: 64 * 1024,
        max_session_frame_bytes: 4096,
        max_read_bytes: 2048,
    };
    assert_eq!(config.settings(), expected);
}

#[test]
fn proxy_file_nests_storage_among_its_own_tables() {
    let figment = Figment::from(Toml::string(
        r#"
        [proxy]
        listen = "127.0.0.1:0"
        upstream = "http://127.0.0.1:9"

        [storage]
        ttl = "2h"
        [storage.redis]
        url = "rediss://cache.internal:6380"
        "#,
    ));
    let config = StorageConfig::from_figment(&figment, STORAGE_KEY).unwrap();
    assert_eq!(config.ttl, 2 * HOUR);
    assert!(config.redis.tls_enabled());
}

#[test]
fn from_figment_reads_any_key_path() {
    let figment = Figment::from(Toml::string("[app.storage]\nttl = \"5m\""));
    let config = StorageConfig::from_figment(&figment, "app.storage").unwrap();
    assert_eq!(config.ttl, Duration::from_secs(300));
}

#[test]
fn secrets_are_hidden_from_debug() {
    let config = StorageConfig::from_toml_str(
        r#"
        [storage.redis]
        url = "redis://app:hunter2@10.0.0.1:6379"
        password = "s3cret"
        "#,
    )
    .unwrap();
    let printed = format!("{config:?}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(printed.contains("password: Some(***)"), "{printed}");
    assert_eq!(
        config.redis.url.as_str(),
        "redis://app:hunter2@10.0.0.1:6379"
    );
    assert_eq!(config.redis.password.as_ref().unwrap().expose(), "s3cret");
}

#[test]
fn string_keys_take_env_values_that_look_like_numbers_or_booleans() {
    Jail::expect_with(|jail| {
        jail.set_env("SESSION_STORE_REDIS__USERNAME", "-7");
        jail.set_env("SESSION_STORE_REDIS__KEY_PREFIX", "true");
        jail.set_env("SESSION_STORE_REDIS__SENTINEL__SERVICE_NAME", "1.5");
        jail.set_env(
            "SESSION_STORE_REDIS__SENTINEL__NODES",
            "[\"redis://127.0.0.1:26379\"]",
        );
        let config = StorageConfig::load(None).unwrap();
        assert_eq!(config.redis.username.as_deref(), Some("-7"));
        assert_eq!(config.redis.key_prefix, "true");
        assert_eq!(config.redis.sentinel.unwrap().service_name, "1.5");
        Ok(())
    });
}

#[test]
fn a_bad_max_lifetime_shows_both_accepted_forms() {
    let error = StorageConfig::from_toml_str("[storage]\nmax_lifetime = \"forever\"")
        .unwrap_err()
        .to_string();
    assert!(error.contains("storage.max_lifetime"), "{error}");
    assert!(error.contains("such as \"7d\" or \"none\""), "{error}");
}

#[test]
fn a_redis_url_without_a_host_is_refused_and_an_unparsable_one_is_never_echoed() {
    // Typos: `redis:` without `//` is a path, not a host; so is `redis:/`; a
    // backslash or a tab is not what a URL parser keeps. Each is refused
    // saying what was expected, without the credentials.
    for (url, problem) in [
        ("redis:6379", "`redis:` is followed by 0 slash(es), not two"),
        (
            "redis:/user:s3cret@cache:6379",
            "`redis:` is followed by 1 slash(es), not two",
        ),
        (
            "rediss:/:s3cret@cache:6379/2",
            "`rediss:` is followed by 1 slash(es), not two",
        ),
        ("redis://:s3cret@cache:6379\t", "not a URL as written"),
        ("redis://", "names no host"),
    ] {
        let error = StorageConfig::from_toml_str(&format!(
            "[storage.redis]\nurl = \"{}\"",
            url.escape_default()
        ))
        .unwrap_err()
        .to_string();
        assert!(error.contains("storage.redis.url (from "), "{url}: {error}");
        assert!(error.contains(problem), "{url}: {error}");
        assert!(
            error.contains("expected `redis://` or `rediss://` and a host"),
            "{url}: {error}"
        );
        assert!(!error.contains("s3cret"), "{url}: {error}");
    }
    for url in [
        "redis://cache:6379/2",
        "REDIS://cache",
        "rediss://[::1]:6380",
    ] {
        StorageConfig::from_toml_str(&format!("[storage.redis]\nurl = \"{url}\""))
            .unwrap_or_else(|error| panic!("{url}: {error}"));
    }
    let unparsable = session_store::RedisUrl::new("redis://user:pw@[broken");
    assert_eq!(format!("{unparsable:?}"), "RedisUrl(<unparsable URL>)");
    assert_eq!(unparsable.to_string(), "<unparsable URL>");
}

#[test]
fn a_redis_url_without_its_scheme_never_shows_its_password() {
    // Parses as a URL of scheme `admin`, the password in its path.
    let url = session_store::RedisUrl::new("admin:s3cret@db:6379");
    assert_eq!(url.to_string(), "***@db:6379");
    assert_eq!(format!("{url:?}"), "RedisUrl(***@db:6379)");
    let error = StorageConfig::from_toml_str("[storage.redis]\nurl = \"admin:s3cret@db:6379\"")
        .and_then(|config| config.validate().map(|()| config))
        .unwrap_err()
        .to_string();
    assert!(!error.contains("s3cret"), "{error}");
    assert_eq!(
        session_store::RedisUrl::new("redis:6379").to_string(),
        "redis:6379"
    );
}
