//! `build` and `build_with_clock`: configuration in, working store out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use session_store::{build, Error, StorageConfig};

#[cfg(feature = "memory")]
mod memory {
    use std::{sync::Arc, time::Duration};

    use session_store::{
        build, build_with_clock, Direction, Error, Frame, ManualClock, NewSession, SessionId,
        StorageConfig,
    };

    #[tokio::test]
    async fn memory_round_trip_through_build() {
        let config = StorageConfig::from_toml_str(
            "[storage]\nbackend = \"memory\"\nmax_frames_per_session = 2",
        )
        .unwrap();
        let store = build(&config).await.unwrap();

        let id = SessionId::random().unwrap();
        let created = store
            .create(NewSession::new(id.clone()).with_protocol_version("2025-06-18"))
            .await
            .unwrap();
        for payload in [&b"{\"id\":1}"[..], b"{\"id\":2}", b"{\"id\":3}"] {
            store
                .append_frame(
                    &id,
                    Frame::new(Direction::ClientToServer, created.created_at, payload),
                )
                .await
                .unwrap();
        }
        let frames = store.read_frames(&id, None, 10).await.unwrap();
        assert_eq!(
            frames.len(),
            2,
            "max_frames_per_session from the TOML is enforced"
        );
        assert_eq!(frames[1].frame.payload, b"{\"id\":3}");
        assert_eq!(
            store.get(&id).await.unwrap().protocol_version.as_deref(),
            Some("2025-06-18")
        );
        assert_eq!(store.health().await.unwrap().backend, "memory");
        assert!(store.delete(&id).await.unwrap());
    }

    #[tokio::test]
    async fn build_with_clock_uses_the_configured_ttl_and_clock() {
        let config = StorageConfig::from_toml_str("[storage]\nttl = \"10m\"").unwrap();
        let clock = ManualClock::starting_now();
        let store = build_with_clock(&config, Arc::new(clock.clone()))
            .await
            .unwrap();
        let id = SessionId::random().unwrap();
        store.create(NewSession::new(id.clone())).await.unwrap();

        clock.advance(Duration::from_secs(9 * 60));
        store.touch(&id).await.unwrap();
        clock.advance(Duration::from_secs(10 * 60 + 1));
        assert!(matches!(store.get(&id).await, Err(Error::NotFound(_))));
    }

    #[tokio::test]
    async fn memory_session_cap_comes_from_the_config() {
        let config = StorageConfig::from_toml_str("[storage.memory]\nmax_sessions = 1").unwrap();
        let store = build(&config).await.unwrap();
        store
            .create(NewSession::new(SessionId::random().unwrap()))
            .await
            .unwrap();
        let second = store
            .create(NewSession::new(SessionId::random().unwrap()))
            .await;
        assert!(
            matches!(second, Err(Error::CapacityExceeded(_))),
            "{second:?}"
        );
    }
}

#[tokio::test]
async fn build_rejects_an_invalid_config_built_in_code() {
    let config = StorageConfig {
        ttl: Duration::ZERO,
        ..StorageConfig::default()
    };
    let Err(Error::Config(message)) = build(&config).await else {
        panic!("zero ttl must be a configuration error");
    };
    assert!(message.contains("storage.ttl"), "{message}");
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn build_of_redis_without_the_feature_names_the_feature() {
    let config = StorageConfig {
        backend: session_store::Backend::Redis,
        ..StorageConfig::default()
    };
    let Err(Error::Config(message)) = build(&config).await else {
        panic!("redis without its feature must be a configuration error");
    };
    assert!(
        message.contains("cargo add session-store --features redis"),
        "{message}"
    );
}
