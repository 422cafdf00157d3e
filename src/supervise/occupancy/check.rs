//! The GPU-occupancy preflight, effects: runs the vendor tool through the command-runner seam
//! (`mx-smi`, or `nvidia-smi --query-gpu` + `--query-compute-apps`), reads `/proc` for each
//! listed pid and its ancestors, finds this agent's own leftovers (`super::super::pidfile`),
//! classifies (`super::classify`), logs the warnings, kills orphans with `--reclaim-orphans`
//! (SIGTERM, the grace, SIGKILL; each pid checked against its start time first) and refuses
//! the rest. [`Guarded`] wraps a runtime so that the check runs in its preflight, after the
//! runtime removed its own leftovers, before the first start.
//!
//! A missing tool means nothing to check (a debug line); a tool that fails, hangs or prints
//! garbage is a warning, not a refusal: the monitor reports a broken tool, and a flaky tool
//! must not keep a service down. Not here: the rules (`super`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::{classify, OccupancyError, ProcInfo};
use crate::host::facts::SmiStatus;
use crate::host::runner::{self, CommandRunner, SystemRunner};
use crate::host::{mxsmi, nvsmi};
use crate::launch::spec::{GpuStack, Placement};
use crate::supervise::cgroup::Usage;
use crate::supervise::engine::{EngineExit, EngineRuntime, RuntimeError};
use crate::supervise::pidfile::{self, Identity, Leftovers};
use crate::supervise::procs::ProcFs;
use crate::supervise::statedir::StateDir;

/// The vendor tool to ask, by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuTool {
    MxSmi(PathBuf),
    NvidiaSmi(PathBuf),
}

impl GpuTool {
    /// The tool of the instance's GPU stack (MACA: `mx-smi`, CUDA: `nvidia-smi`), or with the
    /// stack unknown the first found of `mx-smi`, `nvidia-smi`; `None` when it is not found.
    pub fn detect(stack: GpuStack, mx_smi: &Path, nvidia_smi: &Path) -> Option<GpuTool> {
        let mx = || runner::resolve(mx_smi).map(GpuTool::MxSmi);
        let nv = || runner::resolve(nvidia_smi).map(GpuTool::NvidiaSmi);
        match stack {
            GpuStack::Maca => mx(),
            GpuStack::Cuda => nv(),
            GpuStack::Unknown => mx().or_else(nv),
        }
    }
}

/// Reads the tool's GPU and process table.
pub fn read_table(
    tool: &GpuTool,
    runner: &dyn CommandRunner,
    timeout: Duration,
) -> Result<SmiStatus, String> {
    let run = |p: &Path, args: &[&str]| {
        runner.run(p, args, timeout).map(|o| o.stdout).map_err(|e| e.to_string())
    };
    match tool {
        GpuTool::MxSmi(p) => mxsmi::parse(&run(p, &[])?).map_err(|e| e.to_string()),
        GpuTool::NvidiaSmi(p) => {
            let mut status = nvsmi::parse_query_csv(&run(p, &nvsmi::QUERY_GPU_ARGS)?)
                .map_err(|e| e.to_string())?;
            let apps = nvsmi::parse_apps_csv(&run(p, &nvsmi::QUERY_APPS_ARGS)?)
                .map_err(|e| e.to_string())?;
            status.processes =
                nvsmi::resolve_apps(&apps, &status.gpus).map_err(|e| e.to_string())?;
            Ok(status)
        }
    }
}

/// What `/proc` says of `pids` and of each one's ancestors.
fn proc_infos(proc: &ProcFs, pids: impl IntoIterator<Item = i32>) -> BTreeMap<i32, ProcInfo> {
    let mut out = BTreeMap::new();
    for pid in pids {
        let mut at = pid;
        while at > 1 && !out.contains_key(&at) {
            let Some(stat) = proc.stat(at) else { break };
            if stat.state == 'Z' {
                break;
            }
            let cmdline = proc.cmdline(at).unwrap_or_default();
            out.insert(at, ProcInfo { ppid: stat.ppid, comm: stat.comm, cmdline });
            at = stat.ppid;
        }
    }
    out
}

/// The preflight for one instance.
#[derive(Debug, Clone)]
pub struct OccupancyCheck {
    pub tool: GpuTool,
    /// The instance's GPUs in the tool's numbering; `None`: every GPU (the engine sees all).
    pub gpus: Option<Vec<u32>>,
    /// Kill engine-shaped orphans instead of refusing (`serve --reclaim-orphans`).
    pub reclaim: bool,
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL of an orphan.
    pub grace: Duration,
    /// This agent's state dir and engine identity: its own leftovers are not counted.
    pub state_dir: PathBuf,
    pub identity: Identity,
    pub proc: ProcFs,
}

impl OccupancyCheck {
    /// The check for `placement`, or `None` when no vendor tool is found (nothing to ask).
    pub fn detect(
        placement: &Placement,
        mx_smi: &Path,
        nvidia_smi: &Path,
        timeout: Duration,
        state_dir: &StateDir,
        identity: Identity,
    ) -> Option<Self> {
        let Some(tool) = GpuTool::detect(placement.stack, mx_smi, nvidia_smi) else {
            tracing::debug!("no GPU tool found: GPU occupancy not checked");
            return None;
        };
        Some(Self {
            tool,
            gpus: placement.gpus.clone(),
            reclaim: false,
            timeout,
            grace: Duration::from_secs(10),
            state_dir: state_dir.path().to_path_buf(),
            identity,
            proc: ProcFs::default(),
        })
    }

