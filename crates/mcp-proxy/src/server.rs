//! The server loop: the MCP and admin listeners, the connection cap, header-read
//! and idle timeouts, TCP_NODELAY, and graceful shutdown on SIGTERM/SIGINT.
//!
//! `axum::serve` has no header read timeout, so connections are served with
//! hyper-util's `auto::Builder` (HTTP/1.1 only, as `axum::serve` served it) under a
//! watchdog that sees every byte read and every request in flight:
//!
//! - a connection whose request head is not complete `header_read_timeout` after
//!   it began (or after the connection opened) is closed (slowloris);
//! - a connection with no request in flight and no bytes moving for
//!   `idle_timeout` is shut down gracefully;
//! - at most `max_connections` connections per listener are served; further ones
//!   wait in the kernel's accept queue until one closes.

use std::{
    io::Write,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{body::Body, extract::ConnectInfo, Router};
use hyper::body::{Frame, Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use session_store::{PurgeTask, SessionStore, StorageConfig};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{watch, Semaphore},
};
use tower_service::Service;

use crate::{
    app::{admin_router, router},
    config::{BindingKey, ProxyConfig, ProxySettings},
    metrics::{Metrics, Rejection},
    state::AppState,
};

/// What bounds the connections of one listener (from `[proxy]`).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// `header_read_timeout`.
    pub header_read_timeout: Duration,
    /// `idle_timeout`.
    pub idle_timeout: Duration,
    /// `max_connections`.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// The limits `settings` configure.
    pub fn of(settings: &ProxySettings) -> Self {
        ConnectionLimits {
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.idle_timeout,
            max_connections: settings.max_connections,
        }
    }
}

/// The least time the queued recordings get on a graceful stop, even when the
/// in-flight requests used up `shutdown_grace`.
pub const MIN_DRAIN: Duration = Duration::from_secs(1);

/// Builds the store, binds the listeners and serves until SIGTERM/SIGINT, then
/// lets in-flight requests finish and writes the recordings still queued, in
/// `shutdown_grace` together (the writing gets at least [`MIN_DRAIN`]).
///
/// # Errors
///
/// A message naming what failed: the store, an address that cannot be bound.
pub async fn run(config: ProxyConfig) -> Result<(), String> {
    let store = session_store::build(&config.storage)
        .await
        .map_err(|error| format!("cannot open the session store: {error}"))?;
    let listener = bind(config.proxy.listen, "proxy.listen").await?;
    let admin_listener = match config.proxy.admin_listen {
        Some(address) => Some(bind(address, "proxy.admin_listen").await?),
        None => None,
    };
    warn_about(&config.proxy);
    let (stop, stopping) = watch::channel(false);
    let grace = config.proxy.shutdown_grace;
    let limits = ConnectionLimits::of(&config.proxy);
    let state = Arc::new(AppState::new(store, config.proxy, stopping.clone())?);
    let purge = PurgeTask::spawn(state.store.clone(), config.storage.purge_interval);

    let store_state = store_state(&config.storage, state.store.as_ref()).await;
    announce(
        "mcp-proxy listening",
        &listener,
        "mcp",
        Some((config.storage.backend.as_str(), &store_state)),
    );
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(serve(
        listener,
        router(state.clone()),
        limits,
        state.metrics.clone(),
        stopping.clone(),
    ));
    if let Some(admin_listener) = admin_listener {
        announce("mcp-proxy admin listening", &admin_listener, "admin", None);
        servers.spawn(serve(
            admin_listener,
            admin_router(state.clone()),
            limits,
            state.metrics.clone(),
            stopping.clone(),
        ));
    }
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop.send(true);
    });
    let mut stopping_for_grace = stopping;
    let stopped_at = std::sync::OnceLock::new();
    let grace_expired = async {
        let _ = stopping_for_grace.wait_for(|stopping| *stopping).await;
        let _ = stopped_at.set(Instant::now());
        tokio::time::sleep(grace).await;
    };
    let all_served = async {
        while let Some(served) = servers.join_next().await {
            if let Err(error) = served {
                tracing::warn!(%error, "a listener's task failed");
            }
        }
    };
    tokio::select! {
        () = all_served => {}
        () = grace_expired => {
            tracing::warn!(?grace, "in-flight requests still running after the shutdown grace period; exiting");
        }
    }
    // Replies already sent whose recording is still queued: write them before
    // exiting, within what is left of the grace period.
    let left = stopped_at
        .get()
        .map_or(grace, |at| grace.saturating_sub(at.elapsed()))
        .max(MIN_DRAIN);
    if tokio::time::timeout(left, state.recorder.flush())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "replies still being recorded after the shutdown grace period; exiting without them"
        );
    }
    purge.shutdown().await;
    Ok(())
}

