//! The behaviours of small keyed values ([`SessionStore::kv_put`] and friends),
//! one `async fn` per contract line, run by every backend with the rest of the
//! suite.

use std::time::Duration;

use super::{behaviours::fixture, StoreFactory};
use crate::{Clock, Error, KvCondition, KvKey, KvPut, SessionId, SessionStore};

const TTL: Duration = Duration::from_secs(5);

/// A key no other test uses.
fn fresh_key(purpose: &str) -> KvKey {
    let unique = SessionId::random().expect("OS random source");
    KvKey::new(format!("{purpose}:{unique}")).unwrap()
}

async fn put(store: &dyn SessionStore, key: &KvKey, value: &str, condition: KvCondition) -> KvPut {
    store
        .kv_put(key, value.as_bytes(), TTL, condition)
        .await
        .expect("kv_put")
}

fn stored(put: &KvPut) -> u64 {
    put.stored_revision()
        .unwrap_or_else(|| panic!("expected the put to be stored, got {put:?}"))
}

pub async fn kv_put_if_absent_stores_and_get_returns_value_revision_and_expiry(
    factory: &dyn StoreFactory,
) {
    let fx = fixture(factory).await;
    let key = fresh_key("lease");
    assert_eq!(fx.store.kv_get(&key).await.unwrap(), None);
    let now = fx.clock.now();
    let outcome = put(fx.store.as_ref(), &key, "holder-a", KvCondition::Absent).await;
    let revision = stored(&outcome);
    assert_eq!(
        outcome,
        KvPut::Stored {
            revision,
            expires_at: now.saturating_add(TTL)
        }
    );
    let entry = fx.store.kv_get(&key).await.unwrap().expect("stored value");
    assert_eq!(entry.value, b"holder-a");
    assert_eq!(entry.revision, revision);
    assert_eq!(entry.expires_at, now.saturating_add(TTL));
}

pub async fn kv_put_if_absent_conflicts_when_present_and_keeps_the_value(
    factory: &dyn StoreFactory,
) {
    let fx = fixture(factory).await;
    let key = fresh_key("lease");
    let first = stored(&put(fx.store.as_ref(), &key, "holder-a", KvCondition::Absent).await);
    match put(fx.store.as_ref(), &key, "holder-b", KvCondition::Absent).await {
        KvPut::Rejected {
            current: Some(current),
        } => {
            assert_eq!(current.value, b"holder-a");
            assert_eq!(current.revision, first);
        }
        other => panic!("expected a rejection naming holder-a, got {other:?}"),
    }
    let entry = fx.store.kv_get(&key).await.unwrap().unwrap();
    assert_eq!(entry.value, b"holder-a");
}

pub async fn kv_put_with_revision_replaces_only_that_revision(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let key = fresh_key("generation");
    let first = stored(&put(fx.store.as_ref(), &key, "one", KvCondition::Absent).await);
    let second = stored(&put(fx.store.as_ref(), &key, "two", KvCondition::Revision(first)).await);
    assert_eq!(
        second,
        first + 1,
        "a rewrite of a live value is revision + 1"
    );
    match put(
        fx.store.as_ref(),
        &key,
        "stale",
        KvCondition::Revision(first),
    )
    .await
    {
        KvPut::Rejected {
            current: Some(current),
        } => assert_eq!(current.revision, second),
        other => panic!("a stale revision must be rejected, got {other:?}"),
    }
    let missing = fresh_key("generation");
    assert_eq!(
        put(
            fx.store.as_ref(),
            &missing,
            "x",
            KvCondition::Revision(first)
        )
        .await,
        KvPut::Rejected { current: None },
        "a revision condition on a missing value is rejected"
    );
    assert_eq!(fx.store.kv_get(&missing).await.unwrap(), None);
    let any = stored(&put(fx.store.as_ref(), &key, "three", KvCondition::Any).await);
    assert_eq!(any, second + 1);
    assert_eq!(
        fx.store.kv_get(&key).await.unwrap().unwrap().value,
        b"three"
    );
}

