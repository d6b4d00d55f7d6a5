//! Backoff between attempts of a retry-safe batch: exponential with full jitter,
//! never past the operation's deadline, so a retried read still answers within
//! `command_timeout`.

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// First backoff ceiling; doubled after every attempt.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// Largest backoff ceiling.
const MAX_PAUSE: Duration = Duration::from_millis(200);
/// Attempts per operation, whatever the budget, so no loop is unbounded. Enough
/// for the whole `command_timeout` at the largest pause: a cluster slot
/// migration answers `TRYAGAIN` to a script whose keys are not all on one node
/// (a session's frames stream or tombstone that does not exist counts as
/// missing) until the slot has moved, so a script waits out the migration.
const MAX_ATTEMPTS: u32 = 32;

/// The pauses of one operation's retries.
pub(crate) struct Backoff {
    ceiling: Duration,
    attempts: u32,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            ceiling: FIRST_PAUSE,
            attempts: 1,
        }
    }

    /// How long to wait before the next attempt, or `None` when no attempt is
    /// left: the attempt cap is reached or the pause would end past `deadline`.
    pub(crate) fn next_pause(&mut self, deadline: Instant) -> Option<Duration> {
        if self.attempts >= MAX_ATTEMPTS {
            return None;
        }
        self.attempts += 1;
        // Full jitter: uniform in [ceiling/2, ceiling], so retries of many callers
        // after one failure spread out instead of arriving together.
        let ceiling_us = u64::try_from(self.ceiling.as_micros()).unwrap_or(u64::MAX);
        let pause = Duration::from_micros(ceiling_us / 2 + jitter() % (ceiling_us / 2 + 1));
        self.ceiling = (self.ceiling * 2).min(MAX_PAUSE);
        let left = deadline.saturating_duration_since(Instant::now());
        // An attempt needs some time left after the pause to be worth making.
        (left > pause + Duration::from_millis(1)).then_some(pause)
    }
}

/// A pseudo-random number: the process-random SipHash keys of `RandomState` over
/// a counter. Good enough to spread retries; not for anything secret.
fn jitter() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static KEYS: RandomState = RandomState::new();
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    KEYS.with(|keys| keys.hash_one(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_stay_jittered_and_stop_at_the_deadline() {
        let far = Instant::now() + Duration::from_secs(60);
        let mut backoff = Backoff::new();
        let mut pauses = Vec::new();
        while let Some(pause) = backoff.next_pause(far) {
            pauses.push(pause);
        }
        assert_eq!(pauses.len() as u32, MAX_ATTEMPTS - 1);
        assert!(pauses[0] >= FIRST_PAUSE / 2 && pauses[0] <= FIRST_PAUSE);
        assert!(pauses.iter().all(|p| *p <= MAX_PAUSE));

        let mut backoff = Backoff::new();
        assert_eq!(backoff.next_pause(Instant::now()), None, "no budget left");
    }
}
