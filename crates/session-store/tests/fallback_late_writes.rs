//! Deleted stays deleted when a write the fallback gave up on reaches Redis
//! late (issue: the fleet test's "resurrected 1"). A call that times out is
//! served from the journal, but its command may still be on its way to Redis
//! (a stalled link, a Redis blocked on fsync) and be executed after the
//! journal's delete was written back on another connection. Each test drives
//! one such order exactly: the fallback store's primary is a real Redis, with
//! the calls named "late" sent over a second connection held by the fault
//! proxy until the test releases them, after the delete.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use parking_lot::Mutex;
use session_store::{
    BreakerState, Cursor, Error, FallbackPrimary, FallbackSettings, FallbackStore, Frame, FrameId,
    FramePage, Health, KvCondition, KvEntry, KvKey, KvPut, NewSession, Page, RedisStore, Result,
    Session, SessionId, SessionStore, StoredFrame, SystemClock, Timestamp,
};
use session_store_redis::{AppendKey, SessionWriteBack, WriteBackReport};
use support::{
    stores::{self, redis_store},
    Fault, FaultProxy, RedisProcess,
};

/// How a routed call reaches Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    /// At once, on the direct connection.
    Direct,
    /// Through the stalled proxy: the caller times out (Unavailable), the
    /// command waits in the proxy and runs when the test heals it.
    Late,
    /// Not sent: Unavailable at once (a connection refused).
    Refused,
}

/// A Redis primary whose `create` and `write_back` go the way the test says;
/// everything else goes direct.
struct LatePrimary {
    direct: RedisStore,
    late: RedisStore,
    create: Mutex<Way>,
    write_back: Mutex<Way>,
}

impl std::fmt::Debug for LatePrimary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatePrimary").finish_non_exhaustive()
    }
}

impl LatePrimary {
    /// The store a call of `method` goes to now.
    fn via(&self, method: &str) -> Result<&RedisStore> {
        let way = match method {
            "create" => *self.create.lock(),
            "write_back" => *self.write_back.lock(),
            _ => Way::Direct,
        };
        match way {
            Way::Direct => Ok(&self.direct),
            Way::Late => Ok(&self.late),
            Way::Refused => Err(Error::unavailable("test: connection refused")),
        }
    }
}

/// `impl SessionStore`: each listed method on the store [`LatePrimary::via`]
/// picks for it by name.
macro_rules! routed_session_store {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        #[async_trait]
        impl SessionStore for LatePrimary {
            $(async fn $name(&self, $($arg: $ty),*) -> Result<$ret> {
                self.via(stringify!($name))?.$name($($arg),*).await
            })*
        }
    };
}

routed_session_store! {
    create(new: NewSession) -> Session;
    get(id: &SessionId) -> Session;
    get_many(ids: &[SessionId]) -> Vec<Option<Session>>;
    update(session: &Session) -> Session;
    touch(id: &SessionId) -> ();
    delete(id: &SessionId) -> bool;
    list(cursor: Option<&Cursor>, limit: usize) -> Page<Session>;
    count() -> u64;
    append_frame(id: &SessionId, frame: Frame) -> FrameId;
    append_frames(id: &SessionId, frames: Vec<Frame>) -> Vec<FrameId>;
    read_frames(id: &SessionId, after: Option<FrameId>, limit: usize) -> Vec<StoredFrame>;
    read_frames_page(id: &SessionId, after: Option<FrameId>, limit: usize) -> FramePage;
    count_frames(id: &SessionId) -> u64;
    delete_frames(id: &SessionId) -> u64;
    purge_expired() -> u64;
    health() -> Health;
    kv_get(key: &KvKey) -> Option<KvEntry>;
    kv_put(key: &KvKey, value: &[u8], ttl: Duration, condition: KvCondition) -> KvPut;
    kv_delete(key: &KvKey, condition: KvCondition) -> bool;
}

#[async_trait]
impl FallbackPrimary for LatePrimary {
    fn new_append_key(&self) -> AppendKey {
        self.direct.new_append_key()
    }
    async fn append_frame_with_key(
        &self,
        id: &SessionId,
        frame: &Frame,
        key: &AppendKey,
    ) -> Result<FrameId> {
        self.direct.append_frame_with_key(id, frame, key).await
    }
    async fn append_frames_with_keys(
        &self,
        id: &SessionId,
        frames: &[Frame],
        keys: &[AppendKey],
    ) -> Result<Vec<FrameId>> {
        self.direct.append_frames_with_keys(id, frames, keys).await
    }
    async fn write_back(&self, write_back: &SessionWriteBack) -> Result<WriteBackReport> {
        self.via("write_back")?.write_back(write_back).await
    }
    async fn deleted_recently(&self, id: &SessionId) -> Result<bool> {
        self.direct.deleted_recently(id).await
    }
    async fn delete_replaced(
        &self,
        id: &SessionId,
        replacement_created: Timestamp,
    ) -> Result<bool> {
        self.direct.delete_replaced(id, replacement_created).await
    }
    async fn probe(&self) -> Result<()> {
        self.direct.probe_writes().await.map(|_| ())
    }
}

