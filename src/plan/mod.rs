//! Pure planning: topology + request -> which GPUs form each serving instance, which CPUs and
//! memory nodes each instance is bound to, and why (with evidence). No I/O here.
//!
//! The output types below are a contract: `plan --json` prints `Plan` as is, `serve` launches
//! `Instance::binding`, and other tools read the JSON (docs/probe-and-plan.md, "JSON contract", and docs/plan.schema.json).
//!
//! Rules, in the order they apply to one instance:
//! 1. A GPU whose NUMA node no source knows (VM, `numa_node` -1, `N/A`): no binding at all.
//!    Guessing node 0 can cost more than not binding (the seed lost up to 23 % bound wrong).
//! 2. The CPU side is the nodes the GPUs hang off. A node without CPUs (a GPU memory node,
//!    `GPU NUMA ID`) is never a CPU node: the nearest node with CPUs stands in.
//! 3. GPUs on several nodes in one instance: bind to the union, and say so.
//! 4. A memoryless node (`size: 0 MB`): `numactl -N` fails on it (numactl issue 165), so CPUs
//!    are bound by list (`--physcpubind`) and memory to the nearest node that has memory.
//! 5. Free memory on the memory nodes below `host_memory_gb`: `--preferred` instead of
//!    `--membind`, so allocations spill over instead of failing.
//! 6. Instances that got the same CPUs (several instances on one node) get disjoint parts of
//!    them, sized by GPU count (`cores.rs`), bound by CPU list; `share_cores` keeps the union.
//!    With the host's cores known (`Topology::cores`) the cut is by whole cores, so SMT
//!    siblings stay in one part; without, by ranges, and the reason says siblings were unknown.
//! 7. A reserve (`reserve_cpus`, applied before rule 6): each node's first CPUs (whole cores
//!    where known) are left out of every instance, for the OS, the agent, tokenizers and load
//!    generators; an instance left no CPU is an error.
//!
//! `bind_instance` runs one function per rule (`gpu_nodes`, `cpu_nodes`, `cpus_of`,
//! `memory_nodes`, `memory_policy`). `PlanError` names the request value or host fact at
//! fault, never a command-line flag: `cmd::plan` tells it in flag words.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::binding::{Binding, MemPolicy};
use crate::host::cpuset::CpuSet;
use crate::host::facts::Vendor;
use crate::topology::{Fact, Gpu, Node, Topology};

pub mod cores;
pub mod ranks;

/// The whole answer of `nodeagent plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub gpus: Vec<PlanGpu>,
    pub numa_nodes: Vec<PlanNode>,
    pub instances: Vec<Instance>,
    pub warnings: Vec<String>,
    /// GPU vendor of the host.
    #[serde(default)]
    pub vendor: Option<Vendor>,
    /// The raw outputs the plan was built from (snapshot file names).
    #[serde(default)]
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanGpu {
    pub index: u32,
    pub name: Option<String>,
    pub bus_id: Option<String>,
    pub numa_node: Option<u32>,
    /// cpulist string, e.g. "0-15"; `None` when unknown.
    pub cpu_affinity: Option<CpuSet>,
    /// The GPU's own memory node (`GPU NUMA ID`), when it has one.
    #[serde(default)]
    pub memory_node: Option<u32>,
    #[serde(default)]
    pub memory_total_mib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanNode {
    pub id: u32,
    pub cpus: CpuSet,
    pub memory_total_mb: Option<u64>,
    pub memory_free_mb: Option<u64>,
    /// Distance to each node, keyed by node id.
    pub distances: std::collections::BTreeMap<u32, u32>,
    /// True for a GPU's own memory node: CPUs are never bound to it.
    #[serde(default)]
    pub gpu_memory: bool,
}

/// One serving instance (one `vllm serve` process tree) and its binding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub gpus: Vec<u32>,
    /// The NUMA nodes the instance's GPUs hang off (empty when unknown).
    #[serde(default)]
    pub numa_nodes: Vec<u32>,
    pub cpunodebind: Vec<u32>,
    /// Memory nodes of the policy (`--membind`, or the one `--preferred` node).
    pub membind: Vec<u32>,
    /// `bind`, `preferred` or `default` (no memory policy).
    #[serde(default)]
    pub memory_policy: String,
    /// The CPUs the instance may use (cpulist string); every CPU when unbound.
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
    /// The per-rank layout (`ranks.rs`), only for a bound instance whose GPUs hang off several
    /// nodes: each rank's worker is bound to its own GPU's node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranks: Vec<ranks::Rank>,
}

