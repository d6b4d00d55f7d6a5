//! `mcp-proxy sessions list|show|tail|delete|revoke`: looking at and ending
//! sessions in the store, from a shell.

use std::{io::Write, sync::Arc, time::Duration};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use clap::Args;
use serde_json::{json, Value};
use session_store::{Error, FrameId, Session, SessionId, SessionStatus, SessionStore, StoredFrame};

use super::CommandError;
use crate::{
    binding::subject_principal,
    bridge::record::FORM_HEADER,
    config::ProxySettings,
    session_query::{client_name, for_each_session, SessionFilter},
    upstream::{Upstream, PROTOCOL_VERSION_HEADER, SESSION_ID_HEADER},
};

/// Frames read per store call.
const FRAME_PAGE: usize = 1_000;

/// `sessions list`.
#[derive(Clone, Debug, Default, Args)]
pub struct ListArgs {
    /// Only sessions whose client name contains this text (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub client: Option<String>,
    /// Only sessions in this status (`initializing`, `active`, `closed`).
    #[arg(long, value_parser = parse_status, value_name = "STATUS")]
    pub status: Option<SessionStatus>,
    /// Only sessions bound to this principal (`sub:<hex>` or `tok:<hex>`).
    #[arg(long, value_name = "PRINCIPAL")]
    pub binding: Option<String>,
    /// Only sessions of this protocol revision, e.g. 2025-06-18.
    #[arg(long, value_name = "REVISION")]
    pub protocol: Option<String>,
    /// Print at most this many sessions (0: all).
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    /// One JSON object per line (the stored session) instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl ListArgs {
    fn filter(&self) -> SessionFilter {
        SessionFilter {
            client: self.client.clone(),
            status: self.status,
            binding: self.binding.clone(),
            protocol: self.protocol.clone(),
        }
    }
}

fn parse_status(text: &str) -> Result<SessionStatus, String> {
    serde_json::from_value(json!(text))
        .ok()
        .filter(|status| *status != SessionStatus::Unknown)
        .ok_or_else(|| format!("`{text}` is not a status: initializing, active or closed"))
}

/// Prints the live sessions `args` selects, one per line: a table with a header
/// (id, client, upstream session, protocol revision, status, age, frames), or
/// with `--json` the stored sessions as JSON Lines. Returns how many were printed.
///
/// Errors: the store's; writing to `out`.
pub async fn list(
    store: &dyn SessionStore,
    args: &ListArgs,
    out: &mut dyn Write,
) -> Result<u64, CommandError> {
    let write = CommandError::io("writing the session list");
    if !args.json {
        writeln!(out, "{}", table_header()).map_err(write)?;
    }
    let now = now_millis();
    let mut printed = 0;
    let mut failure = None;
    for_each_session(store, &args.filter(), async |session| {
        let line = if args.json {
            serde_json::to_string(&session).unwrap_or_default()
        } else {
            table_row(&session, now)
        };
        if let Err(error) = writeln!(out, "{line}") {
            failure = Some(error);
            return false;
        }
        printed += 1;
        args.limit == 0 || printed < args.limit
    })
    .await?;
    match failure {
        Some(error) => Err(CommandError::io("writing the session list")(error)),
        None => Ok(printed),
    }
}

fn table_header() -> String {
    format!(
        "{:<49}  {:<20}  {:<36}  {:<10}  {:<12}  {:>8}  {:>6}",
        "ID", "CLIENT", "UPSTREAM SESSION", "PROTOCOL", "STATUS", "AGE", "FRAMES"
    )
}

/// One line of the session table. The id column fits the ids the proxy mints:
/// 36 characters, or 49 for one minted during a Redis outage
/// (`fb.<13-digit ms>.<32 hex>`).
fn table_row(session: &Session, now: u64) -> String {
    let age = Duration::from_secs(now.saturating_sub(session.created_at.as_millis()) / 1000);
    format!(
        "{:<49}  {:<20}  {:<36}  {:<10}  {:<12}  {:>8}  {:>6}",
        session.id.as_str(),
        client_name(session).unwrap_or("-"),
        session.upstream_session_id.as_deref().unwrap_or("-"),
        session.protocol_version.as_deref().unwrap_or("-"),
        status_name(session.status),
        humantime::format_duration(age).to_string().replace(' ', ""),
        session.frame_count,
    )
}

