//! Operations over many sessions: list, count, purge_expired, and health. They
//! walk the sharded indexes and verify every entry against its meta key, pruning
//! stale entries, so the indexes heal themselves.

use std::time::Instant;

use session_store_core::{Cursor, Error, Health, Page, Result, Session, SessionId, MAX_PAGE_SIZE};

use crate::{
    batch::{arg, num, to_array, to_text, Batch},
    liveness::{ReapTarget, Reaped, Seen},
    RedisStore,
};

/// Candidates `purge_expired` examines per round trip.
const PURGE_BATCH: usize = 500;

/// Bound on purge rounds per shard, so a misbehaving index cannot loop forever.
const PURGE_MAX_ROUNDS: usize = 100_000;

/// A `list` position: the shard and the last id examined in it.
struct ListPosition {
    shard: u16,
    after: Option<SessionId>,
}

impl ListPosition {
    fn parse(cursor: &Cursor, shards: u16) -> Result<Self> {
        let foreign = || {
            Error::invalid_input(format!(
                "cursor `{cursor}` was not made by this redis store (expected <shard>:<last id>)"
            ))
        };
        let (shard, after) = cursor.as_str().split_once(':').ok_or_else(foreign)?;
        let shard: u16 = shard.parse().map_err(|_| foreign())?;
        if shard >= shards {
            return Err(foreign());
        }
        let after = if after.is_empty() {
            None
        } else {
            Some(SessionId::new(after).map_err(|_| foreign())?)
        };
        Ok(ListPosition { shard, after })
    }

    fn cursor(&self) -> Cursor {
        Cursor::new(format!(
            "{}:{}",
            self.shard,
            self.after.as_ref().map_or("", SessionId::as_str)
        ))
    }
}

impl RedisStore {
    pub(crate) async fn list_sessions(
        &self,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Session>> {
        if limit == 0 {
            return Err(Error::invalid_input("list limit must be at least 1"));
        }
        let limit = limit.min(MAX_PAGE_SIZE);
        let shards = self.keys.shards();
        let mut position = match cursor {
            Some(cursor) => ListPosition::parse(cursor, shards)?,
            None => ListPosition {
                shard: 0,
                after: None,
            },
        };
        let now = self.now_ms();
        let mut items = Vec::with_capacity(limit);
        while position.shard < shards {
            let wanted = limit - items.len();
            let ids = self
                .id_range(position.shard, position.after.as_ref(), wanted)
                .await?;
            let exhausted = ids.len() < wanted;
            if let Some(last) = ids.last() {
                position.after = Some(last.clone());
            }
            items.extend(self.live_sessions(&ids, position.shard, now).await?);
            if exhausted {
                position = ListPosition {
                    shard: position.shard + 1,
                    after: None,
                };
            } else if items.len() == limit {
                break;
            }
        }
        let next_cursor = (position.shard < shards).then(|| position.cursor());
        Ok(Page { items, next_cursor })
    }

    /// Up to `count` ids of one shard's id index, lexicographically after `after`.
    async fn id_range(
        &self,
        shard: u16,
        after: Option<&SessionId>,
        count: usize,
    ) -> Result<Vec<SessionId>> {
        let key = self.keys.id_index(shard);
        let what = format!("ZRANGE BYLEX `{key}`");
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let mut batch = Batch::retry_safe();
        let range = batch.push(
            "ZRANGE",
            vec![
                arg(&key),
                arg(start),
                arg("+"),
                arg("BYLEX"),
                arg("LIMIT"),
                arg("0"),
                num(count as u64),
            ],
        );
        let mut replies = self.run(&batch, &what).await?;
        let members = to_array(replies.take(range, &what)?, &what)?;
        let mut ids = Vec::with_capacity(members.len());
        for member in members {
            match to_text(member).map(SessionId::new) {
                Some(Ok(id)) => ids.push(id),
                other => {
                    tracing::warn!(key = %key, member = ?other, "ignoring a member that is not a session id")
                }
            }
        }
        Ok(ids)
    }

    /// The live sessions among `ids` (one pipeline); entries whose meta key is
    /// gone are pruned from both indexes.
    async fn live_sessions(&self, ids: &[SessionId], shard: u16, now: u64) -> Result<Vec<Session>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = Batch::retry_safe();
        let slots: Vec<_> = ids
            .iter()
            .map(|id| {
                let meta = self.keys.meta(id);
                let all = batch.push("HGETALL", vec![arg(&meta)]);
                let expire_time = batch.push("PEXPIRETIME", vec![arg(&meta)]);
                (meta, all, expire_time)
            })
            .collect();
        let mut replies = self.run(&batch, "list").await?;
        let mut live = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for (id, (meta, all, expire_time)) in ids.iter().zip(slots) {
            match self.read_session(&mut replies, id, &meta, all, expire_time, now) {
                Ok(Some(session)) => live.push(session),
                Ok(None) => gone.push(id),
                // One undecodable session (written by a newer release, or
                // damaged) is skipped; the page and the cursor move on.
                Err(Error::Corrupt(message)) => self.skipped_record(&meta, &message),
                Err(other) => return Err(other),
            }
        }
        // Entries of sessions that are not live: check-then-delete per session
        // in one script (a session created again meanwhile is kept), and drop
        // their entries from this shard.
        let targets: Vec<_> = gone
            .into_iter()
            .map(|id| ReapTarget {
                id,
                found_in: shard,
                created: None,
            })
            .collect();
        self.reap(&targets, now).await?;
        Ok(live)
    }

