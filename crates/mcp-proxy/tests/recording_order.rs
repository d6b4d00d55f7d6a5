//! What the proxy waits for between the upstream's reply and the client, in
//! process: the proxy's router on a free loopback port over a memory store
//! wrapped to watch (and hold back) appends, and a small upstream of the test's
//! own. The tests assert orders and counts, never timings; their timeouts only
//! guard against a deadlock.
//!
//! - A JSON reply reaches the client while its recording is held back, and is
//!   recorded once the store lets it (issue 14: no store round trip between the
//!   upstream's reply and the client).
//! - A graceful stop's flush waits for the recordings still queued.
//! - SSE events that arrived in one upstream chunk are recorded with one
//!   `append_frames` call and sent each with its own frame id.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use axum::{
    body::{Body, Bytes},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use futures::StreamExt;
use mcp_proxy::{
    app::router,
    config::{Overrides, ProxyConfig},
    server::{serve, ConnectionLimits},
    sse::{SseEvent, SseParser},
    state::AppState,
};
use serde_json::{json, Value};
use session_store::{
    Cursor, Direction, Frame, FrameId, FramePage, Health, KvCondition, KvEntry, KvKey, KvPut,
    MemoryStore, NewSession, Page, Result, Session, SessionId, SessionStore, StoreSettings,
    StoredFrame,
};
use tokio::sync::{watch, Notify};

/// Longest wait for anything in these tests: a deadlock guard, not a timing.
const GUARD: Duration = Duration::from_secs(30);

/// A store that forwards every call, counts the appends of server-to-client
/// frames (calls and frames per call), and, while its gate is closed, holds
/// such appends back until it opens.
#[derive(Debug)]
struct WatchedStore {
    inner: Arc<dyn SessionStore>,
    open: watch::Receiver<bool>,
    /// Frames per call of every append of server-to-client frames, by method.
    appends: Mutex<Vec<(&'static str, usize)>>,
    /// Told whenever an append waits at the closed gate.
    held: Arc<Notify>,
}

fn memory_store() -> MemoryStore {
    MemoryStore::new(StoreSettings::default()).unwrap()
}

/// The switch of a [`WatchedStore`]'s gate.
struct Gate(watch::Sender<bool>);

impl Gate {
    fn close(&self) {
        self.0.send_replace(false);
    }
    fn open(&self) {
        self.0.send_replace(true);
    }
}

impl WatchedStore {
    fn over(inner: Arc<dyn SessionStore>) -> (Arc<WatchedStore>, Gate) {
        let (gate, open) = watch::channel(true);
        let store = Arc::new(WatchedStore {
            inner,
            open,
            appends: Mutex::new(Vec::new()),
            held: Arc::new(Notify::new()),
        });
        (store, Gate(gate))
    }

    fn memory() -> (Arc<WatchedStore>, Gate) {
        WatchedStore::over(Arc::new(memory_store()))
    }

    async fn watch_append(&self, method: &'static str, frames: &[&Frame]) {
        if !frames
            .iter()
            .any(|frame| frame.direction == Direction::ServerToClient)
        {
            return;
        }
        self.appends.lock().unwrap().push((method, frames.len()));
        let mut open = self.open.clone();
        if !*open.borrow() {
            self.held.notify_one();
            open.wait_for(|open| *open).await.unwrap();
        }
    }

