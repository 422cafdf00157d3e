//! The one topology model that every host source feeds: NUMA nodes (CPUs, memory, distances)
//! and GPUs (index, vendor, name, bus id, memory, NUMA node, CPU affinity, links), each fact
//! with the source it came from, and a warning wherever two sources disagree.
//!
//! Precedence, per fact (the first source that knows wins; the others are cross-checked):
//! - nodes: `numactl --hardware`, then sysfs, then hwloc; with none of them, the nodes that
//!   the GPU tool's affinity columns name (CPUs only).
//! - GPU list: the vendor tool's status table, else its topology matrix, else PCI devices of
//!   GPU class from a known GPU vendor (sysfs, then hwloc), plus any `--gpu-pci` device.
//! - GPU NUMA node: the vendor tool's `NUMA/Node Affinity`, then sysfs `numa_node`, then hwloc;
//!   `-1`/`N/A` everywhere means unknown (never silently node 0).
//! - GPU CPU affinity: the tool's `CPU Affinity`, then sysfs `local_cpulist` (only when the
//!   node is known: with `-1` it lists every CPU), then the node's CPUs.
//!
//! - cores (the CPUs of each physical core, SMT siblings together): hwloc's `Core` objects,
//!   then sysfs `thread_siblings_list`; none when neither knows.
//!
//! Conditions that later layers act on are typed facts, not warning text: a `--gpu-pci` device
//! the host lacks is `Topology::missing_gpu_pci` (and a warning, for people).
//!
//! Pure: no I/O. Imports only `crate::host` (facts flow up, never down). Planning on the model
//! is `crate::plan`'s job.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::host::cpuset::CpuSet;
use crate::host::facts::{gpu_vendor, GpuTopoRow, MachineFacts, NodeFacts, PciDeviceFacts, Vendor};
use crate::host::snapshot;
use crate::host::HostFacts;

/// Where a fact came from: a snapshot file name (the name `probe --save` gives the raw output,
/// also when probing live) and, for text outputs, the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl Evidence {
    pub fn line(file: &str, line: usize) -> Self {
        Self { file: file.to_string(), line: (line > 0).then_some(line) }
    }
    pub fn file(file: impl Into<String>) -> Self {
        Self { file: file.into(), line: None }
    }
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} line {}", self.file, line),
            None => write!(f, "{}", self.file),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fact<T> {
    pub value: T,
    pub source: Evidence,
}

