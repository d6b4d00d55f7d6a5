//! `FallbackStore`: keeps an MCP proxy serving while Redis is unreachable.
//!
//! It wraps the primary (Redis) with a circuit breaker and an in-memory journal:
//!
//! - **Closed**: every call goes to the primary (the check is one atomic load).
//!   Each successful call also refreshes a bounded memory of recently used
//!   sessions (their state and last frame id). A call that fails with
//!   [`Error::Unavailable`] (connection failure, timeout) counts as a failure and
//!   is then served from memory, so the caller does not see it. NotFound,
//!   Conflict and InvalidInput are answers, not failures.
//! - **Open** after `failure_threshold` consecutive failures: calls are served
//!   from memory. A session created now, or a remembered session written to now,
//!   is held in the journal (marked dirty) with its new frames, whose ids are
//!   greater than every id the primary handed out. A session that exists only in
//!   the primary, or a listing, is [`Error::Unavailable`]: never a false NotFound
//!   that would make a client re-initialize.
//! - **Half-open** once `cool_down` has passed and a background probe (`PING`)
//!   succeeds: the journal is written back, session by session, in order. A call
//!   on a session being written back waits for it, then goes to the primary;
//!   calls on other sessions go to the primary at once. When the journal is
//!   empty the breaker **closes**. A failure while half-open opens it again.
//!
//! Write-back rule (documented in `docs/operations.md`): a session Redis lost is
//! recreated from memory; otherwise a local update applies only if Redis still
//! holds the revision it was based on (else Redis wins and the conflict is
//! counted); frames are merged, keep their ids where Redis has no larger one, and
//! are never stored twice (each append carries an idempotency key).
//!
//! Small keyed values ([`kv_put`](session_store_core::SessionStore::kv_put) and
//! friends) go to the primary while it answers. While the breaker is open (or a
//! call fails with Unavailable) they are served from a memory secondary of this
//! instance: a condition then holds among this instance's calls only, and
//! nothing is written back, because these values are short-lived by design
//! (stream leases lapse, cache entries refill). Once the primary answers again,
//! its values are the ones read.
//!
//! Transitions are logged (warn when opening, info when half-opening and
//! closing) and counted in [`FallbackStore::stats`].
//!
//! Built by [`build`](crate::build) while Redis is unreachable, the store starts
//! open: its primary connects on the first successful probe (see
//! `docs/operations.md`).
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use session_store::{FallbackSettings, FallbackStore, RedisConfig, RedisStore, StoreSettings, SystemClock};
//!
//! # async fn run() -> session_store::Result<()> {
//! let settings = StoreSettings::default();
//! let redis = RedisStore::connect(RedisConfig::default(), settings.clone(), Arc::new(SystemClock)).await?;
//! let store = FallbackStore::new(redis, settings, FallbackSettings::default(), Arc::new(SystemClock))?;
//! let stats = store.stats();
//! println!("breaker {} ({} sessions waiting for write-back)", stats.state.as_str(), stats.dirty_sessions);
//! # Ok(())
//! # }
//! ```

mod breaker;
mod deferred;
mod disk;
mod journal;
mod known;
mod kv;
mod outage_id;
mod primary;
mod recovery;
mod store;

