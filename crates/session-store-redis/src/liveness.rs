//! Liveness checks that stay right while other clients delete or recreate the
//! same session: the two-command probe (with an atomic re-check when the session
//! changed between its commands) and check-then-delete as one script (`reap`).

use fred::types::Value;
use session_store_core::{Error, Result, SessionId};

use crate::{
    batch::{arg, num, to_array, to_u64, Batch, Replies},
    script_reply::{corrupt_field, script_status},
    RedisStore,
};

/// Where the liveness probe's two replies are in a batch.
#[derive(Clone, Copy)]
pub(crate) struct Probe {
    created: usize,
    expire_time: usize,
}

/// What the probe saw of a live session, in ms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Live {
    pub(crate) expires: u64,
}

/// What the `reap` script did to one session.
#[derive(Debug)]
pub(crate) enum Reaped {
    /// It was not live; its keys are gone now.
    Removed,
    /// Its meta key was already gone.
    Gone,
    /// It is live (recreated after the caller's check): nothing was deleted.
    Live,
}

/// One session for [`RedisStore::reap`]: its id, the index shard its entries
/// were found in (its own shard unless `index_shards` changed), and the
/// `created` of the incarnation the caller found not live, when it read one.
pub(crate) struct ReapTarget<'a> {
    pub(crate) id: &'a SessionId,
    pub(crate) found_in: u16,
    pub(crate) created: Option<u64>,
}

/// What the probe saw: the session's expiry when live, and its `created` when
/// the hash had one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen {
    pub(crate) live: Option<Live>,
    pub(crate) created: Option<u64>,
}

impl RedisStore {
    /// Queues `HGET meta created`, then `PEXPIRETIME meta`: enough to tell
    /// whether the session is live without a script. In this order a delete
    /// landing between the two reads as "gone" (`PEXPIRETIME` -2), never as a
    /// hash without `created`.
    pub(crate) fn push_probe(&self, batch: &mut Batch, meta: &str) -> Probe {
        Probe {
            created: batch.push("HGET", vec![arg(meta), arg("created")]),
            expire_time: batch.push("PEXPIRETIME", vec![arg(meta)]),
        }
    }

    /// The session's expiry when it is live at `now`, else `None`. When the two
    /// replies disagree (no `created`, yet the key exists: the session was
    /// deleted and created again between them, or its hash is corrupt), asks
    /// again with one atomic script; only a hash that really lacks `created` is
    /// [`Error::Corrupt`].
    pub(crate) async fn probe_outcome(
        &self,
        replies: &mut Replies,
        probe: Probe,
        meta: &str,
        now: u64,
    ) -> Result<Option<Live>> {
        Ok(self.probe_seen(replies, probe, meta, now).await?.live)
    }

    /// As [`probe_outcome`](Self::probe_outcome), with the `created` seen.
    pub(crate) async fn probe_seen(
        &self,
        replies: &mut Replies,
        probe: Probe,
        meta: &str,
        now: u64,
    ) -> Result<Seen> {
        let created = replies.take(probe.created, &format!("HGET created of `{meta}`"))?;
        let expire_time = replies.int(probe.expire_time, &format!("PEXPIRETIME of `{meta}`"))?;
        if expire_time == -2 {
            return Ok(Seen {
                live: None,
                created: None,
            });
        }
        if matches!(created, Value::Null) {
            return self.probe_atomically(meta, now).await;
        }
        self.judge(expire_time, &created, meta, now)
    }

    fn judge(&self, expire_time: i64, created: &Value, meta: &str, now: u64) -> Result<Seen> {
        let created = to_u64(created, format_args!("field `created` of `{meta}`"))?;
        Ok(Seen {
            live: self
                .lifetime
                .live_until(expire_time, created, now)
                .map(|expires| Live { expires }),
            created: Some(created),
        })
    }

