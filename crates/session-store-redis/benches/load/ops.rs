//! What the load bench measures: the store operations, the kinds of row beside
//! each, and the list of rows of one pool size.

use std::{
    future::Future,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use super::Fixture;
use crate::common::measure::{operation, Operation};

/// The store operation a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Create,
    Get,
    Touch,
    Update,
    Append,
    /// `append_frames` of [`BATCH`](super::BATCH) frames.
    AppendBatch,
    Read,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::Create,
        Op::Get,
        Op::Touch,
        Op::Update,
        Op::Append,
        Op::AppendBatch,
        Op::Read,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Get => "get",
            Op::Touch => "touch",
            Op::Update => "update",
            Op::Append => "append 1 KiB",
            Op::AppendBatch => "append_frames 8",
            Op::Read => "read 100 frames",
        }
    }
}

/// What a row measures for its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Through `RedisStore`.
    Ours,
    /// The store's commands by hand, sent the store's way (typed fred calls where
    /// the store uses them, `custom` for the rest, one pipeline, the store's
    /// options): the limit of the data model.
    Raw,
    /// The same commands, every one a fred `custom` command: how the store sent
    /// them before 3bf31d2. Raw / this = what typed commands gained.
    Custom,
    /// A command set or sending the store no longer uses, kept for comparison.
    Historical,
    /// A sending the store could switch to.
    Alternative,
    /// One plain typed command on 1 KiB.
    Floor,
    /// `tower-sessions-redis-store`.
    Peer,
    /// Through a `RedisStore` with `near_cache_entries` set: a `get` of a
    /// session it read before (hot), answered from memory until Redis
    /// invalidates it.
    NearCache,
}

/// One row: what it is and how to run it.
pub struct Spec {
    pub op: Op,
    pub variant: Variant,
    pub label: &'static str,
    pub operation: Operation,
}

pub fn spec(op: Op, variant: Variant, label: &'static str, operation: Operation) -> Spec {
    Spec {
        op,
        variant,
        label,
        operation,
    }
}

/// An operation on the shared fixture, given the index of the task running it.
pub fn on<F, Fut>(fixture: &Arc<Fixture>, body: F) -> Operation
where
    F: Fn(Arc<Fixture>, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let fixture = fixture.clone();
    operation(move |task| body(fixture.clone(), task))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