/// How to split the chosen GPUs into instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Split {
    /// One instance over all chosen GPUs (tensor parallel = GPU count), as the seed ran.
    #[default]
    One,
    /// This many instances, GPUs grouped by node.
    Instances(u32),
    /// Instances of this many GPUs each (tensor-parallel size).
    Tp(u32),
}

/// What the user asks `plan` for (domain form of the CLI's `PlanArgs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanRequest {
    /// GPU indexes to serve with; `None` = all.
    pub gpus: Option<Vec<u32>>,
    pub split: Split,
    /// Host memory the engine needs (GB, 1 GB = 1000 MB); below it on the bound nodes,
    /// `--preferred` replaces `--membind`. `None` = do not check.
    pub host_memory_gb: Option<f64>,
    /// Instances that share CPUs keep the shared set (rule 6 off).
    pub share_cores: bool,
    /// CPUs per NUMA node left out of every instance (rule 7); 0 = none.
    pub reserve_cpus: u32,
}

/// Why no plan: each variant names the request value or host fact at fault, never a flag;
/// `cmd::plan` tells them in the words of the command line (`--tp 3: ...`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("no GPUs found on this host (sources: {sources})")]
    NoGpus { sources: String },
    /// A device the user named as a GPU is not there: a typo must not silently plan for the
    /// other GPUs.
    #[error("GPU PCI device {bus_id}: {problem}")]
    GpuPciNotFound { bus_id: String, problem: String },
    #[error("there is no GPU {index} (GPUs: {known})")]
    UnknownGpu { index: u32, known: String },
    #[error("GPU {index} is listed twice")]
    DuplicateGpu { index: u32 },
    #[error("0 instances: must be at least 1")]
    ZeroInstances,
    #[error("tensor-parallel size 0: must be at least 1")]
    ZeroTp,
    #[error("{count} GPUs cannot be split into {instances} equal instances")]
    Uneven { count: usize, instances: u32 },
    #[error("tensor-parallel size {tp}: {count} GPUs cannot be split into instances of {tp}")]
    UnevenTp { count: usize, tp: u32 },
    #[error("host memory {value} GB: must be a positive number")]
    BadMemory { value: f64 },
    #[error("a reserve of {count} CPU(s) per NUMA node leaves the instance of GPUs {gpus} no CPU (its CPUs {cpus} are all reserved)")]
    ReserveLeavesNoCpu { count: u32, gpus: String, cpus: String },
}

fn join<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// Plans the binding of every instance. Pure and deterministic.
pub fn plan(topo: &Topology, req: &PlanRequest) -> Result<Plan, PlanError> {
    if let Some(v) = req.host_memory_gb {
        if !(v.is_finite() && v > 0.0) {
            return Err(PlanError::BadMemory { value: v });
        }
    }
    if let Some(m) = topo.missing_gpu_pci.first() {
        return Err(PlanError::GpuPciNotFound { bus_id: m.bus_id.clone(), problem: m.problem() });
    }
    let chosen = choose_gpus(topo, req.gpus.as_deref())?;
    let count = chosen.len();
    let instances = instance_count(count, req.split)?;
    // Group by node: sort by (node, index) and cut into equal runs, so GPUs of one node stay
    // together whenever the sizes allow it. Unknown nodes sort last.
    let mut sorted = chosen.clone();
    sorted.sort_by_key(|g| (g.numa_node.as_ref().map_or(u32::MAX, |n| n.value), g.index));
    let size = count / instances as usize;
    let warnings = topo.warnings.clone();
    let mut groups: Vec<Vec<&Gpu>> = sorted
        .chunks(size)
        .map(|group| {
            let mut group = group.to_vec();
            group.sort_by_key(|g| g.index);
            group
        })
        .collect();
    // Number instances in GPU order, as a user reads them.
    groups.sort_by_key(|g| g.first().map(|g| g.index));
    let mut instances: Vec<Instance> = groups.iter().map(|g| bind_instance(topo, g, req)).collect();
    reserve_cpus(topo, &mut instances, req.reserve_cpus)?;
    shared_cores(&mut instances, req.share_cores, topo.cores.as_ref());
    for (inst, group) in instances.iter_mut().zip(&groups) {
        rank_layout(topo, group, inst);
    }

    Ok(Plan {
        gpus: topo.gpus.iter().map(plan_gpu).collect(),
        numa_nodes: topo.nodes.iter().map(plan_node).collect(),
        instances,
        warnings,
        vendor: Some(topo.vendor),
        sources: topo.sources.clone(),
    })
}

