//! Prometheus metrics, hand-rolled: a few counters and one latency histogram per
//! store operation, rendered in the text exposition format.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use parking_lot::Mutex;
use session_store::Direction;

/// Upper bounds (seconds) of the store latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default, Clone)]
struct LatencyHistogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    errors: u64,
    sum_seconds: f64,
}

/// Why the proxy gave up on a stream or a session it tried to keep alive: the
/// fixed label set of `mcp_proxy_streams_failed_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFailure {
    /// No upstream event id was recorded for the stream, so the upstream cannot be
    /// asked to resume it.
    NotResumable,
    /// The upstream refused (or could not be reached for) the GET with
    /// `Last-Event-ID` that resumes a stream.
    ResumeRefused,
    /// The upstream kept closing the stream without sending anything new for
    /// `upstream_poll_deadline`.
    PollDeadline,
    /// The upstream sent data that is not a valid SSE stream (an event too large).
    StreamRejected,
    /// Another instance took the stream's lease over; this one stopped relaying.
    LeaseLost,
    /// The upstream lost the session and it could not be re-created.
    RestoreFailed,
}

impl StreamFailure {
    /// Every reason, in label order.
    pub const ALL: [StreamFailure; 6] = [
        StreamFailure::NotResumable,
        StreamFailure::ResumeRefused,
        StreamFailure::PollDeadline,
        StreamFailure::StreamRejected,
        StreamFailure::LeaseLost,
        StreamFailure::RestoreFailed,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamFailure::NotResumable => "not_resumable",
            StreamFailure::ResumeRefused => "resume_refused",
            StreamFailure::PollDeadline => "poll_deadline",
            StreamFailure::StreamRejected => "stream_rejected",
            StreamFailure::LeaseLost => "lease_lost",
            StreamFailure::RestoreFailed => "restore_failed",
        }
    }

    fn index(self) -> usize {
        StreamFailure::ALL
            .iter()
            .position(|reason| *reason == self)
            .unwrap_or(0)
    }
}

/// The proxy's counters. Shared by every request; cheap to update.
#[derive(Debug, Default)]
pub struct Metrics {
    sessions_created: AtomicU64,
    frames_client_to_server: AtomicU64,
    frames_server_to_client: AtomicU64,
    frames_not_recorded: AtomicU64,
    stream_takeovers: AtomicU64,
    replay_gaps: AtomicU64,
    upstream_sessions_restored: AtomicU64,
    streams_failed: [AtomicU64; StreamFailure::ALL.len()],
    store_operations: Mutex<BTreeMap<&'static str, LatencyHistogram>>,
    requests: Mutex<BTreeMap<(&'static str, StatusLabel), u64>>,
    rejected: [AtomicU64; Rejection::ALL.len()],
    connections_open: AtomicU64,
    connections_waited: AtomicU64,
    /// The 2026-07-28 request path's counters.
    pub modern: ModernMetrics,
}

/// Why the proxy refused a client (the `reason` label of
/// `mcp_proxy_rejected_total`, a fixed set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// `Origin` not in `allowed_origins` (403).
    Origin,
    /// `max_sessions_per_client` reached (429).
    SessionsPerClient,
    /// `initialize_rate` exceeded (429).
    InitializeRate,
    /// A connection closed because its request head did not arrive within
    /// `header_read_timeout`.
    HeaderTimeout,
    /// Admin listener request without the right `admin_token` (401).
    AdminToken,
}

impl Rejection {
    /// Every reason, in label order.
    pub const ALL: [Rejection; 5] = [
        Rejection::Origin,
        Rejection::SessionsPerClient,
        Rejection::InitializeRate,
        Rejection::HeaderTimeout,
        Rejection::AdminToken,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Origin => "origin",
            Rejection::SessionsPerClient => "sessions_per_client",
            Rejection::InitializeRate => "initialize_rate",
            Rejection::HeaderTimeout => "header_timeout",
            Rejection::AdminToken => "admin_token",
        }
    }
}

