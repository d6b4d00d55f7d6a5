//! The load bench's fixture: one store, one raw fred pool and one peer store on the
//! same server with the same pool size, and the sessions each task works on.

pub mod ops;
pub mod report;
pub mod rows;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use fred::clients::Pool;
use session_store_core::{
    codec, Direction, Frame, NewSession, Session, SessionId, SessionStore, StoreSettings,
    SystemClock,
};
use session_store_redis::{RedisConfig, RedisStore, Topology};
use time::OffsetDateTime;
use tower_sessions_core::{session::Record, SessionStore as _};
use tower_sessions_redis_store::RedisStore as PeerStore;

use crate::common::raw;

/// Concurrent tasks of the 64-task rows; each task has a session of its own.
pub const TASKS: usize = 64;
/// Payload of every frame, value and record written.
pub const PAYLOAD_BYTES: usize = 1024;
/// Frames each session holds before the rows start (the read rows read 100).
pub const FRAMES_PER_SESSION: usize = 100;
/// Frame cap, so 64 appending sessions reach the append-and-trim steady state.
pub const MAX_FRAMES: u64 = 1_000;
/// Frames of one `append_frames` row's batch.
pub const BATCH: usize = 8;
/// Index shards, as `RedisConfig::default()`.
pub const INDEX_SHARDS: u16 = 16;
pub const TTL: Duration = Duration::from_secs(3_600);

/// The keys one task works on.
pub struct TaskKeys {
    pub id: SessionId,
    pub meta: String,
    pub frames: String,
    /// The expiry index shard holding `id`.
    pub index: String,
    /// A plain string of 1 KiB for the GET / SET floor.
    pub string: String,
    /// A stream of its own for the XADD floor.
    pub stream: String,
    /// The peer's record.
    pub record: Record,
    /// The session as last stored, for the update rows (only this task
    /// updates it, so its revision is always current).
    pub session: Mutex<Session>,
}

/// Everything the rows of one pool size share.
pub struct Fixture {
    pub store: Arc<RedisStore>,
    /// The same key prefix with the near cache on (`near_cache_entries`).
    pub near: Arc<RedisStore>,
    pub raw: Pool,
    pub peer: Arc<PeerStore<Pool>>,
    pub tasks: Arc<Vec<TaskKeys>>,
    pub frame: Frame,
    pub encoded_frame: Bytes,
    pub payload: Bytes,
    /// SHA-1 of the store's append script, as the store loaded it.
    pub append_sha: String,
    /// SHA-1 of the store's get script (`RedisStore::get_script_source`),
    /// loaded by the fixture.
    pub get_sha: String,
    /// SHA-1 of the store's touch script (`RedisStore::touch_script_source`),
    /// loaded by the fixture.
    pub touch_sha: String,
    pub ttl_ms: u64,
    pub max_life_ms: u64,
    /// The store's `max_session_frame_bytes`, as its append sends it.
    pub max_session_frame_bytes: u64,
}