/// The GPUs asked for (all when `wanted` is `None`), in the order asked; at least one.
fn choose_gpus<'a>(topo: &'a Topology, wanted: Option<&[u32]>) -> Result<Vec<&'a Gpu>, PlanError> {
    let chosen: Vec<&Gpu> = match wanted {
        Some(list) => {
            let mut seen = BTreeSet::new();
            let mut out = Vec::new();
            for &index in list {
                if !seen.insert(index) {
                    return Err(PlanError::DuplicateGpu { index });
                }
                let gpu = topo.gpu(index).ok_or_else(|| PlanError::UnknownGpu {
                    index,
                    known: join(topo.gpus.iter().map(|g| g.index)),
                })?;
                out.push(gpu);
            }
            out
        }
        None => topo.gpus.iter().collect(),
    };
    if chosen.is_empty() {
        let sources = if topo.sources.is_empty() { "none".into() } else { topo.sources.join(", ") };
        return Err(PlanError::NoGpus { sources });
    }
    Ok(chosen)
}

/// How many instances `count` GPUs make under `split`; every instance gets as many GPUs.
fn instance_count(count: usize, split: Split) -> Result<u32, PlanError> {
    match split {
        Split::One => Ok(1),
        Split::Instances(0) => Err(PlanError::ZeroInstances),
        Split::Tp(0) => Err(PlanError::ZeroTp),
        Split::Instances(n) if count % n as usize != 0 => {
            Err(PlanError::Uneven { count, instances: n })
        }
        Split::Instances(n) => Ok(n),
        Split::Tp(tp) if count % tp as usize != 0 => Err(PlanError::UnevenTp { count, tp }),
        Split::Tp(tp) => Ok((count / tp as usize) as u32),
    }
}

pub fn plan_gpu(g: &Gpu) -> PlanGpu {
    PlanGpu {
        index: g.index,
        name: g.name.clone(),
        bus_id: g.bus_id.clone(),
        numa_node: g.numa_node.as_ref().map(|n| n.value),
        cpu_affinity: g.cpu_affinity.as_ref().map(|c| c.value.clone()),
        memory_node: g.memory_node.as_ref().map(|n| n.value),
        memory_total_mib: g.memory_total_mib,
    }
}

pub fn plan_node(n: &Node) -> PlanNode {
    PlanNode {
        id: n.id,
        cpus: n.cpus.value.clone(),
        memory_total_mb: n.memory_total_mb.as_ref().map(|m| m.value),
        memory_free_mb: n.memory_free_mb.as_ref().map(|m| m.value),
        distances: n.distances.as_ref().map(|d| d.value.clone()).unwrap_or_default(),
        gpu_memory: n.gpu_memory,
    }
}

fn unbound(
    topo: &Topology,
    gpus: Vec<u32>,
    numa_nodes: Vec<u32>,
    reasons: Vec<String>,
) -> Instance {
    let binding = Binding::none();
    Instance {
        gpus,
        numa_nodes,
        cpunodebind: Vec::new(),
        membind: Vec::new(),
        memory_policy: "default".into(),
        cpus: topo.all_cpus(),
        numactl: None,
        numactl_short: None,
        docker_args: Vec::new(),
        binding,
        reasons,
        ranks: Vec::new(),
    }
}

/// The nearest node (by distance from `from`) that satisfies `ok`; ties go to the node with
/// more free memory, then the lower id. `None` without distances.
fn nearest<'a>(topo: &'a Topology, from: &Node, ok: impl Fn(&Node) -> bool) -> Option<&'a Node> {
    topo.nodes
        .iter()
        .filter(|n| n.id != from.id && ok(n))
        .filter_map(|n| from.distance_to(n.id).map(|d| (d, n)))
        .min_by_key(|(d, n)| {
            (*d, std::cmp::Reverse(n.memory_free_mb.as_ref().map_or(0, |m| m.value)), n.id)
        })
        .map(|(_, n)| n)
}