async fn bind(address: SocketAddr, key: &str) -> Result<TcpListener, String> {
    TcpListener::bind(address)
        .await
        .map_err(|error| format!("cannot listen on {address} ({key}): {error}"))
}

fn warn_about(settings: &ProxySettings) {
    if matches!(settings.binding_key, BindingKey::Derived(_)) {
        tracing::warn!(
            "proxy.binding_secret is not set: session bindings are keyed by a salt derived from the storage key prefix and the upstream URL; set MCP_PROXY_BINDING_SECRET (the same on every instance) so they cannot be recomputed by whoever knows both"
        );
    }
    if let Some(admin) = settings.admin_listen {
        if settings.admin_token.is_none() && !admin.ip().is_loopback() {
            tracing::warn!(%admin, "proxy.admin_listen is not a loopback address and proxy.admin_token is not set: anyone who can reach it can read recorded messages");
        }
    }
}

/// Serves `router` on `listener` under `limits` until `stop` turns true, then
/// waits for the open connections to finish (graceful shutdown).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let builder = Arc::new(connection_builder(&limits));
    // Validated to fit (proxy.max_connections); the fallback only keeps this total.
    let max = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(max as usize));
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                metrics.connection_waited();
                tracing::debug!(
                    max_connections = limits.max_connections,
                    "connection cap reached; waiting for a connection to close"
                );
                tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = stopped(&mut stop) => break,
                }
            }
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: wait rather than spin (as axum::serve does).
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        disable_nagle(&stream);
        metrics.connection(true);
        let connection = Connection {
            router: router.clone(),
            builder: builder.clone(),
            limits,
            metrics: metrics.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            connection.serve(stream, remote).await;
            drop(permit);
        });
    }
    // Stop accepting: new connections are refused rather than left in the queue.
    drop(listener);
    // Every connection holds a permit: all of them back means all closed.
    let _ = permits.acquire_many(max).await;
}

fn connection_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    // The watchdog below enforces both timeouts; hyper's own HTTP/1 header timer
    // (which also runs while a keep-alive connection waits) is a backstop.
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_read_timeout + limits.idle_timeout);
    builder
}

/// One accepted connection and what serving it needs.
struct Connection {
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn serve(mut self, stream: TcpStream, remote: SocketAddr) {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let router = self.router.clone();
        let service_activity = activity.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = service_activity.request_started();
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(remote));
            let mut router = router.clone();
            async move {
                let response = router.call(request).await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    Body::new(InFlightBody {
                        body,
                        _in_flight: in_flight,
                    })
                }))
            }
        });
        let connection = self.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        let check_every = (self
            .limits
            .header_read_timeout
            .min(self.limits.idle_timeout)
            / 4)
        .max(Duration::from_millis(10));
        let mut check = tokio::time::interval(check_every);
        let mut shutting_down = false;
        loop {
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(%error, "client connection ended with an error");
                    }
                    break;
                }
                () = stopped(&mut self.stop), if !shutting_down => {
                    connection.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
                _ = check.tick() => match activity.expired(&self.limits) {
                    Some(Expiry::HeaderRead) => {
                        self.metrics.rejected(Rejection::HeaderTimeout);
                        tracing::debug!(
                            timeout = ?self.limits.header_read_timeout,
                            "request head not received in time; closing the connection"
                        );
                        break;
                    }
                    Some(Expiry::Idle) if !shutting_down => {
                        connection.as_mut().graceful_shutdown();
                        shutting_down = true;
                    }
                    _ => {}
                },
            }
        }
        self.metrics.connection(false);
    }
}

/// Resolves when shutdown begins (or can no longer be signalled).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Sends each write at once. An SSE reply is several small writes; with Nagle's
/// algorithm the second one waits for the client's ACK, which Linux delays by
/// ~40 ms, so every streamed tool call would take 40 ms longer.
pub fn disable_nagle(connection: &TcpStream) {
    if let Err(error) = connection.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY on a client connection");
    }
}

