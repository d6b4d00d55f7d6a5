//! The proxy's Prometheus metrics: counters, a gauge and one latency histogram
//! per store operation, kept and exposed (OpenMetrics text format) by
//! `prometheus-client`, the client library the Prometheus project maintains.
//! The label sets are fixed or bounded (see [`method_label`], [`StatusLabel`]),
//! so no client can grow them.
//!
//! A new counter is a `Counter` (or `Family<Labels, Counter>`) field of
//! [`Metrics`], registered in `Metrics::register` under its name without
//! `_total`, and a method that increments it.

use std::time::Duration;

use prometheus_client::{
    encoding::{self, EncodeLabelSet},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::Registry,
};
use session_store::Direction;

/// Upper bounds (seconds) of the store latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

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
}

/// The proxy's counters. Shared by every request; cheap to update (atomics,
/// and a short lock for a new label set).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sessions_created: Counter,
    frames_appended: Family<DirectionLabel, Counter>,
    frames_not_recorded: Counter,
    stream_takeovers: Counter,
    replay_gaps: Counter,
    upstream_sessions_restored: Counter,
    streams_failed: Family<ReasonLabel, Counter>,
    store_latency: Family<OperationLabel, Histogram, fn() -> Histogram>,
    store_errors: Family<OperationLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    connections_open: Gauge,
    connections_waited: Counter,
    /// The 2026-07-28 request path's counters.
    pub modern: ModernMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    status: StatusLabel,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Metrics {
            registry: Registry::default(),
            sessions_created: Counter::default(),
            frames_appended: Family::default(),
            frames_not_recorded: Counter::default(),
            stream_takeovers: Counter::default(),
            replay_gaps: Counter::default(),
            upstream_sessions_restored: Counter::default(),
            streams_failed: Family::default(),
            store_latency: Family::new_with_constructor(latency_histogram),
            store_errors: Family::default(),
            requests: Family::default(),
            rejected: Family::default(),
            connections_open: Gauge::default(),
            connections_waited: Counter::default(),
            modern: ModernMetrics::default(),
        };
        // Fixed label sets start at zero, so a rate() sees the first event.
        for direction in ["client_to_server", "server_to_client"] {
            let _ = metrics
                .frames_appended
                .get_or_create(&DirectionLabel { direction });
        }
        for reason in StreamFailure::ALL {
            let _ = metrics.streams_failed.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        for reason in Rejection::ALL {
            let _ = metrics.rejected.get_or_create(&ReasonLabel {
                reason: reason.label(),
            });
        }
        metrics.register();
        metrics
    }
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
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct StatusLabel(u16);

