//! The optional cap on stored sessions, enforced exactly under concurrent creates.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts stored sessions (live or not yet purged) against an optional limit.
#[derive(Debug)]
pub(crate) struct SessionCapacity {
    limit: Option<usize>,
    stored: AtomicUsize,
}

impl SessionCapacity {
    pub(crate) fn new(limit: Option<usize>) -> Self {
        SessionCapacity {
            limit,
            stored: AtomicUsize::new(0),
        }
    }

    /// The configured limit.
    pub(crate) fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Takes one slot; false when the limit is reached.
    pub(crate) fn try_reserve(&self) -> bool {
        let limit = self.limit.unwrap_or(usize::MAX);
        self.stored
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |stored| {
                (stored < limit).then_some(stored + 1)
            })
            .is_ok()
    }

    /// Gives back `count` slots (sessions removed, or a reservation not used).
    pub(crate) fn release(&self, count: usize) {
        self.stored.fetch_sub(count, Ordering::AcqRel);
    }
}
