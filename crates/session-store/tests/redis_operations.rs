//! The production setup `docs/operations.md` describes, checked against
//! redis-server processes the test controls: AOF persistence survives a hard
//! restart, and the store works as an ACL user limited to the commands and keys
//! it needs.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{sync::Arc, time::Duration};

use session_store::{
    Direction, Error, Frame, FrameId, NewSession, RedisConfig, RedisStore, SessionId,
    SessionStatus, SessionStore, StoreSettings, SystemClock, Topology,
};
use session_store_redis::{AppendKey, KeyedFrame, SessionWriteBack};
use support::RedisProcess;

/// The ACL rules of `docs/operations.md` for a store whose key prefix is `mcp`:
/// keep this list and the document in step.
const STORE_ACL: &[&str] = &[
    "on",
    "resetkeys",
    "~mcp:*",
    "resetchannels",
    "-@all",
    "+ping",
    "+info",
    "+time",
    "+evalsha",
    "+eval",
    "+script|load",
    "+hgetall",
    "+hget",
    "+hmget",
    "+hset",
    "+hdel",
    "+hincrby",
    "+pexpiretime",
    "+pexpireat",
    "+unlink",
    "+get",
    "+set",
    "+xadd",
    "+xrange",
    "+xrevrange",
    "+xlen",
    "+xdel",
    "+xsetid",
    "+xtrim",
    "+zadd",
    "+zrem",
    "+zrange",
    "+zrangebyscore",
    "+zcount",
    "+wait",
    "+exists",
];

fn config(url: String, prefix: &str) -> RedisConfig {
    RedisConfig {
        topology: Topology::Standalone { url },
        pool_size: 2,
        command_timeout: Duration::from_secs(5),
        key_prefix: prefix.to_owned(),
        index_shards: 4,
        ..RedisConfig::default()
    }
}

async fn connect(config: RedisConfig) -> RedisStore {
    RedisStore::connect(config, StoreSettings::default(), Arc::new(SystemClock))
        .await
        .unwrap()
}

