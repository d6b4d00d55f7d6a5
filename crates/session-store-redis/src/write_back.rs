//! Writing back a session that was served from memory while Redis was
//! unreachable: the `restore` script merges it into Redis, or recreates it when
//! Redis lost it, keeping its frame ids where it can.

use session_store_core::{codec, Error, FrameId, Result, Session, StoredFrame};

use crate::{
    batch::{arg, num, raw, to_array, to_text, Batch},
    record::SessionBody,
    script_reply::{corrupt_field, numbers},
    AppendKey, RedisStore,
};

/// Frames per script call, so one call never holds Redis for long.
const FRAMES_PER_CALL: usize = 32;
/// Encoded frame bytes per script call (at least one frame is always sent).
const BYTES_PER_CALL: usize = 1024 * 1024;
/// Append keys a session remembers right after a write-back: two calls' worth, so
/// a call sent again after a lost reply finds every frame it already stored. The
/// next ordinary append trims the list back to
/// [`REMEMBERED_APPEND_KEYS`](crate::REMEMBERED_APPEND_KEYS).
const REMEMBERED_AFTER_WRITE_BACK: usize = 2 * FRAMES_PER_CALL;

/// A frame appended while Redis was unreachable, with the id handed out for it
/// and the key that makes storing it idempotent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedFrame {
    /// The idempotency key of its append.
    pub key: AppendKey,
    /// The frame and the id the caller was given.
    pub frame: StoredFrame,
}

/// A session served from memory during an outage, as it is to be written back.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionWriteBack {
    /// The session as it stands locally (fields, times, frame count, revision).
    pub session: Session,
    /// The revision Redis held when the local changes began (1 for a session
    /// created during the outage).
    pub base_revision: u64,
    /// Whether the session's fields were updated locally. When false, Redis keeps
    /// its own fields and revision.
    pub updated: bool,
    /// Frames appended locally, oldest first.
    pub frames: Vec<KeyedFrame>,
    /// Identifies this write-back, so that sending it again after a lost reply is
    /// recognised (and not mistaken for a concurrent update of the same revision).
    pub key: AppendKey,
}

/// What a write-back did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBackReport {
    /// Redis did not hold the session (lost, expired or deleted meanwhile), so it
    /// was created from the local copy.
    pub recreated: bool,
    /// Redis's revision when the local update lost to a concurrent one (Redis
    /// changed the session during the outage, so its fields were kept).
    pub conflict_revision: Option<u64>,
    /// Frames stored by this write-back.
    pub frames_written: u64,
    /// Frames Redis already had (their append reached it before the outage
    /// began, but the reply was lost).
    pub frames_already_stored: u64,
    /// Frames older than the stream's newest entry (another instance stored
    /// later frames meanwhile): inserted in place under their own id.
    pub frames_interleaved: u64,
    /// Where each frame is stored now, in the order given.
    pub frame_ids: Vec<FrameId>,
}

impl RedisStore {
    /// Writes back a session served from memory while Redis was unreachable.
    ///
    /// Rules, applied atomically per call by one script:
    /// - missing or expired in Redis: created from the local copy (times,
    ///   revision, frame count), with the local frames;
    /// - live in Redis: its fields are replaced only when `updated` is set and
    ///   Redis still holds `base_revision` (or the update's own revision written
    ///   by this same write-back, recognised by its `key`); otherwise Redis's fields win and the report names
    ///   its revision. Activity and expiry take the later of both sides;
    /// - each frame is stored once, under the id it was given locally: it is
    ///   skipped when Redis remembers its append key or already holds its id
    ///   (an earlier attempt stored it, whatever failed where since); a frame
    ///   older than the stream's newest entry is inserted in place (the later
    ///   entries are re-added after it with their own ids). Later appends get
    ///   ids greater than every id handed out locally.
    ///
    /// Safe to call again with the same write-back after an error, any number
    /// of times, with any appends in between. Frames go in
    /// calls of at most 32 frames or 1 MiB; if the session expires or is deleted
    /// between two calls, the rest is [`Error::NotFound`]. A session deleted in
    /// Redis while it was served from memory (its tombstone, kept one ttl, is
    /// there) is not recreated: [`Error::NotFound`].
    pub async fn write_back(&self, write_back: &SessionWriteBack) -> Result<WriteBackReport> {
        let session = &write_back.session;
        let id = &session.id;
        let body = SessionBody::of_session(session).encode(id, &self.settings)?;
        let encoded: Vec<Vec<u8>> = write_back
            .frames
            .iter()
            .map(|keyed| codec::encode(&keyed.frame.frame))
            .collect::<Result<_>>()?;
        let mut report = WriteBackReport::default();
        let mut start = 0;
        loop {
            let end = chunk_end(&encoded, start);
            let first = start == 0;
            let chunk = Chunk {
                first,
                count_frames: first || !report.recreated,
                frames: &write_back.frames[start..end],
                encoded: &encoded[start..end],
            };
            let part = self.write_back_call(write_back, &body, chunk).await;
            self.forget_near(id);
            let part = part?;
            if first {
                report.recreated = part.recreated;
                report.conflict_revision = part.conflict_revision;
            }
            report.frames_written += part.frames_written;
            report.frames_already_stored += part.frames_already_stored;
            report.frames_interleaved += part.frames_interleaved;
            report.frame_ids.extend(part.frame_ids);
            start = end;
            if start >= encoded.len() {
                return Ok(report);
            }
        }
    }

