//! Slurm's `gres.conf` for the host's GPUs (`nodeagent plan --format slurm-gres`).
//!
//! One line per GPU: `Name=gpu Type=<model> File=<device node> Cores=<core indexes>`. Slurm's
//! `Cores=` takes its own abstract core numbering, which is hwloc's logical core index
//! (`Core L#`), NOT the OS CPU numbers `numactl` and `nvidia-smi topo -m` print: on a host whose
//! CPUs are numbered `0-7,16-23` on node 0 (two threads per core), node 0's cores are `0-7`;
//! writing the CPU list there is the easy, silent mistake (slurmd rejects indexes above its
//! core count, but accepts a wrong set below it). The cores of a GPU are all cores of its NUMA
//! node (Slurm's notion of the GPU's affinity); a GPU whose node is unknown gets no `Cores=`
//! (usable from any core) and a comment. `Type=` is the GPU's name as Slurm's NVML
//! autodetection spells it: lower case, spaces as `_` (`nvidia_h100_80gb_hbm3`).
//!
//! A GPU whose device node the caller could not find still gets its line, with a comment naming
//! what to fill in; since Slurm takes `File=` on all lines of a GRES or on none, one missing
//! node makes every line `Count=1` (each known node in its comment) so slurmd still reads it. The header carries the `slurm.conf` node
//! line that matches the topology (sockets, cores per socket, threads per core, the `Gres=`
//! counts per type).

use std::collections::BTreeMap;

use super::{DeviceNodes, ExportError};
use crate::host::cpuset::CpuSet;
use crate::host::facts::{CoreFacts, Vendor};
use crate::topology::{Gpu, Topology};

