//! Frame operations on the session's stream: append, read, count, delete.

use session_store_core::{
    codec, Error, Frame, FrameGap, FrameId, FramePage, Result, SessionId, StoredFrame,
};

use crate::AppendKey;

use crate::{
    append_key::REMEMBERED_APPEND_KEYS,
    batch::{arg, num, raw, to_array, to_bytes, to_text, Batch},
    script_reply::{numbers, ok_values},
    RedisStore,
};

/// Most frames one `read_frames` call returns, whatever limit is asked; a caller
/// replaying more pages on with the last id.
pub const MAX_FRAMES_PER_READ: usize = 10_000;

impl RedisStore {
    /// Appends a frame under an idempotency key: sending the same key again (a
    /// retry after a lost reply, a fallback write-back) stores nothing new and
    /// returns the id the first attempt got, as long as fewer than
    /// [`REMEMBERED_APPEND_KEYS`](crate::REMEMBERED_APPEND_KEYS) other appends
    /// reached the session in between.
    ///
    /// Errors as [`append_frame`](session_store_core::SessionStore::append_frame).
    pub async fn append_frame_with_key(
        &self,
        id: &SessionId,
        frame: &Frame,
        key: &AppendKey,
    ) -> Result<FrameId> {
        let appended = self.append(id, std::iter::once((frame, key))).await;
        self.forget_near(id);
        appended?
            .first()
            .copied()
            .ok_or_else(|| Error::corrupt(format!("append to session `{id}`: no frame id")))
    }

    /// Appends `frames` in order, each under its own key, with one `EVALSHA`
    /// (see [`append_frames`](session_store_core::SessionStore::append_frames)).
    /// Sending the same batch with the same keys again stores nothing new and
    /// returns the first attempt's ids, as long as fewer than
    /// [`REMEMBERED_APPEND_KEYS`](crate::REMEMBERED_APPEND_KEYS) other appends
    /// reached the session in between.
    ///
    /// Errors as `append_frames`; InvalidInput also when `frames` and `keys`
    /// differ in length.
    pub async fn append_frames_with_keys(
        &self,
        id: &SessionId,
        frames: &[Frame],
        keys: &[AppendKey],
    ) -> Result<Vec<FrameId>> {
        if frames.len() != keys.len() {
            return Err(Error::invalid_input(format!(
                "{} frames need {} append keys, got {}",
                frames.len(),
                frames.len(),
                keys.len()
            )));
        }
        let appended = self.append(id, frames.iter().zip(keys)).await;
        self.forget_near(id);
        appended
    }

    /// A fresh append key from this store's generator, for callers that keep it
    /// to send the same append again.
    pub fn new_append_key(&self) -> AppendKey {
        self.append_keys.next_key()
    }