    fn appends(&self) -> Vec<(&'static str, usize)> {
        self.appends.lock().unwrap().clone()
    }
}

#[async_trait]
impl SessionStore for WatchedStore {
    async fn create(&self, new: NewSession) -> Result<Session> {
        self.inner.create(new).await
    }
    async fn get(&self, id: &SessionId) -> Result<Session> {
        self.inner.get(id).await
    }
    async fn get_many(&self, ids: &[SessionId]) -> Result<Vec<Option<Session>>> {
        self.inner.get_many(ids).await
    }
    async fn update(&self, session: &Session) -> Result<Session> {
        self.inner.update(session).await
    }
    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.inner.touch(id).await
    }
    async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.inner.delete(id).await
    }
    async fn list(&self, cursor: Option<&Cursor>, limit: usize) -> Result<Page<Session>> {
        self.inner.list(cursor, limit).await
    }
    async fn count(&self) -> Result<u64> {
        self.inner.count().await
    }
    async fn append_frame(&self, id: &SessionId, frame: Frame) -> Result<FrameId> {
        self.watch_append("append_frame", &[&frame]).await;
        self.inner.append_frame(id, frame).await
    }
    async fn append_frames(&self, id: &SessionId, frames: Vec<Frame>) -> Result<Vec<FrameId>> {
        self.watch_append("append_frames", &frames.iter().collect::<Vec<_>>())
            .await;
        self.inner.append_frames(id, frames).await
    }
    async fn read_frames(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<Vec<StoredFrame>> {
        self.inner.read_frames(id, after, limit).await
    }
    async fn read_frames_page(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<FramePage> {
        self.inner.read_frames_page(id, after, limit).await
    }
    async fn count_frames(&self, id: &SessionId) -> Result<u64> {
        self.inner.count_frames(id).await
    }
    async fn delete_frames(&self, id: &SessionId) -> Result<u64> {
        self.inner.delete_frames(id).await
    }
    async fn purge_expired(&self) -> Result<u64> {
        self.inner.purge_expired().await
    }
    async fn health(&self) -> Result<Health> {
        self.inner.health().await
    }
    async fn kv_get(&self, key: &KvKey) -> Result<Option<KvEntry>> {
        self.inner.kv_get(key).await
    }
    async fn kv_put(
        &self,
        key: &KvKey,
        value: &[u8],
        ttl: Duration,
        condition: KvCondition,
    ) -> Result<KvPut> {
        self.inner.kv_put(key, value, ttl, condition).await
    }
    async fn kv_delete(&self, key: &KvKey, condition: KvCondition) -> Result<bool> {
        self.inner.kv_delete(key, condition).await
    }
}

/// The upstream's SSE reply to the `burst` tool, written as one chunk: a
/// priming event, two progress notifications and the result.
fn burst_reply(id: &Value) -> String {
    let progress = |n: u64| {
        json!({"jsonrpc":"2.0","method":"notifications/progress",
               "params":{"progressToken":"t","progress":n}})
    };
    let result =
        json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":"burst done"}]}});
    format!(
        "id: up-0\ndata:\n\nid: up-1\ndata: {}\n\nid: up-2\ndata: {}\n\nid: up-3\ndata: {}\n\n",
        progress(1),
        progress(2),
        result
    )
}

/// The test's upstream: sessions, JSON replies, and the `burst` tool's SSE reply.
async fn upstream_post(body: Bytes) -> Response {
    let message: Value = serde_json::from_slice(&body).unwrap();
    let id = message["id"].clone();
    match message["method"].as_str() {
        Some("initialize") => (
            [("mcp-session-id", "upstream-1")],
            axum::Json(json!({"jsonrpc":"2.0","id":id,"result":{
                "protocolVersion":"2025-06-18","capabilities":{"tools":{}},
                "serverInfo":{"name":"recording-order-upstream","version":"1"}}})),
        )
            .into_response(),
        Some("tools/call") if message["params"]["name"] == "burst" => Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from(burst_reply(&id)))
            .unwrap(),
        Some("tools/call") => axum::Json(json!({"jsonrpc":"2.0","id":id,"result":{
            "content":[{"type":"text","text":"json reply"}]}}))
        .into_response(),
        _ => StatusCode::ACCEPTED.into_response(),
    }
}

/// The proxy in this test's runtime, stopped when dropped.
struct Proxy {
    address: SocketAddr,
    state: Arc<AppState>,
    _stop: watch::Sender<bool>,
    _upstream: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// The proxy over `store` (metered, and what its recorder writes to); with
    /// `watch_request_path` the store the request path uses is also wrapped,
    /// outside the metering, and the wrapper returned: it sees each call as the
    /// relay makes it.
    async fn start(
        store: Arc<dyn SessionStore>,
        watch_request_path: bool,
    ) -> (Proxy, Option<Arc<WatchedStore>>) {
        let upstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_address = upstream_listener.local_addr().unwrap();
        let upstream = tokio::spawn(async move {
            let app = Router::new().route("/mcp", post(upstream_post));
            axum::serve(upstream_listener, app).await.unwrap();
        });
        let config = ProxyConfig::from_toml_str(
            &format!("[proxy]\nupstream = \"http://{upstream_address}/mcp\"\n"),
            &Overrides::default(),
        )
        .unwrap();
        let (stop, stopping) = watch::channel(false);
        let limits = ConnectionLimits::of(&config.proxy);
        let mut state = AppState::new(store, config.proxy, stopping.clone()).unwrap();
        let mut watcher = None;
        if watch_request_path {
            let (outer, _gate) = WatchedStore::over(state.store.clone());
            state.store = outer.clone();
            watcher = Some(outer);
        }
        let state = Arc::new(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            router(state.clone()),
            limits,
            state.metrics.clone(),
            stopping,
        ));
        let proxy = Proxy {
            address,
            state,
            _stop: stop,
            _upstream: upstream,
        };
        (proxy, watcher)
    }

    async fn post(&self, session: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(format!("http://{}/mcp", self.address))
            .header(header::ACCEPT, "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(body);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        tokio::time::timeout(GUARD, request.send())
            .await
            .expect("the proxy answered")
            .unwrap()
    }

    /// Initializes a session; its proxy session id.
    async fn initialize(&self) -> String {
        let reply = self
            .post(
                None,
                &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                    "protocolVersion":"2025-06-18","capabilities":{},
                    "clientInfo":{"name":"recording-order","version":"1"}}}),
            )
            .await;
        assert_eq!(reply.status(), 200);
        let session = reply.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let initialized = self
            .post(
                Some(&session),
                &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
            )
            .await;
        assert_eq!(initialized.status(), 202);
        session
    }

    async fn call(&self, session: &str, id: u64, tool: &str) -> reqwest::Response {
        self.post(
            Some(session),
            &json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{}}}),
        )
        .await
    }

    async fn frames(&self, session: &str) -> Vec<StoredFrame> {
        self.state
            .store
            .read_frames(&SessionId::new(session).unwrap(), None, 1_000)
            .await
            .unwrap()
    }
}