/// The store's state at start, in the words `/healthz` uses: `ok`, or
/// `degraded: ...` (serving from memory while Redis is unreachable, or writing
/// back a journal), or `unavailable: ...`. Names Redis's address, never its
/// credentials.
async fn store_state(storage: &StorageConfig, store: &dyn SessionStore) -> String {
    match store.health().await {
        // Only Redis with `fallback_to_memory` answers as another backend
        // (`memory-fallback`) than configured.
        Ok(health) if health.backend != storage.backend.as_str() => format!(
            "degraded: serving from memory, Redis unreachable at {}; connecting in the background",
            storage.redis.addresses()
        ),
        Ok(health) if health.degraded => format!("degraded: {}", health.detail),
        Ok(_) => "ok".to_owned(),
        Err(error) => format!("unavailable: {error}"),
    }
}

/// Prints `<what> on <addr>` on stdout: one machine-readable line for scripts and
/// tests that start with port 0.
/// Logs and prints that `listener` (`mcp` or `admin`) accepts connections;
/// `store`: the session store's backend and [`store_state`], on the MCP
/// listener's line.
fn announce(what: &str, listener: &TcpListener, name: &'static str, store: Option<(&str, &str)>) {
    let Ok(address) = listener.local_addr() else {
        return;
    };
    let (backend, state) = store.unzip();
    // The runtime's size (`[proxy] worker_threads`): one worker uses at most
    // one core (docs/operations.md, "CPU per call and worker threads").
    let workers = tokio::runtime::Handle::try_current()
        .ok()
        .map(|runtime| runtime.metrics().num_workers());
    tracing::info!(%address, listener = name, backend, state, workers, "{what}");
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{what} on {address}");
    let _ = stdout.flush();
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// Why the watchdog ends a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// A request head started (or the connection opened) and did not complete
    /// within `header_read_timeout`.
    HeaderRead,
    /// No request in flight and no bytes moved for `idle_timeout`.
    Idle,
}

/// What the watchdog knows of one connection. Times are milliseconds since the
/// connection opened.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last_io: AtomicU64,
    /// When bytes of a request head arrived with no request in flight;
    /// [`NO_HEAD`] when none is pending.
    head_since: AtomicU64,
    in_flight: AtomicUsize,
}

const NO_HEAD: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            last_io: AtomicU64::new(0),
            // A connection is opened to send a request: its head is awaited from
            // the start.
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ =
                self.head_since
                    .compare_exchange(NO_HEAD, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(NO_HEAD, Ordering::Release);
        InFlight(self.clone())
    }

    fn expired(&self, limits: &ConnectionLimits) -> Option<Expiry> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = self.now();
        let since = |millis: u64| Duration::from_millis(now.saturating_sub(millis));
        let head = self.head_since.load(Ordering::Acquire);
        if head != NO_HEAD && since(head) >= limits.header_read_timeout {
            return Some(Expiry::HeaderRead);
        }
        (since(self.last_io.load(Ordering::Relaxed)) >= limits.idle_timeout).then_some(Expiry::Idle)
    }
}

/// A request in flight on a connection, until its response body is done.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.wrote();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it is done or dropped.
struct InFlightBody {
    body: Body,
    _in_flight: InFlight,
}

impl axum::body::HttpBody for InFlightBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A client socket whose reads and writes are reported to its [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(30),
            idle_timeout: Duration::from_millis(60),
            max_connections: 1,
        }
    }

    #[test]
    fn a_request_in_flight_never_expires_and_an_idle_connection_does() {
        let activity = Arc::new(Activity::new());
        let in_flight = activity.request_started();
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(activity.expired(&limits()), None);
        drop(in_flight);
        assert_eq!(activity.expired(&limits()), None);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(activity.expired(&limits()), Some(Expiry::Idle));
    }

    #[test]
    fn a_started_head_expires_after_the_header_read_timeout() {
        let activity = Arc::new(Activity::new());
        // Bytes of a head but no complete request.
        activity.read();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(activity.expired(&limits()), Some(Expiry::HeaderRead));
        // The head completes: the request is in flight, then done.
        drop(activity.request_started());
        assert_eq!(activity.expired(&limits()), None);
        activity.read();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(activity.expired(&limits()), Some(Expiry::HeaderRead));
    }
}
