//! Per-rank binding (issue 15 item 6): an instance whose GPUs hang off several NUMA nodes runs
//! bound to the union of them; once each rank's worker process has opened its GPU, the worker
//! is moved into a child cgroup of the engine's with its own node's CPUs and memory node
//! (`cpuset.cpus`, `cpuset.mems`), and its pages are migrated there (`migrate_pages(2)`: a v2
//! `cpuset.mems` change moves only new allocations).
//!
//! pid -> GPU comes from the vendor's management library (NVML, libmxsml) when one is loaded,
//! else from the vendor tool's process table (`nvidia-smi --query-compute-apps`, `mx-smi`):
//! [`source`]; each rank's state names the source. Only pids inside the engine (the pids the
//! runtime lists: its cgroup, or its process tree) and listed on one GPU alone are taken. A
//! bound rank whose workers are still the engine's stays bound when a reading does not list
//! them (the library and the tool failing, a transient). The supervisor calls
//! [`RankBinder::tick`] on every binding check: it binds the ranks not bound yet (a restarted
//! engine's new workers again) and reports each rank's state for `status`; it calls
//! [`RankBinder::release`] when the engine stops (v1: the `cpuset` cgroups made for it are
//! removed).
//!
//! The cgroups, by layout ([`Target`]):
//! - cgroup v2: the ranks are children `rank-N` of the engine's cgroup. A v2 cgroup that gives
//!   its children a controller may hold no process itself, so the engine's processes are first
//!   moved into a leaf `main` of it (new forks follow their parent there); the engine's cgroup
//!   still holds every process, so `cgroup.kill`, the freezer and `pids()` cover the ranks.
//!   The `cpuset` controller must be offered to the engine's cgroup by its parent (delegated).
//! - cgroup v1: the kill and accounting hierarchies are left alone; in the `cpuset` hierarchy,
//!   a cgroup named after the engine's (under the agent's own cpuset) holds `rank-N` children,
//!   with `cpuset.memory_migrate` set so the kernel moves the pages too.
//! - a container (the runtime names no cgroup of the agent's): the container's cgroup, taken
//!   from a worker's `/proc/PID/cgroup` ([`container_target`]), in the role of the engine's.
//!
//! Not here: the layout (`crate::plan::ranks`, resolved in `cmd/serve.rs` into [`RankTarget`]),
//! when to check (`super::supervisor`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host::facts::GpuProcess;
use crate::host::runner::CommandRunner;
use crate::launch::spec::GpuStack;
use crate::supervise::cgroup::{parse_proc_cgroup, parse_procs, v1_path, CgroupLine};
use crate::supervise::occupancy::check::GpuTool;

pub mod source;

pub use source::{open_library, stack_of, ProcessLibrary};

/// The leaf of a v2 engine cgroup that holds the engine's processes other than the ranks.
pub const MAIN_LEAF: &str = "main";

/// One rank as serve binds it: the plan's `ranks` entry itself.
pub use crate::plan::ranks::Rank as RankTarget;

/// One rank in `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RankStatus {
    pub rank: u32,
    pub gpu: u32,
    pub node: u32,
    /// The CPUs of the rank's cgroup (cpulist).
    pub cpus: String,
    pub memory_node: Option<u32>,
    /// The worker pids found on the GPU (empty until the vendor lists them).
    #[serde(default)]
    pub pids: Vec<i32>,
    /// Where pid -> GPU came from: `NVML`, `libmxsml`, `nvidia-smi`, `mx-smi` (a bound rank
    /// no reading lists any more: the one that bound it); `None` when no source answered.
    #[serde(default)]
    pub source: Option<String>,
    /// The rank's cgroup, once made.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Resident bytes of the rank's workers per NUMA node (`numa_maps`).
    #[serde(default)]
    pub memory_by_node: BTreeMap<u32, u64>,
    /// Pages `migrate_pages` could not move at binding.
    #[serde(default)]
    pub pages_left: Option<u64>,
    /// Why the rank is not (yet) bound, one line.
    #[serde(default)]
    pub problem: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RankError {
    #[error("no cgroup v2 cpuset controller delegated to {}: per-rank binding needs `cpuset` in its cgroup.controllers (systemd: Delegate=cpuset or AllowedCPUs=)", path.display())]
    NoCpuset { path: PathBuf },
    #[error("per-rank binding: writing {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("per-rank binding: creating {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "per-rank binding: no cgroup of the engine to put ranks under (containment {containment})"
    )]
    NoEngineCgroup { containment: String },
}

