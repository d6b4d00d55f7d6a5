//! What the bridge keeps per proxy instance ([`Bridge`]: its id source and key
//! ring). It sits below [`state`](crate::state), which holds it, and imports no
//! handler, so the request path reads one way: handlers, then the state they share.

use crate::config::ProxySettings;

use super::{ids::UpstreamIds, request_state::KeyRing};

/// What the bridge keeps per instance: its id source and the key ring.
#[derive(Debug)]
pub struct Bridge {
    /// Ids of the requests it sends upstream.
    pub ids: UpstreamIds,
    /// Seals and opens `requestState`.
    pub keys: KeyRing,
}

impl Bridge {
    /// The bridge of an instance with `settings`.
    pub fn new(settings: &ProxySettings) -> Self {
        Bridge {
            ids: UpstreamIds::default(),
            keys: KeyRing::new(&settings.bridge, &settings.binding_key),
        }
    }
}
