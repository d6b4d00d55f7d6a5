//! Session operations: create, get, get_many, update, touch, delete.

use fred::types::Value;
use session_store_core::{codec, Error, NewSession, Result, Session, SessionId, Timestamp};

use crate::{
    batch::{arg, num, raw, to_array, to_hash, to_text, to_u64, Batch, Replies},
    record::{session_from_meta, SessionBody},
    RedisStore,
};

/// Where the liveness probe's two replies are in a batch.
#[derive(Clone, Copy)]
pub(crate) struct Probe {
    expire_time: usize,
    created: usize,
}

/// What the probe saw of a live session, in ms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Live {
    pub(crate) expires: u64,
}

/// A script's reply: its status word and the values after it.
pub(crate) fn script_status(value: Value, what: &str) -> Result<(String, Vec<Value>)> {
    let mut items = to_array(value, what)?.into_iter();
    let status = items
        .next()
        .and_then(to_text)
        .ok_or_else(|| Error::corrupt(format!("{what}: script reply has no status")))?;
    Ok((status, items.collect()))
}

/// The `CORRUPT <field>` reply of a script as an error naming the key.
pub(crate) fn corrupt_field(rest: Vec<Value>, key: &str) -> Error {
    let field = rest
        .into_iter()
        .next()
        .and_then(to_text)
        .unwrap_or_default();
    Error::corrupt(format!(
        "session hash `{key}` has a missing or malformed `{field}` field"
    ))
}

impl RedisStore {
    /// Queues `PEXPIRETIME meta` and `HGET meta created`: enough to tell whether
    /// the session is live without a script.
    pub(crate) fn push_probe(&self, batch: &mut Batch, meta: &str) -> Probe {
        Probe {
            expire_time: batch.push("PEXPIRETIME", vec![arg(meta)]),
            created: batch.push("HGET", vec![arg(meta), arg("created")]),
        }
    }

    /// The session's creation and expiry when it is live at `now`, else `None`.
    pub(crate) fn read_probe(
        &self,
        replies: &mut Replies,
        probe: Probe,
        meta: &str,
        now: u64,
    ) -> Result<Option<Live>> {
        let expire_time = replies.int(probe.expire_time, &format!("PEXPIRETIME of `{meta}`"))?;
        let created = replies.take(probe.created, &format!("HGET created of `{meta}`"))?;
        if expire_time == -2 {
            return Ok(None);
        }
        if matches!(created, Value::Null) {
            return Err(Error::corrupt(format!(
                "session hash `{meta}` has no `created` field"
            )));
        }
        let created = to_u64(&created, &format!("field `created` of `{meta}`"))?;
        Ok(self
            .lifetime
            .live_until(expire_time, created, now)
            .map(|expires| Live { expires }))
    }

    /// Lowers the expiry index score of a session whose expiry was capped by its
    /// max lifetime (the pipeline wrote the uncapped `now + ttl`). Rare: only in
    /// the last ttl of a session's life.
    /// Queues `ZADD idx XX <expires> <id>`: re-files a session that is already in the
    /// expiry index (never adds one that purge or delete removed).
    pub(crate) fn push_index_refile(
        &self,
        batch: &mut Batch,
        id: &SessionId,
        expires: u64,
    ) -> usize {
        let index = self.keys.expiry_index(self.keys.shard_of(id));
        batch.push(
            "ZADD",
            vec![arg(index), arg("XX"), num(expires), arg(id.as_str())],
        )
    }

    pub(crate) async fn correct_index_score(
        &self,
        id: &SessionId,
        sent: u64,
        actual: u64,
    ) -> Result<()> {
        if actual >= sent {
            return Ok(());
        }
        let mut batch = Batch::retry_safe();
        let zadd = self.push_index_refile(&mut batch, id, actual);
        let what = format!("re-filing `{id}` in the expiry index");
        let mut replies = self.run(&batch, &what).await?;
        replies.take(zadd, &what).map(|_| ())
    }