impl<T> Fact<T> {
    pub fn new(value: T, source: Evidence) -> Self {
        Self { value, source }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub id: u32,
    pub cpus: Fact<CpuSet>,
    pub memory_total_mb: Option<Fact<u64>>,
    pub memory_free_mb: Option<Fact<u64>>,
    pub distances: Option<Fact<BTreeMap<u32, u32>>>,
    /// A GPU's own memory node (`GPU NUMA ID`, Grace-Hopper-like): never bind CPUs to it.
    pub gpu_memory: bool,
}

impl Node {
    pub fn has_cpus(&self) -> bool {
        !self.cpus.value.is_empty()
    }
    /// `Some(false)` for a memoryless node (`size: 0 MB`), `None` when no source says.
    pub fn has_memory(&self) -> Option<bool> {
        self.memory_total_mb.as_ref().map(|m| m.value > 0)
    }
    pub fn distance_to(&self, other: u32) -> Option<u32> {
        self.distances.as_ref().and_then(|d| d.value.get(&other).copied())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    pub index: u32,
    pub vendor: Vendor,
    pub name: Option<String>,
    /// sysfs form, `0000:0e:00.0`.
    pub bus_id: Option<String>,
    pub memory_total_mib: Option<u64>,
    /// The CPU-side NUMA node the GPU hangs off; `None` = unknown.
    pub numa_node: Option<Fact<u32>>,
    pub cpu_affinity: Option<Fact<CpuSet>>,
    /// The GPU's own memory node (`GPU NUMA ID`), if it has one.
    pub memory_node: Option<Fact<u32>>,
    /// Link code to each other GPU (`MX`, `NV12`, `SYS`), keyed by GPU index.
    pub links: BTreeMap<u32, String>,
    /// Where this GPU was listed.
    pub listed_in: Evidence,
}

/// A PCI device the user named as a GPU (`--gpu-pci`) that the host does not have. A typo
/// must not silently leave the plan to the other GPUs: the plan refuses on this fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingGpuPci {
    /// sysfs form, `0000:41:01.0`.
    pub bus_id: String,
    /// Where it was looked for (`sysfs/bus/pci/devices`, `hwloc.xml`); `None` when there was no
    /// PCI device source (sysfs, hwloc) to look in.
    pub searched: Option<String>,
}

impl MissingGpuPci {
    /// What went wrong, without the flag: "no such PCI device in sysfs/bus/pci/devices".
    pub fn problem(&self) -> String {
        match &self.searched {
            Some(file) => format!("no such PCI device in {file}"),
            None => "no PCI device source (sysfs, hwloc) to find it in".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub vendor: Vendor,
    pub nodes: Vec<Node>,
    pub gpus: Vec<Gpu>,
    /// The raw outputs the model was built from (snapshot file names).
    pub sources: Vec<String>,
    /// Human text, for people; code reads the typed facts (`missing_gpu_pci`).
    pub warnings: Vec<String>,
    /// `--gpu-pci` devices the host does not have (each also a warning). Left out of the JSON
    /// when empty, so a model without them reads as before the field existed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_gpu_pci: Vec<MissingGpuPci>,
    /// The CPUs of each physical core (its SMT siblings), in core order; `None` when no source
    /// knew them. The plan cuts shared CPUs and reserves by whole cores with it. Not in the
    /// probe JSON (the raw `hwloc.xml`/sysfs files keep it).
    #[serde(skip)]
    pub cores: Option<Fact<Vec<CpuSet>>>,
}

impl Topology {
    pub fn node(&self, id: u32) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
    pub fn gpu(&self, index: u32) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.index == index)
    }
    /// Every CPU of every node.
    pub fn all_cpus(&self) -> CpuSet {
        self.nodes.iter().fold(CpuSet::new(), |acc, n| acc.union(&n.cpus.value))
    }
}

fn sysfs_node_file(id: u32, file: &str) -> Evidence {
    Evidence::file(format!("{}/devices/system/node/node{id}/{file}", snapshot::SYSFS_DIR))
}

fn sysfs_pci_file(bus_id: &str, file: &str) -> Evidence {
    Evidence::file(format!("{}/bus/pci/devices/{bus_id}/{file}", snapshot::SYSFS_DIR))
}

/// A node source with the evidence of each of its facts.
struct NodeSource<'a> {
    name: &'static str,
    nodes: &'a [NodeFacts],
    cpus: Box<dyn Fn(&NodeFacts) -> Evidence + 'a>,
    memory: Box<dyn Fn(&NodeFacts) -> Evidence + 'a>,
    distances: Box<dyn Fn(&NodeFacts) -> Evidence + 'a>,
}

