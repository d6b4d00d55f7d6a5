//! The replies of the store's Lua scripts: a status word (`OK`, `NOTFOUND`,
//! `CORRUPT <field>`, ...) followed by values. Shared by the session, frame,
//! liveness, kv and write-back operations, below all of them.

use fred::types::Value;
use session_store_core::{Error, Result, SessionId};

use crate::batch::{to_array, to_text, to_u64};

/// A script's reply: its status word and the values after it.
pub(crate) fn script_status(value: Value, what: &str) -> Result<(String, Vec<Value>)> {
    let mut items = to_array(value, what)?.into_iter();
    let status = items
        .next()
        .and_then(to_text)
        .ok_or_else(|| Error::corrupt(format!("{what}: script reply has no status")))?;
    Ok((status, items.collect()))
}

/// The values after a script's `OK`; `NOTFOUND` is NotFound, `CORRUPT <field>`
/// is Corrupt naming the key, any other status is Corrupt.
pub(crate) fn ok_values(
    reply: Value,
    id: &SessionId,
    meta: &str,
    what: &str,
) -> Result<Vec<Value>> {
    let (status, rest) = script_status(reply, what)?;
    match status.as_str() {
        "OK" => Ok(rest),
        "NOTFOUND" => Err(Error::NotFound(id.clone())),
        "CORRUPT" => Err(corrupt_field(rest, meta)),
        other => Err(Error::corrupt(format!(
            "{what}: unexpected script status `{other}`"
        ))),
    }
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
