//! The stored encoding: MessagePack with named fields behind a one-byte format
//! version.
//!
//! Named fields let a newer reader decode what an older writer stored (missing
//! optional fields default); the version byte lets a reader refuse, with
//! [`Error::Corrupt`], bytes it does not understand instead of misreading them.

use serde::{de::DeserializeOwned, Serialize};

use crate::Error;

/// The format version this build writes.
pub const FORMAT_VERSION: u8 = 1;

/// Format versions this build reads.
pub const SUPPORTED_VERSIONS: &[u8] = &[1];

/// Encodes `value` as `[FORMAT_VERSION] ++ msgpack(value)`.
///
/// ```
/// use session_store_core::{codec, FrameId};
///
/// let bytes = codec::encode(&FrameId::new(7, 1))?;
/// assert_eq!(bytes[0], codec::FORMAT_VERSION);
/// assert_eq!(codec::decode::<FrameId>(&bytes)?, FrameId::new(7, 1));
/// assert!(codec::decode::<FrameId>(b"\xffgarbage").is_err());
/// # Ok::<(), session_store_core::Error>(())
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(128);
    out.push(FORMAT_VERSION);
    rmp_serde::encode::write_named(&mut out, value)
        .map_err(|e| Error::invalid_input(format!("value cannot be encoded: {e}")))?;
    Ok(out)
}

/// Decodes bytes written by [`encode`] (by this or an older version). Empty input, an
/// unknown version byte, or bytes that are not the expected shape are
/// [`Error::Corrupt`]; this function never panics.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| Error::corrupt("empty value where an encoded record was expected"))?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(Error::corrupt(format!(
            "unknown format version {version} (this build reads {SUPPORTED_VERSIONS:?}); \
             written by a newer release, or not written by this store"
        )));
    }
    rmp_serde::from_slice(body).map_err(|e| {
        Error::corrupt(format!(
            "cannot decode {} ({} bytes, format {version}): {e}",
            short_type_name::<T>(),
            bytes.len()
        ))
    })
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Direction, Frame, NewSession, SessionId, Timestamp};
    use proptest::prelude::*;

    #[test]
    fn session_round_trips() {
        let session = NewSession::new(SessionId::new("abc").unwrap())
            .with_protocol_version("2025-06-18")
            .with_tag("tenant", "t1")
            .into_session(Timestamp::from_millis(5), Timestamp::from_millis(10));
        let bytes = encode(&session).unwrap();
        assert_eq!(decode::<crate::Session>(&bytes).unwrap(), session);
    }

    #[test]
    fn frame_payload_is_kept_byte_for_byte() {
        let raw = b"{\"jsonrpc\":\"2.0\",  \"id\":1,\"method\":\"ping\"}\n".to_vec();
        let frame = Frame::new(
            Direction::ClientToServer,
            Timestamp::from_millis(1),
            raw.clone(),
        );
        let back: Frame = decode(&encode(&frame).unwrap()).unwrap();
        assert_eq!(back.payload, raw);
    }

    #[test]
    fn enum_values_of_a_newer_release_decode_as_unknown() {
        use crate::{SessionStatus, Transport};
        // A record as a newer release might write it: the same fields, with
        // enum values this release has never heard of, and a new field.
        #[derive(serde::Serialize)]
        struct Newer {
            transport: &'static str,
            status: &'static str,
            direction: &'static str,
            added_later: u32,
        }
        #[derive(serde::Deserialize)]
        struct Older {
            transport: Transport,
            status: SessionStatus,
            direction: Direction,
        }
        let bytes = encode(&Newer {
            transport: "carrier_pigeon",
            status: "suspended",
            direction: "sideways",
            added_later: 7,
        })
        .unwrap();
        let older: Older = decode(&bytes).unwrap();
        assert_eq!(older.transport, Transport::Unknown);
        assert_eq!(older.status, SessionStatus::Unknown);
        assert_eq!(older.direction, Direction::Unknown);
        // Known values still decode as themselves.
        let known = encode(&Newer {
            transport: "stdio",
            status: "active",
            direction: "server_to_client",
            added_later: 0,
        })
        .unwrap();
        let older: Older = decode(&known).unwrap();
        assert_eq!(older.transport, Transport::Stdio);
        assert_eq!(older.status, SessionStatus::Active);
        assert_eq!(older.direction, Direction::ServerToClient);
        // And what this release writes for a unit variant is what it reads.
        let round: Direction = decode(&encode(&Direction::ClientToServer).unwrap()).unwrap();
        assert_eq!(round, Direction::ClientToServer);
    }

    #[test]
    fn unknown_version_is_corrupt() {
        let mut bytes = encode(&1u32).unwrap();
        bytes[0] = 99;
        let err = decode::<u32>(&bytes).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt(m) if m.contains("unknown format version 99")),
            "{err}"
        );
    }

    #[test]
    fn empty_and_truncated_are_corrupt() {
        assert!(matches!(decode::<u32>(&[]), Err(Error::Corrupt(_))));
        let session = NewSession::new(SessionId::new("abc").unwrap())
            .into_session(Timestamp::from_millis(5), Timestamp::from_millis(10));
        let bytes = encode(&session).unwrap();
        for cut in 1..bytes.len() {
            assert!(matches!(
                decode::<crate::Session>(&bytes[..cut]),
                Err(Error::Corrupt(_))
            ));
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<crate::Session>(&bytes);
            let _ = decode::<Frame>(&bytes);
        }

        #[test]
        fn random_bytes_behind_a_valid_version_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            let mut versioned = vec![FORMAT_VERSION];
            versioned.extend_from_slice(&bytes);
            if let Err(err) = decode::<crate::Session>(&versioned) {
                prop_assert!(matches!(err, Error::Corrupt(_)));
            }
        }
    }
}
