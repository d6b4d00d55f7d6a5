//! Sessions: what a proxy knows about one MCP client session.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{SessionId, Timestamp};

/// The transport the client connected with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// MCP Streamable HTTP (POST/GET/DELETE on one endpoint).
    #[default]
    StreamableHttp,
    /// The legacy HTTP+SSE transport.
    Sse,
    /// Standard input and output of a child process.
    Stdio,
    /// A transport named by a newer release that this one does not know
    /// (rolling upgrade): decoded instead of failing the whole record. Storing
    /// the session again from this release writes `unknown`.
    #[serde(other)]
    Unknown,
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// `initialize` was sent; the handshake has not completed.
    #[default]
    Initializing,
    /// The handshake completed; the session is in use.
    Active,
    /// The client or server ended the session; kept until it expires.
    Closed,
    /// A status named by a newer release that this one does not know (rolling
    /// upgrade): decoded instead of failing the whole record. Storing the
    /// session again from this release writes `unknown`.
    #[serde(other)]
    Unknown,
}

/// What the caller supplies to [`create`](crate::SessionStore::create) a session. The
/// store fills in the times, the frame count and the revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewSession {
    /// The id the proxy issued to the client (`Mcp-Session-Id`).
    pub id: SessionId,
    /// The id the upstream server issued, when it differs (dual ids).
    pub upstream_session_id: Option<String>,
    /// How the client is connected.
    pub transport: Transport,
    /// Lifecycle state.
    pub status: SessionStatus,
    /// The negotiated MCP protocol revision, e.g. `2025-06-18`.
    pub protocol_version: Option<String>,
    /// The client's `clientInfo` and capabilities, as JSON.
    pub client_info: Option<serde_json::Value>,
    /// The server's `serverInfo` and capabilities, as JSON.
    pub server_info: Option<serde_json::Value>,
    /// Free-form labels (tenant, credential hash, route, ...).
    pub tags: BTreeMap<String, String>,
}

impl NewSession {
    /// A new session with the given id and everything else empty.
    pub fn new(id: SessionId) -> Self {
        NewSession {
            id,
            upstream_session_id: None,
            transport: Transport::default(),
            status: SessionStatus::default(),
            protocol_version: None,
            client_info: None,
            server_info: None,
            tags: BTreeMap::new(),
        }
    }

    /// Sets the upstream server's session id.
    pub fn with_upstream_session_id(mut self, upstream: impl Into<String>) -> Self {
        self.upstream_session_id = Some(upstream.into());
        self
    }

    /// Sets the negotiated protocol version.
    pub fn with_protocol_version(mut self, version: impl Into<String>) -> Self {
        self.protocol_version = Some(version.into());
        self
    }

    /// Adds one tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// The session as first stored at `now`, expiring at `expires_at`.
    pub fn into_session(self, now: Timestamp, expires_at: Timestamp) -> Session {
        Session {
            id: self.id,
            upstream_session_id: self.upstream_session_id,
            transport: self.transport,
            status: self.status,
            protocol_version: self.protocol_version,
            client_info: self.client_info,
            server_info: self.server_info,
            tags: self.tags,
            created_at: now,
            last_activity: now,
            expires_at,
            frame_count: 0,
            revision: 1,
        }
    }
}

/// A stored session.
///
/// The caller may change the descriptive fields (upstream id, transport, status,
/// protocol version, client and server info, tags) and send the session back through
/// [`update`](crate::SessionStore::update); the store owns the times, `frame_count`
/// and `revision`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The id the proxy issued to the client.
    pub id: SessionId,
    /// The id the upstream server issued, when it differs.
    pub upstream_session_id: Option<String>,
    /// How the client is connected.
    pub transport: Transport,
    /// Lifecycle state.
    pub status: SessionStatus,
    /// The negotiated MCP protocol revision.
    pub protocol_version: Option<String>,
    /// The client's info and capabilities.
    pub client_info: Option<serde_json::Value>,
    /// The server's info and capabilities.
    pub server_info: Option<serde_json::Value>,
    /// Free-form labels.
    pub tags: BTreeMap<String, String>,
    /// When it was created (never changes).
    pub created_at: Timestamp,
    /// The last create, update, touch or frame append.
    pub last_activity: Timestamp,
    /// When it expires unless used again: `last_activity + ttl`, capped at
    /// `created_at + max_lifetime`.
    pub expires_at: Timestamp,
    /// Frames ever appended to it (trimming does not lower it).
    pub frame_count: u64,
    /// Starts at 1 and grows by one with every successful update.
    pub revision: u64,
}

/// When a session touched at `now` expires: `now + ttl`, but never after
/// `created_at + max_lifetime`.
pub fn expiry_after_activity(
    now: Timestamp,
    created_at: Timestamp,
    ttl: Duration,
    max_lifetime: Option<Duration>,
) -> Timestamp {
    let sliding = now.saturating_add(ttl);
    match max_lifetime {
        Some(cap) => sliding.min(created_at.saturating_add(cap)),
        None => sliding,
    }
}