fn server_frames(frames: &[StoredFrame]) -> Vec<&StoredFrame> {
    frames
        .iter()
        .filter(|stored| stored.frame.direction == Direction::ServerToClient)
        .collect()
}

#[tokio::test]
async fn a_json_reply_reaches_the_client_while_its_recording_is_held_back() {
    let (store, gate) = WatchedStore::memory();
    let (proxy, _) = Proxy::start(store.clone(), false).await;
    let session = proxy.initialize().await;
    let before = server_frames(&proxy.frames(&session).await).len();
    assert_eq!(
        before, 1,
        "the initialize reply is recorded before it is sent"
    );

    gate.close();
    let reply = proxy.call(&session, 1, "json").await;
    assert_eq!(reply.status(), 200);
    let body: Value = tokio::time::timeout(GUARD, reply.json())
        .await
        .expect("the reply arrived while its recording was held back")
        .unwrap();
    assert_eq!(body["result"]["content"][0]["text"], "json reply");
    assert_eq!(
        server_frames(&proxy.frames(&session).await).len(),
        before,
        "sent before it was recorded"
    );

    gate.open();
    tokio::time::timeout(GUARD, proxy.state.recorder.flush())
        .await
        .expect("the recording finished once the store let it");
    let frames = proxy.frames(&session).await;
    let [.., request, recorded] = &frames[..] else {
        panic!("the request and its reply are recorded: {frames:?}");
    };
    assert_eq!(request.frame.direction, Direction::ClientToServer);
    assert_eq!(recorded.frame.direction, Direction::ServerToClient);
    assert_eq!(
        serde_json::from_slice::<Value>(&recorded.frame.payload).unwrap(),
        body
    );
    assert_eq!(
        recorded.frame.stream_id.as_deref(),
        Some(format!("r{}", request.id).as_str()),
        "recorded under the request's stream"
    );
    let metrics = proxy.state.metrics.render(None);
    assert!(
        metrics.contains("mcp_proxy_frames_not_recorded_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_graceful_stops_flush_waits_for_the_replies_still_being_recorded() {
    let (store, gate) = WatchedStore::memory();
    let (proxy, _) = Proxy::start(store.clone(), false).await;
    let session = proxy.initialize().await;

    gate.close();
    let held = store.held.clone();
    let waiting = held.notified();
    let reply = proxy.call(&session, 1, "json").await;
    assert_eq!(reply.status(), 200);
    tokio::time::timeout(GUARD, waiting)
        .await
        .expect("the reply's recording reached the store");
    let recorder = proxy.state.recorder.clone();
    let mut flush = tokio::spawn(async move { recorder.flush().await });
    // The flush cannot finish while the store holds the write back.
    tokio::select! {
        _ = &mut flush => panic!("the flush finished before the queued reply was written"),
        () = tokio::task::yield_now() => {}
    }
    assert!(!flush.is_finished());
    gate.open();
    tokio::time::timeout(GUARD, flush)
        .await
        .expect("the flush finished once the reply was written")
        .unwrap();
    let frames = proxy.frames(&session).await;
    assert_eq!(server_frames(&frames).len(), 2, "initialize and the call");
}

#[tokio::test]
async fn sse_events_that_arrive_in_one_chunk_are_recorded_with_one_append_frames() {
    let (proxy, outer) = Proxy::start(Arc::new(memory_store()), true).await;
    let outer = outer.unwrap();
    let session = proxy.initialize().await;
    let before = outer.appends().len();

    let reply = proxy.call(&session, 7, "burst").await;
    assert_eq!(reply.status(), 200);
    let mut parser = SseParser::new(1 << 20);
    let mut events: Vec<SseEvent> = Vec::new();
    let mut body = reply.bytes_stream();
    while let Some(chunk) = tokio::time::timeout(GUARD, body.next())
        .await
        .expect("the stream ended")
    {
        events.extend(parser.push(&chunk.unwrap()).unwrap());
    }

    let appends = outer.appends()[before..].to_vec();
    println!("appends of server-to-client frames for one chunk of 3 events: {appends:?}");
    assert_eq!(appends, [("append_frames", 3)], "one call for the batch");

    let messages: Vec<&SseEvent> = events.iter().filter(|event| !event.is_empty()).collect();
    assert_eq!(messages.len(), 3);
    let recorded = proxy.frames(&session).await;
    let recorded = server_frames(&recorded);
    let recorded = &recorded[recorded.len() - 3..];
    for (event, stored) in messages.iter().zip(recorded) {
        let (frame, _stream) = event.id.as_deref().unwrap().split_once('@').unwrap();
        assert_eq!(
            frame,
            stored.id.to_string(),
            "each event carries its own frame id"
        );
        assert_eq!(event.data.as_bytes(), &stored.frame.payload[..]);
    }
    assert_eq!(
        serde_json::from_str::<Value>(&messages[2].data).unwrap()["result"]["content"][0]["text"],
        "burst done"
    );
}
