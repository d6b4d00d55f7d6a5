//! The outage journal on local disk (`journal_dir`), so that a process killed
//! during an outage loses no write it acknowledged: every change to a journal
//! entry is appended to `journal.log` and fsynced before the call returns, the
//! file is replayed when the store starts, and it is emptied once everything
//! was written back.
//!
//! Format: a sequence of records, each `[length: u32 LE][crc32: u32 LE][body]`,
//! the body a MessagePack [`Record`]. Replay stops at the first record that is
//! short or fails its checksum (a write torn by the crash: it was never
//! acknowledged) and cuts the file there.

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use session_store_core::{Error, FrameId, Result, Session, SessionId, StoredFrame};
use session_store_redis::{AppendKey, KeyedFrame};

/// Largest record accepted on replay (a frame is at most `max_frame_bytes`).
const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// An entry's state without its frames.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) session: Session,
    pub(crate) base_revision: u64,
    pub(crate) created_locally: bool,
    pub(crate) updated: bool,
    pub(crate) deleted: bool,
    pub(crate) base_last_frame_id: Option<FrameId>,
    pub(crate) last_frame_id: Option<FrameId>,
    pub(crate) replaces: bool,
    pub(crate) write_back_key: String,
}

/// A frame with its append key, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DiskFrame {
    key: String,
    frame: StoredFrame,
}

impl DiskFrame {
    pub(crate) fn of(keyed: &KeyedFrame) -> Self {
        DiskFrame {
            key: keyed.key.as_str().to_owned(),
            frame: keyed.frame.clone(),
        }
    }

    fn keyed(self) -> Result<KeyedFrame> {
        Ok(KeyedFrame {
            key: AppendKey::new(self.key)?,
            frame: self.frame,
        })
    }
}

/// One change to the journal.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Record {
    /// The entry of `id` now has `header`, holds its last `frames` frames, and
    /// `appended` (when set) was appended as the newest of them.
    State {
        id: SessionId,
        header: Header,
        frames: u64,
        appended: Option<DiskFrame>,
    },
    /// The whole entry, frames included (written when the file is compacted).
    Whole {
        id: SessionId,
        header: Header,
        frames: Vec<DiskFrame>,
    },
    /// The entry of `id` was written back (or dropped): it is gone.
    Removed { id: SessionId },
}

/// An entry rebuilt by replay.
#[derive(Debug)]
pub(crate) struct Replayed {
    pub(crate) header: Header,
    pub(crate) frames: Vec<KeyedFrame>,
}

/// The open journal file.
#[derive(Debug)]
pub(crate) struct DiskJournal {
    path: PathBuf,
    file: Mutex<File>,
}

fn io_error(path: &Path, doing: &str, error: &std::io::Error) -> Error {
    Error::unavailable(format!(
        "fallback journal file `{}`: {doing} failed: {error} (check storage.redis.breaker.journal_dir)",
        path.display()
    ))
}

impl DiskJournal {
    /// Opens (creating) `dir/journal.log`, replays it, and rewrites it compacted.
    /// Returns the journal and the entries it held.
    ///
    /// Errors: [`Error::Config`] when the directory or file cannot be created,
    /// read or written (the message names the path).
    pub(crate) fn open(dir: &Path) -> Result<(Self, Vec<(SessionId, Replayed)>)> {
        let config = |doing: &str, error: std::io::Error| {
            Error::config(format!(
                "storage.redis.breaker.journal_dir `{}`: {doing} failed: {error}",
                dir.display()
            ))
        };
        fs::create_dir_all(dir).map_err(|e| config("creating the directory", e))?;
        let path = dir.join("journal.log");
        let mut bytes = Vec::new();
        if path.exists() {
            File::open(&path)
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .map_err(|e| config("reading journal.log", e))?;
        }
        let entries = replay(&bytes)?;
        // Compact: the live entries, whole, into a new file that replaces the old.
        let fresh = dir.join("journal.log.new");
        let mut out = Vec::new();
        for (id, entry) in &entries {
            encode_into(
                &mut out,
                &Record::Whole {
                    id: id.clone(),
                    header: entry.header.clone(),
                    frames: entry.frames.iter().map(DiskFrame::of).collect(),
                },
            )?;
        }
        let mut file = File::create(&fresh).map_err(|e| config("creating journal.log.new", e))?;
        file.write_all(&out)
            .and_then(|()| file.sync_all())
            .map_err(|e| config("writing journal.log.new", e))?;
        fs::rename(&fresh, &path).map_err(|e| config("replacing journal.log", e))?;
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| config("opening journal.log", e))?;
        Ok((
            DiskJournal {
                path,
                file: Mutex::new(file),
            },
            entries.into_iter().collect(),
        ))
    }

    /// Appends `record` and fsyncs it; the caller acknowledges its write only
    /// after this returns Ok.
    ///
    /// Errors: Unavailable naming the file when the write or fsync fails.
    pub(crate) fn append(&self, record: &Record) -> Result<()> {
        let mut bytes = Vec::new();
        encode_into(&mut bytes, record)?;
        let mut file = self.file.lock();
        file.write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error(&self.path, "appending a record", &e))
    }

    /// Empties the file (everything was written back). Called with the
    /// journal's lock held, so no entry is added meanwhile.
    pub(crate) fn clear(&self) -> Result<()> {
        let file = self.file.lock();
        file.set_len(0)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error(&self.path, "emptying", &e))
    }
}

