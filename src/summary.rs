//! The `summary.json` schema: the metrics of each level (`LevelStats`, each distribution a
//! `Dist`), goodput against SLOs, and `meta` (what was run, against what), plus reading and
//! writing the document. A leaf: it imports nothing of the crate, so the aggregator that fills
//! these types (`loadgen::stats`) and the renderers that draw them (`report`) both depend on it
//! and not on each other. It measures and renders nothing itself.
//!
//! The schema is checked in at `docs/summary.schema.json`; the `levels[]` keys of the issue's
//! contract are fields of `LevelStats`. Reading it back is what `verify compare` does.
//!
//! Percentiles use linear interpolation between the two closest ranks (numpy's default
//! `linear` method, Hyndman-Fan type 7): with `h = (n - 1) * q` over the sorted samples `x`,
//! `p(q) = x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])`. `std` is the
//! population standard deviation.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the percentile method, written into `summary.json`'s `meta`.
pub const PERCENTILE_METHOD: &str =
    "linear interpolation between closest ranks (numpy 'linear', Hyndman-Fan type 7)";

/// Summary of one metric's samples. All fields are 0 when there are no samples (`count` says so).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dist {
    pub count: u64,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub p50: f64,
    pub p66: f64,
    pub p75: f64,
    pub p80: f64,
    pub p90: f64,
    pub p95: f64,
    pub p98: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    pub max: f64,
}

/// The percentile columns of `Dist`, in order, with their labels.
pub const PERCENTILES: [(&str, f64); 9] = [
    ("p50", 0.50),
    ("p66", 0.66),
    ("p75", 0.75),
    ("p80", 0.80),
    ("p90", 0.90),
    ("p95", 0.95),
    ("p98", 0.98),
    ("p99", 0.99),
    ("p99.9", 0.999),
];

impl Dist {
    /// Summarises `samples` (sorted in place; NaNs are dropped first).
    pub fn from_samples(samples: &mut Vec<f64>) -> Self {
        samples.retain(|x| !x.is_nan());
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let var = samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        let p = |q| percentile_sorted(samples, q);
        Self {
            count: samples.len() as u64,
            mean,
            std: var.sqrt(),
            min: samples[0],
            p50: p(0.50),
            p66: p(0.66),
            p75: p(0.75),
            p80: p(0.80),
            p90: p(0.90),
            p95: p(0.95),
            p98: p(0.98),
            p99: p(0.99),
            p99_9: p(0.999),
            max: samples[samples.len() - 1],
        }
    }

    /// Percentile by its label (`"p99"`), or `mean`/`min`/`max`/`std`.
    pub fn get(&self, key: &str) -> Option<f64> {
        Some(match key {
            "mean" => self.mean,
            "std" => self.std,
            "min" => self.min,
            "max" => self.max,
            "p50" => self.p50,
            "p66" => self.p66,
            "p75" => self.p75,
            "p80" => self.p80,
            "p90" => self.p90,
            "p95" => self.p95,
            "p98" => self.p98,
            "p99" => self.p99,
            "p99.9" => self.p99_9,
            _ => return None,
        })
    }
}

/// Percentile `q` in [0, 1] of sorted, non-empty samples (linear interpolation).
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Service-level objectives for goodput: a request is "good" when it succeeded and meets every
/// objective that is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_s: Option<f64>,
    pub tpot_s: Option<f64>,
    pub itl_s: Option<f64>,
    pub latency_s: Option<f64>,
}

impl Slo {
    pub fn is_set(&self) -> bool {
        self.ttft_s.is_some()
            || self.tpot_s.is_some()
            || self.itl_s.is_some()
            || self.latency_s.is_some()
    }
}

/// Goodput: requests meeting every SLO, per second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    pub slo: Slo,
    pub good_requests: u64,
    /// Good requests per second of the level's duration.
    pub goodput_qps: f64,
    /// Good requests as a fraction of sent requests.
    pub good_fraction: f64,
}

