//! `nodeagent doctor`'s checks: host settings that bear on a NUMA binding (automatic NUMA
//! balancing, transparent huge pages, the CPU frequency governor, the GPUs' interrupts, their
//! PCIe links, offline CPUs, memory headroom, an engine running outside its plan), each judged
//! `pass | warn | fail | unknown` with the evidence and the command that fixes it.
//!
//! Pure over two plain inputs: [`HostSettings`] (read from a root dir by [`read`]: `/` live or
//! a snapshot's `sysfs/` and `procfs/`) and [`Scope`] (what the plan binds: CPUs, memory nodes,
//! GPUs, plus the serve status when one answered). It does not gather topology, plan, ask the
//! status socket or print: `cmd/doctor.rs` and `cmd/plan.rs` do. The JSON contract
//! (`{"checks": [{"name", "status", "detail", "fix"}]}`) and every check are documented in
//! docs/doctor.md.

mod checks;
pub mod read;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::host::cpuset::CpuSet;

pub use checks::run;
pub use read::{read, HostSettings, ReadError};

/// The stable check names, in report order (`doctor --json`'s `name`).
pub const CHECK_NAMES: [&str; 8] = [
    "numa_balancing",
    "transparent_hugepages",
    "cpu_governor",
    "gpu_irq_affinity",
    "pcie_link",
    "offline_cpus",
    "memory_headroom",
    "engine_outside_plan",
];

/// A check's verdict. `unknown`: the evidence could not be read (no such file on this
/// kernel, a snapshot without it, nothing to check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Unknown,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Unknown => "unknown",
        })
    }
}

/// One check's result: `doctor --json`'s `checks[]` element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// One of [`CHECK_NAMES`].
    pub name: String,
    pub status: Status,
    /// The evidence, one line: the files read and what they said.
    pub detail: String,
    /// The command that fixes it; `None` when there is nothing to fix.
    pub fix: Option<String>,
}

/// `doctor --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Names of the failed checks (the exit status is 1 when there is any).
    pub fn failed(&self) -> Vec<&str> {
        self.checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.name.as_str()).collect()
    }
}

/// A NUMA node as the checks see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeNode {
    pub id: u32,
    pub cpus: CpuSet,
    pub memory_total_mb: Option<u64>,
    pub memory_free_mb: Option<u64>,
}

/// A GPU as the checks see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeGpu {
    pub index: u32,
    /// sysfs form, `0000:0e:00.0`.
    pub bus_id: Option<String>,
    pub node: Option<u32>,
}

/// What the running engine looks like (from `nodeagent status`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineView {
    /// The CPUs of the binding serve applied (`None`: unbound).
    pub cpus: Option<CpuSet>,
    /// Memory nodes of the binding serve applied.
    pub memory_nodes: Vec<u32>,
    /// The binding check's verdict: `None` when it has not run yet.
    pub check_ok: Option<bool>,
    /// `pid comm: why` of every process outside the binding.
    pub escapes: Vec<String>,
}

/// What the plan binds, and where. `bound_cpus: None` means no binding is planned (no GPUs,
/// or a plan that recommends none): checks then look at every online CPU.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scope {
    pub bound_cpus: Option<CpuSet>,
    pub bound_nodes: Vec<u32>,
    /// Every planned instance's binding, as (CPUs, memory nodes), to tell a running engine's
    /// binding from one the plan gives.
    pub planned: Vec<(Option<CpuSet>, Vec<u32>)>,
    pub nodes: Vec<ScopeNode>,
    pub gpus: Vec<ScopeGpu>,
    /// Host memory the engine needs (`--host-memory-gb`).
    pub host_memory_gb: Option<f64>,
    /// The engine, when a serve status answered.
    pub engine: Option<EngineView>,
    /// Why there is no engine view (`no agent answers at /run/nodeagent`).
    pub engine_note: String,
}

impl Scope {
    pub fn node(&self, id: u32) -> Option<&ScopeNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// Per-node CPU map, for the checks' evidence lines.
pub(crate) fn node_cpus(scope: &Scope) -> BTreeMap<u32, CpuSet> {
    scope.nodes.iter().map(|n| (n.id, n.cpus.clone())).collect()
}

/// The scope of a plan on a topology: the union of the instances' CPUs and memory nodes, every
/// GPU with its node, every node with its memory. `plan: None` (planning failed, e.g. no GPUs)
/// gives a scope without a binding.
pub fn scope(
    topo: &crate::topology::Topology,
    plan: Option<&crate::plan::Plan>,
    host_memory_gb: Option<f64>,
) -> Scope {
    let mut s = Scope {
        nodes: topo
            .nodes
            .iter()
            .map(|n| ScopeNode {
                id: n.id,
                cpus: n.cpus.value.clone(),
                memory_total_mb: n.memory_total_mb.as_ref().map(|m| m.value),
                memory_free_mb: n.memory_free_mb.as_ref().map(|m| m.value),
            })
            .collect(),
        gpus: topo
            .gpus
            .iter()
            .map(|g| ScopeGpu {
                index: g.index,
                bus_id: g.bus_id.clone(),
                node: g.numa_node.as_ref().map(|n| n.value),
            })
            .collect(),
        host_memory_gb,
        ..Scope::default()
    };
    for inst in plan.map(|p| p.instances.as_slice()).unwrap_or_default() {
        let b = &inst.binding;
        s.planned.push((b.cpus.clone(), b.memory_nodes()));
        if let Some(cpus) = &b.cpus {
            s.bound_cpus = Some(s.bound_cpus.take().unwrap_or_default().union(cpus));
        }
        for n in b.memory_nodes() {
            if !s.bound_nodes.contains(&n) {
                s.bound_nodes.push(n);
            }
        }
    }
    s.bound_nodes.sort_unstable();
    s
}

/// The lines `plan` prints on stderr: every check that warns or fails, except the running
/// engine's (plan asks no agent), one line each: `doctor: numa_balancing fail: ... (fix: ...)`.
pub fn binding_warnings(checks: &[Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| matches!(c.status, Status::Warn | Status::Fail))
        .filter(|c| c.name != "engine_outside_plan")
        .map(|c| {
            let fix = c.fix.as_ref().map_or(String::new(), |f| format!(" (fix: {f})"));
            format!("doctor: {} {}: {}{fix}", c.name, c.status, c.detail)
        })
        .collect()
}
