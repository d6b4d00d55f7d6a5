//! `mcp-proxy sessions export`: every live session with its frames as JSON Lines,
//! streamed (one session's frames in memory at most one store page at a time),
//! the format that `import` reads and that moves sessions between backends.
//!
//! The format (version 1), one JSON object per line:
//!
//! ```text
//! {"format":"mcp-proxy-sessions","version":1,"exported_at":1764500000000}
//! {"type":"session","session":{...the stored session...}}
//! {"type":"frame","session":"<id>","id":"<millis>-<seq>","direction":"client_to_server",
//!  "timestamp":1764500000123,"stream_id":null,"event_id":null,"headers":{},"payload":"{...}"}
//! ...
//! {"type":"end","sessions":2,"frames":14}
//! ```
//!
//! A session's frames follow its session line, oldest first. `payload` holds the
//! recorded bytes as a JSON string when they are UTF-8 (JSON-RPC always is),
//! else `payload_base64` holds them in standard base64: either way the bytes
//! come back identical. The `end` line lets `import` tell a complete file from a
//! cut one.

use std::{io::Write, path::Path};

use base64::Engine;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use session_store::{
    Direction, Frame, FrameId, Session, SessionId, SessionStore, StoredFrame, Timestamp,
};

use super::{sessions::now_millis, CommandError};
use crate::session_query::{for_each_session, SessionFilter};

/// The `format` of the first line.
pub const FORMAT: &str = "mcp-proxy-sessions";
/// The format version this release writes and reads.
pub const VERSION: u32 = 1;
/// Frames read per store call.
const FRAME_PAGE: usize = 1_000;

/// `sessions export`.
#[derive(Clone, Debug, Args)]
pub struct ExportArgs {
    /// Where to write (`-`: standard output).
    #[arg(long, short, value_name = "FILE", default_value = "-")]
    pub output: std::path::PathBuf,
}

/// The first line of an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] when written by this release.
    pub version: u32,
    /// When the export began (milliseconds since the Unix epoch).
    pub exported_at: u64,
}

/// Every line after the header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// A session; its frames follow.
    Session {
        /// The session as stored (times, frame count, revision included).
        session: Session,
    },
    /// One frame of the session named.
    Frame(FrameLine),
    /// The last line: how many sessions and frames the file holds.
    End {
        /// Session lines written.
        sessions: u64,
        /// Frame lines written.
        frames: u64,
    },
}

/// A frame with its id, its payload as text when it is UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameLine {
    /// The session it belongs to.
    pub session: SessionId,
    /// Its id in the session's log (`<millis>-<seq>`).
    #[serde(with = "frame_id_text")]
    pub id: FrameId,
    /// Which way it travelled.
    pub direction: Direction,
    /// When the proxy saw it.
    pub timestamp: Timestamp,
    /// The SSE stream it went out on.
    pub stream_id: Option<String>,
    /// The SSE event id it was sent with.
    pub event_id: Option<String>,
    /// Selected HTTP headers that came with it.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The recorded bytes, when they are UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The recorded bytes in standard base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

impl FrameLine {
    /// The line for `stored`, a frame of `session`.
    pub fn of(session: &SessionId, stored: &StoredFrame) -> FrameLine {
        let frame = &stored.frame;
        let (payload, payload_base64) = match std::str::from_utf8(&frame.payload) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&frame.payload)),
            ),
        };
        FrameLine {
            session: session.clone(),
            id: stored.id,
            direction: frame.direction,
            timestamp: frame.timestamp,
            stream_id: frame.stream_id.clone(),
            event_id: frame.event_id.clone(),
            headers: frame.headers.clone(),
            payload,
            payload_base64,
        }
    }

    /// The stored frame this line describes.
    ///
    /// Errors: neither or both payload fields, or base64 that does not decode.
    pub fn into_stored(self) -> Result<StoredFrame, String> {
        let payload = match (self.payload, self.payload_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|error| format!("frame `{}`: payload_base64: {error}", self.id))?,
            _ => {
                return Err(format!(
                    "frame `{}` needs exactly one of `payload` and `payload_base64`",
                    self.id
                ))
            }
        };
        Ok(StoredFrame {
            id: self.id,
            frame: Frame {
                direction: self.direction,
                timestamp: self.timestamp,
                payload,
                stream_id: self.stream_id,
                event_id: self.event_id,
                headers: self.headers,
            },
        })
    }
}

