//! The rows of the load bench: each operation through the store, the same Redis
//! commands by hand ("raw"), the plain single-command floor, and the peer
//! (`tower-sessions-redis-store`).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use session_store_core::SessionStore;
use session_store_redis::REMEMBERED_APPEND_KEYS;
use tower_sessions_core::SessionStore as _;

use super::{Fixture, FRAMES_PER_SESSION, MAX_FRAMES};
use crate::common::{
    measure::{operation, Operation},
    raw::{self, bytes, number, text},
};

/// Append keys the raw append sends (`ARGV[6]`), each used once as the store's are.
static APPEND_KEY: AtomicU64 = AtomicU64::new(1);

/// The store operation a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Touch,
    Append,
    Read,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Get, Op::Touch, Op::Append, Op::Read];

    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Touch => "touch",
            Op::Append => "append 1 KiB",
            Op::Read => "read 100 frames",
        }
    }
}

/// What a row measures for its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Through `RedisStore`.
    Ours,
    /// The store's commands by hand: the limit of the data model.
    Raw,
    /// A cheaper command set the store could send instead.
    Alternative,
    /// One plain command on 1 KiB.
    Floor,
    /// `tower-sessions-redis-store`.
    Peer,
}

/// One row: what it is and how to run it.
pub struct Spec {
    pub op: Op,
    pub variant: Variant,
    pub label: &'static str,
    pub operation: Operation,
}