/// Where the rank cgroups go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The engine's own v2 cgroup.
    V2 { engine: PathBuf },
    /// The engine's cgroup in the v1 `cpuset` hierarchy (made on demand).
    V1 { engine: PathBuf },
}

impl Target {
    /// The rank's cgroup directory.
    pub fn rank_dir(&self, rank: u32) -> PathBuf {
        match self {
            Target::V2 { engine } | Target::V1 { engine } => engine.join(format!("rank-{rank}")),
        }
    }
}

/// Where the ranks go, from the runtime's containment (`cgroup-v2 PATH`, `cgroup-v1 PATH`),
/// the cgroup root and the agent's own `/proc/self/cgroup` (v1: the agent's cpuset). Pure.
pub fn target(containment: &str, root: &Path, own: &[CgroupLine]) -> Result<Target, RankError> {
    let none = || RankError::NoEngineCgroup { containment: containment.to_string() };
    if let Some(p) = containment.strip_prefix("cgroup-v2 ") {
        return Ok(Target::V2 { engine: PathBuf::from(p) });
    }
    let p = containment.strip_prefix("cgroup-v1 ").ok_or_else(none)?;
    let name = Path::new(p).file_name().ok_or_else(none)?;
    let mut engine = root.join("cpuset");
    for part in v1_path(own, "cpuset").unwrap_or("/").split('/').filter(|s| !s.is_empty()) {
        engine.push(part);
    }
    Ok(Target::V1 { engine: engine.join(name) })
}

/// Where the ranks go for a container (no containment of the agent's own: the engine's cgroup
/// is Docker's), from a worker's `/proc/PID/cgroup`: its v2 cgroup, or its v1 `cpuset` one, less
/// a trailing `rank-N` or `main` the agent made. Pure.
pub fn container_target(root: &Path, v2: bool, worker: &[CgroupLine]) -> Option<Target> {
    let path =
        if v2 { crate::supervise::cgroup::v2_path(worker)? } else { v1_path(worker, "cpuset")? };
    let mut parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty() && *s != "..").collect();
    if parts.last().is_some_and(|l| l.starts_with("rank-") || *l == MAIN_LEAF) {
        parts.pop();
    }
    // The root cgroup is nobody's own: no ranks under it.
    if parts.is_empty() {
        return None;
    }
    let base = if v2 { root.to_path_buf() } else { root.join("cpuset") };
    let engine = parts.iter().fold(base, |p, s| p.join(s));
    Some(if v2 { Target::V2 { engine } } else { Target::V1 { engine } })
}

/// pid -> GPU: for each GPU, the engine's pids the table lists on it and on no other GPU (a
/// process on several GPUs is no rank worker). Pure.
pub fn join(table: &[GpuProcess], engine: &BTreeSet<i32>) -> BTreeMap<u32, Vec<i32>> {
    let mut gpus_of: BTreeMap<i32, BTreeSet<u32>> = BTreeMap::new();
    for p in table {
        if let Ok(pid) = i32::try_from(p.pid) {
            if engine.contains(&pid) {
                gpus_of.entry(pid).or_default().insert(p.gpu);
            }
        }
    }
    let mut out: BTreeMap<u32, Vec<i32>> = BTreeMap::new();
    for (pid, gpus) in gpus_of {
        if gpus.len() == 1 {
            out.entry(*gpus.iter().next().unwrap_or(&0)).or_default().push(pid);
        }
    }
    out
}

