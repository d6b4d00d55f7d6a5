//! The behaviours of frame budgets and replay gaps: the per-session byte cap
//! (`max_session_frame_bytes`), byte-bounded pages (`max_read_bytes`), and the
//! gap [`SessionStore::read_frames_page`] reports after frames a reader had not
//! read yet were trimmed or deleted. Run by every backend with the rest of the
//! suite.

use super::{
    behaviours::{create, fixture_with, Fixture},
    suite_settings, StoreFactory,
};
use crate::{
    Clock, Direction, Frame, FrameGap, FrameId, SessionId, SessionStore, StoreSettings, StoredFrame,
};

/// Payload bytes of the frames these behaviours append: a frame is counted as
/// this plus a small encoding overhead (under 200 bytes) in every backend.
const BODY: usize = 1000;

/// The suite's settings with room for 4 frames of [`BODY`] bytes per session
/// and 2 per read page.
fn budget_settings() -> StoreSettings {
    StoreSettings {
        max_frame_bytes: 2 * BODY,
        max_session_frame_bytes: 4 * BODY as u64 + BODY as u64 / 2,
        max_read_bytes: 2 * BODY + BODY / 2,
        ..suite_settings()
    }
}

/// Appends `count` frames of `size` payload bytes; returns their ids.
async fn append(fx: &Fixture, id: &SessionId, count: usize, size: usize) -> Vec<FrameId> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let body = format!("{n:0>size$}");
        let frame = Frame::new(Direction::ServerToClient, fx.clock.now(), body.into_bytes());
        ids.push(fx.store.append_frame(id, frame).await.expect("append"));
    }
    ids
}

fn ids_of(frames: &[StoredFrame]) -> Vec<FrameId> {
    frames.iter().map(|f| f.id).collect()
}

/// Every frame after `after`, page by page until an empty page; returns the
/// pages' sizes too.
async fn read_all(
    store: &dyn SessionStore,
    id: &SessionId,
    mut after: Option<FrameId>,
) -> (Vec<FrameId>, Vec<usize>) {
    let (mut ids, mut pages) = (Vec::new(), Vec::new());
    for _ in 0..1_000 {
        let page = store.read_frames(id, after, 100).await.expect("read");
        if page.is_empty() {
            return (ids, pages);
        }
        pages.push(page.len());
        after = page.last().map(|f| f.id);
        ids.extend(ids_of(&page));
    }
    panic!("read_frames never returned an empty page");
}

pub async fn frames_beyond_max_session_frame_bytes_are_trimmed_oldest_first(
    factory: &dyn StoreFactory,
) {
    let fx = fixture_with(factory, budget_settings()).await;
    let id = create(&fx).await;
    let ids = append(&fx, &id, 10, BODY).await;
    assert_eq!(
        fx.store.count_frames(&id).await.unwrap(),
        4,
        "4 frames of {BODY} bytes fit in max_session_frame_bytes {}",
        fx.settings.max_session_frame_bytes
    );
    let (kept, _) = read_all(fx.store.as_ref(), &id, None).await;
    assert_eq!(
        kept,
        ids[6..].to_vec(),
        "the newest frames are kept, in order"
    );
    assert_eq!(
        fx.store.get(&id).await.unwrap().frame_count,
        10,
        "trimming does not lower frame_count"
    );
    // A frame of max_frame_bytes still fits, alone with what room is left.
    let big = append(&fx, &id, 1, fx.settings.max_frame_bytes - 100).await;
    let (kept, _) = read_all(fx.store.as_ref(), &id, None).await;
    assert_eq!(kept.last(), big.last(), "the new frame is always kept");
    assert_eq!(kept.len(), 3, "the oldest make room for it: {kept:?}");
}

pub async fn read_frames_pages_are_bounded_by_max_read_bytes(factory: &dyn StoreFactory) {
    let settings = StoreSettings {
        max_session_frame_bytes: 100 * BODY as u64,
        ..budget_settings()
    };
    let fx = fixture_with(factory, settings).await;
    let id = create(&fx).await;
    let ids = append(&fx, &id, 7, BODY).await;
    let first = fx.store.read_frames(&id, None, 100).await.unwrap();
    assert_eq!(
        ids_of(&first),
        ids[..2].to_vec(),
        "2 frames of {BODY} bytes fill max_read_bytes {}",
        fx.settings.max_read_bytes
    );
    let page = fx.store.read_frames_page(&id, None, 100).await.unwrap();
    assert_eq!(page.frames, first, "read_frames_page pages alike");
    let (read, pages) = read_all(fx.store.as_ref(), &id, None).await;
    println!("pages of {pages:?} frames");
    assert_eq!(read, ids, "paging on reads every frame once, in order");
    assert_eq!(pages, vec![2, 2, 2, 1]);
    let limited = fx.store.read_frames(&id, None, 1).await.unwrap();
    assert_eq!(
        ids_of(&limited),
        ids[..1].to_vec(),
        "the limit still applies"
    );
}

