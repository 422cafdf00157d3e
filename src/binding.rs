//! A CPU + memory binding, the one value that `plan` recommends, `serve` applies (natively,
//! through `numactl`, or as a container cpuset), the binding check verifies in `/proc`, and
//! `verify --compare` varies. Pure data and its renderings (numactl and docker arguments), below
//! `launch` and `supervise` in the flow: they import it, it imports neither. The launch spec
//! turns it into numactl's argv prefix or a container cpuset; `crate::supervise::native` applies
//! it between fork and exec.

use serde::{Deserialize, Serialize};

use crate::host::cpuset::CpuSet;

/// Where the engine's memory may come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", content = "nodes", rename_all = "lowercase")]
pub enum MemPolicy {
    /// No memory policy: the kernel default (local allocation).
    Default,
    /// `--membind`: only these nodes (allocation fails over to nothing else).
    Bind(Vec<u32>),
    /// `--preferred`: this node first, others when it is full.
    Preferred(u32),
    /// `--interleave`: round-robin over these nodes.
    Interleave(Vec<u32>),
}

/// CPU and memory placement for one serving instance. `Binding::none()` means "leave the
/// engine where the scheduler puts it".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// NUMA nodes whose CPUs the engine runs on (`--cpunodebind`). Empty when the CPUs are
    /// given by list only (`--physcpubind`, e.g. CPUs of a memoryless node) or unbound.
    pub cpu_nodes: Vec<u32>,
    /// The exact CPUs; `None` = unbound.
    pub cpus: Option<CpuSet>,
    pub memory: MemPolicy,
}

fn join(nodes: &[u32]) -> String {
    nodes.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

impl Binding {
    pub fn none() -> Self {
        Self { cpu_nodes: Vec::new(), cpus: None, memory: MemPolicy::Default }
    }

    pub fn is_none(&self) -> bool {
        self.cpus.is_none() && self.memory == MemPolicy::Default
    }

    /// Memory nodes the policy names (empty for `Default`).
    pub fn memory_nodes(&self) -> Vec<u32> {
        match &self.memory {
            MemPolicy::Default => Vec::new(),
            MemPolicy::Bind(n) | MemPolicy::Interleave(n) => n.clone(),
            MemPolicy::Preferred(n) => vec![*n],
        }
    }

    /// `numactl` options in long form, e.g. `["--cpunodebind=0", "--membind=0"]`.
    pub fn numactl_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if !self.cpu_nodes.is_empty() {
            args.push(format!("--cpunodebind={}", join(&self.cpu_nodes)));
        } else if let Some(cpus) = &self.cpus {
            args.push(format!("--physcpubind={cpus}"));
        }
        match &self.memory {
            MemPolicy::Default => {}
            MemPolicy::Bind(n) => args.push(format!("--membind={}", join(n))),
            MemPolicy::Preferred(n) => args.push(format!("--preferred={n}")),
            MemPolicy::Interleave(n) => args.push(format!("--interleave={}", join(n))),
        }
        args
    }

    /// `numactl` options in the short form the seed typed: `["-N0", "-m0"]`.
    pub fn numactl_short_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if !self.cpu_nodes.is_empty() {
            args.push(format!("-N{}", join(&self.cpu_nodes)));
        } else if let Some(cpus) = &self.cpus {
            args.push(format!("-C{cpus}"));
        }
        match &self.memory {
            MemPolicy::Default => {}
            MemPolicy::Bind(n) => args.push(format!("-m{}", join(n))),
            MemPolicy::Preferred(n) => args.push(format!("-p{n}")),
            MemPolicy::Interleave(n) => args.push(format!("-i{}", join(n))),
        }
        args
    }

    /// The full prefix (`numactl --cpunodebind=0 --membind=0`), or `None` when unbound.
    pub fn numactl_prefix(&self) -> Option<String> {
        (!self.is_none()).then(|| format!("numactl {}", self.numactl_args().join(" ")))
    }

    pub fn numactl_short_prefix(&self) -> Option<String> {
        (!self.is_none()).then(|| format!("numactl {}", self.numactl_short_args().join(" ")))
    }

    /// Container cpuset flags (`--cpuset-cpus=0-15`, `--cpuset-mems=0`). A container cpuset
    /// can only restrict, so `Preferred` has no exact equivalent: it yields no `--cpuset-mems`.
    pub fn docker_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(cpus) = &self.cpus {
            args.push(format!("--cpuset-cpus={cpus}"));
        }
        match &self.memory {
            MemPolicy::Bind(n) | MemPolicy::Interleave(n) => {
                args.push(format!("--cpuset-mems={}", join(n)))
            }
            MemPolicy::Default | MemPolicy::Preferred(_) => {}
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Binding {
        Binding {
            cpu_nodes: vec![0],
            cpus: Some(CpuSet::parse_list("0-15").unwrap()),
            memory: MemPolicy::Bind(vec![0]),
        }
    }

    #[test]
    fn renders_the_seed_binding() {
        let b = seed();
        assert_eq!(b.numactl_prefix().unwrap(), "numactl --cpunodebind=0 --membind=0");
        assert_eq!(b.numactl_short_prefix().unwrap(), "numactl -N0 -m0");
        assert_eq!(b.docker_args(), ["--cpuset-cpus=0-15", "--cpuset-mems=0"]);
    }

    #[test]
    fn memoryless_node_uses_physcpubind() {
        let b = Binding {
            cpu_nodes: vec![],
            cpus: Some(CpuSet::parse_list("4-5").unwrap()),
            memory: MemPolicy::Bind(vec![3]),
        };
        assert_eq!(b.numactl_prefix().unwrap(), "numactl --physcpubind=4-5 --membind=3");
        assert_eq!(b.numactl_short_prefix().unwrap(), "numactl -C4-5 -m3");
    }

    #[test]
    fn none_renders_nothing() {
        let b = Binding::none();
        assert!(b.is_none());
        assert_eq!(b.numactl_prefix(), None);
        assert!(b.docker_args().is_empty());
    }
}
