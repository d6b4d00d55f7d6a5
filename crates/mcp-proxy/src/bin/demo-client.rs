//! `demo-client`: the scripted MCP session that `cargo xtask demo` runs through
//! the proxy, with rmcp's Streamable HTTP client. It initializes, lists the tools,
//! calls `echo`, `add` and `countdown` (whose progress arrives over SSE), then
//! prints the session as the proxy recorded it (admin endpoint `/sessions/{id}` on
//! the proxy's admin listener, `--admin-url`) and ends the session with DELETE.
//!
//! With `--then-url`, only `initialize` goes to `--url`: every later request of the
//! session goes to the other proxy instance, which finds the session in the shared
//! store. Each step is printed as it completes; the first failure ends the run with
//! a non-zero exit status.

use std::{
    collections::HashMap,
    io::Write,
    process::ExitCode,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::http::{HeaderName, HeaderValue};
use clap::Parser;
use parking_lot::Mutex;
use rmcp::{
    model::{
        CallToolRequestParams, ClientCapabilities, ClientConfig, ClientJsonRpcMessage,
        Implementation, NumberOrString, ProgressNotificationParam, ProgressToken, ProtocolVersion,
        RequestMetaObject,
    },
    service::{NotificationContext, RunningService},
    transport::{
        common::client_side_sse::BoxedSseResponse,
        streamable_http_client::{
            StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
            StreamableHttpPostResponse, StreamableHttpResponseLimits,
        },
        StreamableHttpClientTransport,
    },
    ClientHandler, RoleClient, ServiceExt,
};
use serde_json::{json, Value};
use url::Url;

/// The whole script may take this long; a stuck step fails the run instead of hanging.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long progress notifications may trail the countdown's result.
const PROGRESS_GRACE: Duration = Duration::from_secs(2);
/// Progress notifications the countdown step asks for.
const COUNTDOWN_STEPS: usize = 3;
/// Longest payload excerpt shown per recorded frame.
const EXCERPT_CHARS: usize = 48;

/// The demo client's command line.
#[derive(Debug, Parser)]
#[command(name = "demo-client", version)]
struct Args {
    /// The proxy's MCP endpoint, e.g. http://127.0.0.1:8080/mcp. `initialize` goes here.
    #[arg(long, value_name = "URL")]
    url: Url,
    /// Another proxy instance on the same store: every request after `initialize`
    /// goes here, with the same session id.
    #[arg(long, value_name = "URL")]
    then_url: Option<Url>,
    /// The admin listener of `--url`'s instance (`proxy.admin_listen`), e.g.
    /// http://127.0.0.1:8081: where `/sessions/{id}` is read.
    #[arg(long, value_name = "URL")]
    admin_url: Url,
    /// The admin listener of `--then-url`'s instance.
    #[arg(long, value_name = "URL", requires = "then_url")]
    then_admin_url: Option<Url>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("demo-client: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        tokio::time::timeout(SCRIPT_TIMEOUT, run_script(&args))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the session did not finish within {SCRIPT_TIMEOUT:?}"
                ))
            })
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = std::io::stdout().flush();
            eprintln!("demo-client: FAILED: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The proxy instances of the run: where `initialize` goes and where the rest goes.
#[derive(Clone, Debug)]
struct Instances {
    first: Url,
    then: Option<Url>,
    /// The admin listeners of `first` and `then`.
    first_admin: Url,
    then_admin: Option<Url>,
}

impl Instances {
    /// A label for the instance `url` in the step lines; empty with one instance.
    fn label(&self, serves_initialize: bool) -> &'static str {
        match (&self.then, serves_initialize) {
            (None, _) => "",
            (Some(_), true) => "[A] ",
            (Some(_), false) => "[B] ",
        }
    }

    fn after_initialize(&self) -> &Url {
        self.then.as_ref().unwrap_or(&self.first)
    }

    /// The admin listener of the instance serving requests after `initialize`.
    fn admin_after_initialize(&self) -> &Url {
        self.then_admin.as_ref().unwrap_or(&self.first_admin)
    }
}

/// rmcp's reqwest client, sending `initialize` (the one POST without a session) to
/// the first instance and everything else to the second, and keeping the session
/// id the proxy issues.
#[derive(Clone)]
struct InstanceRouter {
    http: reqwest::Client,
    initialize_uri: Arc<str>,
    session_uri: Arc<str>,
    session_id: Arc<Mutex<Option<String>>>,
}

