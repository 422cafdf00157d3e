//! The records of a binding comparison, `compare.json`'s contract: what one sub-run measured
//! (`TrialRun`, `LevelFigures`, `Capacity`), each binding across trials (`BindingResult`,
//! `LevelCompare`, the `PlacementVerdict`) and the whole report (`CompareReport`); and the
//! estimate they are made of (a mean with its Student-t 95 % interval). Plain data and the
//! arithmetic of one value each, no I/O.
//!
//! Not here: the schedule, the analysis across sub-runs and the verdict (`compare`), running
//! the sub-runs (`trials`), drawing them (`render`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::binding::Binding;
use crate::summary::LevelStats;

/// Two-sided 95 % Student-t quantiles t(0.975, df) for df = 1..=30.
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// t(0.975, df); beyond the table the normal quantile is within 2 % of it.
pub fn t975(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T975[df - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// Mean and 95 % confidence half-width of a sample (`None` with fewer than two values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub mean: f64,
    /// Half-width of the 95 % interval: the true mean is in `mean ± ci95` (Student t, n - 1 df).
    pub ci95: Option<f64>,
    pub n: usize,
    pub values: Vec<f64>,
}

impl Estimate {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = if n == 0 { f64::NAN } else { values.iter().sum::<f64>() / n as f64 };
        let ci95 = (n >= 2).then(|| {
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            t975(n - 1) * (var / n as f64).sqrt()
        });
        Self { mean, ci95, n, values: values.to_vec() }
    }
}

/// The figures one sweep level gives, the seed's columns.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LevelFigures {
    pub qps: f64,
    pub latency_s: f64,
    pub output_throughput: f64,
    pub ttft_p50_s: f64,
    pub ttft_p99_s: f64,
    pub failed: f64,
    /// The load generator's CPU use over the level, in cores (`loadgen_cpu.cores`).
    #[serde(default)]
    pub loadgen_cores: Option<f64>,
}

impl LevelFigures {
    pub fn of(l: &LevelStats) -> Self {
        Self {
            qps: l.qps,
            latency_s: l.latency_s.mean,
            output_throughput: l.output_throughput,
            ttft_p50_s: l.ttft_s.p50,
            ttft_p99_s: l.ttft_s.p99,
            failed: l.failed as f64,
            loadgen_cores: l.loadgen_cpu.as_ref().map(|c| c.cores),
        }
    }
}

/// One finished (or failed) sub-run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRun {
    pub binding: String,
    pub trial: u32,
    /// The sub-run directory, relative to `--out`.
    pub dir: String,
    /// Level label (`c=8`, `rate=2/s`) -> figures.
    pub levels: Vec<(String, LevelFigures)>,
    /// What `/proc` showed for each engine process once it was ready.
    pub binding_check: Vec<crate::supervise::procs::ProcCheck>,
    pub error: Option<String>,
    /// With `--search`: the capacity the sub-run's SLO search found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    /// The engine's resident bytes per NUMA node (node id -> bytes, `/proc/PID/numa_maps` of
    /// every engine process) at the end of the sub-run's sweep; `null` when not audited.
    #[serde(default)]
    pub memory_by_node: Option<BTreeMap<u32, u64>>,
    /// The share of those bytes off the binding's memory nodes (`null` for a binding without
    /// memory nodes, such as `none`).
    #[serde(default)]
    pub memory_off_node_share: Option<f64>,
    /// The kernel's NUMA counters (host-wide) from the start to the end of the sub-run's sweep.
    #[serde(default)]
    pub numa: Option<crate::summary::NumaCounters>,
    /// Where the engine's threads ran from the start to the end of the sub-run's sweep
    /// (`/proc/PID/task/*/stat` and `sched`); `null` when not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<crate::summary::ThreadPlacement>,
    /// Where the sub-run's load generator ran (pinned off the engine's CPUs, or why not).
    #[serde(default)]
    pub loadgen: Option<crate::summary::LoadgenPlacement>,
}

impl TrialRun {
    /// A sub-run not yet run: its binding label, trial number and directory (relative to
    /// `--out`); nothing measured.
    pub fn new(binding: &str, trial: u32, dir: &str) -> Self {
        Self {
            binding: binding.into(),
            trial,
            dir: dir.into(),
            levels: Vec::new(),
            binding_check: Vec::new(),
            error: None,
            capacity: None,
            memory_by_node: None,
            memory_off_node_share: None,
            numa: None,
            threads: None,
            loadgen: None,
        }
    }
}

/// The capacity an SLO search found: the highest load meeting the SLO (0 when none did).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// `concurrency` or `rate`.
    pub kind: String,
    pub value: f64,
    /// Why the search ended (`bracketed`, `saturated`, ...).
    pub stop: Option<String>,
}

impl Capacity {
    pub fn of(s: &crate::summary::SearchSummary) -> Self {
        let value =
            s.best.as_ref().map_or(0.0, |b| b.rate.unwrap_or(b.parallel.unwrap_or(0) as f64));
        Self { kind: s.kind.clone(), value, stop: s.stop.clone() }
    }

    /// How the score reads: `concurrency under the SLO`, `req/s under the SLO`.
    pub(super) fn unit(kind: &str) -> String {
        match kind {
            "rate" => "req/s under the SLO".into(),
            other => format!("{other} under the SLO"),
        }
    }
}