pub fn spec(op: Op, variant: Variant, label: &'static str, operation: Operation) -> Spec {
    Spec {
        op,
        variant,
        label,
        operation,
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Every row of one pool size, grouped by operation so the store and its raw
/// baseline run back to back.
pub fn specs(f: &Fixture) -> Vec<Spec> {
    let mut specs = Vec::new();
    specs.extend(get_rows(f));
    specs.extend(touch_rows(f));
    specs.extend(append_rows(f));
    specs.extend(read_rows(f));
    specs.extend(super::typed::typed_rows(f));
    specs
}

fn get_rows(f: &Fixture) -> Vec<Spec> {
    let (store, pool, peer, tasks) = (
        f.store.clone(),
        f.raw.clone(),
        f.peer.clone(),
        f.tasks.clone(),
    );
    let ours = operation(move |t| {
        let (store, tasks) = (store.clone(), tasks.clone());
        async move {
            store
                .get(&tasks[t].id)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    });
    let tasks = f.tasks.clone();
    let raw_pool = pool.clone();
    let raw_get = operation(move |t| {
        let (pool, tasks) = (raw_pool.clone(), tasks.clone());
        async move {
            let meta = &tasks[t].meta;
            raw::pipeline(
                &pool,
                vec![
                    ("HGETALL", vec![text(meta)]),
                    ("PEXPIRETIME", vec![text(meta)]),
                ],
            )
            .await
            .map(drop)
        }
    });
    let tasks = f.tasks.clone();
    let floor = operation(move |t| {
        let (pool, tasks) = (pool.clone(), tasks.clone());
        async move {
            raw::single(&pool, ("GET", vec![text(&tasks[t].string)]))
                .await
                .map(drop)
        }
    });
    let tasks = f.tasks.clone();
    let peer_load = operation(move |t| {
        let (peer, tasks) = (peer.clone(), tasks.clone());
        async move {
            match peer.load(&tasks[t].record.id).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err("peer load: record missing".to_owned()),
                Err(e) => Err(format!("peer load: {e}")),
            }
        }
    });
    vec![
        spec(Op::Get, Variant::Ours, "get", ours),
        spec(Op::Get, Variant::Raw, "raw HGETALL+PEXPIRETIME", raw_get),
        spec(Op::Get, Variant::Floor, "floor GET 1 KiB", floor),
        spec(Op::Get, Variant::Peer, "peer load 1 KiB", peer_load),
    ]
}

fn touch_rows(f: &Fixture) -> Vec<Spec> {
    let (store, tasks) = (f.store.clone(), f.tasks.clone());
    let ours = operation(move |t| {
        let (store, tasks) = (store.clone(), tasks.clone());
        async move { store.touch(&tasks[t].id).await.map_err(|e| e.to_string()) }
    });
    let raw_touch = |with_index: bool| {
        let (pool, tasks, ttl_ms) = (f.raw.clone(), f.tasks.clone(), f.ttl_ms);
        operation(move |t| {
            let (pool, tasks) = (pool.clone(), tasks.clone());
            async move {
                let keys = &tasks[t];
                let sliding = now_ms() + ttl_ms;
                let mut commands = vec![
                    ("PEXPIRETIME", vec![text(&keys.meta)]),
                    ("HGET", vec![text(&keys.meta), text("created")]),
                    ("PEXPIREAT", vec![text(&keys.meta), number(sliding)]),
                    ("PEXPIREAT", vec![text(&keys.frames), number(sliding)]),
                ];
                if with_index {
                    commands.push((
                        "ZADD",
                        vec![
                            text(&keys.index),
                            text("XX"),
                            number(sliding),
                            text(keys.id.as_str()),
                        ],
                    ));
                }
                raw::pipeline(&pool, commands).await.map(drop)
            }
        })
    };
    let (pool, tasks, payload) = (f.raw.clone(), f.tasks.clone(), f.payload.clone());
    let floor = operation(move |t| {
        let (pool, tasks, payload) = (pool.clone(), tasks.clone(), payload.clone());
        async move {
            raw::single(
                &pool,
                ("SET", vec![text(&tasks[t].string), bytes(&payload)]),
            )
            .await
            .map(drop)
        }
    });
    let (peer, tasks) = (f.peer.clone(), f.tasks.clone());
    let peer_save = operation(move |t| {
        let (peer, tasks) = (peer.clone(), tasks.clone());
        async move {
            peer.save(&tasks[t].record)
                .await
                .map_err(|e| format!("peer save: {e}"))
        }
    });
    let script_touch = |with_index: bool| {
        let (pool, tasks, sha, ttl_ms) = (
            f.raw.clone(),
            f.tasks.clone(),
            f.touch_sha.clone(),
            f.ttl_ms,
        );
        operation(move |t| {
            let (pool, tasks, sha) = (pool.clone(), tasks.clone(), sha.clone());
            async move {
                let keys = &tasks[t];
                let sliding = now_ms() + ttl_ms;
                let mut commands = vec![(
                    "EVALSHA",
                    vec![
                        text(&*sha),
                        number(2),
                        text(&keys.meta),
                        text(&keys.frames),
                        number(sliding),
                    ],
                )];
                if with_index {
                    commands.push((
                        "ZADD",
                        vec![
                            text(&keys.index),
                            text("XX"),
                            number(sliding),
                            text(keys.id.as_str()),
                        ],
                    ));
                }
                raw::pipeline(&pool, commands).await.map(drop)
            }
        })
    };
    vec![
        spec(Op::Touch, Variant::Ours, "touch", ours),
        spec(
            Op::Touch,
            Variant::Alternative,
            "raw EVALSHA touch + ZADD XX",
            script_touch(true),
        ),
        spec(
            Op::Touch,
            Variant::Alternative,
            "raw EVALSHA touch (no ZADD)",
            script_touch(false),
        ),
        spec(
            Op::Touch,
            Variant::Raw,
            "raw touch, 5 commands",
            raw_touch(true),
        ),
        spec(
            Op::Touch,
            Variant::Alternative,
            "raw touch, 4 (no ZADD XX)",
            raw_touch(false),
        ),
        spec(Op::Touch, Variant::Floor, "floor SET 1 KiB", floor),
        spec(Op::Touch, Variant::Peer, "peer save 1 KiB", peer_save),
    ]
}

fn append_rows(f: &Fixture) -> Vec<Spec> {
    let (store, tasks, frame) = (f.store.clone(), f.tasks.clone(), f.frame.clone());
    let ours = operation(move |t| {
        let (store, tasks, frame) = (store.clone(), tasks.clone(), frame.clone());
        async move {
            store
                .append_frame(&tasks[t].id, frame)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    });
    let (pool, tasks, encoded, sha) = (
        f.raw.clone(),
        f.tasks.clone(),
        f.encoded_frame.clone(),
        f.append_sha.clone(),
    );
    let (ttl_ms, max_life_ms) = (f.ttl_ms, f.max_life_ms);
    let raw_script = operation(move |t| {
        let (pool, tasks, encoded, sha) =
            (pool.clone(), tasks.clone(), encoded.clone(), sha.clone());
        async move {
            let keys = &tasks[t];
            let now = now_ms();
            raw::pipeline(
                &pool,
                vec![
                    (
                        "EVALSHA",
                        vec![
                            text(&*sha),
                            number(2),
                            text(&keys.meta),
                            text(&keys.frames),
                            number(now),
                            bytes(&encoded),
                            number(MAX_FRAMES),
                            number(ttl_ms),
                            number(max_life_ms),
                            text(format!(
                                "{:016x}",
                                APPEND_KEY.fetch_add(1, Ordering::Relaxed)
                            )),
                            number(REMEMBERED_APPEND_KEYS as u64),
                        ],
                    ),
                    (
                        "ZADD",
                        vec![
                            text(&keys.index),
                            text("XX"),
                            number(now + ttl_ms),
                            text(keys.id.as_str()),
                        ],
                    ),
                ],
            )
            .await
            .map(drop)
        }
    });
    let (pool, tasks, encoded) = (f.raw.clone(), f.tasks.clone(), f.encoded_frame.clone());
    let raw_pipeline = operation(move |t| {
        let (pool, tasks, encoded) = (pool.clone(), tasks.clone(), encoded.clone());
        async move {
            let keys = &tasks[t];
            let now = now_ms();
            let sliding = number(now + ttl_ms);
            // Its own stream: server-assigned ids (`*`) must not mix with the
            // store's client-assigned ones.
            raw::pipeline(
                &pool,
                vec![
                    (
                        "XADD",
                        vec![
                            text(&keys.stream),
                            text("MAXLEN"),
                            text("~"),
                            number(MAX_FRAMES),
                            text("*"),
                            text("f"),
                            bytes(&encoded),
                        ],
                    ),
                    ("HINCRBY", vec![text(&keys.meta), text("fc"), number(1)]),
                    ("HSET", vec![text(&keys.meta), text("last"), number(now)]),
                    ("PEXPIREAT", vec![text(&keys.meta), sliding.clone()]),
                    ("PEXPIREAT", vec![text(&keys.stream), sliding.clone()]),
                    (
                        "ZADD",
                        vec![
                            text(&keys.index),
                            text("XX"),
                            sliding,
                            text(keys.id.as_str()),
                        ],
                    ),
                ],
            )
            .await
            .map(drop)
        }
    });
    let (pool, tasks, payload) = (f.raw.clone(), f.tasks.clone(), f.payload.clone());
    let floor = operation(move |t| {
        let (pool, tasks, payload) = (pool.clone(), tasks.clone(), payload.clone());
        async move {
            let stream = text(format!("{}:xadd", tasks[t].stream));
            raw::single(
                &pool,
                (
                    "XADD",
                    vec![
                        stream,
                        text("MAXLEN"),
                        text("~"),
                        number(MAX_FRAMES),
                        text("*"),
                        text("f"),
                        bytes(&payload),
                    ],
                ),
            )
            .await
            .map(drop)
        }
    });
    vec![
        spec(Op::Append, Variant::Ours, "append 1 KiB", ours),
        spec(
            Op::Append,
            Variant::Raw,
            "raw EVALSHA append + ZADD XX",
            raw_script,
        ),
        spec(
            Op::Append,
            Variant::Alternative,
            "raw XADD+HINCRBY+HSET+PEXPIREAT×2+ZADD",
            raw_pipeline,
        ),
        spec(Op::Append, Variant::Floor, "floor XADD 1 KiB", floor),
    ]
}

fn read_rows(f: &Fixture) -> Vec<Spec> {
    let (store, tasks) = (f.store.clone(), f.tasks.clone());
    let ours = operation(move |t| {
        let (store, tasks) = (store.clone(), tasks.clone());
        async move {
            let frames = store
                .read_frames(&tasks[t].id, None, FRAMES_PER_SESSION)
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
        }
    });
    let (pool, tasks) = (f.raw.clone(), f.tasks.clone());
    let raw_read = operation(move |t| {
        let (pool, tasks) = (pool.clone(), tasks.clone());
        async move {
            let keys = &tasks[t];
            raw::pipeline(
                &pool,
                vec![
                    ("PEXPIRETIME", vec![text(&keys.meta)]),
                    ("HGET", vec![text(&keys.meta), text("created")]),
                    (
                        "XRANGE",
                        vec![
                            text(&keys.frames),
                            text("-"),
                            text("+"),
                            text("COUNT"),
                            number(FRAMES_PER_SESSION as u64),
                        ],
                    ),
                ],
            )
            .await
            .map(drop)
        }
    });
    vec![
        spec(Op::Read, Variant::Ours, "read 100 frames", ours),
        spec(
            Op::Read,
            Variant::Raw,
            "raw PEXPIRETIME+HGET+XRANGE 100",
            raw_read,
        ),
    ]
}