impl InstanceRouter {
    fn new(instances: &Instances) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            // As rmcp's own default client: a pooled connection whose previous
            // body was not fully read can stall ~40 ms on delayed ACKs.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
        Ok(InstanceRouter {
            http,
            initialize_uri: instances.first.as_str().into(),
            session_uri: instances.after_initialize().as_str().into(),
            session_id: Arc::new(Mutex::new(None)),
        })
    }

    fn uri_for(&self, session_id: Option<&Arc<str>>) -> Arc<str> {
        match session_id {
            None => self.initialize_uri.clone(),
            Some(_) => self.session_uri.clone(),
        }
    }

    fn session_id(&self) -> Option<String> {
        self.session_id.lock().clone()
    }
}

impl StreamableHttpClient for InstanceRouter {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        _uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.post_message_with_response_limits(
            self.uri_for(session_id.as_ref()),
            message,
            session_id,
            auth_header,
            custom_headers,
            StreamableHttpResponseLimits::default(),
        )
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        _uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let uri = self.uri_for(session_id.as_ref());
        let response = self
            .http
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                limits,
            )
            .await?;
        if let StreamableHttpPostResponse::Json(_, Some(issued))
        | StreamableHttpPostResponse::Sse(_, Some(issued)) = &response
        {
            *self.session_id.lock() = Some(issued.clone());
        }
        Ok(response)
    }

    async fn delete_session(
        &self,
        _uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.http
            .delete_session(
                self.session_uri.clone(),
                session_id,
                auth_header,
                custom_headers,
            )
            .await
    }

    async fn get_stream(
        &self,
        _uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxedSseResponse, StreamableHttpError<Self::Error>> {
        let uri = self.uri_for(session_id.as_ref());
        self.http
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        _uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxedSseResponse, StreamableHttpError<Self::Error>> {
        let uri = self.uri_for(session_id.as_ref());
        self.http
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }
}

/// The client side of the session: identifies itself and prints progress
/// notifications as they arrive.
#[derive(Clone, Debug)]
struct DemoHandler {
    info: ClientConfig,
    progress_seen: Arc<AtomicUsize>,
}

impl ClientHandler for DemoHandler {
    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress_seen.fetch_add(1, Ordering::SeqCst);
        let total = params
            .total
            .map(|total| format!("/{}", number(&json!(total))))
            .unwrap_or_default();
        let message = params.message.unwrap_or_default();
        println!(
            "                          progress {}{total} ({message}), over SSE",
            number(&json!(params.progress))
        );
    }
}

async fn run_script(args: &Args) -> Result<(), String> {
    let instances = Instances {
        first: args.url.clone(),
        then: args.then_url.clone(),
        first_admin: args.admin_url.clone(),
        then_admin: args.then_admin_url.clone(),
    };
    if instances.then.is_some() && instances.then_admin.is_none() {
        return Err("--then-url needs --then-admin-url (its instance's admin listener)".into());
    }
    let router = InstanceRouter::new(&instances)?;
    let progress_seen = Arc::new(AtomicUsize::new(0));
    let handler = DemoHandler {
        info: ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("demo-client", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::V_2025_11_25),
        progress_seen: progress_seen.clone(),
    };
    match &instances.then {
        None => println!("MCP session through the proxy at {}", instances.first),
        Some(then) => {
            println!("MCP session through two proxies on one Redis:");
            println!("  [A] {}  (initialize)", instances.first);
            println!("  [B] {then}  (every later request, same session id)");
        }
    }
    let transport = StreamableHttpClientTransport::with_client(
        router.clone(),
        StreamableHttpClientTransportConfig::with_uri(instances.first.as_str()),
    );
    let client = handler
        .serve(transport)
        .await
        .map_err(|error| format!("initialize through {}: {error}", instances.first))?;
    let session_id = router
        .session_id()
        .ok_or("the proxy answered initialize without an Mcp-Session-Id")?;
    let server = client
        .peer_info()
        .ok_or("no initialize result from the server")?;
    let server_name = server
        .server_info
        .as_ref()
        .map(|info| format!("{} {}", info.name, info.version))
        .unwrap_or_else(|| "an unnamed server".to_owned());
    step(
        &instances,
        true,
        "initialize",
        &format!(
            "{server_name}, protocol {}, session {session_id}",
            server.protocol_version
        ),
    );

    let outcome = call_tools(&client, &instances, &progress_seen).await;
    let outcome = match outcome {
        Ok(()) => show_recorded_session(&instances, &session_id).await,
        Err(error) => Err(error),
    };
    // Dropping the client's transport sends DELETE: the proxy ends the session.
    let closed = client.cancel().await;
    outcome?;
    closed.map_err(|error| format!("closing the session: {error}"))?;
    let after = fetch_session(instances.admin_after_initialize(), &session_id).await;
    match after {
        Err(FetchError::NotFound) => println!(
            "\nClosed the session (DELETE): the proxy removed it from the store (404 on /sessions/{{id}})."
        ),
        Ok(_) => return Err("the session is still in the store after DELETE".into()),
        Err(FetchError::Other(error)) => return Err(error),
    }
    Ok(())
}

