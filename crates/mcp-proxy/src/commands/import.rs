//! `mcp-proxy sessions import`: reads an export (JSON Lines, see
//! [`export`](super::export)) into a Redis store, keeping session ids and frame
//! ids, through the store's write-back path (the one the fallback wrapper uses to
//! put back sessions served during an outage), so frames land under the ids
//! clients were given and replay (`Last-Event-ID`) carries on after a migration.
//!
//! Redis only: frame ids are assigned by the memory backend itself, and a memory
//! store opened by a command ends with it. One session's frames are held in
//! memory at a time (at most `max_frames_per_session` of them).

use std::{
    io::BufRead,
    path::{Path, PathBuf},
    sync::Arc,
};

use clap::Args;
use indicatif::ProgressBar;
use session_store::{
    AppendKeys, Backend, Error, KeyedFrame, RedisStore, Session, SessionStore, SessionWriteBack,
    SystemClock,
};

use super::{
    export::{progress_bar, FrameLine, Header, Line, FORMAT, VERSION},
    sessions::now_millis,
    CommandError, OnConflict,
};
use crate::config::ProxyConfig;

/// `sessions import`.
#[derive(Clone, Debug, Args)]
pub struct ImportArgs {
    /// The export to read (`-`: standard input).
    #[arg(long, short, value_name = "FILE", default_value = "-")]
    pub input: PathBuf,
    /// What to do with a session id the store already holds: `skip` keeps the
    /// stored session (the default); `overwrite` replaces its fields and frames.
    #[arg(long, value_enum, default_value_t = OnConflict::Skip)]
    pub on_conflict: OnConflict,
    /// Only read the file and check it is a complete export; write nothing and
    /// connect to no store.
    #[arg(long)]
    pub check: bool,
}

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Sessions written (new, or overwritten).
    pub sessions_imported: u64,
    /// Sessions left alone because the store held their id (`--on-conflict skip`).
    pub sessions_skipped: u64,
    /// Sessions already expired by their own `expires_at`: not imported.
    pub sessions_expired: u64,
    /// Sessions the store refused: deleted there within the last ttl (a deleted
    /// session stays deleted).
    pub sessions_refused: u64,
    /// Frames stored.
    pub frames_written: u64,
}

/// Reads an export from `input` into `store`.
///
/// Each session keeps its id, fields, times, frame count and revision, and each
/// frame its id and bytes. A session whose `expires_at` has passed is not
/// imported. With [`OnConflict::Overwrite`] a live session of the same id loses
/// its frames and gets the imported fields and frames (its revision becomes the
/// larger of both sides plus one, its frame count grows by the frames imported).
///
/// Errors: [`CommandError::Usage`] naming the line for input that is not an
/// export of this format version, or is cut short (no `end` line); the store's.
pub async fn import(
    store: &RedisStore,
    input: &mut dyn BufRead,
    on_conflict: OnConflict,
    progress: &ProgressBar,
) -> Result<ImportReport, CommandError> {
    let keys = AppendKeys::new();
    let mut report = ImportReport::default();
    let read = read_sessions(input, &keys, async |session, frames| {
        import_session(store, session, frames, &keys, on_conflict, &mut report).await?;
        progress.inc(1);
        Ok(())
    })
    .await;
    read.map_err(|error| match error {
        CommandError::Usage(message) => CommandError::Usage(format!(
            "{message}; sessions imported before it: {} ({} skipped, {} expired, {} \
             refused; the session that line belongs to is not imported): fix or re-export \
             the file, then run the import again with --on-conflict skip",
            report.sessions_imported,
            report.sessions_skipped,
            report.sessions_expired,
            report.sessions_refused
        )),
        other => other,
    })?;
    Ok(report)
}

/// Reads a whole export without writing anything: what `import` would read.
/// Returns the sessions and frames it holds.
///
/// Errors: as [`import`] for input that is not a complete export of this
/// format version.
pub async fn check_format(input: &mut dyn BufRead) -> Result<(u64, u64), CommandError> {
    let mut counts = (0, 0);
    read_sessions(input, &AppendKeys::new(), async |_, frames| {
        counts.0 += 1;
        counts.1 += frames.len() as u64;
        Ok(())
    })
    .await
    .map_err(|error| match error {
        CommandError::Usage(message) => {
            CommandError::Usage(format!("{message} (checked only: nothing was written)"))
        }
        other => other,
    })?;
    Ok(counts)
}

