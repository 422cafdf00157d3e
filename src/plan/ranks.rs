//! The per-rank layout of an instance whose GPUs hang off several NUMA nodes (TP8 over two
//! sockets): each rank (one GPU, one worker process of the engine) gets its GPU's CPU node, a
//! part of that node's CPUs in whole cores, and its memory node. `serve` binds each rank's
//! worker to it once the vendor's process list shows the worker on its GPU
//! (`crate::supervise::ranks`); the instance as a whole stays bound to the union.
//!
//! Pure, over CPU lists and node ids only: `plan/mod.rs` resolves each GPU's CPU node and
//! memory node (rules 2 and 4) and passes them in; this file imports nothing of `plan/mod.rs`.
//! Ranks that share a node get disjoint whole cores of it, by the same cut as instances that
//! share a node (`cores.rs`); too few cores to cut, they share the node's CPUs.

use serde::{Deserialize, Serialize};

use crate::host::cpuset::CpuSet;

use super::cores;

/// One rank's binding: `plan --json` prints it in the instance's `ranks`, `serve` applies it
/// to the worker process it finds on `gpu`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rank {
    /// Position of the GPU in the instance (the engine's local rank).
    pub rank: u32,
    /// The GPU index (as the host numbers it).
    pub gpu: u32,
    /// The NUMA node whose CPUs the rank runs on (the GPU's node, or the nearest node with
    /// CPUs when the GPU's node has none).
    pub node: u32,
    /// The CPUs of the rank: whole cores of `node`, within the instance's CPUs.
    pub cpus: CpuSet,
    /// The memory node of the rank; `None` when the instance has no memory policy.
    pub memory_node: Option<u32>,
}

/// What the plan resolved for one GPU of the instance: its index, CPU node and memory node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuPlace {
    pub gpu: u32,
    pub cpu_node: u32,
    pub memory_node: Option<u32>,
}

/// The ranks of an instance over `places` (in the instance's GPU order), `inst_cpus` being
/// the instance's CPUs (after the reserve and the split of shared nodes) and `node_cpus` the
/// CPUs of a node. `None` unless the GPUs' CPU nodes are more than one: an instance on one
/// node is already bound to it as a whole.
pub fn layout(
    places: &[GpuPlace],
    inst_cpus: &CpuSet,
    node_cpus: impl Fn(u32) -> Option<CpuSet>,
    host_cores: Option<&[CpuSet]>,
) -> Option<Vec<Rank>> {
    let mut nodes: Vec<u32> = places.iter().map(|p| p.cpu_node).collect();
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.len() < 2 {
        return None;
    }
    let mut ranks: Vec<Option<Rank>> = vec![None; places.len()];
    for node in nodes {
        let members: Vec<usize> =
            (0..places.len()).filter(|&i| places[i].cpu_node == node).collect();
        let cpus = node_cpus(node).map(|c| c.intersection(inst_cpus)).unwrap_or_default();
        if cpus.is_empty() {
            // The node's CPUs are all outside the instance (reserved): no rank binding.
            return None;
        }
        let weights = vec![1; members.len()];
        let parts = if members.len() == 1 {
            None
        } else {
            match host_cores {
                Some(c) => cores::split_by_cores(&cpus, c, &weights),
                None => cores::split(&cpus, &weights),
            }
        };
        for (k, &i) in members.iter().enumerate() {
            let p = places[i];
            ranks[i] = Some(Rank {
                rank: i as u32,
                gpu: p.gpu,
                node,
                cpus: parts.as_ref().map_or_else(|| cpus.clone(), |parts| parts[k].clone()),
                memory_node: p.memory_node,
            });
        }
    }
    ranks.into_iter().collect()
}

/// The plan's reason for a layout, one line.
pub fn reason(ranks: &[Rank], host_cores_known: bool) -> String {
    let mut nodes: Vec<u32> = ranks.iter().map(|r| r.node).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let each = ranks
        .iter()
        .map(|r| format!("GPU{} -> node {} CPUs {}", r.gpu, r.node, r.cpus.to_list()))
        .collect::<Vec<_>>()
        .join(", ");
    let unit = if host_cores_known { "whole cores" } else { "CPU ranges (SMT siblings unknown)" };
    format!(
        "per-rank binding: the instance spans nodes {}, so serve binds each rank's worker process to its own GPU's node once the GPU's process list shows it ({each}; ranks of one node get disjoint {unit}); binding.ranks = \"union\" in the config keeps the whole engine on the union",
        nodes.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> CpuSet {
        s.parse().unwrap()
    }

    fn place(gpu: u32, cpu_node: u32) -> GpuPlace {
        GpuPlace { gpu, cpu_node, memory_node: Some(cpu_node) }
    }

    fn nodes(id: u32) -> Option<CpuSet> {
        match id {
            0 => Some(set("0-7,16-23")),
            1 => Some(set("8-15,24-31")),
            _ => None,
        }
    }

    #[test]
    fn one_node_gives_no_layout() {
        let places = [place(0, 0), place(1, 0)];
        assert_eq!(layout(&places, &set("0-31"), nodes, None), None);
    }

    #[test]
    fn four_gpus_over_two_nodes_cut_each_node_in_whole_cores() {
        let cores: Vec<CpuSet> = (0..16).map(|c| set(&format!("{c},{}", c + 16))).collect();
        let places = [place(0, 0), place(1, 0), place(2, 1), place(3, 1)];
        let ranks = layout(&places, &set("0-31"), nodes, Some(&cores)).unwrap();
        let got: Vec<(u32, u32, u32, String)> =
            ranks.iter().map(|r| (r.rank, r.gpu, r.node, r.cpus.to_list())).collect();
        assert_eq!(
            got,
            vec![
                (0, 0, 0, "0-3,16-19".to_string()),
                (1, 1, 0, "4-7,20-23".to_string()),
                (2, 2, 1, "8-11,24-27".to_string()),
                (3, 3, 1, "12-15,28-31".to_string()),
            ]
        );
        assert!(ranks.iter().all(|r| r.memory_node == Some(r.node)));
    }

    #[test]
    fn the_instance_cpus_bound_the_ranks_and_a_fully_reserved_node_gives_none() {
        let places = [place(5, 1), place(2, 0)];
        let ranks = layout(&places, &set("1-7,9-15"), nodes, None).unwrap();
        assert_eq!((ranks[0].rank, ranks[0].gpu, ranks[0].cpus.to_list()), (0, 5, "9-15".into()));
        assert_eq!((ranks[1].rank, ranks[1].gpu, ranks[1].cpus.to_list()), (1, 2, "1-7".into()));
        assert_eq!(layout(&places, &set("0-7"), nodes, None), None);
    }

    #[test]
    fn reason_names_every_rank() {
        let places = [place(0, 0), place(1, 1)];
        let ranks = layout(&places, &set("0-31"), nodes, None).unwrap();
        let r = reason(&ranks, false);
        assert!(r.contains("spans nodes 0,1"), "{r}");
        assert!(r.contains("GPU0 -> node 0 CPUs 0-7,16-23, GPU1 -> node 1 CPUs 8-15,24-31"), "{r}");
    }
}
