//! The meta hash as Redis stores it: its memory per idle session (`MEMORY USAGE`),
//! its listpack encoding with a body over 64 bytes, and records written in the
//! previous layout (whole named-msgpack `body`) still read and updated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use fred::{
    interfaces::ClientLike,
    prelude::{Builder, Client, Config},
    types::Value,
};
use session_store_core::{
    codec, testing::suite_settings, Clock, ManualClock, NewSession, SessionId, SessionStatus,
    SessionStore,
};
use session_store_redis::{RedisStore, Topology};

/// The most Redis memory (`MEMORY USAGE`) the meta hash of an idle session may
/// take: a million idle sessions in under 1 GB of meta (issue 14).
const META_BUDGET_BYTES: i64 = 400;

async fn raw(client: &Client, command: &'static str, args: Vec<Value>) -> Value {
    common::raw_command(client, command, args).await
}

fn text(s: &str) -> Value {
    Value::String(s.into())
}

async fn store_and_client() -> (RedisStore, Client, ManualClock, String) {
    let config = common::config(Topology::Standalone {
        url: common::standalone_url(),
    });
    let prefix = config.key_prefix.clone();
    let clock = ManualClock::starting_now();
    let store = common::connect(config, clock.clone(), suite_settings()).await;
    let client = Builder::from_config(Config::from_url(&common::standalone_url()).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    (store, client, clock, prefix)
}

/// What the proxy stores for a session: the protocol version, the client's
/// `initialize` params and the credential binding tag.
fn proxy_like(id: &SessionId) -> NewSession {
    let mut new = NewSession::new(id.clone());
    new.protocol_version = Some("2025-06-18".into());
    new.client_info = Some(serde_json::json!({
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "example-client", "version": "1.0.0"}
    }));
    new.with_tag(
        "binding",
        "tok:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    )
}

fn meta_key(prefix: &str, id: &SessionId) -> String {
    format!("{prefix}:{{{id}}}:meta")
}

/// An idle session as issue 14 measures it: protocol version and client info.
fn idle(id: &SessionId) -> NewSession {
    let mut new = NewSession::new(id.clone());
    new.protocol_version = Some("2025-06-18".into());
    new.client_info = Some(serde_json::json!({"name": "example-client", "version": "1.0.0"}));
    new
}

/// `MEMORY USAGE` and `OBJECT ENCODING` of the meta hash of a session created
/// from `new`, checking that it reads back.
async fn meta_footprint(
    store: &RedisStore,
    client: &Client,
    prefix: &str,
    new: NewSession,
) -> (i64, Option<String>) {
    let id = new.id.clone();
    let created = store.create(new).await.unwrap();
    let meta = meta_key(prefix, &id);
    let usage = match raw(client, "MEMORY", vec![text("USAGE"), text(&meta)]).await {
        Value::Integer(n) => n,
        other => panic!("MEMORY USAGE: {other:?}"),
    };
    let encoding = raw(client, "OBJECT", vec![text("ENCODING"), text(&meta)]).await;
    let read = store.get(&id).await.unwrap();
    assert_eq!(read.client_info, created.client_info);
    assert_eq!(read.tags, created.tags);
    (usage, encoding.as_string())
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn an_idle_session_meta_stays_a_listpack_within_400_bytes() {
    let (store, client, _clock, prefix) = store_and_client().await;
    let (usage, encoding) = meta_footprint(
        &store,
        &client,
        &prefix,
        idle(&SessionId::random().unwrap()),
    )
    .await;
    println!("idle session (protocol version, client info): MEMORY USAGE {usage} B, {encoding:?}");
    assert_eq!(encoding.as_deref(), Some("listpack"));
    assert!(
        usage <= META_BUDGET_BYTES,
        "meta takes {usage} B, over {META_BUDGET_BYTES} B"
    );
    // What the proxy stores (initialize params and a credential binding) is
    // larger: printed for docs/performance.md, held to the listpack encoding.
    let (usage, encoding) = meta_footprint(
        &store,
        &client,
        &prefix,
        proxy_like(&SessionId::random().unwrap()),
    )
    .await;
    println!(
        "proxy session (initialize params, binding tag): MEMORY USAGE {usage} B, {encoding:?}"
    );
    assert_eq!(encoding.as_deref(), Some("listpack"));
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_session_with_frames_keeps_a_listpack_meta_and_its_append_keys() {
    use session_store_core::{Direction, Frame};
    let (store, client, clock, prefix) = store_and_client().await;
    let id = SessionId::random().unwrap();
    let (before, _) = meta_footprint(&store, &client, &prefix, idle(&id)).await;
    let frame = |n: usize| {
        Frame::new(
            Direction::ServerToClient,
            clock.now(),
            format!("{{\"n\":{n}}}").into_bytes(),
        )
    };
    let meta = meta_key(&prefix, &id);
    let key = store.new_append_key();
    let first = store
        .append_frame_with_key(&id, &frame(0), &key)
        .await
        .unwrap();
    for n in 1..30 {
        if n % 10 == 0 {
            store
                .append_frames(&id, (0..5).map(frame).collect())
                .await
                .unwrap();
        } else {
            store.append_frame(&id, frame(n)).await.unwrap();
        }
    }
    let usage = match raw(&client, "MEMORY", vec![text("USAGE"), text(&meta)]).await {
        Value::Integer(n) => n,
        other => panic!("MEMORY USAGE: {other:?}"),
    };
    let encoding = raw(&client, "OBJECT", vec![text("ENCODING"), text(&meta)]).await;
    println!(
        "session with 38 frames appended: meta MEMORY USAGE {usage} B ({before} B idle), \
         {encoding:?}"
    );
    assert_eq!(
        encoding.as_string().as_deref(),
        Some("listpack"),
        "the append keys are chunked like the body"
    );
    // The newest keys are still recognised after the list was chunked and
    // trimmed; the first key was pushed out by the appends since.
    let last_key = store.new_append_key();
    let last = store
        .append_frame_with_key(&id, &frame(99), &last_key)
        .await
        .unwrap();
    let again = store
        .append_frame_with_key(&id, &frame(99), &last_key)
        .await
        .unwrap();
    assert_eq!(again, last, "a repeated key answers the stored id");
    let forgotten = store
        .append_frame_with_key(&id, &frame(0), &key)
        .await
        .unwrap();
    assert!(forgotten > first, "a key pushed out is a new append");
    assert_eq!(store.get(&id).await.unwrap().frame_count, 40);
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_body_that_shrinks_or_grows_across_chunks_reads_back_whole() {
    let (store, client, _clock, prefix) = store_and_client().await;
    let id = SessionId::random().unwrap();
    store.create(proxy_like(&id)).await.unwrap();
    let meta = meta_key(&prefix, &id);
    let mut session = store.get(&id).await.unwrap();
    for size in [1_000usize, 10, 300, 0] {
        session.tags.clear();
        if size > 0 {
            session.tags.insert("pad".into(), "x".repeat(size));
        }
        session.client_info = None;
        session = store.update(&session).await.unwrap();
        let read = store.get(&id).await.unwrap();
        assert_eq!(read.tags, session.tags, "after an update to {size} B");
        let fields = match raw(&client, "HKEYS", vec![text(&meta)]).await {
            Value::Array(keys) => keys
                .into_iter()
                .filter_map(|k| k.as_string())
                .collect::<Vec<_>>(),
            other => panic!("HKEYS: {other:?}"),
        };
        let chunks = fields.iter().filter(|f| f.starts_with('b')).count();
        println!("tags of {size} B: {chunks} body fields");
        // No chunk an earlier, longer body left behind.
        if size <= 10 {
            assert_eq!(chunks, 1, "{fields:?}");
        }
    }
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_record_written_in_the_previous_layout_reads_updates_and_touches() {
    let (store, client, clock, prefix) = store_and_client().await;
    let id = SessionId::random().unwrap();
    let meta = meta_key(&prefix, &id);
    // The layout before issue 14: the whole body, named msgpack, in `body`.
    let body = codec::encode(&serde_json::json!({
        "upstream_session_id": "up-1",
        "transport": "streamable_http",
        "status": "active",
        "protocol_version": "2025-06-18",
        "client_info": {"clientInfo": {"name": "old", "version": "0.9"}},
        "server_info": null,
        "tags": {"binding": "b".repeat(64)}
    }))
    .unwrap();
    assert!(body.len() > 64);
    let now = clock.now().as_millis();
    let now_text = now.to_string();
    let mut args = vec![text(&meta)];
    for (field, value) in [
        ("created", now_text.as_str()),
        ("last", now_text.as_str()),
        ("rev", "1"),
        ("fc", "0"),
        ("lfid", "0-0"),
        ("v", "1"),
        ("ck", "0000000000000001"),
    ] {
        args.extend([text(field), text(value)]);
    }
    args.extend([text("body"), Value::Bytes(body.into())]);
    raw(&client, "HSET", args).await;
    raw(
        &client,
        "PEXPIREAT",
        vec![text(&meta), text(&(now + 60_000).to_string())],
    )
    .await;

    let old = store.get(&id).await.unwrap();
    assert_eq!(old.upstream_session_id.as_deref(), Some("up-1"));
    assert_eq!(old.status, SessionStatus::Active);
    assert_eq!(old.tags["binding"], "b".repeat(64));
    store.touch(&id).await.unwrap();
    let mut changed = old.clone();
    changed.tags.insert("route".into(), "r".repeat(100));
    let updated = store.update(&changed).await.unwrap();
    let read = store.get(&id).await.unwrap();
    assert_eq!(read.tags, changed.tags);
    assert_eq!(read.revision, updated.revision);
    assert_eq!(read.client_info, old.client_info);
}
