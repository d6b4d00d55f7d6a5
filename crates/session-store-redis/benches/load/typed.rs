//! Rows with the same commands sent as typed fred calls instead of `custom`
//! commands, to show what fred's flush per `custom` command costs.

use fred::{
    clients::{Client, Pipeline, Pool},
    interfaces::{HashesInterface, KeysInterface, SortedSetsInterface, StreamsInterface},
    types::{SetOptions, Value},
};

use super::{
    ops::{now_ms, spec, Op, Spec, Variant},
    Fixture, FRAMES_PER_SESSION,
};
use crate::common::measure::operation;

/// Queues typed fred commands (not `custom`): fred flushes the socket after every
/// `custom` command, but batches typed ones queued by several tasks into one write.
async fn typed_pipeline<F, Fut>(pool: &Pool, queue: F) -> Result<(), String>
where
    F: FnOnce(Pipeline<Client>) -> Fut,
    Fut: std::future::Future<Output = Result<Pipeline<Client>, fred::error::Error>>,
{
    let pipeline = queue(pool.next().pipeline())
        .await
        .map_err(|e| format!("queueing: {e}"))?;
    for reply in pipeline.try_all::<Value>().await {
        reply.map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub fn typed_rows(f: &Fixture) -> Vec<Spec> {
    let (pool, tasks) = (f.raw.clone(), f.tasks.clone());
    let typed_get = operation(move |t| {
        let (pool, tasks) = (pool.clone(), tasks.clone());
        async move {
            let meta = tasks[t].meta.clone();
            typed_pipeline(&pool, |p| async move {
                let _: Value = p.hgetall(&meta).await?;
                let _: Value = p.pexpire_time(&meta).await?;
                Ok(p)
            })
            .await
        }
    });
    let (pool, tasks) = (f.raw.clone(), f.tasks.clone());
    let typed_floor_get = operation(move |t| {
        let (pool, tasks) = (pool.clone(), tasks.clone());
        async move {
            let _: Value = pool
                .get(&tasks[t].string)
                .await
                .map_err(|e| format!("GET: {e}"))?;
            Ok(())
        }
    });
    let typed_touch = |with_index: bool| {
        let (pool, tasks, ttl_ms) = (f.raw.clone(), f.tasks.clone(), f.ttl_ms);
        operation(move |t| {
            let (pool, tasks) = (pool.clone(), tasks.clone());
            async move {
                let keys = &tasks[t];
                let sliding = i64::try_from(now_ms() + ttl_ms).unwrap_or(i64::MAX);
                let (meta, frames, index, id) = (
                    keys.meta.clone(),
                    keys.frames.clone(),
                    keys.index.clone(),
                    keys.id.to_string(),
                );
                typed_pipeline(&pool, |p| async move {
                    let _: Value = p.pexpire_time(&meta).await?;
                    let _: Value = p.hget(&meta, "created").await?;
                    let _: Value = p.pexpire_at(&meta, sliding, None).await?;
                    let _: Value = p.pexpire_at(&frames, sliding, None).await?;
                    if with_index {
                        let _: Value = p
                            .zadd(
                                &index,
                                Some(SetOptions::XX),
                                None,
                                false,
                                false,
                                (sliding as f64, id),
                            )
                            .await?;
                    }
                    Ok(p)
                })
                .await
            }
        })
    };
    let (pool, tasks) = (f.raw.clone(), f.tasks.clone());
    let typed_read = operation(move |t| {
        let (pool, tasks) = (pool.clone(), tasks.clone());
        async move {
            let (meta, frames) = (tasks[t].meta.clone(), tasks[t].frames.clone());
            typed_pipeline(&pool, |p| async move {
                let _: Value = p.pexpire_time(&meta).await?;
                let _: Value = p.hget(&meta, "created").await?;
                let _: Value = p
                    .xrange(&frames, "-", "+", Some(FRAMES_PER_SESSION as u64))
                    .await?;
                Ok(p)
            })
            .await
        }
    });
    vec![
        spec(
            Op::Get,
            Variant::Alternative,
            "raw typed HGETALL+PEXPIRETIME",
            typed_get,
        ),
        spec(
            Op::Get,
            Variant::Floor,
            "floor typed GET 1 KiB",
            typed_floor_get,
        ),
        spec(
            Op::Touch,
            Variant::Alternative,
            "raw typed touch, 5 commands",
            typed_touch(true),
        ),
        spec(
            Op::Touch,
            Variant::Alternative,
            "raw typed touch, 4 (no ZADD XX)",
            typed_touch(false),
        ),
        spec(
            Op::Read,
            Variant::Alternative,
            "raw typed PEXPIRETIME+HGET+XRANGE",
            typed_read,
        ),
    ]
}