    /// The probe as one script: both values from one instant.
    async fn probe_atomically(&self, meta: &str, now: u64) -> Result<Seen> {
        let what = format!("liveness check of `{meta}`");
        let mut batch = Batch::retry_safe();
        let script = batch.push_script(&self.scripts.probe, vec![meta.to_owned()], Vec::new());
        let mut replies = self.run(&batch, &what).await?;
        let mut values = to_array(replies.take(script, &what)?, &what)?.into_iter();
        let expire_time = values
            .next()
            .map(|v| crate::batch::to_int(&v, &what))
            .transpose()?
            .unwrap_or(-2);
        let created = values.next().unwrap_or(Value::Null);
        if expire_time == -2 {
            return Ok(Seen {
                live: None,
                created: None,
            });
        }
        if matches!(created, Value::Null | Value::Boolean(false)) {
            return Err(Error::corrupt(format!(
                "session hash `{meta}` has no `created` field"
            )));
        }
        self.judge(expire_time, &created, meta, now)
    }

    /// Check-then-delete for sessions the caller found not live: one `reap`
    /// script per session (a session created again after the caller's check
    /// is never deleted), their entries removed from both indexes in the shard
    /// they were found in and in their own, all in one pipeline. Entries of a
    /// session that turned out live are filed again in its own shard.
    pub(crate) async fn reap(&self, targets: &[ReapTarget<'_>], now: u64) -> Result<Vec<Reaped>> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = Batch::retry_safe();
        let mut hints = Vec::new();
        let scripts: Vec<usize> = targets
            .iter()
            .map(|target| {
                let id = target.id;
                let script = batch.push_script(
                    &self.scripts.reap,
                    vec![self.keys.meta(id), self.keys.frames(id)],
                    vec![
                        num(now),
                        num(self.lifetime.max_life_ms),
                        target.created.map_or_else(|| arg(""), num),
                    ],
                );
                let own = self.keys.shard_of(id);
                for shard in [target.found_in, own] {
                    hints.push(batch.push(
                        "ZREM",
                        vec![arg(self.keys.expiry_index(shard)), arg(id.as_str())],
                    ));
                    hints.push(batch.push(
                        "ZREM",
                        vec![arg(self.keys.id_index(shard)), arg(id.as_str())],
                    ));
                    if target.found_in == own {
                        break;
                    }
                }
                script
            })
            .collect();
        let what = "removal of expired sessions";
        let mut replies = self.run(&batch, what).await?;
        let mut outcomes = Vec::with_capacity(targets.len());
        let mut refile = Batch::retry_safe();
        for (target, script) in targets.iter().zip(scripts) {
            let meta = self.keys.meta(target.id);
            let what = format!("removal of `{meta}`");
            let (status, rest) = script_status(replies.take(script, &what)?, &what)?;
            let outcome = match status.as_str() {
                "REMOVED" => Reaped::Removed,
                "GONE" => Reaped::Gone,
                "LIVE" => {
                    let expire_time = rest
                        .first()
                        .map(|v| crate::batch::to_int(v, &what))
                        .transpose()?
                        .unwrap_or(-2);
                    let created = rest.get(1).cloned().unwrap_or(Value::Null);
                    match self.judge(expire_time, &created, &meta, now)?.live {
                        Some(live) => {
                            self.push_index_entries(&mut refile, target.id, live.expires);
                            Reaped::Live
                        }
                        None => Reaped::Gone,
                    }
                }
                "CORRUPT" => return Err(corrupt_field(rest, &meta)),
                other => {
                    return Err(Error::corrupt(format!(
                        "{what}: unexpected script status `{other}`"
                    )))
                }
            };
            outcomes.push(outcome);
        }
        for index in hints {
            // Index hints, best effort.
            if let Err(error) = replies.take(index, what) {
                self.hint_failed(what, &error);
            }
        }
        if refile.len() > 0 {
            let _ = self
                .run_hints(&refile, "re-filing a recreated session")
                .await;
        }
        Ok(outcomes)
    }

    /// Queues `ZADD idx <expires> id` and `ZADD ids 0 id` in the session's own
    /// shard.
    pub(crate) fn push_index_entries(&self, batch: &mut Batch, id: &SessionId, expires: u64) {
        let shard = self.keys.shard_of(id);
        batch.push(
            "ZADD",
            vec![
                arg(self.keys.expiry_index(shard)),
                num(expires),
                arg(id.as_str()),
            ],
        );
        batch.push(
            "ZADD",
            vec![arg(self.keys.id_index(shard)), arg("0"), arg(id.as_str())],
        );
    }
}
