//! An in-memory rmcp `EventStore`: every SSE event the server sends is kept under
//! a unique id, so a GET with `Last-Event-ID` resumes a reply stream right after
//! that event (2025-11-25 "Resumability and Redelivery"), even after its POST
//! connection was dropped: the stored events after it, then the live ones, up to
//! the stream's response.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use rmcp::transport::streamable_http_server::session::{
    EventId, EventStore, EventStoreError, EventStream, ServerSseMessage,
};
use tokio::sync::{mpsc, watch};

/// Events sent to a resuming client while it reads them.
const REPLAY_BUFFER: usize = 16;

/// The events of every stream of this process.
#[derive(Debug)]
pub struct MemoryEventStore {
    inner: Arc<Mutex<Events>>,
    appended: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Events {
    streams: HashMap<String, Vec<ServerSseMessage>>,
    positions: HashMap<EventId, (String, usize)>,
    next_id: u64,
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        MemoryEventStore {
            inner: Arc::default(),
            appended: watch::channel(0).0,
        }
    }
}

/// Whether an event carries a JSON-RPC response (the end of a reply stream).
fn is_response(event: &ServerSseMessage) -> bool {
    event.message.as_ref().is_some_and(|message| {
        serde_json::to_value(message.as_ref()).is_ok_and(|value| {
            value.get("id").is_some()
                && (value.get("result").is_some() || value.get("error").is_some())
        })
    })
}

#[async_trait::async_trait]
impl EventStore for MemoryEventStore {
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<EventId, EventStoreError> {
        let id = {
            let mut events = self.inner.lock();
            events.next_id += 1;
            let id = format!("ev{}", events.next_id);
            let stream = events.streams.entry(stream_id.to_owned()).or_default();
            let mut stored = event.clone();
            stored.event_id = Some(id.clone());
            stream.push(stored);
            let position = stream.len() - 1;
            events
                .positions
                .insert(id.clone(), (stream_id.to_owned(), position));
            id
        };
        self.appended.send_modify(|count| *count += 1);
        Ok(id)
    }

    async fn replay_events_after(
        &self,
        last_event_id: &str,
    ) -> Result<EventStream, EventStoreError> {
        let (stream_id, position) = self
            .inner
            .lock()
            .positions
            .get(last_event_id)
            .cloned()
            .ok_or_else(|| format!("unknown event id `{last_event_id}`"))?;
        let (tx, rx) = mpsc::channel(REPLAY_BUFFER);
        let inner = self.inner.clone();
        let mut appended = self.appended.subscribe();
        tokio::spawn(async move {
            let mut next = position + 1;
            loop {
                let event = inner
                    .lock()
                    .streams
                    .get(&stream_id)
                    .and_then(|events| events.get(next).cloned());
                let Some(event) = event else {
                    if appended.changed().await.is_err() {
                        return;
                    }
                    continue;
                };
                next += 1;
                let last = is_response(&event);
                if tx.send(event).await.is_err() || last {
                    return;
                }
            }
        });
        let events = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|event| (event, rx))
        });
        Ok(Box::pin(events))
    }
}
