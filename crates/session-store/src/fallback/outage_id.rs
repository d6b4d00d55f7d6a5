//! Session ids that say when they were minted, so that an instance which does
//! not find one in Redis can tell "may still be in another instance's outage
//! journal" (answer Unavailable) from "gone" (answer NotFound).
//!
//! Form: `fb.<mint time, Unix milliseconds>.<32 hex digits of CSPRNG>`, e.g.
//! `fb.1764500000000.9f2c41d07a3e55b19f2c41d07a3e55b1`. Every id a
//! [`FallbackStore`](super::FallbackStore) hands out has this form (a create
//! that times out once already lands in the journal, so the mark cannot wait
//! for the breaker to open). Ids of another form are treated as before.

use std::time::Duration;

use session_store_core::{Result, SessionId, Timestamp};

/// What starts a marked id.
const MARK: &str = "fb.";

/// A fresh marked id minted at `now`.
///
/// Errors: Unavailable when the operating system's random source fails.
pub(crate) fn mint(now: Timestamp) -> Result<SessionId> {
    let random = SessionId::random()?;
    SessionId::new(format!("{MARK}{}.{random}", now.as_millis()))
}

/// When a marked id was minted; `None` for any other id.
pub(crate) fn minted_at(id: &SessionId) -> Option<Timestamp> {
    let rest = id.as_str().strip_prefix(MARK)?;
    let (millis, random) = rest.split_once('.')?;
    if random.len() != 32 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    millis.parse().ok().map(Timestamp::from_millis)
}

/// Whether `id` was minted by a fallback store less than `grace` before `now`
/// (or in the future, by a clock ahead of ours): it may still be waiting in
/// another instance's journal, so "not in Redis" must not be NotFound yet.
pub(crate) fn may_be_journaled(id: &SessionId, now: Timestamp, grace: Duration) -> bool {
    minted_at(id).is_some_and(|at| now.saturating_duration_since(at) < grace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_carry_their_time_and_stay_valid_session_ids() {
        let now = Timestamp::from_millis(1_764_500_000_000);
        let id = mint(now).unwrap();
        assert_eq!(minted_at(&id), Some(now));
        assert!(id.as_str().len() < 64, "{id}");
        assert_ne!(mint(now).unwrap(), id);
        let grace = Duration::from_secs(600);
        assert!(may_be_journaled(
            &id,
            now.saturating_add(Duration::from_secs(599)),
            grace
        ));
        assert!(!may_be_journaled(&id, now.saturating_add(grace), grace));
    }

    #[test]
    fn other_ids_are_not_marked() {
        for other in [
            "9f2c41d07a3e55b19f2c41d07a3e55b1",
            "fb.12.short",
            "fb.x.9f2c41d07a3e55b19f2c41d07a3e55b1",
            "fb.12",
        ] {
            assert_eq!(minted_at(&SessionId::new(other).unwrap()), None, "{other}");
        }
    }
}