/// Builds the model from whatever sources `facts` holds. Never fails: missing knowledge is
/// `None`, conflicts are warnings.
pub fn build(facts: &HostFacts) -> Topology {
    let mut warnings = facts.warnings.clone();
    // `gpu-pci.txt` is the user's list of GPUs, not something the host reported.
    let mut sources: Vec<String> = facts
        .raw
        .files()
        .iter()
        .filter(|(n, _)| *n != snapshot::GPU_PCI)
        .map(|(n, _)| n.to_string())
        .collect();
    if facts.sysfs.as_ref().is_some_and(|s| !s.nodes.is_empty() || !s.pci_devices.is_empty()) {
        sources.push(format!("{}/", snapshot::SYSFS_DIR));
    }
    if facts.hwloc.is_some() && facts.raw.hwloc_xml.is_none() {
        sources.push("hwloc (live)".into());
    }
    if let Some((lib, _)) = &facts.mxsml {
        sources.push(format!("libmxsml ({lib})"));
    }

    let mut node_sources: Vec<NodeSource<'_>> = Vec::new();
    let size_lines: BTreeMap<u32, usize> = facts
        .raw
        .numactl
        .as_deref()
        .unwrap_or("")
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let rest = l.trim().strip_prefix("node ")?;
            let (id, field) = rest.split_once(' ')?;
            field.trim_start().starts_with("size:").then(|| Some((id.parse().ok()?, i + 1)))?
        })
        .collect();
    if let Some(nodes) = &facts.numactl {
        let ev = |n: &NodeFacts| Evidence::line(snapshot::NUMACTL, n.line);
        node_sources.push(NodeSource {
            name: snapshot::NUMACTL,
            nodes,
            cpus: Box::new(ev),
            // Cite the `node N size:` line itself (a wrapped cpu list pushes it down).
            memory: Box::new(move |n: &NodeFacts| {
                Evidence::line(snapshot::NUMACTL, size_lines.get(&n.id).copied().unwrap_or(n.line))
            }),
            distances: Box::new(|_| {
                Evidence::file(format!("{} (node distances)", snapshot::NUMACTL))
            }),
        });
    }
    if let Some(m) = facts.sysfs.as_ref().filter(|m| !m.nodes.is_empty()) {
        node_sources.push(NodeSource {
            name: "sysfs",
            nodes: &m.nodes,
            cpus: Box::new(|n: &NodeFacts| sysfs_node_file(n.id, "cpulist")),
            memory: Box::new(|n: &NodeFacts| sysfs_node_file(n.id, "meminfo")),
            distances: Box::new(|n: &NodeFacts| sysfs_node_file(n.id, "distance")),
        });
    }
    if let Some(m) = facts.hwloc.as_ref().filter(|m| !m.nodes.is_empty()) {
        let name = hwloc_name(facts);
        node_sources.push(NodeSource {
            name: "hwloc",
            nodes: &m.nodes,
            cpus: Box::new(move |n: &NodeFacts| {
                Evidence::file(format!("{name} (NUMANode {})", n.id))
            }),
            memory: Box::new(move |n: &NodeFacts| {
                Evidence::file(format!("{name} (NUMANode {})", n.id))
            }),
            distances: Box::new(move |_| Evidence::file(format!("{name} (distances)"))),
        });
    }

    let mut nodes = merge_nodes(&node_sources, &mut warnings);

    // GPU topology matrix, keyed by index.
    let (topo_file, topo_rows): (&str, BTreeMap<u32, &GpuTopoRow>) = match &facts.gpu_topo {
        Some((file, topo)) => (file.as_str(), topo.gpus.iter().map(|r| (r.index, r)).collect()),
        None => ("", BTreeMap::new()),
    };

    if nodes.is_empty() {
        nodes = nodes_from_gpu_affinity(topo_file, &topo_rows);
        if !nodes.is_empty() {
            warnings.push(format!(
                "no NUMA node source (numactl, sysfs, hwloc): node CPUs taken from the CPU Affinity column of {topo_file}; memory sizes unknown"
            ));
        }
    }

    let mut missing_gpu_pci = Vec::new();
    let mut gpus = list_gpus(facts, topo_file, &topo_rows, &mut warnings, &mut missing_gpu_pci);
    for gpu in &mut gpus {
        place_gpu(gpu, facts, topo_file, topo_rows.get(&gpu.index).copied(), &nodes, &mut warnings);
    }
    for gpu in &gpus {
        if let Some(mem) = &gpu.memory_node {
            if let Some(node) = nodes.iter_mut().find(|n| n.id == mem.value) {
                node.gpu_memory = true;
            }
        }
    }

    let cores = cores(facts);
    Topology { vendor: facts.vendor, nodes, gpus, sources, warnings, missing_gpu_pci, cores }
}