/// The `gres.conf` text. `source_desc` names where the facts came from (for the header and
/// the errors); `cores` are hwloc's cores in logical order.
pub fn gres_conf(
    topo: &Topology,
    cores: &[CoreFacts],
    devices: &DeviceNodes,
    source_desc: &str,
) -> Result<String, ExportError> {
    if topo.gpus.is_empty() {
        return Err(ExportError::NoGpus {
            what: "slurm-gres",
            source_desc: source_desc.to_string(),
        });
    }
    if cores.is_empty() {
        return Err(ExportError::NoCores { source_desc: source_desc.to_string() });
    }
    let mut out = String::new();
    out.push_str(&format!(
        "# gres.conf for the GPUs of {source_desc}, written by nodeagent {} (plan --format slurm-gres).\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str(
        "# Cores= are Slurm core indexes (hwloc's logical Core L#), not OS CPU numbers: the cores of\n\
         # each GPU's NUMA node.\n",
    );
    out.push_str(&format!(
        "# The matching slurm.conf node line (set NodeName, keep the rest):\n#   {}\n",
        node_line(topo, cores)
    ));
    // Slurm takes `File=` on every line of a GRES or on none ("some records have File
    // specification while others do not" is fatal to slurmd): one unknown node means Count=1
    // lines throughout, each with its device node in a comment.
    let all_known = topo.gpus.iter().all(|g| devices.contains_key(&g.index));
    if !all_known {
        out.push_str(
            "# Some device nodes were not found, and Slurm takes File= on all lines or none: these\n\
             # lines use Count=1 (no device confinement). Fill in the missing nodes named below,\n\
             # then replace each Count=1 with its File= to let Slurm confine jobs to their GPUs.\n",
        );
    }
    for gpu in &topo.gpus {
        out.push('\n');
        let ty = gres_type(gpu);
        let node = gpu.numa_node.as_ref().map(|n| n.value);
        let node_cpus = node.and_then(|n| topo.node(n)).map(|n| n.cpus.value.clone());
        out.push_str(&format!(
            "# GPU {}, bus {}, NUMA node {}{}\n",
            gpu.index,
            gpu.bus_id.as_deref().unwrap_or("unknown"),
            node.map_or("unknown".to_string(), |n| n.to_string()),
            node_cpus.as_ref().map_or(String::new(), |c| format!(" (OS CPUs {})", c.to_list())),
        ));
        let core_ids = node_cpus.as_ref().map(|cpus| cores_within(cores, cpus));
        let cores_field = match &core_ids {
            Some(ids) if !ids.is_empty() => format!(" Cores={}", ids.to_list()),
            Some(_) => {
                out.push_str("# its NUMA node has no whole core: usable from any core\n");
                String::new()
            }
            None => {
                out.push_str("# its NUMA node is unknown: usable from any core\n");
                String::new()
            }
        };
        match (devices.get(&gpu.index), all_known) {
            (Some(file), true) => {
                out.push_str(&format!("Name=gpu Type={ty} File={file}{cores_field}\n"));
            }
            (Some(file), false) => {
                out.push_str(&format!("# device node: File={file}\n"));
                out.push_str(&format!("Name=gpu Type={ty} Count=1{cores_field}\n"));
            }
            (None, _) => {
                out.push_str(&format!("# device node not found: File={}\n", device_hint(gpu)));
                out.push_str(&format!("Name=gpu Type={ty} Count=1{cores_field}\n"));
            }
        }
    }
    Ok(out)
}

/// The logical indexes of the cores whose threads all lie in `cpus`.
pub fn cores_within(cores: &[CoreFacts], cpus: &CpuSet) -> CpuSet {
    cores
        .iter()
        .filter(|c| !c.cpus.is_empty() && c.cpus.is_subset(cpus))
        .map(|c| c.logical_index)
        .collect()
}

/// `NodeName=<this host> Sockets=S CoresPerSocket=C ThreadsPerCore=T Gres=gpu:<type>:<n>,...`
/// (the topology Slurm must be told, matching hwloc's view of it).
pub fn node_line(topo: &Topology, cores: &[CoreFacts]) -> String {
    let sockets = cores
        .iter()
        .map(|c| c.package.unwrap_or(0))
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        .max(1);
    let per_socket = cores.len().div_ceil(sockets);
    let threads = cores.iter().map(|c| c.cpus.len()).max().unwrap_or(1).max(1);
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    for gpu in &topo.gpus {
        *types.entry(gres_type(gpu)).or_default() += 1;
    }
    let gres = types.iter().map(|(t, n)| format!("gpu:{t}:{n}")).collect::<Vec<_>>().join(",");
    format!(
        "NodeName=<this host> Sockets={sockets} CoresPerSocket={per_socket} ThreadsPerCore={threads} Gres={gres}"
    )
}

/// Slurm's `Type=` for a GPU: its name in lower case, runs of anything but letters, digits,
/// `-` and `.` as one `_` (`NVIDIA H100 80GB HBM3` -> `nvidia_h100_80gb_hbm3`); the vendor
/// when the name is unknown.
pub fn gres_type(gpu: &Gpu) -> String {
    let name = gpu.name.clone().unwrap_or_else(|| vendor_word(gpu.vendor).to_string());
    let mut out = String::new();
    for ch in name.trim().chars() {
        if ch.is_ascii_alphanumeric() || ch == '-' || ch == '.' {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    let out = out.trim_end_matches('_').to_string();
    if out.is_empty() {
        "gpu".into()
    } else {
        out
    }
}

fn vendor_word(v: Vendor) -> &'static str {
    match v {
        Vendor::Nvidia => "nvidia",
        Vendor::Metax => "metax",
        Vendor::Amd => "amd",
        Vendor::Other => "gpu",
    }
}

/// What a missing `File=` should be, for the comment.
fn device_hint(gpu: &Gpu) -> String {
    let bus = gpu.bus_id.as_deref().unwrap_or("its bus id");
    match gpu.vendor {
        Vendor::Nvidia => format!(
            "/dev/nvidiaN (N: \"Device Minor\" in /proc/driver/nvidia/gpus/{bus}/information)"
        ),
        _ => format!("/dev/dri/renderDN (ls /sys/bus/pci/devices/{bus}/drm/)"),
    }
}

/// The device node Slurm should confine a GPU by, from the GPU's node list (as
/// `host::drm::gpu_nodes` gives it, or hwloc's OS device names under `/dev/dri/`):
/// `/dev/nvidiaN`, else `/dev/dri/renderDN`, else `/dev/dri/cardN`.
pub fn pick_node(nodes: &[String]) -> Option<String> {
    ["/dev/nvidia", "/dev/dri/renderD", "/dev/dri/card"]
        .iter()
        .find_map(|p| nodes.iter().find(|n| n.starts_with(p)))
        .cloned()
}

/// The device nodes hwloc names for each GPU (its PCI device's DRM OS devices), what a snapshot
/// can tell without the machine.
pub fn drm_nodes_from_hwloc(
    topo: &Topology,
    pci: &[crate::host::facts::PciDeviceFacts],
) -> DeviceNodes {
    let mut out = DeviceNodes::new();
    for gpu in &topo.gpus {
        let Some(bus) = &gpu.bus_id else { continue };
        let Some(dev) = pci.iter().find(|d| &d.bus_id == bus) else { continue };
        let nodes: Vec<String> =
            crate::host::drm::drm_names(dev.os_devices.iter().map(String::as_str))
                .into_iter()
                .map(|n| format!("/dev/dri/{n}"))
                .collect();
        if let Some(node) = pick_node(&nodes) {
            out.insert(gpu.index, node);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_slurm_confines_by() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            pick_node(&v(&["/dev/dri/card1", "/dev/dri/renderD129", "/dev/nvidia1"])).as_deref(),
            Some("/dev/nvidia1")
        );
        assert_eq!(
            pick_node(&v(&["/dev/dri/card1", "/dev/dri/renderD129"])).as_deref(),
            Some("/dev/dri/renderD129")
        );
        assert_eq!(pick_node(&v(&["/dev/dri/card0"])).as_deref(), Some("/dev/dri/card0"));
        assert_eq!(pick_node(&[]), None);
    }

    #[test]
    fn core_indexes_are_not_cpu_numbers() {
        // Two threads per core, siblings n and n+16 (the 2n8c2t fixture's layout), node 0 =
        // CPUs 0-7,16-23 = cores 0-7.
        let cores: Vec<CoreFacts> = (0..16)
            .map(|i| CoreFacts {
                logical_index: i,
                package: Some(i / 8),
                cpus: [i, i + 16].into_iter().collect(),
            })
            .collect();
        let node0: CpuSet = "0-7,16-23".parse().unwrap();
        assert_eq!(cores_within(&cores, &node0).to_list(), "0-7");
        // A core half inside a set is not the set's.
        let half: CpuSet = "0-7".parse().unwrap();
        assert_eq!(cores_within(&cores, &half).to_list(), "");
    }
}
