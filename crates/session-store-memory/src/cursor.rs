//! The `list` cursor: where a walk over (shard, id) order stopped.
//!
//! Sessions are listed shard by shard, each shard in id order, so the position
//! "after id X in shard S" stays meaningful while sessions are created or deleted:
//! a session alive throughout the walk is seen exactly once.

use session_store_core::{Cursor, Error, Result, SessionId};

/// Prefix that marks a cursor as made by this backend (and its format version).
const PREFIX: &str = "mem1";

/// A position in the listing order: after `last_id` in shard `shard`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListPosition {
    pub(crate) shard: usize,
    pub(crate) last_id: SessionId,
}

impl ListPosition {
    /// The opaque cursor text, `mem1.<shard>.<id>`.
    pub(crate) fn to_cursor(&self) -> Cursor {
        Cursor::new(format!("{PREFIX}.{}.{}", self.shard, self.last_id))
    }

    /// Reads a cursor back; anything this store did not make is InvalidInput.
    pub(crate) fn from_cursor(cursor: &Cursor, shard_count: usize) -> Result<Self> {
        let foreign = || {
            Error::invalid_input(format!(
                "list cursor `{cursor}` was not made by this memory store; \
                 start again without a cursor"
            ))
        };
        let mut parts = cursor.as_str().splitn(3, '.');
        if parts.next() != Some(PREFIX) {
            return Err(foreign());
        }
        let shard: usize = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|s| *s < shard_count)
            .ok_or_else(foreign)?;
        let last_id = parts
            .next()
            .and_then(|id| SessionId::new(id).ok())
            .ok_or_else(foreign)?;
        Ok(ListPosition { shard, last_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_ids_with_dots() {
        let position = ListPosition {
            shard: 7,
            last_id: SessionId::new("a.b.c").unwrap(),
        };
        let back = ListPosition::from_cursor(&position.to_cursor(), 64).unwrap();
        assert_eq!(back, position);
    }

    #[test]
    fn foreign_cursors_are_invalid_input() {
        for raw in [
            "",
            "garbage",
            "mem1",
            "mem1.x.id",
            "mem1.64.id",
            "mem1.3.",
            "mem2.1.id",
            "0-0",
        ] {
            let err = ListPosition::from_cursor(&Cursor::new(raw), 64).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{raw}: {err}");
        }
    }
}