    async fn write_back_call(
        &self,
        write_back: &SessionWriteBack,
        body: &[u8],
        chunk: Chunk<'_>,
    ) -> Result<WriteBackReport> {
        let session = &write_back.session;
        let id = &session.id;
        let (meta, frames) = (self.keys.meta(id), self.keys.frames(id));
        let what = format!("write-back of `{meta}`");
        let flag = |on: bool| arg(if on { "1" } else { "0" });
        let mut args = vec![
            num(self.now_ms()),
            num(self.lifetime.ttl_ms),
            num(self.lifetime.max_life_ms),
            num(self.settings.max_frames_per_session),
            num(u64::from(codec::FORMAT_VERSION)),
            num(write_back.base_revision),
            num(session.revision),
            flag(write_back.updated),
            raw(body.to_vec()),
            num(session.created_at.as_millis()),
            num(session.last_activity.as_millis()),
            num(session.frame_count),
            num(session.expires_at.as_millis()),
            flag(chunk.first),
            num(REMEMBERED_AFTER_WRITE_BACK as u64),
            flag(chunk.count_frames),
            arg(write_back.key.as_str()),
            num(self.settings.max_session_frame_bytes),
        ];
        for (keyed, bytes) in chunk.frames.iter().zip(chunk.encoded) {
            args.push(arg(keyed.key.as_str()));
            args.push(arg(keyed.frame.id.to_string()));
            args.push(raw(bytes.clone()));
        }

        // Idempotent by design (append keys, revision check accepting its own
        // revision), so a lost reply is cured by sending it again.
        let mut batch = Batch::retry_safe();
        let script = batch.push_script(
            &self.scripts.restore,
            vec![meta.clone(), frames, self.keys.tombstone(id)],
            args,
        );
        let shard = self.keys.shard_of(id);
        let indexes = chunk.first.then(|| {
            [
                batch.push(
                    "ZADD",
                    vec![
                        arg(self.keys.expiry_index(shard)),
                        arg("GT"),
                        num(session.expires_at.as_millis()),
                        arg(id.as_str()),
                    ],
                ),
                batch.push(
                    "ZADD",
                    vec![arg(self.keys.id_index(shard)), arg("0"), arg(id.as_str())],
                ),
            ]
        });
        let wait = self.push_replica_wait(&mut batch, &meta);
        let mut replies = self.run(&batch, &what).await?;

        let reply = to_array(replies.take(script, &what)?, &what)?;
        let mut parts = reply.into_iter();
        let status = parts.next().and_then(to_text).unwrap_or_default();
        let rest: Vec<_> = parts.collect();
        let recreated = match status.as_str() {
            "MERGED" => false,
            "RECREATED" => true,
            "NOTFOUND" => return Err(Error::NotFound(id.clone())),
            "DELETED" => {
                // Deleted while it was away: deleted stays deleted. The index
                // entries queued alongside belong to no session; drop them.
                if let Some(indexes) = indexes {
                    for index in indexes {
                        let _ = replies.take(index, &what);
                    }
                    self.drop_index_entries(id, shard).await;
                }
                return Err(Error::NotFound(id.clone()));
            }
            "CORRUPT" => return Err(corrupt_field(rest, &meta)),
            other => {
                return Err(Error::corrupt(format!(
                    "{what}: unexpected script status `{other}`"
                )))
            }
        };
        if let Some(indexes) = indexes {
            for index in indexes {
                let what = format!("index entries of `{id}`");
                if let Err(error) = replies.take(index, &what) {
                    self.hint_failed(&what, &error);
                }
            }
        }
        self.check_replica_wait(&mut replies, wait, &what)?;

        let mut rest = rest.into_iter();
        let conflict_revision = match rest.next().and_then(to_text) {
            Some(text) if !text.is_empty() => Some(
                text.parse()
                    .map_err(|_| Error::corrupt(format!("{what}: bad revision `{text}`")))?,
            ),
            _ => None,
        };
        let counts: Vec<_> = rest.by_ref().take(4).collect();
        let [written, skipped, interleaved, _expires] = numbers::<4>(&counts, &what)?;
        let frame_ids = rest
            .next()
            .map(|ids| to_array(ids, &what))
            .transpose()?
            .unwrap_or_default()
            .into_iter()
            .map(|value| {
                to_text(value)
                    .ok_or_else(|| Error::corrupt(format!("{what}: frame id is not text")))?
                    .parse::<FrameId>()
                    .map_err(|e| Error::corrupt(format!("{what}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(WriteBackReport {
            recreated,
            conflict_revision,
            frames_written: written,
            frames_already_stored: skipped,
            frames_interleaved: interleaved,
            frame_ids,
        })
    }
}

/// One script call's share of a write-back.
struct Chunk<'a> {
    first: bool,
    /// Whether frames stored by this call raise Redis's frame count (not after a
    /// recreate, which wrote the local count).
    count_frames: bool,
    frames: &'a [KeyedFrame],
    encoded: &'a [Vec<u8>],
}

/// The end of the call starting at `start`: at most [`FRAMES_PER_CALL`] frames
/// and [`BYTES_PER_CALL`] bytes, but at least one frame.
fn chunk_end(encoded: &[Vec<u8>], start: usize) -> usize {
    let mut end = start;
    let mut bytes = 0;
    while end < encoded.len() && end - start < FRAMES_PER_CALL {
        bytes += encoded[end].len();
        if bytes > BYTES_PER_CALL && end > start {
            break;
        }
        end += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_count_and_bytes_and_always_progress() {
        let small = vec![vec![0u8; 10]; 70];
        assert_eq!(chunk_end(&small, 0), 32);
        assert_eq!(chunk_end(&small, 64), 70);
        let big = vec![vec![0u8; BYTES_PER_CALL]; 3];
        assert_eq!(chunk_end(&big, 0), 1);
        assert_eq!(chunk_end(&big, 2), 3);
        assert_eq!(chunk_end(&[], 0), 0);
    }
}