mod frame_id_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use session_store::FrameId;

    pub fn serialize<S: Serializer>(id: &FrameId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<FrameId, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Session lines.
    pub sessions: u64,
    /// Frame lines.
    pub frames: u64,
}

/// Writes every live session of `store` and its frames to `out` (format above),
/// advancing `progress` by one per session. A session that ends during the
/// export is left out if it is gone before its line is written; one that ends
/// while its frames are read keeps the frames read so far.
///
/// Errors: the store's; writing to `out`.
pub async fn export(
    store: &dyn SessionStore,
    out: &mut dyn Write,
    progress: &ProgressBar,
) -> Result<ExportReport, CommandError> {
    let header = Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        exported_at: now_millis(),
    };
    write_line(out, &header)?;
    let mut report = ExportReport::default();
    let mut failure = None;
    for_each_session(
        store,
        &SessionFilter::default(),
        async |session| match export_session(store, out, session).await {
            Ok(Some(frames)) => {
                report.sessions += 1;
                report.frames += frames;
                progress.inc(1);
                true
            }
            Ok(None) => true,
            Err(error) => {
                failure = Some(error);
                false
            }
        },
    )
    .await?;
    if let Some(error) = failure {
        return Err(error);
    }
    write_line(
        out,
        &Line::End {
            sessions: report.sessions,
            frames: report.frames,
        },
    )?;
    out.flush()
        .map_err(CommandError::io("writing the export"))?;
    Ok(report)
}

/// Writes one session and its frames; `None` when it ended before its first
/// frames were read.
async fn export_session(
    store: &dyn SessionStore,
    out: &mut dyn Write,
    session: Session,
) -> Result<Option<u64>, CommandError> {
    let id = session.id.clone();
    let mut after = None;
    let mut frames = 0;
    let mut first = true;
    let mut session = Some(session);
    loop {
        let page = match store.read_frames(&id, after, FRAME_PAGE).await {
            Ok(page) => page,
            Err(session_store::Error::NotFound(_)) if first => return Ok(None),
            Err(session_store::Error::NotFound(_)) => return Ok(Some(frames)),
            Err(error) => return Err(error.into()),
        };
        if let Some(session) = session.take() {
            write_line(out, &Line::Session { session })?;
        }
        first = false;
        for stored in &page {
            write_line(out, &Line::Frame(FrameLine::of(&id, stored)))?;
            frames += 1;
        }
        // A page may be short of FRAME_PAGE (bounded by bytes): read on until
        // one is empty.
        match page.last() {
            Some(last) => after = Some(last.id),
            None => return Ok(Some(frames)),
        }
    }
}

fn write_line(out: &mut dyn Write, value: &impl Serialize) -> Result<(), CommandError> {
    let io = CommandError::io("writing the export");
    serde_json::to_writer(&mut *out, value)
        .map_err(|error| CommandError::io("writing the export")(error.into()))?;
    out.write_all(b"\n").map_err(io)
}

/// A progress bar of `length` sessions on stderr when stderr is a terminal,
/// else a hidden one.
pub fn progress_bar(length: Option<u64>, verb: &str) -> ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = length.map_or_else(ProgressBar::no_length, ProgressBar::new);
    let template = format!("{verb} {{bar:40}} {{pos}}/{{len}} sessions ({{per_sec}}, {{eta}})");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// `sessions export` from the command line: to `--output` (or stdout), with a
/// progress bar on a terminal, a summary on stderr.
pub async fn run(store: &dyn SessionStore, args: &ExportArgs) -> Result<(), CommandError> {
    let progress = progress_bar(store.count().await.ok(), "exporting");
    let report = if args.output == Path::new("-") {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        export(store, &mut out, &progress).await?
    } else {
        let what = format!("creating `{}`", args.output.display());
        let file = std::fs::File::create(&args.output).map_err(CommandError::io(what))?;
        let mut out = std::io::BufWriter::new(file);
        export(store, &mut out, &progress).await?
    };
    progress.finish_and_clear();
    eprintln!(
        "mcp-proxy: exported {} sessions, {} frames",
        report.sessions, report.frames
    );
    Ok(())
}
