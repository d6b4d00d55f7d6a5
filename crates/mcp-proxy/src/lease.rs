//! Stream leases: which instance is relaying an upstream stream, kept in the store
//! so every instance can see whether the relay is alive.
//!
//! The instance relaying a POST reply stream holds the lease
//! `lease:<session>:<stream>`, a small keyed value with a TTL of
//! [`LEASE_TTL`], renewed every [`LEASE_RENEWAL`] by a compare-and-set on its
//! revision (taken again with a put-if-absent when the store has no lease at all:
//! a store that failed over or restarted lost it; only another holder's token
//! means the stream was taken over). When the instance dies the renewals stop
//! and the lease lapses; an instance resuming the stream for a client then takes it (a put that succeeds
//! only when no lease is live, so exactly one of several racing instances wins)
//! and resumes the upstream stream itself (see [`replay`](crate::replay)).
//!
//! A complete stream's lease is given up at once, only while it is still ours:
//! rewritten on its revision to expire [`RELEASED_TTL`] later, so the store
//! drops its key (see [`StreamLease::release`]).
//!
//! A new POST reply stream's lease is taken by its renewal task
//! ([`StreamLease::take_when_started`]), not before the relay starts, so the
//! client's first bytes wait for no store round trip, and only after
//! [`LEASE_TAKE_DELAY`], so a stream that ends within it (most `tools/call`
//! replies) costs no lease writes at all; the task is not even spawned when
//! the stream is complete by the time its response is handed to the client. That opens a window: from
//! the moment the client has the stream's priming event until the put lands, an
//! instance serving a resumption of the stream could find no lease. It looks for
//! one only after tailing the store for a poll interval (100 ms), so the window
//! matters only when the put takes longer than that. Then the resuming instance
//! takes the stream over, and the relay's own put, which succeeds only when no
//! lease is live, is refused: the relay learns at once that it lost the stream and
//! stops, exactly as when its renewals were late. Either way one instance at a
//! time holds the stream; events the first relay recorded after the takeover read
//! the store may be recorded twice (once by each), as with late renewals.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use session_store::{KvCondition, KvKey, KvPut, Result, SessionId, SessionStore};
use tokio::sync::{oneshot, watch};

use crate::event_id::StreamId;

/// How long a lease lives without renewal: short, so a client reconnecting
/// after an instance died is served within seconds.
pub const LEASE_TTL: Duration = Duration::from_secs(5);

/// How often the holder renews its lease: well within [`LEASE_TTL`], so a slow
/// store call or two do not let it lapse.
pub const LEASE_RENEWAL: Duration = Duration::from_secs(1);

/// How long a new reply stream's relay waits before it takes the stream's
/// lease. Most reply streams (a `tools/call` answered at once) end within it
/// and never write a lease at all; it stays well under the 100 ms a resuming
/// instance tails the store before it looks for a lease (`replay`'s poll).
pub const LEASE_TAKE_DELAY: Duration = Duration::from_millis(20);

/// What is left of a released lease's life: the shortest a store accepts, so
/// the store drops its key at once (Redis: `PEXPIREAT`) rather than keeping it
/// for the rest of [`LEASE_TTL`]. A resuming instance that looks within it
/// finds the stream still held and looks again at its next poll.
pub const RELEASED_TTL: Duration = Duration::from_millis(1);

/// This process's holder name: random per process, so a restarted instance on
/// the same address is a new holder.
fn holder() -> String {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    let process = PROCESS.get_or_init(rand::random::<u64>);
    // One token per lease taken: two tasks of one process never mistake each
    // other's lease for their own.
    format!("mcp-proxy-{process:016x}-{:016x}", rand::random::<u64>())
}

/// The revision of our own write when a put was rejected only because it had
/// already been applied (a reply lost on the way and the put re-sent: the store
/// retries writes), recognised by the holder token the live value carries.
fn already_ours(put: &KvPut, token: &str) -> Option<u64> {
    match put {
        KvPut::Rejected {
            current: Some(current),
        } if current.value == token.as_bytes() => Some(current.revision),
        _ => None,
    }
}

/// The store key of a stream's lease.
pub fn lease_key(session: &SessionId, stream: &StreamId) -> Result<KvKey> {
    KvKey::new(format!("lease:{session}:{stream}"))
}

/// A lease this instance holds.
#[derive(Debug)]
pub struct StreamLease {
    key: KvKey,
    revision: u64,
    token: String,
}

/// What renewing a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Still ours for another [`LEASE_TTL`].
    Renewed,
    /// Another holder's token is in the store (ours lapsed and another instance
    /// took the stream over): stop relaying.
    Lost,
}