async fn call_tools(
    client: &RunningService<RoleClient, DemoHandler>,
    instances: &Instances,
    progress_seen: &AtomicUsize,
) -> Result<(), String> {
    let tools = client
        .list_tools(None)
        .await
        .map_err(|error| format!("tools/list: {error}"))?;
    let mut names: Vec<&str> = tools.tools.iter().map(|tool| tool.name.as_ref()).collect();
    names.sort_unstable();
    step(instances, false, "tools/list", &names.join(", "));

    let text = "hello through the proxy";
    let echoed = call_text(client, "echo", json!({ "text": text })).await?;
    expect_text("echo", &echoed, text)?;
    step(instances, false, "tools/call echo", &format!("{echoed:?}"));

    let sum = call_text(client, "add", json!({ "a": 20, "b": 22 })).await?;
    expect_text("add", &sum, "42")?;
    step(
        instances,
        false,
        "tools/call add",
        &format!("20 + 22 = {sum}"),
    );

    step(
        instances,
        false,
        "tools/call countdown",
        &format!("from {COUNTDOWN_STEPS}, with a progress token"),
    );
    let mut countdown = CallToolRequestParams::new("countdown").with_arguments(json_object(
        json!({ "from": COUNTDOWN_STEPS, "interval_ms": 100 }),
    )?);
    countdown.meta = Some(RequestMetaObject::with_progress_token(ProgressToken(
        NumberOrString::String("demo-countdown".into()),
    )));
    let done = result_text(
        "countdown",
        client
            .call_tool(countdown)
            .await
            .map_err(|error| format!("tools/call countdown: {error}"))?,
    )?;
    let deadline = tokio::time::Instant::now() + PROGRESS_GRACE;
    while progress_seen.load(Ordering::SeqCst) < COUNTDOWN_STEPS
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = progress_seen.load(Ordering::SeqCst);
    if seen != COUNTDOWN_STEPS {
        return Err(format!(
            "countdown: {seen} progress notifications arrived, expected {COUNTDOWN_STEPS}"
        ));
    }
    println!("                          result {done:?}");
    Ok(())
}

fn step(instances: &Instances, serves_initialize: bool, name: &str, outcome: &str) {
    let label = instances.label(serves_initialize);
    println!("  {label}{name:<22}-> {outcome}");
}

fn json_object(value: Value) -> Result<serde_json::Map<String, Value>, String> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!("tool arguments must be an object, not {other}")),
    }
}

async fn call_text(
    client: &RunningService<RoleClient, DemoHandler>,
    tool: &str,
    arguments: Value,
) -> Result<String, String> {
    let params =
        CallToolRequestParams::new(tool.to_owned()).with_arguments(json_object(arguments)?);
    let result = client
        .call_tool(params)
        .await
        .map_err(|error| format!("tools/call {tool}: {error}"))?;
    result_text(tool, result)
}

/// The first text content of a tool result; a result flagged as an error fails.
fn result_text(tool: &str, result: rmcp::model::CallToolResult) -> Result<String, String> {
    let content = serde_json::to_value(&result.content)
        .map_err(|error| format!("tools/call {tool}: unreadable content: {error}"))?;
    if result.is_error == Some(true) {
        return Err(format!("tools/call {tool} failed: {content}"));
    }
    content[0]["text"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("tools/call {tool}: no text in the result: {content}"))
}

fn expect_text(tool: &str, actual: &str, expected: &str) -> Result<(), String> {
    if actual == expected {
        Ok(())
    } else {
        Err(format!(
            "tools/call {tool} returned {actual:?}, expected {expected:?}"
        ))
    }
}

/// Why `/sessions/{id}` gave no session.
enum FetchError {
    NotFound,
    Other(String),
}

/// `GET /sessions/{id}` on the admin listener `admin_url`.
async fn fetch_session(admin_url: &Url, session_id: &str) -> Result<Value, FetchError> {
    let mut url = admin_url.clone();
    url.set_path(&format!("/sessions/{session_id}"));
    url.set_query(Some("limit=1000"));
    let response = reqwest::Client::new()
        .get(url.clone())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|error| FetchError::Other(format!("GET {url}: {error}")))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(FetchError::NotFound);
    }
    let body = response
        .bytes()
        .await
        .map_err(|error| FetchError::Other(format!("GET {url}: reading the body: {error}")))?;
    if !status.is_success() {
        return Err(FetchError::Other(format!(
            "GET {url}: {status}: {} (is --admin-url the instance's proxy.admin_listen?)",
            String::from_utf8_lossy(&body)
        )));
    }
    serde_json::from_slice(&body)
        .map_err(|error| FetchError::Other(format!("GET {url}: not JSON: {error}")))
}

