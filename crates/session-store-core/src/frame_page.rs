//! A page of frames read for a replay, and the gap it reports when frames the
//! reader had not seen yet were trimmed or deleted before it read them.

use crate::{FrameId, StoredFrame};

/// What [`read_frames_page`](crate::SessionStore::read_frames_page) returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FramePage {
    /// Frames with ids greater than the `after` asked for, oldest first, as
    /// [`read_frames`](crate::SessionStore::read_frames) returns them.
    pub frames: Vec<StoredFrame>,
    /// Set when frames with ids greater than `after` were removed (trimmed by
    /// `max_frames_per_session` or `max_session_frame_bytes`, or deleted by
    /// `delete_frames`) before this read: the reader lost them.
    pub gap: Option<FrameGap>,
}

/// Frames a reader lost: every frame with an id in `(after, last_removed]` was
/// removed before it was read. Frames after `last_removed` are all still there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameGap {
    /// The id the reader asked to read after.
    pub after: FrameId,
    /// The newest frame id the store removed.
    pub last_removed: FrameId,
    /// The first frame still stored after `after` (the first of the page), or
    /// `None` when none is stored.
    pub first_kept: Option<FrameId>,
}

impl FrameGap {
    /// The gap a read after `after` has when the store removed every frame up to
    /// `removed_through` (its newest removed id, [`FrameId::ZERO`] when none);
    /// `None` when reading from the start or after every removed frame.
    pub fn detect(
        after: Option<FrameId>,
        removed_through: FrameId,
        frames: &[StoredFrame],
    ) -> Option<FrameGap> {
        let after = after?;
        (after < removed_through).then(|| FrameGap {
            after,
            last_removed: removed_through,
            first_kept: frames.first().map(|f| f.id),
        })
    }
}

/// How many of `sizes` (bytes of consecutive frames) one page of at most
/// `max_bytes` holds: at least one when there is one, so a reader always moves
/// past a frame larger than the budget.
pub fn frames_within_budget(sizes: impl IntoIterator<Item = usize>, max_bytes: usize) -> usize {
    let mut total = 0usize;
    let mut count = 0usize;
    for size in sizes {
        total = total.saturating_add(size);
        if count > 0 && total > max_bytes {
            break;
        }
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Direction, Frame, Timestamp};

    fn stored(millis: u64) -> StoredFrame {
        StoredFrame {
            id: FrameId::new(millis, 0),
            frame: Frame::new(Direction::ServerToClient, Timestamp::ZERO, b"x".to_vec()),
        }
    }

    #[test]
    fn a_page_holds_frames_up_to_the_budget_and_at_least_one() {
        assert_eq!(frames_within_budget([400, 400, 400], 1000), 2);
        assert_eq!(frames_within_budget([400, 600, 1], 1000), 2);
        assert_eq!(frames_within_budget([5000, 1], 1000), 1);
        assert_eq!(frames_within_budget([], 1000), 0);
    }

    #[test]
    fn a_gap_is_reported_only_after_an_id_older_than_the_last_removed() {
        let page = [stored(9)];
        let removed = FrameId::new(7, 0);
        assert_eq!(FrameGap::detect(None, removed, &page), None);
        assert_eq!(
            FrameGap::detect(Some(FrameId::new(7, 0)), removed, &page),
            None
        );
        assert_eq!(
            FrameGap::detect(Some(FrameId::new(3, 0)), FrameId::ZERO, &page),
            None
        );
        assert_eq!(
            FrameGap::detect(Some(FrameId::new(3, 0)), removed, &page),
            Some(FrameGap {
                after: FrameId::new(3, 0),
                last_removed: removed,
                first_kept: Some(FrameId::new(9, 0)),
            })
        );
    }
}