pub async fn a_frame_larger_than_max_read_bytes_is_read_alone(factory: &dyn StoreFactory) {
    let settings = StoreSettings {
        max_read_bytes: BODY / 2,
        ..budget_settings()
    };
    let fx = fixture_with(factory, settings).await;
    let id = create(&fx).await;
    let ids = append(&fx, &id, 3, BODY).await;
    let (read, pages) = read_all(fx.store.as_ref(), &id, None).await;
    assert_eq!(read, ids, "a reader moves past frames larger than a page");
    assert_eq!(pages, vec![1, 1, 1]);
}

/// Asserts `gap` says every frame between `after` and the first kept one was
/// lost (`ids` are all the ids appended, oldest first).
fn assert_gap(gap: Option<FrameGap>, after: FrameId, kept: &[FrameId], ids: &[FrameId]) {
    let gap = gap.unwrap_or_else(|| panic!("a read after {after} must report a gap"));
    let first_kept = kept.first().copied();
    let position = first_kept.map_or(ids.len(), |first| {
        ids.iter()
            .position(|id| *id == first)
            .expect("kept id was appended")
    });
    assert_eq!(
        gap,
        FrameGap {
            after,
            last_removed: ids[position - 1],
            first_kept,
        }
    );
}

pub async fn read_after_a_trimmed_id_reports_the_gap(factory: &dyn StoreFactory) {
    let settings = StoreSettings {
        max_frames_per_session: 5,
        max_read_bytes: 100 * BODY,
        ..budget_settings()
    };
    let fx = fixture_with(factory, settings).await;
    let slack = usize::try_from(factory.frame_trim_slack()).unwrap();
    // Trimmed by count.
    let counted = create(&fx).await;
    let ids = append(&fx, &counted, 12 + slack, 10).await;
    let page = fx
        .store
        .read_frames_page(&counted, Some(ids[1]), 100)
        .await
        .unwrap();
    assert!(page.frames.len() >= 5, "{} kept", page.frames.len());
    assert_eq!(page.frames.last().map(|f| f.id), ids.last().copied());
    assert_gap(page.gap, ids[1], &ids_of(&page.frames), &ids);
    // Trimmed by bytes.
    let sized = create(&fx).await;
    let ids = append(&fx, &sized, 5, BODY).await;
    let page = fx
        .store
        .read_frames_page(&sized, Some(ids[0]), 100)
        .await
        .unwrap();
    assert_eq!(ids_of(&page.frames), ids[1..].to_vec());
    assert_eq!(
        page.gap, None,
        "frame {} was trimmed, but the reader had it already",
        ids[0]
    );
    let more = append(&fx, &sized, 2, BODY).await;
    let page = fx
        .store
        .read_frames_page(&sized, Some(ids[0]), 100)
        .await
        .unwrap();
    let all: Vec<FrameId> = ids.iter().chain(&more).copied().collect();
    assert_eq!(ids_of(&page.frames), all[3..].to_vec());
    assert_gap(page.gap, ids[0], &ids_of(&page.frames), &all);
}

pub async fn read_after_a_kept_id_reports_no_gap(factory: &dyn StoreFactory) {
    let settings = StoreSettings {
        max_frames_per_session: 5,
        max_read_bytes: 100 * BODY,
        ..budget_settings()
    };
    let fx = fixture_with(factory, settings).await;
    let untrimmed = create(&fx).await;
    let ids = append(&fx, &untrimmed, 4, 10).await;
    for after in [None, Some(FrameId::ZERO), Some(ids[0]), Some(ids[3])] {
        let page = fx
            .store
            .read_frames_page(&untrimmed, after, 100)
            .await
            .unwrap();
        assert_eq!(page.gap, None, "nothing was trimmed (after {after:?})");
    }
    let trimmed = create(&fx).await;
    let slack = usize::try_from(factory.frame_trim_slack()).unwrap();
    let ids = append(&fx, &trimmed, 12 + slack, 10).await;
    let stored = fx.store.read_frames(&trimmed, None, 100).await.unwrap();
    let first_kept = stored.first().map(|f| f.id).unwrap();
    let last = *ids.last().unwrap();
    for after in [None, Some(first_kept), Some(last)] {
        let page = fx
            .store
            .read_frames_page(&trimmed, after, 100)
            .await
            .unwrap();
        assert_eq!(page.gap, None, "the reader lost nothing (after {after:?})");
    }
}

pub async fn read_after_deleted_frames_reports_the_gap(factory: &dyn StoreFactory) {
    let fx = fixture_with(factory, budget_settings()).await;
    let id = create(&fx).await;
    let ids = append(&fx, &id, 3, 10).await;
    assert_eq!(fx.store.delete_frames(&id).await.unwrap(), 3);
    let page = fx
        .store
        .read_frames_page(&id, Some(ids[0]), 100)
        .await
        .unwrap();
    assert!(page.frames.is_empty());
    assert_gap(page.gap, ids[0], &[], &ids);
    let after = append(&fx, &id, 1, 10).await;
    let page = fx
        .store
        .read_frames_page(&id, Some(ids[0]), 100)
        .await
        .unwrap();
    assert_eq!(ids_of(&page.frames), after);
    let all: Vec<FrameId> = ids.iter().chain(&after).copied().collect();
    assert_gap(page.gap, ids[0], &after, &all);
    let page = fx
        .store
        .read_frames_page(&id, Some(ids[2]), 100)
        .await
        .unwrap();
    assert_eq!(page.gap, None, "the reader had every deleted frame");
}
