//! Queues a batch's commands as fred's typed commands where fred has them.
//!
//! fred flushes the socket after every custom command (and every script call), so
//! a pipeline of N custom commands costs N writes and concurrent operations never
//! share one. Typed commands are buffered and flushed together: measured on the
//! 64-task load bench, get and touch ran 1.6-3x faster this way
//! (docs/performance.md). The batch keeps its plain `name args...` form, which is
//! what the data-model doc shows; this module only changes how it is handed to fred.

use fred::{
    error::Error as FredError,
    interfaces::{HashesInterface, KeysInterface, SortedSetsInterface, StreamsInterface},
    types::{sorted_sets::Ordering, Key, SetOptions, Value},
};

/// Queues `name args` on `pipeline` as a typed command and returns true, or returns
/// false (queuing nothing) when this module has no typed form for it. Generic so the
/// caller's `WithOptions` pipeline is used as it is: going through its `Deref` would
/// drop the per-command options (timeout, fail-fast, one attempt).
pub(crate) async fn queue<P>(pipeline: &P, name: &str, args: &[Value]) -> Result<bool, FredError>
where
    P: HashesInterface + KeysInterface + SortedSetsInterface + StreamsInterface + Sync,
{
    match (name, args) {
        ("HGETALL", [key]) => {
            let Some(key) = key_of(key) else {
                return Ok(false);
            };
            pipeline.hgetall::<Value, _>(key).await?;
        }
        ("PEXPIRETIME", [key]) => {
            let Some(key) = key_of(key) else {
                return Ok(false);
            };
            pipeline.pexpire_time::<Value, _>(key).await?;
        }
        ("HGET", [key, field]) => {
            let (Some(key), Some(field)) = (key_of(key), key_of(field)) else {
                return Ok(false);
            };
            pipeline.hget::<Value, _, _>(key, field).await?;
        }
        ("PEXPIREAT", [key, at]) => {
            let (Some(key), Some(at)) = (key_of(key), integer(at)) else {
                return Ok(false);
            };
            pipeline.pexpire_at::<Value, _>(key, at, None).await?;
        }
        ("ZADD", [key, score, member]) => {
            let (Some(key), Some(score)) = (key_of(key), float(score)) else {
                return Ok(false);
            };
            pipeline
                .zadd::<Value, _, _>(key, None, None, false, false, (score, member.clone()))
                .await?;
        }
        ("ZADD", [key, flag, score, member]) => {
            let (options, ordering) = match text(flag) {
                Some("XX") => (Some(SetOptions::XX), None),
                Some("LT") => (None, Some(Ordering::LessThan)),
                Some("GT") => (None, Some(Ordering::GreaterThan)),
                _ => return Ok(false),
            };
            let (Some(key), Some(score)) = (key_of(key), float(score)) else {
                return Ok(false);
            };
            pipeline
                .zadd::<Value, _, _>(
                    key,
                    options,
                    ordering,
                    false,
                    false,
                    (score, member.clone()),
                )
                .await?;
        }
        ("ZREM", [key, member]) => {
            let Some(key) = key_of(key) else {
                return Ok(false);
            };
            pipeline.zrem::<Value, _, _>(key, member.clone()).await?;
        }
        ("DEL", keys) if !keys.is_empty() => {
            let Some(keys) = keys.iter().map(key_of).collect::<Option<Vec<Key>>>() else {
                return Ok(false);
            };
            pipeline.del::<Value, _>(keys).await?;
        }
        ("EXISTS", [key]) => {
            let Some(key) = key_of(key) else {
                return Ok(false);
            };
            pipeline.exists::<Value, _>(key).await?;
        }
        ("XLEN", [key]) => {
            let Some(key) = key_of(key) else {
                return Ok(false);
            };
            pipeline.xlen::<Value, _>(key).await?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn key_of(value: &Value) -> Option<Key> {
    match value {
        Value::String(text) => Some(Key::from(text.clone())),
        Value::Bytes(bytes) => Some(Key::from(bytes.clone())),
        _ => None,
    }
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::String(text) => Some(text),
        _ => None,
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

fn float(value: &Value) -> Option<f64> {
    // Scores are millisecond timestamps (< 2^53) or 0: exact as f64.
    match value {
        Value::Integer(n) => Some(*n as f64),
        other => text(other)?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use fred::clients::Client;

    use super::*;

    fn s(text: &str) -> Value {
        Value::String(text.into())
    }

    /// Queues `name args` on a pipeline of a client that never connects:
    /// commands are only buffered, so what `queue` decides is all there is.
    async fn typed(name: &str, args: &[Value]) -> bool {
        let client = Client::default();
        queue(&client.pipeline(), name, args).await.unwrap()
    }

    #[tokio::test]
    async fn every_command_of_the_data_model_with_its_arguments_is_queued_typed() {
        let cases: [(&str, Vec<Value>); 13] = [
            ("HGETALL", vec![s("m")]),
            ("PEXPIRETIME", vec![s("m")]),
            ("HGET", vec![s("m"), s("created")]),
            ("PEXPIREAT", vec![s("m"), Value::Integer(1_700_000_000_000)]),
            ("PEXPIREAT", vec![s("m"), s("1700000000000")]),
            ("ZADD", vec![s("i"), Value::Integer(5), s("id")]),
            ("ZADD", vec![s("i"), s("XX"), s("5"), s("id")]),
            ("ZADD", vec![s("i"), s("LT"), Value::Integer(5), s("id")]),
            ("ZADD", vec![s("i"), s("GT"), Value::Integer(5), s("id")]),
            ("ZREM", vec![s("i"), s("id")]),
            ("DEL", vec![s("m"), Value::Bytes(b"f".to_vec().into())]),
            ("EXISTS", vec![s("m")]),
            ("XLEN", vec![s("f")]),
        ];
        for (name, args) in cases {
            assert!(typed(name, &args).await, "{name} {args:?}");
        }
    }

    #[tokio::test]
    async fn anything_else_is_left_to_the_custom_command() {
        let cases: [(&str, Vec<Value>); 12] = [
            ("HGETALL", vec![Value::Integer(1)]),
            ("PEXPIRETIME", vec![Value::Null]),
            ("HGET", vec![s("m"), Value::Integer(2)]),
            ("PEXPIREAT", vec![s("m"), s("soon")]),
            ("ZADD", vec![s("i"), s("not a score"), s("id")]),
            ("ZADD", vec![s("i"), s("NX"), Value::Integer(5), s("id")]),
            ("ZADD", vec![s("i"), s("GT"), Value::Null, s("id")]),
            ("ZREM", vec![Value::Null, s("id")]),
            ("DEL", vec![s("m"), Value::Integer(3)]),
            ("DEL", vec![]),
            ("EXISTS", vec![Value::Null]),
            ("XLEN", vec![Value::Null]),
        ];
        for (name, args) in cases {
            assert!(!typed(name, &args).await, "{name} {args:?}");
        }
        assert!(!typed("EVALSHA", &[s("sha"), s("1"), s("m")]).await);
    }
}
