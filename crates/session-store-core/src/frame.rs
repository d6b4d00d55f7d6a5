//! Frames: the JSON-RPC messages that crossed a session, and their ids.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{Error, Timestamp};

/// The position of a frame in its session's log: a (milliseconds, sequence) pair
/// ordered like a Redis Stream entry id, in every backend.
///
/// Ids of one session strictly increase in append order, so an id is usable as an SSE
/// event id and as a replay cursor. The text form is `"<millis>-<seq>"`.
///
/// ```
/// use session_store_core::FrameId;
///
/// let id: FrameId = "1700000000000-3".parse()?;
/// assert!(id > FrameId::new(1_700_000_000_000, 2));
/// assert_eq!(id.to_string(), "1700000000000-3");
/// # Ok::<(), session_store_core::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct FrameId {
    /// Milliseconds part (the append time, never decreasing within a session).
    pub millis: u64,
    /// Sequence within the same millisecond.
    pub seq: u64,
}

impl FrameId {
    /// Smaller than every id a store hands out: "read from the start".
    pub const ZERO: FrameId = FrameId { millis: 0, seq: 0 };

    /// Builds an id from its parts.
    pub const fn new(millis: u64, seq: u64) -> Self {
        FrameId { millis, seq }
    }

    /// The id a store assigns to the next frame appended at `now` after `last`:
    /// `now-0` when time has moved past `last`, else `last.millis-(last.seq+1)`.
    /// This keeps ids increasing even when clocks of several writers disagree.
    pub fn next_after(last: FrameId, now: Timestamp) -> FrameId {
        if now.as_millis() > last.millis {
            FrameId::new(now.as_millis(), 0)
        } else {
            FrameId::new(last.millis, last.seq.saturating_add(1))
        }
    }
}

impl fmt::Display for FrameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.millis, self.seq)
    }
}

impl fmt::Debug for FrameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FrameId({self})")
    }
}

impl FromStr for FrameId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad =
            || Error::invalid_input(format!("frame id `{s}` is not of the form <millis>-<seq>"));
        let (millis, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(FrameId {
            millis: millis.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// Which way a message travelled through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the MCP client to the upstream server.
    ClientToServer,
    /// From the upstream server to the MCP client.
    ServerToClient,
    /// A direction named by a newer release that this one does not know
    /// (rolling upgrade): the frame is decoded instead of failing.
    #[serde(other)]
    Unknown,
}

/// One JSON-RPC message (or batch) as it crossed the proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Which way it travelled.
    pub direction: Direction,
    /// When the proxy saw it.
    pub timestamp: Timestamp,
    /// The raw JSON-RPC bytes exactly as received: never re-serialized.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// The SSE stream the message was sent on, when it went out as an SSE event.
    #[serde(default)]
    pub stream_id: Option<String>,
    /// The SSE event id it was sent with, when there was one.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Selected HTTP headers that came with it.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Frame {
    /// A frame with no stream, event id or headers.
    pub fn new(direction: Direction, timestamp: Timestamp, payload: impl Into<Vec<u8>>) -> Self {
        Frame {
            direction,
            timestamp,
            payload: payload.into(),
            stream_id: None,
            event_id: None,
            headers: BTreeMap::new(),
        }
    }

    /// Sets the SSE stream this frame belongs to.
    pub fn with_stream_id(mut self, stream_id: impl Into<String>) -> Self {
        self.stream_id = Some(stream_id.into());
        self
    }

    /// Adds one header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Bytes this frame occupies for size limits: the payload plus its strings.
    pub fn encoded_size_hint(&self) -> usize {
        self.payload.len()
            + self.stream_id.as_ref().map_or(0, String::len)
            + self.event_id.as_ref().map_or(0, String::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// A frame together with the id the store gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFrame {
    /// Its position in the session's log.
    pub id: FrameId,
    /// The frame as appended.
    pub frame: Frame,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_id_orders_like_a_stream_entry_id() {
        assert!(FrameId::new(1, 9) < FrameId::new(2, 0));
        assert!(FrameId::new(2, 0) < FrameId::new(2, 1));
        assert_eq!("5-7".parse::<FrameId>().unwrap(), FrameId::new(5, 7));
        for bad in ["", "5", "5-", "-7", "a-b", "5-7-9"] {
            assert!(
                matches!(bad.parse::<FrameId>(), Err(Error::InvalidInput(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn next_after_never_goes_backwards() {
        let last = FrameId::new(100, 4);
        assert_eq!(
            FrameId::next_after(last, Timestamp::from_millis(101)),
            FrameId::new(101, 0)
        );
        assert_eq!(
            FrameId::next_after(last, Timestamp::from_millis(100)),
            FrameId::new(100, 5)
        );
        assert_eq!(
            FrameId::next_after(last, Timestamp::from_millis(7)),
            FrameId::new(100, 5)
        );
    }
}