impl StreamLease {
    /// Takes the lease of a stream when no live lease exists; `None` when another
    /// instance holds it (or won the race for it).
    pub async fn take_over(store: &dyn SessionStore, key: &KvKey) -> Result<Option<StreamLease>> {
        let token = holder();
        let put = store
            .kv_put(key, token.as_bytes(), LEASE_TTL, KvCondition::Absent)
            .await?;
        let revision = match put {
            KvPut::Stored { revision, .. } => Some(revision),
            ref rejected => already_ours(rejected, &token),
        };
        Ok(revision.map(|revision| StreamLease {
            key: key.clone(),
            revision,
            token,
        }))
    }

    /// Extends the lease by [`LEASE_TTL`] from now when it is still ours.
    ///
    /// Only another holder's token in the store means the lease is lost. A lease
    /// the store does not have at all (the store failed over, for instance to the
    /// fallback's memory while Redis is down, or restarted without persistence;
    /// or it lapsed and nobody took it) is taken again with a put that succeeds
    /// only when no lease is live, so relaying goes on; only when another
    /// instance wins that put is the lease lost.
    ///
    /// # Errors
    ///
    /// The store's error when it cannot be reached: the caller keeps relaying and
    /// tries again at the next renewal.
    pub async fn renew(&mut self, store: &dyn SessionStore) -> Result<Renewal> {
        let put = store
            .kv_put(
                &self.key,
                self.token.as_bytes(),
                LEASE_TTL,
                KvCondition::Revision(self.revision),
            )
            .await?;
        let put = match put {
            KvPut::Rejected { current: None } => {
                let retaken = store
                    .kv_put(
                        &self.key,
                        self.token.as_bytes(),
                        LEASE_TTL,
                        KvCondition::Absent,
                    )
                    .await?;
                if retaken.stored_revision().is_some() {
                    tracing::info!(key = %self.key, "stream lease not found in the store at renewal (the store failed over or restarted, or the lease lapsed and no instance took it); taken again, relaying goes on");
                }
                retaken
            }
            put => put,
        };
        let revision = match put {
            KvPut::Stored { revision, .. } => Some(revision),
            ref rejected => already_ours(rejected, &self.token),
        };
        Ok(match revision {
            Some(revision) => {
                self.revision = revision;
                Renewal::Renewed
            }
            None => Renewal::Lost,
        })
    }

    /// Gives the lease up (the stream is complete), only while it is still ours:
    /// a compare-and-set on its revision that rewrites it to expire
    /// [`RELEASED_TTL`] later, so the store drops the key itself. (A
    /// [`kv_delete`](SessionStore::kv_delete) would only mark it expired: the
    /// store keeps a deleted value's record until its own expiry, up to
    /// [`LEASE_TTL`] later, so that revisions written after it keep growing.) A
    /// lease another instance took over is left alone. A store that cannot be
    /// reached is logged at debug: the lease lapses on its own.
    pub async fn release(self, store: &dyn SessionStore) {
        if let Err(error) = store
            .kv_put(
                &self.key,
                self.token.as_bytes(),
                RELEASED_TTL,
                KvCondition::Revision(self.revision),
            )
            .await
        {
            tracing::debug!(key = %self.key, %error, "stream lease not released; it lapses on its own");
        }
    }
}

impl StreamLease {
    /// Renews the lease every [`LEASE_RENEWAL`] in a task of its own until it is
    /// released, lost, or the returned handle is dropped (a relay that stopped
    /// without releasing it: it is released then too, so a resuming instance
    /// need not wait for it to lapse).
    pub fn keep_renewed(self, store: Arc<dyn SessionStore>) -> RenewedLease {
        let (lease, pending) = renewals(store, Holding::Held(self));
        pending.start();
        lease
    }

    /// The lease of a stream this instance has just started relaying (a new POST
    /// reply stream), taken in the renewal task: the relay does not wait for the
    /// store. The take is the same put as [`take_over`](Self::take_over) (only
    /// when no live lease exists), so the rule "at most one live holder" is kept
    /// in the window before it lands (see the module doc); when the store cannot
    /// be reached it is tried again every [`LEASE_RENEWAL`]. A stream released
    /// before the task first runs never touches the store.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](session_store::Error::InvalidInput) when the session and
    /// stream ids make no valid key.
    pub fn take_in_background(
        store: Arc<dyn SessionStore>,
        session: &SessionId,
        stream: &StreamId,
    ) -> Result<RenewedLease> {
        let (lease, pending) = Self::take_when_started(store, session, stream)?;
        pending.start();
        Ok(lease)
    }

