//! Logs and traces: the log subscriber every run installs, the spans of the
//! request path (one per client request, with the store operations and the
//! upstream call as children), and, with the cargo feature `otel`, their export
//! over OTLP/HTTP with the client's W3C `traceparent` continued and a fresh one
//! (the upstream call's span) sent upstream.
//!
//! The spans are at `debug` level under the target `mcp_proxy::trace`: the log
//! output (filtered by `RUST_LOG`, default `info`) does not show them unless
//! asked, and without an exporter they cost one disabled-callsite check each.
//! The exporter starts when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and reads the standard
//! `OTEL_*` variables (headers, timeout, batch delay, service name).

use std::io::IsTerminal;

use axum::http::HeaderMap;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// The target of the request path's spans.
pub const TARGET: &str = "mcp_proxy::trace";

/// Keeps the trace exporter running; dropping it flushes and stops it.
#[must_use = "dropping the guard stops the trace exporter"]
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("mcp-proxy: flushing traces failed: {error}");
            }
        }
    }
}

/// Installs the process's subscriber: logs to stderr filtered by `RUST_LOG`
/// (else `default_filter`, e.g. `info`), and with the `otel` feature and an OTLP endpoint in the
/// environment, the trace exporter. Call it once, outside the async runtime (the
/// exporter's HTTP client is a blocking one, on the batch processor's thread).
pub fn init(default_filter: &str) -> TelemetryGuard {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(log_filter(
            std::env::var(EnvFilter::DEFAULT_ENV).ok().as_deref(),
            default_filter,
        ));
    let registry = tracing_subscriber::registry().with(logs);
    #[cfg(feature = "otel")]
    {
        let (layer, guard) = otel::layer();
        registry.with(layer).init();
        guard
    }
    #[cfg(not(feature = "otel"))]
    {
        registry.init();
        TelemetryGuard::default()
    }
}

/// Libraries whose warnings repeat, once per pooled connection, what the
/// proxy reports itself in one line (fred: `Broadcasting error ... Connection
/// closed` from each of the pool's clients when Redis goes away, while the
/// store's breaker and the failed requests say so): shown from `error` up unless
/// `RUST_LOG` names them (`RUST_LOG=info,fred=debug`).
const QUIETED: &[(&str, &str)] = &[("fred", "fred=error")];

/// `rust_log` (the `RUST_LOG` value) when it parses, else `default_filter`,
/// with the [`QUIETED`] libraries' directives added unless it names them.
fn log_filter(rust_log: Option<&str>, default_filter: &str) -> EnvFilter {
    let text = rust_log
        .filter(|text| EnvFilter::try_new(text).is_ok())
        .unwrap_or(default_filter);
    let mut filter = EnvFilter::new(text);
    for (target, directive) in QUIETED {
        if !text.contains(target) {
            if let Ok(directive) = directive.parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

/// The span of one client request; its parent is the client's `traceparent`
/// when the `otel` feature exports traces.
pub fn request_span(method: &axum::http::Method, path: &str, headers: &HeaderMap) -> tracing::Span {
    let span = tracing::debug_span!(
        target: TARGET,
        "request",
        otel.name = %format!("{method} {path}"),
        otel.kind = "server",
        http.request.method = %method,
        url.path = %path,
        http.response.status_code = tracing::field::Empty,
    );
    #[cfg(feature = "otel")]
    otel::continue_trace(&span, headers);
    #[cfg(not(feature = "otel"))]
    let _ = headers;
    span
}

/// The span of one session store operation.
pub fn store_span(operation: &'static str) -> tracing::Span {
    tracing::debug_span!(target: TARGET, "session_store", otel.name = %format!("session_store {operation}"), db.operation.name = operation)
}

/// The span of one upstream call; with the `otel` feature, `headers` get its
/// `traceparent` (replacing the client's, which is its ancestor).
pub fn upstream_span(method: &axum::http::Method, headers: &mut HeaderMap) -> tracing::Span {
    let span = tracing::debug_span!(
        target: TARGET,
        "upstream",
        otel.name = %format!("upstream {method}"),
        otel.kind = "client",
        http.request.method = %method,
    );
    #[cfg(feature = "otel")]
    otel::inject(&span, headers);
    #[cfg(not(feature = "otel"))]
    let _ = headers;
    span
}

#[cfg(feature = "otel")]
mod otel {
    //! The OTLP exporter and the W3C trace context propagation.

    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    use opentelemetry::{
        propagation::{Extractor, Injector, TextMapPropagator},
        trace::TracerProvider,
    };
    use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::{filter::Targets, registry::LookupSpan, Layer};

    use super::{TelemetryGuard, TARGET};

    fn endpoint_configured() -> bool {
        [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
    }

    /// The exporting layer (only the request path's spans), or none when no
    /// endpoint is configured or the exporter cannot be built (logged).
    pub(super) fn layer<S>() -> (Option<impl Layer<S>>, TelemetryGuard)
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        if !endpoint_configured() {
            return (None, TelemetryGuard::default());
        }
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => exporter,
            Err(error) => {
                eprintln!("mcp-proxy: traces are not exported: the OTLP exporter failed: {error}");
                return (None, TelemetryGuard::default());
            }
        };
        // The builder reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("mcp-proxy");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("mcp-proxy");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target(TARGET, tracing::Level::DEBUG));
        (
            Some(layer),
            TelemetryGuard {
                provider: Some(provider),
            },
        )
    }

    struct Headers<'a>(&'a HeaderMap);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|value| value.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(HeaderName::as_str).collect()
        }
    }

    struct HeadersMut<'a>(&'a mut HeaderMap);

    impl Injector for HeadersMut<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(key.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }

    /// Makes the client's `traceparent` (and `tracestate`) the span's parent.
    pub(super) fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
        if headers.contains_key("traceparent") {
            let parent = TraceContextPropagator::new().extract(&Headers(headers));
            // Fails only when the span is not exported (disabled): nothing to do.
            let _ = span.set_parent(parent);
        }
    }

    /// Writes the span's context into `headers` as `traceparent`.
    pub(super) fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
        if span.is_disabled() {
            return;
        }
        TraceContextPropagator::new().inject_context(&span.context(), &mut HeadersMut(headers));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fred_warnings_are_quieted_unless_rust_log_names_fred() {
        for (rust_log, quieted) in [
            (None, true),
            (Some("info"), true),
            (Some("debug,mcp_proxy=trace"), true),
            (Some("info,fred=warn"), false),
            (Some("[not a filter"), true),
        ] {
            let filter = log_filter(rust_log, "info").to_string();
            assert_eq!(
                filter.contains("fred=error"),
                quieted,
                "RUST_LOG={rust_log:?}: {filter}"
            );
        }
    }
}
