//! The upstream's own resume point of a reply stream when its last event carried
//! no message: a priming event (an id with empty data, 2025-11-25) is not recorded
//! as a frame, so its id is kept as a small keyed value beside the frames. A
//! takeover resumes the upstream at whichever is later: this, or the id of the
//! last recorded event.

use std::time::Duration;

use session_store::{FrameId, KvKey, SessionId, SessionStore};

use crate::{event_id::StreamId, recorder::Recorder};

/// How long a stream's resume point is kept: longer than any upstream keeps a
/// stream resumable.
const CURSOR_TTL: Duration = Duration::from_secs(60 * 60);

fn cursor_key(session: &SessionId, stream: &StreamId) -> Option<KvKey> {
    KvKey::new(format!("upstream-cursor:{session}:{stream}")).ok()
}

/// Remembers that the upstream's event `upstream_event_id` came after frame
/// `after` of the stream. Queued on the instance's [`Recorder`] (the relay does
/// not wait for the store; puts of one stream land in order) and best effort:
/// without it a takeover resumes from the last recorded event.
pub async fn remember(
    recorder: &Recorder,
    session: &SessionId,
    stream: &StreamId,
    after: FrameId,
    upstream_event_id: &str,
) {
    let Some(key) = cursor_key(session, stream) else {
        return;
    };
    let value = format!("{after} {upstream_event_id}");
    recorder
        .put_value(key, value.into_bytes(), CURSOR_TTL)
        .await;
}

/// The remembered resume point: the frame it came after, and the upstream's id.
pub async fn recall(
    store: &dyn SessionStore,
    session: &SessionId,
    stream: &StreamId,
) -> Option<(FrameId, String)> {
    let key = cursor_key(session, stream)?;
    let entry = store.kv_get(&key).await.ok()??;
    let text = String::from_utf8(entry.value).ok()?;
    let (frame, id) = text.split_once(' ')?;
    Some((frame.parse().ok()?, id.to_owned()))
}