    pub(crate) async fn create_session(&self, new: NewSession) -> Result<Session> {
        let id = new.id.clone();
        let body = SessionBody::of_new(&new).encode(&id, &self.settings)?;
        let now = self.now_ms();
        let expires = self.lifetime.expiry_after_activity(now, now);
        let (meta, frames, shard) = (
            self.keys.meta(&id),
            self.keys.frames(&id),
            self.keys.shard_of(&id),
        );
        let what = format!("create of `{meta}`");

        let mut batch = Batch::new();
        let script = batch.push_script(
            &self.scripts.create,
            vec![meta.clone(), frames],
            vec![
                num(now),
                num(expires),
                raw(body),
                num(self.lifetime.max_life_ms),
                num(u64::from(codec::FORMAT_VERSION)),
            ],
        );
        let expiry_index = self.keys.expiry_index(shard);
        let id_index = self.keys.id_index(shard);
        let by_expiry = batch.push(
            "ZADD",
            vec![arg(&expiry_index), num(expires), arg(id.as_str())],
        );
        let by_id = batch.push("ZADD", vec![arg(&id_index), arg("0"), arg(id.as_str())]);
        let wait = self.push_replica_wait(&mut batch, &meta);
        let mut replies = self.run(&batch, &what).await?;

        let (status, rest) = script_status(replies.take(script, &what)?, &what)?;
        match status.as_str() {
            "OK" => {}
            // The index entries written alongside belong to the live session.
            "EXISTS" => return Err(Error::AlreadyExists(id)),
            "CORRUPT" => return Err(corrupt_field(rest, &meta)),
            other => {
                return Err(Error::corrupt(format!(
                    "{what}: unexpected script status `{other}`"
                )))
            }
        }
        replies.take(by_expiry, &format!("ZADD `{expiry_index}`"))?;
        replies.take(by_id, &format!("ZADD `{id_index}`"))?;
        self.check_replica_wait(&mut replies, wait, &what)?;
        let now = Timestamp::from_millis(now);
        Ok(new.into_session(now, Timestamp::from_millis(expires)))
    }

    pub(crate) async fn get_session(&self, id: &SessionId) -> Result<Session> {
        self.get_sessions(std::slice::from_ref(id))
            .await?
            .pop()
            .flatten()
            .ok_or_else(|| Error::NotFound(id.clone()))
    }

