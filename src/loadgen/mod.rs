//! The load generator behind `nodeagent verify`: datasets, the HTTP client with its streaming
//! parser, schedules, the one worker loop, and the per-level aggregator. Imports go one way:
//! `record` imports nothing from the crate; `stats` reads records only; `worker` drives
//! `client` with a `schedule`. Sweeps and output files live in `crate::verify` and
//! `crate::report`.

pub mod client;
pub mod dataset;
pub mod record;
pub mod schedule;
pub mod stats;
pub mod tokenizer;
pub mod worker;
