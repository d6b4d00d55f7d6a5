//! Shared by the Redis benches: a dedicated redis-server per bench binary, raw fred
//! commands, and a bounded latency/throughput measurement.
// Each bench binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod measure;
pub mod raw;
pub mod server;
