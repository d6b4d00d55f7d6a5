//! Pagination: a page of results and the opaque cursor to the next one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where the next page of a listing starts. Opaque: pass it back unchanged.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    /// Wraps a backend's cursor text. Backends validate it when it comes back.
    pub fn new(raw: impl Into<String>) -> Self {
        Cursor(raw.into())
    }

    /// The cursor as text (for a query string or a header).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({})", self.0)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The items, at most the requested limit.
    pub items: Vec<T>,
    /// The cursor to the next page; `None` when this was the last.
    pub next_cursor: Option<Cursor>,
}

/// Largest page a `list` call returns, whatever limit is asked for.
pub const MAX_PAGE_SIZE: usize = 1_000;
