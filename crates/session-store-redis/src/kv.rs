//! Small keyed values: `P:kv:{<key>}` hashes (`v`, `rev`, `exp`), read with one
//! `HMGET`, written and deleted by one conditional script each.
//!
//! Like sessions, liveness follows the store's clock: `exp` is checked against it
//! on every read and in every script, and `PEXPIREAT exp` lets Redis drop the
//! key on its own once it is past.

use std::time::Duration;

use fred::types::Value;
use session_store_core::{
    check_kv_put, duration_millis, Error, KvCondition, KvEntry, KvKey, KvPut, Result, Timestamp,
};

use crate::{
    batch::{arg, num, raw, to_array, to_bytes, to_int, to_text, to_u64, Batch},
    script_reply::script_status,
    RedisStore,
};

/// The condition as the scripts' `ARGV`: its word and the expected revision.
fn condition_args(condition: KvCondition) -> [Value; 2] {
    match condition {
        KvCondition::Absent => [arg("absent"), arg("")],
        KvCondition::Any => [arg("any"), arg("")],
        KvCondition::Revision(revision) => [arg("rev"), num(revision)],
    }
}

/// A value from its `v`, `rev` and `exp` fields, when live at `now`.
fn live_entry(fields: Vec<Value>, now: u64, key: &str) -> Result<Option<KvEntry>> {
    let mut fields = fields.into_iter();
    let (Some(value), Some(revision), Some(expires)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Ok(None);
    };
    if matches!(revision, Value::Null) {
        return Ok(None);
    }
    let revision = to_u64(&revision, format_args!("field `rev` of `{key}`"))?;
    let expires = to_u64(&expires, format_args!("field `exp` of `{key}`"))?;
    if expires <= now {
        return Ok(None);
    }
    let value = to_bytes(value)
        .ok_or_else(|| Error::corrupt(format!("kv hash `{key}` has no `v` field")))?;
    Ok(Some(KvEntry {
        value: value.to_vec(),
        revision,
        expires_at: Timestamp::from_millis(expires),
    }))
}

impl RedisStore {
    pub(crate) async fn get_value(&self, key: &KvKey) -> Result<Option<KvEntry>> {
        let redis_key = self.keys.kv(key);
        let what = format!("HMGET `{redis_key}`");
        let mut batch = Batch::retry_safe();
        let read = batch.push(
            "HMGET",
            vec![arg(&redis_key), arg("v"), arg("rev"), arg("exp")],
        );
        let now = self.now_ms();
        let mut replies = self.run(&batch, &what).await?;
        let fields = to_array(replies.take(read, &what)?, &what)?;
        live_entry(fields, now, &redis_key)
    }

    pub(crate) async fn put_value(
        &self,
        key: &KvKey,
        value: &[u8],
        ttl: Duration,
        condition: KvCondition,
    ) -> Result<KvPut> {
        check_kv_put(value, ttl, self.settings.max_kv_value_bytes)?;
        let redis_key = self.keys.kv(key);
        let what = format!("kv put of `{redis_key}`");
        let now = self.now_ms();
        let [word, expected] = condition_args(condition);
        let mut batch = Batch::retry_safe();
        let script = batch.push_script(
            &self.scripts.kv_put,
            vec![redis_key.clone()],
            vec![
                num(now),
                raw(value.to_vec()),
                num(duration_millis(ttl)),
                word,
                expected,
            ],
        );
        let wait = self.push_replica_wait(&mut batch, &redis_key);
        let mut replies = self.run(&batch, &what).await?;
        let (status, rest) = script_status(replies.take(script, &what)?, &what)?;
        let outcome = match status.as_str() {
            "STORED" => {
                let mut rest = rest.iter();
                let (Some(revision), Some(expires)) = (rest.next(), rest.next()) else {
                    return Err(Error::corrupt(format!("{what}: short script reply")));
                };
                KvPut::Stored {
                    revision: to_u64(revision, &what)?,
                    expires_at: Timestamp::from_millis(to_u64(expires, &what)?),
                }
            }
            "REJECTED" => KvPut::Rejected {
                current: live_entry(rest, now, &redis_key)?,
            },
            "CORRUPT" => {
                let field = rest
                    .into_iter()
                    .next()
                    .and_then(to_text)
                    .unwrap_or_default();
                return Err(Error::corrupt(format!(
                    "kv hash `{redis_key}` has a malformed `{field}` field"
                )));
            }
            other => {
                return Err(Error::corrupt(format!(
                    "{what}: unexpected script status `{other}`"
                )))
            }
        };
        if outcome.stored_revision().is_some() {
            self.check_replica_wait(&mut replies, wait, &what)?;
        }
        Ok(outcome)
    }

    pub(crate) async fn delete_value(&self, key: &KvKey, condition: KvCondition) -> Result<bool> {
        let redis_key = self.keys.kv(key);
        let what = format!("kv delete of `{redis_key}`");
        let [word, expected] = condition_args(condition);
        let mut batch = Batch::retry_safe();
        let script = batch.push_script(
            &self.scripts.kv_delete,
            vec![redis_key.clone()],
            vec![num(self.now_ms()), word, expected],
        );
        let wait = self.push_replica_wait(&mut batch, &redis_key);
        let mut replies = self.run(&batch, &what).await?;
        let removed = to_int(&replies.take(script, &what)?, &what)? == 1;
        self.check_replica_wait(&mut replies, wait, &what)?;
        Ok(removed)
    }
}
