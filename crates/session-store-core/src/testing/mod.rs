//! The conformance suite: the contract of [`SessionStore`] as executable checks.
//!
//! Every behaviour is one `async fn` in [`behaviours`] taking a [`StoreFactory`];
//! [`conformance_tests!`](crate::conformance_tests) turns the whole list into one
//! `#[tokio::test]` per behaviour in the calling crate. A backend crate runs the
//! whole suite with one line:
//!
//! ```ignore
//! session_store_core::conformance_tests!(my_backend::TestFactory);
//! // or, for a backend that needs a service:
//! session_store_core::conformance_tests!(#[ignore = "needs Redis: cargo xtask integration"] RedisFactory::from_env());
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::{ManualClock, SessionStore, StoreSettings};

pub mod batch;
pub mod behaviours;
pub mod budget;
pub mod kv;

/// Builds fresh, empty stores for the suite.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    /// A store that shares nothing with stores built before (for a server-backed
    /// store: a fresh key prefix), reading time from `clock`.
    async fn build(&self, clock: ManualClock, settings: StoreSettings) -> Arc<dyn SessionStore>;

    /// How many frames beyond `max_frames_per_session` the backend may keep, for
    /// backends whose trimming is approximate (Redis `XADD MAXLEN ~`).
    fn frame_trim_slack(&self) -> u64 {
        0
    }
}

/// The settings every behaviour runs with, small enough to reach every limit quickly.
pub fn suite_settings() -> StoreSettings {
    StoreSettings {
        ttl: Duration::from_secs(60),
        max_lifetime: Some(Duration::from_secs(600)),
        max_frames_per_session: 20,
        max_frame_bytes: 16 * 1024,
        max_session_bytes: 8 * 1024,
        max_kv_value_bytes: 1024,
        max_session_frame_bytes: 1024 * 1024,
        max_read_bytes: 1024 * 1024,
    }
}

/// Generates one `#[tokio::test]` per behaviour of the suite, in a module named
/// `conformance`. Attributes before the factory (such as `#[ignore = "..."]`) are put
/// on every generated test.
#[macro_export]
macro_rules! conformance_tests {
    (#[$meta:meta] $factory:expr) => {
        $crate::__conformance_tests_for! { [#[$meta]] [$factory] }
    };
    ($factory:expr) => {
        $crate::__conformance_tests_for! { [] [$factory] }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests_for {
    ($attrs:tt [$factory:expr]) => {
        $crate::__conformance_tests_named! {
            $attrs [$factory]
            create_returns_revision_one_and_times
            create_on_existing_id_is_already_exists_and_keeps_the_original
            create_reuses_the_id_of_an_expired_session
            create_rejects_oversized_session
            get_returns_what_create_stored
            get_missing_is_not_found
            get_many_keeps_order_and_marks_missing
            update_bumps_revision_and_keeps_store_owned_fields
            update_with_stale_revision_conflicts
            update_of_deleted_session_is_not_found_and_does_not_revive
            concurrent_updates_with_same_revision_have_exactly_one_winner
            touch_slides_ttl
            touch_of_missing_or_expired_is_not_found_and_does_not_revive
            session_expires_after_ttl_without_activity
            max_lifetime_caps_sliding_expiry
            delete_removes_session_and_frames
            delete_of_missing_returns_false
            list_pages_through_every_session_once
            list_with_foreign_cursor_is_invalid_input
            list_caps_page_size
            list_skips_expired_sessions
            list_neither_skips_nor_repeats_under_concurrent_creates
            count_counts_live_sessions_only
            count_after_refused_writes_counts_no_expired_session
            count_after_create_on_a_taken_id_counts_no_expired_session
            append_returns_increasing_ids_and_bumps_frame_count
            append_slides_ttl
            append_to_missing_session_is_not_found
            oversized_frame_is_invalid_input_and_nothing_is_stored
            frames_keep_payload_and_metadata_exactly
            read_frames_after_id_with_limit_pages_without_gaps
            read_frames_of_missing_session_is_not_found
            concurrent_appends_get_unique_increasing_ids_and_exact_count
            frames_are_trimmed_to_max_frames_per_session
            append_frames_returns_ascending_ids_after_earlier_ones_and_bumps_frame_count
            append_frames_reads_back_equal_and_in_order
            append_frames_trims_across_the_batch_by_count
            append_frames_trims_across_the_batch_by_bytes
            append_frames_of_an_empty_batch_stores_nothing
            append_frames_to_a_missing_session_is_not_found_and_stores_nothing
            append_frames_with_an_oversized_frame_is_invalid_input_and_stores_nothing
            delete_frames_keeps_session_and_ids_keep_increasing
            count_frames_of_missing_session_is_not_found
            frames_beyond_max_session_frame_bytes_are_trimmed_oldest_first
            read_frames_pages_are_bounded_by_max_read_bytes
            a_frame_larger_than_max_read_bytes_is_read_alone
            read_after_a_trimmed_id_reports_the_gap
            read_after_a_kept_id_reports_no_gap
            read_after_deleted_frames_reports_the_gap
            purge_removes_only_expired_sessions
            purge_with_nothing_expired_removes_nothing
            health_reports_backend
            kv_put_if_absent_stores_and_get_returns_value_revision_and_expiry
            kv_put_if_absent_conflicts_when_present_and_keeps_the_value
            kv_put_with_revision_replaces_only_that_revision
            kv_concurrent_puts_with_the_same_condition_have_exactly_one_winner
            kv_value_expires_after_its_ttl_and_its_revision_is_not_reused
            kv_delete_is_conditional_and_deleting_a_missing_value_is_false
            kv_oversized_value_or_zero_ttl_is_invalid_input_and_nothing_is_stored
            kv_bad_key_is_invalid_input
            kv_values_are_independent_of_sessions
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests_named {
    ($attrs:tt [$factory:expr] $($name:ident)*) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $( $crate::__conformance_test! { $attrs [$factory] $name } )*
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    ([$(#[$meta:meta])*] [$factory:expr] $name:ident) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$meta])*
        async fn $name() {
            let factory = $factory;
            $crate::testing::behaviours::$name(&factory).await;
        }
    };
}
