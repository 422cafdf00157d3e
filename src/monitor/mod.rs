//! Watching the GPUs while serving: a sampler (vendor tool with a timeout, or a snapshot),
//! attribution of GPU processes to the supervised engine, checks with hysteresis (memory high,
//! hung engine, GPU gone, orphan memory, foreign processes, missing samples), a Prometheus
//! `/metrics` + JSON `/status` endpoint, the terminal view, and per-level GPU stats for
//! `verify`.
//!
//! Dependencies run one way: `sample` (records) <- `parse`, `sampler` <- `attribution`,
//! `checks` <- `status` <- `metrics`, `view`, `agent` <- `server`. Nothing here starts or stops
//! the engine: the supervisor reads `engine_hung` and decides. The monitor sits above
//! `crate::supervise`: `supervised` reads the supervisor's status record and writes the
//! monitor's status into it as JSON, `metrics` reads vLLM's series with
//! `crate::supervise::progress::vllm_sum`; nothing in `crate::supervise` names this module.

pub mod agent;
pub mod attribution;
pub mod checks;
pub mod levels;
pub mod metax;
pub mod metrics;
pub mod parse;
pub mod sample;
pub mod sampler;
pub mod server;
pub mod status;
pub mod supervised;
pub mod view;

pub use agent::{AgentChannels, AgentConfig, Monitor, Shared};
pub use sample::Sample;
pub use sampler::{DirSampler, Sampler, ToolSampler};
pub use status::{EngineReport, MonitorStatus};