/// The cores: hwloc's, else sysfs's sibling lists; `None` when neither has any.
fn cores(facts: &HostFacts) -> Option<Fact<Vec<CpuSet>>> {
    let of = |m: &MachineFacts| m.cores.iter().map(|c| c.cpus.clone()).collect::<Vec<_>>();
    if let Some(h) = facts.hwloc.as_ref().filter(|h| !h.cores.is_empty()) {
        let ev = Evidence::file(format!("{} (Core objects)", hwloc_name(facts)));
        return Some(Fact::new(of(h), ev));
    }
    let s = facts.sysfs.as_ref().filter(|s| !s.cores.is_empty())?;
    let ev = Evidence::file(format!(
        "{}/devices/system/cpu/cpu*/topology/thread_siblings_list",
        snapshot::SYSFS_DIR
    ));
    Some(Fact::new(of(s), ev))
}

fn hwloc_name(facts: &HostFacts) -> &'static str {
    if facts.raw.hwloc_xml.is_some() {
        snapshot::HWLOC_XML
    } else {
        "hwloc"
    }
}

fn merge_nodes(sources: &[NodeSource<'_>], warnings: &mut Vec<String>) -> Vec<Node> {
    let Some(base) = sources.first() else { return Vec::new() };
    let mut nodes: Vec<Node> = base
        .nodes
        .iter()
        .map(|n| Node {
            id: n.id,
            cpus: Fact::new(n.cpus.clone(), (base.cpus)(n)),
            memory_total_mb: n.memory_total_mb.map(|v| Fact::new(v, (base.memory)(n))),
            memory_free_mb: n.memory_free_mb.map(|v| Fact::new(v, (base.memory)(n))),
            distances: (!n.distances.is_empty())
                .then(|| Fact::new(n.distances.clone(), (base.distances)(n))),
            gpu_memory: false,
        })
        .collect();
    nodes.sort_by_key(|n| n.id);
    for other in &sources[1..] {
        let base_ids: BTreeSet<u32> = nodes.iter().map(|n| n.id).collect();
        let other_ids: BTreeSet<u32> = other.nodes.iter().map(|n| n.id).collect();
        if base_ids != other_ids {
            warnings.push(format!(
                "{} lists NUMA nodes {:?} but {} lists {:?}; using {}",
                base.name, base_ids, other.name, other_ids, base.name
            ));
        }
        for o in other.nodes {
            let Some(node) = nodes.iter_mut().find(|n| n.id == o.id) else { continue };
            if node.cpus.value != o.cpus {
                warnings.push(format!(
                    "node {}: {} says cpus {:?} but {} says {:?}",
                    o.id,
                    node.cpus.source,
                    node.cpus.value.to_list(),
                    (other.cpus)(o),
                    o.cpus.to_list()
                ));
            }
            match (&node.memory_total_mb, o.memory_total_mb) {
                (Some(a), Some(b)) if differs(a.value, b) => warnings.push(format!(
                    "node {}: {} says {} MB total but {} says {} MB",
                    o.id,
                    a.source,
                    a.value,
                    (other.memory)(o),
                    b
                )),
                (None, Some(b)) => node.memory_total_mb = Some(Fact::new(b, (other.memory)(o))),
                _ => {}
            }
            if node.memory_free_mb.is_none() {
                node.memory_free_mb = o.memory_free_mb.map(|v| Fact::new(v, (other.memory)(o)));
            }
            match &node.distances {
                Some(d) if !o.distances.is_empty() && d.value != o.distances => {
                    warnings.push(format!(
                        "node {}: {} gives distances {:?} but {} gives {:?}",
                        o.id,
                        d.source,
                        d.value.values().collect::<Vec<_>>(),
                        (other.distances)(o),
                        o.distances.values().collect::<Vec<_>>()
                    ))
                }
                None if !o.distances.is_empty() => {
                    node.distances = Some(Fact::new(o.distances.clone(), (other.distances)(o)))
                }
                _ => {}
            }
        }
    }
    nodes
}

/// Memory totals from different sources differ by rounding (kB vs MB vs bytes, hwloc's huge
/// page accounting); only a gap over 2 % (or 64 MB on small nodes) is a disagreement.
fn differs(a: u64, b: u64) -> bool {
    let gap = a.abs_diff(b);
    gap > 64 && gap * 50 > a.max(b)
}

fn nodes_from_gpu_affinity(file: &str, rows: &BTreeMap<u32, &GpuTopoRow>) -> Vec<Node> {
    let mut by_node: BTreeMap<u32, Fact<CpuSet>> = BTreeMap::new();
    for row in rows.values() {
        if let (Some(node), Some(cpus)) = (row.numa_affinity, &row.cpu_affinity) {
            let entry = by_node
                .entry(node)
                .or_insert_with(|| Fact::new(CpuSet::new(), Evidence::line(file, row.line)));
            entry.value = entry.value.union(cpus);
        }
    }
    by_node
        .into_iter()
        .map(|(id, cpus)| Node {
            id,
            cpus,
            memory_total_mb: None,
            memory_free_mb: None,
            distances: None,
            gpu_memory: false,
        })
        .collect()
}

fn pci_lookup<'a>(m: Option<&'a MachineFacts>, bus_id: &str) -> Option<&'a PciDeviceFacts> {
    m?.pci_devices.iter().find(|d| d.bus_id == bus_id)
}