use std::{
    fmt,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use session_store_core::{Clock, Error, Result, StoreSettings};
use session_store_redis::RedisStore;
use tokio::task::JoinHandle;

pub use breaker::BreakerState;
pub use primary::FallbackPrimary;

pub(crate) use deferred::DeferredRedis;

use breaker::Breaker;
use journal::Journal;
use known::KnownSessions;

/// How the breaker behaves; `[storage.redis.breaker]` in configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackSettings {
    /// Consecutive Unavailable failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// Time the breaker stays open before a probe may half-open it (at least 1ms).
    pub cool_down: Duration,
    /// How many recently used sessions are remembered so they can be served
    /// while the primary is unreachable.
    pub remembered_sessions: usize,
    /// Most bytes the outage journal holds (sessions and frames waiting for
    /// write-back); beyond it writes that would grow it are Unavailable, reads
    /// go on. Default 256 MiB.
    pub journal_max_bytes: u64,
    /// How long after its mint time a session id handed out by a fallback store
    /// that is missing in the primary is answered Unavailable rather than
    /// NotFound: it may still wait in another instance's journal. Default 10 min.
    pub outage_id_grace: Duration,
    /// Where the journal is also kept on local disk (`journal.log`, fsynced
    /// before a write is acknowledged, replayed at start), so a crash during an
    /// outage loses no acknowledged write. `None` (default): memory only.
    pub journal_dir: Option<PathBuf>,
}

/// Default of [`FallbackSettings::journal_max_bytes`]: 256 MiB.
pub const DEFAULT_JOURNAL_MAX_BYTES: u64 = 256 * 1024 * 1024;

impl Default for FallbackSettings {
    fn default() -> Self {
        FallbackSettings {
            failure_threshold: 5,
            cool_down: Duration::from_secs(5),
            remembered_sessions: 100_000,
            journal_max_bytes: DEFAULT_JOURNAL_MAX_BYTES,
            outage_id_grace: Duration::from_secs(600),
            journal_dir: None,
        }
    }
}

impl FallbackSettings {
    /// Checks the values; the message names the configuration key.
    pub fn validate(&self) -> Result<()> {
        if self.failure_threshold == 0 {
            return Err(Error::config(
                "storage.redis.breaker.failure_threshold must be at least 1",
            ));
        }
        if self.cool_down.as_millis() == 0 {
            return Err(Error::config(
                "storage.redis.breaker.cool_down must be at least 1ms",
            ));
        }
        if self.journal_max_bytes == 0 {
            return Err(Error::config(
                "storage.redis.breaker.journal_max_bytes must be at least 1",
            ));
        }
        Ok(())
    }