fn encode_into(out: &mut Vec<u8>, record: &Record) -> Result<()> {
    let body = rmp_serde::to_vec(record)
        .map_err(|e| Error::corrupt(format!("fallback journal record: {e}")))?;
    let len = u32::try_from(body.len()).map_err(|_| {
        Error::invalid_input(format!(
            "fallback journal record of {} bytes is too large",
            body.len()
        ))
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// The entries `bytes` leave, stopping at the first torn or corrupt record.
fn replay(bytes: &[u8]) -> Result<Vec<(SessionId, Replayed)>> {
    let mut entries: HashMap<SessionId, Replayed> = HashMap::new();
    let mut order: Vec<SessionId> = Vec::new();
    let mut at = 0;
    while let Some(record) = next_record(bytes, &mut at) {
        match record {
            Record::State {
                id,
                header,
                frames,
                appended,
            } => {
                let entry = entries.entry(id.clone()).or_insert_with(|| {
                    order.push(id.clone());
                    Replayed {
                        header: header.clone(),
                        frames: Vec::new(),
                    }
                });
                entry.header = header;
                if let Some(frame) = appended {
                    entry.frames.push(frame.keyed()?);
                }
                let keep = usize::try_from(frames).unwrap_or(usize::MAX);
                if entry.frames.len() > keep {
                    entry.frames.drain(..entry.frames.len() - keep);
                }
            }
            Record::Whole { id, header, frames } => {
                if !entries.contains_key(&id) {
                    order.push(id.clone());
                }
                let frames = frames
                    .into_iter()
                    .map(DiskFrame::keyed)
                    .collect::<Result<_>>()?;
                entries.insert(id, Replayed { header, frames });
            }
            Record::Removed { id } => {
                entries.remove(&id);
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| entries.remove(&id).map(|entry| (id, entry)))
        .collect())
}

/// The record at `*at`, advancing past it; `None` at the end or at a torn or
/// corrupt record (nothing after it was acknowledged).
fn next_record(bytes: &[u8], at: &mut usize) -> Option<Record> {
    let head = bytes.get(*at..at.checked_add(8)?)?;
    let len = usize::try_from(u32::from_le_bytes(head[..4].try_into().ok()?)).ok()?;
    let crc = u32::from_le_bytes(head[4..8].try_into().ok()?);
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let start = *at + 8;
    let body = bytes.get(start..start.checked_add(len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let record = rmp_serde::from_slice(body).ok()?;
    *at = start + len;
    Some(record)
}

#[cfg(test)]
mod tests {
    use session_store_core::{Direction, Frame, NewSession, Timestamp};

    use super::*;

    fn header(id: &SessionId) -> Header {
        Header {
            session: NewSession::new(id.clone())
                .into_session(Timestamp::from_millis(1), Timestamp::from_millis(100)),
            base_revision: 1,
            created_locally: true,
            updated: false,
            deleted: false,
            base_last_frame_id: None,
            last_frame_id: None,
            replaces: false,
            write_back_key: "k0".to_owned(),
        }
    }

    /// A state record of `id` with no frames.
    fn bare(id: &SessionId) -> Record {
        Record::State {
            id: id.clone(),
            header: header(id),
            frames: 0,
            appended: None,
        }
    }

    fn frame(n: u64) -> DiskFrame {
        DiskFrame {
            key: format!("k{n}"),
            frame: StoredFrame {
                id: FrameId::new(10, n),
                frame: Frame::new(
                    Direction::ClientToServer,
                    Timestamp::from_millis(10),
                    vec![1],
                ),
            },
        }
    }

    #[test]
    fn replay_applies_states_trims_and_removals_and_stops_at_a_torn_record() {
        let a = SessionId::new("a").unwrap();
        let b = SessionId::new("b").unwrap();
        let mut log = Vec::new();
        let mut two_records = 0;
        for n in 1..=3 {
            if n == 3 {
                two_records = log.len();
            }
            let record = Record::State {
                id: a.clone(),
                header: header(&a),
                frames: 2,
                appended: Some(frame(n)),
            };
            encode_into(&mut log, &record).unwrap();
        }
        encode_into(&mut log, &bare(&b)).unwrap();
        encode_into(&mut log, &Record::Removed { id: b.clone() }).unwrap();
        let whole = log.len();
        encode_into(&mut log, &bare(&b)).unwrap();
        log.truncate(log.len() - 3);
        let entries = replay(&log).unwrap();
        assert_eq!(entries.len(), 1, "b removed; its torn re-creation ignored");
        let (id, entry) = &entries[0];
        assert_eq!(id, &a);
        let ids: Vec<_> = entry.frames.iter().map(|f| f.frame.id.seq).collect();
        assert_eq!(ids, vec![2, 3], "trimmed to the last 2");

        assert!(whole > two_records);
        log[two_records + 9] ^= 0xff;
        let entries = replay(&log).unwrap();
        let ids: Vec<_> = entries[0].1.frames.iter().map(|f| f.frame.id.seq).collect();
        assert_eq!(ids, vec![1, 2], "a bad checksum ends replay there");
        assert_eq!(entries.len(), 1);
    }
}
