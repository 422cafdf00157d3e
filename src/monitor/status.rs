//! The monitor's shared view of the node: the last sample with its attribution, the active
//! alerts, and what the supervisor reports of the engine. `/status` serves it as JSON,
//! `/metrics` renders it, `nodeagent monitor` prints it. Plain serde data.

use serde::{Deserialize, Serialize};

use crate::host::facts::GpuStatus;

use super::attribution::AttributedProcess;
use super::checks::Alert;
use super::sample::SampleSource;
use crate::host::health::GpuHealth;

/// What the supervisor tells the monitor about the engine (through a `watch` channel), and
/// what `nodeagent monitor --engine-pid` fills in by itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineReport {
    /// Whether an engine is supervised at all.
    pub supervised: bool,
    /// Supervisor state (`starting`, `ready`, `degraded`, `restarting`, `stopping`, `stopped`).
    pub state: String,
    /// Whether its processes are running now.
    pub running: bool,
    /// Engine pids as the supervisor knows them; the monitor adds their descendants.
    pub pids: Vec<u32>,
    /// The GPUs the plan gave the engine, if known.
    pub gpus: Option<Vec<u32>>,
    pub restarts: u64,
    /// Whether the engine's processes run with the planned binding (`None`: not checked).
    pub binding_ok: Option<bool>,
    /// Latency of the last health check, milliseconds.
    pub health_latency_ms: Option<f64>,
    /// Requests in flight, if the supervisor knows (else read from `metrics_url`).
    pub in_flight: Option<u64>,
    /// The engine's memory as its cgroup counts it, bytes (`None`: no cgroup, or unknown).
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// CPU time the engine's cgroup used, seconds (`None`: no cgroup, or unknown).
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    /// Resident bytes of the engine's processes per NUMA node (`numa_maps`), by node id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_by_node: Option<std::collections::BTreeMap<u32, u64>>,
    /// The supervisor's placement figures: the share of those bytes off the binding's memory
    /// nodes, where the engine's threads ran over its last binding check interval, and whether
    /// each is above its alert limit (flattened: the keys stay at this level).
    #[serde(flatten)]
    pub placement: crate::supervise::status::PlacementFigures,
    /// Liveness signals from the supervisor (docs/serve.md, "Supervision"): seconds since
    /// the engine's token counters last moved.
    #[serde(default)]
    pub last_token_age_s: Option<u64>,
    /// `vllm:num_requests_running` and `vllm:num_requests_waiting` at the supervisor's last
    /// scrape.
    #[serde(default)]
    pub requests_running: Option<f64>,
    #[serde(default)]
    pub requests_waiting: Option<f64>,
    /// The last canary answered (`None`: no canary sent), and failed canaries in a row.
    #[serde(default)]
    pub canary_ok: Option<bool>,
    #[serde(default)]
    pub canary_failures: Option<u32>,
    /// While the supervisor drains the engine before a stop: requests running plus waiting
    /// at its last look (`None`: no drain, or not known).
    #[serde(default)]
    pub drain_in_flight: Option<f64>,
    /// The engine's own Prometheus endpoint (`http://127.0.0.1:8000/metrics`), scraped each
    /// tick for requests in flight and re-exported under `/metrics/engine`.
    pub metrics_url: Option<String>,
}

/// The engine supervisor's states, in the order `nodeagent_engine_state` lists them.
pub const ENGINE_STATES: [&str; 7] =
    ["starting", "ready", "degraded", "restarting", "draining", "stopping", "stopped"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuView {
    #[serde(flatten)]
    pub status: GpuStatus,
    /// NUMA node of the GPU's PCI device (sysfs `numa_node`); `None` when unknown (-1).
    pub numa_node: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitorStatus {
    /// The sampler, e.g. `nvidia-smi (/usr/bin/nvidia-smi)`.
    pub sampler: String,
    /// The source of the last tick (`nvml`, `nvidia-smi`, `mxsml`, `mx-smi dmon`, `mx-smi`,
    /// `snapshot`): a library sampler may fall back to its tool for a tick.
    #[serde(default)]
    pub source: Option<SampleSource>,
    pub interval_ms: u64,
    /// Time of the last tick, and of the last tick that produced a sample.
    pub last_tick_unix_ms: Option<u64>,
    pub last_good_unix_ms: Option<u64>,
    /// Why the last tick produced no sample (`None` when it did).
    pub missing: Option<String>,
    pub sample_duration_ms: Option<f64>,
    pub samples_total: u64,
    pub samples_missing_total: u64,
    /// GPUs and processes of the last good sample.
    pub gpus: Vec<GpuView>,
    pub processes: Vec<AttributedProcess>,
    pub engine_gpus: Vec<u32>,
    /// Health readings of the last good sample (clocks, ECC, PCIe, links), library sources only.
    #[serde(default)]
    pub health: Vec<GpuHealth>,
    /// Fields the last good sample could not read (`gpu 0 power: not supported`).
    #[serde(default)]
    pub degraded: Vec<String>,
    pub alerts: Vec<Alert>,
    /// Debounced hung-engine verdict (the supervisor may restart on it).
    pub engine_hung: bool,
    pub engine: EngineReport,
    /// In-flight requests used by the hung check this tick, and where they came from.
    pub in_flight: Option<u64>,
}
