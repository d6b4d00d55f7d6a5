//! `RedisStore`: the connection pool, the key layout and the scripts, and the
//! [`SessionStore`] implementation that dispatches to the operation modules.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use fred::{
    clients::{Client, Pool},
    interfaces::{ClientLike, LuaInterface},
    prelude::Builder,
    types::{config::Options, RespVersion, Value},
};
use session_store_core::{
    Clock, Cursor, Error, Frame, FrameId, FramePage, Health, KvCondition, KvEntry, KvKey, KvPut,
    NewSession, Page, Result, Session, SessionId, SessionStore, StoreSettings, StoredFrame,
};

use crate::{
    append_key::AppendKeys,
    batch::{Batch, Replies},
    config::RedisConfig,
    failure,
    keys::KeySpace,
    near_cache::NearCache,
    record::Lifetime,
    retry::Backoff,
    scripts::Scripts,
};

/// Cluster redirections (`MOVED`, `ASK`) fred follows itself: none. fred 10.1
/// answers `ASK` by writing `ASKING` to the importing node's connection outside
/// its queue of commands in flight and taking the next reply read there as
/// `ASKING`'s: with other commands in flight on that connection, one of them is
/// handed another command's reply (seen under resharding: a touch answered with
/// an integer, an append acknowledged with another append's frame id). So
/// every redirection comes back to the store: a `MOVED` after fred refreshed
/// its slot map (the store's retry goes to the new owner), an `ASK` to the
/// store's own handling (`ask.rs`: `ASKING` queued in order, in one pipeline
/// with the command). Set on the client too: fred reads a command's 0 as
/// "the client's value".
pub(crate) const MAX_REDIRECTIONS: u32 = 0;

/// Writes fred may spend on one command (its `max_attempts`).
const FRED_WRITE_ATTEMPTS: u32 = 4;

/// `wait_for_replicas` with its timeout, when set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReplicaWait {
    pub(crate) replicas: u32,
    pub(crate) timeout_ms: u64,
}