/// One instance's binding: rules 1-5 of the module header, one step each, in order. Steps 1
/// and 2 can find that no binding is safe; the instance then runs unbound, with the reasons so
/// far.
fn bind_instance(topo: &Topology, gpus: &[&Gpu], req: &PlanRequest) -> Instance {
    let indexes: Vec<u32> = gpus.iter().map(|g| g.index).collect();
    let mut reasons = Vec::new();
    let Some(gpu_nodes) = gpu_nodes(gpus, &mut reasons) else {
        return unbound(topo, indexes, Vec::new(), reasons);
    };
    let numa_nodes: Vec<u32> = gpu_nodes.iter().copied().collect();
    let Some(cpu_nodes) = cpu_nodes(topo, &gpu_nodes, &mut reasons) else {
        return unbound(topo, indexes, numa_nodes, reasons);
    };
    let cpus = cpus_of(topo, &cpu_nodes, &mut reasons);
    let (mem_nodes, memoryless) = memory_nodes(topo, &cpu_nodes, &mut reasons);
    let memory = memory_policy(topo, &mem_nodes, req.host_memory_gb, &mut reasons);
    let binding = Binding {
        // `numactl --cpunodebind` fails on a memoryless node: CPUs go by list alone.
        cpu_nodes: if memoryless { Vec::new() } else { cpu_nodes.iter().copied().collect() },
        cpus: Some(cpus.clone()),
        memory,
    };
    bound(indexes, numa_nodes, cpus, binding, reasons)
}

/// Rule 1: the nodes the GPUs hang off, each with its evidence; `None` (no binding) as soon
/// as one GPU's node is unknown.
fn gpu_nodes(gpus: &[&Gpu], reasons: &mut Vec<String>) -> Option<BTreeSet<u32>> {
    let mut gpu_nodes: BTreeSet<u32> = BTreeSet::new();
    for g in gpus {
        let bus = g.bus_id.as_deref().map(|b| format!(" ({b})")).unwrap_or_default();
        let Some(node) = &g.numa_node else {
            reasons.push(format!(
                "GPU{}{bus}: no source knows its NUMA node (listed in {}; sysfs numa_node -1 or absent, tool affinity N/A or absent), so no binding is recommended: binding to a guessed node can cost more than it gains (the seed lost up to 23 % bound to the wrong nodes)",
                g.index, g.listed_in
            ));
            return None;
        };
        let cpus = g.cpu_affinity.as_ref().map(|c| {
            if c.source == node.source {
                format!(", CPU affinity {}", c.value.to_list())
            } else {
                format!(", CPU affinity {} ({})", c.value.to_list(), c.source)
            }
        });
        reasons.push(format!(
            "GPU{}{bus} hangs off NUMA node {}: {}{}",
            g.index,
            node.value,
            node.source,
            cpus.unwrap_or_default()
        ));
        gpu_nodes.insert(node.value);
    }
    Some(gpu_nodes)
}

/// Rule 2: the CPU nodes. A node without CPUs (GPU memory) is replaced by its nearest node
/// with CPUs; `None` (no binding) when a node is unknown or nothing says which is nearest.
fn cpu_nodes(
    topo: &Topology,
    gpu_nodes: &BTreeSet<u32>,
    reasons: &mut Vec<String>,
) -> Option<BTreeSet<u32>> {
    let mut cpu_nodes: BTreeSet<u32> = BTreeSet::new();
    for &id in gpu_nodes {
        let Some(node) = topo.node(id) else {
            reasons.push(format!(
                "NUMA node {id} is not in any node source, so its CPUs are unknown: no binding recommended"
            ));
            return None;
        };
        if node.has_cpus() {
            cpu_nodes.insert(id);
            continue;
        }
        let what = if node.gpu_memory { "is GPU memory" } else { "has no CPUs" };
        let Some(near) = nearest(topo, node, Node::has_cpus) else {
            reasons.push(format!(
                "node {id} {what} and no distances say which node is nearest: no binding recommended"
            ));
            return None;
        };
        reasons.push(format!(
            "node {id} {what} ({}): CPUs are never bound to it; using the nearest node with CPUs, node {} (distance {})",
            node.cpus.source,
            near.id,
            node.distance_to(near.id).unwrap_or(0)
        ));
        cpu_nodes.insert(near.id);
    }
    Some(cpu_nodes)
}

