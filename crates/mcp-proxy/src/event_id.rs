//! The SSE event ids the proxy issues: `<frame_id>@<stream_id>`.
//!
//! The frame id makes an event id unique across every stream of a session (frame
//! ids of one session strictly increase) and is the replay cursor; the stream id
//! names the stream, so a resumption replays that stream and never another's.
//!
//! Stream ids say where a stream came from:
//! - `r<frame_id>`: the reply stream of a POST whose request was recorded as that
//!   frame. The request tells which responses end the stream.
//! - `g<hex>`: a GET (server-to-client) stream.
//! - `u<hex>`: the reply stream of a POST whose request could not be recorded.

use std::{fmt, str::FromStr};

use session_store::FrameId;

/// The id of one SSE stream within a session.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamId(String);

/// What kind of stream a [`StreamId`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// The reply stream of the POST recorded as this frame.
    Request(FrameId),
    /// A GET stream.
    Get,
    /// The reply stream of a POST whose request is not in the store.
    Unrecorded,
}

impl StreamId {
    /// The reply stream of the POST whose request frame is `request`.
    pub fn for_request(request: FrameId) -> Self {
        StreamId(format!("r{request}"))
    }

    /// A new GET stream.
    pub fn new_get() -> Self {
        StreamId(format!("g{:016x}", rand::random::<u64>()))
    }

    /// A new reply stream for a POST whose request was not recorded.
    pub fn new_unrecorded() -> Self {
        StreamId(format!("u{:016x}", rand::random::<u64>()))
    }

    /// The stream id as text, as stored in `Frame::stream_id`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What kind of stream this is.
    pub fn kind(&self) -> StreamKind {
        if let Some(frame) = self.0.strip_prefix('r') {
            frame
                .parse()
                .map_or(StreamKind::Unrecorded, StreamKind::Request)
        } else if self.0.starts_with('g') {
            StreamKind::Get
        } else {
            StreamKind::Unrecorded
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An SSE event id issued by the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyEventId {
    /// The frame the event carried (or, for a priming event, the last frame of the
    /// stream before it): replay continues after it.
    pub frame: FrameId,
    /// The stream the event was sent on.
    pub stream: StreamId,
}

impl fmt::Display for ProxyEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.frame, self.stream)
    }
}

impl FromStr for ProxyEventId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "Last-Event-ID {} was not issued by this proxy (expected <frame_id>@<stream_id>)",
                crate::log_text::ClientText(s.as_bytes())
            )
        };
        let (frame, stream) = s.split_once('@').ok_or_else(bad)?;
        let frame = frame.parse().map_err(|_| bad())?;
        let valid_stream = stream.len() > 1
            && stream.len() <= 64
            && matches!(stream.as_bytes().first(), Some(b'r' | b'g' | b'u'))
            && stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid_stream {
            return Err(bad());
        }
        Ok(ProxyEventId {
            frame,
            stream: StreamId(stream.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_name_their_stream() {
        let stream = StreamId::for_request(FrameId::new(1700, 2));
        assert_eq!(stream.kind(), StreamKind::Request(FrameId::new(1700, 2)));
        let id = ProxyEventId {
            frame: FrameId::new(1701, 0),
            stream,
        };
        assert_eq!(id.to_string(), "1701-0@r1700-2");
        assert_eq!(id.to_string().parse::<ProxyEventId>().unwrap(), id);
        assert_eq!(StreamId::new_get().kind(), StreamKind::Get);
        assert_eq!(StreamId::new_unrecorded().kind(), StreamKind::Unrecorded);
    }

    #[test]
    fn foreign_ids_are_rejected() {
        for bad in [
            "",
            "17",
            "17-0",
            "17-0@",
            "x@r1-0",
            "17-0@zz",
            "17-0@r1 0",
            "0/3",
        ] {
            assert!(bad.parse::<ProxyEventId>().is_err(), "{bad}");
        }
    }
}
