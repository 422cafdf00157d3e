//! Pure planning: topology + request -> which GPUs form each serving instance, which CPUs and
//! memory nodes each instance is bound to, and why (with evidence). No I/O here.
//!
//! The output types below are a contract: `plan --json` prints `Plan` as is, `serve` launches
//! `Instance::binding`, and other tools read the JSON (see README, "JSON contract").

use serde::{Deserialize, Serialize};

use crate::binding::Binding;
use crate::host::cpuset::CpuSet;

/// The whole answer of `nodeagent plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub gpus: Vec<PlanGpu>,
    pub numa_nodes: Vec<PlanNode>,
    pub instances: Vec<Instance>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanGpu {
    pub index: u32,
    pub name: Option<String>,
    pub bus_id: Option<String>,
    pub numa_node: Option<u32>,
    /// cpulist string, e.g. "0-15"; `None` when unknown.
    pub cpu_affinity: Option<CpuSet>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanNode {
    pub id: u32,
    pub cpus: CpuSet,
    pub memory_total_mb: Option<u64>,
    pub memory_free_mb: Option<u64>,
    /// Distance to each node, keyed by node id.
    pub distances: std::collections::BTreeMap<u32, u32>,
}

/// One serving instance (one `vllm serve` process tree) and its binding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub gpus: Vec<u32>,
    pub cpunodebind: Vec<u32>,
    pub membind: Vec<u32>,
    /// The CPUs the instance may use (cpulist string).
    pub cpus: CpuSet,
    /// Full long-form prefix (`numactl --cpunodebind=0 --membind=0`), `None` when no binding
    /// is recommended.
    pub numactl: Option<String>,
    /// Short form (`numactl -N0 -m0`).
    pub numactl_short: Option<String>,
    /// Container equivalent (`--cpuset-cpus=0-15`, `--cpuset-mems=0`).
    pub docker_args: Vec<String>,
    /// What `serve` applies.
    pub binding: Binding,
    /// Why, with evidence ("mx-smi-topo-m.txt line 3: GPU0 Node Affinity 0").
    pub reasons: Vec<String>,
}
