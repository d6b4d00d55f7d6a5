//! The key layout under awkward input: ids whose braces would break the hash tag
//! (on the cluster), and a change of `index_shards` on live data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{collections::BTreeSet, time::Duration};

use session_store_core::{
    testing::suite_settings, Clock, Direction, Frame, ManualClock, NewSession, SessionId,
    SessionStore,
};
use session_store_redis::Topology;

/// Ids that put braces where the hash tag is cut, plus a deterministic
/// pseudo-random sample of visible-ASCII ids.
fn awkward_ids() -> Vec<String> {
    let mut ids: Vec<String> = [
        "}", "}}", "}{", "{}", "{", "}a", "a}", "}}}x{", "{{}}", "x{y}z", "}-}-}", "~}", "}~",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..60 {
        let len = 1 + (state % 12) as usize;
        let id: String = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Braces twice as likely as other characters.
                match state % 8 {
                    0 => '}',
                    1 => '{',
                    _ => char::from(0x21 + ((state >> 8) % 94) as u8),
                }
            })
            .collect();
        ids.push(id);
    }
    ids
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn every_valid_id_works_on_a_cluster() {
    let clock = ManualClock::starting_now();
    let config = common::config(Topology::Cluster {
        nodes: common::cluster_nodes(),
    });
    let store = common::connect(config, clock.clone(), suite_settings()).await;
    let ids: BTreeSet<String> = awkward_ids().into_iter().collect();
    for text in &ids {
        let id = SessionId::new(text.as_str()).unwrap();
        store.create(NewSession::new(id.clone())).await.unwrap();
        let frame = Frame::new(Direction::ServerToClient, clock.now(), b"f".to_vec());
        let frame_id = store.append_frame(&id, frame).await.unwrap();
        store.touch(&id).await.unwrap();
        let frames = store.read_frames(&id, None, 10).await.unwrap();
        assert_eq!(frames.len(), 1, "`{text}`");
        assert_eq!(frames[0].id, frame_id, "`{text}`");
        let mut session = store.get(&id).await.unwrap();
        session.tags.insert("k".into(), "v".into());
        store.update(&session).await.unwrap();
        assert_eq!(store.delete_frames(&id).await.unwrap(), 1, "`{text}`");
    }
    assert_eq!(store.count().await.unwrap(), ids.len() as u64);
    for text in &ids {
        assert!(store
            .delete(&SessionId::new(text.as_str()).unwrap())
            .await
            .unwrap());
    }
    println!(
        "slot-safe ids: {} awkward ids created, written, read and deleted on the cluster",
        ids.len()
    );
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask integration"]
async fn changing_index_shards_keeps_count_and_list_exact() {
    let clock = ManualClock::starting_now();
    let settings = suite_settings();
    let before = common::config(Topology::Standalone {
        url: common::standalone_url(),
    });
    let mut after = before.clone();
    after.index_shards = before.index_shards * 2 + 1;
    let old = common::connect(before, clock.clone(), settings.clone()).await;
    let new = common::connect(after, clock.clone(), settings.clone()).await;
    let ids: Vec<SessionId> = (0..24).map(|_| SessionId::random().unwrap()).collect();
    for id in &ids {
        old.create(NewSession::new(id.clone())).await.unwrap();
    }
    // Touched (the index lags) and then past their first indexed expiry.
    clock.advance(settings.ttl / 2);
    for id in &ids {
        old.touch(id).await.unwrap();
    }
    clock.advance(settings.ttl / 2 + Duration::from_millis(1));

    for round in 0..3 {
        assert_eq!(new.purge_expired().await.unwrap(), 0, "round {round}");
        assert_eq!(
            new.count().await.unwrap(),
            ids.len() as u64,
            "round {round}"
        );
    }
    let mut listed = Vec::new();
    let mut cursor = None;
    for _ in 0..100 {
        let page = new.list(cursor.as_ref(), 7).await.unwrap();
        listed.extend(page.items.into_iter().map(|s| s.id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let unique: BTreeSet<_> = listed.iter().cloned().collect();
    assert_eq!(listed.len(), unique.len(), "no session listed twice");
    assert_eq!(unique, ids.iter().cloned().collect::<BTreeSet<_>>());
}