    /// Runs the check: `Ok` with the pids reclaimed (killed), or the one-line refusal.
    pub fn run(&self, runner: &dyn CommandRunner) -> Result<Vec<i32>, OccupancyError> {
        let table = match read_table(&self.tool, runner, self.timeout) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("GPU occupancy not checked: {e}");
                return Ok(Vec::new());
            }
        };
        let listed = table.processes.iter().filter_map(|p| i32::try_from(p.pid).ok());
        let procs = proc_infos(&self.proc, listed);
        let own = self.own();
        let occupancy = classify(&table, self.gpus.as_deref(), &procs, &own);
        for w in occupancy.warnings() {
            tracing::warn!("GPU occupancy: {w}");
        }
        if let Some(refusal) = occupancy.refusal(self.reclaim) {
            return Err(refusal);
        }
        let orphans = occupancy.orphans();
        if orphans.is_empty() {
            return Ok(Vec::new());
        }
        tracing::warn!(pids = ?orphans, "--reclaim-orphans: stopping orphaned engine processes");
        self.kill(&orphans)?;
        Ok(orphans.into_iter().collect())
    }

    /// The processes of this agent's earlier runs (pid file, marker) and their trees.
    fn own(&self) -> BTreeSet<i32> {
        let Ok(dir) = StateDir::open(&self.state_dir) else { return BTreeSet::new() };
        let found = Leftovers::find(&self.proc, &dir, &self.identity);
        pidfile::victims(&self.proc, &found.roots).into_iter().map(|(pid, ..)| pid).collect()
    }

    /// SIGTERM, up to the grace, then SIGKILL; never a protected process (PID 1, the agent or
    /// an ancestor), never a pid reused since it was read.
    fn kill(&self, pids: &BTreeSet<i32>) -> Result<(), OccupancyError> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let protected = pidfile::protected(&self.proc);
        let targets: Vec<(i32, u64)> = pids
            .iter()
            .filter(|p| !protected.contains(p))
            .filter_map(|&p| self.proc.stat(p).map(|s| (p, s.start_time)))
            .collect();
        let alive = |t: &[(i32, u64)]| -> Vec<(i32, u64)> {
            t.iter().copied().filter(|&(p, s)| self.proc.alive_as(p, s)).collect()
        };
        let signal = |t: &[(i32, u64)], sig| {
            for &(p, _) in t {
                let _ = kill(Pid::from_raw(p), sig);
            }
        };
        signal(&targets, Signal::SIGTERM);
        let wait = |t: Vec<(i32, u64)>, d: Duration| {
            let until = Instant::now() + d;
            let mut left = alive(&t);
            while !left.is_empty() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
                left = alive(&left);
            }
            left
        };
        let left = wait(targets, self.grace);
        if left.is_empty() {
            return Ok(());
        }
        signal(&left, Signal::SIGKILL);
        let left = wait(left, Duration::from_secs(5));
        if left.is_empty() {
            Ok(())
        } else {
            Err(OccupancyError::OrphansSurvive { pids: left.iter().map(|(p, _)| *p).collect() })
        }
    }
}

/// A runtime whose preflight also runs the occupancy check (after the runtime's own).
pub struct Guarded {
    inner: Box<dyn EngineRuntime>,
    check: OccupancyCheck,
}

/// `inner`, with `check` in its preflight when there is one.
pub fn guard(
    inner: Box<dyn EngineRuntime>,
    check: Option<OccupancyCheck>,
) -> Box<dyn EngineRuntime> {
    match check {
        Some(check) => Box::new(Guarded { inner, check }),
        None => inner,
    }
}

impl EngineRuntime for Guarded {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn preflight(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            self.inner.preflight().await?;
            let check = self.check.clone();
            // The tool may take seconds and the kill a grace: off the agent's one thread.
            let result = tokio::task::spawn_blocking(move || check.run(&SystemRunner))
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!("GPU occupancy check did not finish: {e}");
                    Ok(Vec::new())
                });
            match result {
                Ok(killed) if !killed.is_empty() => {
                    tracing::warn!(pids = ?killed, "reclaimed GPUs from orphaned engine processes");
                    Ok(())
                }
                Ok(_) => Ok(()),
                Err(source) => Err(RuntimeError::Occupancy { source }),
            }
        })
    }
    fn cleanup_leftovers(&mut self) -> BoxFuture<'_, Result<Vec<String>, RuntimeError>> {
        self.inner.cleanup_leftovers()
    }
    fn start(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        self.inner.start()
    }
    fn pids(&mut self) -> BoxFuture<'_, Result<Vec<i32>, RuntimeError>> {
        self.inner.pids()
    }
    fn wait(&mut self) -> BoxFuture<'_, Result<EngineExit, RuntimeError>> {
        self.inner.wait()
    }
    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, Result<(), RuntimeError>> {
        self.inner.stop(grace)
    }
    fn daemon_back(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        self.inner.daemon_back()
    }
    fn daemon_timeout(&self) -> Duration {
        self.inner.daemon_timeout()
    }
    fn containment(&self) -> Option<String> {
        self.inner.containment()
    }
    fn usage(&mut self) -> Usage {
        self.inner.usage()
    }
}
