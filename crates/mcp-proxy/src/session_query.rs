//! Finding sessions by what an operator knows about them (client name, status,
//! binding, protocol revision), over every page of
//! [`SessionStore::list`]: shared by the `sessions` commands and anything else
//! that lists sessions for people.

use serde::Deserialize;
use session_store::{
    Cursor, FrameId, Result, Session, SessionId, SessionStatus, SessionStore, StoredFrame,
    MAX_PAGE_SIZE,
};

use crate::binding::BINDING_TAG;

/// Which sessions to keep; every set criterion must hold (an empty filter keeps
/// all).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct SessionFilter {
    /// The client's `clientInfo.name` contains this text (case-insensitive).
    pub client: Option<String>,
    /// The session is in this status.
    pub status: Option<SessionStatus>,
    /// The session's binding tag is exactly this principal (`sub:<hex>` or
    /// `tok:<hex>`, see [`crate::binding::Principal`]).
    pub binding: Option<String>,
    /// The negotiated protocol revision is exactly this one.
    pub protocol: Option<String>,
}

impl SessionFilter {
    /// Whether `session` passes every set criterion.
    pub fn matches(&self, session: &Session) -> bool {
        let client_ok = self.client.as_deref().is_none_or(|wanted| {
            client_name(session)
                .is_some_and(|name| name.to_lowercase().contains(&wanted.to_lowercase()))
        });
        client_ok
            && self.status.is_none_or(|status| session.status == status)
            && self
                .binding
                .as_deref()
                .is_none_or(|binding| binding_of(session) == Some(binding))
            && self
                .protocol
                .as_deref()
                .is_none_or(|protocol| session.protocol_version.as_deref() == Some(protocol))
    }
}

/// The client's `clientInfo.name` from its `initialize`, when recorded.
pub fn client_name(session: &Session) -> Option<&str> {
    session.client_info.as_ref()?["clientInfo"]["name"].as_str()
}

/// The principal the session is bound to, when it is bound.
pub fn binding_of(session: &Session) -> Option<&str> {
    session.tags.get(BINDING_TAG).map(String::as_str)
}

/// Calls `visit` with every live session `filter` keeps, walking all pages of
/// the store's listing (each session that lives throughout the walk exactly
/// once). Stops early when `visit` returns false. Returns how many were visited.
///
/// Errors: the store's, from [`SessionStore::list`].
pub async fn for_each_session(
    store: &dyn SessionStore,
    filter: &SessionFilter,
    mut visit: impl AsyncFnMut(Session) -> bool,
) -> session_store::Result<u64> {
    let mut cursor: Option<Cursor> = None;
    let mut visited = 0;
    loop {
        let page = store.list(cursor.as_ref(), MAX_PAGE_SIZE).await?;
        for session in page.items {
            if filter.matches(&session) {
                visited += 1;
                if !visit(session).await {
                    return Ok(visited);
                }
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(visited),
        }
    }
}

/// The cursor after a page of `limit` frames of session `id` read with
/// `read_frames`: the page's last id when frames follow it, `None` at the end.
/// A page is bounded by bytes too (`max_read_bytes`), so a page shorter than
/// `limit` may still have frames after it: then one more frame is read to tell.
///
/// Errors: the store's.
pub async fn next_after(
    store: &dyn SessionStore,
    id: &SessionId,
    page: &[StoredFrame],
    limit: usize,
) -> Result<Option<FrameId>> {
    let Some(last) = page.last().map(|frame| frame.id) else {
        return Ok(None);
    };
    if page.len() >= limit || !store.read_frames(id, Some(last), 1).await?.is_empty() {
        return Ok(Some(last));
    }
    Ok(None)
}