/// A [`SessionStore`] on Redis: standalone, cluster or sentinel, through a fred
/// connection pool.
///
/// Each operation is one pipeline (one round trip on standalone Redis) except
/// `list` and `purge_expired`, which walk the index shards. Per-session atomicity
/// holds on a cluster because all keys of a session share a hash tag. See
/// `docs/redis-data-model.md` for the keys and commands.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) pool: Pool,
    pub(crate) keys: KeySpace,
    pub(crate) scripts: Scripts,
    pub(crate) settings: StoreSettings,
    pub(crate) lifetime: Lifetime,
    pub(crate) clock: Arc<dyn Clock>,
    /// Where Redis is, without credentials: for error messages.
    pub(crate) address: Arc<str>,
    pub(crate) mode: &'static str,
    /// Budget of one operation, retries included.
    pub(crate) command_timeout: Duration,
    pub(crate) replica_wait: Option<ReplicaWait>,
    pub(crate) append_keys: Arc<AppendKeys>,
    /// Index writes and `WAIT`s after a committed write that failed (logged;
    /// purge and count heal the indexes).
    pub(crate) hint_failures: Arc<AtomicU64>,
    /// Records `list` and `read_frames` skipped because they cannot be decoded.
    pub(crate) skipped_records: Arc<AtomicU64>,
    /// Reconnections of the pool's clients since `connect`.
    pub(crate) reconnects: Arc<AtomicU64>,
    /// Sessions read recently, dropped on Redis's invalidation
    /// (`near_cache_entries` > 0).
    pub(crate) near: Option<NearCache>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.address)
            .field("mode", &self.mode)
            .field("keys", &self.keys)
            .field("settings", &self.settings)
            .field("command_timeout", &self.command_timeout)
            .field("replica_wait", &self.replica_wait)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// The SHA-1 of the append script this store sends with `EVALSHA`, for tools that
    /// measure the same script by hand (the `redis_load` bench's raw baseline).
    #[doc(hidden)]
    pub fn append_script_sha1(&self) -> &str {
        self.scripts.append.sha1()
    }

    /// The source of the get script this store sends with `EVALSHA`, for the
    /// same tools (the raw get row sends it by hand).
    #[doc(hidden)]
    pub fn get_script_source(&self) -> &str {
        self.scripts.get.lua()
    }

    /// The source of the touch script, for the same tools.
    #[doc(hidden)]
    pub fn touch_script_source(&self) -> &str {
        self.scripts.touch.lua()
    }

    /// Connects to Redis and loads the store's scripts.
    ///
    /// Errors: [`Error::Config`] for an invalid `config` or `settings` (the message
    /// names the key), or when `clock` and the Redis server's `TIME` differ by
    /// more than `ttl / 10` (more than 1% is logged as a warning), or when Redis
    /// refuses the credentials (`WRONGPASS`, `NOAUTH`: an outage would pass, a
    /// wrong password does not); [`Error::Unavailable`] naming the address (never
    /// the password) when Redis cannot be reached within `config.connect_timeout`.
    pub async fn connect(
        config: RedisConfig,
        settings: StoreSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<RedisStore> {
        settings.validate()?;
        let resolved = config.resolve()?;
        let address: Arc<str> = resolved.address.into();

        let mut tracking_config = resolved.fred.clone();
        tracking_config.version = RespVersion::RESP3;
        let builder = |fred| {
            let mut builder = Builder::from_config(fred);
            builder
                .with_connection_config(|connection| {
                    connection.connection_timeout = config.connect_timeout;
                    connection.internal_command_timeout = config.connect_timeout;
                    connection.max_redirections = MAX_REDIRECTIONS;
                })
                .with_performance_config(|performance| {
                    performance.default_command_timeout = config.command_timeout;
                })
                .set_policy(resolved.policy.clone());
            builder
        };
        let pool = builder(resolved.fred.clone())
            .build_pool(config.pool_size)
            .map_err(|e| Error::config(format!("redis client for {address}: {}", e.details())))?;

        // `init` runs as a task of its own, so that when it outlasts
        // `connect_timeout` it can finish in the background (see `stop_later`).
        let mut init = tokio::spawn({
            let pool = pool.clone();
            async move { pool.init().await }
        });
        // The near cache's connection (RESP3, tracking), built before the pool
        // connects so a bad config fails before any connection is made.
        let tracking = match config.near_cache_entries {
            0 => None,
            _ => Some(builder(tracking_config).build().map_err(|e| {
                Error::config(format!("redis client for {address}: {}", e.details()))
            })?),
        };
        match tokio::time::timeout(config.connect_timeout, &mut init).await {
            Ok(Ok(Ok(_connection_task))) => {}
            // A failed `init` has stopped every client of the pool already
            // (fred resets them): quitting them again only logs a warning per
            // client ("Attempted to quit client that was already stopped").
            Ok(Ok(Err(e))) if refused_credentials(&e) => {
                // Not an outage that passes: waiting (or a fallback serving
                // from memory meanwhile) cannot fix a wrong password.
                return Err(Error::config(format!(
                    "redis at {address} refused the credentials: {} \
                     (check storage.redis.username and storage.redis.password, or the credentials in storage.redis.url)",
                    e.details()
                )));
            }
            Ok(Ok(Err(e))) => {
                return Err(Error::unavailable(format!(
                    "cannot connect to redis at {address}: {}: {}",
                    e.kind().to_str(),
                    failure::readable_details(&e)
                )));
            }
            Ok(Err(join_error)) => {
                return Err(Error::unavailable(format!(
                    "cannot connect to redis at {address}: the connection task ended: {join_error}"
                )));
            }
            Err(_) => {
                stop_later(&pool, init, config.connect_timeout);
                return Err(Error::unavailable(format!(
                    "cannot connect to redis at {address}: no connection within connect_timeout ({:?})",
                    config.connect_timeout
                )));
            }
        }

        let mut store = RedisStore {
            pool,
            keys: KeySpace::new(config.key_prefix.clone(), config.index_shards),
            scripts: Scripts::new(),
            lifetime: Lifetime::new(&settings),
            settings,
            clock,
            address: address.clone(),
            mode: resolved.mode,
            command_timeout: config.command_timeout,
            replica_wait: (config.wait_for_replicas > 0).then(|| ReplicaWait {
                replicas: config.wait_for_replicas,
                timeout_ms: session_store_core::duration_millis(config.replica_wait_timeout),
            }),
            append_keys: Arc::new(AppendKeys::new()),
            hint_failures: Arc::new(AtomicU64::new(0)),
            skipped_records: Arc::new(AtomicU64::new(0)),
            reconnects: Arc::new(AtomicU64::new(0)),
            near: None,
        };
        crate::pool_readings::count_reconnects(&store.pool, &store.reconnects);
        store.load_scripts().await?;
        store.check_clock_skew().await?;
        if let Some(client) = tracking {
            match start_near_cache(&client, &config, &address).await {
                Ok(near) => store.near = Some(near),
                Err(error) => {
                    let _ = tokio::time::timeout(config.connect_timeout, store.pool.quit()).await;
                    let _ = tokio::time::timeout(config.connect_timeout, client.quit()).await;
                    return Err(error);
                }
            }
        }
        Ok(store)
    }

    /// `SCRIPT LOAD` on every primary, so the first operations use `EVALSHA`
    /// directly. A server that lost them later (restart, failover, `SCRIPT FLUSH`)
    /// is served by `EVAL` on `NOSCRIPT`.
    async fn load_scripts(&self) -> Result<()> {
        for script in self.scripts.all() {
            let _: Value = self
                .pool
                .next()
                .script_load_cluster(script.lua())
                .await
                .map_err(|e| {
                    failure::from_fred(
                        &e,
                        &self.address,
                        &format!("loading the {} script", script.name),
                    )
                })?;
        }
        Ok(())
    }

    /// How many index writes (or `WAIT`s) that follow a committed write have
    /// failed since connect. Such a failure never fails the write: the write is
    /// stored, the index entry is a hint that purge and count heal.
    pub fn hint_failures(&self) -> u64 {
        self.hint_failures.load(Ordering::Relaxed)
    }

    /// How many stored records (sessions in `list`, frames in `read_frames`)
    /// were skipped since connect because they could not be decoded: written by
    /// a newer release in an incompatible format, or damaged. Each is logged
    /// with its key.
    pub fn skipped_records(&self) -> u64 {
        self.skipped_records.load(Ordering::Relaxed)
    }

    /// Logs and counts a record skipped because it cannot be decoded.
    pub(crate) fn skipped_record(&self, key: &str, message: &str) {
        self.skipped_records.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(key, message, "skipping a record that cannot be decoded");
    }

    /// Logs and counts a failed hint after a committed write.
    pub(crate) fn hint_failed(&self, what: &str, error: &Error) {
        self.hint_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(address = %self.address, what, %error, "an index write after a committed write failed; purge heals the index");
    }

    /// Sends a batch of hints (index writes), logging and counting failures
    /// instead of returning them.
    pub(crate) async fn run_hints(&self, batch: &Batch, what: &str) -> Option<Replies> {
        match self.run(batch, what).await {
            Ok(mut replies) => {
                for index in 0..batch.len() {
                    if let Err(error) = replies.take(index, what) {
                        self.hint_failed(what, &error);
                    }
                }
                Some(replies)
            }
            Err(error) => {
                self.hint_failed(what, &error);
                None
            }
        }
    }

    /// The pool's readings, and the near cache's when it is on.
    pub(crate) fn readings(&self) -> Vec<(&'static str, f64)> {
        let mut readings = crate::pool_readings::readings(&self.pool, &self.reconnects);
        if let Some(near) = &self.near {
            readings.extend(near.readings());
        }
        readings
    }

    /// Drops `id` from the near cache after this instance wrote it, so this
    /// instance's next `get` reads the write (Redis's invalidation of the
    /// tracking connection may arrive after the write's reply).
    pub(crate) fn forget_near(&self, id: &SessionId) {
        if let Some(near) = &self.near {
            near.forget(&self.keys.meta(id));
        }
    }

    /// The store's current time in milliseconds.
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now().as_millis()
    }

    /// Sends `batch` as one pipeline within the command timeout. When a script is
    /// missing on the server (`NOSCRIPT`), sends the whole batch again with `EVAL`:
    /// every command in a batch is safe to repeat after `NOSCRIPT` (reads,
    /// idempotent index hints, and the scripts themselves, which did not run).
    ///
    /// A batch is sent again when an attempt fails on the way (connection lost,
    /// timeout, `LOADING`, `READONLY` after a failover, `TRYAGAIN` during a slot
    /// migration), with exponential backoff and jitter, until the command
    /// timeout is spent. Every batch is safe to repeat: writes carry a key their
    /// script checks, so a write that reached Redis before the connection broke
    /// is answered, not applied twice.
    pub(crate) async fn run(&self, batch: &Batch, what: &str) -> Result<Replies> {
        self.run_on(None, batch, what).await
    }

    /// [`run`](Self::run) on `client` instead of the pool's next client (the
    /// near cache's tracking connection).
    pub(crate) async fn run_on(
        &self,
        client: Option<&Client>,
        batch: &Batch,
        what: &str,
    ) -> Result<Replies> {
        let deadline = Instant::now() + self.command_timeout;
        let mut backoff = Backoff::new();
        loop {
            let outcome = self.run_once(client, batch, deadline, what).await;
            let retry = match &outcome {
                Err(error) => error.is_retryable(),
                Ok(replies) => replies.has_transient_error(),
            };
            if !retry {
                return outcome;
            }
            let Some(pause) = backoff.next_pause(deadline) else {
                return outcome;
            };
            tracing::debug!(address = %self.address, what, ?pause, "retrying a redis batch after a transient failure");
            tokio::time::sleep(pause).await;
        }
    }

    async fn run_once(
        &self,
        client: Option<&Client>,
        batch: &Batch,
        deadline: Instant,
        what: &str,
    ) -> Result<Replies> {
        let replies = self.send(client, batch, false, deadline, what).await?;
        if batch.has_scripts()
            && replies
                .iter()
                .any(|r| matches!(r, Err(e) if failure::is_noscript(e)))
        {
            tracing::debug!(address = %self.address, "redis lost the store's scripts; re-sending with EVAL");
            let again = self.send(client, batch, true, deadline, what).await?;
            return Ok(Replies::new(again, &self.address));
        }
        Ok(Replies::new(replies, &self.address))
    }

    async fn send(
        &self,
        client: Option<&Client>,
        batch: &Batch,
        send_source: bool,
        deadline: Instant,
        what: &str,
    ) -> Result<Vec<std::result::Result<Value, fred::error::Error>>> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::unavailable(format!(
                "redis at {} did not complete {what} within command_timeout ({:?})",
                self.address, self.command_timeout
            )));
        }
        let options = Options {
            timeout: Some(remaining),
            // A disconnected client answers at once instead of queueing the
            // command until a reconnect: callers (and the fallback breaker) learn
            // about an outage in microseconds, not after a timeout. fail_fast
            // also makes fred answer a command that was in flight when its
            // connection closed with the error instead of writing it again; the
            // store's own retry loop re-sends batches, all of which are safe to
            // repeat.
            fail_fast: true,
            // A redirected command was not executed: fred answers it "Too many
            // redirections" (after refreshing its slot map on `MOVED`), and the
            // store follows it (see MAX_REDIRECTIONS).
            max_attempts: Some(FRED_WRITE_ATTEMPTS),
            max_redirections: Some(MAX_REDIRECTIONS),
            ..Options::default()
        };
        let client = client.unwrap_or_else(|| self.pool.next());
        let pipeline = client.pipeline().with_options(&options);
        for (command, args) in batch.commands(send_source) {
            let queued = crate::typed::queue(&pipeline, &command.cmd, &args)
                .await
                .map_err(|e| failure::from_fred(&e, &self.address, what))?;
            if !queued {
                let _: Value = pipeline
                    .custom(command, args)
                    .await
                    .map_err(|e| failure::from_fred(&e, &self.address, what))?;
            }
        }
        let mut replies = pipeline.try_all::<Value>().await;
        if replies.len() != batch.len() {
            // The pipeline as a whole failed (timeout, connection lost): fred
            // reports one error instead of one reply per command.
            let error = replies.pop().and_then(|r| r.err()).unwrap_or_else(|| {
                fred::error::Error::new(fred::error::ErrorKind::Protocol, "reply count mismatch")
            });
            return Err(failure::from_fred(&error, &self.address, what));
        }
        if self.mode == "cluster" {
            self.follow_asks(batch, send_source, &mut replies, &options)
                .await;
        }
        Ok(replies)
    }

    /// Queues `WAIT` after the writes of `batch` when `wait_for_replicas` is set.
    pub(crate) fn push_replica_wait(&self, batch: &mut Batch, key: &str) -> Option<usize> {
        self.replica_wait
            .map(|wait| batch.push_wait(key, wait.replicas, wait.timeout_ms))
    }

    /// Checks the `WAIT` reply queued by [`push_replica_wait`](Self::push_replica_wait).
    ///
    /// A shortfall is [`Error::Unavailable`]: `wait_for_replicas` promises that an
    /// acknowledged write survives a failover, so a write not yet on enough
    /// replicas is not acknowledged. Every write carries an idempotency key, so
    /// the caller's retry is recognised and answered as the first attempt was
    /// (never AlreadyExists, Conflict or a second frame).
    pub(crate) fn check_replica_wait(
        &self,
        replies: &mut Replies,
        index: Option<usize>,
        what: &str,
    ) -> Result<()> {
        let (Some(index), Some(wait)) = (index, self.replica_wait) else {
            return Ok(());
        };
        let acknowledged = replies.int(index, &format!("WAIT after {what}"))?;
        if acknowledged < i64::from(wait.replicas) {
            return Err(Error::unavailable(format!(
                "{what} was applied on the redis primary at {} but only {acknowledged} of the \
                 {} replicas required by redis.wait_for_replicas acknowledged it within {}ms; \
                 it may be lost in a failover (sending it again is safe)",
                self.address, wait.replicas, wait.timeout_ms
            )));
        }
        Ok(())
    }
}