async fn fetch_existing(admin_url: &Url, session_id: &str) -> Result<Value, String> {
    fetch_session(admin_url, session_id)
        .await
        .map_err(|error| match error {
            FetchError::NotFound => {
                format!(
                    "GET /sessions/{session_id} on {admin_url}: 404, the session is not in the store"
                )
            }
            FetchError::Other(error) => error,
        })
}

async fn show_recorded_session(instances: &Instances, session_id: &str) -> Result<(), String> {
    let shown_by = instances.admin_after_initialize();
    let view = fetch_existing(shown_by, session_id).await?;
    let label = if instances.then.is_some() { "[B] " } else { "" };
    println!(
        "\nRecorded in the session store (GET /sessions/{{id}} on {label}{}):",
        host_port(shown_by)
    );
    let session = &view["session"];
    println!(
        "  session {}  status {}  protocol {}",
        text(&session["id"]),
        text(&session["status"]),
        text(&session["protocol_version"])
    );
    println!(
        "  client {} {}, server {} {}",
        text(&session["client_info"]["clientInfo"]["name"]),
        text(&session["client_info"]["clientInfo"]["version"]),
        text(&session["server_info"]["serverInfo"]["name"]),
        text(&session["server_info"]["serverInfo"]["version"])
    );
    println!(
        "  upstream's own session id {} (the client only ever sees the proxy's)",
        text(&session["upstream_session_id"])
    );
    let frames = view["frames"].as_array().cloned().unwrap_or_default();
    println!(
        "  {} frames (-> client to server, <- server to client; [stream id]):",
        frames.len()
    );
    for frame in &frames {
        println!("    {}", describe_frame(frame));
    }
    if frames.is_empty() {
        return Err("the proxy recorded no frames".into());
    }
    if instances.then.is_some() {
        let from_a = fetch_existing(&instances.first_admin, session_id).await?;
        if from_a["frames"] != view["frames"] || from_a["session"]["id"] != session["id"] {
            return Err("instances A and B show different frames for the session".into());
        }
        println!(
            "  [A] {} shows the same session and the same {} frames: both instances serve it.",
            host_port(&instances.first_admin),
            frames.len()
        );
    }
    Ok(())
}

fn host_port(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        _ => url.to_string(),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// One line per frame: id, direction, stream, and what the message is.
fn describe_frame(frame: &Value) -> String {
    let arrow = if frame["direction"] == "client_to_server" {
        "->"
    } else {
        "<-"
    };
    let stream = frame["stream_id"]
        .as_str()
        .map(|stream| format!("[{stream}]"))
        .unwrap_or_default();
    let payload = frame["payload"].as_str().unwrap_or_default();
    let message = serde_json::from_str::<Value>(payload)
        .map(|message| describe_message(&message))
        .unwrap_or_else(|_| excerpt(payload));
    let line = format!("{:<16} {arrow} {message:<44} {stream}", text(&frame["id"]));
    line.trim_end().to_owned()
}

/// A JSON number as a person writes it: `3`, not `3.0`.
fn number(value: &Value) -> String {
    match value.as_f64() {
        Some(number) if number.fract() == 0.0 && number.abs() < 1e15 => format!("{number:.0}"),
        _ => text(value),
    }
}

fn describe_message(message: &Value) -> String {
    if let Some(batch) = message.as_array() {
        return format!("batch of {} messages", batch.len());
    }
    let id = match &message["id"] {
        Value::Null => String::new(),
        id => format!(" #{}", text(id)),
    };
    if let Some(method) = message["method"].as_str() {
        let detail = match method {
            "tools/call" => format!(" {}", text(&message["params"]["name"])),
            "notifications/progress" => format!(
                " {}/{}",
                number(&message["params"]["progress"]),
                number(&message["params"]["total"])
            ),
            _ => String::new(),
        };
        return format!("{method}{detail}{id}");
    }
    if let Some(error) = message.get("error") {
        return format!("error{id}: {}", excerpt(&text(&error["message"])));
    }
    let result = &message["result"];
    if let Some(first) = result["content"][0]["text"].as_str() {
        return format!("result{id}: {}", excerpt(&format!("{first:?}")));
    }
    if let Some(tools) = result["tools"].as_array() {
        return format!("result{id}: {} tools", tools.len());
    }
    if let Some(server) = result["serverInfo"]["name"].as_str() {
        return format!("result{id}: {server}");
    }
    format!("result{id}")
}

fn excerpt(text: &str) -> String {
    if text.chars().count() <= EXCERPT_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(EXCERPT_CHARS - 1).collect();
    cut.push('…');
    cut
}