    /// How often the background task checks the breaker: a quarter of the
    /// cool-down, between 10ms and 1s.
    fn probe_interval(&self) -> Duration {
        (self.cool_down / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// A snapshot of the breaker and the journal, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackStats {
    /// Where calls go now.
    pub state: BreakerState,
    /// Unavailable failures in a row (reset by any answer).
    pub consecutive_failures: u32,
    /// Times the breaker opened.
    pub opened_total: u64,
    /// Times a probe half-opened it.
    pub half_opened_total: u64,
    /// Times it closed after a write-back.
    pub closed_total: u64,
    /// Primary calls that failed with Unavailable.
    pub primary_failures_total: u64,
    /// Probes (`PING` after the cool-down) that failed.
    pub probes_failed_total: u64,
    /// Calls answered from memory instead of the primary.
    pub served_from_memory_total: u64,
    /// Calls answered Unavailable because the session was only in the primary.
    pub unavailable_total: u64,
    /// Sessions in memory waiting for write-back now.
    pub dirty_sessions: u64,
    /// Sessions remembered from the primary now.
    pub remembered_sessions: u64,
    /// Sessions written back (merged, recreated or deleted).
    pub written_back_sessions_total: u64,
    /// Sessions Redis no longer had, recreated from memory.
    pub recreated_sessions_total: u64,
    /// Frames stored by write-backs.
    pub written_back_frames_total: u64,
    /// Frames a write-back found already stored (a reply lost before the outage).
    pub duplicate_frames_skipped_total: u64,
    /// Frames written back before frames Redis stored meanwhile (another
    /// instance's, or appends made while this one was cut off): inserted in
    /// place, keeping the id the client was given.
    pub interleaved_frames_total: u64,
    /// Local updates that lost to a concurrent update in Redis.
    pub write_back_conflicts_total: u64,
    /// Write-backs of a session that failed (each is retried or quarantined).
    pub write_back_failures_total: u64,
    /// Sessions whose write-back the primary refused because another instance
    /// deleted them meanwhile (their journal entry is dropped, not resurrected).
    pub deleted_elsewhere_total: u64,
    /// Sessions quarantined: their write-back kept failing while the primary
    /// answered the probe (or failed with a non-retryable error); kept in memory,
    /// no longer written back, logged at error level.
    pub quarantined_total: u64,
    /// Sessions in quarantine now.
    pub quarantined_sessions: u64,
    /// Calls answered Unavailable instead of NotFound because the id was minted
    /// by a fallback store within `outage_id_grace` and may be in another
    /// instance's journal.
    pub outage_ids_unavailable_total: u64,
    /// Bytes the journal holds now (see `journal_max_bytes`).
    pub journal_bytes: u64,
    /// The most bytes the journal held at once since start.
    pub journal_peak_bytes: u64,
    /// `journal_max_bytes`.
    pub journal_max_bytes: u64,
    /// Writes refused because the journal was full.
    pub journal_full_total: u64,
    /// How long the last recovery took, from half-open to closed.
    pub last_write_back: Option<Duration>,
    /// How long the last outage lasted, from open to closed.
    pub last_outage: Option<Duration>,
}

impl FallbackStats {
    /// Whether the store serves from its journal now (breaker not closed, or
    /// sessions waiting for write-back): a proxy reports `degraded`.
    pub fn degraded(&self) -> bool {
        self.state != BreakerState::Closed || self.dirty_sessions > 0
    }

    /// The snapshot as Prometheus metric names and values (see
    /// `docs/operations.md`, "What the breaker counts"), carried by
    /// [`Health::readings`](session_store_core::Health::readings).
    pub fn readings(&self) -> Vec<(&'static str, f64)> {
        let n = |v: u64| v as f64;
        let mut readings = vec![
            (
                "session_store_breaker_state",
                f64::from(self.state.as_gauge()),
            ),
            ("session_store_breaker_opened_total", n(self.opened_total)),
            (
                "session_store_breaker_half_opened_total",
                n(self.half_opened_total),
            ),
            ("session_store_breaker_closed_total", n(self.closed_total)),
            (
                "session_store_breaker_consecutive_failures",
                f64::from(self.consecutive_failures),
            ),
            (
                "session_store_primary_failures_total",
                n(self.primary_failures_total),
            ),
            (
                "session_store_breaker_probes_failed_total",
                n(self.probes_failed_total),
            ),
            (
                "session_store_fallback_served_total",
                n(self.served_from_memory_total),
            ),
            (
                "session_store_fallback_unavailable_total",
                n(self.unavailable_total),
            ),
            (
                "session_store_fallback_outage_ids_unavailable_total",
                n(self.outage_ids_unavailable_total),
            ),
            (
                "session_store_fallback_dirty_sessions",
                n(self.dirty_sessions),
            ),
            (
                "session_store_fallback_remembered_sessions",
                n(self.remembered_sessions),
            ),
            (
                "session_store_fallback_journal_bytes",
                n(self.journal_bytes),
            ),
            (
                "session_store_fallback_journal_peak_bytes",
                n(self.journal_peak_bytes),
            ),
            (
                "session_store_fallback_journal_max_bytes",
                n(self.journal_max_bytes),
            ),
            (
                "session_store_fallback_journal_full_total",
                n(self.journal_full_total),
            ),
            (
                "session_store_write_back_sessions_total",
                n(self.written_back_sessions_total),
            ),
            (
                "session_store_write_back_recreated_total",
                n(self.recreated_sessions_total),
            ),
            (
                "session_store_write_back_frames_total",
                n(self.written_back_frames_total),
            ),
            (
                "session_store_write_back_duplicates_skipped_total",
                n(self.duplicate_frames_skipped_total),
            ),
            (
                "session_store_write_back_interleaved_total",
                n(self.interleaved_frames_total),
            ),
            (
                "session_store_write_back_conflicts_total",
                n(self.write_back_conflicts_total),
            ),
            (
                "session_store_write_back_failures_total",
                n(self.write_back_failures_total),
            ),
            (
                "session_store_write_back_deleted_elsewhere_total",
                n(self.deleted_elsewhere_total),
            ),
            (
                "session_store_fallback_quarantined_total",
                n(self.quarantined_total),
            ),
            (
                "session_store_fallback_quarantined_sessions",
                n(self.quarantined_sessions),
            ),
        ];
        if let Some(outage) = self.last_outage {
            readings.push((
                "session_store_breaker_last_outage_seconds",
                outage.as_secs_f64(),
            ));
        }
        if let Some(write_back) = self.last_write_back {
            readings.push((
                "session_store_breaker_last_write_back_seconds",
                write_back.as_secs_f64(),
            ));
        }
        readings
    }
}

#[derive(Debug, Default)]
struct Counters {
    served_from_memory: AtomicU64,
    unavailable: AtomicU64,
    written_back_sessions: AtomicU64,
    recreated_sessions: AtomicU64,
    written_back_frames: AtomicU64,
    duplicate_frames: AtomicU64,
    interleaved_frames: AtomicU64,
    conflicts: AtomicU64,
    write_back_failures: AtomicU64,
    deleted_elsewhere: AtomicU64,
    quarantined: AtomicU64,
    outage_ids_unavailable: AtomicU64,
    journal_full: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The shared state of a [`FallbackStore`] and its recovery task.
struct Inner<P> {
    primary: P,
    breaker: Breaker,
    known: KnownSessions,
    journal: Journal,
    settings: StoreSettings,
    clock: Arc<dyn Clock>,
    counters: Counters,
    /// The memory secondary of small keyed values (see `kv`).
    kv_secondary: session_store_memory::MemoryStore,
    /// This instance's tag in the frame ids it mints (see `journal::local_frame_id`).
    tag: u32,
    /// The journal on disk, with `journal_dir`.
    disk: Option<disk::DiskJournal>,
    outage_id_grace: Duration,
}

/// A random tag for this store's frame ids, from the operating system's random
/// source through the standard library's hasher seeds.
fn instance_tag() -> u32 {
    use std::hash::BuildHasher;
    let hash = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    // The low 24 bits (journal::TAG_BITS) are used.
    u32::try_from(hash & 0x00ff_ffff).unwrap_or(1)
}

/// A [`SessionStore`](session_store_core::SessionStore) that serves from memory
/// while its primary is unreachable and writes back when it returns. See the
/// [module documentation](self) for the behaviour in each breaker state.
///
/// Build it through [`build`](crate::build) with `fallback_to_memory = true`, or
/// with [`FallbackStore::new`]. It runs a background task (probe and write-back)
/// that stops when the store is dropped.
pub struct FallbackStore<P: FallbackPrimary = RedisStore> {
    inner: Arc<Inner<P>>,
    recovery: JoinHandle<()>,
}

impl<P: FallbackPrimary> fmt::Debug for FallbackStore<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackStore")
            .field("primary", &self.inner.primary)
            .field("state", &self.inner.breaker.state())
            .field("dirty_sessions", &self.inner.journal.len())
            .finish_non_exhaustive()
    }
}

impl<P: FallbackPrimary + 'static> FallbackStore<P> {
    /// Wraps `primary`. `settings` must be the primary's (the memory side applies
    /// the same TTL and limits).
    ///
    /// With `journal_dir`, the journal a previous run left there is replayed
    /// and written back once the primary answers.
    ///
    /// Errors: [`Error::Config`] for invalid `fallback` or `settings`, or a
    /// `journal_dir` that cannot be created, read or written.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (it spawns the recovery task).
    pub fn new(
        primary: P,
        settings: StoreSettings,
        fallback: FallbackSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        settings.validate()?;
        fallback.validate()?;
        let kv_secondary = session_store_memory::MemoryStore::builder()
            .settings(settings.clone())
            .clock(clock.clone())
            .build()?;
        let journal = Journal::new(fallback.journal_max_bytes);
        let breaker = Breaker::new(fallback.failure_threshold, fallback.cool_down);
        let disk = match &fallback.journal_dir {
            Some(dir) => {
                let (disk, replayed) = disk::DiskJournal::open(dir)?;
                if !replayed.is_empty() {
                    tracing::warn!(
                        sessions = replayed.len(),
                        dir = %dir.display(),
                        "session store: replayed the fallback journal left by the previous run; writing it back when the primary answers"
                    );
                    breaker.mark_draining();
                }
                for (id, entry) in replayed {
                    journal.restore(id, journal::DirtySession::from_replayed(entry)?);
                }
                Some(disk)
            }
            None => None,
        };
        let inner = Arc::new(Inner {
            kv_secondary,
            primary,
            breaker,
            known: KnownSessions::new(fallback.remembered_sessions),
            journal,
            settings,
            clock,
            counters: Counters::default(),
            tag: instance_tag(),
            outage_id_grace: fallback.outage_id_grace,
            disk,
        });
        let recovery = recovery::spawn(Arc::downgrade(&inner), fallback.probe_interval());
        Ok(FallbackStore { inner, recovery })
    }
}