fn is_gpu_device(d: &PciDeviceFacts, extra: &[String]) -> bool {
    extra.contains(&d.bus_id)
        || (d.class.is_some_and(crate::host::sysfs::is_gpu_class)
            && d.vendor.and_then(gpu_vendor).is_some())
        || d.os_devices
            .iter()
            .any(|o| ["cuda", "nvml", "rsmi", "opencl"].iter().any(|p| o.starts_with(p)))
}

fn list_gpus(
    facts: &HostFacts,
    topo_file: &str,
    topo_rows: &BTreeMap<u32, &GpuTopoRow>,
    warnings: &mut Vec<String>,
    missing_gpu_pci: &mut Vec<MissingGpuPci>,
) -> Vec<Gpu> {
    let blank = |index: u32, listed_in: Evidence| Gpu {
        index,
        vendor: facts.vendor,
        name: None,
        bus_id: None,
        memory_total_mib: None,
        numa_node: None,
        cpu_affinity: None,
        memory_node: None,
        links: BTreeMap::new(),
        listed_in,
    };
    if let Some((file, smi)) = &facts.smi {
        let gpus: Vec<Gpu> = smi
            .gpus
            .iter()
            .map(|g| Gpu {
                name: g.name.clone(),
                bus_id: g.bus_id.clone(),
                memory_total_mib: g.memory_total_mib,
                ..blank(g.index, Evidence::line(file, g.line))
            })
            .collect();
        for index in topo_rows.keys() {
            if !gpus.iter().any(|g| g.index == *index) {
                warnings
                    .push(format!("{topo_file} lists GPU{index} but {file} does not; ignoring it"));
            }
        }
        if !gpus.is_empty() {
            return gpus;
        }
    }
    if !topo_rows.is_empty() {
        return topo_rows
            .values()
            .map(|r| blank(r.index, Evidence::line(topo_file, r.line)))
            .collect();
    }
    // No vendor tool: PCI devices of GPU class from a known vendor, or named by --gpu-pci.
    let extra = &facts.gpu_pci;
    let (file, machine) = match (&facts.sysfs, &facts.hwloc) {
        (Some(s), _) if s.pci_devices.iter().any(|d| is_gpu_device(d, extra)) => {
            (format!("{}/bus/pci/devices", snapshot::SYSFS_DIR), s)
        }
        (_, Some(h)) => (hwloc_name(facts).to_string(), h),
        (Some(s), None) => (format!("{}/bus/pci/devices", snapshot::SYSFS_DIR), s),
        (None, None) => {
            for bus in extra {
                note_missing(bus, None, warnings, missing_gpu_pci);
            }
            return Vec::new();
        }
    };
    let mut devices: Vec<&PciDeviceFacts> =
        machine.pci_devices.iter().filter(|d| is_gpu_device(d, extra)).collect();
    devices.sort_by(|a, b| a.bus_id.cmp(&b.bus_id));
    for bus in extra {
        if !devices.iter().any(|d| &d.bus_id == bus) {
            note_missing(bus, Some(file.clone()), warnings, missing_gpu_pci);
        }
    }
    devices
        .into_iter()
        .enumerate()
        .map(|(i, d)| Gpu {
            bus_id: Some(d.bus_id.clone()),
            vendor: d.vendor.and_then(gpu_vendor).unwrap_or(Vendor::Other),
            ..blank(i as u32, Evidence::file(format!("{file}/{}", d.bus_id)))
        })
        .collect()
}

