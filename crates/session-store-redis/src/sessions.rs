//! Session operations: create, get, get_many, update, touch, delete.

use std::collections::HashMap;

use session_store_core::{codec, Error, NewSession, Result, Session, SessionId, Timestamp};

use crate::{
    batch::{arg, num, raw, to_array, to_hash, to_int, to_u64, Batch, Replies},
    liveness::{ReapTarget, Reaped},
    record::{session_from_meta, SessionBody},
    script_reply::{corrupt_field, script_status},
    RedisStore,
};

// Where frames.rs finds them; their home is `script_reply`.
use crate::script_reply::numbers;

impl RedisStore {
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

        // The create key makes the script safe to send again (a retry after a
        // lost reply finds its own session and answers OK).
        let key = self.append_keys.next_key();
        let mut batch = Batch::retry_safe();
        let script = batch.push_script(
            &self.scripts.create,
            vec![meta.clone(), frames, self.keys.tombstone(&id)],
            vec![
                num(now),
                num(expires),
                raw(body),
                num(self.lifetime.max_life_ms),
                num(u64::from(codec::FORMAT_VERSION)),
                arg(key.as_str()),
            ],
        );
        let expiry_index = self.keys.expiry_index(shard);
        let id_index = self.keys.id_index(shard);
        // LT: adds the entry of a new session, but never raises the entry of a
        // live session that already holds the id (the create is refused), so
        // the index never leads a real expiry.
        let by_expiry = batch.push(
            "ZADD",
            vec![
                arg(&expiry_index),
                arg("LT"),
                num(expires),
                arg(id.as_str()),
            ],
        );
        let by_id = batch.push("ZADD", vec![arg(&id_index), arg("0"), arg(id.as_str())]);
        let wait = self.push_replica_wait(&mut batch, &meta);
        let mut replies = self.run(&batch, &what).await?;

