//! Translating fred errors into the store's [`Error`], with the address and key a
//! user needs and never a password.

use fred::error::{Error as FredError, ErrorKind};
use session_store_core::Error;

/// Maps a fred error met while doing `what` (e.g. "touch of `mcp:{id}:meta`") on
/// the deployment at `address` (already free of credentials).
pub(crate) fn from_fred(error: &FredError, address: &str, what: &str) -> Error {
    let details = error.details();
    match error.kind() {
        ErrorKind::InvalidArgument if details.contains("WRONGTYPE") => Error::corrupt(format!(
            "{what}: the key holds a value of the wrong type ({details})"
        )),
        ErrorKind::Parse => {
            Error::corrupt(format!("{what}: unexpected reply from redis: {details}"))
        }
        ErrorKind::Auth => Error::unavailable(format!(
            "redis at {address} refused the credentials during {what}: {details} \
             (check redis.username and redis.password)"
        )),
        ErrorKind::IO
        | ErrorKind::Timeout
        | ErrorKind::Canceled
        | ErrorKind::Cluster
        | ErrorKind::Routing
        | ErrorKind::Backpressure
        | ErrorKind::Sentinel
        | ErrorKind::Tls => Error::unavailable(format!(
            "redis at {address} did not complete {what}: {}: {details}",
            error.kind().to_str()
        )),
        _ if is_transient_server_error(details) => Error::unavailable(format!(
            "redis at {address} cannot serve {what} right now: {details}"
        )),
        _ => Error::unavailable(format!(
            "redis at {address} rejected {what}: {details} (this store needs Redis 7.0 or later)"
        )),
    }
}

/// True when the same command may succeed if sent again soon: the connection
/// failed or timed out, or the server answered "not now" (loading, failing over).
pub(crate) fn is_transient(error: &FredError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Cluster
            | ErrorKind::Routing
            | ErrorKind::Backpressure
            | ErrorKind::Sentinel
    ) || is_transient_server_error(error.details())
}

/// Server replies that mean "try again later" rather than "never".
fn is_transient_server_error(details: &str) -> bool {
    [
        "LOADING",
        "BUSY",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "MASTERDOWN",
        "READONLY",
        "NOREPLICAS",
    ]
    .iter()
    .any(|prefix| details.starts_with(prefix))
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
}
