//! Runs a binding comparison: for each (trial, binding) of the interleaved schedule, start the
//! engine under that binding through an `EngineRuntime` (serve's process runtime, or the
//! container runtime), wait until it answers `/health` and lists the model, check every engine
//! process's binding in `/proc`, run the same sweep (same dataset, same seed, so the same
//! prompts in the same order) into `<out>/<binding>/trial-<k>/`, then stop the engine. After
//! every sub-run `compare.json`, `compare.txt` and `compare.svg` are rewritten, so a failure or
//! Ctrl-C loses nothing already measured. A sub-run whose engine will not start or escapes its
//! binding is recorded as failed and the comparison goes on.
//!
//! Not here: the statistics (`compare`), drawing the table and chart (`render`), choosing the
//! runtime (the command layer passes a factory) and printing.

use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::bindings::Choice;
use super::compare::{analyse_with, schedule, Capacity, CompareReport, LevelFigures, TrialRun};
use super::render::{write_chart, write_table};
use super::sweep::{numa_since, read_numastat, run_sweep, EngineProcs, SweepSpec};
use crate::binding::Binding;
use crate::host::runner::SystemRunner;
use crate::loadgen::dataset::Dataset;
use crate::report::table::level_label;
use crate::supervise::health::{probe, Probe};
use crate::supervise::occupancy::check::GpuTool;
use crate::supervise::procs::ProcFs;
use crate::supervise::ranks::{RankBinder, RankTarget};
use crate::supervise::runtime::EngineRuntime;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Makes a fresh runtime for one engine life under a binding.
pub type RuntimeFactory =
    Box<dyn Fn(&Binding) -> Result<Box<dyn EngineRuntime>, String> + Send + Sync>;

pub struct CompareSpec {
    pub choices: Vec<(Choice, Binding)>,
    pub trials: u32,
    /// Root of the results; sub-runs go to `<out>/<binding>/trial-<k>/`.
    pub out: PathBuf,
    /// The sweep of every sub-run (its `out` is replaced per sub-run).
    pub sweep: SweepSpec,
    /// Where the engine answers health checks.
    pub health_addr: SocketAddr,
    /// The model `/v1/models` must list before the engine counts as ready.
    pub model: Option<String>,
    pub ready_timeout: Duration,
    pub stop_grace: Duration,
    pub proc: ProcFs,
    /// The shares above which a binding's placement fails (`binding.memory_off_node_alert`,
    /// `binding.cpu_outside_alert`).
    pub limits: super::compare::PlacementLimits,
    /// What the `per-rank` binding binds after the engine is ready; `None` when the plan's
    /// instance has no ranks (or no `per-rank` entry was asked for).
    pub per_rank: Option<PerRank>,
}

/// The per-rank layout of the plan's instance and how to find the ranks' workers
/// (`crate::supervise::ranks`).
#[derive(Debug, Clone)]
pub struct PerRank {
    pub ranks: Vec<RankTarget>,
    pub tool: Option<GpuTool>,
    pub tool_timeout: Duration,
    /// How long the workers may take to show up on their GPUs after the engine is ready.
    pub within: Duration,
}

