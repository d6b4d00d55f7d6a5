//! Quick start: build the configured store (memory unless the config says otherwise),
//! record one MCP exchange, replay it, and list sessions.
//!
//! ```text
//! cargo run -p session-store --example quickstart                      # memory
//! cargo run -p session-store --example quickstart -- examples/storage.toml
//! SESSION_STORE_BACKEND=redis SESSION_STORE_REDIS__URL=redis://127.0.0.1:6379 \
//!     cargo run -p session-store --features redis --example quickstart
//! ```

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use session_store::prelude::Clock;
use session_store::{
    build, Direction, Frame, NewSession, PurgeTask, SessionId, SessionStatus, StorageConfig,
    SystemClock,
};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("quickstart: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> session_store::Result<()> {
    let config_file = std::env::args_os().nth(1).map(PathBuf::from);
    let config = StorageConfig::load(config_file.as_deref())?;
    let store = build(&config).await?;
    let purge = PurgeTask::spawn(Arc::clone(&store), config.purge_interval);
    let health = store.health().await?;
    println!(
        "store: {} ({}), ttl {:?}",
        health.backend, health.detail, config.ttl
    );

    let id = SessionId::random()?;
    let new = NewSession::new(id.clone())
        .with_upstream_session_id("upstream-1")
        .with_protocol_version("2025-06-18");
    let mut session = store.create(new).await?;
    println!(
        "created session {} (revision {})",
        session.id, session.revision
    );

    let clock = SystemClock;
    let request = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
    let reply = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}"#;
    store
        .append_frame(
            &id,
            Frame::new(Direction::ClientToServer, clock.now(), &request[..]),
        )
        .await?;
    store
        .append_frame(
            &id,
            Frame::new(Direction::ServerToClient, clock.now(), &reply[..]),
        )
        .await?;

    session.status = SessionStatus::Active;
    let session = store.update(&session).await?;
    store.touch(&id).await?;
    println!(
        "session {}: status {:?}, revision {}, {} frames, expires at {} ms",
        session.id, session.status, session.revision, session.frame_count, session.expires_at
    );

    for stored in store.read_frames(&id, None, 100).await? {
        println!(
            "  frame {} {:?}: {}",
            stored.id,
            stored.frame.direction,
            String::from_utf8_lossy(&stored.frame.payload)
        );
    }
    let page = store.list(None, 10).await?;
    println!(
        "{} live session(s) on the first page, {} in all",
        page.items.len(),
        store.count().await?
    );

    store.delete(&id).await?;
    purge.shutdown().await;
    Ok(())
}