fn status_name(status: SessionStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `sessions show`.
#[derive(Clone, Debug, Args)]
pub struct ShowArgs {
    /// The session id (`Mcp-Session-Id` the proxy issued).
    pub id: String,
    /// Also print each frame's JSON-RPC message, pretty-printed.
    #[arg(long)]
    pub payload: bool,
}

/// Prints the session (pretty JSON) and a table of its recorded frames, a line
/// each under a header: frame id, direction, stream, time, size in bytes, and
/// the method (or `result`/`error` and the request id); with `--payload` each
/// frame's message follows its line, pretty-printed.
///
/// Errors: [`Error::NotFound`] when the session is gone; the store's; writing.
pub async fn show(
    store: &dyn SessionStore,
    args: &ShowArgs,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let id = session_id(&args.id)?;
    let session = store.get(&id).await?;
    let write = || CommandError::io("writing the session");
    let text = serde_json::to_string_pretty(&session).unwrap_or_default();
    writeln!(out, "{text}").map_err(write())?;
    print_frame_header(out).map_err(write())?;
    let mut after = None;
    loop {
        let frames = store.read_frames(&id, after, FRAME_PAGE).await?;
        for frame in &frames {
            print_frame(out, frame, args.payload).map_err(write())?;
        }
        // A page may be short of FRAME_PAGE (bounded by bytes): read on until
        // one is empty.
        match frames.last() {
            Some(last) => after = Some(last.id),
            None => return Ok(()),
        }
    }
}

/// `sessions tail`.
#[derive(Clone, Debug, Args)]
pub struct TailArgs {
    /// The session id.
    pub id: String,
    /// How many of the newest recorded frames to print first.
    #[arg(long, short = 'n', default_value_t = 10)]
    pub lines: usize,
    /// How often to look for new frames.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    pub interval: Duration,
    /// Stop after this many new frames (default: until the session ends).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Also print each frame's JSON-RPC message, pretty-printed.
    #[arg(long)]
    pub payload: bool,
}

/// How a [`tail`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tailed {
    /// New frames printed after the first `--lines`.
    pub printed: u64,
    /// When the session ended: the line saying so (the command prints it to
    /// stderr), which also says that frames recorded after the last one read
    /// may be missing (the store removes a session's frames with it).
    pub ended: Option<String>,
}

/// Prints the newest `--lines` frames of a session, then each new frame as it is
/// recorded, until the session ends (deleted or expired), `--count` new frames
/// were printed, or the process is interrupted.
///
/// A session that ends while its frames are read still has what was read
/// printed. Its frames go with it, so frames recorded after the last read (at
/// most one `--interval` before the end was seen) cannot be printed: the end
/// line ([`Tailed::ended`]) says that they may be missing and after which frame.
///
/// Errors: [`Error::NotFound`] when the session is gone at the start; the
/// store's; writing.
pub async fn tail(
    store: &dyn SessionStore,
    args: &TailArgs,
    out: &mut dyn Write,
) -> Result<Tailed, CommandError> {
    let id = session_id(&args.id)?;
    let write = || CommandError::io("writing frames");
    let mut newest: Vec<StoredFrame> = Vec::new();
    let mut after = None;
    let mut last_read = tokio::time::Instant::now();
    let mut ended = false;
    loop {
        let asked = tokio::time::Instant::now();
        let frames = match store.read_frames(&id, after, FRAME_PAGE).await {
            Ok(frames) => frames,
            // Gone between two pages: what was read is still printed.
            Err(Error::NotFound(_)) if after.is_some() => {
                ended = true;
                break;
            }
            Err(error) => return Err(error.into()),
        };
        last_read = asked;
        // A page may be short of FRAME_PAGE (bounded by bytes): read on until
        // one is empty.
        if frames.is_empty() {
            break;
        }
        after = frames.last().map(|frame| frame.id).or(after);
        newest.extend(frames);
        let keep = newest.len().saturating_sub(args.lines);
        newest.drain(..keep);
    }
    print_frame_header(out).map_err(write())?;
    for frame in &newest {
        print_frame(out, frame, args.payload).map_err(write())?;
    }
    out.flush().map_err(write())?;
    let mut printed = 0;
    if ended {
        return Ok(Tailed {
            printed,
            ended: Some(ended_line(&id, after, last_read.elapsed())),
        });
    }
    loop {
        if args.count.is_some_and(|count| printed >= count) {
            return Ok(Tailed {
                printed,
                ended: None,
            });
        }
        let asked = tokio::time::Instant::now();
        let frames = match store.read_frames(&id, after, FRAME_PAGE).await {
            Ok(frames) => frames,
            Err(Error::NotFound(_)) => {
                return Ok(Tailed {
                    printed,
                    ended: Some(ended_line(&id, after, last_read.elapsed())),
                });
            }
            Err(error) => return Err(error.into()),
        };
        last_read = asked;
        if frames.is_empty() {
            tokio::time::sleep(args.interval).await;
            continue;
        }
        for frame in &frames {
            if args.count.is_some_and(|count| printed >= count) {
                break;
            }
            print_frame(out, frame, args.payload).map_err(write())?;
            printed += 1;
            after = Some(frame.id);
        }
        out.flush().map_err(write())?;
    }
}