impl Fixture {
    /// Connects the three clients with `pool_size` connections each and creates
    /// the sessions (with their frames), strings, streams and peer records.
    pub async fn new(url: &str, pool_size: usize) -> Result<Self, String> {
        let prefix = format!("bench-p{pool_size}");
        let settings = StoreSettings {
            ttl: TTL,
            max_frames_per_session: MAX_FRAMES,
            ..StoreSettings::default()
        };
        let max_life_ms = settings
            .max_lifetime
            .map_or(0, session_store_core::duration_millis);
        let max_session_frame_bytes = settings.max_session_frame_bytes;
        let config = RedisConfig {
            topology: Topology::Standalone {
                url: url.to_owned(),
            },
            pool_size,
            command_timeout: Duration::from_secs(5),
            key_prefix: prefix.clone(),
            index_shards: INDEX_SHARDS,
            ..RedisConfig::default()
        };
        let near_config = RedisConfig {
            near_cache_entries: TASKS * 2,
            ..config.clone()
        };
        let store = RedisStore::connect(config, settings.clone(), Arc::new(SystemClock))
            .await
            .map_err(|e| format!("connecting the store: {e}"))?;
        let near = RedisStore::connect(near_config, settings, Arc::new(SystemClock))
            .await
            .map_err(|e| format!("connecting the store with the near cache: {e}"))?;
        let raw_pool = raw::connect_pool(url, pool_size).await?;
        let peer = PeerStore::new(raw_pool.clone());

        let payload = vec![b'x'; PAYLOAD_BYTES];
        let frame = Frame::new(
            Direction::ServerToClient,
            session_store_core::Clock::now(&SystemClock),
            json_rpc_payload(PAYLOAD_BYTES),
        );
        let encoded_frame = codec::encode(&frame).map_err(|e| format!("encoding a frame: {e}"))?;

        let mut tasks = Vec::with_capacity(TASKS);
        for task in 0..TASKS {
            let id = SessionId::random().map_err(|e| format!("session id: {e}"))?;
            let session = store
                .create(new_session(id.clone()))
                .await
                .map_err(|e| format!("create: {e}"))?;
            let mut record = Record {
                id: Default::default(),
                data: HashMap::from([(
                    "payload".to_owned(),
                    serde_json::Value::String("x".repeat(PAYLOAD_BYTES)),
                )]),
                expiry_date: OffsetDateTime::now_utc() + TTL,
            };
            peer.create(&mut record)
                .await
                .map_err(|e| format!("peer create: {e}"))?;
            let string = format!("{prefix}:floor:string:{task}");
            raw::single(
                &raw_pool,
                ("SET", vec![raw::text(&string), raw::bytes(&payload)]),
            )
            .await?;
            tasks.push(TaskKeys {
                meta: format!("{prefix}:{{{id}}}:meta"),
                frames: format!("{prefix}:{{{id}}}:frames"),
                index: format!(
                    "{prefix}:idx:{}",
                    fnv1a(id.as_str().as_bytes()) % u64::from(INDEX_SHARDS)
                ),
                stream: format!("{prefix}:floor:stream:{task}"),
                string,
                id,
                record,
                session: Mutex::new(session),
            });
        }
        let store = Arc::new(store);
        fill_frames(&store, &tasks, &frame).await?;

        let append_sha = store_loaded(&raw_pool, store.append_script_sha1()).await?;
        let get_sha = script_load(&raw_pool, store.get_script_source()).await?;
        let touch_sha = script_load(&raw_pool, store.touch_script_source()).await?;

        Ok(Fixture {
            store,
            near: Arc::new(near),
            raw: raw_pool,
            peer: Arc::new(peer),
            tasks: Arc::new(tasks),
            frame,
            encoded_frame: Bytes::from(encoded_frame),
            payload: Bytes::from(payload),
            append_sha,
            get_sha,
            touch_sha,
            ttl_ms: session_store_core::duration_millis(TTL),
            max_life_ms,
            max_session_frame_bytes,
        })
    }
}

/// A session as the rows create it: a protocol version and client info, as
/// the proxy's.
pub fn new_session(id: SessionId) -> NewSession {
    let mut new = NewSession::new(id).with_protocol_version("2025-06-18");
    new.client_info = Some(serde_json::json!({"name": "bench-client", "version": "1.0.0"}));
    new
}

/// Appends `FRAMES_PER_SESSION` frames to every session, all sessions at once.
async fn fill_frames(
    store: &Arc<RedisStore>,
    tasks: &[TaskKeys],
    frame: &Frame,
) -> Result<(), String> {
    let fills: Vec<_> = tasks
        .iter()
        .map(|task| {
            let (store, id, frame) = (store.clone(), task.id.clone(), frame.clone());
            tokio::spawn(async move {
                for _ in 0..FRAMES_PER_SESSION {
                    store
                        .append_frame(&id, frame.clone())
                        .await
                        .map_err(|e| format!("filling frames: {e}"))?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for fill in fills {
        fill.await.map_err(|e| format!("fill task: {e}"))??;
    }
    Ok(())
}

/// `SCRIPT LOAD script`: its SHA-1.
async fn script_load(pool: &Pool, script: &str) -> Result<String, String> {
    let reply = raw::single(pool, ("SCRIPT", vec![raw::text("LOAD"), raw::text(script)])).await?;
    raw::reply_text(reply).ok_or_else(|| "SCRIPT LOAD: no SHA-1 in the reply".to_owned())
}

async fn store_loaded(pool: &Pool, sha: &str) -> Result<String, String> {
    let exists = raw::single(pool, ("SCRIPT", vec![raw::text("EXISTS"), raw::text(sha)])).await?;
    let loaded = match &exists {
        fred::types::Value::Array(flags) => flags.first().and_then(raw::integer) == Some(1),
        _ => false,
    };
    if loaded {
        Ok(sha.to_owned())
    } else {
        Err(format!(
            "the store's append script (sha {sha}) is not loaded in redis"
        ))
    }
}

/// A JSON-RPC result of exactly `size` bytes.
fn json_rpc_payload(size: usize) -> Vec<u8> {
    let head = br#"{"jsonrpc":"2.0","id":7,"result":{"text":""#;
    let tail = br#""}}"#;
    let mut payload = head.to_vec();
    payload.resize(size.saturating_sub(tail.len()).max(head.len()), b'a');
    payload.extend_from_slice(tail);
    payload
}

/// The store's shard hash (FNV-1a 64, `src/keys.rs`), to name the index key.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
