//! Redis commands issued by hand with fred, the way the store would send them but
//! without its key building, reply checking and decoding: the limit of the data
//! model.

use fred::{
    clients::Pool,
    interfaces::ClientLike,
    prelude::{Builder, Config},
    types::{ClusterHash, CustomCommand, Value},
};

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
            performance.default_command_timeout = std::time::Duration::from_secs(5);
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

/// Sends the commands as one pipeline (one round trip) and returns every reply;
/// any error reply is an error naming its command.
pub async fn pipeline(pool: &Pool, commands: Vec<Command>) -> Result<Vec<Value>, String> {
    let names: Vec<&'static str> = commands.iter().map(|(name, _)| *name).collect();
    let pipeline = pool.next().pipeline();
    for (name, args) in commands {
        let _: Value = pipeline
            .custom(CustomCommand::new(name, ClusterHash::FirstKey, false), args)
            .await
            .map_err(|e| format!("queueing {name}: {e}"))?;
    }
    let replies = pipeline.try_all::<Value>().await;
    if replies.len() != names.len() {
        return Err(format!(
            "pipeline of {names:?}: {} replies for {} commands",
            replies.len(),
            names.len()
        ));
    }
    replies
        .into_iter()
        .zip(names)
        .map(|(reply, name)| reply.map_err(|e| format!("{name}: {e}")))
        .collect()
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
