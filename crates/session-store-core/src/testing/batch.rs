//! The behaviours of [`SessionStore::append_frames`](crate::SessionStore::append_frames): a batch is appended as
//! its frames would be one after another (ids, counters, trimming, the gap a
//! replay reports), and is refused whole when the session is gone or a frame
//! is too large. Run by every backend with the rest of the suite.

use std::time::Duration;

use super::{
    behaviours::{create, fixture, fixture_with, new_id, Fixture},
    suite_settings, StoreFactory,
};
use crate::{
    Clock, Direction, Error, Frame, FrameGap, FrameId, SessionId, StoreSettings, StoredFrame,
};

/// Bytes a frame of `BODY - 200` payload bytes from [`batch`] counts in every
/// backend (payload, its place, stream, event id and header, and the
/// encoding): more than `BODY - 200`, at most `BODY`.
const BODY: usize = 1000;

/// `count` frames of `size` payload bytes, alternating directions, each body
/// naming its place (`tag` and index) so a read back can be compared.
fn batch(fx: &Fixture, tag: &str, count: usize, size: usize) -> Vec<Frame> {
    (0..count)
        .map(|n| {
            let direction = if n % 2 == 0 {
                Direction::ServerToClient
            } else {
                Direction::ClientToServer
            };
            let body = format!("{tag}-{n:0>size$}");
            let mut frame = Frame::new(direction, fx.clock.now(), body.into_bytes());
            frame.stream_id = Some(format!("{tag}-stream"));
            frame.event_id = Some(format!("{tag}{n}"));
            frame
                .headers
                .insert("content-type".to_owned(), "application/json".to_owned());
            frame
        })
        .collect()
}

fn ids_of(frames: &[StoredFrame]) -> Vec<FrameId> {
    frames.iter().map(|f| f.id).collect()
}

fn assert_ascending(ids: &[FrameId], after: FrameId) {
    let mut last = after;
    for id in ids {
        assert!(*id > last, "{id} after {last} in {ids:?}");
        last = *id;
    }
}

async fn stored(fx: &Fixture, id: &SessionId) -> Vec<StoredFrame> {
    fx.store.read_frames(id, None, 100_000).await.expect("read")
}

pub async fn append_frames_returns_ascending_ids_after_earlier_ones_and_bumps_frame_count(
    factory: &dyn StoreFactory,
) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let first = fx
        .store
        .append_frame(&id, batch(&fx, "single", 1, 4).remove(0))
        .await
        .unwrap();
    fx.clock.advance(Duration::from_millis(5));
    let ids = fx
        .store
        .append_frames(&id, batch(&fx, "a", 5, 4))
        .await
        .unwrap();
    assert_eq!(ids.len(), 5, "one id per frame");
    assert_ascending(&ids, first);
    // A second batch in the same millisecond still sorts after the first.
    let more = fx
        .store
        .append_frames(&id, batch(&fx, "b", 3, 4))
        .await
        .unwrap();
    assert_ascending(&more, ids[4]);
    let session = fx.store.get(&id).await.unwrap();
    assert_eq!(session.frame_count, 9, "1 + 5 + 3 frames");
    assert_eq!(session.last_activity, fx.clock.now());
    assert_eq!(
        session.expires_at,
        session.last_activity.saturating_add(fx.settings.ttl),
        "a batch slides the expiry"
    );
    assert_eq!(fx.store.count_frames(&id).await.unwrap(), 9);
}

pub async fn append_frames_reads_back_equal_and_in_order(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let frames = batch(&fx, "read", 7, 30);
    let ids = fx.store.append_frames(&id, frames.clone()).await.unwrap();
    let read = stored(&fx, &id).await;
    assert_eq!(ids_of(&read), ids, "every frame, in the batch's order");
    let payloads: Vec<Frame> = read.into_iter().map(|f| f.frame).collect();
    assert_eq!(
        payloads, frames,
        "payload, direction, time and headers kept"
    );
}

pub async fn append_frames_trims_across_the_batch_by_count(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let max = usize::try_from(fx.settings.max_frames_per_session).unwrap();
    let slack = usize::try_from(factory.frame_trim_slack()).unwrap();
    let earlier = fx
        .store
        .append_frames(&id, batch(&fx, "early", 3, 4))
        .await
        .unwrap();
    // One batch longer than the cap: its own oldest frames are trimmed too.
    let total = max + slack + 5;
    let ids = fx
        .store
        .append_frames(&id, batch(&fx, "big", total, 4))
        .await
        .unwrap();
    let read = stored(&fx, &id).await;
    let kept = read.len();
    assert!(
        kept >= max && kept <= max + slack,
        "kept {kept}, max {max}, slack {slack}"
    );
    assert_eq!(
        ids_of(&read),
        ids[total - kept..].to_vec(),
        "the newest frames of the batch are kept, in order"
    );
    assert_eq!(
        fx.store.get(&id).await.unwrap().frame_count,
        (3 + total) as u64,
        "trimming does not lower frame_count"
    );
    let page = fx
        .store
        .read_frames_page(&id, Some(earlier[0]), 100_000)
        .await
        .unwrap();
    assert_eq!(page.frames, read[..page.frames.len()].to_vec());
    assert_eq!(
        page.gap,
        Some(FrameGap {
            after: earlier[0],
            last_removed: ids[total - kept - 1],
            first_kept: read.first().map(|f| f.id),
        }),
        "a reader after {} lost the rest of the early frames and the batch's oldest",
        earlier[0]
    );
}