    /// [`take_in_background`](Self::take_in_background) whose renewal task is
    /// spawned only by [`PendingLease::start`]: a reply stream that is complete
    /// before then (the upstream answered at once) spawns no task and registers
    /// no timer. The [`LEASE_TAKE_DELAY`] counts from the start. Until then the
    /// handle is never lost; dropping the [`PendingLease`] unstarted leaves it so.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](session_store::Error::InvalidInput) when the session and
    /// stream ids make no valid key.
    pub fn take_when_started(
        store: Arc<dyn SessionStore>,
        session: &SessionId,
        stream: &StreamId,
    ) -> Result<(RenewedLease, PendingLease)> {
        let key = lease_key(session, stream)?;
        Ok(renewals(store, Holding::Taking(key)))
    }
}

/// A lease's renewal task, not spawned yet
/// ([`StreamLease::take_when_started`]).
#[must_use = "the lease is neither taken nor renewed until started"]
pub struct PendingLease {
    store: Arc<dyn SessionStore>,
    holding: Holding,
    lost_tx: watch::Sender<bool>,
    released: oneshot::Receiver<()>,
}

impl std::fmt::Debug for PendingLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLease").finish_non_exhaustive()
    }
}

/// What a renewal task starts from.
enum Holding {
    /// The lease is to be taken first.
    Taking(KvKey),
    /// The lease is held.
    Held(StreamLease),
}

/// A lease handle and its renewal task, not spawned yet.
fn renewals(store: Arc<dyn SessionStore>, holding: Holding) -> (RenewedLease, PendingLease) {
    let (lost_tx, lost) = watch::channel(false);
    let (release, released) = oneshot::channel::<()>();
    let lease = RenewedLease {
        lost,
        release: Some(release),
    };
    let pending = PendingLease {
        store,
        holding,
        lost_tx,
        released,
    };
    (lease, pending)
}

impl PendingLease {
    /// Spawns the renewal task: it takes the lease (after [`LEASE_TAKE_DELAY`],
    /// unless released first) or renews the one held, as
    /// [`StreamLease::take_in_background`] and [`StreamLease::keep_renewed`] say.
    pub fn start(self) {
        tokio::spawn(run_renewals(self));
    }
}

async fn run_renewals(pending: PendingLease) {
    let PendingLease {
        store,
        holding,
        lost_tx,
        mut released,
    } = pending;
    let mut lease = match holding {
        Holding::Held(lease) => lease,
        Holding::Taking(key) => match take_first(store.as_ref(), &key, &mut released).await {
            Taken::Lease(lease) => lease,
            Taken::HeldByAnother => {
                let _ = lost_tx.send(true);
                return;
            }
            Taken::Released => return,
        },
    };
    loop {
        tokio::select! {
            _ = &mut released => {
                // Released, or the handle dropped by a relay that stopped:
                // either way nobody relays under this lease any more.
                lease.release(store.as_ref()).await;
                return;
            }
            () = tokio::time::sleep(LEASE_RENEWAL) => {}
        }
        match lease.renew(store.as_ref()).await {
            Ok(Renewal::Renewed) => {}
            Ok(Renewal::Lost) => {
                let _ = lost_tx.send(true);
                return;
            }
            Err(error) => {
                tracing::debug!(key = %lease.key, %error, "stream lease not renewed this time");
            }
        }
    }
}

/// How taking a new stream's lease in its renewal task ended.
enum Taken {
    Lease(StreamLease),
    /// Another instance took the stream over first.
    HeldByAnother,
    /// The stream was released (or its relay dropped) first: nothing to hold.
    Released,
}

async fn take_first(
    store: &dyn SessionStore,
    key: &KvKey,
    released: &mut oneshot::Receiver<()>,
) -> Taken {
    // Released first: a stream that ended before this task first ran (most
    // `tools/call` replies) registers no timer at all; each timer a call
    // registers can wake the runtime's driver thread once more.
    tokio::select! {
        biased;
        _ = &mut *released => return Taken::Released,
        () = tokio::time::sleep(LEASE_TAKE_DELAY) => {}
    }
    let mut warned = false;
    loop {
        if !matches!(
            released.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ) {
            return Taken::Released;
        }
        match StreamLease::take_over(store, key).await {
            Ok(Some(lease)) => return Taken::Lease(lease),
            Ok(None) => return Taken::HeldByAnother,
            Err(error) => {
                if !warned {
                    tracing::warn!(%key, %error, "reply stream relayed without a lease for now (store trouble); trying again");
                    warned = true;
                }
            }
        }
        tokio::select! {
            _ = &mut *released => return Taken::Released,
            () = tokio::time::sleep(LEASE_RENEWAL) => {}
        }
    }
}