impl<P: FallbackPrimary> FallbackStore<P> {
    /// Opens the breaker at once (the primary could not be reached at start):
    /// calls are served from memory and the first probe is sent after
    /// `cool_down`. Logged at warn with `error`.
    pub(crate) fn open_breaker(&self, error: &Error) {
        self.inner.breaker.trip(error);
    }

    /// The wrapped primary.
    pub fn primary(&self) -> &P {
        &self.inner.primary
    }

    /// The breaker's state and counters now.
    pub fn stats(&self) -> FallbackStats {
        let inner = &self.inner;
        let breaker = &inner.breaker.counters;
        let counters = &inner.counters;
        FallbackStats {
            state: inner.breaker.state(),
            consecutive_failures: inner.breaker.consecutive_failures(),
            opened_total: read(&breaker.opened),
            half_opened_total: read(&breaker.half_opened),
            closed_total: read(&breaker.closed),
            primary_failures_total: read(&breaker.primary_failures),
            probes_failed_total: read(&breaker.probes_failed),
            served_from_memory_total: read(&counters.served_from_memory),
            unavailable_total: read(&counters.unavailable),
            dirty_sessions: u64::try_from(inner.journal.len()).unwrap_or(u64::MAX),
            remembered_sessions: u64::try_from(inner.known.len()).unwrap_or(u64::MAX),
            written_back_sessions_total: read(&counters.written_back_sessions),
            recreated_sessions_total: read(&counters.recreated_sessions),
            written_back_frames_total: read(&counters.written_back_frames),
            duplicate_frames_skipped_total: read(&counters.duplicate_frames),
            interleaved_frames_total: read(&counters.interleaved_frames),
            write_back_conflicts_total: read(&counters.conflicts),
            write_back_failures_total: read(&counters.write_back_failures),
            deleted_elsewhere_total: read(&counters.deleted_elsewhere),
            quarantined_total: read(&counters.quarantined),
            quarantined_sessions: u64::try_from(inner.journal.quarantined_len())
                .unwrap_or(u64::MAX),
            outage_ids_unavailable_total: read(&counters.outage_ids_unavailable),
            journal_bytes: inner.journal.bytes(),
            journal_peak_bytes: inner.journal.peak_bytes(),
            journal_max_bytes: inner.journal.max_bytes(),
            journal_full_total: read(&counters.journal_full),
            last_write_back: inner.breaker.last_recovery(),
            last_outage: inner.breaker.last_outage(),
        }
    }
}

impl<P: FallbackPrimary> Drop for FallbackStore<P> {
    fn drop(&mut self) {
        self.recovery.abort();
    }
}