/// The metrics of one level. Every key of the `summary.json` contract is here; see
/// docs/verify-and-compare.md ("Metrics") for each formula and its aliases in other tools.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LevelStats {
    /// Concurrency: the fixed concurrency (closed loop) or the cap (open loop, 0 = none).
    pub parallel: u64,
    /// Request rate of an open loop, requests/s; `null` for a closed loop.
    pub rate: Option<f64>,
    /// Requests the level was asked to send (warmup not included).
    pub planned: u64,
    /// Requests sent (= succeeded + failed).
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Planned requests never sent (duration limit reached, or interrupted).
    pub not_sent: u64,
    /// Warmup requests sent before the level, excluded from every metric.
    pub warmup: u64,
    /// From the first send to the last response end, seconds.
    pub duration_s: f64,
    /// Succeeded requests per second.
    pub qps: f64,
    /// Output tokens of succeeded requests per second.
    pub output_throughput: f64,
    /// Input + output tokens of succeeded requests per second.
    pub total_throughput: f64,
    pub ttft_s: Dist,
    pub tpot_s: Dist,
    pub itl_s: Dist,
    pub latency_s: Dist,
    pub ntpot_s: Dist,
    /// Send minus planned instant of every measured request (`RequestRecord::schedule_lag`).
    pub schedule_lag_s: Dist,
    pub input_tokens: Dist,
    pub output_tokens: Dist,
    /// Mean input tokens over the succeeded requests whose count is known (`input_tokens`
    /// likewise); `input_tokens_from` says where the counts came from.
    pub input_tokens_mean: f64,
    pub output_tokens_mean: f64,
    /// `usage` (the server's count, chat template included), `tokenizer` (`--tokenizer`'s
    /// count of the prompt text, the server sent no usage), `usage+tokenizer` (both occur),
    /// or `null`: no succeeded request's input count is known.
    #[serde(default)]
    pub input_tokens_from: Option<String>,
    /// Succeeded requests whose input tokens were counted with `--tokenizer`.
    #[serde(default)]
    pub input_tokens_counted: u64,
    /// Succeeded requests whose input tokens are unknown (no usage, no `--tokenizer`); left
    /// out of `input_tokens` and its mean.
    #[serde(default)]
    pub input_tokens_unknown: u64,
    /// Mean number of content chunks per succeeded request.
    pub chunks_mean: f64,
    /// Mean requests in flight: sum of latencies / duration (Little's law).
    pub achieved_concurrency: f64,
    /// Succeeded requests whose token counts were counted by the client (no `usage`).
    pub tokens_counted: u64,
    /// Failures by class (`http_500`, `stream_cut`, ...).
    pub failures: BTreeMap<String, u64>,
    pub goodput: Option<Goodput>,
    /// The engine's own metrics during the level (`--metrics-url`, else the server's
    /// `/metrics` when it answers with vLLM's or llama.cpp's names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerLevel>,
    /// The kernel's NUMA counters over the level's measured phase
    /// (`/sys/devices/system/node/node*/numastat`); `null` where the host has none.
    #[serde(default)]
    pub numa: Option<NumaCounters>,
    /// The engine's resident bytes per NUMA node (node id -> bytes, from every engine
    /// process's `/proc/PID/numa_maps`) as the measured phase ended; `null` when the engine's
    /// processes are not known (plain `verify --url`), set under `verify --compare`.
    #[serde(default)]
    pub memory_by_node: Option<BTreeMap<u32, u64>>,
    /// The share of those bytes off the binding's memory nodes (`null` without memory nodes).
    #[serde(default)]
    pub memory_off_node_share: Option<f64>,
    /// Where the engine's threads ran over the measured phase (`/proc/PID/task/*/stat` and
    /// `sched`); `null` when the engine's processes are not known, set under `verify --compare`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<ThreadPlacement>,
    /// The load generator's own CPU use over the measured phase (the whole `verify` process,
    /// every thread, children not included); `null` where it could not be read.
    #[serde(default)]
    pub loadgen_cpu: Option<LoadgenCpu>,
}

/// Where an engine's threads ran, from two readings of `/proc/PID/task/TID/stat` (field 39,
/// the CPU each thread last ran on; utime + stime) and `sched` (`se.nr_migrations`,
/// `nr_switches`, on kernels that have it). The delta figures are `null` for a single reading.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadPlacement {
    /// Threads of the engine's processes at the second reading.
    pub threads: u64,
    /// The CPUs those threads last ran on, ascending.
    pub last_cpus: Vec<u32>,
    /// Of those, the CPUs outside the binding's CPUs (empty without a CPU binding).
    pub last_cpus_outside: Vec<u32>,
    /// `se.nr_migrations` summed over the threads, each since it started; `null` where the
    /// kernel has no `/proc/PID/task/TID/sched` (built without `CONFIG_SCHED_DEBUG`).
    pub migrations: Option<u64>,
    /// The same between the two readings (a thread that appeared in between counts in full).
    pub migrations_delta: Option<u64>,
    /// `nr_switches` (context switches) summed over the threads; `null` without `sched`.
    pub switches: Option<u64>,
    /// Threads seen in both readings whose last CPU differs: a lower bound of the migrations
    /// that needs no `sched` file.
    pub last_cpu_changes: Option<u64>,
    /// The engine's CPU time between the readings (utime + stime deltas), seconds.
    pub cpu_seconds: Option<f64>,
    /// The share (0 to 1) of that CPU time attributed to CPUs outside the binding: each
    /// thread's delta counts on the CPU it last ran on (an approximation: a thread that ran
    /// outside and came back in between counts as inside). `null` without a CPU binding or
    /// without CPU time.
    pub outside_share: Option<f64>,
}

