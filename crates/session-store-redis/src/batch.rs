//! A batch of commands sent as one pipeline (one round trip on standalone Redis),
//! and typed readers for the replies.
//!
//! Every command goes out as a fred custom command so the exact Redis syntax is
//! visible here; fred routes each one to its key's slot on a cluster. Replies are
//! read as plain values (never through fred's nil-type features).

use std::{collections::HashMap, fmt};

use bytes::Bytes;
use fred::{
    bytes_utils::Str,
    error::Error as FredError,
    types::{ClusterHash, CustomCommand, Value},
};
use session_store_core::{Error, Result};

use crate::scripts::StoreScript;

/// One queued command.
enum Step {
    Command {
        name: &'static str,
        args: Vec<Value>,
    },
    Script {
        script: StoreScript,
        keys: Vec<String>,
        args: Vec<Value>,
    },
    /// `WAIT`, sent to the node that owns `slot` (the write it follows).
    Wait { args: Vec<Value>, slot: u16 },
}

/// Commands to send together; `push*` returns the index of the reply.
///
/// Every batch is safe to send again (reads, expiry slides, index hints, and
/// scripts that recognise their own key), so [`RedisStore::run`](crate::RedisStore)
/// retries any of them on a transient failure.
#[derive(Default)]
pub(crate) struct Batch {
    steps: Vec<Step>,
}

/// An argument for a command: text, a number or raw bytes.
pub(crate) fn arg(text: impl Into<String>) -> Value {
    Value::String(text.into().into())
}

/// A number as the decimal text Redis expects.
pub(crate) fn num(value: u64) -> Value {
    arg(value.to_string())
}

/// Raw bytes (an encoded record), sent unchanged.
pub(crate) fn raw(bytes: Vec<u8>) -> Value {
    Value::Bytes(Bytes::from(bytes))
}

impl Batch {
    /// An empty batch. Whatever is queued must be safe to send again: the store
    /// retries a batch whose attempt failed on the way.
    pub(crate) fn retry_safe() -> Self {
        Batch::default()
    }

    /// Queues `WAIT <replicas> <timeout_ms>` on the node owning `key`, after the
    /// writes it must cover (same connection, same pipeline).
    pub(crate) fn push_wait(&mut self, key: &str, replicas: u32, timeout_ms: u64) -> usize {
        self.steps.push(Step::Wait {
            args: vec![num(u64::from(replicas)), num(timeout_ms)],
            slot: fred::util::redis_keyslot(key.as_bytes()),
        });
        self.steps.len() - 1
    }

    pub(crate) fn len(&self) -> usize {
        self.steps.len()
    }

    /// Queues `name args...`; the first argument must be the key it routes by.
    pub(crate) fn push(&mut self, name: &'static str, args: Vec<Value>) -> usize {
        self.steps.push(Step::Command { name, args });
        self.steps.len() - 1
    }

    /// Queues `EVALSHA <sha> <n> keys... args...` (or `EVAL` on a retry after
    /// `NOSCRIPT`). All keys must share a slot.
    pub(crate) fn push_script(
        &mut self,
        script: &StoreScript,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> usize {
        self.steps.push(Step::Script {
            script: script.clone(),
            keys,
            args,
        });
        self.steps.len() - 1
    }

    /// The cluster slot the command at `index` is routed by.
    pub(crate) fn slot_of(&self, index: usize) -> Option<u16> {
        let key = |value: &Value| match value {
            Value::String(text) => Some(fred::util::redis_keyslot(text.as_bytes())),
            Value::Bytes(bytes) => Some(fred::util::redis_keyslot(bytes)),
            _ => None,
        };
        match self.steps.get(index)? {
            Step::Command { args, .. } => key(args.first()?),
            Step::Script { keys, .. } => Some(fred::util::redis_keyslot(keys.first()?.as_bytes())),
            Step::Wait { slot, .. } => Some(*slot),
        }
    }

    pub(crate) fn has_scripts(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Script { .. }))
    }

    /// The commands as fred custom commands, with `EVAL` instead of `EVALSHA` when
    /// `send_source` is set.
    pub(crate) fn commands(&self, send_source: bool) -> Vec<(CustomCommand, Vec<Value>)> {
        self.steps
            .iter()
            .map(|step| match step {
                Step::Command { name, args } => (
                    CustomCommand::new(*name, ClusterHash::FirstKey, false),
                    args.clone(),
                ),
                // Not flagged blocking: fred would then refuse to pipeline it with
                // the write it must follow on the same connection.
                Step::Wait { args, slot } => (
                    CustomCommand::new("WAIT", ClusterHash::Custom(*slot), false),
                    args.clone(),
                ),
                Step::Script { script, keys, args } => {
                    let slot = keys.first().map_or(ClusterHash::Random, |k| {
                        ClusterHash::Custom(fred::util::redis_keyslot(k.as_bytes()))
                    });
                    let (name, head) = if send_source {
                        ("EVAL", script.lua())
                    } else {
                        ("EVALSHA", script.sha1())
                    };
                    let mut all = Vec::with_capacity(2 + keys.len() + args.len());
                    all.push(arg(head));
                    all.push(num(keys.len() as u64));
                    all.extend(keys.iter().map(|k| arg(k.as_str())));
                    all.extend(args.iter().cloned());
                    (CustomCommand::new(name, slot, false), all)
                }
            })
            .collect()
    }
}