/// The `method` label: the methods of RFC 9110 a client of the proxy uses, any
/// other method `other`, so clients cannot grow the label set.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The `status` label: the exact code for the statuses the proxy and MCP servers
/// answer with, else the class (`2xx` ... `5xx`, `other`), so upstreams cannot grow
/// the label set either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StatusLabel(u16);

impl StatusLabel {
    const EXACT: [u16; 20] = [
        200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 406, 413, 415, 429, 500, 502,
        503, 504,
    ];

    /// The label of `status`.
    pub fn of(status: u16) -> Self {
        if Self::EXACT.contains(&status) {
            StatusLabel(status)
        } else if (100..600).contains(&status) {
            // 1..5: the class, kept apart from exact codes by being below 100.
            StatusLabel(status / 100)
        } else {
            StatusLabel(0)
        }
    }
}

impl std::fmt::Display for StatusLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => f.write_str("other"),
            class @ 1..=5 => write!(f, "{class}xx"),
            code => write!(f, "{code}"),
        }
    }
}

impl Metrics {
    /// Counts a session created in the store.
    pub fn session_created(&self) {
        self.sessions_created.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a frame appended to the store.
    pub fn frame_appended(&self, direction: Direction) {
        let counter = match direction {
            Direction::ClientToServer => &self.frames_client_to_server,
            Direction::ServerToClient => &self.frames_server_to_client,
            // Only decoded from records of a newer release; the proxy never
            // appends one.
            Direction::Unknown => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a stream this instance took over from one whose lease lapsed.
    pub fn stream_takeover(&self) {
        self.stream_takeovers.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a replay that found frames after the client's `Last-Event-ID`
    /// trimmed or deleted from the store (the client missed events).
    pub fn replay_gap(&self) {
        self.replay_gaps.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an upstream session re-created after the upstream lost it.
    pub fn upstream_session_restored(&self) {
        self.upstream_sessions_restored
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a stream or session the proxy gave up on, by reason.
    pub fn stream_failed(&self, reason: StreamFailure) {
        self.streams_failed[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message forwarded without being recorded (store error, too large).
    pub fn frame_not_recorded(&self) {
        self.frames_not_recorded.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long one store operation took and whether it failed.
    pub fn store_operation(&self, operation: &'static str, elapsed: Duration, failed: bool) {
        let seconds = elapsed.as_secs_f64();
        let mut operations = self.store_operations.lock();
        let histogram = operations.entry(operation).or_default();
        histogram.count += 1;
        histogram.sum_seconds += seconds;
        if failed {
            histogram.errors += 1;
        }
        for (bucket, bound) in histogram.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    /// Counts one answered HTTP request.
    pub fn request(&self, method: &axum::http::Method, status: u16) {
        *self
            .requests
            .lock()
            .entry((method_label(method), StatusLabel::of(status)))
            .or_default() += 1;
    }

    /// Counts one refused client (request or connection).
    pub fn rejected(&self, reason: Rejection) {
        let index = Rejection::ALL
            .iter()
            .position(|known| *known == reason)
            .unwrap_or(0);
        self.rejected[index].fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection was accepted (`true`) or closed (`false`).
    pub fn connection(&self, opened: bool) {
        if opened {
            self.connections_open.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Counts a time the accept loop found `max_connections` in use and waited.
    pub fn connection_waited(&self) {
        self.connections_waited.fetch_add(1, Ordering::Relaxed);
    }

    /// The metrics in Prometheus text format; `active_sessions` is the store's
    /// count at scrape time, when it could be read.
    pub fn render(&self, active_sessions: Option<u64>) -> String {
        let mut out = String::new();
        counter(
            &mut out,
            "mcp_proxy_sessions_created_total",
            "Sessions created by initialize through this instance.",
            self.sessions_created.load(Ordering::Relaxed),
        );
        if let Some(active) = active_sessions {
            let _ = writeln!(
                out,
                "# HELP mcp_proxy_active_sessions Live sessions in the store."
            );
            let _ = writeln!(out, "# TYPE mcp_proxy_active_sessions gauge");
            let _ = writeln!(out, "mcp_proxy_active_sessions {active}");
        }
        let _ = writeln!(
            out,
            "# HELP mcp_proxy_frames_appended_total Messages recorded in the store, by direction."
        );
        let _ = writeln!(out, "# TYPE mcp_proxy_frames_appended_total counter");
        for (direction, value) in [
            ("client_to_server", &self.frames_client_to_server),
            ("server_to_client", &self.frames_server_to_client),
        ] {
            let _ = writeln!(
                out,
                "mcp_proxy_frames_appended_total{{direction=\"{direction}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "mcp_proxy_frames_not_recorded_total",
            "Messages forwarded without being recorded (store error or too large).",
            self.frames_not_recorded.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "mcp_proxy_stream_takeovers_total",
            "Streams this instance took over after their relaying instance's lease lapsed.",
            self.stream_takeovers.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "mcp_proxy_replay_gaps_total",
            "Replays that found frames after the client's Last-Event-ID already trimmed or deleted from the store.",
            self.replay_gaps.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "mcp_proxy_upstream_sessions_restored_total",
            "Upstream sessions re-created from the recorded initialize after the upstream lost them.",
            self.upstream_sessions_restored.load(Ordering::Relaxed),
        );
        let failed = "mcp_proxy_streams_failed_total";
        let _ = writeln!(
            out,
            "# HELP {failed} Streams and sessions the proxy could not keep alive, by reason."
        );
        let _ = writeln!(out, "# TYPE {failed} counter");
        for reason in StreamFailure::ALL {
            let _ = writeln!(
                out,
                "{failed}{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.streams_failed[reason.index()].load(Ordering::Relaxed)
            );
        }
        self.render_store_operations(&mut out);
        self.render_requests(&mut out);
        self.render_limits(&mut out);
        self.modern.render(&mut out);
        out
    }

    fn render_limits(&self, out: &mut String) {
        let name = "mcp_proxy_rejected_total";
        let _ = writeln!(
            out,
            "# HELP {name} Clients refused by admission and limits, by reason."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (reason, count) in Rejection::ALL.iter().zip(&self.rejected) {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{}\"}} {}",
                reason.label(),
                count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP mcp_proxy_connections_open Client connections open (MCP and admin listeners)."
        );
        let _ = writeln!(out, "# TYPE mcp_proxy_connections_open gauge");
        let _ = writeln!(
            out,
            "mcp_proxy_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        counter(
            out,
            "mcp_proxy_connections_waited_total",
            "Times the accept loop waited because max_connections were open.",
            self.connections_waited.load(Ordering::Relaxed),
        );
    }

    fn render_store_operations(&self, out: &mut String) {
        let operations = self.store_operations.lock().clone();
        let name = "mcp_proxy_store_operation_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Latency of session store operations.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (operation, histogram) in &operations {
            for (bound, count) in LATENCY_BUCKETS.iter().zip(histogram.buckets) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{operation=\"{operation}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{operation=\"{operation}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "{name}_sum{{operation=\"{operation}\"}} {}",
                histogram.sum_seconds
            );
            let _ = writeln!(
                out,
                "{name}_count{{operation=\"{operation}\"}} {}",
                histogram.count
            );
        }
        let errors = "mcp_proxy_store_operation_errors_total";
        let _ = writeln!(out, "# HELP {errors} Failed session store operations.");
        let _ = writeln!(out, "# TYPE {errors} counter");
        for (operation, histogram) in &operations {
            let _ = writeln!(
                out,
                "{errors}{{operation=\"{operation}\"}} {}",
                histogram.errors
            );
        }
    }

    fn render_requests(&self, out: &mut String) {
        let requests = self.requests.lock().clone();
        let name = "mcp_proxy_http_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP requests answered, by method and status."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for ((method, status), count) in requests {
            let _ = writeln!(
                out,
                "{name}{{method=\"{method}\",status=\"{status}\"}} {count}"
            );
        }
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let metrics = Metrics::default();
        metrics.session_created();
        metrics.frame_appended(Direction::ClientToServer);
        metrics.store_operation("get", Duration::from_millis(2), false);
        metrics.store_operation("get", Duration::from_secs(5), true);
        metrics.request(&axum::http::Method::POST, 200);
        metrics.request(&axum::http::Method::from_bytes(b"BREW").unwrap(), 418);
        metrics.request(&axum::http::Method::from_bytes(b"X1").unwrap(), 799);
        metrics.rejected(Rejection::InitializeRate);
        metrics.stream_takeover();
        metrics.replay_gap();
        metrics.upstream_session_restored();
        metrics.stream_failed(StreamFailure::PollDeadline);
        let text = metrics.render(Some(3));
        for expected in [
            "mcp_proxy_sessions_created_total 1",
            "mcp_proxy_active_sessions 3",
            "mcp_proxy_frames_appended_total{direction=\"client_to_server\"} 1",
            "mcp_proxy_store_operation_duration_seconds_bucket{operation=\"get\",le=\"0.0025\"} 1",
            "mcp_proxy_store_operation_duration_seconds_bucket{operation=\"get\",le=\"+Inf\"} 2",
            "mcp_proxy_store_operation_errors_total{operation=\"get\"} 1",
            "mcp_proxy_http_requests_total{method=\"POST\",status=\"200\"} 1",
            "mcp_proxy_http_requests_total{method=\"other\",status=\"4xx\"} 1",
            "mcp_proxy_http_requests_total{method=\"other\",status=\"other\"} 1",
            "mcp_proxy_rejected_total{reason=\"initialize_rate\"} 1",
            "mcp_proxy_rejected_total{reason=\"origin\"} 0",
            "mcp_proxy_connections_open 0",
            "mcp_proxy_stream_takeovers_total 1",
            "mcp_proxy_replay_gaps_total 1",
            "mcp_proxy_upstream_sessions_restored_total 1",
            "mcp_proxy_streams_failed_total{reason=\"poll_deadline\"} 1",
            "mcp_proxy_streams_failed_total{reason=\"lease_lost\"} 0",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }
}

// The 2026-07-28 request path (crate::modern): header validation, cancellation,
// the shared result cache.

/// Counters of the 2026-07-28 request path.
#[derive(Debug, Default)]
pub struct ModernMetrics {
    header_mismatches: AtomicU64,
    cancelled: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    cache_stored: AtomicU64,
    cache_invalidations: AtomicU64,
}

impl ModernMetrics {
    /// Counts a request refused with `-32020` before reaching the upstream.
    pub fn header_mismatch(&self) {
        self.header_mismatches.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response stream the client closed (its upstream request dropped).
    pub fn cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request answered from the shared cache.
    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a cacheable request the cache could not answer.
    pub fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a result kept in the shared cache.
    pub fn cache_stored(&self) {
        self.cache_stored.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a notification that invalidated the upstream's cached results.
    pub fn cache_invalidated(&self) {
        self.cache_invalidations.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        counter(
            out,
            "mcp_proxy_header_mismatch_total",
            "2026-07-28 requests refused with -32020 (headers do not match the body).",
            self.header_mismatches.load(Ordering::Relaxed),
        );
        counter(
            out,
            "mcp_proxy_modern_cancelled_total",
            "2026-07-28 response streams closed by the client; the upstream request was dropped.",
            self.cancelled.load(Ordering::Relaxed),
        );
        let name = "mcp_proxy_cache_lookups_total";
        let _ = writeln!(
            out,
            "# HELP {name} Cacheable 2026-07-28 requests, by outcome in the shared cache."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (outcome, value) in [("hit", &self.cache_hits), ("miss", &self.cache_misses)] {
            let _ = writeln!(
                out,
                "{name}{{outcome=\"{outcome}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        counter(
            out,
            "mcp_proxy_cache_stored_total",
            "Results kept in the shared cache.",
            self.cache_stored.load(Ordering::Relaxed),
        );
        counter(
            out,
            "mcp_proxy_cache_invalidations_total",
            "List-changed or resource-updated notifications that invalidated the shared cache.",
            self.cache_invalidations.load(Ordering::Relaxed),
        );
    }
}
