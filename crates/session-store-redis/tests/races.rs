//! Races on one session between two clients: delete against delete, touch and
//! append. Whatever the interleaving, every answer is a success or NotFound,
//! never Corrupt (the liveness checks are atomic per session).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{sync::Arc, time::Instant};

use session_store_core::{
    testing::suite_settings, Clock, Direction, Error, Frame, ManualClock, NewSession, SessionId,
    SessionStore,
};
use session_store_redis::{RedisStore, Topology};

const ITERATIONS: usize = 5_000;

#[derive(Default, Debug)]
struct Tally {
    ok: u64,
    not_found: u64,
    corrupt: u64,
    other: u64,
}

impl Tally {
    fn add<T>(&mut self, result: &Result<T, Error>) {
        match result {
            Ok(_) => self.ok += 1,
            Err(Error::NotFound(_)) => self.not_found += 1,
            Err(Error::Corrupt(message)) => {
                if self.corrupt < 5 {
                    eprintln!("corrupt: {message}");
                }
                self.corrupt += 1;
            }
            Err(other) => {
                if self.other < 5 {
                    eprintln!("other: {other}");
                }
                self.other += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Redis: cargo xtask integration"]
async fn delete_racing_delete_touch_and_append_is_never_corrupt() {
    let clock = ManualClock::starting_now();
    let config = common::config(Topology::Standalone {
        url: common::standalone_url(),
    });
    let mut second = config.clone();
    second.pool_size = 1;
    let settings = suite_settings();
    // Two stores (two connection pools), as two proxy instances would have.
    let a = Arc::new(common::connect(config, clock.clone(), settings.clone()).await);
    let b: Arc<RedisStore> = Arc::new(common::connect(second, clock.clone(), settings).await);

    let started = Instant::now();
    let (mut deletes, mut racers) = (Tally::default(), Tally::default());
    let mut both_removed = 0u64;
    for n in 0..ITERATIONS {
        let id = SessionId::random().unwrap();
        a.create(NewSession::new(id.clone())).await.unwrap();
        if n % 3 == 1 {
            // Give the append something to find in `rk`/`lfid`.
            let frame = Frame::new(Direction::ServerToClient, clock.now(), b"x".to_vec());
            a.append_frame(&id, frame).await.unwrap();
        }
        let deleter = {
            let (a, id) = (a.clone(), id.clone());
            tokio::spawn(async move { a.delete(&id).await })
        };
        match n % 3 {
            0 => {
                let result = b.delete(&id).await;
                racers.add(&result);
                let first = deleter.await.unwrap();
                deletes.add(&first);
                if matches!((&first, &result), (Ok(true), Ok(true))) {
                    both_removed += 1;
                }
            }
            1 => {
                racers.add(&b.touch(&id).await);
                deletes.add(&deleter.await.unwrap());
            }
            _ => {
                let frame = Frame::new(Direction::ClientToServer, clock.now(), b"y".to_vec());
                racers.add(&b.append_frame(&id, frame).await);
                deletes.add(&deleter.await.unwrap());
            }
        }
        assert!(
            matches!(b.get(&id).await, Err(Error::NotFound(_))),
            "deleted stays deleted"
        );
    }
    println!(
        "delete races, {ITERATIONS} iterations in {:?}: deletes {deletes:?}; racing \
         delete/touch/append {racers:?}; both deletes reported removal: {both_removed}",
        started.elapsed()
    );
    assert_eq!(deletes.corrupt + racers.corrupt, 0, "Corrupt answers");
    assert_eq!(deletes.other + racers.other, 0, "other errors");
    assert_eq!(both_removed, 0, "one delete removes the session, not both");
}
