//! Plain records of what each host source reported, before they are merged into the one
//! topology model (`crate::topology`). Every parser in `crate::host` produces one of these;
//! nothing here runs a command or reads a file, and this module imports nothing else from the
//! crate except `CpuSet`. It also says which PCI vendor ids are GPU vendors (`gpu_vendor`),
//! which both `gather` and the topology model ask.
//!
//! `line` fields are 1-based line numbers in the raw output the fact was read from, so that a
//! plan can cite its evidence ("mx-smi-topo-m.txt line 3").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::cpuset::CpuSet;

/// A GPU vendor nodeagent knows how to talk to, or `Other` for devices named by PCI address
/// (also the default: no known GPU tool).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    Metax,
    Nvidia,
    Amd,
    #[default]
    Other,
}

/// PCI vendor ids whose display/accelerator-class devices are GPUs.
pub fn gpu_vendor(pci_vendor: u16) -> Option<Vendor> {
    match pci_vendor {
        0x10de => Some(Vendor::Nvidia),
        0x1002 => Some(Vendor::Amd),
        0x9999 => Some(Vendor::Metax),
        _ => None,
    }
}

/// The status table of `mx-smi` / `nvidia-smi` (and the `--query-gpu` CSV): one row per GPU
/// plus the process table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SmiStatus {
    /// Tool version as printed (`MX-SMI 2.1.6`, `NVIDIA-SMI 575.57.08`), if shown.
    pub tool_version: Option<String>,
    /// Driver version, if shown.
    pub driver_version: Option<String>,
    pub gpus: Vec<GpuStatus>,
    pub processes: Vec<GpuProcess>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuStatus {
    pub index: u32,
    pub name: Option<String>,
    /// Normalised to sysfs form: `0000:8d:00.0` (4-digit domain, lowercase hex).
    pub bus_id: Option<String>,
    pub temperature_c: Option<f64>,
    pub power_w: Option<f64>,
    pub memory_used_mib: Option<u64>,
    pub memory_total_mib: Option<u64>,
    pub utilization_pct: Option<f64>,
    /// Line of the row that named this GPU.
    pub line: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuProcess {
    pub gpu: u32,
    pub pid: u32,
    pub name: String,
    pub memory_mib: Option<u64>,
    pub line: usize,
}

/// A GPU link/affinity matrix: `mx-smi topo -m`, `nvidia-smi topo -m`, `rocm-smi --showtopo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuTopo {
    pub gpus: Vec<GpuTopoRow>,
    /// NIC names in the order of the matrix (`NIC0`, `mlx5_0`, ...), legend-resolved where a
    /// NIC legend maps `NIC0` to `mlx5_0`.
    pub nics: Vec<String>,
    /// Link codes the legend declares (`MX` -> "Connection traversing MetaXLink").
    pub legend: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuTopoRow {
    /// The GPU's index as the tool numbers it (`GPU3` -> 3).
    pub index: u32,
    /// Link code to each other GPU, keyed by that GPU's index (`"MX"`, `"NV12"`, `"SYS"`).
    pub links: BTreeMap<u32, String>,
    /// `CPU Affinity`; `None` when the cell is `N/A` or absent.
    pub cpu_affinity: Option<CpuSet>,
    /// `NUMA Affinity` / `Node Affinity`; `None` when `N/A` or absent.
    pub numa_affinity: Option<u32>,
    /// `GPU NUMA ID` (the GPU's own memory node on Grace-Hopper-like systems); `None` when
    /// `N/A` or absent.
    pub gpu_numa_id: Option<u32>,
    pub line: usize,
}

/// One NUMA node as `numactl --hardware`, sysfs or hwloc reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub id: u32,
    pub cpus: CpuSet,
    /// `None` when the source does not say; `Some(0)` for a memoryless node.
    pub memory_total_mb: Option<u64>,
    pub memory_free_mb: Option<u64>,
    /// Distance to each node, keyed by node id (the node's own entry included, usually 10).
    pub distances: BTreeMap<u32, u32>,
    pub line: usize,
}

