//! The circuit breaker of [`FallbackStore`](super::FallbackStore): which way calls
//! go (primary or memory), when that changes, and the counters that show it.
//!
//! One atomic byte holds the routing state, so a call on a healthy primary costs
//! one atomic load. Transitions are compare-and-swap, so each is logged and
//! counted exactly once however many callers race to it.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering},
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use crate::reachability::Reachability;

/// What the breaker reports (see [`FallbackStats`](super::FallbackStats)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// The primary answers; calls go to it.
    Closed,
    /// The primary failed `failure_threshold` times in a row: calls are served
    /// from memory until a probe succeeds after `cool_down`.
    Open,
    /// A probe succeeded: sessions changed in memory are being written back;
    /// calls on them wait for their write-back, other calls go to the primary.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`: for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// 0 closed, 1 half-open, 2 open: a gauge value for metrics.
    pub fn as_gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    /// The state of an [`as_gauge`](Self::as_gauge) value (the
    /// `session_store_breaker_state` reading); `None` for any other number.
    pub fn from_gauge(value: f64) -> Option<BreakerState> {
        [
            BreakerState::Closed,
            BreakerState::HalfOpen,
            BreakerState::Open,
        ]
        .into_iter()
        .find(|state| f64::from(state.as_gauge()) == value)
    }
}

/// Closed, and nothing waits in memory: the fast path.
const CLOSED: u8 = 0;
/// Closed, but some calls failed over to memory and wait to be written back
/// (fewer failures than the threshold). Routed like half-open.
const DRAINING: u8 = 1;
const OPEN: u8 = 2;
const HALF_OPEN: u8 = 3;

/// While half-open, one call in this many goes to the primary; the others are
/// served as if the breaker were open, so a recovering primary sees a bounded
/// share of the traffic while the journal is written back.
pub(crate) const HALF_OPEN_ADMIT_EVERY: u64 = 4;
/// Calls admitted while half-open that must succeed before every call is.
pub(crate) const HALF_OPEN_TRIAL_SUCCESSES: u64 = 32;

/// Where a call goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Straight to the primary; the journal is empty.
    Primary,
    /// To memory for sessions written there, to the primary for the rest.
    Mixed,
    /// To memory only.
    Memory,
}

/// Monotonic counters, exposed through [`FallbackStats`](super::FallbackStats).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) opened: AtomicU64,
    pub(crate) half_opened: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) primary_failures: AtomicU64,
    pub(crate) probes_failed: AtomicU64,
}

/// When the current outage began and ended, for the durations in the stats.
#[derive(Debug, Default)]
struct Times {
    opened_at: Option<Instant>,
    /// When the current cool-down began: at opening, and again after a failed
    /// probe or a failed write-back.
    cool_down_from: Option<Instant>,
    half_opened_at: Option<Instant>,
    last_recovery: Option<Duration>,
    last_outage: Option<Duration>,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    state: AtomicU8,
    /// Calls routed while half-open, for [`HALF_OPEN_ADMIT_EVERY`].
    half_open_calls: AtomicU64,
    /// Primary answers since the breaker half-opened, for
    /// [`HALF_OPEN_TRIAL_SUCCESSES`].
    half_open_successes: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Whether the primary answers, for the lines that say when it stops and
    /// answers again while the breaker stays closed.
    reachability: Reachability,
    failure_threshold: u32,
    cool_down: Duration,
    times: Mutex<Times>,
    pub(crate) counters: Counters,
}

impl Breaker {
    pub(crate) fn new(failure_threshold: u32, cool_down: Duration) -> Self {
        Breaker {
            state: AtomicU8::new(CLOSED),
            half_open_calls: AtomicU64::new(0),
            half_open_successes: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            reachability: Reachability::default(),
            failure_threshold: failure_threshold.max(1),
            cool_down,
            times: Mutex::new(Times::default()),
            counters: Counters::default(),
        }
    }

