//! Every invalid value is `Error::Config` naming the key and where it came from: the
//! TOML file and dotted key, or the exact environment variable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// `figment::Jail` closures must return `figment::Result`, whose error is large.
#![allow(clippy::result_large_err)]

use std::path::Path;

use figment::Jail;
use session_store::{Error, StorageConfig, StorageOverrides};

/// The message of the config error `load` returns for `toml` in `storage.toml`.
fn file_error(jail: &mut Jail, toml: &str) -> String {
    jail.create_file("storage.toml", toml).unwrap();
    config_message(StorageConfig::load(Some(Path::new("storage.toml"))))
}

/// The message of the config error `load` returns with one environment variable.
fn env_error(jail: &mut Jail, name: &str, value: &str) -> String {
    jail.clear_env();
    jail.set_env(name, value);
    config_message(StorageConfig::load(None))
}

fn config_message(result: session_store::Result<StorageConfig>) -> String {
    match result {
        Err(Error::Config(message)) => message,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

fn assert_names(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
}

#[test]
fn unknown_backend_names_file_key_and_env_var() {
    Jail::expect_with(|jail| {
        let message = file_error(jail, "[storage]\nbackend = \"mongo\"");
        assert_names(
            &message,
            &[
                "storage.toml: storage.backend",
                "unknown value `mongo`",
                "memory, redis",
            ],
        );
        let message = env_error(jail, "SESSION_STORE_BACKEND", "mongo");
        assert_names(
            &message,
            &[
                "environment variable SESSION_STORE_BACKEND",
                "unknown value `mongo`",
            ],
        );
        Ok(())
    });
}

#[test]
fn unknown_key_names_file_key_and_env_var() {
    Jail::expect_with(|jail| {
        let message = file_error(jail, "[storage.redis]\npool_sizee = 3");
        assert_names(
            &message,
            &[
                "storage.redis.pool_sizee (from storage.toml: storage.redis.pool_sizee): unknown key",
                "unknown key `pool_sizee`",
                "pool_size",
            ],
        );
        // The key is named once, not `storage.redis.pool_sizee.pool_sizee`.
        assert!(!message.contains("pool_sizee.pool_sizee"), "{message}");
        let message = env_error(jail, "SESSION_STORE_REDIS__POOL_SIZEE", "3");
        assert_names(
            &message,
            &[
                "storage.redis.pool_sizee (from environment variable SESSION_STORE_REDIS__POOL_SIZEE)",
                "unknown key",
            ],
        );
        let message = env_error(jail, "SESSION_STORE_TTLL", "1h");
        assert_names(
            &message,
            &[
                "environment variable SESSION_STORE_TTLL",
                "unknown key `ttll`",
            ],
        );
        Ok(())
    });
}

#[test]
fn zero_pool_size_names_file_key_and_env_var() {
    Jail::expect_with(|jail| {
        let message = file_error(jail, "[storage.redis]\npool_size = 0");
        assert_names(
            &message,
            &[
                "storage.redis.pool_size = 0 (from storage.toml: storage.redis.pool_size)",
                "at least 1",
            ],
        );
        let message = env_error(jail, "SESSION_STORE_REDIS__POOL_SIZE", "0");
        assert_names(
            &message,
            &["storage.redis.pool_size = 0 (from environment variable SESSION_STORE_REDIS__POOL_SIZE)"],
        );
        Ok(())
    });
}

#[test]
fn session_frame_byte_cap_below_max_frame_bytes_names_both_keys() {
    Jail::expect_with(|jail| {
        let message = file_error(
            jail,
            "[storage]\nmax_frame_bytes = 2048\nmax_session_frame_bytes = 1024",
        );
        assert_names(
            &message,
            &[
                "storage.max_session_frame_bytes = 1024 (from storage.toml",
                "at least max_frame_bytes (2048)",
            ],
        );
        let message = env_error(jail, "SESSION_STORE_MAX_READ_BYTES", "0");
        assert_names(
            &message,
            &["storage.max_read_bytes = 0 (from environment variable SESSION_STORE_MAX_READ_BYTES)"],
        );
        Ok(())
    });
}

#[test]
fn bad_url_names_its_source_and_never_its_password() {
    Jail::expect_with(|jail| {
        let message = file_error(
            jail,
            "[storage.redis]\nurl = \"http://app:hunter2@10.0.0.1\"",
        );
        assert_names(
            &message,
            &[
                "storage.toml: storage.redis.url",
                "scheme must be `redis` or `rediss`, got `http`",
            ],
        );
        assert!(!message.contains("hunter2"), "{message}");
        let message = env_error(jail, "SESSION_STORE_REDIS__URL", "not a url :hunter2");
        assert_names(
            &message,
            &[
                "environment variable SESSION_STORE_REDIS__URL",
                "not a valid URL",
            ],
        );
        assert!(!message.contains("hunter2"), "{message}");
        Ok(())
    });
}

#[test]
fn a_url_path_that_is_not_a_database_number_names_its_source() {
    Jail::expect_with(|jail| {
        let message = file_error(
            jail,
            "[storage.redis]\nurl = \"redis://app:hunter2@10.0.0.1:6379/sessions\"",
        );
        assert_names(
            &message,
            &[
                "storage.toml: storage.redis.url",
                "must be a database number",
            ],
        );
        assert!(!message.contains("hunter2"), "{message}");
        Ok(())
    });
}

#[test]
fn bad_cluster_and_sentinel_nodes_name_their_source() {
    Jail::expect_with(|jail| {
        let message = file_error(
            jail,
            "[storage.redis.cluster]\nnodes = [\"redis://a:1\", \"10.0.0.2:6379\"]",
        );
        assert_names(
            &message,
            &["storage.toml: storage.redis.cluster.nodes", "node 1"],
        );
        let message = env_error(
            jail,
            "SESSION_STORE_REDIS__CLUSTER__NODES",
            "[\"http://a:1\"]",
        );
        assert_names(
            &message,
            &[
                "environment variable SESSION_STORE_REDIS__CLUSTER__NODES",
                "node 0",
                "`http`",
            ],
        );
        let message = file_error(
            jail,
            "[storage.redis.sentinel]\nservice_name = \"primary\"\nnodes = []",
        );
        assert_names(
            &message,
            &[
                "storage.toml: storage.redis.sentinel.nodes",
                "at least one node",
            ],
        );
        let message = file_error(
            jail,
            "[storage.redis.sentinel]\nnodes = [\"redis://a:26379\"]",
        );
        assert_names(
            &message,
            &[
                "storage.redis.sentinel.service_name",
                "missing required key",
            ],
        );
        Ok(())
    });
}

#[test]
fn bad_duration_names_file_key_and_env_var() {
    Jail::expect_with(|jail| {
        let message = file_error(jail, "[storage]\nttl = \"5 parsecs\"");
        assert_names(
            &message,
            &["storage.toml: storage.ttl", "`5 parsecs` is not a duration"],
        );
        let message = env_error(jail, "SESSION_STORE_REDIS__COMMAND_TIMEOUT", "60");
        assert_names(
            &message,
            &[
                "environment variable SESSION_STORE_REDIS__COMMAND_TIMEOUT",
                "`60` is not a duration",
            ],
        );
        Ok(())
    });
}

#[test]
fn zero_ttl_names_file_key_and_env_var() {
    Jail::expect_with(|jail| {
        let message = file_error(jail, "[storage]\nttl = \"0s\"");
        assert_names(
            &message,
            &[
                "storage.ttl = \"0s\" (from storage.toml: storage.ttl)",
                "at least 1ms",
            ],
        );
        let message = env_error(jail, "SESSION_STORE_TTL", "0s");
        assert_names(&message, &["(from environment variable SESSION_STORE_TTL)"]);
        Ok(())
    });
}

#[test]
fn key_prefix_with_braces_names_file_key_and_env_var() {
    Jail::expect_with(|jail| {
        let message = file_error(jail, "[storage.redis]\nkey_prefix = \"mcp{1}\"");
        assert_names(&message, &["storage.redis.key_prefix = \"mcp{1}\" (from storage.toml: storage.redis.key_prefix)", "hash tag"]);
        let message = env_error(jail, "SESSION_STORE_REDIS__KEY_PREFIX", "my prefix");
        assert_names(
            &message,
            &[
                "(from environment variable SESSION_STORE_REDIS__KEY_PREFIX)",
                "whitespace",
            ],
        );
        Ok(())
    });
}

#[test]
fn every_problem_is_reported_at_once() {
    Jail::expect_with(|jail| {
        jail.set_env("SESSION_STORE_REDIS__INDEX_SHARDS", "0");
        let message = file_error(
            jail,
            "[storage]\nmax_frames_per_session = 0\n[storage.memory]\nshards = 3",
        );
        assert_names(
            &message,
            &[
                "storage.max_frames_per_session = 0 (from storage.toml: storage.max_frames_per_session)",
                "storage.memory.shards = 3 (from storage.toml: storage.memory.shards): must be a power of two",
                "storage.redis.index_shards = 0 (from environment variable SESSION_STORE_REDIS__INDEX_SHARDS)",
            ],
        );
        Ok(())
    });
}

#[test]
fn override_errors_name_the_override() {
    let message = config_message(StorageConfig::load_with_overrides(
        None,
        StorageOverrides::new().set("redis.pool_size", 0),
    ));
    assert_names(
        &message,
        &["(from command-line override storage.redis.pool_size)"],
    );
}

#[test]
fn missing_or_unparsable_file_names_the_file() {
    Jail::expect_with(|jail| {
        let message = config_message(StorageConfig::load(Some(Path::new("absent.toml"))));
        assert_names(&message, &["absent.toml", "does not exist"]);
        let message = file_error(jail, "[storage\nttl = 1");
        assert_names(&message, &["storage.toml", "TOML parse error"]);
        Ok(())
    });
}

#[cfg(not(feature = "redis"))]
#[test]
fn redis_backend_without_the_feature_names_the_feature_and_source() {
    Jail::expect_with(|jail| {
        let message = file_error(jail, "[storage]\nbackend = \"redis\"");
        assert_names(
            &message,
            &["storage.backend = \"redis\" (from storage.toml: storage.backend) needs the `redis` feature of the session-store crate: cargo add session-store --features redis"],
        );
        let message = env_error(jail, "SESSION_STORE_BACKEND", "redis");
        assert_names(
            &message,
            &["storage.backend = \"redis\" (from environment variable SESSION_STORE_BACKEND) needs the `redis` feature"],
        );
        Ok(())
    });
}

#[cfg(not(feature = "memory"))]
#[test]
fn memory_backend_without_the_feature_names_the_feature_and_source() {
    let message = config_message(StorageConfig::from_toml_str("[storage]"));
    assert_names(
        &message,
        &["storage.backend = \"memory\" (from default) needs the `memory` feature of the session-store crate: cargo add session-store --features memory"],
    );
}

#[test]
fn code_built_config_is_validated_too() {
    let mut config = StorageConfig::default();
    config.redis.pool_size = 0;
    let Err(Error::Config(message)) = config.validate() else {
        panic!("zero pool size must be rejected");
    };
    assert_names(
        &message,
        &[
            "storage.redis.pool_size = 0",
            "StorageConfig passed to build",
        ],
    );
}

#[test]
fn rules_across_keys_name_both_keys_and_their_sources() {
    Jail::expect_with(|jail| {
        let message = file_error(
            jail,
            "[storage.redis]\n\
             key_prefix = \"\"\n\
             reconnect_min_delay = \"10s\"\n\
             reconnect_max_delay = \"1s\"\n\
             wait_for_replicas = 1\n\
             replica_wait_timeout = \"5s\"\n\
             command_timeout = \"2s\"\n\
             near_cache_entries = 1000\n\
             near_cache_max_age = \"0s\"\n\
             [storage.redis.cluster]\n\
             nodes = [\"redis://127.0.0.1:7000\"]\n\
             [storage.redis.sentinel]\n\
             service_name = \" \"\n\
             nodes = [\"redis://127.0.0.1:26379\"]",
        );
        assert_names(
            &message,
            &[
                "storage.redis.key_prefix = \"\" (from storage.toml: storage.redis.key_prefix): must not be empty",
                "storage.redis.reconnect_min_delay = \"10s\" (from storage.toml: storage.redis.reconnect_min_delay): must not exceed storage.redis.reconnect_max_delay = \"1s\" (from storage.toml: storage.redis.reconnect_max_delay)",
                "storage.redis.replica_wait_timeout = \"5s\" (from storage.toml: storage.redis.replica_wait_timeout): must be shorter than storage.redis.command_timeout = \"2s\" (from storage.toml: storage.redis.command_timeout)",
                "storage.redis.sentinel.service_name",
                "must name the monitored primary",
                "cannot be combined with [storage.redis.cluster] (from storage.toml",
                "storage.redis.near_cache_entries = 1000 (from storage.toml: storage.redis.near_cache_entries): must be 0 with [storage.redis.cluster] (from storage.toml",
                "storage.redis.near_cache_max_age = \"0s\" (from storage.toml: storage.redis.near_cache_max_age): must be at least 1ms",
            ],
        );
        Ok(())
    });
}