    pub(crate) async fn count_sessions(&self) -> Result<u64> {
        let now = self.now_ms();
        // Index scores may lag the real expiry of touched sessions (touch does not
        // write the index). Settling the entries that are due first — purge the
        // expired, re-file the live at their real expiry — makes every remaining
        // score > now belong to a live session, so ZCOUNT is exact. The cost grows
        // with the due entries, as purge's does.
        self.purge_at(now).await?;
        let mut batch = Batch::retry_safe();
        let counts: Vec<_> = (0..self.keys.shards())
            .map(|shard| {
                batch.push(
                    "ZCOUNT",
                    vec![
                        arg(self.keys.expiry_index(shard)),
                        arg(format!("({now}")),
                        arg("+inf"),
                    ],
                )
            })
            .collect();
        let mut replies = self.run(&batch, "count").await?;
        let mut total = 0u64;
        for index in counts {
            total = total.saturating_add(
                replies
                    .int(index, "ZCOUNT of the expiry index")?
                    .unsigned_abs(),
            );
        }
        Ok(total)
    }

    pub(crate) async fn purge(&self) -> Result<u64> {
        self.purge_at(self.now_ms()).await
    }

    /// Purges the sessions expired at `now` and re-files the due-but-live ones.
    pub(crate) async fn purge_at(&self, now: u64) -> Result<u64> {
        let mut removed = 0u64;
        for shard in 0..self.keys.shards() {
            for _ in 0..PURGE_MAX_ROUNDS {
                let (examined, purged) = self.purge_round(shard, now).await?;
                removed += purged;
                if examined < PURGE_BATCH {
                    break;
                }
            }
        }
        Ok(removed)
    }

    /// One round of purge in one shard: fetch up to [`PURGE_BATCH`] entries whose
    /// indexed expiry has passed, check them, delete the expired and re-score the
    /// live. Returns (examined, removed).
    async fn purge_round(&self, shard: u16, now: u64) -> Result<(usize, u64)> {
        let index = self.keys.expiry_index(shard);
        let what = format!("ZRANGEBYSCORE `{index}`");
        let mut batch = Batch::retry_safe();
        let range = batch.push(
            "ZRANGEBYSCORE",
            vec![
                arg(&index),
                arg("-inf"),
                num(now),
                arg("LIMIT"),
                arg("0"),
                num(PURGE_BATCH as u64),
            ],
        );
        let mut replies = self.run(&batch, &what).await?;
        let candidates = to_array(replies.take(range, &what)?, &what)?;
        let examined = candidates.len();
        let mut ids = Vec::with_capacity(examined);
        let mut fixes = Batch::retry_safe();
        for member in candidates {
            match to_text(member.clone()).map(SessionId::new) {
                Some(Ok(id)) => ids.push(id),
                _ => {
                    fixes.push("ZREM", vec![arg(&index), member]);
                }
            }
        }

        let mut check = Batch::retry_safe();
        let probes: Vec<_> = ids
            .iter()
            .map(|id| self.push_probe(&mut check, &self.keys.meta(id)))
            .collect();
        let mut checked = self.run(&check, "purge").await?;
        let mut expired = Vec::new();
        for (id, probe) in ids.iter().zip(probes) {
            let meta = self.keys.meta(id);
            match self.probe_seen(&mut checked, probe, &meta, now).await {
                Ok(Seen {
                    live: Some(live), ..
                }) => self.push_refile(&mut fixes, id, shard, live.expires),
                Ok(Seen {
                    live: None,
                    created,
                }) => expired.push(ReapTarget {
                    id,
                    found_in: shard,
                    created,
                }),
                Err(Error::Corrupt(message)) => {
                    // Keep the data for inspection (its keys still expire); drop
                    // the index entry so purge does not trip over it again.
                    tracing::warn!(key = %meta, %message, "purge skips a corrupt session");
                    fixes.push("ZREM", vec![arg(&index), arg(id.as_str())]);
                }
                Err(other) => return Err(other),
            }
        }
        let removed = self
            .reap(&expired, now)
            .await?
            .iter()
            .filter(|outcome| matches!(outcome, Reaped::Removed))
            .count() as u64;
        if fixes.len() > 0 {
            self.run_hints(&fixes, "purge: re-filing index entries")
                .await;
        }
        Ok((examined, removed))
    }

