//! Small keyed values through the breaker: the primary while it answers, this
//! instance's memory secondary while it does not (never written back; see the
//! [module docs](super)).

use std::time::Duration;

use session_store_core::{KvCondition, KvEntry, KvKey, KvPut, Result, SessionStore};

use super::{add, breaker::Route, FallbackPrimary, Inner};

impl<P: FallbackPrimary> Inner<P> {
    pub(super) async fn kv_get(&self, key: &KvKey) -> Result<Option<KvEntry>> {
        if self.breaker.route() != Route::Memory {
            let result = self.primary.kv_get(key).await;
            if self.settle(None, &result) {
                return result;
            }
        }
        add(&self.counters.served_from_memory, 1);
        self.kv_secondary.kv_get(key).await
    }

    pub(super) async fn kv_put(
        &self,
        key: &KvKey,
        value: &[u8],
        ttl: Duration,
        condition: KvCondition,
    ) -> Result<KvPut> {
        if self.breaker.route() != Route::Memory {
            let result = self.primary.kv_put(key, value, ttl, condition).await;
            if self.settle(None, &result) {
                return result;
            }
        }
        add(&self.counters.served_from_memory, 1);
        self.kv_secondary.kv_put(key, value, ttl, condition).await
    }

    pub(super) async fn kv_delete(&self, key: &KvKey, condition: KvCondition) -> Result<bool> {
        if self.breaker.route() != Route::Memory {
            let result = self.primary.kv_delete(key, condition).await;
            if self.settle(None, &result) {
                return result;
            }
        }
        add(&self.counters.served_from_memory, 1);
        self.kv_secondary.kv_delete(key, condition).await
    }
}