/// The line a tail ends with when its session ended: the store removed the
/// session's frames with it, so frames recorded after `after` (the last frame
/// printed) in the `since` before the end was seen may be missing.
fn ended_line(id: &SessionId, after: Option<FrameId>, since: Duration) -> String {
    let after = after.map_or_else(|| "the start".to_owned(), |frame| format!("frame {frame}"));
    let since = Duration::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
    format!(
        "mcp-proxy: session `{id}` ended (deleted or expired); its frames were removed with it, \
         so frames recorded after {after} in the last {} before the end was seen may be missing",
        humantime::format_duration(since)
    )
}

/// One line of the frame table: frame id, direction, stream, time, size, and
/// the message summary last, so a long one shifts no other column. The widths
/// fit the values the proxy records: frame ids `<13-digit ms>-<seq>` (Redis
/// sequences reach 8 digits and more), stream ids `r<frame id>` or `g`/`u` and 16
/// hex digits, RFC 3339 times with milliseconds.
fn frame_columns(
    id: &str,
    direction: &str,
    stream: &str,
    time: &str,
    size: &str,
    message: &str,
) -> String {
    format!("{id:<24}  {direction:<16}  {stream:<25}  {time:<24}  {size:>10}  {message}")
}

fn print_frame_header(out: &mut dyn Write) -> std::io::Result<()> {
    let header = frame_columns("FRAME", "DIRECTION", "STREAM", "TIME", "SIZE", "MESSAGE");
    writeln!(out, "{header}")
}

fn print_frame(out: &mut dyn Write, stored: &StoredFrame, payload: bool) -> std::io::Result<()> {
    let frame = &stored.frame;
    let message: Option<Value> = serde_json::from_slice(&frame.payload).ok();
    let line = frame_columns(
        &stored.id.to_string(),
        &serde_json::to_value(frame.direction)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default(),
        frame.stream_id.as_deref().unwrap_or("-"),
        &humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + Duration::from_millis(frame.timestamp.as_millis()),
        )
        .to_string(),
        &format!("{} B", frame.payload.len()),
        &frame_message(stored, message.as_ref()),
    );
    writeln!(out, "{}", line.trim_end())?;
    if payload {
        let text = match &message {
            Some(message) => serde_json::to_string_pretty(message).unwrap_or_default(),
            None => String::from_utf8_lossy(&frame.payload).into_owned(),
        };
        writeln!(out, "{text}")?;
    }
    Ok(())
}

/// The MESSAGE column: the [`summary`], marked `[bridged: upstream form]` for a
/// bridged exchange's messages as the upstream saw them (the session browser's
/// "bridged" mark), so a handshake `initialize` or a request shown twice reads as
/// the two sides of one exchange.
fn frame_message(stored: &StoredFrame, message: Option<&Value>) -> String {
    let summary = message.map_or_else(|| "(not JSON)".to_owned(), summary);
    match stored.frame.headers.get(FORM_HEADER) {
        Some(form) => format!("{summary} [bridged: {form} form]"),
        None => summary,
    }
}

