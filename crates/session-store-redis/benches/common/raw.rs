//! Redis commands issued by hand with fred, the way the store sends them (one
//! pipeline with the store's per-command options, typed fred calls where the store
//! uses them) but without its key building, reply checking and decoding: the limit
//! of the data model.

use std::time::Duration;

use fred::{
    clients::{Client, Pipeline, Pool, WithOptions},
    interfaces::ClientLike,
    prelude::{Builder, Config},
    types::{config::Options, ClusterHash, CustomCommand, Value},
};

/// The bench store's `command_timeout`, also the raw clients' default timeout.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A pipeline the store's way, with typed commands queued on it.
pub type StorePipeline = WithOptions<Pipeline<Client>>;

/// A command name and its arguments (first argument = the key it routes by).
pub type Command = (&'static str, Vec<Value>);

/// A text argument.
pub fn text(value: impl Into<String>) -> Value {
    Value::String(value.into().into())
}

/// A number argument, as the decimal text Redis expects.
pub fn number(value: u64) -> Value {
    text(value.to_string())
}

/// A binary argument.
pub fn bytes(value: &[u8]) -> Value {
    Value::Bytes(value.to_vec().into())
}

/// A connected fred pool of `size` clients with the store's command timeout.
pub async fn connect_pool(url: &str, size: usize) -> Result<Pool, String> {
    let config = Config::from_url(url).map_err(|e| format!("redis url {url}: {e}"))?;
    let pool = Builder::from_config(config)
        .with_performance_config(|performance| {
            performance.default_command_timeout = COMMAND_TIMEOUT;
        })
        .build_pool(size)
        .map_err(|e| format!("fred pool for {url}: {e}"))?;
    pool.init()
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    Ok(pool)
}

/// Sends one command and returns its reply.
pub async fn single(pool: &Pool, (name, args): Command) -> Result<Value, String> {
    pool.next()
        .custom(CustomCommand::new(name, ClusterHash::FirstKey, false), args)
        .await
        .map_err(|e| format!("{name}: {e}"))
}

/// The per-command options the store sends every batch with (`src/store.rs`,
/// `send`): the command timeout, fail fast while disconnected, one attempt.
pub fn store_options() -> Options {
    Options {
        timeout: Some(COMMAND_TIMEOUT),
        fail_fast: true,
        max_attempts: Some(1),
        ..Options::default()
    }
}

/// An empty pipeline on the pool's next client with the store's options.
pub fn store_pipeline(pool: &Pool) -> StorePipeline {
    pool.next().pipeline().with_options(&store_options())
}

/// Queues `name args...` as a fred `custom` command (fred flushes the socket after
/// each one), routed by `hash`.
pub async fn queue_custom(
    pipeline: &StorePipeline,
    hash: ClusterHash,
    (name, args): Command,
) -> Result<(), String> {
    let _: Value = pipeline
        .custom(CustomCommand::new(name, hash, false), args)
        .await
        .map_err(|e| format!("queueing {name}: {e}"))?;
    Ok(())
}

/// Sends a pipeline of `queued` commands (one round trip) and returns every
/// reply; any error reply is an error naming `what`.
pub async fn send(
    pipeline: StorePipeline,
    queued: usize,
    what: &str,
) -> Result<Vec<Value>, String> {
    let replies = pipeline.try_all::<Value>().await;
    if replies.len() != queued {
        return Err(format!(
            "{what}: {} replies for {queued} commands",
            replies.len()
        ));
    }
    replies
        .into_iter()
        .map(|reply| reply.map_err(|e| format!("{what}: {e}")))
        .collect()
}

/// Sends the commands as fred `custom` commands in one pipeline with the store's
/// options: how the store sent every batch before it used typed commands.
pub async fn custom_pipeline(pool: &Pool, commands: Vec<Command>) -> Result<Vec<Value>, String> {
    let queued = commands.len();
    let what = format!(
        "custom pipeline of {:?}",
        commands.iter().map(|c| c.0).collect::<Vec<_>>()
    );
    let pipeline = store_pipeline(pool);
    for command in commands {
        queue_custom(&pipeline, ClusterHash::FirstKey, command).await?;
    }
    send(pipeline, queued, &what).await
}

/// An integer reply (or an integer sent as text).
pub fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(n) => Some(*n),
        Value::String(s) => s.parse().ok(),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// A text reply.
pub fn reply_text(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.to_string()),
        Value::Bytes(b) => String::from_utf8(b.to_vec()).ok(),
        _ => None,
    }
}

/// The value of `name:` in an `INFO` reply.
pub fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
}