    /// The route for the next call: one atomic load (and counters while
    /// half-open: until [`HALF_OPEN_TRIAL_SUCCESSES`] primary answers, one call
    /// in [`HALF_OPEN_ADMIT_EVERY`] is admitted to the primary and the others
    /// stay in memory; then every call is).
    pub(crate) fn route(&self) -> Route {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Route::Primary,
            OPEN => Route::Memory,
            HALF_OPEN => {
                if self.half_open_successes.load(Ordering::Relaxed) >= HALF_OPEN_TRIAL_SUCCESSES {
                    return Route::Mixed;
                }
                let n = self.half_open_calls.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(HALF_OPEN_ADMIT_EVERY) {
                    Route::Mixed
                } else {
                    Route::Memory
                }
            }
            _ => Route::Mixed,
        }
    }

    /// The route of the write-back itself and of the background task: never
    /// held back by the half-open share.
    pub(crate) fn recovery_route(&self) -> Route {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Route::Primary,
            OPEN => Route::Memory,
            _ => Route::Mixed,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) == OPEN
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    pub(crate) fn last_recovery(&self) -> Option<Duration> {
        self.times.lock().last_recovery
    }

    pub(crate) fn last_outage(&self) -> Option<Duration> {
        self.times.lock().last_outage
    }

    /// A primary call answered (any answer but Unavailable). The first answer
    /// after failures that did not open the breaker (a blip) is logged once:
    /// the primary answers again.
    pub(crate) fn record_success(&self) {
        // Load first: the common case writes nothing, so the cache line stays shared.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        let state = self.state.load(Ordering::Relaxed);
        if state == HALF_OPEN {
            self.half_open_successes.fetch_add(1, Ordering::Relaxed);
        }
        if matches!(state, CLOSED | DRAINING) {
            self.answers_again();
        }
    }

    /// Logs, once, that the primary answers again after failures that left the
    /// breaker closed: at the first call it answers, or when the write-back of
    /// the blip completes first (no call came meanwhile).
    fn answers_again(&self) {
        if let Some(unanswered) = self.reachability.answered() {
            tracing::info!(
                breaker = "closed",
                down_for = ?unanswered.down_for,
                failed_calls = unanswered.failed_calls,
                "session store: primary answers again; circuit breaker stayed closed"
            );
        }
    }

    /// A primary call failed with Unavailable (connection failure or timeout).
    /// Opens the breaker at the threshold, or at once when half-open.
    pub(crate) fn record_failure(&self, error: &dyn std::fmt::Display) {
        self.counters
            .primary_failures
            .fetch_add(1, Ordering::Relaxed);
        let failures = self
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let first = self.reachability.failed();
        let state = self.state.load(Ordering::Acquire);
        let trips = match state {
            HALF_OPEN => true,
            CLOSED | DRAINING => failures >= self.failure_threshold,
            _ => false,
        };
        if trips && self.transition(state, OPEN) {
            self.opened();
            tracing::warn!(
                breaker = "open",
                consecutive_failures = failures,
                cool_down = ?self.cool_down,
                %error,
                "session store: primary unavailable, circuit breaker opened; serving from memory"
            );
        } else if first && matches!(state, CLOSED | DRAINING) {
            tracing::warn!(
                breaker = "closed",
                failure_threshold = self.failure_threshold,
                %error,
                "session store: primary unavailable; calls it fails are served from memory where they can be, circuit breaker still closed"
            );
        }
    }

    /// Opens the breaker whatever the failure count: the primary could not be
    /// reached when the store was built. The first probe is due after `cool_down`.
    pub(crate) fn trip(&self, error: &dyn std::fmt::Display) {
        let state = self.state.load(Ordering::Acquire);
        if matches!(state, CLOSED | DRAINING) && self.transition(state, OPEN) {
            self.opened();
            tracing::warn!(
                breaker = "open",
                cool_down = ?self.cool_down,
                %error,
                "session store: primary unreachable at start, circuit breaker open; serving from memory and connecting in the background"
            );
        }
    }

    /// Times and counts a transition to open.
    fn opened(&self) {
        let mut times = self.times.lock();
        let now = Instant::now();
        if times.opened_at.is_none() {
            times.opened_at = Some(now);
        }
        times.cool_down_from = Some(now);
        times.half_opened_at = None;
        drop(times);
        self.counters.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// A call was served from memory while the breaker was closed: route the
    /// following calls through the journal until it is written back.
    pub(crate) fn mark_draining(&self) {
        if self.transition(CLOSED, DRAINING) {
            tracing::debug!("session store: a call failed over to memory; write-back pending");
        }
    }

    /// Whether the cool-down since the breaker opened (or since the last failed
    /// probe) is over, so a probe may be sent.
    pub(crate) fn probe_due(&self, now: Instant) -> bool {
        if !self.is_open() {
            return false;
        }
        let since = self.times.lock().cool_down_from;
        since.is_none_or(|since| now.saturating_duration_since(since) >= self.cool_down)
    }

    /// A probe failed: the cool-down starts again. Logged once per probe (at
    /// info: the breaker's opening was the warning), saying what is down, that
    /// calls are served from memory and when the next probe is due.
    pub(crate) fn probe_failed(&self, error: &dyn std::fmt::Display) {
        let failed = self.counters.probes_failed.fetch_add(1, Ordering::Relaxed) + 1;
        self.times.lock().cool_down_from = Some(Instant::now());
        tracing::info!(
            breaker = "open",
            probes_failed = failed,
            next_probe_in = ?self.cool_down,
            %error,
            "session store: primary still unreachable; serving from memory, probing again after the cool-down"
        );
    }

    /// A probe succeeded after the cool-down: start writing back.
    pub(crate) fn half_open(&self) {
        if self.transition(OPEN, HALF_OPEN) {
            let now = Instant::now();
            let mut times = self.times.lock();
            times.half_opened_at = Some(now);
            let open_for = times.opened_at.map(|at| now.saturating_duration_since(at));
            drop(times);
            self.consecutive_failures.store(0, Ordering::Relaxed);
            // This line says the primary answers again; the calls after it do not.
            let _ = self.reachability.answered();
            self.half_open_successes.store(0, Ordering::Relaxed);
            self.counters.half_opened.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                breaker = "half_open",
                open_for = ?open_for,
                "session store: primary answers again, circuit breaker half-open; writing back"
            );
        }
    }

    /// The journal is empty: back to the fast path. Called with the journal's
    /// lock held, so nothing is added to it in between.
    pub(crate) fn close(&self) {
        let state = self.state.load(Ordering::Acquire);
        if state != HALF_OPEN && state != DRAINING {
            return;
        }
        if self.transition(state, CLOSED) {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            if state == DRAINING {
                self.answers_again();
                tracing::info!(
                    breaker = "closed",
                    "session store: calls served from memory while the primary was unavailable are written back"
                );
                return;
            }
            let now = Instant::now();
            let mut times = self.times.lock();
            let recovery = times
                .half_opened_at
                .map(|at| now.saturating_duration_since(at));
            let outage = times
                .opened_at
                .take()
                .map(|at| now.saturating_duration_since(at));
            times.half_opened_at = None;
            times.cool_down_from = None;
            times.last_recovery = recovery;
            times.last_outage = outage;
            drop(times);
            self.counters.closed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                breaker = "closed",
                outage = ?outage,
                write_back = ?recovery,
                "session store: write-back complete, circuit breaker closed"
            );
        }
    }

    fn transition(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// What this test thread's events were written into, while `logged` runs.
        static CAPTURED: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
    }

    /// Writes into the calling thread's [`CAPTURED`] buffer, if one is set.
    struct ThreadCapture;

    impl std::io::Write for ThreadCapture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            CAPTURED.with(|captured| {
                if let Some(buffer) = captured.borrow_mut().as_mut() {
                    buffer.extend_from_slice(bytes);
                }
            });
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `run` logs at info and above on this thread. One global
    /// subscriber for the test binary, writing per thread: a scoped
    /// subscriber (`with_default`) per test raced the callsite interest cache
    /// against tests running in parallel without one, and a line went missing
    /// now and then.
    fn logged(run: impl FnOnce()) -> String {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .with_writer(|| ThreadCapture)
                .finish();
            let _ = tracing::subscriber::set_global_default(subscriber);
        });
        CAPTURED.with(|captured| *captured.borrow_mut() = Some(Vec::new()));
        run();
        let bytes = CAPTURED.with(|captured| captured.borrow_mut().take().unwrap_or_default());
        let log = String::from_utf8(bytes).unwrap();
        println!("{log}");
        log
    }

    #[test]
    fn a_blip_that_does_not_open_the_breaker_is_logged_once_down_and_once_up() {
        let breaker = Breaker::new(5, Duration::from_secs(1));
        let log = logged(|| {
            for _ in 0..3 {
                breaker.record_failure(&"redis at 127.0.0.1:6379: Connection refused");
                breaker.mark_draining();
            }
            for _ in 0..3 {
                breaker.record_success();
            }
            breaker.close();
        });
        assert_eq!(log.lines().count(), 3, "one line per change:\n{log}");
        let down = "session store: primary unavailable; calls it fails are served from memory";
        assert_eq!(log.matches(down).count(), 1, "{log}");
        assert!(
            log.contains("Connection refused"),
            "names the failure: {log}"
        );
        let up = "session store: primary answers again; circuit breaker stayed closed";
        assert_eq!(log.matches(up).count(), 1, "{log}");
        assert!(log.contains("failed_calls=3"), "{log}");
        assert_eq!(log.matches("are written back").count(), 1, "{log}");
        assert!(!log.contains("probe") && !log.contains("opened"), "{log}");
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_blip_written_back_before_any_call_still_says_the_primary_answers_again() {
        let breaker = Breaker::new(5, Duration::from_secs(1));
        let log = logged(|| {
            breaker.record_failure(&"x");
            breaker.mark_draining();
            breaker.close();
            breaker.record_success();
        });
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 3, "{log}");
        assert!(
            lines[0].contains("primary unavailable; calls it fails"),
            "{log}"
        );
        assert!(
            lines[1].contains("primary answers again; circuit breaker stayed closed"),
            "{log}"
        );
        assert!(lines[2].contains("are written back"), "{log}");
    }

    #[test]
    fn an_outage_that_opens_the_breaker_is_logged_once_per_change() {
        let breaker = Breaker::new(2, Duration::from_millis(1));
        let log = logged(|| {
            for _ in 0..4 {
                breaker.record_failure(&"x");
            }
            breaker.half_open();
            for _ in 0..HALF_OPEN_TRIAL_SUCCESSES {
                breaker.record_success();
            }
            breaker.close();
        });
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 4, "{log}");
        assert!(
            lines[0].contains("primary unavailable; calls it fails"),
            "{log}"
        );
        assert!(lines[1].contains("circuit breaker opened"), "{log}");
        assert!(
            lines[2].contains("primary answers again, circuit breaker half-open"),
            "{log}"
        );
        assert!(
            lines[3].contains("write-back complete, circuit breaker closed"),
            "{log}"
        );
        assert!(!log.contains("stayed closed"), "{log}");
    }

    #[test]
    fn a_breaker_opened_by_the_first_failure_says_only_that() {
        let breaker = Breaker::new(1, Duration::from_secs(1));
        let log = logged(|| breaker.record_failure(&"x"));
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("circuit breaker opened"), "{log}");
    }

    #[test]
    fn opens_after_threshold_consecutive_failures_only() {
        let breaker = Breaker::new(3, Duration::from_secs(1));
        breaker.record_failure(&"x");
        breaker.record_failure(&"x");
        breaker.record_success();
        breaker.record_failure(&"x");
        breaker.record_failure(&"x");
        assert_eq!(
            breaker.route(),
            Route::Primary,
            "a success resets the count"
        );
        breaker.record_failure(&"x");
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.route(), Route::Memory);
        assert_eq!(breaker.counters.opened.load(Ordering::Relaxed), 1);
        breaker.record_failure(&"x");
        assert_eq!(breaker.counters.opened.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn probes_wait_for_the_cool_down_then_half_open_then_close() {
        let breaker = Breaker::new(1, Duration::from_secs(60));
        breaker.record_failure(&"x");
        assert!(!breaker.probe_due(Instant::now()), "cool-down not over");
        assert!(breaker.probe_due(Instant::now() + Duration::from_secs(61)));
        breaker.half_open();
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let admitted = (0..4 * HALF_OPEN_ADMIT_EVERY)
            .filter(|_| breaker.route() == Route::Mixed)
            .count();
        assert_eq!(admitted, 4, "a bounded share goes to the primary");
        for _ in 0..HALF_OPEN_TRIAL_SUCCESSES {
            breaker.record_success();
        }
        assert!(
            (0..8).all(|_| breaker.route() == Route::Mixed),
            "after the trial, every call"
        );
        breaker.close();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.last_recovery().is_some() && breaker.last_outage().is_some());
        assert_eq!(breaker.counters.closed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_failure_while_half_open_reopens_at_once() {
        let breaker = Breaker::new(5, Duration::from_millis(1));
        for _ in 0..5 {
            breaker.record_failure(&"x");
        }
        breaker.half_open();
        breaker.record_failure(&"x");
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.counters.opened.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_trip_opens_at_once_and_probes_after_the_cool_down() {
        let breaker = Breaker::new(5, Duration::from_secs(60));
        breaker.trip(&"connection refused");
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.route(), Route::Memory);
        assert_eq!(breaker.counters.opened.load(Ordering::Relaxed), 1);
        assert!(!breaker.probe_due(Instant::now()), "cool-down not over");
        assert!(breaker.probe_due(Instant::now() + Duration::from_secs(61)));
        breaker.trip(&"again");
        assert_eq!(breaker.counters.opened.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn draining_routes_mixed_and_reports_closed() {
        let breaker = Breaker::new(5, Duration::from_secs(1));
        breaker.mark_draining();
        assert_eq!(breaker.route(), Route::Mixed);
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.close();
        assert_eq!(breaker.route(), Route::Primary);
        assert_eq!(breaker.counters.closed.load(Ordering::Relaxed), 0);
    }
}