/// One binding at one level, across trials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelCompare {
    pub level: String,
    pub qps: Estimate,
    pub latency_s: Estimate,
    pub output_throughput: Estimate,
    pub ttft_p50_s: Estimate,
    pub ttft_p99_s: Estimate,
    pub failed: Estimate,
    /// Output throughput against `none` at the same level, in % (`None` without a `none` run).
    pub throughput_vs_none_pct: Option<f64>,
    pub latency_vs_none_pct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingResult {
    pub label: String,
    pub binding: Binding,
    /// `numactl` options of the binding (empty for none).
    pub numactl: Vec<String>,
    pub trials_ok: usize,
    pub levels: Vec<LevelCompare>,
    /// Output throughput averaged over levels, per trial: the score the verdict ranks; with
    /// `--search`, the capacity each trial's search found.
    pub score: Estimate,
    /// Score against `none`, in %, with the 95 % interval of the paired per-trial change.
    pub score_vs_none_pct: Option<Estimate>,
    /// Mean share (%) of the engine's memory off this binding's memory nodes over its
    /// successful sub-runs; `null` without memory nodes or audits.
    #[serde(default)]
    pub memory_off_node_pct: Option<f64>,
    /// The same share for the `none` sub-runs, measured against this binding's nodes: where
    /// the memory sits without the binding.
    #[serde(default)]
    pub none_memory_off_node_pct: Option<f64>,
    /// Mean host-wide `numa_miss` delta (pages) per successful sub-run.
    #[serde(default)]
    pub numa_miss: Option<f64>,
    /// Mean CPU migrations of the engine's threads per successful sub-run (`se.nr_migrations`
    /// deltas over the sweep); `null` where the kernel has no `/proc/PID/task/TID/sched`.
    #[serde(default)]
    pub thread_migrations: Option<f64>,
    /// Mean share (%) of the engine's CPU time over the sweep on CPUs outside this binding's
    /// CPUs (each thread's time counted on the CPU it last ran on); `null` without bound CPUs.
    #[serde(default)]
    pub cpu_outside_pct: Option<f64>,
    /// Whether the binding held where the memory and the threads are, not only in `/proc`
    /// (`null` for `none` and for a binding without a successful sub-run).
    #[serde(default)]
    pub placement: Option<PlacementVerdict>,
}

/// What the placement figures say about a binding whose every sub-run passed the `/proc`
/// check (CPUs and memory policy as planned): the named verdict of `compare.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementVerdict {
    /// Memory and CPU time stayed within the limits of `PlacementLimits`.
    Held,
    /// Held in `/proc`, but more of the engine's memory than the limit sits on nodes outside
    /// the binding's memory nodes.
    MemoryDidNotFollow,
    /// Held in `/proc`, but more of the engine's CPU time than the limit ran outside the
    /// binding's CPUs.
    ThreadsOutside,
    /// No memory or thread figure to judge by.
    NotAudited,
}

/// The shares (0 to 1) above which a binding's placement fails: `binding.memory_off_node_alert`
/// and `binding.cpu_outside_alert`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlacementLimits {
    pub memory_off_node: f64,
    pub cpu_outside: f64,
}

impl Default for PlacementLimits {
    /// The configuration's defaults.
    fn default() -> Self {
        Self { memory_off_node: 0.10, cpu_outside: 0.10 }
    }
}

impl PlacementVerdict {
    /// Judges a binding from its mean shares (%), against `limits`.
    pub fn of(
        memory_off_pct: Option<f64>,
        cpu_outside_pct: Option<f64>,
        limits: PlacementLimits,
    ) -> Self {
        if memory_off_pct.is_some_and(|p| p > limits.memory_off_node * 100.0) {
            Self::MemoryDidNotFollow
        } else if cpu_outside_pct.is_some_and(|p| p > limits.cpu_outside * 100.0) {
            Self::ThreadsOutside
        } else if memory_off_pct.is_none() && cpu_outside_pct.is_none() {
            Self::NotAudited
        } else {
            Self::Held
        }
    }
}

/// `compare.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    pub trials: u32,
    pub order: Vec<String>,
    pub bindings: Vec<BindingResult>,
    pub runs: Vec<TrialRun>,
    pub best: Option<String>,
    /// True when the best binding is not distinguishable from the baseline at 95 %.
    pub within_noise: Option<bool>,
    pub verdict: String,
    /// Sub-runs still to do when the comparison stopped (Ctrl-C or a fatal error).
    pub incomplete: bool,
    /// What the score is: `output tok/s`, or with `--search` the capacity under the SLO
    /// (`concurrency under the SLO`, `req/s under the SLO`).
    #[serde(default = "tok_s")]
    pub score_unit: String,
}

/// The score's unit without a search.
pub(super) fn tok_s() -> String {
    "output tok/s".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn student_t_interval_on_literal_values() {
        let e = Estimate::of(&[10.0, 12.0, 14.0]);
        assert_eq!(e.mean, 12.0);
        // s = 2, n = 3: 4.303 * 2 / sqrt(3)
        assert!((e.ci95.unwrap() - 4.303 * 2.0 / 3f64.sqrt()).abs() < 1e-9);
        assert_eq!(Estimate::of(&[5.0]).ci95, None);
        assert_eq!(t975(1), 12.706);
        assert_eq!(t975(500), 1.96);
    }
}