pub async fn kv_concurrent_puts_with_the_same_condition_have_exactly_one_winner(
    factory: &dyn StoreFactory,
) {
    let fx = fixture(factory).await;
    let key = fresh_key("lease");
    for condition in [KvCondition::Absent, KvCondition::Revision(0)] {
        let condition = match condition {
            KvCondition::Revision(_) => {
                KvCondition::Revision(fx.store.kv_get(&key).await.unwrap().unwrap().revision)
            }
            other => other,
        };
        let tasks: Vec<_> = (0..16)
            .map(|n| {
                let store = fx.store.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    let value = format!("writer-{n}");
                    let put = store.kv_put(&key, value.as_bytes(), TTL, condition).await;
                    (value, put)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (value, Ok(KvPut::Stored { revision, .. })) => winners.push((value, revision)),
                (_, Ok(KvPut::Rejected { current })) => assert!(current.is_some()),
                (_, Err(error)) => panic!("unexpected error {error:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "{condition:?}: exactly one put may win");
        let entry = fx.store.kv_get(&key).await.unwrap().unwrap();
        assert_eq!(entry.value, winners[0].0.as_bytes());
        assert_eq!(entry.revision, winners[0].1);
    }
}

pub async fn kv_value_expires_after_its_ttl_and_its_revision_is_not_reused(
    factory: &dyn StoreFactory,
) {
    let fx = fixture(factory).await;
    let key = fresh_key("lease");
    let old = stored(&put(fx.store.as_ref(), &key, "holder-a", KvCondition::Absent).await);
    fx.clock.advance(TTL - Duration::from_millis(1));
    assert!(
        fx.store.kv_get(&key).await.unwrap().is_some(),
        "live until its ttl"
    );
    let renewed = stored(
        &put(
            fx.store.as_ref(),
            &key,
            "holder-a",
            KvCondition::Revision(old),
        )
        .await,
    );
    fx.clock.advance(TTL);
    assert_eq!(
        fx.store.kv_get(&key).await.unwrap(),
        None,
        "expired after its ttl"
    );
    assert_eq!(
        put(
            fx.store.as_ref(),
            &key,
            "holder-a",
            KvCondition::Revision(renewed)
        )
        .await,
        KvPut::Rejected { current: None },
        "an expired value cannot be renewed"
    );
    let new = stored(&put(fx.store.as_ref(), &key, "holder-b", KvCondition::Absent).await);
    assert!(
        new > renewed,
        "a recreated value gets a revision never given out before"
    );
    assert!(
        put(
            fx.store.as_ref(),
            &key,
            "holder-a",
            KvCondition::Revision(renewed)
        )
        .await
        .stored_revision()
        .is_none(),
        "the old holder's revision no longer matches"
    );
    assert!(!fx
        .store
        .kv_delete(&key, KvCondition::Revision(renewed))
        .await
        .unwrap());
    assert_eq!(
        fx.store.kv_get(&key).await.unwrap().unwrap().value,
        b"holder-b"
    );
}

pub async fn kv_delete_is_conditional_and_deleting_a_missing_value_is_false(
    factory: &dyn StoreFactory,
) {
    let fx = fixture(factory).await;
    let key = fresh_key("tombstone");
    assert!(!fx.store.kv_delete(&key, KvCondition::Any).await.unwrap());
    let first = stored(&put(fx.store.as_ref(), &key, "v", KvCondition::Absent).await);
    assert!(!fx
        .store
        .kv_delete(&key, KvCondition::Revision(first + 1))
        .await
        .unwrap());
    assert!(!fx.store.kv_delete(&key, KvCondition::Absent).await.unwrap());
    assert!(
        fx.store.kv_get(&key).await.unwrap().is_some(),
        "a failed condition removes nothing"
    );
    assert!(fx
        .store
        .kv_delete(&key, KvCondition::Revision(first))
        .await
        .unwrap());
    assert_eq!(fx.store.kv_get(&key).await.unwrap(), None);
    let again = stored(&put(fx.store.as_ref(), &key, "w", KvCondition::Absent).await);
    assert_ne!(
        again, first,
        "a value recreated after delete gets a new revision"
    );
    assert!(fx.store.kv_delete(&key, KvCondition::Any).await.unwrap());
    assert_eq!(fx.store.kv_get(&key).await.unwrap(), None);
}

pub async fn kv_oversized_value_or_zero_ttl_is_invalid_input_and_nothing_is_stored(
    factory: &dyn StoreFactory,
) {
    let fx = fixture(factory).await;
    let key = fresh_key("cache");
    let limit = fx.settings.max_kv_value_bytes;
    let oversized = vec![b'x'; limit + 1];
    match fx
        .store
        .kv_put(&key, &oversized, TTL, KvCondition::Any)
        .await
    {
        Err(Error::InvalidInput(message)) => {
            assert!(message.contains("max_kv_value_bytes"), "{message}");
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert!(matches!(
        fx.store
            .kv_put(&key, b"v", Duration::ZERO, KvCondition::Any)
            .await,
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(fx.store.kv_get(&key).await.unwrap(), None);
    let exact = vec![b'y'; limit];
    stored(
        &fx.store
            .kv_put(&key, &exact, TTL, KvCondition::Any)
            .await
            .unwrap(),
    );
    assert_eq!(fx.store.kv_get(&key).await.unwrap().unwrap().value, exact);
}

pub async fn kv_bad_key_is_invalid_input(_factory: &dyn StoreFactory) {
    for bad in [
        String::new(),
        "has space".into(),
        "new\nline".into(),
        "é".into(),
        "k".repeat(crate::MAX_KV_KEY_LEN + 1),
    ] {
        assert!(
            matches!(KvKey::new(bad.clone()), Err(Error::InvalidInput(_))),
            "{bad:?}"
        );
    }
    // Braces and colons are fine: every visible ASCII key is one Redis key.
    assert!(KvKey::new("lease:{a}b:c").is_ok());
}

pub async fn kv_values_are_independent_of_sessions(factory: &dyn StoreFactory) {
    let fx = fixture(factory).await;
    let key = fresh_key("bridge");
    stored(&put(fx.store.as_ref(), &key, "state", KvCondition::Absent).await);
    assert_eq!(
        fx.store.count().await.unwrap(),
        0,
        "a value is not a session"
    );
    fx.clock.advance(TTL + Duration::from_millis(1));
    fx.store.purge_expired().await.unwrap();
    assert_eq!(fx.store.kv_get(&key).await.unwrap(), None);
}
