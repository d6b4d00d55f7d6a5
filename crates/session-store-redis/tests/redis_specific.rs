//! Redis-specific guarantees beyond the conformance suite: key layout on a cluster,
//! corrupt data, connection failures, no resurrection, and the commands each
//! operation sends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::{collections::BTreeMap, net::TcpListener, sync::Arc, time::Duration};

use fred::{
    interfaces::ClientLike,
    prelude::{Builder, Client, Config},
    types::Value,
};
use session_store_core::{
    testing::suite_settings, Direction, Error, Frame, ManualClock, NewSession, SessionId,
    SessionStore,
};
use session_store_redis::{RedisConfig, RedisStore, Topology};

async fn raw_client(config: Config) -> Client {
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    client
}

async fn raw(client: &Client, command: &'static str, args: Vec<&str>) -> Value {
    let args: Vec<Value> = args.into_iter().map(|a| Value::String(a.into())).collect();
    common::raw_command(client, command, args).await
}

async fn raw_int(client: &Client, command: &'static str, args: Vec<&str>) -> i64 {
    match raw(client, command, args).await {
        Value::Integer(n) => n,
        other => panic!("{command}: expected an integer, got {other:?}"),
    }
}

async fn standalone() -> (RedisStore, Client, ManualClock, String) {
    let config = common::config(Topology::Standalone {
        url: common::standalone_url(),
    });
    let prefix = config.key_prefix.clone();
    let clock = ManualClock::starting_now();
    let store = common::connect(config, clock.clone(), suite_settings()).await;
    let client = raw_client(Config::from_url(&common::standalone_url()).unwrap()).await;
    (store, client, clock, prefix)
}

fn meta_key(prefix: &str, id: &SessionId) -> String {
    format!("{prefix}:{{{id}}}:meta")
}

fn frames_key(prefix: &str, id: &SessionId) -> String {
    format!("{prefix}:{{{id}}}:frames")
}

