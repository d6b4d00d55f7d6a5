//! The background task that removes expired sessions, so storage does not grow
//! with sessions nobody will read again.

use std::{sync::Arc, time::Duration};

use session_store_core::SessionStore;
use tokio::{sync::watch, task::JoinHandle, time::MissedTickBehavior};

/// Shortest interval the task accepts; a zero interval would spin.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Calls [`purge_expired`](SessionStore::purge_expired) every interval on the
/// tokio runtime. Removed counts are logged at debug, failures at warn; a failure
/// never stops the task.
///
/// Stop it with [`shutdown`](Self::shutdown); dropping it aborts the task as a
/// backstop.
///
/// ```
/// use std::time::Duration;
/// use session_store::{build, PurgeTask, StorageConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> session_store::Result<()> {
/// let config = StorageConfig::from_toml_str("[storage]\npurge_interval = \"30s\"")?;
/// let store = build(&config).await?;
/// let purge = PurgeTask::spawn(store, config.purge_interval);
/// // ... serve ...
/// purge.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PurgeTask {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl PurgeTask {
    /// Starts purging `store` every `interval` (at least 1ms), the first time one
    /// interval from now.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime, like `tokio::spawn`.
    pub fn spawn(store: Arc<dyn SessionStore>, interval: Duration) -> PurgeTask {
        let (stop, stopped) = watch::channel(false);
        let interval = interval.max(MIN_INTERVAL);
        // Timed from the call, not from whenever the task is first polled.
        let first = tokio::time::Instant::now() + interval;
        let task = tokio::spawn(purge_loop(store, first, interval, stopped));
        PurgeTask {
            stop,
            task: Some(task),
        }
    }

    /// Stops the task and waits for it to finish. A purge in progress is
    /// abandoned at its next await point.
    pub async fn shutdown(mut self) {
        // Fails only when the task already ended, which is what we want anyway.
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                if error.is_panic() {
                    tracing::warn!("session purge task panicked: {error}");
                }
            }
        }
    }

    /// True while the task runs.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }
}

impl Drop for PurgeTask {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn purge_loop(
    store: Arc<dyn SessionStore>,
    first: tokio::time::Instant,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval_at(first, interval);
    // A slow purge should delay the next one, not cause a burst of catch-up runs.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => break,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            biased;
            _ = stopped.changed() => break,
            outcome = store.purge_expired() => match outcome {
                Ok(removed) => tracing::debug!(removed, "purged expired sessions"),
                Err(error) => tracing::warn!(%error, "purging expired sessions failed; retrying next interval"),
            },
        }
    }
}