/// Written when `/metrics` is rendered, so counting a request allocates no text.
impl encoding::EncodeLabelValue for StatusLabel {
    fn encode(&self, encoder: &mut encoding::LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_fmt(encoder, format_args!("{self}"))
    }
}

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
    /// Registers every family in the registry `render` encodes. Counters are
    /// registered without `_total` and help texts without a final period: the
    /// exposition adds both (OpenMetrics).
    fn register(&mut self) {
        let registry = &mut self.registry;
        registry.register(
            "mcp_proxy_sessions_created",
            "Sessions created by initialize through this instance",
            self.sessions_created.clone(),
        );
        registry.register(
            "mcp_proxy_frames_appended",
            "Messages recorded in the store, by direction",
            self.frames_appended.clone(),
        );
        registry.register(
            "mcp_proxy_frames_not_recorded",
            "Messages forwarded without being recorded (store error or too large)",
            self.frames_not_recorded.clone(),
        );
        registry.register(
            "mcp_proxy_stream_takeovers",
            "Streams this instance took over after their relaying instance's lease lapsed",
            self.stream_takeovers.clone(),
        );
        registry.register(
            "mcp_proxy_replay_gaps",
            "Replays that found frames after the client's Last-Event-ID already trimmed or deleted from the store",
            self.replay_gaps.clone(),
        );
        registry.register(
            "mcp_proxy_upstream_sessions_restored",
            "Upstream sessions re-created from the recorded initialize after the upstream lost them",
            self.upstream_sessions_restored.clone(),
        );
        registry.register(
            "mcp_proxy_streams_failed",
            "Streams and sessions the proxy could not keep alive, by reason",
            self.streams_failed.clone(),
        );
        registry.register(
            "mcp_proxy_store_operation_duration_seconds",
            "Latency of session store operations",
            self.store_latency.clone(),
        );
        registry.register(
            "mcp_proxy_store_operation_errors",
            "Failed session store operations",
            self.store_errors.clone(),
        );
        registry.register(
            "mcp_proxy_http_requests",
            "HTTP requests answered, by method and status",
            self.requests.clone(),
        );
        registry.register(
            "mcp_proxy_rejected",
            "Clients refused by admission and limits, by reason",
            self.rejected.clone(),
        );
        registry.register(
            "mcp_proxy_connections_open",
            "Client connections open (MCP and admin listeners)",
            self.connections_open.clone(),
        );
        registry.register(
            "mcp_proxy_connections_waited",
            "Times the accept loop waited because max_connections were open",
            self.connections_waited.clone(),
        );
        self.modern.register(registry);
    }

    /// Counts a session created in the store.
    pub fn session_created(&self) {
        self.sessions_created.inc();
    }

    /// Counts a frame appended to the store.
    pub fn frame_appended(&self, direction: Direction) {
        let direction = match direction {
            Direction::ClientToServer => "client_to_server",
            Direction::ServerToClient => "server_to_client",
            // Only decoded from records of a newer release; the proxy never
            // appends one.
            Direction::Unknown => return,
        };
        self.frames_appended
            .get_or_create(&DirectionLabel { direction })
            .inc();
    }

    /// Counts a stream this instance took over from one whose lease lapsed.
    pub fn stream_takeover(&self) {
        self.stream_takeovers.inc();
    }

    /// Counts a replay that found frames after the client's `Last-Event-ID`
    /// trimmed or deleted from the store (the client missed events).
    pub fn replay_gap(&self) {
        self.replay_gaps.inc();
    }

    /// Counts an upstream session re-created after the upstream lost it.
    pub fn upstream_session_restored(&self) {
        self.upstream_sessions_restored.inc();
    }

    /// Counts a stream or session the proxy gave up on, by reason.
    pub fn stream_failed(&self, reason: StreamFailure) {
        self.streams_failed
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts a message forwarded without being recorded (store error, too large).
    pub fn frame_not_recorded(&self) {
        self.frames_not_recorded.inc();
    }

    /// Records how long one store operation took and whether it failed.
    pub fn store_operation(&self, operation: &'static str, elapsed: Duration, failed: bool) {
        let label = OperationLabel { operation };
        self.store_latency
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
        let errors = self.store_errors.get_or_create(&label);
        if failed {
            errors.inc();
        }
    }

    /// Counts one answered HTTP request.
    pub fn request(&self, method: &axum::http::Method, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                status: StatusLabel::of(status),
            })
            .inc();
    }

    /// Counts one refused client (request or connection).
    pub fn rejected(&self, reason: Rejection) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
    }

    /// A client connection was accepted (`true`) or closed (`false`).
    pub fn connection(&self, opened: bool) {
        if opened {
            self.connections_open.inc();
        } else {
            self.connections_open.dec();
        }
    }

    /// Counts a time the accept loop found `max_connections` in use and waited.
    pub fn connection_waited(&self) {
        self.connections_waited.inc();
    }

    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE`]);
    /// `active_sessions` is the store's count at scrape time, when it could be
    /// read.
    pub fn render(&self, active_sessions: Option<u64>) -> String {
        self.render_with_readings(active_sessions, &[])
    }

    /// [`render`](Self::render), followed by the store's own readings
    /// ([`session_store::Health::readings`]: a name ending `_total` is a
    /// counter, any other a gauge).
    pub fn render_with_readings(
        &self,
        active_sessions: Option<u64>,
        readings: &[(&'static str, f64)],
    ) -> String {
        let mut scrape = Registry::default();
        if let Some(active) = active_sessions {
            scrape.register(
                "mcp_proxy_active_sessions",
                "Live sessions in the store",
                ConstGauge::new(i64::try_from(active).unwrap_or(i64::MAX)),
            );
        }
        for (name, value) in readings {
            let help = "Session store reading (docs/proxy.md, Endpoints)";
            match name.strip_suffix("_total") {
                Some(counter) => scrape.register(counter, help, ConstCounter::new(*value)),
                None => scrape.register(*name, help, ConstGauge::new(*value)),
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would only cut the
        // scrape short, never panic.
        let _ = encoding::text::encode_registry(&mut out, &self.registry)
            .and_then(|()| encoding::text::encode_registry(&mut out, &scrape))
            .and_then(|()| encoding::text::encode_eof(&mut out));
        out
    }
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
        metrics.connection(true);
        let text = metrics.render_with_readings(
            Some(3),
            &[
                ("session_store_breaker_state", 2.0),
                ("session_store_fallback_quarantined_total", 1.0),
            ],
        );
        for expected in [
            "# TYPE session_store_breaker_state gauge",
            "session_store_breaker_state 2",
            "# TYPE session_store_fallback_quarantined counter",
            "session_store_fallback_quarantined_total 1",
            "mcp_proxy_sessions_created_total 1",
            "mcp_proxy_active_sessions 3",
            "mcp_proxy_frames_appended_total{direction=\"client_to_server\"} 1",
            "mcp_proxy_store_operation_duration_seconds_bucket{le=\"0.0025\",operation=\"get\"} 1",
            "mcp_proxy_store_operation_duration_seconds_bucket{le=\"+Inf\",operation=\"get\"} 2",
            "mcp_proxy_store_operation_errors_total{operation=\"get\"} 1",
            "mcp_proxy_http_requests_total{method=\"POST\",status=\"200\"} 1",
            "mcp_proxy_http_requests_total{method=\"other\",status=\"4xx\"} 1",
            "mcp_proxy_http_requests_total{method=\"other\",status=\"other\"} 1",
            "mcp_proxy_rejected_total{reason=\"initialize_rate\"} 1",
            "mcp_proxy_rejected_total{reason=\"origin\"} 0",
            "mcp_proxy_connections_open 1",
            "mcp_proxy_stream_takeovers_total 1",
            "mcp_proxy_replay_gaps_total 1",
            "mcp_proxy_upstream_sessions_restored_total 1",
            "mcp_proxy_streams_failed_total{reason=\"poll_deadline\"} 1",
            "mcp_proxy_streams_failed_total{reason=\"lease_lost\"} 0",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_exposition_parses_as_prometheus_text() {
        let metrics = Metrics::default();
        metrics.store_operation("append_frame", Duration::from_millis(3), false);
        metrics.request(&axum::http::Method::GET, 200);
        let text = metrics.render(Some(1));
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap();
        let value = |name: &str| {
            scrape
                .samples
                .iter()
                .find(|sample| sample.metric == name)
                .map(|sample| sample.value.clone())
        };
        assert!(matches!(
            value("mcp_proxy_active_sessions"),
            Some(prometheus_parse::Value::Gauge(v)) if v == 1.0
        ));
        match value("mcp_proxy_store_operation_duration_seconds") {
            Some(prometheus_parse::Value::Histogram(buckets)) => {
                assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1);
                assert_eq!(buckets.last().map(|b| b.count), Some(1.0));
            }
            other => panic!("no latency histogram: {other:?}"),
        }
        // OpenMetrics names a counter family without `_total` in `# TYPE`;
        // this parser (Prometheus' classic format) reads its samples untyped.
        assert!(value("mcp_proxy_http_requests_total").is_some());
    }
}

