//! Server-Sent Events, both ways: an incremental parser for the upstream's byte
//! stream (any chunking, LF/CRLF/CR line ends) and the encoder for events the proxy
//! sends to its client, and the batching of events that arrived together.
//!
//! Why not a crate: the well-kept SSE parsers (`eventsource-stream` 0.2,
//! `sse-stream` 0.2, which rmcp uses) were evaluated against the proxy's limits
//! and fall short on one: they buffer an event's lines without bound, so an
//! upstream sending one endless event would grow the proxy's memory until it
//! fails, while [`SseParser`] refuses an event over its byte cap
//! ([`EventTooLarge`]) as soon as the cap is crossed, mid-chunk. Both also own
//! the body stream, where the relay feeds chunks it also counts and times
//! (`push`); and `eventsource-stream` decodes into a `String` buffer first. Any
//! chunking and every line ending are covered by this module's tests.

use std::mem;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};

/// One event from an SSE stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` field, when present.
    pub id: Option<String>,
    /// The `event:` field (type), when present.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`; empty for a priming event.
    pub data: String,
    /// The `retry:` field in milliseconds, when present.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// True when the event carries no message (a priming event or a bare retry
    /// hint): there is nothing to record.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The event in wire form, ending with the blank line that dispatches it.
    pub fn encode(&self) -> Bytes {
        let mut out = String::with_capacity(self.data.len() + 64);
        if let Some(event) = &self.event {
            push_field(&mut out, "event", event);
        }
        if let Some(id) = &self.id {
            push_field(&mut out, "id", id);
        }
        if let Some(retry) = self.retry {
            push_field(&mut out, "retry", &retry.to_string());
        }
        if self.data.is_empty() {
            // A priming event: an id with empty data, as MCP servers send them.
            out.push_str("data:\n");
        }
        for line in self.data.split('\n').filter(|_| !self.data.is_empty()) {
            push_field(&mut out, "data", line);
        }
        out.push('\n');
        Bytes::from(out)
    }
}

fn push_field(out: &mut String, name: &str, value: &str) {
    // A value never holds a line break: ids and types are single tokens, and
    // data was split by line above.
    out.push_str(name);
    out.push_str(": ");
    if value.contains(['\n', '\r']) {
        out.extend(value.chars().filter(|c| *c != '\n' && *c != '\r'));
    } else {
        out.push_str(value);
    }
    out.push('\n');
}

/// The line that opens an SSE comment: sent to keep idle connections open.
pub fn keep_alive_comment() -> Bytes {
    Bytes::from_static(b": keep-alive\n\n")
}

/// An event larger than the parser's limit.
#[derive(Debug, thiserror::Error)]
#[error("SSE event exceeds {limit} bytes")]
pub struct EventTooLarge {
    /// The limit that was exceeded.
    pub limit: usize,
}

/// Incremental SSE parser: feed it chunks as they arrive, take complete events.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    pending: SseEvent,
    has_fields: bool,
    data_lines: usize,
    pending_bytes: usize,
    limit: usize,
}

impl SseParser {
    /// A parser that rejects events (or lines) larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            pending: SseEvent::default(),
            has_fields: false,
            data_lines: 0,
            pending_bytes: 0,
            limit,
        }
    }

    /// Feeds one chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, EventTooLarge> {
        let mut events = Vec::new();
        for &byte in chunk {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = mem::take(&mut self.line);
                    if let Some(event) = self.end_line(&line) {
                        events.push(event);
                    }
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(byte);
                    if self.line.len() + self.pending_bytes > self.limit {
                        return Err(EventTooLarge { limit: self.limit });
                    }
                }
            }
        }
        Ok(events)
    }

    fn end_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            self.pending_bytes = 0;
            self.data_lines = 0;
            if !mem::take(&mut self.has_fields) {
                return None;
            }
            return Some(mem::take(&mut self.pending));
        }
        if line.first() == Some(&b':') {
            return None; // a comment
        }
        let line = String::from_utf8_lossy(line);
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        self.pending_bytes += line.len();
        match name {
            "data" => {
                if self.data_lines > 0 {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(value);
                self.data_lines += 1;
            }
            "id" if !value.contains('\0') => self.pending.id = Some(value.to_owned()),
            "event" => self.pending.event = Some(value.to_owned()),
            "retry" => {
                if let Ok(millis) = value.parse() {
                    self.pending.retry = Some(millis);
                }
            }
            _ => return None, // unknown fields are ignored, as the SSE spec says
        }
        self.has_fields = true;
        None
    }
}

/// Whether a response is an SSE stream.
pub fn is_event_stream(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"))
}

/// Events taken from the upstream without waiting, at most, to be recorded in
/// one batch (beyond one chunk's own events).
pub const MAX_BATCH_EVENTS: usize = 256;

/// Why a batch was the last of its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchEnd {
    /// The upstream closed the stream (or it broke off).
    Closed,
    /// The upstream sent an invalid or oversized event.
    Rejected,
}