/// Binds every rank of `pr` (the binder of `serve`, ticked each second) or fails naming the
/// first rank that could not be bound.
async fn bind_ranks(pr: &PerRank, runtime: &mut dyn EngineRuntime) -> Result<(), String> {
    let mut binder =
        RankBinder::new(pr.ranks.clone(), pr.tool.clone(), Box::new(SystemRunner), pr.tool_timeout)
            .with_library_of(crate::supervise::ranks::stack_of(pr.tool.as_ref()));
    let started = Instant::now();
    loop {
        let pids = runtime.pids().await.map_err(|e| format!("listing engine processes: {e}"))?;
        let states = binder.tick(&pids, runtime.containment().as_deref());
        let waiting: Vec<String> = states
            .iter()
            .filter(|s| s.cgroup.is_none())
            .map(|s| {
                format!("rank {} (GPU{}): {}", s.rank, s.gpu, s.problem.as_deref().unwrap_or("?"))
            })
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if started.elapsed() > pr.within {
            return Err(format!(
                "per-rank: not bound after {:?}: {}",
                pr.within,
                waiting.join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Rewrites `compare.json`, `compare.txt` and `compare.svg` under `out`.
pub fn write_outputs(out: &Path, report: &CompareReport) -> Result<(), RunError> {
    let write = |name: &str, f: &dyn Fn(&mut BufWriter<std::fs::File>) -> std::io::Result<()>| {
        let path = out.join(name);
        let tmp = out.join(format!(".{name}.tmp"));
        let res = std::fs::File::create(&tmp).and_then(|file| {
            let mut w = BufWriter::new(file);
            f(&mut w)?;
            std::io::Write::flush(&mut w)
        });
        res.and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| RunError::Write { path, source })
    };
    write("compare.json", &|w| {
        serde_json::to_writer_pretty(&mut *w, report)?;
        std::io::Write::write_all(w, b"\n")
    })?;
    write("compare.txt", &|w| write_table(report, w))?;
    write("compare.svg", &|w| write_chart(report, w))
}

/// Runs the whole comparison. `on_run` sees each sub-run as it ends (for progress lines).
pub async fn run_compare(
    spec: &CompareSpec,
    dataset: &Dataset,
    factory: &RuntimeFactory,
    interrupt: CancellationToken,
    mut on_run: impl FnMut(&TrialRun),
) -> Result<CompareReport, RunError> {
    std::fs::create_dir_all(&spec.out)
        .map_err(|source| RunError::Write { path: spec.out.clone(), source })?;
    let order = schedule(spec.trials, spec.choices.len());
    let mut runs: Vec<TrialRun> = Vec::new();
    for (i, &(trial, b)) in order.iter().enumerate() {
        if interrupt.is_cancelled() {
            break;
        }
        let (choice, binding) = &spec.choices[b];
        let rel = format!("{}/trial-{trial}", choice.dir_name());
        tracing::info!(binding = %choice.label, trial, step = i + 1, of = order.len(), "sub-run");
        let mut run = TrialRun::new(&choice.label, trial, &rel);
        if let Err(e) =
            engine_life(spec, dataset, factory, binding, &spec.out.join(&rel), &interrupt, &mut run)
                .await
        {
            run.error = Some(e);
        }
        on_run(&run);
        runs.push(run);
        let partial =
            analyse_with(&spec.choices, spec.trials, &runs, i + 1 < order.len(), spec.limits);
        write_outputs(&spec.out, &partial)?;
    }
    let report =
        analyse_with(&spec.choices, spec.trials, &runs, runs.len() < order.len(), spec.limits);
    write_outputs(&spec.out, &report)?;
    Ok(report)
}

/// One engine life: start, ready, check, sweep, stop (the stop happens whatever went wrong).
pub async fn engine_life(
    spec: &CompareSpec,
    dataset: &Dataset,
    factory: &RuntimeFactory,
    binding: &Binding,
    dir: &Path,
    interrupt: &CancellationToken,
    run: &mut TrialRun,
) -> Result<(), String> {
    let mut runtime = factory(binding)?;
    let what = runtime.describe();
    let removed = runtime
        .cleanup_leftovers()
        .await
        .map_err(|e| format!("{what}: removing leftovers: {e}"))?;
    if !removed.is_empty() {
        tracing::warn!(removed = ?removed, "removed leftovers of an earlier run");
    }
    runtime.preflight().await.map_err(|e| format!("{what}: {e}"))?;
    runtime.start().await.map_err(|e| format!("{what}: starting: {e}"))?;
    let result = measured(spec, dataset, runtime.as_mut(), binding, dir, interrupt, run).await;
    let stopped = runtime.stop(spec.stop_grace).await;
    result?;
    stopped.map_err(|e| format!("{what}: stopping: {e}"))
}

async fn measured(
    spec: &CompareSpec,
    dataset: &Dataset,
    runtime: &mut dyn EngineRuntime,
    binding: &Binding,
    dir: &Path,
    interrupt: &CancellationToken,
    run: &mut TrialRun,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        match probe(spec.health_addr, spec.model.as_deref(), Duration::from_secs(2)).await {
            Probe::Healthy => break,
            p if started.elapsed() > spec.ready_timeout => {
                return Err(format!(
                    "engine not ready on {} after {} ({p:?})",
                    spec.health_addr,
                    humantime::format_duration(spec.ready_timeout)
                ))
            }
            _ => {}
        }
        tokio::select! {
            exit = runtime.wait() => {
                return Err(format!("engine ended before it was ready: {exit:?}"));
            }
            _ = interrupt.cancelled() => return Err("interrupted while the engine started".into()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    let pids = runtime.pids().await.map_err(|e| format!("listing engine processes: {e}"))?;
    if pids.is_empty() {
        return Err("the engine is ready but no engine process was found".into());
    }
    run.binding_check = pids.iter().filter_map(|&pid| spec.proc.check(pid, binding)).collect();
    if let Some(c) = run.binding_check.iter().find(|c| c.escape.is_some()) {
        return Err(format!(
            "engine process {} ({}) is outside its binding: {}",
            c.pid,
            c.comm,
            c.escape.as_deref().unwrap_or_default()
        ));
    }
    if run.binding == "per-rank" {
        match &spec.per_rank {
            Some(pr) => bind_ranks(pr, runtime).await?,
            None => return Err(
                "per-rank: the plan's instance has no per-rank layout (its GPUs hang off one node)"
                    .into(),
            ),
        }
    }
    let mut sweep = spec.sweep.clone();
    sweep.out = Some(dir.to_path_buf());
    let engine = EngineProcs {
        proc_root: spec.proc.root().to_path_buf(),
        pids: pids.clone(),
        memory_nodes: binding.memory_nodes(),
        cpus: binding.cpus.clone(),
    };
    sweep.engine = Some(engine.clone());
    let numa_before = read_numastat(&sweep.sysfs_root);
    let threads_before = engine.threads();
    let outcome = run_sweep(&sweep, dataset, interrupt.clone(), |_| {})
        .await
        .map_err(|e| format!("sweep: {e}"))?;
    run.numa = numa_before.and_then(|before| numa_since(&sweep.sysfs_root, &before));
    // Where the engine's memory is at the end of the measured sweep (processes started since
    // the readiness check count too).
    let now = runtime.pids().await.unwrap_or_default();
    let engine = if now.is_empty() { engine } else { EngineProcs { pids: now, ..engine } };
    if let Some((by_node, share)) = engine.audit() {
        run.memory_by_node = Some(by_node);
        run.memory_off_node_share = share;
    }
    run.threads = engine.thread_placement(&threads_before);
    run.levels =
        outcome.summary.levels.iter().map(|l| (level_label(l), LevelFigures::of(l))).collect();
    run.capacity = outcome.summary.search.as_ref().map(Capacity::of);
    run.loadgen = outcome.summary.meta.loadgen.clone();
    if outcome.summary.meta.interrupted {
        return Err("interrupted during the sweep (what was measured is in the sub-run)".into());
    }
    Ok(())
}
