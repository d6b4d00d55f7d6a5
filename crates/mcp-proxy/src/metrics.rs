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

/// The proxy's counters. Shared by every request; cheap to update.
#[derive(Debug, Default)]
pub struct Metrics {
    sessions_created: AtomicU64,
    frames_client_to_server: AtomicU64,
    frames_server_to_client: AtomicU64,
    frames_not_recorded: AtomicU64,
    store_operations: Mutex<BTreeMap<&'static str, LatencyHistogram>>,
    requests: Mutex<BTreeMap<(String, u16), u64>>,
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
    pub fn request(&self, method: &str, status: u16) {
        *self
            .requests
            .lock()
            .entry((method.to_owned(), status))
            .or_default() += 1;
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
        self.render_store_operations(&mut out);
        self.render_requests(&mut out);
        out
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
        metrics.request("POST", 200);
        let text = metrics.render(Some(3));
        for expected in [
            "mcp_proxy_sessions_created_total 1",
            "mcp_proxy_active_sessions 3",
            "mcp_proxy_frames_appended_total{direction=\"client_to_server\"} 1",
            "mcp_proxy_store_operation_duration_seconds_bucket{operation=\"get\",le=\"0.0025\"} 1",
            "mcp_proxy_store_operation_duration_seconds_bucket{operation=\"get\",le=\"+Inf\"} 2",
            "mcp_proxy_store_operation_errors_total{operation=\"get\"} 1",
            "mcp_proxy_http_requests_total{method=\"POST\",status=\"200\"} 1",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }
}