        let (status, rest) = script_status(replies.take(script, &what)?, &what)?;
        match status.as_str() {
            "OK" => {}
            // The index entries written alongside belong to the live session.
            "EXISTS" => return Err(Error::AlreadyExists(id)),
            // The id was deleted after this create was issued (its caller gave
            // up on it; it reached Redis late): the delete wins. The index
            // entries written alongside belong to no session.
            "DELETED" => {
                for index in [by_expiry, by_id] {
                    let _ = replies.take(index, &what);
                }
                self.drop_index_entries(&id, shard).await;
                return Err(Error::AlreadyExists(id));
            }
            "CORRUPT" => return Err(corrupt_field(rest, &meta)),
            other => {
                return Err(Error::corrupt(format!(
                    "{what}: unexpected script status `{other}`"
                )))
            }
        }
        // The session is stored: index entries are hints (purge and count heal
        // a missing one), so their failure never fails the create.
        for (index, key) in [(by_expiry, &expiry_index), (by_id, &id_index)] {
            let what = format!("ZADD `{key}`");
            if let Err(error) = replies.take(index, &what) {
                self.hint_failed(&what, &error);
            }
        }
        self.check_replica_wait(&mut replies, wait, &what)?;
        let now = Timestamp::from_millis(now);
        Ok(new.into_session(now, Timestamp::from_millis(expires)))
    }

    pub(crate) async fn get_session(&self, id: &SessionId) -> Result<Session> {
        let ids = std::slice::from_ref(id);
        let found = match &self.near {
            None => self.get_sessions(ids).await?,
            Some(near) => {
                let meta = self.keys.meta(id);
                if let Some(session) = near.lookup(&meta, self.now_ms()) {
                    return Ok(session);
                }
                match near.begin(&meta) {
                    // Read on the tracking connection, so Redis reports any
                    // later change of this key to it.
                    Some(ticket) => {
                        let read = self.get_sessions_on(Some(near.client()), ids).await;
                        let session = read.as_ref().ok().and_then(|found| found.first());
                        near.finish(ticket, session.and_then(Option::as_ref));
                        read?
                    }
                    None => self.get_sessions(ids).await?,
                }
            }
        };
        found
            .into_iter()
            .next()
            .flatten()
            .ok_or_else(|| Error::NotFound(id.clone()))
    }

    pub(crate) async fn get_sessions(&self, ids: &[SessionId]) -> Result<Vec<Option<Session>>> {
        self.get_sessions_on(None, ids).await
    }

    /// The `get` of `ids` on `client` (the pool's next one when `None`).
    async fn get_sessions_on(
        &self,
        client: Option<&fred::clients::Client>,
        ids: &[SessionId],
    ) -> Result<Vec<Option<Session>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One `get` script per id: `PEXPIRETIME` and `HGETALL` in one command.
        let mut batch = Batch::retry_safe();
        let slots: Vec<(String, usize)> = ids
            .iter()
            .map(|id| {
                let meta = self.keys.meta(id);
                let script = batch.push_script(&self.scripts.get, vec![meta.clone()], Vec::new());
                (meta, script)
            })
            .collect();
        let now = self.now_ms();
        let mut replies = self.run_on(client, &batch, "get").await?;
        ids.iter()
            .zip(slots)
            .map(|(id, (meta, script))| {
                let what = format!("get of `{meta}`");
                let mut reply = to_array(replies.take(script, &what)?, &what)?.into_iter();
                let expire_time = reply
                    .next()
                    .map(|v| to_int(&v, &what))
                    .transpose()?
                    .unwrap_or(-2);
                let fields = match reply.next() {
                    Some(all) => to_hash(all, &what)?,
                    None => HashMap::new(),
                };
                session_from_meta(id, &meta, fields, expire_time, now, &self.lifetime)
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
        let (meta, frames) = (self.keys.meta(id), self.keys.frames(id));
        let what = format!("update of `{meta}`");

        // The update key makes the script safe to send again. No index write:
        // like touch, update leaves the expiry index lagging (never leading)
        // the real expiry; purge and count re-file entries that come due.
        let key = self.append_keys.next_key();
        let mut batch = Batch::retry_safe();
        let script = batch.push_script(
            &self.scripts.update,
            vec![meta.clone(), frames],
            vec![
                num(session.revision),
                num(now),
                raw(body),
                num(self.lifetime.ttl_ms),
                num(self.lifetime.max_life_ms),
                arg(key.as_str()),
            ],
        );
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
        self.check_replica_wait(&mut replies, wait, &what)?;
        let [created, frame_count, revision, last, expires] = numbers::<5>(&rest, &what)?;
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
        let (meta, frames) = (self.keys.meta(id), self.keys.frames(id));
        let what = format!("touch of `{meta}`");

        // One `touch` script: checks liveness and slides both keys in one
        // command, no read travelling back before the write. The expiry index
        // is left alone: its score may lag a touched session's real expiry
        // (never lead it), and purge and count re-file such entries when their
        // score comes due.
        let mut batch = Batch::retry_safe();
        let script = batch.push_script(
            &self.scripts.touch,
            vec![meta.clone(), frames],
            vec![
                num(now),
                num(self.lifetime.ttl_ms),
                num(self.lifetime.max_life_ms),
            ],
        );
        let mut replies = self.run(&batch, &what).await?;
        let (status, rest) = script_status(replies.take(script, &what)?, &what)?;
        match status.as_str() {
            "OK" => Ok(()),
            "NOTFOUND" => Err(Error::NotFound(id.clone())),
            "EXPIRED" => {
                // It exists but is not live at the store's clock (ahead of
                // Redis's, or past the lifetime cap): remove it now, unless it
                // was created again meanwhile (checked atomically).
                let created = rest.first().map(|v| to_u64(v, &what)).transpose()?;
                let target = ReapTarget {
                    id,
                    found_in: self.keys.shard_of(id),
                    created,
                };
                if let Some(Reaped::Live) = self.reap(&[target], now).await?.pop() {
                    return Ok(());
                }
                Err(Error::NotFound(id.clone()))
            }
            "CORRUPT" => Err(corrupt_field(rest, &meta)),
            other => Err(Error::corrupt(format!(
                "{what}: unexpected script status `{other}`"
            ))),
        }
    }

    /// Drops the index entries of `id` in `shard`, queued alongside a write
    /// the script refused because the id was deleted (hints: a failure is
    /// logged and counted, and purge heals what is left).
    pub(crate) async fn drop_index_entries(&self, id: &SessionId, shard: u16) {
        let mut undo = Batch::retry_safe();
        for index in [self.keys.expiry_index(shard), self.keys.id_index(shard)] {
            undo.push("ZREM", vec![arg(index), arg(id.as_str())]);
        }
        self.run_hints(&undo, "dropping the index entries of a deleted session")
            .await;
    }

    /// Deletes the session on `id` if Redis holds one created before
    /// `replacement_created`, and leaves a tombstone covering every incarnation
    /// created before it: a fallback store writing back a session it created
    /// on the id during an outage, after deleting the older one there. The
    /// write-back of the replacement (created at `replacement_created`) is then
    /// accepted, while a create or write-back of an older incarnation that
    /// reaches Redis late is refused; sent late itself, this delete leaves the
    /// replacement alone. Whether a live session was removed.
    ///
    /// Errors as [`delete`](session_store_core::SessionStore::delete).
    pub async fn delete_replaced(
        &self,
        id: &SessionId,
        replacement_created: Timestamp,
    ) -> Result<bool> {
        let covers = replacement_created.as_millis().saturating_sub(1);
        let deleted = self.delete_session_covering(id, Some(covers)).await;
        self.forget_near(id);
        deleted
    }

    pub(crate) async fn delete_session(&self, id: &SessionId) -> Result<bool> {
        self.delete_session_covering(id, None).await
    }

    /// The `delete` script on `id`; `covers` as the script's last argument
    /// (`None`: every incarnation created until now).
    async fn delete_session_covering(&self, id: &SessionId, covers: Option<u64>) -> Result<bool> {
        let now = self.now_ms();
        let (meta, frames) = (self.keys.meta(id), self.keys.frames(id));
        let what = format!("delete of `{meta}`");
        // One script checks and removes (a racing delete, touch or append never
        // sees half a session) and leaves the tombstone, also when Redis holds
        // no session (a late create or write-back of it is refused); the delete
        // key makes it safe to send again.
        let key = self.append_keys.next_key();
        let mut batch = Batch::retry_safe();
        let script = batch.push_script(
            &self.scripts.delete,
            vec![meta.clone(), frames, self.keys.tombstone(id)],
            vec![
                num(now),
                num(self.lifetime.max_life_ms),
                arg(key.as_str()),
                num(self.lifetime.tombstone_ms()),
                covers.map_or_else(|| arg(""), num),
            ],
        );
        let shard = self.keys.shard_of(id);
        let hints = [
            batch.push(
                "ZREM",
                vec![arg(self.keys.expiry_index(shard)), arg(id.as_str())],
            ),
            batch.push(
                "ZREM",
                vec![arg(self.keys.id_index(shard)), arg(id.as_str())],
            ),
        ];
        let wait = self.push_replica_wait(&mut batch, &meta);
        let mut replies = self.run(&batch, &what).await?;
        let reply = to_array(replies.take(script, &what)?, &what)?;
        let removed = reply
            .first()
            .map(|v| to_u64(v, &what))
            .transpose()?
            .unwrap_or(0)
            == 1;
        for index in hints {
            if let Err(error) = replies.take(index, &what) {
                self.hint_failed(&what, &error);
            }
        }
        self.check_replica_wait(&mut replies, wait, &what)?;
        Ok(removed)
    }
}