/// Calls `each` with every session of an export and its frames (each given a
/// fresh append key), in file order, and checks the header and the `end` line.
async fn read_sessions(
    input: &mut dyn BufRead,
    keys: &AppendKeys,
    mut each: impl AsyncFnMut(Session, Vec<KeyedFrame>) -> Result<(), CommandError>,
) -> Result<(), CommandError> {
    let mut lines = input.lines().enumerate();
    let bad = |number: usize, message: &str| {
        CommandError::Usage(format!("import, line {}: {message}", number + 1))
    };
    let read = CommandError::io("reading the import");
    let (number, first) = lines
        .next()
        .ok_or_else(|| bad(0, "empty input: not an export"))?;
    let header: Header = serde_json::from_str(&first.map_err(read)?)
        .map_err(|error| bad(number, &format!("not an export header: {error}")))?;
    if header.format != FORMAT || header.version != VERSION {
        return Err(bad(
            number,
            &format!(
                "format `{}` version {} is not `{FORMAT}` version {VERSION}",
                header.format, header.version
            ),
        ));
    }
    let mut pending: Option<(Session, Vec<KeyedFrame>)> = None;
    for (number, text) in lines {
        let text = text.map_err(CommandError::io("reading the import"))?;
        if text.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(&text).map_err(|error| {
            let cut = if error.is_eof() {
                "the line ends in the middle of its JSON (the file was cut short?): "
            } else {
                "not a line of an export: "
            };
            bad(number, &format!("{cut}{error}"))
        })?;
        match line {
            Line::Session { session } => {
                if let Some((session, frames)) = pending.replace((session, Vec::new())) {
                    each(session, frames).await?;
                }
            }
            Line::Frame(frame) => {
                let Some((session, frames)) = pending.as_mut() else {
                    return Err(bad(number, "a frame before any session"));
                };
                if frame.session != session.id {
                    return Err(bad(
                        number,
                        &format!(
                            "frame of `{}` inside session `{}`",
                            frame.session, session.id
                        ),
                    ));
                }
                frames.push(keyed(keys, frame).map_err(|message| bad(number, &message))?);
            }
            Line::End { .. } => {
                if let Some((session, frames)) = pending.take() {
                    each(session, frames).await?;
                }
                return Ok(());
            }
        }
    }
    Err(CommandError::Usage(
        "import: the input ends without its `end` line (cut short?)".to_owned(),
    ))
}

fn keyed(keys: &AppendKeys, line: FrameLine) -> Result<KeyedFrame, String> {
    Ok(KeyedFrame {
        key: keys.next_key(),
        frame: line.into_stored()?,
    })
}

async fn import_session(
    store: &RedisStore,
    mut session: Session,
    frames: Vec<KeyedFrame>,
    keys: &AppendKeys,
    on_conflict: OnConflict,
    report: &mut ImportReport,
) -> Result<(), CommandError> {
    if session.expires_at.as_millis() <= now_millis() {
        report.sessions_expired += 1;
        return Ok(());
    }
    let base_revision = match store.get(&session.id).await {
        Ok(live) => match on_conflict {
            OnConflict::Skip => {
                report.sessions_skipped += 1;
                return Ok(());
            }
            OnConflict::Overwrite => {
                store.delete_frames(&session.id).await?;
                session.revision = session.revision.max(live.revision) + 1;
                live.revision
            }
        },
        Err(Error::NotFound(_)) => session.revision,
        Err(error) => return Err(error.into()),
    };
    let write_back = SessionWriteBack {
        session,
        base_revision,
        updated: true,
        frames,
        key: keys.next_key(),
    };
    match store.write_back(&write_back).await {
        Ok(done) => {
            report.sessions_imported += 1;
            report.frames_written += done.frames_written;
            Ok(())
        }
        Err(Error::NotFound(id)) => {
            eprintln!(
                "mcp-proxy: session `{id}` was deleted in the target store within the last \
                 ttl; not imported (a deleted session stays deleted)"
            );
            report.sessions_refused += 1;
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// The configured Redis store, connected directly (no fallback wrapper).
///
/// Errors: [`CommandError::Usage`] when `storage.backend` is not `redis`; the
/// store's when it cannot connect.
pub async fn open_redis(config: &ProxyConfig) -> Result<RedisStore, CommandError> {
    if config.storage.backend != Backend::Redis {
        return Err(CommandError::Usage(
            "import writes into Redis only (`storage.backend = \"redis\"`, or --storage redis \
             --redis-url URL): a memory store opened by a command ends with it"
                .to_owned(),
        ));
    }
    Ok(RedisStore::connect(
        session_store::redis_config(&config.storage.redis),
        config.storage.settings(),
        Arc::new(SystemClock),
    )
    .await?)
}

/// `sessions import` from the command line: from `--input` (or stdin), with a
/// progress bar on a terminal, a summary on stderr.
pub async fn run(config: &ProxyConfig, args: &ImportArgs) -> Result<(), CommandError> {
    if args.check {
        return check(args).await;
    }
    import_from_input(config, args).await
}

/// `sessions import --check`: validates the export without any store or
/// configuration (the binary runs it before loading the configuration).
pub async fn check(args: &ImportArgs) -> Result<(), CommandError> {
    let (sessions, frames) = if args.input == Path::new("-") {
        check_format(&mut std::io::stdin().lock()).await?
    } else {
        let what = format!("opening `{}`", args.input.display());
        let file = std::fs::File::open(&args.input).map_err(CommandError::io(what))?;
        check_format(&mut std::io::BufReader::new(file)).await?
    };
    println!("a complete export: {sessions} sessions, {frames} frames");
    Ok(())
}

async fn import_from_input(config: &ProxyConfig, args: &ImportArgs) -> Result<(), CommandError> {
    let store = open_redis(config).await?;
    let progress = progress_bar(None, "importing");
    let report = if args.input == Path::new("-") {
        let stdin = std::io::stdin();
        import(&store, &mut stdin.lock(), args.on_conflict, &progress).await?
    } else {
        let what = format!("opening `{}`", args.input.display());
        let file = std::fs::File::open(&args.input).map_err(CommandError::io(what))?;
        import(
            &store,
            &mut std::io::BufReader::new(file),
            args.on_conflict,
            &progress,
        )
        .await?
    };
    progress.finish_and_clear();
    eprintln!(
        "mcp-proxy: imported {} sessions ({} frames); skipped {} (already there), {} expired, \
         {} refused (deleted in the target)",
        report.sessions_imported,
        report.frames_written,
        report.sessions_skipped,
        report.sessions_expired,
        report.sessions_refused
    );
    Ok(())
}