/// The replies of a batch, in order, each taken at most once.
pub(crate) struct Replies {
    replies: Vec<Option<std::result::Result<Value, FredError>>>,
    address: String,
}

impl Replies {
    pub(crate) fn new(replies: Vec<std::result::Result<Value, FredError>>, address: &str) -> Self {
        Replies {
            replies: replies.into_iter().map(Some).collect(),
            address: address.to_owned(),
        }
    }

    /// The reply at `index`; `what` names the command and key for an error.
    pub(crate) fn take(&mut self, index: usize, what: &str) -> Result<Value> {
        match self.replies.get_mut(index).and_then(Option::take) {
            Some(Ok(value)) => Ok(value),
            Some(Err(error)) => Err(crate::failure::from_fred(&error, &self.address, what)),
            None => Err(Error::corrupt(format!(
                "{what}: redis sent no reply for this command"
            ))),
        }
    }

    /// True when some reply is an error that sending again may cure.
    pub(crate) fn has_transient_error(&self) -> bool {
        self.replies
            .iter()
            .any(|r| matches!(r, Some(Err(e)) if crate::failure::is_transient(e)))
    }

    /// The reply at `index` as an integer.
    pub(crate) fn int(&mut self, index: usize, what: &str) -> Result<i64> {
        let value = self.take(index, what)?;
        to_int(&value, what)
    }
}

/// An integer reply, or an integer written as text (hash fields).
///
/// `what` names the value in the error; pass `format_args!` where it would
/// be built for every call (it is formatted only on error).
pub(crate) fn to_int(value: &Value, what: impl fmt::Display) -> Result<i64> {
    let bad = || {
        Error::corrupt(format!(
            "{what}: expected an integer, found {}",
            describe(value)
        ))
    };
    match value {
        Value::Integer(n) => Ok(*n),
        Value::String(s) => s.trim().parse().map_err(|_| bad()),
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// A non-negative integer (counters, times).
pub(crate) fn to_u64(value: &Value, what: impl fmt::Display) -> Result<u64> {
    let n = to_int(value, &what)?;
    u64::try_from(n).map_err(|_| {
        Error::corrupt(format!(
            "{what}: expected a non-negative integer, found {n}"
        ))
    })
}

/// The reply as bytes; `None` for nil.
pub(crate) fn to_bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::Bytes(b) => Some(b),
        Value::String(s) => Some(s.into_inner()),
        Value::Integer(n) => Some(Bytes::from(n.to_string())),
        _ => None,
    }
}

/// The reply as text; `None` for nil or non-UTF-8.
pub(crate) fn to_text(value: Value) -> Option<String> {
    to_bytes(value).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

/// An array reply (nil reads as empty).
pub(crate) fn to_array(value: Value, what: &str) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(Error::corrupt(format!(
            "{what}: expected an array, found {}",
            describe(&other)
        ))),
    }
}

/// A hash's fields by name; the names share the reply's buffer (no copy).
pub(crate) type Fields = HashMap<Str, Value>;

/// A hash reply (`HGETALL`): a RESP3 map or a RESP2 flat array of pairs.
/// Names that are not UTF-8 are left out.
pub(crate) fn to_hash(value: Value, what: &str) -> Result<Fields> {
    let name = |key: Value| match key {
        Value::String(s) => Some(s),
        other => to_bytes(other).and_then(|b| Str::from_inner(b).ok()),
    };
    match value {
        Value::Map(map) => Ok(map
            .inner()
            .into_iter()
            .filter_map(|(k, v)| k.into_string().map(|k| (Str::from(k), v)))
            .collect()),
        Value::Array(items) => {
            let mut fields = HashMap::with_capacity(items.len() / 2);
            let mut iter = items.into_iter();
            while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                if let Some(k) = name(k) {
                    fields.insert(k, v);
                }
            }
            Ok(fields)
        }
        Value::Null => Ok(HashMap::new()),
        other => Err(Error::corrupt(format!(
            "{what}: expected a hash, found {}",
            describe(&other)
        ))),
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) if s.len() <= 40 => format!("`{}`", &**s),
        other => format!("a {} value", other.kind()),
    }
}