fn write(path: &Path, value: &str) -> Result<(), RankError> {
    std::fs::write(path, value).map_err(|source| RankError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn mkdir(path: &Path) -> Result<(), RankError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(RankError::Create { path: path.to_path_buf(), source }),
    }
}

fn has_word(text: &str, word: &str) -> bool {
    text.split_whitespace().any(|w| w == word)
}

/// Moves a process into a cgroup; one that ended meanwhile is no error.
fn move_pid(dir: &Path, pid: i32) -> Result<(), RankError> {
    match std::fs::write(dir.join("cgroup.procs"), pid.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        Err(source) => {
            Err(RankError::Write { path: dir.join("cgroup.procs"), value: pid.to_string(), source })
        }
    }
}

/// v2: the engine's processes into the leaf `main`, then `cpuset` enabled for the engine's
/// children (asking the parent for it first). Idempotent.
pub fn prepare_v2(engine: &Path) -> Result<(), RankError> {
    let leaf = engine.join(MAIN_LEAF);
    mkdir(&leaf)?;
    // Forks racing the move land in the engine's cgroup again: a few rounds empty it.
    for _ in 0..10 {
        let left = parse_procs(&read(&engine.join("cgroup.procs")));
        if left.is_empty() {
            break;
        }
        for pid in left {
            move_pid(&leaf, pid)?;
        }
    }
    if !has_word(&read(&engine.join("cgroup.controllers")), "cpuset") {
        if let Some(parent) = engine.parent() {
            if has_word(&read(&parent.join("cgroup.controllers")), "cpuset") {
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+cpuset");
            }
        }
    }
    if !has_word(&read(&engine.join("cgroup.controllers")), "cpuset") {
        return Err(RankError::NoCpuset { path: engine.to_path_buf() });
    }
    if !has_word(&read(&engine.join("cgroup.subtree_control")), "cpuset") {
        write(&engine.join("cgroup.subtree_control"), "+cpuset")?;
    }
    Ok(())
}

/// v1: the engine's cpuset cgroup, its CPUs and memory nodes those of its parent (a v1 cpuset
/// takes no process until both are set). Idempotent.
pub fn prepare_v1(engine: &Path) -> Result<(), RankError> {
    let parent = engine.parent().unwrap_or(engine);
    if !parent.join("cpuset.cpus").is_file() {
        return Err(RankError::NoCpuset { path: parent.to_path_buf() });
    }
    mkdir(engine)?;
    for f in ["cpuset.cpus", "cpuset.mems"] {
        if read(&engine.join(f)).trim().is_empty() {
            write(&engine.join(f), read(&parent.join(f)).trim())?;
        }
    }
    Ok(())
}

/// Makes the rank's cgroup with its CPUs and memory node and moves `pids` into it; returns
/// its directory.
pub fn bind_rank(target: &Target, rank: &RankTarget, pids: &[i32]) -> Result<PathBuf, RankError> {
    let dir = target.rank_dir(rank.rank);
    match target {
        Target::V2 { engine } => prepare_v2(engine)?,
        Target::V1 { engine } => prepare_v1(engine)?,
    }
    mkdir(&dir)?;
    write(&dir.join("cpuset.cpus"), &rank.cpus.to_list())?;
    let mems = match (rank.memory_node, target) {
        (Some(n), _) => Some(n.to_string()),
        // v1 needs mems set; without a memory policy the rank keeps its parent's.
        (None, Target::V1 { engine }) => Some(read(&engine.join("cpuset.mems")).trim().to_string()),
        (None, Target::V2 { .. }) => None,
    };
    if let Some(m) = mems {
        write(&dir.join("cpuset.mems"), &m)?;
    }
    if matches!(target, Target::V1 { .. }) && rank.memory_node.is_some() {
        write(&dir.join("cpuset.memory_migrate"), "1")?;
    }
    for &pid in pids {
        move_pid(&dir, pid)?;
    }
    Ok(dir)
}

