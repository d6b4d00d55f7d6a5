//! Translating fred errors into the store's [`Error`], with the address and key a
//! user needs and never a password.

use fred::error::{Error as FredError, ErrorKind};
use session_store_core::Error;

/// fred's details of an error as a reader wants them: an I/O error's
/// operating-system message (`Connection refused`) rather than its `Debug` form
/// (`Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }`).
pub(crate) fn readable_details(error: &FredError) -> String {
    let details = error.details();
    details
        .split_once("message: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(|| details.to_owned(), |(message, _)| message.to_owned())
}

/// Maps a fred error met while doing `what` (e.g. "touch of `mcp:{id}:meta`") on
/// the deployment at `address` (already free of credentials).
///
/// Only failures that sending again may cure are [`Error::Unavailable`] (the
/// retryable class the fallback breaker counts): I/O, timeouts, cluster
/// routing, and the server's "not now" replies (`LOADING`, `BUSY`, `TRYAGAIN`,
/// `CLUSTERDOWN`, `MASTERDOWN`, `READONLY`, `NOREPLICAS`, `OOM`). Replies about
/// the request are [`Error::InvalidInput`] (`CROSSSLOT`, an invalid stream id,
/// other `ERR`s), replies about stored data are [`Error::Corrupt`]
/// (`WRONGTYPE`, a script failing on a stored value), and an ACL refusal
/// (`NOPERM`) or a command the server lacks is [`Error::Config`].
pub(crate) fn from_fred(error: &FredError, address: &str, what: &str) -> Error {
    let details = error.details();
    match ServerReply::of(details) {
        Some(ServerReply::Transient) => {
            return Error::unavailable(format!(
                "redis at {address} cannot serve {what} right now: {details}"
            ))
        }
        Some(ServerReply::WrongType) => {
            return Error::corrupt(format!(
                "{what}: the key holds a value of the wrong type ({details})"
            ))
        }
        Some(ServerReply::ScriptFailed) => {
            return Error::corrupt(format!(
                "{what}: a store script failed on the stored data: {details}"
            ))
        }
        Some(ServerReply::NoPermission) => {
            return Error::config(format!(
                "redis at {address} refused {what} by ACL: {details} (grant the user in \
                 redis.username the store's commands on keys under redis.key_prefix)"
            ))
        }
        Some(ServerReply::UnknownCommand) => {
            return Error::config(format!(
                "redis at {address} does not know a command of {what}: {details} \
                 (this store needs Redis 7.0 or later)"
            ))
        }
        Some(ServerReply::Request) => {
            return Error::invalid_input(format!("redis rejected {what}: {details}"))
        }
        None => {}
    }
    match error.kind() {
        ErrorKind::Parse | ErrorKind::Protocol => {
            Error::corrupt(format!("{what}: unexpected reply from redis: {details}"))
        }
        ErrorKind::InvalidArgument | ErrorKind::InvalidCommand => {
            Error::invalid_input(format!("{what}: {details}"))
        }
        ErrorKind::Config | ErrorKind::Url => Error::config(format!(
            "redis client for {address} during {what}: {details}"
        )),
        ErrorKind::Auth => Error::unavailable(format!(
            "redis at {address} refused the credentials during {what}: {details} \
             (check storage.redis.username and storage.redis.password, or the credentials in storage.redis.url)"
        )),
        _ => Error::unavailable(format!(
            "redis at {address} did not complete {what}: {}: {details}",
            error.kind().to_str()
        )),
    }
}

/// The classes of error replies a Redis server sends, by their first word.
#[derive(Debug, PartialEq, Eq)]
enum ServerReply {
    /// "Not now": sending again later may succeed.
    Transient,
    WrongType,
    ScriptFailed,
    NoPermission,
    UnknownCommand,
    /// Anything else the server refused about the request itself.
    Request,
}

impl ServerReply {
    fn of(details: &str) -> Option<Self> {
        let first = details.split_whitespace().next().unwrap_or("");
        let reply = match first {
            "LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "READONLY"
            | "NOREPLICAS" | "OOM" | "MISCONF" => ServerReply::Transient,
            "WRONGTYPE" => ServerReply::WrongType,
            "NOPERM" => ServerReply::NoPermission,
            "CROSSSLOT" => ServerReply::Request,
            "ERR" => {
                let lower = details.to_ascii_lowercase();
                if lower.contains("unknown command") || lower.contains("unknown subcommand") {
                    ServerReply::UnknownCommand
                } else if lower.contains("script") || lower.contains("user_function") {
                    ServerReply::ScriptFailed
                } else {
                    ServerReply::Request
                }
            }
            _ => return None,
        };
        Some(reply)
    }
}

/// True when the same command may succeed if sent again soon: the connection
/// failed or timed out, or the server answered "not now" (loading, failing over).
pub(crate) fn is_transient(error: &FredError) -> bool {
    match ServerReply::of(error.details()) {
        Some(reply) => reply == ServerReply::Transient,
        None => matches!(
            error.kind(),
            ErrorKind::IO
                | ErrorKind::Timeout
                | ErrorKind::Canceled
                | ErrorKind::Cluster
                | ErrorKind::Routing
                | ErrorKind::Backpressure
                | ErrorKind::Sentinel
        ),
    }
}

/// True for the reply `EVALSHA` gets when the server does not have the script.
pub(crate) fn is_noscript(error: &FredError) -> bool {
    error.details().starts_with("NOSCRIPT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrongtype_is_corrupt_and_io_is_unavailable() {
        let wrong = FredError::new(
            ErrorKind::InvalidArgument,
            "WRONGTYPE Operation against a key",
        );
        assert!(
            matches!(from_fred(&wrong, "h:1", "get of `k`"), Error::Corrupt(m) if m.contains("`k`"))
        );
        let io = FredError::new(ErrorKind::IO, "connection refused");
        assert!(matches!(from_fred(&io, "h:1", "get"), Error::Unavailable(m) if m.contains("h:1")));
        let loading = FredError::new(ErrorKind::Unknown, "LOADING dataset");
        assert!(from_fred(&loading, "h:1", "get").is_retryable());
        assert!(is_noscript(&FredError::new(
            ErrorKind::Unknown,
            "NOSCRIPT No matching script"
        )));
    }

    #[test]
    fn an_io_error_reads_as_its_operating_system_message() {
        let refused = FredError::new(
            ErrorKind::IO,
            "Os { code: 111, kind: ConnectionRefused, message: \"Connection refused\" }",
        );
        assert_eq!(readable_details(&refused), "Connection refused");
        let plain = FredError::new(ErrorKind::IO, "Connection closed.");
        assert_eq!(readable_details(&plain), "Connection closed.");
    }

    #[test]
    fn server_errors_are_classified_by_their_cause() {
        let class =
            |kind, text: &str| from_fred(&FredError::new(kind, text.to_owned()), "h:1", "append");
        let request = [
            "CROSSSLOT Keys in request don't hash to the same slot",
            "ERR Invalid stream ID specified as stream command argument",
        ];
        for text in request {
            let error = class(ErrorKind::Unknown, text);
            assert!(matches!(error, Error::InvalidInput(_)), "{text}: {error:?}");
            assert!(!error.to_string().contains("7.0"), "{error}");
        }
        let script = class(
            ErrorKind::Unknown,
            "ERR user_script:12: attempt to compare nil with number script: 1a2b",
        );
        assert!(matches!(script, Error::Corrupt(_)), "{script:?}");
        let noperm = class(
            ErrorKind::Unknown,
            "NOPERM User app has no permissions to run the 'evalsha' command",
        );
        assert!(
            matches!(&noperm, Error::Config(m) if m.contains("redis.username")),
            "{noperm:?}"
        );
        for text in [
            "OOM command not allowed when used memory > 'maxmemory'.",
            "READONLY You can't write against a read only replica.",
            "LOADING Redis is loading the dataset in memory",
            "TRYAGAIN Multiple keys request during rehashing of slot",
        ] {
            let error = class(ErrorKind::Unknown, text);
            assert!(error.is_retryable(), "{text}: {error:?}");
            assert!(
                is_transient(&FredError::new(ErrorKind::Unknown, text.to_owned())),
                "{text}"
            );
        }
        let unknown = class(ErrorKind::Unknown, "ERR unknown command 'PEXPIRETIME'");
        assert!(
            matches!(&unknown, Error::Config(m) if m.contains("Redis 7.0")),
            "{unknown:?}"
        );
        for text in ["CROSSSLOT x", "NOPERM x", "ERR syntax error", "WRONGTYPE x"] {
            let error = class(ErrorKind::Unknown, text);
            assert!(!error.is_retryable(), "{text}: {error:?}");
            assert!(
                !is_transient(&FredError::new(ErrorKind::Unknown, text.to_owned())),
                "{text}"
            );
        }
        let exhausted = class(ErrorKind::Unknown, "Too many failed write attempts.");
        assert!(exhausted.is_retryable(), "{exhausted:?}");
    }
}