    pub(crate) async fn get_sessions(&self, ids: &[SessionId]) -> Result<Vec<Option<Session>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = Batch::retry_safe();
        let slots: Vec<(String, usize, usize)> = ids
            .iter()
            .map(|id| {
                let meta = self.keys.meta(id);
                let all = batch.push("HGETALL", vec![arg(&meta)]);
                let expire_time = batch.push("PEXPIRETIME", vec![arg(&meta)]);
                (meta, all, expire_time)
            })
            .collect();
        let now = self.now_ms();
        let mut replies = self.run(&batch, "get").await?;
        ids.iter()
            .zip(slots)
            .map(|(id, (meta, all, expire_time))| {
                self.read_session(&mut replies, id, &meta, all, expire_time, now)
            })
            .collect()
    }

    /// Reads one session from the replies to `HGETALL meta` and `PEXPIRETIME meta`.
    pub(crate) fn read_session(
        &self,
        replies: &mut Replies,
        id: &SessionId,
        meta: &str,
        all: usize,
        expire_time: usize,
        now: u64,
    ) -> Result<Option<Session>> {
        let what = format!("HGETALL `{meta}`");
        let fields = to_hash(replies.take(all, &what)?, &what)?;
        let expire_time = replies.int(expire_time, &format!("PEXPIRETIME of `{meta}`"))?;
        session_from_meta(id, meta, fields, expire_time, now, &self.lifetime)
    }

    pub(crate) async fn update_session(&self, session: &Session) -> Result<Session> {
        let id = &session.id;
        let body = SessionBody::of_session(session).encode(id, &self.settings)?;
        let now = self.now_ms();
        let sliding = now.saturating_add(self.lifetime.ttl_ms);
        let (meta, frames) = (self.keys.meta(id), self.keys.frames(id));
        let what = format!("update of `{meta}`");

        let mut batch = Batch::new();
        let script = batch.push_script(
            &self.scripts.update,
            vec![meta.clone(), frames],
            vec![
                num(session.revision),
                num(now),
                raw(body),
                num(self.lifetime.ttl_ms),
                num(self.lifetime.max_life_ms),
            ],
        );
        let zadd = self.push_index_refile(&mut batch, id, sliding);
        let wait = self.push_replica_wait(&mut batch, &meta);
        let mut replies = self.run(&batch, &what).await?;

        let (status, rest) = script_status(replies.take(script, &what)?, &what)?;
        match status.as_str() {
            "OK" => {}
            "NOTFOUND" => return Err(Error::NotFound(id.clone())),
            "CONFLICT" => {
                let actual = rest
                    .first()
                    .map(|v| to_u64(v, &what))
                    .transpose()?
                    .unwrap_or(0);
                return Err(Error::Conflict {
                    id: id.clone(),
                    expected: session.revision,
                    actual,
                });
            }
            "CORRUPT" => return Err(corrupt_field(rest, &meta)),
            other => {
                return Err(Error::corrupt(format!(
                    "{what}: unexpected script status `{other}`"
                )))
            }
        }
        replies.take(zadd, &what)?;
        self.check_replica_wait(&mut replies, wait, &what)?;
        let [created, frame_count, revision, last, expires] = numbers::<5>(&rest, &what)?;
        self.correct_index_score(id, sliding, expires).await?;
        let mut stored = session.clone();
        stored.created_at = Timestamp::from_millis(created);
        stored.frame_count = frame_count;
        stored.revision = revision;
        stored.last_activity = Timestamp::from_millis(last);
        stored.expires_at = Timestamp::from_millis(expires);
        Ok(stored)
    }

    pub(crate) async fn touch_session(&self, id: &SessionId) -> Result<()> {
        let now = self.now_ms();
        let sliding = now.saturating_add(self.lifetime.ttl_ms);
        let (meta, frames) = (self.keys.meta(id), self.keys.frames(id));
        let what = format!("touch of `{meta}`");

        // Plain commands, no script: PEXPIREAT on a missing key does nothing, so
        // a touch never half-creates a session. The expiry index is left alone:
        // its score may lag a touched session's real expiry (never lead it), and
        // purge and count re-file such entries when their score comes due. That
        // keeps touch, the hottest call, at four commands.
        let mut batch = Batch::retry_safe();
        let probe = self.push_probe(&mut batch, &meta);
        let slide_meta = batch.push("PEXPIREAT", vec![arg(&meta), num(sliding)]);
        let slide_frames = batch.push("PEXPIREAT", vec![arg(&frames), num(sliding)]);
        let mut replies = self.run(&batch, &what).await?;

        let live = self.read_probe(&mut replies, probe, &meta, now)?;
        replies.take(slide_meta, &what)?;
        replies.take(slide_frames, &what)?;
        match live {
            Some(_) => Ok(()),
            None => {
                // It existed but had expired logically (clock ahead of Redis): the
                // PEXPIREATs above slid it physically, so remove it now.
                self.remove_keys(id).await?;
                Err(Error::NotFound(id.clone()))
            }
        }
    }

    pub(crate) async fn delete_session(&self, id: &SessionId) -> Result<bool> {
        let now = self.now_ms();
        let meta = self.keys.meta(id);
        let mut batch = Batch::new();
        let probe = self.push_probe(&mut batch, &meta);
        let removals = self.push_removal(&mut batch, id);
        let what = format!("delete of `{meta}`");
        let wait = self.push_replica_wait(&mut batch, &meta);
        let mut replies = self.run(&batch, &what).await?;
        let live = self.read_probe(&mut replies, probe, &meta, now)?;
        self.read_removal(&mut replies, removals, id)?;
        self.check_replica_wait(&mut replies, wait, &what)?;
        Ok(live.is_some())
    }

    /// Queues `DEL meta frames`, `ZREM idx id`, `ZREM ids id`.
    pub(crate) fn push_removal(&self, batch: &mut Batch, id: &SessionId) -> [usize; 3] {
        let shard = self.keys.shard_of(id);
        [
            batch.push(
                "DEL",
                vec![arg(self.keys.meta(id)), arg(self.keys.frames(id))],
            ),
            batch.push(
                "ZREM",
                vec![arg(self.keys.expiry_index(shard)), arg(id.as_str())],
            ),
            batch.push(
                "ZREM",
                vec![arg(self.keys.id_index(shard)), arg(id.as_str())],
            ),
        ]
    }

    pub(crate) fn read_removal(
        &self,
        replies: &mut Replies,
        removal: [usize; 3],
        id: &SessionId,
    ) -> Result<()> {
        let what = format!("removal of session `{id}`");
        for index in removal {
            replies.take(index, &what)?;
        }
        Ok(())
    }

    /// Deletes a session's keys and index entries (second round trip of the rare
    /// paths).
    pub(crate) async fn remove_keys(&self, id: &SessionId) -> Result<()> {
        let mut batch = Batch::retry_safe();
        let removal = self.push_removal(&mut batch, id);
        let mut replies = self
            .run(&batch, &format!("removal of session `{id}`"))
            .await?;
        self.read_removal(&mut replies, removal, id)
    }
}

/// The first `N` values of a script reply as non-negative integers.
pub(crate) fn numbers<const N: usize>(values: &[Value], what: &str) -> Result<[u64; N]> {
    let mut out = [0u64; N];
    for (slot, n) in out.iter_mut().enumerate() {
        let value = values.get(slot).ok_or_else(|| {
            Error::corrupt(format!(
                "{what}: script reply has {} values, expected {N}",
                values.len()
            ))
        })?;
        *n = to_u64(value, what)?;
    }
    Ok(out)
}
