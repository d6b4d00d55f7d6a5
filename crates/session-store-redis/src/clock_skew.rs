//! The clock check at connect. Expiry is absolute and comes from the store's
//! clock (`PEXPIREAT <now + ttl>`), so a store clock behind Redis's makes Redis
//! delete fresh sessions early, and one ahead keeps them longer. Compare once
//! with Redis `TIME`: warn past 1% of the ttl, refuse to start past a tenth.

use std::time::Instant;

use session_store_core::{Error, Result};

use crate::{
    batch::{to_array, to_u64, Batch},
    RedisStore,
};

/// The skew beyond which the store warns, as a fraction of the ttl (1/100).
const WARN_DIVISOR: u64 = 100;
/// The skew beyond which the store refuses to start, as a fraction of the ttl
/// (1/10).
const REFUSE_DIVISOR: u64 = 10;

impl RedisStore {
    /// Compares the store's clock with Redis `TIME`.
    ///
    /// Errors: [`Error::Config`] when they differ by more than `ttl / 10`,
    /// naming both times and the limit; [`Error::Unavailable`] when `TIME`
    /// cannot be sent.
    pub(crate) async fn check_clock_skew(&self) -> Result<()> {
        let what = "TIME (clock check at connect)";
        let mut batch = Batch::retry_safe();
        let time = batch.push("TIME", Vec::new());
        let local_before = self.now_ms();
        let sent = Instant::now();
        let mut replies = self.run(&batch, what).await?;
        let round_trip = u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX);
        let parts = to_array(replies.take(time, what)?, what)?;
        let (Some(seconds), Some(micros)) = (parts.first(), parts.get(1)) else {
            return Err(Error::corrupt(format!(
                "{what}: expected [seconds, microseconds]"
            )));
        };
        let server_ms = to_u64(seconds, what)?
            .saturating_mul(1_000)
            .saturating_add(to_u64(micros, what)? / 1_000);
        // The server read its clock somewhere within the round trip.
        let local_ms = local_before.saturating_add(round_trip / 2);
        let skew = server_ms.abs_diff(local_ms);
        let slack = round_trip / 2;
        let skew = skew.saturating_sub(slack);
        let ttl = self.lifetime.ttl_ms;
        let direction = if local_ms < server_ms {
            "behind"
        } else {
            "ahead of"
        };
        if skew > ttl / REFUSE_DIVISOR {
            return Err(Error::config(format!(
                "the store's clock is {skew}ms {direction} the clock of redis at {} \
                 (store {local_ms}ms, redis {server_ms}ms since the epoch); more than ttl/10 \
                 ({}ms) would make redis expire sessions at the wrong time. Synchronise the \
                 clocks (NTP) or raise ttl",
                self.address,
                ttl / REFUSE_DIVISOR
            )));
        }
        if skew > ttl / WARN_DIVISOR {
            tracing::warn!(
                address = %self.address,
                skew_ms = skew,
                direction,
                limit_ms = ttl / REFUSE_DIVISOR,
                "the store's clock differs from redis's by more than 1% of ttl; sessions expire that much early or late"
            );
        }
        Ok(())
    }
}