/// Moves the pages of `pid` from every other node to `node` (`migrate_pages(2)`); the pages it
/// could not move (`Err` when the call failed: no such process, not permitted).
pub fn migrate(pid: i32, node: u32) -> std::io::Result<u64> {
    const BITS: usize = 1024;
    let words = BITS / 64;
    let mut old = vec![u64::MAX; words];
    let mut new = vec![0u64; words];
    let (w, b) = ((node as usize) / 64, node % 64);
    if w >= words {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    old[w] &= !(1u64 << b);
    new[w] |= 1u64 << b;
    // SAFETY: both masks are `BITS` bits long, as `maxnode` says, and outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_migrate_pages,
            pid as libc::c_long,
            BITS as libc::c_ulong,
            old.as_ptr(),
            new.as_ptr(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// A rank bound in this engine life.
#[derive(Debug, Clone)]
struct Bound {
    pids: Vec<i32>,
    source: &'static str,
    pages_left: Option<u64>,
}

/// Binds the ranks of one engine: state kept across binding checks and engine lives.
pub struct RankBinder {
    pub ranks: Vec<RankTarget>,
    /// The vendor library asked first for pid -> GPU ([`source`]); `None`: the tool only.
    pub library: Option<Box<dyn ProcessLibrary>>,
    pub tool: Option<GpuTool>,
    pub runner: Box<dyn CommandRunner + Send + Sync>,
    pub tool_timeout: Duration,
    /// Cgroup root (`/sys/fs/cgroup`) and the agent's `/proc/self/cgroup` text.
    pub cgroup_root: PathBuf,
    pub self_cgroup: String,
    pub proc_root: PathBuf,
    /// The pids bound per rank, so a worker is moved once; a new pid (restart) is bound again.
    bound: BTreeMap<u32, Bound>,
    warned: BTreeSet<String>,
    last_pids: BTreeSet<i32>,
    last: Vec<RankStatus>,
    /// The v1 engine-named `cpuset` cgroups made, removed by [`RankBinder::release`].
    made_v1: BTreeSet<PathBuf>,
}

impl RankBinder {
    pub fn new(
        ranks: Vec<RankTarget>,
        tool: Option<GpuTool>,
        runner: Box<dyn CommandRunner + Send + Sync>,
        tool_timeout: Duration,
    ) -> Self {
        Self {
            ranks,
            library: None,
            tool,
            runner,
            tool_timeout,
            cgroup_root: PathBuf::from(crate::supervise::cgroup::CGROUP_ROOT),
            self_cgroup: std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
            proc_root: PathBuf::from("/proc"),
            bound: BTreeMap::new(),
            warned: BTreeSet::new(),
            last_pids: BTreeSet::new(),
            last: Vec::new(),
            made_v1: BTreeSet::new(),
        }
    }

    /// With the vendor library of `stack` ([`open_library`]) asked first; without one (not
    /// installed, no driver) the tool alone, said once in the log.
    pub fn with_library_of(mut self, stack: GpuStack) -> Self {
        match open_library(stack) {
            Ok(lib) => {
                tracing::info!(
                    library = lib.name(),
                    "per-rank binding: pid -> GPU from the library"
                );
                self.library = Some(lib);
            }
            Err(e) => tracing::info!(
                "per-rank binding: no vendor library ({e}); pid -> GPU from the vendor tool"
            ),
        }
        self
    }

    /// The engine stopped: removes the v1 `cpuset` cgroups the binder made for it (the rank
    /// cgroups, then the engine-named one; on v2 they go with the engine's cgroup, which the
    /// runtime removes) and forgets the bound workers, so a next engine is bound afresh. A
    /// cgroup that still holds a process stays, with a warning.
    pub fn release(&mut self) {
        for engine in std::mem::take(&mut self.made_v1) {
            let ranks = std::fs::read_dir(&engine)
                .map(|it| it.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
                .unwrap_or_else(|_| Vec::new());
            for dir in ranks.iter().chain(std::iter::once(&engine)) {
                match std::fs::remove_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => self.warn(&format!(
                        "per-rank binding: removing {} after the engine stopped: {e}",
                        dir.display()
                    )),
                }
            }
        }
        self.bound.clear();
        self.last_pids.clear();
        self.last.clear();
    }

    /// Warns once per distinct message.
    fn warn(&mut self, msg: &str) {
        if self.warned.insert(msg.to_string()) {
            tracing::warn!("{msg}");
        }
    }

    /// One binding pass over the engine's `pids` (its cgroup's or tree's) under `containment`:
    /// asks the vendor library or tool, binds each rank whose workers are new, and returns
    /// every rank's state.
    pub fn tick(&mut self, pids: &[i32], containment: Option<&str>) -> Vec<RankStatus> {
        let engine: BTreeSet<i32> = pids.iter().copied().collect();
        let all_bound = !self.last.is_empty() && self.last.iter().all(|s| s.cgroup.is_some());
        if engine == self.last_pids && all_bound {
            // Every rank bound and the engine unchanged: only the memory figures move.
            return self.refresh();
        }
        self.last_pids = engine.clone();
        let gpus: Vec<u32> = self.ranks.iter().map(|r| r.gpu).collect();
        let reading = source::read(
            self.library.as_deref(),
            self.tool.as_ref(),
            self.runner.as_ref(),
            self.tool_timeout,
            &gpus,
        );
        if let Some(why) = &reading.fell_back {
            self.warn(&format!("per-rank binding: {why}; pid -> GPU from the vendor tool"));
        }
        let table = reading.processes.as_ref().map(|(t, _)| t).map_err(Clone::clone);
        let read_from = reading.processes.as_ref().ok().map(|(_, s)| *s);
        let found = match &table {
            Ok(t) => join(t, &engine),
            Err(_) => BTreeMap::new(),
        };
        let target = match containment {
            Some(c) => target(c, &self.cgroup_root, &parse_proc_cgroup(&self.self_cgroup)),
            // A container: its cgroup, from a worker's own (one bound earlier when this
            // reading lists none).
            None => {
                let v2 = self.cgroup_root.join("cgroup.controllers").is_file();
                found
                    .values()
                    .flatten()
                    .chain(self.bound.values().flat_map(|b| b.pids.iter()))
                    .find_map(|pid| {
                        let text = std::fs::read_to_string(
                            self.proc_root.join(pid.to_string()).join("cgroup"),
                        )
                        .ok()?;
                        container_target(&self.cgroup_root, v2, &parse_proc_cgroup(&text))
                    })
                    .ok_or_else(|| RankError::NoEngineCgroup { containment: "container".into() })
            }
        };
        let mut out = Vec::new();
        for rank in self.ranks.clone() {
            let mut st = RankStatus {
                rank: rank.rank,
                gpu: rank.gpu,
                node: rank.node,
                cpus: rank.cpus.to_list(),
                memory_node: rank.memory_node,
                ..RankStatus::default()
            };
            let mut workers: Vec<i32> = found.get(&rank.gpu).cloned().unwrap_or_default();
            st.source = read_from.map(str::to_string);
            if workers.is_empty() {
                // Bound, its workers still the engine's, but not listed now: still bound.
                let kept = self
                    .bound
                    .get(&rank.rank)
                    .filter(|b| !b.pids.is_empty() && b.pids.iter().all(|p| engine.contains(p)));
                if let Some(b) = kept {
                    workers = b.pids.clone();
                    st.source = Some(b.source.to_string());
                }
            }
            st.pids = workers.clone();
            if workers.is_empty() {
                st.problem = Some(match &table {
                    Err(e) => e.clone(),
                    Ok(_) => format!(
                        "GPU{} shows no process of the engine yet in the vendor's process list",
                        rank.gpu
                    ),
                });
                out.push(st);
                continue;
            }
            let target = match &target {
                Ok(t) => t,
                Err(e) => {
                    let msg = e.to_string();
                    self.warn(&msg);
                    st.problem = Some(msg);
                    out.push(st);
                    continue;
                }
            };
            let dir = target.rank_dir(rank.rank);
            if let Some(b) = self.bound.get(&rank.rank).filter(|b| b.pids == workers) {
                st.pages_left = b.pages_left;
            } else {
                let source = read_from.unwrap_or("?");
                if let Target::V1 { engine } = target {
                    self.made_v1.insert(engine.clone());
                }
                match bind_rank(target, &rank, &workers) {
                    Ok(_) => {
                        let mut left = 0;
                        if let Some(node) = rank.memory_node {
                            for &pid in &workers {
                                match migrate(pid, node) {
                                    Ok(n) => left += n,
                                    Err(e) => self.warn(&format!(
                                        "rank {} (GPU{}): migrate_pages of pid {pid} to node {node}: {e}",
                                        rank.rank, rank.gpu
                                    )),
                                }
                            }
                        }
                        if left > 0 {
                            self.warn(&format!(
                                "rank {} (GPU{}): migrate_pages left {left} page(s) of pids {workers:?} off node {}",
                                rank.rank,
                                rank.gpu,
                                rank.memory_node.unwrap_or_default()
                            ));
                        }
                        tracing::info!(
                            rank = rank.rank,
                            gpu = rank.gpu,
                            pids = ?workers,
                            source,
                            cgroup = %dir.display(),
                            cpus = %rank.cpus.to_list(),
                            mems = ?rank.memory_node,
                            "rank bound to its GPU's node"
                        );
                        st.pages_left = Some(left);
                        let b = Bound { pids: workers.clone(), source, pages_left: Some(left) };
                        self.bound.insert(rank.rank, b);
                    }
                    Err(e) => {
                        let msg = format!("rank {} (GPU{}): {e}", rank.rank, rank.gpu);
                        self.warn(&msg);
                        st.problem = Some(msg);
                        out.push(st);
                        continue;
                    }
                }
            }
            st.cgroup = Some(dir.display().to_string());
            let audit = crate::supervise::placement::audit(&self.proc_root, &workers);
            st.memory_by_node = audit.by_node;
            out.push(st);
        }
        self.last = out.clone();
        out
    }

    /// The last states with their workers' memory per node read again.
    fn refresh(&mut self) -> Vec<RankStatus> {
        for st in &mut self.last {
            st.memory_by_node =
                crate::supervise::placement::audit(&self.proc_root, &st.pids).by_node;
        }
        self.last.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(gpu: u32, pid: u32) -> GpuProcess {
        GpuProcess { gpu, pid, name: "ray::RayWorkerWrapper".into(), memory_mib: None, line: 1 }
    }

    fn rank(r: u32, gpu: u32, node: u32, cpus: &str) -> RankTarget {
        RankTarget { rank: r, gpu, node, cpus: cpus.parse().unwrap(), memory_node: Some(node) }
    }

    #[test]
    fn join_keeps_engine_pids_on_one_gpu_only() {
        let table = [proc(0, 10), proc(1, 11), proc(1, 99), proc(0, 12), proc(1, 12)];
        let engine: BTreeSet<i32> = [10, 11, 12].into();
        let got = join(&table, &engine);
        assert_eq!(got, [(0, vec![10]), (1, vec![11])].into());
        assert!(join(&table, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn target_from_the_containment() {
        let root = Path::new("/sys/fs/cgroup");
        let own = parse_proc_cgroup("3:cpuset:/agent.slice\n8:pids:/\n0::/\n");
        assert_eq!(
            target("cgroup-v2 /sys/fs/cgroup/nodeagent-0-ab", root, &own).unwrap(),
            Target::V2 { engine: "/sys/fs/cgroup/nodeagent-0-ab".into() }
        );
        let v1 = target("cgroup-v1 /sys/fs/cgroup/pids/nodeagent-0-ab", root, &own).unwrap();
        assert_eq!(
            v1,
            Target::V1 { engine: "/sys/fs/cgroup/cpuset/agent.slice/nodeagent-0-ab".into() }
        );
        assert_eq!(
            v1.rank_dir(3),
            Path::new("/sys/fs/cgroup/cpuset/agent.slice/nodeagent-0-ab/rank-3")
        );
        let e = target("proc-walk", root, &own).unwrap_err().to_string();
        assert_eq!(
            e,
            "per-rank binding: no cgroup of the engine to put ranks under (containment proc-walk)"
        );
    }

    #[test]
    fn a_containers_cgroup_is_taken_from_its_worker() {
        let root = Path::new("/sys/fs/cgroup");
        let v1 = parse_proc_cgroup("3:cpuset:/docker/abc/rank-1\n8:pids:/docker/abc\n");
        assert_eq!(
            container_target(root, false, &v1),
            Some(Target::V1 { engine: "/sys/fs/cgroup/cpuset/docker/abc".into() })
        );
        let v2 = parse_proc_cgroup("0::/system.slice/docker-abc.scope/main\n");
        assert_eq!(
            container_target(root, true, &v2),
            Some(Target::V2 { engine: "/sys/fs/cgroup/system.slice/docker-abc.scope".into() })
        );
        assert_eq!(container_target(root, true, &parse_proc_cgroup("0::/\n")), None);
    }

    #[test]
    fn v2_moves_the_engine_into_main_and_the_worker_into_its_rank() {
        let dir = tempfile::tempdir().unwrap();
        let engine = dir.path().join("nodeagent-0-ab");
        std::fs::create_dir(&engine).unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "cpuset cpu memory pids\n").unwrap();
        std::fs::write(engine.join("cgroup.controllers"), "cpuset cpu memory pids\n").unwrap();
        std::fs::write(engine.join("cgroup.subtree_control"), "").unwrap();
        // A temp dir is no cgroupfs: writing cgroup.procs replaces the file; an empty engine
        // cgroup.procs stands for "every process moved".
        std::fs::write(engine.join("cgroup.procs"), "").unwrap();
        let t = Target::V2 { engine: engine.clone() };
        let d = bind_rank(&t, &rank(1, 5, 1, "8-11"), &[4242]).unwrap();
        assert_eq!(d, engine.join("rank-1"));
        assert_eq!(read(&d.join("cpuset.cpus")), "8-11");
        assert_eq!(read(&d.join("cpuset.mems")), "1");
        assert_eq!(read(&d.join("cgroup.procs")), "4242");
        assert_eq!(read(&engine.join("cgroup.subtree_control")), "+cpuset");
        assert!(engine.join(MAIN_LEAF).is_dir());
    }

    #[test]
    fn v2_without_a_delegated_cpuset_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let engine = dir.path().join("e");
        std::fs::create_dir(&engine).unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::write(engine.join("cgroup.controllers"), "memory pids\n").unwrap();
        let e = bind_rank(&Target::V2 { engine: engine.clone() }, &rank(0, 0, 0, "0-3"), &[1])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "no cgroup v2 cpuset controller delegated to {}",
                engine.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn v1_copies_the_parent_cpuset_then_sets_the_rank_with_memory_migrate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cpuset.cpus"), "0-31\n").unwrap();
        std::fs::write(dir.path().join("cpuset.mems"), "0-1\n").unwrap();
        let engine = dir.path().join("nodeagent-0-ab");
        let t = Target::V1 { engine: engine.clone() };
        let d = bind_rank(&t, &rank(0, 2, 0, "0-7"), &[77]).unwrap();
        assert_eq!(read(&engine.join("cpuset.cpus")), "0-31");
        assert_eq!(read(&engine.join("cpuset.mems")), "0-1");
        assert_eq!(read(&d.join("cpuset.cpus")), "0-7");
        assert_eq!(read(&d.join("cpuset.mems")), "0");
        assert_eq!(read(&d.join("cpuset.memory_migrate")), "1");
        assert_eq!(read(&d.join("cgroup.procs")), "77");
    }

    /// A library answering from a shared list (`None`: failing).
    struct Lib(std::sync::Arc<std::sync::Mutex<Option<Vec<GpuProcess>>>>);

    impl ProcessLibrary for Lib {
        fn name(&self) -> &'static str {
            "libmxsml"
        }
        fn processes(&self, _: &[u32]) -> Result<Vec<GpuProcess>, String> {
            self.0.lock().unwrap().clone().ok_or_else(|| "libmxsml: GPU 0: lost".to_string())
        }
    }

    #[test]
    fn a_containers_bound_rank_stays_bound_when_no_reading_lists_its_worker() {
        // Pids above PID_MAX_LIMIT: no real process is touched (migrate_pages: ESRCH).
        let (root, procs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let scope = root.path().join("system.slice/docker-abc.scope");
        std::fs::create_dir_all(&scope).unwrap();
        for d in [root.path(), scope.parent().unwrap(), scope.as_path()] {
            std::fs::write(d.join("cgroup.controllers"), "cpuset cpu memory pids\n").unwrap();
        }
        std::fs::write(scope.join("cgroup.subtree_control"), "").unwrap();
        std::fs::write(scope.join("cgroup.procs"), "").unwrap();
        std::fs::create_dir(procs.path().join("5000001")).unwrap();
        std::fs::write(procs.path().join("5000001/cgroup"), "0::/system.slice/docker-abc.scope\n")
            .unwrap();
        let list = std::sync::Arc::new(std::sync::Mutex::new(Some(vec![proc(0, 5_000_001)])));
        let mut b = RankBinder::new(
            vec![rank(0, 0, 0, "0-1")],
            None,
            Box::new(crate::host::runner::SystemRunner),
            Duration::ZERO,
        );
        b.library = Some(Box::new(Lib(list.clone())));
        b.cgroup_root = root.path().to_path_buf();
        b.proc_root = procs.path().to_path_buf();
        let s = b.tick(&[5_000_000, 5_000_001], None);
        let dir = scope.join("rank-0").display().to_string();
        assert_eq!((s[0].cgroup.as_deref(), s[0].problem.as_deref()), (Some(&*dir), None));
        assert_eq!(s[0].source.as_deref(), Some("libmxsml"));
        assert_eq!(read(&scope.join("rank-0/cgroup.procs")), "5000001");
        // The library fails and the engine forked: the worker is still the engine's, so its
        // rank is still bound, in the container's cgroup found from the bound worker.
        *list.lock().unwrap() = None;
        let s = b.tick(&[5_000_000, 5_000_001, 5_000_002], None);
        assert_eq!((s[0].cgroup.as_deref(), s[0].problem.as_deref()), (Some(&*dir), None));
        assert_eq!(
            (s[0].pids.as_slice(), s[0].source.as_deref()),
            (&[5_000_001][..], Some("libmxsml"))
        );
        // The worker left the engine: no rank worker any more, and why is said.
        let s = b.tick(&[5_000_000, 5_000_002], None);
        assert_eq!(s[0].cgroup, None);
        assert_eq!(
            s[0].problem.as_deref(),
            Some(
                "libmxsml's process list failed: libmxsml: GPU 0: lost; no vendor tool \
                 (nvidia-smi, mx-smi) found to tell which pid runs on which GPU"
            )
        );
    }

    #[test]
    fn migrate_pages_of_this_process_to_node_0_succeeds() {
        // Every Linux host has node 0; moving this process's pages there is always allowed.
        // The count of pages not moved is not asserted: the other test threads of this
        // process fault pages in and out meanwhile, and the kernel counts those it skipped.
        assert!(migrate(std::process::id() as i32, 0).is_ok());
        let e = migrate(i32::MAX, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH), "{e}");
        let e = migrate(std::process::id() as i32, 4096).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    }
}