/// Connects the near cache's tracking connection `client` within
/// `connect_timeout` and turns tracking on.
async fn start_near_cache(
    client: &Client,
    config: &RedisConfig,
    address: &str,
) -> Result<NearCache> {
    match tokio::time::timeout(config.connect_timeout, client.init()).await {
        Ok(Ok(_connection_task)) => {}
        Ok(Err(e)) => {
            return Err(Error::unavailable(format!(
                "cannot connect to redis at {address} for the near cache's tracking connection: {}",
                failure::readable_details(&e)
            )))
        }
        Err(_) => {
            return Err(Error::unavailable(format!(
                "cannot connect to redis at {address} for the near cache's tracking connection \
                 within connect_timeout ({:?})",
                config.connect_timeout
            )))
        }
    }
    NearCache::start(
        client.clone(),
        config.near_cache_entries,
        config.near_cache_max_age,
        address,
    )
    .await
}

/// Stops a pool whose `init` outlasted `connect_timeout`, in the background so
/// `connect` returns within its timeout: once `init` ends (bounded by `limit`),
/// a pool that connected after all is quit; one whose `init` failed is already
/// stopped (fred resets its clients), and quitting it again would only log a
/// warning per client.
fn stop_later(
    pool: &Pool,
    init: tokio::task::JoinHandle<
        std::result::Result<fred::types::ConnectHandle, fred::error::Error>,
    >,
    limit: Duration,
) {
    let pool = pool.clone();
    tokio::spawn(async move {
        let stopped_already = matches!(tokio::time::timeout(limit, init).await, Ok(Ok(Err(_))));
        if !stopped_already {
            let _ = tokio::time::timeout(limit, pool.quit()).await;
        }
    });
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, new: NewSession) -> Result<Session> {
        let id = new.id.clone();
        let created = self.create_session(new).await;
        self.forget_near(&id);
        created
    }

    async fn get(&self, id: &SessionId) -> Result<Session> {
        self.get_session(id).await
    }

    async fn get_many(&self, ids: &[SessionId]) -> Result<Vec<Option<Session>>> {
        self.get_sessions(ids).await
    }

    async fn update(&self, session: &Session) -> Result<Session> {
        let updated = self.update_session(session).await;
        self.forget_near(&session.id);
        updated
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        let touched = self.touch_session(id).await;
        self.forget_near(id);
        touched
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        let deleted = self.delete_session(id).await;
        self.forget_near(id);
        deleted
    }

    async fn list(&self, cursor: Option<&Cursor>, limit: usize) -> Result<Page<Session>> {
        self.list_sessions(cursor, limit).await
    }

    async fn count(&self) -> Result<u64> {
        self.count_sessions().await
    }

    /// Appends under a fresh [`AppendKey`](crate::AppendKey), so the store's own
    /// retries never store the frame twice.
    async fn append_frame(&self, id: &SessionId, frame: Frame) -> Result<FrameId> {
        let key = self.append_keys.next_key();
        self.append_frame_with_key(id, &frame, &key).await
    }

    /// One `EVALSHA` for the whole batch, each frame under a fresh
    /// [`AppendKey`](crate::AppendKey), so the store's own retries never store
    /// the batch twice.
    async fn append_frames(&self, id: &SessionId, frames: Vec<Frame>) -> Result<Vec<FrameId>> {
        let keys: Vec<_> = frames.iter().map(|_| self.append_keys.next_key()).collect();
        self.append_frames_with_keys(id, &frames, &keys).await
    }

    async fn read_frames(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<Vec<StoredFrame>> {
        Ok(self.read(id, after, limit).await?.frames)
    }

    async fn read_frames_page(
        &self,
        id: &SessionId,
        after: Option<FrameId>,
        limit: usize,
    ) -> Result<FramePage> {
        self.read(id, after, limit).await
    }

    async fn count_frames(&self, id: &SessionId) -> Result<u64> {
        self.count_session_frames(id).await
    }

    async fn delete_frames(&self, id: &SessionId) -> Result<u64> {
        let deleted = self.delete_session_frames(id).await;
        self.forget_near(id);
        deleted
    }

    async fn purge_expired(&self) -> Result<u64> {
        self.purge().await
    }

    async fn health(&self) -> Result<Health> {
        self.check_health().await
    }

    fn readings(&self) -> Vec<(&'static str, f64)> {
        RedisStore::readings(self)
    }

    async fn kv_get(&self, key: &KvKey) -> Result<Option<KvEntry>> {
        self.get_value(key).await
    }

    async fn kv_put(
        &self,
        key: &KvKey,
        value: &[u8],
        ttl: Duration,
        condition: KvCondition,
    ) -> Result<KvPut> {
        self.put_value(key, value, ttl, condition).await
    }

    async fn kv_delete(&self, key: &KvKey, condition: KvCondition) -> Result<bool> {
        self.delete_value(key, condition).await
    }
}

/// Whether connecting failed because Redis refused the username or password
/// (a reply `WRONGPASS` or `NOAUTH`, or the client's own authentication error).
fn refused_credentials(error: &fred::error::Error) -> bool {
    let details = error.details();
    *error.kind() == fred::error::ErrorKind::Auth
        || details.contains("WRONGPASS")
        || details.contains("NOAUTH")
}