/// The method of a request or notification, `result #id` / `error #id` of a
/// response, `batch of n` of a batch.
fn summary(message: &Value) -> String {
    if let Some(batch) = message.as_array() {
        return format!("batch of {}", batch.len());
    }
    let id = message.get("id").map(Value::to_string).unwrap_or_default();
    if let Some(method) = message.get("method").and_then(Value::as_str) {
        return method.to_owned();
    }
    if message.get("error").is_some() {
        return format!("error #{id}");
    }
    format!("result #{id}")
}

/// `sessions delete`.
#[derive(Clone, Debug, Args)]
pub struct DeleteArgs {
    /// The session ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// Deletes each session from the store (every instance then answers 404 for
/// it); the upstream sessions are left to expire (`revoke` ends them too).
/// Prints and returns how many were deleted and how many were not found.
///
/// Errors: an id that is not a session id; the store's.
pub async fn delete(
    store: &dyn SessionStore,
    args: &DeleteArgs,
    out: &mut dyn Write,
) -> Result<(u64, u64), CommandError> {
    let ids: Vec<SessionId> = args
        .ids
        .iter()
        .map(|id| session_id(id))
        .collect::<Result<_, _>>()?;
    let (mut deleted, mut missing) = (0, 0);
    for id in &ids {
        if store.delete(id).await? {
            deleted += 1;
        } else {
            missing += 1;
        }
    }
    writeln!(out, "deleted {deleted}, not found {missing}")
        .map_err(CommandError::io("writing the result"))?;
    Ok((deleted, missing))
}

/// `sessions revoke`: `--binding` or `--subject`.
#[derive(Clone, Debug, Default, Args)]
pub struct RevokeArgs {
    /// The principal whose sessions end: the session's `binding` tag as `sessions
    /// show` prints it (`sub:<hex>` or `tok:<hex>`).
    #[arg(
        long,
        value_name = "PRINCIPAL",
        required_unless_present = "subject",
        conflicts_with = "subject"
    )]
    pub binding: Option<String>,
    /// The user whose sessions end, by the `iss` and `sub` claims of their JWTs
    /// (hashed under this deployment's `binding_secret`, as the proxy does).
    #[arg(long, num_args = 2, value_names = ["ISSUER", "SUBJECT"])]
    pub subject: Option<Vec<String>>,
    /// Leave the upstream sessions alone (they expire on their own).
    #[arg(long)]
    pub no_upstream: bool,
}

/// What `revoke` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevokeReport {
    /// Sessions deleted from the store.
    pub sessions_ended: u64,
    /// Upstream sessions the upstream confirmed ending (2xx to DELETE).
    pub upstream_ended: u64,
    /// Upstream DELETEs answered otherwise (404: already gone; 405: the upstream
    /// does not let clients end sessions; 401/403: it wants the user's
    /// credentials).
    pub upstream_refused: u64,
    /// Upstream DELETEs that got no answer.
    pub upstream_unreachable: u64,
}

/// Ends every session bound to `--binding` on every instance (the store is
/// shared: each instance answers 404 from then on) and, unless `--no-upstream`,
/// sends the upstream a DELETE with the session's `Mcp-Session-Id` (and its
/// `MCP-Protocol-Version`) first. The DELETE carries no user credentials: an
/// upstream that requires them refuses, which is counted, not fatal. Prints and
/// returns the counts.
///
/// Errors: the store's; an upstream HTTP client that cannot be built (TLS files).
pub async fn revoke(
    store: Arc<dyn SessionStore>,
    settings: &ProxySettings,
    args: &RevokeArgs,
    out: &mut dyn Write,
) -> Result<RevokeReport, CommandError> {
    let binding = match (&args.binding, args.subject.as_deref()) {
        (Some(binding), _) => binding.clone(),
        (None, Some([issuer, subject])) => subject_principal(settings, issuer, subject)
            .as_str()
            .to_owned(),
        _ => {
            return Err(CommandError::Usage(
                "revoke needs --binding PRINCIPAL or --subject ISSUER SUBJECT".to_owned(),
            ))
        }
    };
    let filter = SessionFilter {
        binding: Some(binding),
        ..SessionFilter::default()
    };
    let mut found = Vec::new();
    for_each_session(store.as_ref(), &filter, async |session| {
        found.push(session);
        true
    })
    .await?;
    let upstream = if args.no_upstream {
        None
    } else {
        Some(Upstream::new(settings).map_err(CommandError::Failed)?)
    };
    let mut report = RevokeReport::default();
    for session in &found {
        if let (Some(upstream), Some(upstream_id)) = (&upstream, &session.upstream_session_id) {
            match end_upstream(upstream, upstream_id, session.protocol_version.as_deref()).await {
                Some(status) if status.is_success() => report.upstream_ended += 1,
                Some(status) => {
                    eprintln!(
                        "mcp-proxy: upstream answered {status} to DELETE of session `{}`",
                        session.id
                    );
                    report.upstream_refused += 1;
                }
                None => report.upstream_unreachable += 1,
            }
        }
        if store.delete(&session.id).await? {
            report.sessions_ended += 1;
        }
    }
    writeln!(
        out,
        "sessions ended {}, upstream sessions ended {}, refused {}, unreachable {}",
        report.sessions_ended,
        report.upstream_ended,
        report.upstream_refused,
        report.upstream_unreachable
    )
    .map_err(CommandError::io("writing the result"))?;
    Ok(report)
}

