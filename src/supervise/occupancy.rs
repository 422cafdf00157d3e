//! The GPU-occupancy preflight, pure part: given the vendor tool's process table (`mx-smi`, or
//! `nvidia-smi --query-compute-apps` resolved to indexes), what `/proc` says of each listed pid
//! and which pids are this agent's own leftovers, [`classify`] says who holds the instance's
//! GPUs:
//! - **own**: a process of this agent's state dir (marker or pid file): the runtime's leftover
//!   cleanup removes it, so it is not counted here;
//! - **orphan**: an engine-shaped process ([`is_engine_shaped`]: `VLLM::EngineCore`,
//!   `VLLM::Worker_TP*`, `ray::RayWorkerWrapper`, `python ... vllm serve`) whose chain of
//!   engine-shaped ancestors ends in a process re-parented to PID 1: what a manual `vllm serve`
//!   leaves when its API server dies (vLLM #55510). Refused, or killed with
//!   `serve --reclaim-orphans`;
//! - **foreign**: any other process: refused, never killed;
//! - **unseen**: listed by the tool but absent from this `/proc` (another PID namespace, or it
//!   just exited): a warning;
//! - **hidden memory**: more than [`UNACCOUNTED_MIB`] in use on a GPU beyond what its listed
//!   processes hold (a process in another PID namespace the tool does not show): a warning.
//!
//! Not here: running the tool, reading `/proc`, killing (`check`).

pub mod check;

use std::collections::{BTreeMap, BTreeSet};

use crate::host::facts::SmiStatus;

/// Memory in use on a GPU that no listed process accounts for, above which a warning is given.
/// An idle GPU shows some: 826-858 MiB on a MetaX C500 (`testdata/mx-smi`), 0 MiB on an H100.
pub const UNACCOUNTED_MIB: u64 = 2048;

/// What `/proc` says of one process: parent, `comm` and command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcInfo {
    pub ppid: i32,
    pub comm: String,
    pub cmdline: Vec<String>,
}

/// Who holds a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Own,
    Orphan,
    Foreign,
    Unseen,
}

/// One process of the tool's table on one of the instance's GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub gpu: u32,
    pub pid: i32,
    /// The command line's first word as `/proc` shows it (a process title such as
    /// `VLLM::EngineCore`), else the tool's process name.
    pub name: String,
    pub memory_mib: Option<u64>,
    pub holder: Holder,
}

/// Memory in use on a GPU beyond what its listed processes hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hidden {
    pub gpu: u32,
    pub used_mib: u64,
    pub unaccounted_mib: u64,
}

/// What [`classify`] found on the instance's GPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Occupancy {
    pub findings: Vec<Finding>,
    pub hidden: Vec<Hidden>,
}

#[derive(Debug, thiserror::Error)]
pub enum OccupancyError {
    /// Orphans (without `--reclaim-orphans`) or foreign processes hold the GPUs.
    #[error("{detail}")]
    Busy { detail: String },
    #[error("gpu occupancy: orphaned engine processes survive SIGKILL: {pids:?}")]
    OrphansSurvive { pids: Vec<i32> },
}

/// Whether a process looks like a vLLM engine part: by its process title (`comm` is cut to 15
/// bytes, so `VLLM::EngineCor` and `ray::RayWorkerW` count) or its command line
/// (`python ... vllm serve`, `vllm serve`, `python -m vllm.entrypoints.openai.api_server`).
pub fn is_engine_shaped(comm: &str, cmdline: &[String]) -> bool {
    const TITLES: [&str; 3] = ["VLLM::EngineCor", "VLLM::Worker_TP", "ray::RayWorkerW"];
    let titled = |s: &str| TITLES.iter().any(|t| s.starts_with(t));
    if titled(comm) || cmdline.first().is_some_and(|a| titled(a)) {
        return true;
    }
    let base = |a: &str| a.rsplit('/').next().unwrap_or(a).to_string();
    let words: Vec<String> = cmdline.iter().flat_map(|a| a.split_whitespace()).map(base).collect();
    let serve = words.windows(2).any(|w| w[0] == "vllm" && w[1] == "serve");
    let module = words.iter().any(|w| w.starts_with("vllm.entrypoints"));
    let python_or_vllm = words.first().is_some_and(|w| w.starts_with("python") || w == "vllm");
    python_or_vllm && (serve || module)
}

/// Whether `pid` is engine-shaped and its chain of engine-shaped ancestors ends in a process
/// whose parent is PID 1 (a worker under an orphaned `EngineCore` is an orphan too).
fn is_orphan(pid: i32, procs: &BTreeMap<i32, ProcInfo>) -> bool {
    let mut at = pid;
    // Bounded: a parent loop in a bad snapshot cannot hang this.
    for _ in 0..64 {
        let Some(p) = procs.get(&at) else { return false };
        if !is_engine_shaped(&p.comm, &p.cmdline) {
            return false;
        }
        if p.ppid == 1 {
            return true;
        }
        at = p.ppid;
    }
    false
}

