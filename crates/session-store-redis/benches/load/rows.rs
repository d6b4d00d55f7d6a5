//! The rows of each operation: through the store, its commands by hand the
//! store's way ("raw") and as fred `custom` commands, the plain typed floor and
//! the peer (`tower-sessions-redis-store`).
//!
//! The raw rows mirror `src/store.rs` `send`: one pipeline on the pool's next
//! client with the store's options, each command typed when `src/typed.rs` has a
//! typed form for it (`PEXPIRETIME`, `HGET`), else `custom` (`EVALSHA`,
//! `XRANGE`). get and touch are one `EVALSHA` each, of copies of the store's
//! scripts (`Fixture::get_sha`, `touch_sha`); their previous forms (two and four
//! commands) stay as historical rows. append and `append_frames` are one
//! `EVALSHA` of the store's own append script, with one or [`BATCH`] frames.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use fred::{
    interfaces::{ClientLike, HashesInterface, KeysInterface, StreamsInterface},
    types::{ClusterHash, Value},
};
use session_store_core::{SessionId, SessionStore};
use session_store_redis::REMEMBERED_APPEND_KEYS;
use tower_sessions_core::SessionStore as _;

use super::{
    new_session,
    ops::{now_ms, on, spec, Op, Spec, Variant},
    Fixture, TaskKeys, BATCH, FRAMES_PER_SESSION, MAX_FRAMES,
};
use crate::common::raw::{self, number, store_options, store_pipeline, text, Command};

/// Append keys the raw append sends, each used once as the store's are.
static APPEND_KEY: AtomicU64 = AtomicU64::new(1);

fn queueing(error: fred::error::Error) -> String {
    format!("queueing: {error}")
}