/// DELETE on the upstream endpoint for one upstream session; `None` when the
/// upstream did not answer (the error is printed).
async fn end_upstream(
    upstream: &Upstream,
    upstream_id: &str,
    protocol: Option<&str>,
) -> Option<StatusCode> {
    let mut headers = HeaderMap::new();
    headers.insert(SESSION_ID_HEADER, HeaderValue::from_str(upstream_id).ok()?);
    if let Some(value) = protocol.and_then(|protocol| HeaderValue::from_str(protocol).ok()) {
        headers.insert(PROTOCOL_VERSION_HEADER, value);
    }
    match upstream.send(Method::DELETE, headers, None).await {
        Ok(response) => Some(response.status()),
        Err(error) => {
            eprintln!("mcp-proxy: DELETE of upstream session failed: {error}");
            None
        }
    }
}

fn session_id(text: &str) -> Result<SessionId, CommandError> {
    SessionId::new(text).map_err(|error| CommandError::Usage(error.to_string()))
}

pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_store::NewSession;

    #[tokio::test]
    async fn rows_line_up_under_the_header_for_the_longest_ids_the_proxy_mints() {
        let store =
            session_store::MemoryStore::new(session_store::StoreSettings::default()).unwrap();
        let id = format!("fb.1796064768134.{}", "d".repeat(32));
        assert_eq!(id.len(), 49);
        let session = store
            .create(NewSession::new(SessionId::new(id).unwrap()))
            .await
            .unwrap();
        let header = table_header();
        let row = table_row(&session, 0);
        let status = status_name(session.status);
        assert_eq!(
            row.find(&status),
            header.find("STATUS"),
            "\n{header}\n{row}"
        );

        let frame_header = frame_columns("FRAME", "DIRECTION", "STREAM", "TIME", "SIZE", "MESSAGE");
        let frame_row = frame_columns(
            "1796064768135-29610935",
            "server_to_client",
            "r1796064768135-29610935",
            "2026-11-30T18:52:49.660Z",
            "120",
            "result #1",
        );
        assert_eq!(
            frame_row.find("2026"),
            frame_header.find("TIME"),
            "\n{frame_header}\n{frame_row}"
        );
    }

    #[test]
    fn frames_in_the_upstreams_form_are_marked_bridged() {
        let payload = br#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#.to_vec();
        let mut frame = session_store::Frame::new(
            session_store::Direction::ClientToServer,
            session_store::Timestamp::from_millis(0),
            payload,
        );
        let plain = StoredFrame {
            id: session_store::FrameId::new(1, 0),
            frame: frame.clone(),
        };
        let message: Value = serde_json::from_slice(&plain.frame.payload).unwrap();
        assert_eq!(frame_message(&plain, Some(&message)), "initialize");
        frame
            .headers
            .insert(FORM_HEADER.to_owned(), "upstream".to_owned());
        let bridged = StoredFrame {
            id: session_store::FrameId::new(1, 1),
            frame,
        };
        assert_eq!(
            frame_message(&bridged, Some(&message)),
            "initialize [bridged: upstream form]"
        );
    }
}