/// A PCI device as sysfs or hwloc reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PciDeviceFacts {
    /// sysfs form: `0000:8d:00.0`.
    pub bus_id: String,
    /// PCI class code, e.g. 0x030000 (VGA), 0x030200 (3D controller), 0x120000 (accelerator).
    pub class: Option<u32>,
    pub vendor: Option<u16>,
    pub device: Option<u16>,
    /// `numa_node`; `None` for -1 (unknown) or when absent.
    pub numa_node: Option<u32>,
    pub local_cpus: Option<CpuSet>,
    /// OS device names hwloc attaches (`card0`, `cuda0`, `nvml1`), empty for sysfs.
    pub os_devices: Vec<String>,
}

/// One physical core as hwloc reports it: its logical index (hwloc's `Core L#`, the numbering
/// Slurm's `gres.conf` `Cores=` takes) and its hardware threads (OS CPU numbers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CoreFacts {
    pub logical_index: u32,
    /// The logical index of the package (socket) holding it, when hwloc knows one.
    pub package: Option<u32>,
    pub cpus: CpuSet,
}

/// Nodes and PCI devices from one whole-machine source (sysfs, hwloc live or XML).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineFacts {
    pub nodes: Vec<NodeFacts>,
    pub pci_devices: Vec<PciDeviceFacts>,
    /// Physical cores in hwloc's logical order (hwloc only; empty for sysfs).
    #[serde(default)]
    pub cores: Vec<CoreFacts>,
}

/// Normalises a PCI bus id to sysfs form: `00000000:8D:00.0` -> `0000:8d:00.0`,
/// `8d:00.0` -> `0000:8d:00.0`. Returns `None` if it is not a bus id.
pub fn normalize_bus_id(text: &str) -> Option<String> {
    let t = text.trim().to_ascii_lowercase();
    let (domain, rest) = match t.rsplit_once(':') {
        Some((left, devfn)) => match left.rsplit_once(':') {
            Some((dom, bus)) => (dom.to_string(), format!("{bus}:{devfn}")),
            None => ("0".to_string(), format!("{left}:{devfn}")),
        },
        None => return None,
    };
    let (bus, devfn) = rest.split_once(':')?;
    let (dev, func) = devfn.split_once('.')?;
    let hex = |s: &str, max_len: usize| {
        !s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_hexdigit())
    };
    if !(hex(&domain, 8) && hex(bus, 2) && hex(dev, 2) && func.len() == 1 && hex(func, 1)) {
        return None;
    }
    let domain = u32::from_str_radix(&domain, 16).ok()?;
    if domain > 0xffff {
        return None;
    }
    let bus = u8::from_str_radix(bus, 16).ok()?;
    let dev = u8::from_str_radix(dev, 16).ok()?;
    Some(format!("{domain:04x}:{bus:02x}:{dev:02x}.{func}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_bus_ids() {
        assert_eq!(normalize_bus_id("00000000:8D:00.0").as_deref(), Some("0000:8d:00.0"));
        assert_eq!(normalize_bus_id("0000:0e:00.0").as_deref(), Some("0000:0e:00.0"));
        assert_eq!(normalize_bus_id("8d:00.0").as_deref(), Some("0000:8d:00.0"));
        assert_eq!(normalize_bus_id("N/A"), None);
        assert_eq!(normalize_bus_id("0000:zz:00.0"), None);
        assert_eq!(normalize_bus_id(""), None);
    }

    #[test]
    fn gpu_vendors_by_pci_id() {
        assert_eq!(gpu_vendor(0x10de), Some(Vendor::Nvidia));
        assert_eq!(gpu_vendor(0x1002), Some(Vendor::Amd));
        assert_eq!(gpu_vendor(0x9999), Some(Vendor::Metax));
        // Intel (0x8086) display devices are not GPUs nodeagent plans for.
        assert_eq!(gpu_vendor(0x8086), None);
        assert_eq!(Vendor::default(), Vendor::Other);
    }
}