fn frame(n: u32) -> Frame {
    Frame::new(
        Direction::ClientToServer,
        session_store::Clock::now(&SystemClock),
        format!(r#"{{"jsonrpc":"2.0","id":{n}}}"#).into_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask integration"]
async fn sessions_survive_a_hard_restart_with_aof_fsync_always() {
    let mut redis = RedisProcess::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let store = connect(config(redis.url(), "aof")).await;
    let mut sessions = Vec::new();
    for _ in 0..20 {
        let id = SessionId::random().unwrap();
        store.create(NewSession::new(id.clone())).await.unwrap();
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(store.append_frame(&id, frame(n)).await.unwrap());
        }
        sessions.push((id, ids));
    }
    // SIGKILL: no shutdown save; only the fsynced AOF remains.
    redis.kill();
    redis.restart();
    let after = connect(config(redis.url(), "aof")).await;
    for (id, ids) in &sessions {
        let session = after.get(id).await.unwrap();
        assert_eq!(session.frame_count, 5);
        let stored: Vec<FrameId> = after
            .read_frames(id, None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(&stored, ids);
    }
    assert_eq!(after.count().await.unwrap(), 20);
    println!(
        "aof: {} sessions and {} frames acknowledged before SIGKILL, all found after restart",
        sessions.len(),
        sessions.len() * 5
    );
}

/// A Redis with the default user off and `mcp-store` allowed [`STORE_ACL`]
/// plus `extra`, and a store config logging in as that user.
fn as_acl_user(extra: &[&str]) -> (RedisProcess, RedisConfig) {
    let mut args = vec![
        "--user",
        "default",
        "off",
        "--user",
        "mcp-store",
        ">store-secret",
    ];
    args.extend_from_slice(STORE_ACL);
    args.extend_from_slice(extra);
    let redis = RedisProcess::start(&args);
    let mut config = config(redis.url(), "mcp");
    config.username = Some("mcp-store".into());
    config.password = Some("store-secret".into());
    (redis, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask integration"]
async fn the_store_works_as_an_acl_user_with_the_documented_commands_only() {
    let (redis, config) = as_acl_user(&[]);
    let store = connect(config.clone()).await;

    // Every operation of the trait, plus the fallback's keyed append and
    // write-back.
    let id = SessionId::random().unwrap();
    let created = store.create(NewSession::new(id.clone())).await.unwrap();
    store.get(&id).await.unwrap();
    store.get_many(std::slice::from_ref(&id)).await.unwrap();
    let mut changed = created.clone();
    changed.status = SessionStatus::Active;
    let updated = store.update(&changed).await.unwrap();
    store.touch(&id).await.unwrap();
    let first = store.append_frame(&id, frame(1)).await.unwrap();
    let key = store.new_append_key();
    store
        .append_frame_with_key(&id, &frame(2), &key)
        .await
        .unwrap();
    assert_eq!(store.read_frames(&id, None, 10).await.unwrap().len(), 2);
    assert_eq!(store.count_frames(&id).await.unwrap(), 2);
    store.list(None, 10).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 1);
    store.purge_expired().await.unwrap();
    store.health().await.unwrap();
    store.probe_writes().await.unwrap();
    let report = store
        .write_back(&SessionWriteBack {
            session: updated,
            base_revision: 2,
            updated: false,
            frames: vec![
                // Older than every stored frame: inserted in place.
                KeyedFrame {
                    key: AppendKey::new("acl0").unwrap(),
                    frame: session_store::StoredFrame {
                        id: FrameId::new(first.millis - 1, 1 << 24),
                        frame: frame(0),
                    },
                },
                KeyedFrame {
                    key: AppendKey::new("acl1").unwrap(),
                    frame: session_store::StoredFrame {
                        id: FrameId::new(first.millis + 10, 0),
                        frame: frame(3),
                    },
                },
            ],
            key: store.new_append_key(),
        })
        .await
        .unwrap();
    assert_eq!(report.frames_written, 2);
    assert_eq!(report.frames_interleaved, 1);
    assert_eq!(store.delete_frames(&id).await.unwrap(), 4);
    assert!(store.delete(&id).await.unwrap());

    // And nothing else: not another key, not another command.
    for words in [
        &["APPEND", "mcp:x", "1"][..],
        &["GET", "other:key"],
        &["FLUSHALL"],
    ] {
        let reply = support::command_as(redis.port, "mcp-store", "store-secret", words).unwrap();
        assert!(reply.starts_with("-NOPERM"), "{words:?}: {reply}");
    }
    println!(
        "acl: every operation succeeded as `mcp-store` with {} rules",
        STORE_ACL.len()
    );

    // The near cache needs `CLIENT TRACKING` besides: refused without it, with
    // an error that says what to do; working with it.
    let near = RedisConfig {
        near_cache_entries: 10,
        ..config
    };
    match RedisStore::connect(
        near.clone(),
        StoreSettings::default(),
        Arc::new(SystemClock),
    )
    .await
    {
        Err(Error::Config(message)) => {
            assert!(message.contains("CLIENT TRACKING"), "{message}")
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// What the near cache adds to [`STORE_ACL`] (docs/operations.md).
const NEAR_CACHE_ACL: &str = "+client|tracking";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask integration"]
async fn the_near_cache_works_as_an_acl_user_with_client_tracking_added() {
    let (_redis, config) = as_acl_user(&[NEAR_CACHE_ACL]);
    let store = connect(RedisConfig {
        near_cache_entries: 10,
        ..config
    })
    .await;
    let id = SessionId::random().unwrap();
    let created = store.create(NewSession::new(id.clone())).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap(), created);
    assert_eq!(store.get(&id).await.unwrap(), created);
    let readings = store.health().await.unwrap().readings;
    let hits = readings
        .iter()
        .find(|(name, _)| *name == "session_store_redis_near_cache_hits_total")
        .map(|(_, value)| *value);
    assert_eq!(hits, Some(1.0), "{readings:?}");
}