/// Rule 3: the CPUs of the CPU nodes; spanning several nodes binds to their union, and says
/// so (as does a host whose one node with CPUs leaves nothing to gain).
fn cpus_of(topo: &Topology, cpu_nodes: &BTreeSet<u32>, reasons: &mut Vec<String>) -> CpuSet {
    if cpu_nodes.len() > 1 {
        reasons.push(format!(
            "the instance's GPUs hang off nodes {}: binding to the union of those nodes; use --tp/--instances to give each node its own instance",
            join(cpu_nodes.iter())
        ));
    }
    if topo.nodes.iter().filter(|n| n.has_cpus()).count() == 1 {
        reasons.push(
            "the host has one NUMA node with CPUs: the binding is correct but cannot improve locality"
                .into(),
        );
    }
    let mut cpus = CpuSet::new();
    for id in cpu_nodes {
        if let Some(node) = topo.node(*id) {
            reasons.push(format!(
                "node {id} has CPUs {}: {}",
                node.cpus.value.to_list(),
                node.cpus.source
            ));
            cpus = cpus.union(&node.cpus.value);
        }
    }
    cpus
}

/// Rule 4: the memory nodes. A memoryless CPU node borrows the nearest node with memory;
/// the flag says one was met (CPUs are then bound by list).
fn memory_nodes(
    topo: &Topology,
    cpu_nodes: &BTreeSet<u32>,
    reasons: &mut Vec<String>,
) -> (BTreeSet<u32>, bool) {
    let mut mem_nodes: BTreeSet<u32> = BTreeSet::new();
    let mut memoryless = false;
    for id in cpu_nodes {
        let Some(node) = topo.node(*id) else { continue };
        if node.has_memory() != Some(false) {
            mem_nodes.insert(*id);
            continue;
        }
        memoryless = true;
        let src = node.memory_total_mb.as_ref().map(|m| m.source.to_string()).unwrap_or_default();
        match nearest(topo, node, |n| n.has_memory() != Some(false) && !n.gpu_memory) {
            Some(near) => {
                reasons.push(format!(
                    "node {id} has no memory (size 0 MB, {src}): `numactl --cpunodebind={id}` fails on it (numactl issue 165), so CPUs are bound by list (--physcpubind) and memory to the nearest node with memory, node {} (distance {})",
                    near.id,
                    node.distance_to(near.id).unwrap_or(0)
                ));
                mem_nodes.insert(near.id);
            }
            None => {
                reasons.push(format!(
                    "node {id} has no memory (size 0 MB, {src}) and no distances say which node is nearest: CPUs bound by list, memory left to the kernel"
                ));
            }
        }
    }
    (mem_nodes, memoryless)
}