fn frame(clock: &ManualClock) -> Frame {
    use session_store_core::Clock;
    Frame::new(
        Direction::ClientToServer,
        clock.now(),
        b"{\"jsonrpc\":\"2.0\"}".to_vec(),
    )
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn all_keys_of_a_session_share_one_cluster_slot() {
    let nodes = common::cluster_nodes();
    let config = common::config(Topology::Cluster {
        nodes: nodes.clone(),
    });
    let prefix = config.key_prefix.clone();
    let store = common::connect(config, ManualClock::starting_now(), suite_settings()).await;
    let client =
        raw_client(Config::from_url(&format!("redis-cluster://{}", nodes[0])).unwrap()).await;
    for _ in 0..20 {
        let id = SessionId::random().unwrap();
        store.create(NewSession::new(id.clone())).await.unwrap();
        store
            .append_frame(&id, frame(&ManualClock::starting_now()))
            .await
            .unwrap();
        let meta = raw_int(&client, "CLUSTER", vec!["KEYSLOT", &meta_key(&prefix, &id)]).await;
        let frames = raw_int(
            &client,
            "CLUSTER",
            vec!["KEYSLOT", &frames_key(&prefix, &id)],
        )
        .await;
        assert_eq!(meta, frames, "meta and frames of {id} must share a slot");
        let tag_only = raw_int(&client, "CLUSTER", vec!["KEYSLOT", id.as_str()]).await;
        assert_eq!(meta, tag_only, "the slot is the id's");
    }
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn garbage_body_is_corrupt_naming_the_key() {
    let (store, client, _clock, prefix) = standalone().await;
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    let meta = meta_key(&prefix, &id);
    raw(
        &client,
        "HSET",
        vec![&meta, "body", "\u{1}\u{c1}not msgpack"],
    )
    .await;
    match store.get(&id).await {
        Err(Error::Corrupt(message)) => assert!(message.contains(&meta), "{message}"),
        other => panic!("expected Corrupt naming {meta}, got {other:?}"),
    }
    raw(&client, "HSET", vec![&meta, "rev", "not-a-number"]).await;
    assert!(matches!(store.get(&id).await, Err(Error::Corrupt(m)) if m.contains("rev")));
}

/// The get script reads only the chunks `bn` names; a missing one, or a `bn`
/// far beyond any body, is Corrupt naming the first missing chunk.
#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_missing_or_runaway_body_chunk_is_corrupt_naming_it() {
    let (store, client, _clock, prefix) = standalone().await;
    let id = SessionId::random().unwrap();
    let mut new = NewSession::new(id.clone()).with_protocol_version("2025-06-18");
    new.tags.insert("padding".into(), "x".repeat(200));
    store.create(new).await.unwrap();
    let meta = meta_key(&prefix, &id);
    let chunks = raw_int(&client, "HLEN", vec![&meta]).await;
    assert!(chunks > 5, "a body over 64 bytes is chunked");
    store.get(&id).await.unwrap();

    raw(&client, "HSET", vec![&meta, "bn", "1000000"]).await;
    match store.get(&id).await {
        Err(Error::Corrupt(m)) => assert!(m.contains("no `b") && m.contains(&meta), "{m}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    raw(&client, "HSET", vec![&meta, "bn", "3"]).await;
    raw(&client, "HDEL", vec![&meta, "b2"]).await;
    match store.get(&id).await {
        Err(Error::Corrupt(m)) => assert!(m.contains("no `b2` field"), "{m}"),
        other => panic!("expected Corrupt naming b2, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn one_undecodable_session_is_skipped_by_list_and_the_cursor_moves_on() {
    let (store, client, _clock, prefix) = standalone().await;
    let mut ids: Vec<SessionId> = (0..5).map(|_| SessionId::random().unwrap()).collect();
    for id in &ids {
        store.create(NewSession::new(id.clone())).await.unwrap();
    }
    let bad = ids.remove(2);
    raw(
        &client,
        "HSET",
        vec![
            &meta_key(&prefix, &bad),
            "body",
            "\u{9}from a newer release",
        ],
    )
    .await;
    let mut listed = Vec::new();
    let mut cursor = None;
    for _ in 0..50 {
        let page = store.list(cursor.as_ref(), 1).await.unwrap();
        listed.extend(page.items.into_iter().map(|s| s.id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids, "every other session is listed");
    assert_eq!(store.skipped_records(), 1);
    assert!(matches!(store.get(&bad).await, Err(Error::Corrupt(_))));
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn one_undecodable_frame_is_skipped_and_read_frames_moves_on() {
    let (store, client, clock, prefix) = standalone().await;
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    let first = store.append_frame(&id, frame(&clock)).await.unwrap();
    // A frame a newer release wrote in a format this one cannot read.
    let bad = format!("{}-{}", first.millis, first.seq + 1);
    raw(
        &client,
        "XADD",
        vec![&frames_key(&prefix, &id), &bad, "f", "\u{9}newer"],
    )
    .await;
    clock.advance(Duration::from_millis(5));
    let last = store.append_frame(&id, frame(&clock)).await.unwrap();
    let all: Vec<_> = store
        .read_frames(&id, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(all, vec![first, last]);
    // Paging one at a time gets past it too.
    let after_first: Vec<_> = store
        .read_frames(&id, Some(first), 1)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(
        after_first,
        vec![last],
        "the page after the bad frame is not empty"
    );
    assert!(store.skipped_records() >= 2);
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn wrong_type_at_the_meta_key_is_corrupt_on_every_operation() {
    let (store, client, clock, prefix) = standalone().await;
    let id = SessionId::random().unwrap();
    let meta = meta_key(&prefix, &id);
    raw(&client, "SET", vec![&meta, "i am a string"]).await;
    raw(&client, "PEXPIRE", vec![&meta, "600000"]).await;

    let session = NewSession::new(id.clone()).into_session(clock_now(&clock), clock_now(&clock));
    let results: Vec<(&str, session_store_core::Result<()>)> = vec![
        (
            "create",
            store.create(NewSession::new(id.clone())).await.map(|_| ()),
        ),
        ("get", store.get(&id).await.map(|_| ())),
        ("update", store.update(&session).await.map(|_| ())),
        ("touch", store.touch(&id).await),
        (
            "append",
            store.append_frame(&id, frame(&clock)).await.map(|_| ()),
        ),
        (
            "read_frames",
            store.read_frames(&id, None, 10).await.map(|_| ()),
        ),
        ("delete", store.delete(&id).await.map(|_| ())),
    ];
    for (operation, result) in results {
        match result {
            Err(Error::Corrupt(message)) => {
                assert!(message.contains(&meta), "{operation}: {message}");
                assert!(
                    message.contains("wrong type") || message.contains("WRONGTYPE"),
                    "{operation}: {message}"
                );
            }
            other => panic!("{operation}: expected Corrupt, got {other:?}"),
        }
    }
}

fn clock_now(clock: &ManualClock) -> session_store_core::Timestamp {
    use session_store_core::Clock;
    clock.now()
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn unreachable_redis_at_start_is_unavailable_naming_the_address_not_the_password() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let connect_timeout = Duration::from_secs(2);
    let config = RedisConfig {
        topology: Topology::Standalone {
            url: format!("redis://alice:url-s3cret@127.0.0.1:{port}"),
        },
        password: Some("config-s3cret".into()),
        connect_timeout,
        reconnect_max_attempts: 0,
        ..RedisConfig::default()
    };
    // Bounded so a regression hangs no CI job; generous so load never fails it.
    let attempt = tokio::time::timeout(
        connect_timeout * 5,
        RedisStore::connect(
            config,
            suite_settings(),
            Arc::new(ManualClock::starting_now()),
        ),
    )
    .await
    .expect("connect must give up instead of retrying forever");
    match attempt {
        Err(Error::Unavailable(message)) => {
            assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// A server that accepts connections but never answers (a stalled proxy, a
/// wrong port behind a firewall that completes handshakes): connect gives up
/// within about `connect_timeout` and the pool still connecting is stopped in
/// the background. Needs no Redis: the listener is the test's own.
#[tokio::test]
async fn a_server_that_never_answers_is_unavailable_within_the_connect_timeout() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let connect_timeout = Duration::from_millis(500);
    let config = RedisConfig {
        topology: Topology::Standalone {
            url: format!("redis://alice:s3cret@127.0.0.1:{port}"),
        },
        connect_timeout,
        reconnect_max_attempts: 0,
        ..RedisConfig::default()
    };
    let started = std::time::Instant::now();
    let attempt = tokio::time::timeout(
        connect_timeout * 20,
        RedisStore::connect(
            config,
            suite_settings(),
            Arc::new(ManualClock::starting_now()),
        ),
    )
    .await
    .expect("connect must give up");
    println!("gave up after {:?}: {attempt:?}", started.elapsed());
    match attempt {
        Err(Error::Unavailable(message)) => {
            assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // The background stop ends with the pool's own attempts.
    tokio::time::sleep(connect_timeout * 3).await;
    drop(silent);
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn create_on_an_existing_id_is_already_exists_not_a_parse_error() {
    let (store, _client, _clock, _prefix) = standalone().await;
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    for _ in 0..3 {
        assert!(matches!(
            store.create(NewSession::new(id.clone())).await,
            Err(Error::AlreadyExists(existing)) if existing == id
        ));
    }
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn writes_to_a_deleted_session_recreate_no_key() {
    let (store, client, clock, prefix) = standalone().await;
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    store.append_frame(&id, frame(&clock)).await.unwrap();
    let session = store.get(&id).await.unwrap();
    assert!(store.delete(&id).await.unwrap());

    assert!(matches!(store.touch(&id).await, Err(Error::NotFound(_))));
    assert!(matches!(
        store.update(&session).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.append_frame(&id, frame(&clock)).await,
        Err(Error::NotFound(_))
    ));
    let (meta, frames) = (meta_key(&prefix, &id), frames_key(&prefix, &id));
    assert_eq!(
        raw_int(&client, "EXISTS", vec![&meta]).await,
        0,
        "meta recreated"
    );
    assert_eq!(
        raw_int(&client, "EXISTS", vec![&frames]).await,
        0,
        "frames recreated"
    );
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn writes_to_an_expired_session_neither_revive_nor_slide_it() {
    let (store, client, clock, prefix) = standalone().await;
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    store.append_frame(&id, frame(&clock)).await.unwrap();
    let session = store.get(&id).await.unwrap();
    let (meta, frames) = (meta_key(&prefix, &id), frames_key(&prefix, &id));
    let expiry_before = raw_int(&client, "PEXPIRETIME", vec![&meta]).await;
    clock.advance(suite_settings().ttl + Duration::from_millis(1));

    assert!(matches!(
        store.update(&session).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.append_frame(&id, frame(&clock)).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        raw_int(&client, "PEXPIRETIME", vec![&meta]).await,
        expiry_before,
        "a refused update or append must not slide the expiry"
    );
    assert_eq!(
        raw_int(&client, "XLEN", vec![&frames]).await,
        1,
        "no frame was added"
    );

    // touch slides with plain PEXPIREATs, then removes the expired session.
    assert!(matches!(store.touch(&id).await, Err(Error::NotFound(_))));
    assert_eq!(raw_int(&client, "EXISTS", vec![&meta]).await, 0);
    assert_eq!(raw_int(&client, "EXISTS", vec![&frames]).await, 0);
    assert!(matches!(store.get(&id).await, Err(Error::NotFound(_))));
}

// ------------------------------------------------------------ commands per operation

/// `calls` per command from `INFO commandstats`.
async fn command_calls(client: &Client) -> BTreeMap<String, i64> {
    let info = match raw(client, "INFO", vec!["commandstats"]).await {
        Value::String(s) => s.to_string(),
        other => panic!("INFO: {other:?}"),
    };
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// What an operation made the server run: every command, including those a
/// script ran, minus the INFO calls of the measurement itself.
async fn measure<F, T>(client: &Client, operation: F) -> BTreeMap<String, i64>
where
    F: std::future::Future<Output = T>,
{
    let before = command_calls(client).await;
    operation.await;
    let after = command_calls(client).await;
    after
        .into_iter()
        .filter(|(name, _)| name != "info")
        .filter_map(|(name, calls)| {
            let delta = calls - before.get(&name).copied().unwrap_or(0);
            (delta > 0).then_some((name, delta))
        })
        .collect()
}

/// Calls per command name.
type Calls = BTreeMap<String, i64>;

fn calls(expected: &[(&str, i64)]) -> Calls {
    expected
        .iter()
        .map(|(name, n)| ((*name).to_owned(), *n))
        .collect()
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn each_operation_sends_the_documented_commands() {
    let server = common::DedicatedRedis::start();
    let url = format!("redis://127.0.0.1:{}", server.port);
    let clock = ManualClock::starting_now();
    let mut config = common::config(Topology::Standalone { url: url.clone() });
    config.index_shards = 4;
    let store = common::connect(config, clock.clone(), suite_settings()).await;
    let client = raw_client(Config::from_url(&url).unwrap()).await;
    let id = SessionId::random().unwrap();

    // Script-internal commands are counted by Redis too; the comments split them.
    let steps: Vec<(&str, Calls, Calls)> = vec![
        (
            "create",
            measure(&client, async {
                store.create(NewSession::new(id.clone())).await.unwrap()
            })
            .await,
            // sent: EVALSHA + 2 ZADD; in the script: PEXPIRETIME, GET (the
            // tombstone), UNLINK, HSET, PEXPIREAT
            calls(&[
                ("evalsha", 1),
                ("zadd", 2),
                ("pexpiretime", 1),
                ("get", 1),
                ("unlink", 1),
                ("hset", 1),
                ("pexpireat", 1),
            ]),
        ),
        (
            "get",
            measure(&client, async { store.get(&id).await.unwrap() }).await,
            // sent: EVALSHA; in the script: PEXPIRETIME, HGETALL
            calls(&[("evalsha", 1), ("hmget", 1), ("pexpiretime", 1)]),
        ),
        (
            "touch",
            measure(&client, async { store.touch(&id).await.unwrap() }).await,
            // sent: EVALSHA, no read before it, no index write; in the script:
            // PEXPIRETIME, HGET created (only with a lifetime cap), 2 PEXPIREAT
            calls(&[
                ("evalsha", 1),
                ("pexpiretime", 1),
                ("hget", 1),
                ("pexpireat", 2),
            ]),
        ),
        (
            "append_frame",
            measure(&client, async {
                store.append_frame(&id, frame(&clock)).await.unwrap()
            })
            .await,
            // sent: EVALSHA, no index write; in the script: PEXPIRETIME, HMGET,
            // XADD, XLEN (the frame budget: nothing to trim), HINCRBY, HSET,
            // 2 PEXPIREAT
            calls(&[
                ("evalsha", 1),
                ("pexpiretime", 1),
                ("hmget", 1),
                ("xadd", 1),
                ("xlen", 1),
                ("hincrby", 1),
                ("hset", 1),
                ("pexpireat", 2),
            ]),
        ),
        (
            "append_frames",
            measure(&client, async {
                let batch = (0..10).map(|_| frame(&clock)).collect();
                store.append_frames(&id, batch).await.unwrap()
            })
            .await,
            // a batch of 10 frames: sent: one EVALSHA; in the script:
            // PEXPIRETIME, HMGET, 10 XADD, one XLEN, HINCRBY, HSET, 2 PEXPIREAT
            calls(&[
                ("evalsha", 1),
                ("pexpiretime", 1),
                ("hmget", 1),
                ("xadd", 10),
                ("xlen", 1),
                ("hincrby", 1),
                ("hset", 1),
                ("pexpireat", 2),
            ]),
        ),
        (
            "read_frames",
            measure(&client, async {
                store.read_frames(&id, None, 10).await.unwrap()
            })
            .await,
            // sent: the probe (HGET, PEXPIRETIME) and EVALSHA read_page; in the
            // script: HGET tid, XRANGE
            calls(&[
                ("evalsha", 1),
                ("pexpiretime", 1),
                ("hget", 2),
                ("xrange", 1),
            ]),
        ),
        (
            "count_frames",
            measure(&client, async { store.count_frames(&id).await.unwrap() }).await,
            calls(&[("pexpiretime", 1), ("hget", 1), ("xlen", 1)]),
        ),
        (
            "count",
            measure(&client, async { store.count().await.unwrap() }).await,
            // settles due index entries first (one ZRANGEBYSCORE per shard, nothing
            // due here), then counts
            calls(&[("zrangebyscore", 4), ("zcount", 4)]),
        ),
        (
            "delete",
            measure(&client, async { store.delete(&id).await.unwrap() }).await,
            // sent: EVALSHA + 2 ZREM; in the script: GET and SET (the
            // tombstone), PEXPIRETIME, HGET, UNLINK
            calls(&[
                ("evalsha", 1),
                ("get", 1),
                ("pexpiretime", 1),
                ("hget", 1),
                ("unlink", 1),
                ("set", 1),
                ("zrem", 2),
            ]),
        ),
    ];
    for (operation, seen, expected) in &steps {
        println!("{operation:>13}: {seen:?}");
        assert_eq!(seen, expected, "{operation}");
    }

    // update, measured without the get that supplies its argument.
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    let session = store.get(&id).await.unwrap();
    let seen = measure(&client, async { store.update(&session).await.unwrap() }).await;
    println!("{:>13}: {seen:?}", "update");
    // sent: EVALSHA, no index write; in the script: PEXPIRETIME, HMGET, HSET,
    // 2 PEXPIREAT
    assert_eq!(
        seen,
        calls(&[
            ("evalsha", 1),
            ("pexpiretime", 1),
            ("hmget", 1),
            ("hset", 1),
            ("pexpireat", 2)
        ]),
    );

    // After SCRIPT FLUSH the store falls back to EVAL once and keeps working.
    raw(&client, "SCRIPT", vec!["FLUSH"]).await;
    let seen = measure(&client, async {
        store.append_frame(&id, frame(&clock)).await.unwrap()
    })
    .await;
    println!("{:>13}: {seen:?}", "append after SCRIPT FLUSH");
    assert_eq!(seen.get("eval"), Some(&1));
    let seen = measure(&client, async {
        store.append_frame(&id, frame(&clock)).await.unwrap()
    })
    .await;
    assert_eq!(
        seen.get("evalsha"),
        Some(&1),
        "EVAL cached the script again"
    );
    assert_eq!(seen.get("eval"), None);
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn the_byte_cap_reads_and_removes_only_the_frames_it_trims() {
    let server = common::DedicatedRedis::start();
    let url = format!("redis://127.0.0.1:{}", server.port);
    let clock = ManualClock::starting_now();
    let config = common::config(Topology::Standalone { url: url.clone() });
    let prefix = config.key_prefix.clone();
    let settings = session_store_core::StoreSettings {
        max_frames_per_session: 10_000,
        max_frame_bytes: 2_000,
        max_session_frame_bytes: 10_000,
        ..suite_settings()
    };
    let store = common::connect(config, clock.clone(), settings).await;
    let client = raw_client(Config::from_url(&url).unwrap()).await;
    let id = SessionId::random().unwrap();
    store.create(NewSession::new(id.clone())).await.unwrap();
    let big = || {
        use session_store_core::Clock;
        Frame::new(Direction::ServerToClient, clock.now(), vec![b'x'; 1_000])
    };
    for _ in 0..20 {
        store.append_frame(&id, big()).await.unwrap();
    }
    const APPENDS: i64 = 100;
    let seen = measure(&client, async {
        for _ in 0..APPENDS {
            store.append_frame(&id, big()).await.unwrap();
        }
    })
    .await;
    println!("{APPENDS} appends at the byte cap ran {seen:?}");
    // Each append of a frame as large as the oldest trims exactly one: one
    // XRANGE of one entry and one XDEL, never a scan of the stream.
    for command in ["xadd", "xlen", "xrange", "xdel"] {
        assert_eq!(seen.get(command), Some(&APPENDS), "{command}");
    }
    // The counter is the bytes the stream holds.
    let frames = frames_key(&prefix, &id);
    let entries = match raw(&client, "XRANGE", vec![frames.as_str(), "-", "+"]).await {
        Value::Array(entries) => entries,
        other => panic!("XRANGE: {other:?}"),
    };
    let stored: usize = entries
        .iter()
        .map(|entry| match entry {
            Value::Array(parts) => match &parts[1] {
                Value::Array(fields) => fields[1].as_bytes().map_or(0, <[u8]>::len),
                other => panic!("fields: {other:?}"),
            },
            other => panic!("entry: {other:?}"),
        })
        .sum();
    let meta = format!("{prefix}:{{{id}}}:meta");
    let counted = match raw(&client, "HGET", vec![meta.as_str(), "fb"]).await {
        Value::String(text) => text.parse::<usize>().unwrap(),
        Value::Bytes(bytes) => std::str::from_utf8(&bytes).unwrap().parse().unwrap(),
        other => panic!("HGET fb: {other:?}"),
    };
    println!(
        "{} frames kept, {stored} bytes, counter {counted}",
        entries.len()
    );
    assert_eq!(counted, stored);
    assert!(stored <= 10_000 && stored + 1_100 > 10_000, "{stored}");
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_clock_far_from_redis_time_refuses_to_start_and_a_near_one_starts() {
    let settings = suite_settings();
    let url = common::standalone_url();
    let connect = |clock: ManualClock| {
        let config = common::config(Topology::Standalone { url: url.clone() });
        let settings = settings.clone();
        async move { RedisStore::connect(config, settings, std::sync::Arc::new(clock)).await }
    };
    // A tenth of the ttl and more, either way: refused, with a clear message.
    let ahead = ManualClock::starting_now();
    ahead.advance(settings.ttl / 5);
    let behind = ManualClock::starting_now();
    behind.set(session_store_core::Timestamp::from_millis(
        session_store_core::Clock::now(&behind).as_millis()
            - session_store_core::duration_millis(settings.ttl / 5),
    ));
    for (clock, direction) in [(ahead, "ahead of"), (behind, "behind")] {
        match connect(clock).await {
            Err(Error::Config(message)) => {
                assert!(message.contains(direction), "{message}");
                assert!(message.contains("ttl/10"), "{message}");
            }
            other => panic!("expected a Config error, got {other:?}"),
        }
    }
    // Within a tenth (here 5% of the ttl: a warning only): starts.
    let near = ManualClock::starting_now();
    near.advance(settings.ttl / 20);
    let store = connect(near).await.unwrap();
    store.health().await.unwrap();
}
