//! JSON-RPC ids of the requests the bridge sends into shared upstream sessions:
//! unique in every upstream session across instances (a random 64-bit instance
//! nonce and a counter), so responses never cross between clients, and each
//! answer is given back under the client's own id.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

/// Prefix of every id the bridge mints.
const PREFIX: &str = "mcp-proxy";

/// The id source of one proxy instance.
#[derive(Debug)]
pub struct UpstreamIds {
    nonce: u64,
    next: AtomicU64,
}

impl Default for UpstreamIds {
    fn default() -> Self {
        UpstreamIds {
            nonce: rand::random(),
            next: AtomicU64::new(1),
        }
    }
}

impl UpstreamIds {
    /// A fresh id: `mcp-proxy:<nonce hex>:<n>`.
    pub fn mint(&self) -> Value {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Value::String(format!("{PREFIX}:{:016x}:{n}", self.nonce))
    }
}

/// `message` with its `id` replaced by `id` (the client's id restored, or the
/// upstream's minted).
pub fn with_id(mut message: Value, id: &Value) -> Value {
    if let Some(object) = message.as_object_mut() {
        object.insert("id".to_owned(), id.clone());
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_per_instance_and_across_instances() {
        let (a, b) = (UpstreamIds::default(), UpstreamIds::default());
        let minted: std::collections::HashSet<String> = (0..100)
            .flat_map(|_| [a.mint(), b.mint()])
            .map(|id| id.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(minted.len(), 200);
        let back = with_id(
            serde_json::json!({"id": "x", "result": {}}),
            &Value::from(7),
        );
        assert_eq!(back["id"], 7);
    }
}