pub async fn append_frames_trims_across_the_batch_by_bytes(factory: &dyn StoreFactory) {
    // Room for 4 frames of `BODY - 200` payload bytes, not for 5.
    let settings = StoreSettings {
        max_frame_bytes: 2 * BODY,
        max_session_frame_bytes: 4 * BODY as u64 + 20,
        ..suite_settings()
    };
    let fx = fixture_with(factory, settings).await;
    let id = create(&fx).await;
    let first = fx
        .store
        .append_frames(&id, batch(&fx, "first", 2, BODY - 200))
        .await
        .unwrap();
    let ids = fx
        .store
        .append_frames(&id, batch(&fx, "second", 6, BODY - 200))
        .await
        .unwrap();
    let read = stored(&fx, &id).await;
    assert_eq!(
        ids_of(&read),
        ids[2..].to_vec(),
        "the newest 4 fit in max_session_frame_bytes {}",
        fx.settings.max_session_frame_bytes
    );
    assert_eq!(fx.store.get(&id).await.unwrap().frame_count, 8);
    let page = fx
        .store
        .read_frames_page(&id, Some(first[1]), 100)
        .await
        .unwrap();
    assert_eq!(
        page.gap,
        Some(FrameGap {
            after: first[1],
            last_removed: ids[1],
            first_kept: Some(ids[2]),
        })
    );
    // A batch whose newest frame alone is over the budget keeps just that one.
    let over = Frame::new(
        Direction::ServerToClient,
        fx.clock.now(),
        vec![b'x'; 2 * BODY - 200],
    );
    let mut frames = batch(&fx, "third", 3, BODY - 200);
    frames.push(over.clone());
    frames.push(over);
    let last = fx.store.append_frames(&id, frames).await.unwrap();
    let read = stored(&fx, &id).await;
    assert_eq!(
        ids_of(&read).last(),
        last.last(),
        "the newest frame is always kept"
    );
    assert_eq!(ids_of(&read), last[last.len() - read.len()..].to_vec());
}

pub async fn append_frames_of_an_empty_batch_stores_nothing(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let before = fx.store.get(&id).await.unwrap();
    fx.clock.advance(Duration::from_millis(10));
    let ids = fx.store.append_frames(&id, Vec::new()).await.unwrap();
    assert!(ids.is_empty(), "{ids:?}");
    let after = fx.store.get(&id).await.unwrap();
    assert_eq!(after.frame_count, 0);
    assert_eq!(
        after.last_activity, before.last_activity,
        "an empty batch is not activity"
    );
    assert_eq!(fx.store.count_frames(&id).await.unwrap(), 0);
}

pub async fn append_frames_to_a_missing_session_is_not_found_and_stores_nothing(
    factory: &dyn StoreFactory,
) {
    let fx = fixture(factory).await;
    let missing = new_id();
    match fx
        .store
        .append_frames(&missing, batch(&fx, "lost", 3, 4))
        .await
    {
        Err(Error::NotFound(_)) => {}
        other => panic!("append_frames to an unknown id: expected NotFound, got {other:?}"),
    }
    assert!(
        matches!(fx.store.get(&missing).await, Err(Error::NotFound(_))),
        "a batch never creates a session"
    );
    let deleted = create(&fx).await;
    assert!(fx.store.delete(&deleted).await.unwrap());
    match fx
        .store
        .append_frames(&deleted, batch(&fx, "late", 2, 4))
        .await
    {
        Err(Error::NotFound(_)) => {}
        other => panic!("append_frames to a deleted session: expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        fx.store.get(&deleted).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn append_frames_with_an_oversized_frame_is_invalid_input_and_stores_nothing(
    factory: &dyn StoreFactory,
) {
    let fx = fixture(factory).await;
    let id = create(&fx).await;
    let earlier = fx
        .store
        .append_frame(&id, batch(&fx, "before", 1, 4).remove(0))
        .await
        .unwrap();
    let mut frames = batch(&fx, "mixed", 4, 4);
    frames.insert(
        2,
        Frame::new(
            Direction::ServerToClient,
            fx.clock.now(),
            vec![b'x'; fx.settings.max_frame_bytes + 1],
        ),
    );
    match fx.store.append_frames(&id, frames).await {
        Err(Error::InvalidInput(message)) => {
            assert!(message.contains("max_frame_bytes"), "{message}")
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert_eq!(
        ids_of(&stored(&fx, &id).await),
        vec![earlier],
        "no frame of the refused batch is stored"
    );
    assert_eq!(fx.store.get(&id).await.unwrap().frame_count, 1);
    let ids = fx
        .store
        .append_frames(&id, batch(&fx, "after", 2, 4))
        .await
        .unwrap();
    assert_ascending(&ids, earlier);
}