/// The load generator's CPU use over one measured phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadgenCpu {
    /// User + system CPU time of the `verify` process over the phase, seconds.
    pub cpu_s: f64,
    /// The phase's wall-clock time, seconds.
    pub wall_s: f64,
    /// `cpu_s / wall_s`: the share of one core it used (1.0 = one core busy all the time).
    pub cores: f64,
    /// `cores` over the number of CPUs it was allowed to run on (`allowed_cpus`).
    pub allowed_share: f64,
    /// How many CPUs it was allowed to run on (the pinned set, else its inherited affinity).
    pub allowed_cpus: u32,
}

/// Where the load generator ran: pinned away from the engine's CPUs, or not and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadgenPlacement {
    /// The CPUs it was pinned to (`1`, `4-7`); `null` when it ran unpinned.
    pub pinned: Option<String>,
    /// Why it ran unpinned (`--no-isolate`, the engine is not on this host, no CPU free of
    /// the engine's binding); `null` when pinned.
    pub unpinned: Option<String>,
    /// The CPUs it could run on: the pinned set, else the affinity it inherited.
    pub cpus: String,
    /// The engine's CPUs (the union of its processes' `Cpus_allowed_list`), when found.
    pub engine_cpus: Option<String>,
    /// The engine processes whose affinity was read.
    pub engine_pids: Vec<i32>,
    /// How they were found: `serve status (DIR)` (the agent serving the URL's port),
    /// `listener of port N` (`/proc`), `--compare` (the processes it started).
    #[serde(default)]
    pub engine_from: Option<String>,
}

/// Differences of the kernel's NUMA allocation counters (`numa_hit`, `numa_miss`,
/// `numa_foreign`, `local_node`, `other_node`; pages) from the start to the end of a measured
/// phase: per node, and summed over the nodes. Host-wide, not only the engine's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NumaCounters {
    /// Node id -> counter -> delta.
    pub per_node: BTreeMap<u32, BTreeMap<String, u64>>,
    /// Counter -> delta summed over the nodes.
    pub total: BTreeMap<String, u64>,
}

/// A gauge sampled while a level ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GaugeStats {
    pub mean: f64,
    pub max: f64,
    pub samples: u64,
}

/// A server-side histogram over one level (the difference of its buckets, sum and count).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistStats {
    pub count: f64,
    pub mean: f64,
    /// Percentiles by linear interpolation within buckets (Prometheus' `histogram_quantile`).
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// What the engine's Prometheus endpoint said about one level. Counters are differences over
/// the level; `null` where the engine does not export the figure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerLevel {
    /// The `/metrics` URL scraped.
    pub url: String,
    /// Whose metric names: `vllm` or `llamacpp`.
    pub engine: String,
    /// Seconds between scrapes while the level ran.
    pub interval_s: f64,
    /// Scrapes taken (one before, one after, the rest during).
    pub scrapes: u64,
    pub running: Option<GaugeStats>,
    pub waiting: Option<GaugeStats>,
    /// KV-cache use, a fraction (0 to 1).
    pub kv_cache_usage: Option<GaugeStats>,
    /// Requests the server finished (vLLM's `request_success_total`).
    pub requests: Option<f64>,
    pub prompt_tokens: Option<f64>,
    pub generation_tokens: Option<f64>,
    pub preemptions: Option<f64>,
    /// Prompt tokens the engine looked up in its prefix cache over the level, and those it
    /// found there (vLLM's `prefix_cache_queries_total` / `prefix_cache_hits_total`).
    #[serde(default)]
    pub prefix_cache_queries: Option<f64>,
    #[serde(default)]
    pub prefix_cache_hits: Option<f64>,
    /// `prefix_cache_hits / prefix_cache_queries` (0 to 1); `null` when nothing was queried.
    #[serde(default)]
    pub prefix_cache_hit_rate: Option<f64>,
    pub ttft_s: Option<HistStats>,
    pub tpot_s: Option<HistStats>,
    pub e2e_s: Option<HistStats>,
    pub queue_s: Option<HistStats>,
    /// The server counted fewer requests or tokens than the client sent.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a nodeagent summary.json: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
}