/// Milliseconds as the `i64` fred's typed `PEXPIREAT` takes.
fn at(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// `create` of a new session with a protocol version and client info; the
/// peer's `create` of a record of 1 KiB. No raw row: the store's create body
/// encoding is internal.
pub fn create(f: &Arc<Fixture>) -> Vec<Spec> {
    let ours = on(f, |f, _| async move {
        let id = SessionId::random().map_err(|e| e.to_string())?;
        f.store
            .create(new_session(id))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let peer = on(f, |f, t| async move {
        // A fresh id: the peer's create of a taken id fails to parse the
        // `SET NX` reply instead of picking another.
        let mut record = f.tasks[t].record.clone();
        record.id = Default::default();
        f.peer
            .create(&mut record)
            .await
            .map_err(|e| format!("peer create: {e}"))
    });
    vec![
        spec(Op::Create, Variant::Ours, "create", ours),
        spec(Op::Create, Variant::Peer, "peer create 1 KiB", peer),
    ]
}

/// `update` of the task's own session (its stored revision, so never a
/// Conflict); the peer's `save` is its only write. No raw row, as create.
pub fn update(f: &Arc<Fixture>) -> Vec<Spec> {
    let ours = on(f, |f, t| async move {
        let keys = &f.tasks[t];
        let mut session = keys
            .session
            .lock()
            .map_err(|_| "session lock poisoned".to_owned())?
            .clone();
        session
            .tags
            .insert("bench".to_owned(), session.revision.to_string());
        let stored = f.store.update(&session).await.map_err(|e| e.to_string())?;
        *keys
            .session
            .lock()
            .map_err(|_| "session lock poisoned".to_owned())? = stored;
        Ok(())
    });
    let peer = on(f, |f, t| async move {
        f.peer
            .save(&f.tasks[t].record)
            .await
            .map_err(|e| format!("peer save: {e}"))
    });
    vec![
        spec(Op::Update, Variant::Ours, "update (a tag)", ours),
        spec(Op::Update, Variant::Peer, "peer save 1 KiB", peer),
    ]
}

pub fn get(f: &Arc<Fixture>) -> Vec<Spec> {
    let ours = on(f, |f, t| async move {
        f.store
            .get(&f.tasks[t].id)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let raw = on(f, |f, t| async move {
        let meta = &f.tasks[t].meta;
        let p = store_pipeline(&f.raw);
        let slot = ClusterHash::Custom(fred::util::redis_keyslot(meta.as_bytes()));
        let args = vec![text(&f.get_sha), number(1), text(meta)];
        raw::queue_custom(&p, slot, ("EVALSHA", args)).await?;
        raw::send(p, 1, "get").await.map(drop)
    });
    let previous = on(f, |f, t| async move {
        let meta = &f.tasks[t].meta;
        let p = store_pipeline(&f.raw);
        let _: Value = p.hgetall(meta).await.map_err(queueing)?;
        let _: Value = p.pexpire_time(meta).await.map_err(queueing)?;
        raw::send(p, 2, "get").await.map(drop)
    });
    let custom = on(f, |f, t| async move {
        let meta = &f.tasks[t].meta;
        raw::custom_pipeline(
            &f.raw,
            vec![
                ("HGETALL", vec![text(meta)]),
                ("PEXPIRETIME", vec![text(meta)]),
            ],
        )
        .await
        .map(drop)
    });
    let floor = on(f, |f, t| async move {
        let _: Value = f
            .raw
            .next()
            .with_options(&store_options())
            .get(&f.tasks[t].string)
            .await
            .map_err(|e| format!("GET: {e}"))?;
        Ok(())
    });
    let near = on(f, |f, t| async move {
        f.near
            .get(&f.tasks[t].id)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let peer = on(f, |f, t| async move {
        match f.peer.load(&f.tasks[t].record.id).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("peer load: record missing".to_owned()),
            Err(e) => Err(format!("peer load: {e}")),
        }
    });
    vec![
        spec(Op::Get, Variant::Ours, "get", ours),
        spec(Op::Get, Variant::NearCache, "get, near cache (hot)", near),
        spec(Op::Get, Variant::Raw, "raw EVALSHA get", raw),
        spec(
            Op::Get,
            Variant::Historical,
            "old get: HGETALL+PEXPIRETIME typed",
            previous,
        ),
        spec(
            Op::Get,
            Variant::Custom,
            "old get: custom HGETALL+PEXPIRETIME",
            custom,
        ),
        spec(Op::Get, Variant::Floor, "floor GET 1 KiB", floor),
        spec(Op::Get, Variant::Peer, "peer load 1 KiB", peer),
    ]
}

/// The store's previous touch: `PEXPIRETIME`, `HGET created`, `PEXPIREAT` meta
/// and frames.
fn touch_commands(keys: &TaskKeys, sliding: u64) -> Vec<Command> {
    vec![
        ("PEXPIRETIME", vec![text(&keys.meta)]),
        ("HGET", vec![text(&keys.meta), text("created")]),
        ("PEXPIREAT", vec![text(&keys.meta), number(sliding)]),
        ("PEXPIREAT", vec![text(&keys.frames), number(sliding)]),
    ]
}

pub fn touch(f: &Arc<Fixture>) -> Vec<Spec> {
    let ours = on(f, |f, t| async move {
        f.store
            .touch(&f.tasks[t].id)
            .await
            .map_err(|e| e.to_string())
    });
    let raw = on(f, |f, t| async move {
        let keys = &f.tasks[t];
        let p = store_pipeline(&f.raw);
        let slot = ClusterHash::Custom(fred::util::redis_keyslot(keys.meta.as_bytes()));
        let args = vec![
            text(&f.touch_sha),
            number(2),
            text(&keys.meta),
            text(&keys.frames),
            number(now_ms()),
            number(f.ttl_ms),
            number(f.max_life_ms),
        ];
        raw::queue_custom(&p, slot, ("EVALSHA", args)).await?;
        let replies = raw::send(p, 1, "touch").await?;
        match replies.first() {
            Some(Value::Array(reply))
                if reply.first().and_then(|v| v.as_str()).as_deref() == Some("OK") =>
            {
                Ok(())
            }
            other => Err(format!("touch script replied {other:?}")),
        }
    });
    let previous = on(f, |f, t| async move {
        let keys = &f.tasks[t];
        let sliding = at(now_ms() + f.ttl_ms);
        let p = store_pipeline(&f.raw);
        let _: Value = p.pexpire_time(&keys.meta).await.map_err(queueing)?;
        let _: Value = p.hget(&keys.meta, "created").await.map_err(queueing)?;
        let _: Value = p
            .pexpire_at(&keys.meta, sliding, None)
            .await
            .map_err(queueing)?;
        let _: Value = p
            .pexpire_at(&keys.frames, sliding, None)
            .await
            .map_err(queueing)?;
        raw::send(p, 4, "touch").await.map(drop)
    });
    let custom = on(f, |f, t| async move {
        let sliding = now_ms() + f.ttl_ms;
        raw::custom_pipeline(&f.raw, touch_commands(&f.tasks[t], sliding))
            .await
            .map(drop)
    });
    // The store's touch before 0343964 and 3bf31d2: the four commands plus the
    // expiry index's `ZADD XX`, all `custom`.
    let historical = on(f, |f, t| async move {
        let keys = &f.tasks[t];
        let sliding = now_ms() + f.ttl_ms;
        let mut commands = touch_commands(keys, sliding);
        commands.push((
            "ZADD",
            vec![
                text(&keys.index),
                text("XX"),
                number(sliding),
                text(keys.id.as_str()),
            ],
        ));
        raw::custom_pipeline(&f.raw, commands).await.map(drop)
    });
    let floor = on(f, |f, t| async move {
        let _: Value = f
            .raw
            .next()
            .with_options(&store_options())
            .set(&f.tasks[t].string, f.payload.clone(), None, None, false)
            .await
            .map_err(|e| format!("SET: {e}"))?;
        Ok(())
    });
    let peer = on(f, |f, t| async move {
        f.peer
            .save(&f.tasks[t].record)
            .await
            .map_err(|e| format!("peer save: {e}"))
    });
    vec![
        spec(Op::Touch, Variant::Ours, "touch", ours),
        spec(Op::Touch, Variant::Raw, "raw EVALSHA touch", raw),
        spec(
            Op::Touch,
            Variant::Historical,
            "old touch: 4 commands typed",
            previous,
        ),
        spec(
            Op::Touch,
            Variant::Custom,
            "old touch: 4 custom commands",
            custom,
        ),
        spec(
            Op::Touch,
            Variant::Historical,
            "old touch: 5 custom (+ZADD XX)",
            historical,
        ),
        spec(Op::Touch, Variant::Floor, "floor SET 1 KiB", floor),
        spec(Op::Touch, Variant::Peer, "peer save 1 KiB", peer),
    ]
}

/// The store's append of `count` frames: one `EVALSHA` of its append script
/// (always `custom`: fred flushes `EVALSHA` anyway) with `count` (key, frame)
/// pairs, each key used once as the store's are. No index write, as the store.
async fn raw_append(f: Arc<Fixture>, t: usize, count: usize) -> Result<(), String> {
    let keys = &f.tasks[t];
    let p = store_pipeline(&f.raw);
    let slot = ClusterHash::Custom(fred::util::redis_keyslot(keys.meta.as_bytes()));
    let mut script_args = vec![
        text(&f.append_sha),
        number(2),
        text(&keys.meta),
        text(&keys.frames),
        number(now_ms()),
        number(MAX_FRAMES),
        number(f.ttl_ms),
        number(f.max_life_ms),
        number(REMEMBERED_APPEND_KEYS as u64),
        number(f.max_session_frame_bytes),
    ];
    for _ in 0..count {
        script_args.push(text(format!(
            "{:016x}",
            APPEND_KEY.fetch_add(1, Ordering::Relaxed)
        )));
        script_args.push(Value::Bytes(f.encoded_frame.clone()));
    }
    raw::queue_custom(&p, slot, ("EVALSHA", script_args)).await?;
    let replies = raw::send(p, 1, "append").await?;
    match replies.first() {
        Some(Value::Array(reply))
            if reply.first().and_then(|v| v.as_str()).as_deref() == Some("OK") =>
        {
            Ok(())
        }
        other => Err(format!("append script replied {other:?}")),
    }
}

pub fn append(f: &Arc<Fixture>) -> Vec<Spec> {
    let ours = on(f, |f, t| async move {
        f.store
            .append_frame(&f.tasks[t].id, f.frame.clone())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let raw = on(f, |f, t| raw_append(f, t, 1));
    let floor = on(f, |f, t| async move {
        let _: Value = f
            .raw
            .next()
            .with_options(&store_options())
            .xadd(
                &f.tasks[t].stream,
                false,
                ("MAXLEN", "~", i64::try_from(MAX_FRAMES).unwrap_or(i64::MAX)),
                "*",
                ("f", f.payload.clone()),
            )
            .await
            .map_err(|e| format!("XADD: {e}"))?;
        Ok(())
    });
    vec![
        spec(Op::Append, Variant::Ours, "append 1 KiB", ours),
        spec(Op::Append, Variant::Raw, "raw EVALSHA append", raw),
        spec(Op::Append, Variant::Floor, "floor XADD 1 KiB", floor),
    ]
}

/// `append_frames` of [`BATCH`] frames of 1 KiB: one round trip per batch
/// (rows count batches; frames/s is `BATCH` times that).
pub fn append_batch(f: &Arc<Fixture>) -> Vec<Spec> {
    let ours = on(f, |f, t| async move {
        let frames = vec![f.frame.clone(); BATCH];
        let ids = f
            .store
            .append_frames(&f.tasks[t].id, frames)
            .await
            .map_err(|e| e.to_string())?;
        if ids.len() == BATCH {
            Ok(())
        } else {
            Err(format!("append_frames returned {} ids", ids.len()))
        }
    });
    let raw = on(f, |f, t| raw_append(f, t, BATCH));
    // What a relay paid before `append_frames`: one awaited append per frame.
    let one_by_one = on(f, |f, t| async move {
        for _ in 0..BATCH {
            f.store
                .append_frame(&f.tasks[t].id, f.frame.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    vec![
        spec(
            Op::AppendBatch,
            Variant::Ours,
            "append_frames 8 x 1 KiB",
            ours,
        ),
        spec(
            Op::AppendBatch,
            Variant::Raw,
            "raw EVALSHA append, 8 frames",
            raw,
        ),
        spec(
            Op::AppendBatch,
            Variant::Alternative,
            "8 x append_frame in turn",
            one_by_one,
        ),
    ]
}

/// The store's read: `PEXPIRETIME` and `HGET created` (typed) and `XRANGE - +
/// COUNT 100`, which `src/typed.rs` has no typed form for (`custom`) unless
/// `typed_range`.
async fn raw_read(f: Arc<Fixture>, t: usize, typed_range: bool) -> Result<(), String> {
    let keys = &f.tasks[t];
    let p = store_pipeline(&f.raw);
    let _: Value = p.pexpire_time(&keys.meta).await.map_err(queueing)?;
    let _: Value = p.hget(&keys.meta, "created").await.map_err(queueing)?;
    if typed_range {
        let _: Value = p
            .xrange(&keys.frames, "-", "+", Some(FRAMES_PER_SESSION as u64))
            .await
            .map_err(queueing)?;
    } else {
        raw::queue_custom(&p, ClusterHash::FirstKey, range_command(keys)).await?;
    }
    raw::send(p, 3, "read").await.map(drop)
}

fn range_command(keys: &TaskKeys) -> Command {
    (
        "XRANGE",
        vec![
            text(&keys.frames),
            text("-"),
            text("+"),
            text("COUNT"),
            number(FRAMES_PER_SESSION as u64),
        ],
    )
}

pub fn read(f: &Arc<Fixture>) -> Vec<Spec> {
    let ours = on(f, |f, t| async move {
        let frames = f
            .store
            .read_frames(&f.tasks[t].id, None, FRAMES_PER_SESSION)
            .await
            .map_err(|e| e.to_string())?;
        if frames.len() == FRAMES_PER_SESSION {
            Ok(())
        } else {
            Err(format!(
                "read {} frames, expected {FRAMES_PER_SESSION}",
                frames.len()
            ))
        }
    });
    let raw = on(f, |f, t| raw_read(f, t, false));
    let typed = on(f, |f, t| raw_read(f, t, true));
    let custom = on(f, |f, t| async move {
        let keys = &f.tasks[t];
        raw::custom_pipeline(
            &f.raw,
            vec![
                ("PEXPIRETIME", vec![text(&keys.meta)]),
                ("HGET", vec![text(&keys.meta), text("created")]),
                range_command(keys),
            ],
        )
        .await
        .map(drop)
    });
    vec![
        spec(Op::Read, Variant::Ours, "read 100 frames", ours),
        spec(
            Op::Read,
            Variant::Raw,
            "raw PEXPIRETIME+HGET typed, XRANGE",
            raw,
        ),
        spec(
            Op::Read,
            Variant::Alternative,
            "raw all typed (XRANGE typed too)",
            typed,
        ),
        spec(
            Op::Read,
            Variant::Custom,
            "custom PEXPIRETIME+HGET+XRANGE",
            custom,
        ),
    ]
}

/// Every row of one pool size, grouped by operation so the store and its raw
/// baseline run back to back.
pub fn specs(f: &Arc<Fixture>) -> Vec<Spec> {
    let mut specs = Vec::new();
    specs.extend(create(f));
    specs.extend(get(f));
    specs.extend(touch(f));
    specs.extend(update(f));
    specs.extend(append(f));
    specs.extend(append_batch(f));
    specs.extend(read(f));
    specs
}