/// Classifies the tool's processes on `gpus` (`None`: every GPU). `procs` holds what `/proc`
/// says of the listed pids and their ancestors; `own` the pids of this agent's leftovers.
pub fn classify(
    table: &SmiStatus,
    gpus: Option<&[u32]>,
    procs: &BTreeMap<i32, ProcInfo>,
    own: &BTreeSet<i32>,
) -> Occupancy {
    let wanted = |g: u32| gpus.is_none_or(|list| list.contains(&g));
    let mut out = Occupancy::default();
    for p in table.processes.iter().filter(|p| wanted(p.gpu)) {
        let pid = i32::try_from(p.pid).unwrap_or(-1);
        let info = procs.get(&pid);
        let holder = match info {
            _ if own.contains(&pid) => Holder::Own,
            None => Holder::Unseen,
            Some(_) if is_orphan(pid, procs) => Holder::Orphan,
            Some(_) => Holder::Foreign,
        };
        let name = info
            .and_then(|i| i.cmdline.first().filter(|a| !a.is_empty()).cloned())
            .or_else(|| info.map(|i| i.comm.clone()).filter(|c| !c.is_empty()))
            .unwrap_or_else(|| p.name.clone());
        out.findings.push(Finding { gpu: p.gpu, pid, name, memory_mib: p.memory_mib, holder });
    }
    for g in table.gpus.iter().filter(|g| wanted(g.index)) {
        let Some(used) = g.memory_used_mib else { continue };
        let listed: u64 =
            table.processes.iter().filter(|p| p.gpu == g.index).filter_map(|p| p.memory_mib).sum();
        let unaccounted = used.saturating_sub(listed);
        if unaccounted > UNACCOUNTED_MIB {
            out.hidden.push(Hidden { gpu: g.index, used_mib: used, unaccounted_mib: unaccounted });
        }
    }
    out
}

fn describe(f: &Finding) -> String {
    let mem = f.memory_mib.map(|m| format!(" using {m} MiB")).unwrap_or_default();
    format!("gpu {}: pid {} ({}){mem}", f.gpu, f.pid, f.name)
}

