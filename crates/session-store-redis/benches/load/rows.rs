//! The rows of each operation: through the store, its commands by hand the
//! store's way ("raw") and as fred `custom` commands, the plain typed floor and
//! the peer (`tower-sessions-redis-store`).
//!
//! The raw rows mirror `src/store.rs` `send`: one pipeline on the pool's next
//! client with the store's options, each command typed when `src/typed.rs` has a
//! typed form for it (`PEXPIRETIME`, `HGET`, `ZADD`), else `custom` (`EVALSHA`,
//! `XRANGE`). get and touch are one `EVALSHA` each, of copies of the store's
//! scripts (`Fixture::get_sha`, `touch_sha`); their previous forms (two and four
//! commands) stay as historical rows.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use fred::{
    interfaces::{
        ClientLike, HashesInterface, KeysInterface, SortedSetsInterface, StreamsInterface,
    },
    types::{ClusterHash, SetOptions, Value},
};
use session_store_core::SessionStore;
use session_store_redis::REMEMBERED_APPEND_KEYS;
use tower_sessions_core::SessionStore as _;

use super::{
    ops::{now_ms, on, spec, Op, Spec, Variant},
    Fixture, TaskKeys, FRAMES_PER_SESSION, MAX_FRAMES,
};
use crate::common::raw::{self, number, store_options, store_pipeline, text, Command};

/// Append keys the raw append sends (`ARGV[6]`), each used once as the store's are.
static APPEND_KEY: AtomicU64 = AtomicU64::new(1);

fn queueing(error: fred::error::Error) -> String {
    format!("queueing: {error}")
}

/// Milliseconds as the `i64` fred's typed `PEXPIREAT` takes.
fn at(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
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
    let peer = on(f, |f, t| async move {
        match f.peer.load(&f.tasks[t].record.id).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("peer load: record missing".to_owned()),
            Err(e) => Err(format!("peer load: {e}")),
        }
    });
    vec![
        spec(Op::Get, Variant::Ours, "get", ours),
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

/// The store's append: `EVALSHA` of its append script (always `custom`: fred
/// flushes `EVALSHA` anyway) and `ZADD XX` of the expiry index, typed or `custom`.
async fn raw_append(f: Arc<Fixture>, t: usize, typed_zadd: bool) -> Result<(), String> {
    let keys = &f.tasks[t];
    let now = now_ms();
    let sliding = now + f.ttl_ms;
    let p = store_pipeline(&f.raw);
    let slot = ClusterHash::Custom(fred::util::redis_keyslot(keys.meta.as_bytes()));
    let script_args = vec![
        text(&f.append_sha),
        number(2),
        text(&keys.meta),
        text(&keys.frames),
        number(now),
        Value::Bytes(f.encoded_frame.clone()),
        number(MAX_FRAMES),
        number(f.ttl_ms),
        number(f.max_life_ms),
        text(format!(
            "{:016x}",
            APPEND_KEY.fetch_add(1, Ordering::Relaxed)
        )),
        number(REMEMBERED_APPEND_KEYS as u64),
    ];
    raw::queue_custom(&p, slot, ("EVALSHA", script_args)).await?;
    if typed_zadd {
        let _: Value = p
            .zadd(
                &keys.index,
                Some(SetOptions::XX),
                None,
                false,
                false,
                (sliding as f64, keys.id.as_str()),
            )
            .await
            .map_err(queueing)?;
    } else {
        let zadd = vec![
            text(&keys.index),
            text("XX"),
            number(sliding),
            text(keys.id.as_str()),
        ];
        raw::queue_custom(&p, ClusterHash::FirstKey, ("ZADD", zadd)).await?;
    }
    let replies = raw::send(p, 2, "append").await?;
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
    let raw = on(f, |f, t| raw_append(f, t, true));
    let custom = on(f, |f, t| raw_append(f, t, false));
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
        spec(
            Op::Append,
            Variant::Raw,
            "raw EVALSHA append + ZADD XX",
            raw,
        ),
        spec(
            Op::Append,
            Variant::Custom,
            "custom EVALSHA append + ZADD XX",
            custom,
        ),
        spec(Op::Append, Variant::Floor, "floor XADD 1 KiB", floor),
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
    specs.extend(get(f));
    specs.extend(touch(f));
    specs.extend(append(f));
    specs.extend(read(f));
    specs
}