/// Rule 5: the memory policy. `--membind` on the memory nodes, unless their free memory is
/// below what the engine needs (`need_gb`): then `--preferred` on the freest, so allocations
/// spill over instead of failing.
fn memory_policy(
    topo: &Topology,
    mem_nodes: &BTreeSet<u32>,
    need_gb: Option<f64>,
    reasons: &mut Vec<String>,
) -> MemPolicy {
    let mem_list: Vec<u32> = mem_nodes.iter().copied().collect();
    let free_of = |id: &u32| topo.node(*id).and_then(|n| n.memory_free_mb.as_ref());
    let free: Option<u64> = mem_list.iter().map(|id| free_of(id).map(|m| m.value)).sum();
    let total: Option<u64> = mem_list
        .iter()
        .map(|id| topo.node(*id).and_then(|n| n.memory_total_mb.as_ref()).map(|m| m.value))
        .sum();
    let free_src = mem_list
        .iter()
        .filter_map(free_of)
        .map(|m| m.source.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(", ");
    let nodes_word = if mem_list.len() == 1 { "node" } else { "nodes" };
    let has = if mem_list.len() == 1 { "has" } else { "have" };
    let nodes = join(mem_list.iter());
    let mut memory =
        if mem_list.is_empty() { MemPolicy::Default } else { MemPolicy::Bind(mem_list.clone()) };
    match (need_gb, free) {
        (Some(need), Some(free_mb)) if (free_mb as f64) < need * 1000.0 => {
            // Prefer the memory node with the most free memory; the others take the spill.
            let best = mem_list
                .iter()
                .copied()
                .max_by_key(|id| (free_of(id).map_or(0, |m| m.value), std::cmp::Reverse(*id)))
                .unwrap_or(0);
            reasons.push(format!(
                "{nodes_word} {nodes} {has} {free_mb} MB free ({free_src}), less than the {need} GB the engine needs (--host-memory-gb): --preferred={best} instead of --membind, so allocations spill to other nodes instead of failing",
            ));
            memory = MemPolicy::Preferred(best);
        }
        (Some(need), Some(free_mb)) => reasons.push(format!(
            "{nodes_word} {nodes} {has} {free_mb} MB free ({free_src}), enough for the {need} GB the engine needs: --membind",
        )),
        (Some(need), None) if !mem_list.is_empty() => reasons.push(format!(
            "free memory of {nodes_word} {nodes} is unknown, so the {need} GB need cannot be checked: keeping --membind",
        )),
        (None, Some(free_mb)) if total.is_some_and(|t| free_mb * 10 < t) => {
            reasons.push(format!(
                "{nodes_word} {nodes} {has} only {free_mb} MB of {} MB free ({free_src}): if the engine needs more host memory than that, pass --host-memory-gb so the plan uses --preferred instead of --membind",
                total.unwrap_or(0)
            ));
        }
        _ => {}
    }
    memory
}

/// Rule 7: every bound instance loses the reserved CPUs (each node's first `count`, by whole
/// cores where `topo.cores` knows them) and is bound by CPU list; the reason names them.
fn reserve_cpus(topo: &Topology, instances: &mut [Instance], count: u32) -> Result<(), PlanError> {
    if count == 0 {
        return Ok(());
    }
    let cores = topo.cores.as_ref().map(|f| f.value.as_slice());
    let reserved = topo.nodes.iter().filter(|n| n.has_cpus()).fold(CpuSet::new(), |acc, n| {
        acc.union(&cores::reserve(&n.cpus.value, cores, count as usize))
    });
    let how = match &topo.cores {
        Some(f) => format!("each node's first whole cores, SMT siblings together, from {}", f.source),
        None => "each node's first CPUs; SMT siblings unknown: where a node's CPU ranges have one length, the n-th CPU of each is presumed one core".into(),
    };
    for inst in instances.iter_mut().filter(|i| i.binding.cpus.is_some()) {
        let taken = inst.cpus.intersection(&reserved);
        if taken.is_empty() {
            continue;
        }
        let kept = inst.cpus.difference(&reserved);
        if kept.is_empty() {
            return Err(PlanError::ReserveLeavesNoCpu {
                count,
                gpus: join(&inst.gpus),
                cpus: inst.cpus.to_list(),
            });
        }
        let mut reasons = std::mem::take(&mut inst.reasons);
        reasons.push(format!(
            "reserve of {count} CPU(s) per NUMA node (--reserve-cpus) for the OS, the agent, tokenizers and load generators: CPUs {} are left out ({how}); this instance gets {}, bound by CPU list",
            taken.to_list(),
            kept.to_list()
        ));
        let binding = Binding {
            cpu_nodes: Vec::new(),
            cpus: Some(kept.clone()),
            memory: inst.binding.memory.clone(),
        };
        let (gpus, nodes) = (inst.gpus.clone(), inst.numa_nodes.clone());
        *inst = bound(gpus, nodes, kept, binding, reasons);
    }
    Ok(())
}

/// Rule 6: instances with the same CPUs get disjoint parts of them (by GPU count), bound by
/// CPU list, unless `share` keeps the union; by whole cores when `cores` knows them. Each
/// reason says which rule applied.
fn shared_cores(instances: &mut [Instance], share: bool, cores: Option<&Fact<Vec<CpuSet>>>) {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, inst) in instances.iter().enumerate() {
        if inst.binding.cpus.is_some() {
            groups.entry(inst.cpus.to_list()).or_default().push(i);
        }
    }
    for members in groups.into_values().filter(|m| m.len() > 1) {
        let shared = instances[members[0]].cpus.clone();
        let weights: Vec<usize> = members.iter().map(|&i| instances[i].gpus.len()).collect();
        let parts = match cores {
            _ if share => None,
            Some(c) => cores::split_by_cores(&shared, &c.value, &weights),
            None => cores::split(&shared, &weights),
        };
        let unit = if cores.is_some() { "cores" } else { "CPUs" };
        for (k, &i) in members.iter().enumerate() {
            let others: Vec<String> =
                members.iter().filter(|&&j| j != i).map(|&j| join(&instances[j].gpus)).collect();
            let inst = &mut instances[i];
            let why = match &parts {
                None if share => format!(
                    "CPUs {shared} are shared with the instance(s) of GPUs {} (share cores: the union is kept)",
                    others.join(" and ")
                ),
                None => format!(
                    "CPUs {shared} are shared with the instance(s) of GPUs {}: too few {unit} to split by GPU count, the union is kept",
                    others.join(" and ")
                ),
                Some(parts) if cores.is_some() => format!(
                    "CPUs {shared} are shared with the instance(s) of GPUs {}: split by GPU count in whole cores (SMT siblings together, from {}), this instance gets {} (--share-cores keeps the union)",
                    others.join(" and "),
                    cores.map(|c| c.source.to_string()).unwrap_or_default(),
                    parts[k]
                ),
                Some(parts) => format!(
                    "CPUs {shared} are shared with the instance(s) of GPUs {}: split by GPU count, this instance gets {} (SMT siblings unknown: each contiguous range is cut in the same proportions; --share-cores keeps the union)",
                    others.join(" and "),
                    parts[k]
                ),
            };
            let mut reasons = std::mem::take(&mut inst.reasons);
            reasons.push(why);
            let Some(parts) = &parts else {
                inst.reasons = reasons;
                continue;
            };
            let binding = Binding {
                cpu_nodes: Vec::new(),
                cpus: Some(parts[k].clone()),
                memory: inst.binding.memory.clone(),
            };
            let (gpus, nodes) = (inst.gpus.clone(), inst.numa_nodes.clone());
            *inst = bound(gpus, nodes, parts[k].clone(), binding, reasons);
        }
    }
}