    /// Appends (frame, key) pairs with one `EVALSHA` of the append script. Every
    /// frame is checked and encoded before anything is sent, so a frame over
    /// `max_frame_bytes` stores nothing of the batch.
    pub(crate) async fn append<'a>(
        &self,
        id: &SessionId,
        batch: impl ExactSizeIterator<Item = (&'a Frame, &'a AppendKey)>,
    ) -> Result<Vec<FrameId>> {
        let count = batch.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        let now = self.now_ms();
        let mut args = Vec::with_capacity(6 + 2 * count);
        args.extend([
            num(now),
            num(self.settings.max_frames_per_session),
            num(self.lifetime.ttl_ms),
            num(self.lifetime.max_life_ms),
            num(REMEMBERED_APPEND_KEYS as u64),
            num(self.settings.max_session_frame_bytes),
        ]);
        for (frame, key) in batch {
            self.settings.check_frame(frame)?;
            args.push(arg(key.as_str()));
            args.push(raw(codec::encode(frame)?));
        }
        let (meta, frames) = (self.keys.meta(id), self.keys.frames(id));
        let what = format!("append of {count} frame(s) to `{meta}` and `{frames}`");

        // The keys make the script safe to send again, so the batch is retried.
        // No index write: the expiry index lags (never leads) the real expiry;
        // purge and count re-file entries that come due.
        let mut batch = Batch::retry_safe();
        let script = batch.push_script(&self.scripts.append, vec![meta.clone(), frames], args);
        let wait = self.push_replica_wait(&mut batch, &meta);
        let mut replies = self.run(&batch, &what).await?;

        let rest = ok_values(replies.take(script, &what)?, id, &meta, &what)?;
        self.check_replica_wait(&mut replies, wait, &what)?;
        let ids = rest
            .into_iter()
            .nth(2)
            .ok_or_else(|| Error::corrupt(format!("{what}: script reply has no frame ids")))?;
        let ids = to_array(ids, &what)?
            .into_iter()
            .map(|frame_id| {
                to_text(frame_id)
                    .ok_or_else(|| Error::corrupt(format!("{what}: a frame id is not text")))?
                    .parse::<FrameId>()
                    .map_err(|e| Error::corrupt(format!("{what}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        if ids.len() != count {
            return Err(Error::corrupt(format!(
                "{what}: script replied {} frame ids",
                ids.len()
            )));
        }
        Ok(ids)
    }

    /// A page of frames after `after` (see
    /// [`read_frames_page`](session_store_core::SessionStore::read_frames_page)):
    /// one script reads at most `max_read_bytes` of entries and the trim marker
    /// `tid` together, so the gap it reports matches the frames it returns.
    pub(crate) async fn read(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<FramePage> {
        let now = self.now_ms();
        let (meta, frames) = (self.keys.meta(id), self.keys.frames(id));
        let what = format!("reading `{frames}`");
        // At least one: a page of 0 would read nothing and move nothing on.
        let count = limit.clamp(1, MAX_FRAMES_PER_READ);

        let mut start = after.map_or_else(|| "-".to_owned(), |after| format!("({after}"));
        let mut out = Vec::new();
        let mut gap = None;
        for page in 0..MAX_UNDECODABLE_PAGES {
            let mut batch = Batch::retry_safe();
            let probe = self.push_probe(&mut batch, &meta);
            let script = batch.push_script(
                &self.scripts.read_page,
                vec![meta.clone(), frames.clone()],
                vec![
                    arg(&start),
                    num(count as u64),
                    num(self.settings.max_read_bytes as u64),
                ],
            );
            let mut replies = self.run(&batch, &what).await?;
            if self
                .probe_outcome(&mut replies, probe, &meta, now)
                .await?
                .is_none()
            {
                return Err(Error::NotFound(id.clone()));
            }
            let mut reply = to_array(replies.take(script, &what)?, &what)?.into_iter();
            let removed_through = reply
                .next()
                .and_then(to_text)
                .ok_or_else(|| Error::corrupt(format!("{what}: script reply has no marker")))?
                .parse::<FrameId>()
                .map_err(|e| Error::corrupt(format!("{what}: field `tid`: {e}")))?;
            let entries = reply
                .next()
                .map(|entries| to_array(entries, &what))
                .transpose()?
                .unwrap_or_default();
            let mut last_seen = None;
            for entry in entries.into_iter().take(limit.min(MAX_FRAMES_PER_READ)) {
                let entry_id = entry_id(&entry);
                match decode_entry(entry, &frames) {
                    Ok(frame) => out.push(frame),
                    // One undecodable frame (written by a newer release, or
                    // damaged) is skipped, so it never blocks a replay.
                    Err(Error::Corrupt(message)) => self.skipped_record(&frames, &message),
                    Err(other) => return Err(other),
                }
                last_seen = entry_id;
            }
            if page == 0 {
                gap = FrameGap::detect(after, removed_through, &out);
            }
            // A page of nothing but undecodable frames would look like the end
            // of the stream: read on after it (bounded).
            match last_seen {
                Some(last) if out.is_empty() => start = format!("({last}"),
                _ => break,
            }
        }
        if let (Some(gap), Some(first)) = (gap.as_mut(), out.first()) {
            gap.first_kept = Some(first.id);
        }
        Ok(FramePage { frames: out, gap })
    }

    pub(crate) async fn count_session_frames(&self, id: &SessionId) -> Result<u64> {
        let now = self.now_ms();
        let (meta, frames) = (self.keys.meta(id), self.keys.frames(id));
        let what = format!("XLEN `{frames}`");
        let mut batch = Batch::retry_safe();
        let probe = self.push_probe(&mut batch, &meta);
        let len = batch.push("XLEN", vec![arg(&frames)]);
        let mut replies = self.run(&batch, &what).await?;
        let live = self.probe_outcome(&mut replies, probe, &meta, now).await?;
        let len = replies.int(len, &what)?;
        if live.is_none() {
            return Err(Error::NotFound(id.clone()));
        }
        Ok(len.unsigned_abs())
    }

    pub(crate) async fn delete_session_frames(&self, id: &SessionId) -> Result<u64> {
        let now = self.now_ms();
        let (meta, frames) = (self.keys.meta(id), self.keys.frames(id));
        let what = format!("deleting the frames of `{meta}`");
        // One script checks liveness and removes the stream; its key makes it
        // safe to send again (a repeat answers the count the first one removed).
        let key = self.append_keys.next_key();
        let mut batch = Batch::retry_safe();
        let script = batch.push_script(
            &self.scripts.delete_frames,
            vec![meta.clone(), frames],
            vec![num(now), num(self.lifetime.max_life_ms), arg(key.as_str())],
        );
        let wait = self.push_replica_wait(&mut batch, &meta);
        let mut replies = self.run(&batch, &what).await?;
        let rest = ok_values(replies.take(script, &what)?, id, &meta, &what)?;
        self.check_replica_wait(&mut replies, wait, &what)?;
        let [removed] = numbers::<1>(&rest, &what)?;
        Ok(removed)
    }
}

/// Pages of only undecodable frames `read_frames` reads past before it answers.
const MAX_UNDECODABLE_PAGES: usize = 8;

/// The id of an `XRANGE` entry, as text.
fn entry_id(entry: &fred::types::Value) -> Option<String> {
    match entry {
        fred::types::Value::Array(parts) => parts.first().cloned().and_then(to_text),
        _ => None,
    }
}

/// One `XRANGE` entry `[id, [f, <bytes>]]` as a stored frame.
fn decode_entry(entry: fred::types::Value, key: &str) -> Result<StoredFrame> {
    let what = format!("entry of `{key}`");
    let mut parts = to_array(entry, &what)?.into_iter();
    let id = parts
        .next()
        .and_then(to_text)
        .ok_or_else(|| Error::corrupt(format!("{what} has no id")))?;
    let what = format!("entry {id} of `{key}`");
    let frame_id = id
        .parse::<FrameId>()
        .map_err(|e| Error::corrupt(format!("{what}: {e}")))?;
    let fields = parts
        .next()
        .map(|f| to_array(f, &what))
        .transpose()?
        .unwrap_or_default();
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if to_text(name).as_deref() == Some("f") {
            let bytes = to_bytes(value)
                .ok_or_else(|| Error::corrupt(format!("{what}: field `f` is not a string")))?;
            let frame =
                codec::decode(&bytes).map_err(|e| Error::corrupt(format!("{what}: {e}")))?;
            return Ok(StoredFrame {
                id: frame_id,
                frame,
            });
        }
    }
    Err(Error::corrupt(format!("{what} has no `f` field")))
}