/// A lease renewed in the background while its stream is relayed.
#[derive(Debug)]
pub struct RenewedLease {
    lost: watch::Receiver<bool>,
    release: Option<oneshot::Sender<()>>,
}

impl RenewedLease {
    /// Resolves when another instance holds the lease (ours lapsed).
    pub async fn lost(&mut self) {
        if self.lost.wait_for(|lost| *lost).await.is_err() {
            // The renewal task ended without losing it (released): never.
            std::future::pending::<()>().await;
        }
    }

    /// Gives the lease up: the stream is complete.
    pub fn release(mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
    }
}

/// Whether some instance holds the lease of the stream now.
pub async fn is_held(store: &dyn SessionStore, key: &KvKey) -> Result<bool> {
    Ok(store.kv_get(key).await?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_store::{FrameId, MemoryStore, StoreSettings};

    /// Whether the lease at `key` stops being held within a bounded wait: a
    /// released lease lives [`RELEASED_TTL`] more.
    async fn gone_after_release(store: &dyn SessionStore, key: &KvKey) -> bool {
        for _ in 0..1_000 {
            if !is_held(store, key).await.unwrap() {
                return true;
            }
            tokio::time::sleep(RELEASED_TTL).await;
        }
        false
    }

    #[test]
    fn a_rejection_carrying_our_own_token_is_our_write_re_sent() {
        let ours = holder();
        let rejected_by = |value: &str| KvPut::Rejected {
            current: Some(session_store::KvEntry {
                value: value.as_bytes().to_vec(),
                revision: 7,
                expires_at: session_store::Timestamp::from_millis(1),
            }),
        };
        assert_eq!(already_ours(&rejected_by(&ours), &ours), Some(7));
        assert_eq!(already_ours(&rejected_by(&holder()), &ours), None);
        assert_eq!(
            already_ours(&KvPut::Rejected { current: None }, &ours),
            None
        );
    }

    #[tokio::test]
    async fn one_instance_takes_over_a_lapsed_lease_and_the_old_holder_loses_it() {
        let store = MemoryStore::new(StoreSettings::default()).unwrap();
        let session = SessionId::new("s1").unwrap();
        let stream = StreamId::for_request(FrameId::new(1, 0));
        let key = lease_key(&session, &stream).unwrap();
        let mut first = StreamLease::take_over(&store, &key).await.unwrap().unwrap();
        assert!(is_held(&store, &key).await.unwrap());
        assert!(StreamLease::take_over(&store, &key)
            .await
            .unwrap()
            .is_none());
        assert_eq!(first.renew(&store).await.unwrap(), Renewal::Renewed);
        store.kv_delete(&key, KvCondition::Any).await.unwrap(); // as if it lapsed
        let second = StreamLease::take_over(&store, &key).await.unwrap().unwrap();
        assert_eq!(first.renew(&store).await.unwrap(), Renewal::Lost);
        assert!(
            is_held(&store, &key).await.unwrap(),
            "the new holder's lease stays"
        );
        second.release(&store).await;
        assert!(gone_after_release(&store, &key).await);
    }

    #[tokio::test]
    async fn a_lease_the_store_lost_is_taken_again_at_renewal_not_reported_lost() {
        let store = MemoryStore::new(StoreSettings::default()).unwrap();
        let session = SessionId::new("s1").unwrap();
        let stream = StreamId::for_request(FrameId::new(1, 0));
        let key = lease_key(&session, &stream).unwrap();
        let mut ours = StreamLease::take_over(&store, &key).await.unwrap().unwrap();
        // As if the store failed over to one without it (or lost it in a restart).
        store.kv_delete(&key, KvCondition::Any).await.unwrap();
        assert_eq!(ours.renew(&store).await.unwrap(), Renewal::Renewed);
        assert!(is_held(&store, &key).await.unwrap());
        assert!(
            StreamLease::take_over(&store, &key)
                .await
                .unwrap()
                .is_none(),
            "it is ours again: nobody else takes it"
        );
        assert_eq!(ours.renew(&store).await.unwrap(), Renewal::Renewed);
        ours.release(&store).await;
        assert!(gone_after_release(&store, &key).await);
    }

    #[tokio::test]
    async fn a_lease_taken_in_the_background_is_lost_at_once_when_another_instance_took_the_stream_first(
    ) {
        let store: Arc<dyn SessionStore> =
            Arc::new(MemoryStore::new(StoreSettings::default()).unwrap());
        let session = SessionId::new("s1").unwrap();
        let stream = StreamId::for_request(FrameId::new(1, 0));
        let key = lease_key(&session, &stream).unwrap();
        let other = StreamLease::take_over(store.as_ref(), &key)
            .await
            .unwrap()
            .unwrap();
        let mut ours = StreamLease::take_in_background(store.clone(), &session, &stream).unwrap();
        // Bounded: a deadlock guard, not a timing.
        tokio::time::timeout(Duration::from_secs(30), ours.lost())
            .await
            .expect("the relay learns it does not hold the stream");
        other.release(store.as_ref()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_released_within_the_take_delay_never_writes_a_lease() {
        let (metrics, store) = metered_memory_store();
        let session = SessionId::new("s1").unwrap();
        let stream = StreamId::for_request(FrameId::new(1, 0));
        let ours = StreamLease::take_in_background(store.clone(), &session, &stream).unwrap();
        // The renewal task has started and waits; the stream ends meanwhile.
        tokio::time::sleep(
            LEASE_TAKE_DELAY
                .saturating_sub(Duration::from_millis(5))
                .max(Duration::from_millis(1)),
        )
        .await;
        ours.release();
        tokio::time::sleep(LEASE_RENEWAL * 3).await;
        let text = metrics.render(None);
        assert!(
            !text.contains("operation=\"kv_put\"") && !text.contains("operation=\"kv_delete\""),
            "no lease written or removed:\n{text}"
        );
        let key = lease_key(&session, &stream).unwrap();
        assert!(!is_held(store.as_ref(), &key).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_whose_stream_completed_before_it_was_started_writes_nothing_and_is_never_lost()
    {
        let (metrics, store) = metered_memory_store();
        let session = SessionId::new("s1").unwrap();
        let stream = StreamId::for_request(FrameId::new(1, 0));
        let (mut ours, pending) =
            StreamLease::take_when_started(store.clone(), &session, &stream).unwrap();
        drop(pending);
        let lost = tokio::time::timeout(LEASE_RENEWAL * 3, ours.lost()).await;
        assert!(lost.is_err(), "an unstarted lease is never lost");
        ours.release();
        let text = metrics.render(None);
        assert!(
            !text.contains("operation=\"kv_put\""),
            "no lease written:\n{text}"
        );
    }

    #[tokio::test]
    async fn a_lease_taken_when_started_is_held_until_released() {
        let store: Arc<dyn SessionStore> =
            Arc::new(MemoryStore::new(StoreSettings::default()).unwrap());
        let session = SessionId::new("s1").unwrap();
        let stream = StreamId::for_request(FrameId::new(1, 0));
        let key = lease_key(&session, &stream).unwrap();
        let (ours, pending) =
            StreamLease::take_when_started(store.clone(), &session, &stream).unwrap();
        pending.start();
        wait_until_held(store.as_ref(), &key, true).await;
        ours.release();
        wait_until_held(store.as_ref(), &key, false).await;
    }

    #[tokio::test]
    async fn a_lease_taken_in_the_background_is_held_until_released() {
        let store: Arc<dyn SessionStore> =
            Arc::new(MemoryStore::new(StoreSettings::default()).unwrap());
        let session = SessionId::new("s1").unwrap();
        let stream = StreamId::for_request(FrameId::new(1, 0));
        let key = lease_key(&session, &stream).unwrap();
        let ours = StreamLease::take_in_background(store.clone(), &session, &stream).unwrap();
        wait_until_held(store.as_ref(), &key, true).await;
        assert!(
            StreamLease::take_over(store.as_ref(), &key)
                .await
                .unwrap()
                .is_none(),
            "nobody else takes a held stream"
        );
        ours.release();
        wait_until_held(store.as_ref(), &key, false).await;
    }

    /// A memory store whose operations are counted in the returned metrics.
    fn metered_memory_store() -> (Arc<crate::metrics::Metrics>, Arc<dyn SessionStore>) {
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let store = Arc::new(crate::metered_store::MeteredStore::new(
            Arc::new(MemoryStore::new(StoreSettings::default()).unwrap()),
            metrics.clone(),
        ));
        (metrics, store)
    }

    /// Yields until some instance holds `key` (`held`) or none does; bounded
    /// (a deadlock guard, not a timing).
    async fn wait_until_held(store: &dyn SessionStore, key: &KvKey, held: bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while is_held(store, key).await.unwrap() != held {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the lease was {}",
                if held { "taken" } else { "released" }
            );
            tokio::task::yield_now().await;
        }
    }
}