// The 2026-07-28 request path (crate::modern): header validation, cancellation,
// the shared result cache.

/// Counters of the 2026-07-28 request path.
#[derive(Debug)]
pub struct ModernMetrics {
    header_mismatches: Counter,
    cancelled: Counter,
    cache_lookups: Family<OutcomeLabel, Counter>,
    cache_stored: Counter,
    cache_invalidations: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

impl Default for ModernMetrics {
    fn default() -> Self {
        let metrics = ModernMetrics {
            header_mismatches: Counter::default(),
            cancelled: Counter::default(),
            cache_lookups: Family::default(),
            cache_stored: Counter::default(),
            cache_invalidations: Counter::default(),
        };
        for outcome in ["hit", "miss"] {
            let _ = metrics
                .cache_lookups
                .get_or_create(&OutcomeLabel { outcome });
        }
        metrics
    }
}

impl ModernMetrics {
    /// Counts a request refused with `-32020` before reaching the upstream.
    pub fn header_mismatch(&self) {
        self.header_mismatches.inc();
    }

    /// Counts a response stream the client closed (its upstream request dropped).
    pub fn cancelled(&self) {
        self.cancelled.inc();
    }

    /// Counts a request answered from the shared cache.
    pub fn cache_hit(&self) {
        self.cache_lookups
            .get_or_create(&OutcomeLabel { outcome: "hit" })
            .inc();
    }

    /// Counts a cacheable request the cache could not answer.
    pub fn cache_miss(&self) {
        self.cache_lookups
            .get_or_create(&OutcomeLabel { outcome: "miss" })
            .inc();
    }

    /// Counts a result kept in the shared cache.
    pub fn cache_stored(&self) {
        self.cache_stored.inc();
    }

    /// Counts a notification that invalidated the upstream's cached results.
    pub fn cache_invalidated(&self) {
        self.cache_invalidations.inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "mcp_proxy_header_mismatch",
            "2026-07-28 requests refused with -32020 (headers do not match the body)",
            self.header_mismatches.clone(),
        );
        registry.register(
            "mcp_proxy_modern_cancelled",
            "2026-07-28 response streams closed by the client; the upstream request was dropped",
            self.cancelled.clone(),
        );
        registry.register(
            "mcp_proxy_cache_lookups",
            "Cacheable 2026-07-28 requests, by outcome in the shared cache",
            self.cache_lookups.clone(),
        );
        registry.register(
            "mcp_proxy_cache_stored",
            "Results kept in the shared cache",
            self.cache_stored.clone(),
        );
        registry.register(
            "mcp_proxy_cache_invalidations",
            "List-changed or resource-updated notifications that invalidated the shared cache",
            self.cache_invalidations.clone(),
        );
    }
}
