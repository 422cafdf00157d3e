//! The load generator behind `nodeagent verify`: datasets, the HTTP client (`request` what is
//! sent, `conn` the connection it goes over, `sse` the streamed answer, `client` the exchange),
//! schedules (and `timer`, the timerfd their exact wait sleeps on), the one worker loop, and the per-level aggregator. Imports go one way: `record`
//! imports nothing from the crate; `request`, `sse` and `conn` import no other part of the
//! client but records and request settings; `client` builds on them; `stats` reads records and
//! fills `crate::summary` types; `worker` drives `client` with a `schedule`; `trace` (trace
//! files) and `synth` (prompt text from lengths) are pure and feed `dataset`. Nothing here
//! imports `crate::report` or `crate::verify`: sweeps and output files live there. Where the
//! load generator itself runs: `isolate` decides it (pure: the CPUs an engine on this host
//! leaves free, and the arithmetic of its own CPU use), `pin` applies it (the affinity of
//! every thread, the process's CPU time).

pub mod client;
pub mod conn;
pub mod dataset;
pub mod isolate;
pub mod pin;
pub mod record;
pub mod request;
pub mod schedule;
pub mod sse;
pub mod stats;
pub mod synth;
pub mod timer;
pub mod tokenizer;
pub mod trace;
pub mod worker;