/// A `--gpu-pci` device the host lacks: the typed fact for the plan, and the same in words for
/// people.
fn note_missing(
    bus_id: &str,
    searched: Option<String>,
    warnings: &mut Vec<String>,
    missing_gpu_pci: &mut Vec<MissingGpuPci>,
) {
    let m = MissingGpuPci { bus_id: bus_id.to_string(), searched };
    warnings.push(format!("--gpu-pci {bus_id}: {}", m.problem()));
    missing_gpu_pci.push(m);
}

fn place_gpu(
    gpu: &mut Gpu,
    facts: &HostFacts,
    topo_file: &str,
    row: Option<&GpuTopoRow>,
    nodes: &[Node],
    warnings: &mut Vec<String>,
) {
    let sys = gpu.bus_id.as_deref().and_then(|b| pci_lookup(facts.sysfs.as_ref(), b));
    let hw = gpu.bus_id.as_deref().and_then(|b| pci_lookup(facts.hwloc.as_ref(), b));
    let hwname = hwloc_name(facts);
    let label = format!("GPU{}", gpu.index);

    if let Some(row) = row {
        gpu.links = row.links.clone();
        gpu.memory_node =
            row.gpu_numa_id.map(|v| Fact::new(v, Evidence::line(topo_file, row.line)));
    }

    // Candidates for the NUMA node, in precedence order. `None` value = "says unknown".
    let mut claims: Vec<(Option<u32>, Evidence)> = Vec::new();
    if let Some(row) = row {
        let ev = Evidence::line(topo_file, row.line);
        match (row.numa_affinity, &row.cpu_affinity) {
            (Some(n), _) => claims.push((Some(n), ev)),
            (None, Some(cpus)) => {
                // No node column (or N/A) but a CPU list: the node whose CPUs it covers.
                let covering: Vec<u32> = nodes
                    .iter()
                    .filter(|n| n.has_cpus() && cpus.is_subset(&n.cpus.value))
                    .map(|n| n.id)
                    .collect();
                if let [only] = covering[..] {
                    claims.push((Some(only), ev));
                }
            }
            (None, None) => {}
        }
    }
    if let Some(d) = sys {
        let ev = gpu
            .bus_id
            .as_deref()
            .map(|b| sysfs_pci_file(b, "numa_node"))
            .unwrap_or_else(|| Evidence::file("sysfs"));
        claims.push((d.numa_node, ev));
    }
    if let Some(d) = hw {
        if d.numa_node.is_some() {
            claims.push((d.numa_node, Evidence::file(format!("{hwname} (PCIDev {})", d.bus_id))));
        }
    }
    let chosen = claims.iter().find(|(n, _)| n.is_some()).cloned();
    if let Some((Some(node), ev)) = &chosen {
        for (other, oev) in &claims {
            if other != &Some(*node) {
                let says = other.map_or("-1 (unknown)".to_string(), |n| n.to_string());
                warnings.push(format!(
                    "{label}: {ev} says NUMA node {node} but {oev} says {says}; using {node}"
                ));
            }
        }
        if nodes.is_empty() || nodes.iter().any(|n| n.id == *node) {
            gpu.numa_node = Some(Fact::new(*node, ev.clone()));
        } else {
            warnings.push(format!(
                "{label}: {ev} names NUMA node {node}, which no node source lists; treating its node as unknown"
            ));
        }
    }

    // CPU affinity.
    let all = nodes.iter().fold(CpuSet::new(), |a, n| a.union(&n.cpus.value));
    if let Some(cpus) = row.and_then(|r| r.cpu_affinity.clone()) {
        let ev = Evidence::line(topo_file, row.map_or(0, |r| r.line));
        if !all.is_empty() && !cpus.is_subset(&all) {
            warnings.push(format!(
                "{label}: {ev} gives CPU affinity {} with CPUs no node has (all CPUs: {}); ignoring it",
                cpus.to_list(),
                all.to_list()
            ));
        } else {
            gpu.cpu_affinity = Some(Fact::new(cpus, ev));
        }
    }
    if gpu.cpu_affinity.is_none() && gpu.numa_node.is_some() {
        if let Some(cpus) = sys.and_then(|d| d.local_cpus.clone()).filter(|c| !c.is_empty()) {
            let ev = gpu.bus_id.as_deref().map(|b| sysfs_pci_file(b, "local_cpulist"));
            gpu.cpu_affinity = ev.map(|ev| Fact::new(cpus, ev));
        } else if let Some(cpus) = hw.and_then(|d| d.local_cpus.clone()).filter(|c| !c.is_empty()) {
            gpu.cpu_affinity =
                Some(Fact::new(cpus, Evidence::file(format!("{hwname} (PCIDev {})", d_bus(hw)))));
        } else if let Some(node) =
            gpu.numa_node.as_ref().and_then(|n| nodes.iter().find(|x| x.id == n.value))
        {
            if node.has_cpus() {
                gpu.cpu_affinity = Some(node.cpus.clone());
            }
        }
    }
}