/// Everything about the run that is not a metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub tool: String,
    pub version: String,
    /// Prefix of every `x-request-id` of this run.
    pub run_id: String,
    /// Wall-clock start, RFC 3339 (UTC); record times count from here.
    pub started_at: String,
    pub url: String,
    pub endpoint: String,
    pub api: String,
    pub model: String,
    pub stream: bool,
    pub dataset: String,
    pub prompts: u64,
    /// Unit of the prompt length limits (and of a random dataset's length): `characters`, or
    /// `tokens` when `tokenizer` was given.
    #[serde(default = "characters")]
    pub prompt_length_unit: String,
    /// `--min-prompt-length` / `--max-prompt-length`, in `prompt_length_unit`.
    #[serde(default)]
    pub min_prompt_length: u64,
    #[serde(default)]
    pub max_prompt_length: Option<u64>,
    /// The `tokenizer.json` that counted prompt tokens (`--tokenizer`), as given.
    #[serde(default)]
    pub tokenizer: Option<String>,
    pub seed: u64,
    pub max_tokens: Option<u32>,
    /// Open-loop arrival process (`constant`, `poisson`, `gamma(0.5)`), `null` for closed loops.
    pub arrival: Option<String>,
    pub percentile_method: String,
    /// Stopped by Ctrl-C: the last level is partial.
    pub interrupted: bool,
    /// Warnings raised during the run (preflight, server behaviour).
    pub warnings: Vec<String>,
    /// The command line as given.
    pub argv: Vec<String>,
    /// Room for GPU samples taken during the sweep (filled by the monitor when it exists).
    pub gpu: Option<serde_json::Value>,
    /// Where the load generator ran (`verify --no-isolate` turns the pinning off).
    #[serde(default)]
    pub loadgen: Option<LoadgenPlacement>,
}

fn characters() -> String {
    "characters".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub levels: Vec<LevelStats>,
    pub meta: Meta,
    /// The SLO search (`verify --search`), when one ran: each step is also a level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchSummary>,
}

/// One step of an SLO search: a load tried and whether it met the SLO.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchStep {
    /// Index of the step's level in `levels`.
    pub level: usize,
    /// The concurrency tried (a concurrency search).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<u64>,
    /// The request rate tried, requests/s (a rate search).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Share of the step's sent requests that met every SLO.
    pub attainment: f64,
    /// `attainment` reached the search's target.
    pub met: bool,
    pub requests: u64,
    pub qps: f64,
    pub output_throughput: f64,
    pub ttft_p99_s: f64,
    pub tpot_p99_s: f64,
    pub latency_p50_s: f64,
    pub latency_p99_s: f64,
}

/// `summary.json`'s `search`: what was searched for, the steps, and the capacity found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchSummary {
    /// `concurrency` or `rate`.
    pub kind: String,
    pub slo: Slo,
    /// The share of requests that had to meet every SLO (`--slo-attainment`).
    pub attainment: f64,
    pub max_steps: u32,
    /// The highest load that met the SLO below the lowest that did not; `null` when none met.
    pub best: Option<SearchStep>,
    /// In the order they ran.
    pub steps: Vec<SearchStep>,
    /// Why the search ended: `bracketed`, `saturated`, `max_steps`, `nothing_met`, `limit`,
    /// `interrupted`; `null` while it runs.
    pub stop: Option<String>,
}

impl Summary {
    pub fn write_json<W: Write>(&self, mut w: W) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut w, self)?;
        writeln!(w)
    }

    /// Reads `summary.json` from a run directory (or the file itself).
    pub fn read(path: &Path) -> Result<Self, SummaryError> {
        let file = if path.is_dir() { path.join("summary.json") } else { path.to_path_buf() };
        let read = |source| SummaryError::Read { path: file.clone(), source };
        // A fifo would block the read forever, `/dev/zero` fill memory: regular files only.
        if !std::fs::metadata(&file).map_err(read)?.is_file() {
            let e = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
            return Err(read(e));
        }
        let text = std::fs::read_to_string(&file).map_err(read)?;
        serde_json::from_str(&text).map_err(|source| SummaryError::Parse { path: file, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_linearly() {
        let mut v: Vec<f64> = (1..=10).map(f64::from).collect();
        let d = Dist::from_samples(&mut v);
        assert_eq!(d.count, 10);
        assert!((d.mean - 5.5).abs() < 1e-12);
        assert!((d.p50 - 5.5).abs() < 1e-12);
        // h = 9 * 0.9 = 8.1 -> 9 + 0.1 * (10 - 9)
        assert!((d.p90 - 9.1).abs() < 1e-12);
        assert!((d.p99_9 - 9.991).abs() < 1e-9);
        assert_eq!((d.min, d.max), (1.0, 10.0));
        // population std of 1..=10 is sqrt(8.25)
        assert!((d.std - 8.25f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn empty_and_single_samples() {
        assert_eq!(Dist::from_samples(&mut vec![]), Dist::default());
        let d = Dist::from_samples(&mut vec![3.0]);
        assert_eq!((d.p50, d.p99_9, d.std), (3.0, 3.0, 0.0));
    }

    #[test]
    fn nan_samples_are_dropped() {
        let d = Dist::from_samples(&mut vec![f64::NAN, 2.0, 4.0]);
        assert_eq!(d.count, 2);
        assert_eq!(d.mean, 3.0);
    }
}