/// The instance as `serve` applies it and `plan --json` prints it.
fn bound(
    gpus: Vec<u32>,
    numa_nodes: Vec<u32>,
    cpus: CpuSet,
    binding: Binding,
    reasons: Vec<String>,
) -> Instance {
    let memory_policy = match binding.memory {
        MemPolicy::Default => "default",
        MemPolicy::Bind(_) => "bind",
        MemPolicy::Preferred(_) => "preferred",
        MemPolicy::Interleave(_) => "interleave",
    };
    Instance {
        gpus,
        numa_nodes,
        cpunodebind: binding.cpu_nodes.clone(),
        membind: binding.memory_nodes(),
        memory_policy: memory_policy.into(),
        cpus,
        numactl: binding.numactl_prefix(),
        numactl_short: binding.numactl_short_prefix(),
        docker_args: binding.docker_args(),
        binding,
        reasons,
        ranks: Vec::new(),
    }
}

/// The per-rank layout of a bound instance over several CPU nodes (`ranks.rs`): each GPU's
/// CPU node (rule 2) and memory node (rule 4, only under a memory policy), resolved alone.
fn rank_layout(topo: &Topology, gpus: &[&Gpu], inst: &mut Instance) {
    if inst.binding.cpus.is_none() {
        return;
    }
    let mut scratch = Vec::new();
    let mut places = Vec::new();
    for g in gpus {
        let Some(node) = &g.numa_node else { return };
        let Some(cpu) = cpu_nodes(topo, &BTreeSet::from([node.value]), &mut scratch)
            .and_then(|n| n.into_iter().next())
        else {
            return;
        };
        let memory_node = match inst.binding.memory {
            MemPolicy::Default => None,
            _ => memory_nodes(topo, &BTreeSet::from([cpu]), &mut scratch).0.into_iter().next(),
        };
        places.push(ranks::GpuPlace { gpu: g.index, cpu_node: cpu, memory_node });
    }
    let cores = topo.cores.as_ref().map(|f| f.value.as_slice());
    let node_cpus = |id| topo.node(id).map(|n| n.cpus.value.clone());
    if let Some(layout) = ranks::layout(&places, &inst.cpus, node_cpus, cores) {
        inst.reasons.push(ranks::reason(&layout, cores.is_some()));
        inst.ranks = layout;
    }
}

/// Distances as printed in tables: `10 22 22 ...` in node order.
pub fn distance_row(d: &BTreeMap<u32, u32>) -> String {
    d.values().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