impl Occupancy {
    fn with(&self, holder: Holder) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.holder == holder)
    }

    /// The orphans' pids, each once.
    pub fn orphans(&self) -> BTreeSet<i32> {
        self.with(Holder::Orphan).map(|f| f.pid).collect()
    }

    /// The one-line refusal, if the GPUs may not be used: foreign processes always, orphans
    /// unless they are to be reclaimed.
    pub fn refusal(&self, reclaim: bool) -> Option<OccupancyError> {
        let foreign: Vec<String> = self.with(Holder::Foreign).map(describe).collect();
        let orphans: Vec<String> = self.with(Holder::Orphan).map(describe).collect();
        let mut parts = Vec::new();
        if !orphans.is_empty() && !reclaim {
            parts.push(format!(
                "held by an orphaned engine of a manual run (re-parented to pid 1): {}; stop it or \
                 pass --reclaim-orphans",
                orphans.join(", ")
            ));
        }
        if !foreign.is_empty() {
            parts.push(format!(
                "in use by a process that is no engine of this agent: {}; stop it or give this \
                 instance other GPUs",
                foreign.join(", ")
            ));
        }
        (!parts.is_empty())
            .then(|| OccupancyError::Busy { detail: format!("gpus {}", parts.join("; gpus ")) })
    }

    /// One line per thing worth a warning: unseen processes and hidden memory.
    pub fn warnings(&self) -> Vec<String> {
        let unseen = self.with(Holder::Unseen).map(|f| {
            format!(
                "{} is not visible in /proc (another PID namespace, or it just exited)",
                describe(f)
            )
        });
        let hidden = self.hidden.iter().map(|h| {
            format!(
                "gpu {}: {} MiB in use, {} MiB of it by no visible process (another PID namespace, \
                 e.g. a container?)",
                h.gpu, h.used_mib, h.unaccounted_mib
            )
        });
        unseen.chain(hidden).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::facts::{GpuProcess, GpuStatus};

    fn info(ppid: i32, comm: &str, cmd: &str) -> ProcInfo {
        ProcInfo { ppid, comm: comm.into(), cmdline: cmd.split(' ').map(String::from).collect() }
    }

    fn proc(gpu: u32, pid: u32, name: &str, mib: u64) -> GpuProcess {
        GpuProcess { gpu, pid, name: name.into(), memory_mib: Some(mib), line: 0 }
    }

    fn gpu(index: u32, used: u64) -> GpuStatus {
        GpuStatus { index, memory_used_mib: Some(used), ..GpuStatus::default() }
    }

    #[test]
    fn engine_shapes() {
        let v = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert!(is_engine_shaped("VLLM::EngineCor", &[]));
        assert!(is_engine_shaped("sleep", &v("VLLM::EngineCore 300")));
        assert!(is_engine_shaped("VLLM::Worker_TP", &[]));
        assert!(is_engine_shaped("ray::RayWorkerW", &[]));
        assert!(is_engine_shaped("python3", &v("/usr/bin/python3 /usr/local/bin/vllm serve /m")));
        assert!(is_engine_shaped("vllm", &v("/usr/local/bin/vllm serve /m --port 8000")));
        assert!(is_engine_shaped("python", &v("python -m vllm.entrypoints.openai.api_server")));
        assert!(!is_engine_shaped("python3", &v("python3 train.py --serve")));
        assert!(!is_engine_shaped("bash", &v("bash -c vllm serve")));
        assert!(!is_engine_shaped("sleep", &v("sleep 300")));
    }

    #[test]
    fn orphan_foreign_own_unseen_and_hidden_memory() {
        let table = SmiStatus {
            gpus: vec![gpu(0, 60000), gpu(1, 59000), gpu(2, 9000), gpu(3, 40000)],
            processes: vec![
                proc(0, 100, "VLLM::EngineCor", 30000),
                proc(0, 101, "VLLM::Worker_TP", 29000),
                proc(1, 200, "python3", 58000),
                proc(2, 300, "python", 8000),
                proc(3, 400, "python", 100),
                proc(5, 500, "python", 100),
            ],
            ..SmiStatus::default()
        };
        let procs = BTreeMap::from([
            (100, info(1, "sleep", "VLLM::EngineCore")),
            (101, info(100, "VLLM::Worker_TP", "VLLM::Worker_TP0")),
            (200, info(1, "python3", "python3 train.py")),
            (300, info(77, "VLLM::EngineCor", "VLLM::EngineCore")),
            (77, info(1, "vllm", "/usr/bin/python3 /usr/bin/vllm serve /m")),
        ]);
        let own = BTreeSet::from([300]);
        let occ = classify(&table, Some(&[0, 1, 2, 3]), &procs, &own);
        let holders: Vec<(i32, Holder)> = occ.findings.iter().map(|f| (f.pid, f.holder)).collect();
        assert_eq!(
            holders,
            [
                (100, Holder::Orphan),
                (101, Holder::Orphan),
                (200, Holder::Foreign),
                (300, Holder::Own),
                (400, Holder::Unseen),
            ]
        );
        assert_eq!(occ.findings[0].name, "VLLM::EngineCore");
        assert_eq!(occ.findings[4].name, "python");
        assert_eq!(occ.orphans(), BTreeSet::from([100, 101]));
        assert_eq!(occ.hidden, [Hidden { gpu: 3, used_mib: 40000, unaccounted_mib: 39900 }]);
        let refused = occ.refusal(false).unwrap().to_string();
        assert_eq!(
            refused,
            "gpus held by an orphaned engine of a manual run (re-parented to pid 1): gpu 0: pid \
             100 (VLLM::EngineCore) using 30000 MiB, gpu 0: pid 101 (VLLM::Worker_TP0) using \
             29000 MiB; stop it or pass --reclaim-orphans; gpus in use by a process that is no \
             engine of this agent: gpu 1: pid 200 (python3) using 58000 MiB; stop it or give \
             this instance other GPUs"
        );
        // Reclaiming takes care of orphans, never of the foreign process.
        let with_reclaim = occ.refusal(true).unwrap().to_string();
        assert!(!with_reclaim.contains("orphan") && with_reclaim.contains("pid 200"));
        assert_eq!(
            occ.warnings(),
            [
                "gpu 3: pid 400 (python) using 100 MiB is not visible in /proc (another PID \
                 namespace, or it just exited)",
                "gpu 3: 40000 MiB in use, 39900 MiB of it by no visible process (another PID \
                 namespace, e.g. a container?)",
            ]
        );
    }

    #[test]
    fn only_the_instances_gpus_count() {
        let table = SmiStatus {
            gpus: vec![gpu(0, 30000), gpu(1, 900)],
            processes: vec![proc(0, 200, "python3", 29000)],
            ..SmiStatus::default()
        };
        let procs = BTreeMap::from([(200, info(1, "python3", "python3 x.py"))]);
        let other = classify(&table, Some(&[1]), &procs, &BTreeSet::new());
        assert_eq!(other, Occupancy::default());
        assert!(other.refusal(false).is_none() && other.warnings().is_empty());
        let all = classify(&table, None, &procs, &BTreeSet::new());
        assert_eq!(all.findings.len(), 1);
        assert!(all.refusal(true).is_some());
    }
}