    /// Queues the re-filing of a live session's entry found due in `found_in`:
    /// `ZADD XX` at its real expiry when that is its own shard; else (after a
    /// change of `index_shards`) the entries move to its own shard, so the
    /// scanned shard never keeps an entry that comes due again on every run.
    fn push_refile(&self, batch: &mut Batch, id: &SessionId, found_in: u16, expires: u64) {
        let own = self.keys.shard_of(id);
        if own == found_in {
            batch.push(
                "ZADD",
                vec![
                    arg(self.keys.expiry_index(own)),
                    arg("XX"),
                    num(expires),
                    arg(id.as_str()),
                ],
            );
            return;
        }
        batch.push(
            "ZREM",
            vec![arg(self.keys.expiry_index(found_in)), arg(id.as_str())],
        );
        batch.push(
            "ZREM",
            vec![arg(self.keys.id_index(found_in)), arg(id.as_str())],
        );
        self.push_index_entries(batch, id, expires);
    }

    /// Whether `id` was deleted in Redis recently: its tombstone (`P:{<id>}:gone`,
    /// left by [`delete`](session_store_core::SessionStore::delete) for one ttl)
    /// is there. One `GET`.
    ///
    /// Errors: [`Error::Unavailable`] when Redis cannot be asked.
    pub async fn deleted_recently(&self, id: &SessionId) -> Result<bool> {
        let key = self.keys.tombstone(id);
        let mut batch = Batch::retry_safe();
        batch.push("GET", vec![arg(key.clone())]);
        let mut replies = self.run(&batch, "tombstone read").await?;
        Ok(to_text(replies.take(0, &format!("GET {key}"))?).is_some())
    }

    /// The fallback breaker's probe: writes a canary value next to every
    /// expiry index shard (`P:{P:idx:<n>}:canary`, in that shard's cluster slot,
    /// expiring after 60 s) and reads each back. It exercises what the store's
    /// writes need on every master holding an index shard (every master of a
    /// cluster in practice: 16 shards spread over the slots), where `PING`
    /// alone would pass on a server that cannot write (`READONLY`, `OOM`,
    /// `LOADING`) or on one node of a cluster with another down.
    ///
    /// Errors: [`Error::Unavailable`] when a write or read fails;
    /// [`Error::Corrupt`] when a value read back differs from the one written.
    pub async fn probe_writes(&self) -> Result<std::time::Duration> {
        let started = Instant::now();
        let token = format!("{}-{}", self.now_ms(), self.new_append_key());
        let mut writes = Batch::retry_safe();
        for shard in 0..self.keys.shards() {
            writes.push(
                "SET",
                vec![
                    arg(self.keys.canary(shard)),
                    arg(token.clone()),
                    arg("PX"),
                    num(60_000),
                ],
            );
        }
        let mut replies = self.run(&writes, "probe (canary write)").await?;
        for index in 0..writes.len() {
            replies.take(index, "SET of the probe's canary")?;
        }
        let mut reads = Batch::retry_safe();
        for shard in 0..self.keys.shards() {
            reads.push("GET", vec![arg(self.keys.canary(shard))]);
        }
        let mut replies = self.run(&reads, "probe (canary read)").await?;
        for shard in 0..self.keys.shards() {
            let key = self.keys.canary(shard);
            let value = to_text(replies.take(usize::from(shard), &format!("GET {key}"))?);
            if value.as_deref() != Some(token.as_str()) {
                return Err(Error::corrupt(format!(
                    "probe: `{key}` read back {value:?}, not the value just written"
                )));
            }
        }
        Ok(started.elapsed())
    }

    pub(crate) async fn check_health(&self) -> Result<Health> {
        let started = Instant::now();
        let mut batch = Batch::retry_safe();
        let ping = batch.push("PING", Vec::new());
        let info = batch.push("INFO", vec![arg("server")]);
        let mut replies = self.run(&batch, "health check").await?;
        let pong = to_text(replies.take(ping, "PING")?).unwrap_or_default();
        if pong != "PONG" {
            return Err(Error::unavailable(format!(
                "redis at {} answered PING with `{pong}`",
                self.address
            )));
        }
        let info = to_text(replies.take(info, "INFO server")?).unwrap_or_default();
        let version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .map_or("unknown version", str::trim)
            .to_owned();
        Ok(Health {
            backend: "redis",
            latency: started.elapsed(),
            detail: format!("redis {version} {} at {}", self.mode, self.address),
            degraded: false,
            readings: self.readings(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_foreign_text() {
        let position = ListPosition {
            shard: 3,
            after: Some(SessionId::new("abc").unwrap()),
        };
        let back = ListPosition::parse(&position.cursor(), 16).unwrap();
        assert_eq!(
            (back.shard, back.after),
            (3, Some(SessionId::new("abc").unwrap()))
        );
        assert!(ListPosition::parse(&Cursor::new("5:"), 16)
            .unwrap()
            .after
            .is_none());
        for foreign in ["not-a-cursor", "16:abc", "x:abc", "1:a b", ""] {
            assert!(
                matches!(
                    ListPosition::parse(&Cursor::new(foreign), 16),
                    Err(Error::InvalidInput(_))
                ),
                "{foreign}"
            );
        }
    }
}