fn d_bus(d: Option<&PciDeviceFacts>) -> &str {
    d.map_or("", |d| d.bus_id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::facts::{GpuStatus, SmiStatus};

    fn pci(bus: &str, node: Option<u32>, cpus: &str) -> PciDeviceFacts {
        PciDeviceFacts {
            bus_id: bus.into(),
            class: Some(0x030200),
            vendor: Some(0x10de),
            numa_node: node,
            local_cpus: Some(CpuSet::parse_list(cpus).unwrap()),
            ..PciDeviceFacts::default()
        }
    }

    fn nodes() -> Vec<NodeFacts> {
        (0..2)
            .map(|id| NodeFacts {
                id,
                cpus: CpuSet::parse_list(if id == 0 { "0-3" } else { "4-7" }).unwrap(),
                memory_total_mb: Some(1000),
                memory_free_mb: Some(500),
                distances: [(0, if id == 0 { 10 } else { 20 }), (1, if id == 0 { 20 } else { 10 })]
                    .into(),
                line: 1,
            })
            .collect()
    }

    #[test]
    fn minus_one_everywhere_is_unknown_not_node_zero() {
        let facts = HostFacts {
            sysfs: Some(MachineFacts {
                nodes: nodes(),
                pci_devices: vec![pci("0000:01:00.0", None, "0-7")],
                ..Default::default()
            }),
            ..HostFacts::default()
        };
        let topo = build(&facts);
        assert_eq!(topo.gpus.len(), 1);
        assert_eq!(topo.gpus[0].numa_node, None);
        // local_cpulist lists every CPU when the node is unknown: not an affinity.
        assert_eq!(topo.gpus[0].cpu_affinity, None);
    }

    #[test]
    fn sysfs_and_hwloc_disagreeing_on_a_gpu_node_are_both_named() {
        let facts = HostFacts {
            smi: Some((
                "nvidia-smi.txt".into(),
                SmiStatus {
                    gpus: vec![GpuStatus {
                        index: 0,
                        bus_id: Some("0000:01:00.0".into()),
                        line: 9,
                        ..GpuStatus::default()
                    }],
                    ..SmiStatus::default()
                },
            )),
            sysfs: Some(MachineFacts {
                nodes: nodes(),
                pci_devices: vec![pci("0000:01:00.0", Some(1), "4-7")],
                ..Default::default()
            }),
            hwloc: Some(MachineFacts {
                nodes: nodes(),
                pci_devices: vec![pci("0000:01:00.0", Some(0), "0-3")],
                ..Default::default()
            }),
            ..HostFacts::default()
        };
        let topo = build(&facts);
        let gpu = &topo.gpus[0];
        assert_eq!(gpu.listed_in.to_string(), "nvidia-smi.txt line 9");
        assert_eq!(gpu.numa_node.as_ref().unwrap().value, 1);
        assert_eq!(gpu.cpu_affinity.as_ref().unwrap().value.to_list(), "4-7");
        assert!(
            topo.warnings.iter().any(|w| w
                .contains("sysfs/bus/pci/devices/0000:01:00.0/numa_node says NUMA node 1")
                && w.contains("hwloc (PCIDev 0000:01:00.0) says 0")),
            "{:?}",
            topo.warnings
        );
    }

    #[test]
    fn a_gpu_pci_device_with_nowhere_to_look_is_a_typed_fact_and_a_warning() {
        let facts = HostFacts { gpu_pci: vec!["0000:99:00.0".into()], ..HostFacts::default() };
        let topo = build(&facts);
        assert_eq!(
            topo.missing_gpu_pci,
            [MissingGpuPci { bus_id: "0000:99:00.0".into(), searched: None }]
        );
        assert_eq!(
            topo.warnings,
            ["--gpu-pci 0000:99:00.0: no PCI device source (sysfs, hwloc) to find it in"]
        );
        let json = serde_json::to_value(&topo).unwrap();
        assert_eq!(json["missing_gpu_pci"][0]["bus_id"], "0000:99:00.0");
        // Empty, the field is left out: probe JSON without --gpu-pci reads as before.
        let json = serde_json::to_value(build(&HostFacts::default())).unwrap();
        assert!(json.get("missing_gpu_pci").is_none(), "{json}");
    }

    #[test]
    fn cores_come_from_hwloc_then_sysfs_sibling_lists() {
        let core = |i: u32, list: &str| crate::host::facts::CoreFacts {
            logical_index: i,
            package: None,
            cpus: CpuSet::parse_list(list).unwrap(),
        };
        let sysfs =
            MachineFacts { cores: vec![core(0, "0,2"), core(1, "1,3")], ..Default::default() };
        let hwloc =
            MachineFacts { cores: vec![core(0, "0-1"), core(1, "2-3")], ..Default::default() };
        let mut facts = HostFacts { sysfs: Some(sysfs), ..HostFacts::default() };
        let lists = |t: &Topology| -> Vec<String> {
            t.cores.as_ref().unwrap().value.iter().map(CpuSet::to_list).collect()
        };
        let topo = build(&facts);
        assert_eq!(lists(&topo), ["0,2", "1,3"]);
        assert_eq!(
            topo.cores.as_ref().unwrap().source.to_string(),
            "sysfs/devices/system/cpu/cpu*/topology/thread_siblings_list"
        );
        facts.hwloc = Some(hwloc);
        let topo = build(&facts);
        assert_eq!(lists(&topo), ["0-1", "2-3"]);
        assert_eq!(topo.cores.as_ref().unwrap().source.to_string(), "hwloc (Core objects)");
        assert_eq!(build(&HostFacts::default()).cores, None);
        // Not in the probe JSON.
        assert!(serde_json::to_value(&topo).unwrap().get("cores").is_none());
    }

    #[test]
    fn a_node_id_no_node_source_lists_is_unknown() {
        let row = GpuTopoRow { index: 0, numa_affinity: Some(5), line: 2, ..GpuTopoRow::default() };
        let facts = HostFacts {
            numactl: Some(nodes()),
            gpu_topo: Some((
                "nvidia-smi-topo-m.txt".into(),
                crate::host::facts::GpuTopo { gpus: vec![row], ..Default::default() },
            )),
            ..HostFacts::default()
        };
        let topo = build(&facts);
        assert_eq!(topo.gpus[0].numa_node, None);
        assert!(topo.warnings.iter().any(|w| w.contains("names NUMA node 5")));
    }
}