/// A Redis, the fault proxy in front of it, and a fallback store on both.
struct Rig {
    redis: RedisProcess,
    proxy: FaultProxy,
    store: FallbackStore<LatePrimary>,
}

impl Rig {
    async fn start() -> Rig {
        let redis = RedisProcess::start(&[]);
        let proxy = FaultProxy::start(redis.address()).await;
        let direct_config = stores::config(&redis.url(), true, Duration::from_secs(2));
        let mut late_config = stores::config(&proxy.url(), true, Duration::from_millis(300));
        late_config.redis.key_prefix = direct_config.redis.key_prefix.clone();
        // One connection: what was sent on it runs in order when healed.
        late_config.redis.pool_size = 1;
        let primary = LatePrimary {
            direct: redis_store(&direct_config).await,
            late: redis_store(&late_config).await,
            create: Mutex::new(Way::Direct),
            write_back: Mutex::new(Way::Direct),
        };
        proxy.set(Fault::Stall);
        let fallback = FallbackSettings {
            // One timeout does not open the breaker: the store drains at once.
            failure_threshold: 3,
            cool_down: Duration::from_millis(300),
            ..FallbackSettings::default()
        };
        let store = FallbackStore::new(
            primary,
            direct_config.settings(),
            fallback,
            Arc::new(SystemClock),
        )
        .unwrap();
        Rig {
            redis,
            proxy,
            store,
        }
    }

    /// Scripts Redis has run (`EVALSHA` calls, from `INFO commandstats`).
    fn scripts_run(&self) -> u64 {
        let info = support::command(self.redis.port, &["INFO", "commandstats"]).unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse().unwrap())
    }

    /// Waits until the journal is written back and the breaker closed.
    async fn written_back(&self) {
        let closed = support::wait_until(Duration::from_secs(20), || {
            let stats = self.store.stats();
            stats.state == BreakerState::Closed && stats.dirty_sessions == 0
        })
        .await;
        assert!(closed, "{:?}", self.store.stats());
    }

    /// Heals the proxy and waits until Redis ran the `held` scripts that waited
    /// in it (else the test would show nothing).
    async fn deliver_late(&self, held: u64) {
        let before = self.scripts_run();
        self.proxy.set(Fault::None);
        let ran = support::wait_until(Duration::from_secs(10), || {
            self.scripts_run() >= before + held
        })
        .await;
        assert!(ran, "the late scripts never reached Redis");
    }

    /// The session is gone from Redis and every instance says so.
    async fn assert_deleted(&self, id: &SessionId) {
        let direct = &self.store.primary().direct;
        assert!(
            matches!(direct.get(id).await, Err(Error::NotFound(_))),
            "session `{id}` was deleted, and is back in Redis: {:?}",
            direct.get(id).await
        );
        assert!(matches!(self.store.get(id).await, Err(Error::NotFound(_))));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_create_that_timed_out_and_reaches_redis_after_the_journaled_delete_resurrects_nothing() {
    let rig = Rig::start().await;
    let store = &rig.store;
    let id = store.new_session_id().unwrap();

    // The create times out (its command waits in the proxy): served from the
    // journal. The delete goes to the journal too (or to Redis, when the
    // journal was written back in between) and is written back.
    *store.primary().create.lock() = Way::Late;
    store.create(NewSession::new(id.clone())).await.unwrap();
    *store.primary().create.lock() = Way::Direct;
    assert!(store.delete(&id).await.unwrap());
    rig.written_back().await;

    rig.deliver_late(1).await;
    rig.assert_deleted(&id).await;
    println!("late create after the delete: {:?}", store.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask integration"]
async fn a_write_back_that_timed_out_and_reaches_redis_after_the_delete_resurrects_nothing() {
    let rig = Rig::start().await;
    let store = &rig.store;
    let id = store.new_session_id().unwrap();

    // Created in the journal (Redis refused the connection), so it is written
    // back at once; that write-back times out and waits in the proxy.
    *store.primary().create.lock() = Way::Refused;
    *store.primary().write_back.lock() = Way::Late;
    store.create(NewSession::new(id.clone())).await.unwrap();
    *store.primary().create.lock() = Way::Direct;
    let failed = support::wait_until(Duration::from_secs(10), || {
        store.stats().write_back_failures_total >= 1
    })
    .await;
    assert!(failed, "{:?}", store.stats());

    // Deleted in the journal; that delete is written back while Redis holds
    // nothing yet.
    assert!(store.delete(&id).await.unwrap());
    rig.written_back().await;
    let stats = store.stats();
    assert_eq!(stats.quarantined_total, 0, "{stats:?}");

    rig.deliver_late(stats.write_back_failures_total).await;
    rig.assert_deleted(&id).await;
    println!(
        "{} late write-back(s) after the delete: {stats:?}",
        stats.write_back_failures_total
    );
}