/// The events of `chunk` and of every further chunk `chunks` has already
/// delivered (polled without waiting, up to [`MAX_BATCH_EVENTS`]), and how the
/// connection ended if it did meanwhile. Events parsed before an invalid chunk
/// are kept.
pub fn take_ready_events<S, E>(
    parser: &mut SseParser,
    chunks: &mut S,
    chunk: &[u8],
) -> (Vec<SseEvent>, Option<BatchEnd>)
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut events = match parser.push(chunk) {
        Ok(events) => events,
        Err(error) => {
            tracing::warn!(%error, "upstream SSE stream rejected");
            return (Vec::new(), Some(BatchEnd::Rejected));
        }
    };
    while events.len() < MAX_BATCH_EVENTS {
        match chunks.next().now_or_never() {
            None => break,
            Some(None) => return (events, Some(BatchEnd::Closed)),
            Some(Some(Err(error))) => {
                tracing::warn!(%error, "upstream SSE stream broke off");
                return (events, Some(BatchEnd::Closed));
            }
            Some(Some(Ok(chunk))) => match parser.push(&chunk) {
                Ok(more) => events.extend(more),
                Err(error) => {
                    tracing::warn!(%error, "upstream SSE stream rejected");
                    return (events, Some(BatchEnd::Rejected));
                }
            },
        }
    }
    (events, None)
}

/// `events` in wire form, as one chunk of the client's body.
pub fn encode_all(events: &[SseEvent]) -> Bytes {
    match events {
        [event] => event.encode(),
        _ => {
            let mut out = BytesMut::new();
            for event in events {
                out.extend_from_slice(&event.encode());
            }
            out.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new(1024);
        chunks
            .iter()
            .flat_map(|c| parser.push(c).unwrap())
            .collect()
    }

    #[test]
    fn events_survive_any_chunking_and_line_ending() {
        let wire =
            b"id: 1\r\ndata: {\"a\":1}\r\n\r\n: comment\n\nevent: message\rdata: x\rdata: y\r\r";
        let whole = parse_all(&[wire]);
        let bytewise: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(whole, parse_all(&bytewise));
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].id.as_deref(), Some("1"));
        assert_eq!(whole[0].data, "{\"a\":1}");
        assert_eq!(whole[1].event.as_deref(), Some("message"));
        assert_eq!(whole[1].data, "x\ny");
    }

    #[test]
    fn priming_events_are_kept_with_their_id_and_retry() {
        let events = parse_all(&[b"id: 0\nretry: 3000\ndata:\n\n"]);
        assert_eq!(events.len(), 1);
        assert!(events[0].is_empty());
        assert_eq!(events[0].retry, Some(3000));
        assert_eq!(events[0].id.as_deref(), Some("0"));
    }

    #[test]
    fn encode_round_trips() {
        let event = SseEvent {
            id: Some("1-0@r1-0".into()),
            event: Some("message".into()),
            data: "line1\nline2".into(),
            retry: Some(500),
        };
        assert_eq!(parse_all(&[&event.encode()]), vec![event]);
        let priming = SseEvent {
            id: Some("5-0@g1".into()),
            ..SseEvent::default()
        };
        assert_eq!(parse_all(&[&priming.encode()]), vec![priming]);
    }

    #[test]
    fn oversized_events_are_rejected() {
        let mut parser = SseParser::new(8);
        assert!(parser.push(b"data: 0123456789\n").is_err());
    }

    #[test]
    fn chunks_already_delivered_join_the_batch_and_waiting_ends_it() {
        type Chunk = Result<Bytes, std::convert::Infallible>;
        let ready = |parts: &[&'static [u8]]| {
            parts
                .iter()
                .map(|part| Ok(Bytes::from_static(part)))
                .collect::<Vec<Chunk>>()
        };
        // Two more chunks are there, then the upstream waits: one batch of three.
        let mut parser = SseParser::new(1024);
        let mut open = futures::stream::iter(ready(&[b"data: 2\n", b"\ndata: 3\n\n"]))
            .chain(futures::stream::pending());
        let (events, end) = take_ready_events(&mut parser, &mut open, b"data: 1\n\n");
        let data: Vec<&str> = events.iter().map(|event| event.data.as_str()).collect();
        assert_eq!(data, ["1", "2", "3"]);
        assert_eq!(end, None, "nothing waited for, nothing ended");
        // The upstream closed after its last chunk: the batch says so.
        let mut parser = SseParser::new(1024);
        let mut closed = futures::stream::iter(ready(&[b"data: 2\n\n"]));
        let (events, end) = take_ready_events(&mut parser, &mut closed, b"data: 1\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(end, Some(BatchEnd::Closed));
        // An oversized event in a later chunk keeps the events before it.
        let mut parser = SseParser::new(8);
        let mut bad = futures::stream::iter(ready(&[b"data: 0123456789\n"]));
        let (events, end) = take_ready_events(&mut parser, &mut bad, b"data: 1\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(end, Some(BatchEnd::Rejected));
        assert_eq!(
            encode_all(&events),
            events[0].encode(),
            "one event is sent as is"
        );
    }
}
