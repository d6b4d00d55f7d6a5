//! The background task: probes the primary once the cool-down is over, and
//! writes the journal back while the breaker is half-open (or closed with
//! sessions still waiting).

use std::{
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use session_store_core::{Error, Result, SessionId};
use tokio::task::JoinHandle;

use futures::StreamExt;

use super::{add, breaker::Route, FallbackPrimary, Inner};

/// Sessions written back at the same time.
const CONCURRENT_WRITE_BACKS: usize = 8;
/// Failed write-backs of one session, while the probe passes, before it is
/// quarantined.
pub(super) const QUARANTINE_AFTER: u32 = 3;

/// Starts the task. It holds only a weak reference, so it ends once the store
/// is dropped (the store also aborts it).
pub(super) fn spawn<P: FallbackPrimary + 'static>(
    inner: Weak<Inner<P>>,
    interval: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(inner) = inner.upgrade() else {
                break;
            };
            inner.recovery_tick().await;
        }
    })
}

impl<P: FallbackPrimary> Inner<P> {
    async fn recovery_tick(self: &Arc<Self>) {
        match self.breaker.recovery_route() {
            Route::Primary => return,
            Route::Memory => {
                if !self.breaker.probe_due(Instant::now()) {
                    return;
                }
                match self.primary.probe().await {
                    Ok(_) => self.breaker.half_open(),
                    Err(error) => {
                        self.breaker.probe_failed(&error);
                        return;
                    }
                }
            }
            Route::Mixed => {}
        }
        self.write_back_all().await;
    }

    /// Writes back every session in the journal, then closes the breaker if the
    /// journal is empty. A session that fails with Unavailable while the probe
    /// passes is not an outage: it is retried, and quarantined after
    /// [`QUARANTINE_AFTER`] failures (or at once for an error that is no
    /// failure of reach, such as Corrupt); only a failing probe reopens the
    /// breaker.
    pub(super) async fn write_back_all(&self) {
        // Sessions are independent, so several are written back at once; each
        // session's own frames still go in order.
        futures::stream::iter(self.journal.ids())
            .for_each_concurrent(CONCURRENT_WRITE_BACKS, |id| async move {
                if self.breaker.recovery_route() == Route::Memory {
                    return;
                }
                match self.write_back_one(&id).await {
                    Ok(()) => {}
                    Err(error) if error.is_retryable() => match self.primary.probe().await {
                        Err(outage) => self.breaker.record_failure(&outage),
                        Ok(()) => {
                            add(&self.counters.write_back_failures, 1);
                            self.failed_write_back(&id, &error).await;
                        }
                    },
                    Err(error) => {
                        add(&self.counters.write_back_failures, 1);
                        self.quarantine(&id, &error);
                    }
                }
            })
            .await;
        if self.breaker.recovery_route() != Route::Memory {
            self.journal.close_if_empty(|| {
                if let Some(disk) = &self.disk {
                    if let Err(error) = disk.clear() {
                        tracing::warn!(%error, "session store: could not empty the fallback journal file; it is replayed (and written back again, harmlessly) at the next start");
                    }
                }
                self.breaker.close();
            });
        }
    }

    /// A write-back of `id` failed with Unavailable although the primary
    /// answers a probe sent right after it (the breaker half-open after an
    /// outage, or still closed after a blip): count it on the entry, and quarantine the entry after [`QUARANTINE_AFTER`].
    async fn failed_write_back(&self, id: &SessionId, error: &Error) {
        let Some(entry) = self.journal.get(id) else {
            return;
        };
        let failures = {
            let mut dirty = entry.lock().await;
            dirty.write_back_failures = dirty.write_back_failures.saturating_add(1);
            dirty.write_back_failures
        };
        tracing::warn!(session = %id, %error, failures, "session store: write-back of a session failed although the primary answers a probe sent right after it; retried, quarantined after {QUARANTINE_AFTER} failures");
        if failures >= QUARANTINE_AFTER {
            self.quarantine(id, error);
        }
    }

    /// Moves `id` out of the journal into quarantine, so it no longer holds the
    /// breaker open; its changes are kept (and counted against the journal's
    /// bytes) for an operator, logged and counted.
    fn quarantine(&self, id: &SessionId, error: &Error) {
        if self.journal.quarantine(id) {
            add(&self.counters.quarantined, 1);
            tracing::error!(
                session = %id,
                %error,
                "session store: the write-back of a session changed during an outage keeps failing while the primary answers; it is quarantined (kept in memory, no longer written back) so the breaker can close"
            );
        }
    }

    /// Writes back one session under its entry's lock, then drops it from the
    /// journal. On an error the entry stays (the caller retries or quarantines).
    async fn write_back_one(&self, id: &SessionId) -> Result<()> {
        let Some(entry) = self.journal.get(id) else {
            return Ok(());
        };
        let mut dirty = entry.lock().await;
        if dirty.written_back {
            return Ok(());
        }
        let now = self.clock.now();
        let outcome: Result<()> = if dirty.deleted {
            self.primary.delete(id).await.map(|_| ())
        } else if !dirty.is_live(now) {
            // Expired while the primary was away: nothing left to keep.
            Ok(())
        } else {
            if dirty.replaces {
                // Only what is older than the replacement: the tombstone must
                // not refuse its write-back below.
                self.primary
                    .delete_replaced(id, dirty.session.created_at)
                    .await?;
                dirty.replaces = false;
            }
            match self.primary.write_back(&dirty.to_write_back()).await {
                Ok(report) => {
                    let counters = &self.counters;
                    add(&counters.written_back_frames, report.frames_written);
                    add(&counters.duplicate_frames, report.frames_already_stored);
                    add(&counters.interleaved_frames, report.frames_interleaved);
                    if report.recreated {
                        add(&counters.recreated_sessions, 1);
                    }
                    if let Some(revision) = report.conflict_revision {
                        add(&counters.conflicts, 1);
                        tracing::warn!(
                            session = %id,
                            local_revision = dirty.session.revision,
                            redis_revision = revision,
                            "session store: an update made during the outage lost to a concurrent update in redis"
                        );
                        self.known.forget(id);
                    } else {
                        let last = report.frame_ids.iter().max().copied();
                        self.known.remember_written_back(&dirty.session, last);
                    }
                    Ok(())
                }
                Err(Error::NotFound(_)) => {
                    // Deleted by another instance while this one was cut off
                    // (the primary's tombstone), or expired there: never
                    // recreated.
                    add(&self.counters.deleted_elsewhere, 1);
                    tracing::info!(
                        session = %id,
                        "session store: a session changed during the outage was deleted elsewhere meanwhile; its journal entry is dropped"
                    );
                    self.known.forget(id);
                    Ok(())
                }
                Err(error) => Err(error),
            }
        };
        match outcome {
            Ok(()) => {
                add(&self.counters.written_back_sessions, 1);
            }
            Err(error) => return Err(error),
        }
        if dirty.deleted {
            self.known.forget(id);
        }
        dirty.written_back = true;
        self.journal.remove(id, dirty.bytes());
        if let Some(disk) = &self.disk {
            if let Err(error) = disk.append(&super::disk::Record::Removed { id: id.clone() }) {
                tracing::warn!(session = %id, %error, "session store: could not record a write-back in the fallback journal file; it is written back again (harmlessly) after a restart");
            }
        }
        Ok(())
    }
}
