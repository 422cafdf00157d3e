//! Reader of the NUMA and PCI facts in sysfs, over an injectable root (`/sys` live, a
//! snapshot's `sysfs/` directory on replay, a temp dir in tests). It records every file it
//! read, with the text read, so `probe --save` can write them back at the same paths.
//!
//! Files read (paths relative to the root):
//! ```text
//! devices/system/node/node0/cpulist     0-15
//! devices/system/node/node0/distance    10 22 22 22 28 22 28 28
//! devices/system/node/node0/meminfo     Node 0 MemTotal:       66551808 kB
//!                                       Node 0 MemFree:         5068800 kB ...
//! bus/pci/devices/0000:05:00.0/class    0x120000 (then vendor, device, numa_node, local_cpulist)
//! devices/system/cpu/cpu0/topology/thread_siblings_list   0,64
//! ```
//! A sibling list is read only for a CPU no earlier list named (one file per core).
//! Only PCI devices that can be GPUs (display or processing-accelerator class, or named by the
//! caller) are read past `class`, so a snapshot stays small. This module does not decide which
//! of them are GPUs: `crate::host` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::cpuset::CpuSet;
use super::facts::{normalize_bus_id, CoreFacts, MachineFacts, NodeFacts, PciDeviceFacts};

#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    #[error("{path}: cannot read")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {what}: {text:?}")]
    Parse { path: PathBuf, line: usize, what: String, text: String },
}

/// One file read, relative to the sysfs root (`devices/system/node/node0/cpulist`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFile {
    pub rel: PathBuf,
    pub text: String,
}

/// What the reader found, plus the files it read.
#[derive(Debug, Clone, Default)]
pub struct SysfsFacts {
    pub machine: MachineFacts,
    pub files: Vec<ReadFile>,
}

/// Whether a PCI class code is one a GPU uses: display controllers (0x03xxxx) and processing
/// accelerators (0x12xxxx, which is how MetaX and some NVIDIA/AMD data-centre parts show up).
pub fn is_gpu_class(class: u32) -> bool {
    matches!(class >> 16, 0x03 | 0x12)
}

struct Reader<'a> {
    root: &'a Path,
    files: Vec<ReadFile>,
}

impl Reader<'_> {
    /// Reads a file; `Ok(None)` when it does not exist (sysfs attributes vary by kernel).
    fn read(&mut self, rel: &Path) -> Result<Option<String>, SysfsError> {
        let path = self.root.join(rel);
        match super::text::read_input(&path, super::text::MAX_SMALL_FILE) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                self.files.push(ReadFile { rel: rel.to_path_buf(), text: text.clone() });
                Ok(Some(text))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SysfsError::Read { path, source }),
        }
    }

    fn err(&self, rel: &Path, line: usize, what: &str, text: &str) -> SysfsError {
        let text: String = text.trim().chars().take(80).collect();
        SysfsError::Parse { path: self.root.join(rel), line, what: what.into(), text }
    }

    fn list_dir(&self, rel: &str) -> Result<Vec<String>, SysfsError> {
        let path = self.root.join(rel);
        match std::fs::read_dir(&path) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect();
                names.sort();
                Ok(names)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(SysfsError::Read { path, source }),
        }
    }
}

/// Reads NUMA nodes and candidate-GPU PCI devices below `root`. `extra_pci` names devices
/// to read whatever their class (`--gpu-pci`), in any bus-id form.
pub fn read(root: &Path, extra_pci: &[String]) -> Result<SysfsFacts, SysfsError> {
    let mut r = Reader { root, files: Vec::new() };
    let mut nodes = Vec::new();
    let mut ids: Vec<u32> = r
        .list_dir("devices/system/node")?
        .iter()
        .filter_map(|name| name.strip_prefix("node")?.parse().ok())
        .collect();
    ids.sort_unstable();
    for id in ids {
        nodes.push(read_node(&mut r, id)?);
    }
    let extra: Vec<String> = extra_pci.iter().filter_map(|b| normalize_bus_id(b)).collect();
    let mut pci_devices = Vec::new();
    for name in r.list_dir("bus/pci/devices")? {
        let Some(bus_id) = normalize_bus_id(&name) else { continue };
        let dir = PathBuf::from("bus/pci/devices").join(&name);
        let class = read_hex(&mut r, &dir.join("class"))?;
        let wanted = class.is_some_and(is_gpu_class) || extra.contains(&bus_id);
        if !wanted {
            // Not kept: drop the class file from the snapshot record too.
            if class.is_some() {
                r.files.pop();
            }
            continue;
        }
        let vendor = read_hex(&mut r, &dir.join("vendor"))?.map(|v| v as u16);
        let device = read_hex(&mut r, &dir.join("device"))?.map(|v| v as u16);
        let numa_node = match r.read(&dir.join("numa_node"))? {
            Some(text) => {
                let t = text.trim();
                match t.parse::<i64>() {
                    Ok(n) if n < 0 => None,
                    Ok(n) if n <= 65535 => Some(n as u32),
                    _ => return Err(r.err(&dir.join("numa_node"), 1, "bad node id", t)),
                }
            }
            None => None,
        };
        let local_cpus = match r.read(&dir.join("local_cpulist"))? {
            Some(text) => Some(
                CpuSet::parse_list(text.trim())
                    .map_err(|_| r.err(&dir.join("local_cpulist"), 1, "bad cpu list", &text))?,
            ),
            None => None,
        };
        pci_devices.push(PciDeviceFacts {
            bus_id,
            class,
            vendor,
            device,
            numa_node,
            local_cpus,
            os_devices: Vec::new(),
        });
    }
    let cores = read_cores(&mut r)?;
    Ok(SysfsFacts { machine: MachineFacts { nodes, pci_devices, cores }, files: r.files })
}

/// The cores from `devices/system/cpu/cpuN/topology/thread_siblings_list`, in order of their
/// first CPU; empty when the files are absent (a snapshot taken before they were read).
fn read_cores(r: &mut Reader<'_>) -> Result<Vec<CoreFacts>, SysfsError> {
    let mut cpus: Vec<u32> = r
        .list_dir("devices/system/cpu")?
        .iter()
        .filter_map(|name| name.strip_prefix("cpu")?.parse().ok())
        .collect();
    cpus.sort_unstable();
    let mut seen = CpuSet::new();
    let mut cores: Vec<CpuSet> = Vec::new();
    for cpu in cpus {
        if seen.contains(cpu) {
            continue;
        }
        let rel =
            PathBuf::from(format!("devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"));
        let Some(text) = r.read(&rel)? else { continue };
        let core =
            CpuSet::parse_list(text.trim()).map_err(|_| r.err(&rel, 1, "bad cpu list", &text))?;
        seen = seen.union(&core);
        cores.push(core);
    }
    cores.sort_by_key(CpuSet::first);
    Ok(cores
        .into_iter()
        .enumerate()
        .map(|(i, cpus)| CoreFacts { logical_index: i as u32, package: None, cpus })
        .collect())
}

fn read_hex(r: &mut Reader<'_>, rel: &Path) -> Result<Option<u32>, SysfsError> {
    let Some(text) = r.read(rel)? else { return Ok(None) };
    let t = text.trim();
    let digits = t.strip_prefix("0x").unwrap_or(t);
    u32::from_str_radix(digits, 16).map(Some).map_err(|_| r.err(rel, 1, "bad hex value", t))
}

fn read_node(r: &mut Reader<'_>, id: u32) -> Result<NodeFacts, SysfsError> {
    let dir = PathBuf::from(format!("devices/system/node/node{id}"));
    let mut node = NodeFacts { id, line: 1, ..NodeFacts::default() };
    if let Some(text) = r.read(&dir.join("cpulist"))? {
        node.cpus = CpuSet::parse_list(text.trim())
            .map_err(|_| r.err(&dir.join("cpulist"), 1, "bad cpu list", &text))?;
    }
    if let Some(text) = r.read(&dir.join("meminfo"))? {
        // "Node 0 MemTotal:       66551808 kB"
        for (i, line) in text.lines().enumerate() {
            let mut words = line.split_whitespace();
            let (Some("Node"), Some(_), Some(key), Some(value), Some("kB")) =
                (words.next(), words.next(), words.next(), words.next(), words.next())
            else {
                continue;
            };
            let value: u64 =
                value.parse().map_err(|_| r.err(&dir.join("meminfo"), i + 1, "bad value", line))?;
            match key {
                "MemTotal:" => node.memory_total_mb = Some(value / 1024),
                "MemFree:" => node.memory_free_mb = Some(value / 1024),
                _ => {}
            }
        }
    }
    if let Some(text) = r.read(&dir.join("distance"))? {
        // The distance file lists one value per node, in node-id order of the online nodes.
        let others: Vec<u32> = r
            .list_dir("devices/system/node")?
            .iter()
            .filter_map(|n| n.strip_prefix("node")?.parse().ok())
            .collect::<std::collections::BTreeSet<u32>>()
            .into_iter()
            .collect();
        let values: Vec<u32> = text
            .split_whitespace()
            .map(|w| w.parse().map_err(|_| r.err(&dir.join("distance"), 1, "bad distance", &text)))
            .collect::<Result<_, _>>()?;
        if values.len() != others.len() {
            return Err(r.err(
                &dir.join("distance"),
                1,
                &format!("{} distances for {} nodes", values.len(), others.len()),
                &text,
            ));
        }
        node.distances = others.into_iter().zip(values).collect::<BTreeMap<_, _>>();
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn two_nodes(root: &Path) {
        write(root, "devices/system/node/node0/cpulist", "0-1\n");
        write(root, "devices/system/node/node0/distance", "10 20\n");
        write(
            root,
            "devices/system/node/node0/meminfo",
            "Node 0 MemTotal:        1048576 kB\nNode 0 MemFree:          524288 kB\nNode 0 MemUsed:          524288 kB\n",
        );
        write(root, "devices/system/node/node1/cpulist", "2-3\n");
        write(root, "devices/system/node/node1/distance", "20 10\n");
        write(root, "devices/system/node/node1/meminfo", "Node 1 MemTotal:        0 kB\n");
        write(root, "devices/system/node/possible", "0-1\n");
        let gpu = "bus/pci/devices/0000:41:01.0";
        write(root, &format!("{gpu}/class"), "0x030000\n");
        write(root, &format!("{gpu}/vendor"), "0x1234\n");
        write(root, &format!("{gpu}/device"), "0x1111\n");
        write(root, &format!("{gpu}/numa_node"), "1\n");
        write(root, &format!("{gpu}/local_cpulist"), "2-3\n");
        let nic = "bus/pci/devices/0000:00:03.0";
        write(root, &format!("{nic}/class"), "0x020000\n");
        write(root, &format!("{nic}/numa_node"), "-1\n");
    }

    #[test]
    fn reads_nodes_and_gpu_class_devices() {
        let dir = tempfile::tempdir().unwrap();
        two_nodes(dir.path());
        let facts = read(dir.path(), &[]).unwrap();
        let m = &facts.machine;
        assert_eq!(m.nodes.len(), 2);
        assert_eq!(m.nodes[0].cpus.to_list(), "0-1");
        assert_eq!(m.nodes[0].memory_total_mb, Some(1024));
        assert_eq!(m.nodes[0].memory_free_mb, Some(512));
        assert_eq!(m.nodes[1].memory_total_mb, Some(0));
        assert_eq!(m.nodes[1].distances[&0], 20);
        assert_eq!(m.pci_devices.len(), 1, "the NIC is not a GPU candidate");
        let gpu = &m.pci_devices[0];
        assert_eq!(gpu.bus_id, "0000:41:01.0");
        assert_eq!(gpu.vendor, Some(0x1234));
        assert_eq!(gpu.numa_node, Some(1));
        assert_eq!(gpu.local_cpus.as_ref().unwrap().to_list(), "2-3");
        // Every file read is recorded, and the NIC's class is not.
        assert!(facts.files.iter().any(|f| f.rel.ends_with("node1/distance")));
        assert!(!facts.files.iter().any(|f| f.rel.starts_with("bus/pci/devices/0000:00:03.0")));
    }

    #[test]
    fn gpu_pci_adds_any_class_and_minus_one_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        two_nodes(dir.path());
        let facts = read(dir.path(), &["00:03.0".into()]).unwrap();
        let nic = facts.machine.pci_devices.iter().find(|d| d.bus_id == "0000:00:03.0").unwrap();
        assert_eq!(nic.numa_node, None);
    }

    #[test]
    fn garbage_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        two_nodes(dir.path());
        write(dir.path(), "devices/system/node/node1/cpulist", "2-x\n");
        let err = read(dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("node1/cpulist:1: bad cpu list"), "{err}");
        write(dir.path(), "devices/system/node/node1/cpulist", "2-3\n");
        write(dir.path(), "devices/system/node/node0/distance", "10\n");
        let err = read(dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("node0/distance:1: 1 distances for 2 nodes"), "{err}");
    }

    #[test]
    fn sibling_lists_give_one_core_each_read_once() {
        let dir = tempfile::tempdir().unwrap();
        for (cpu, list) in [(0, "0,2"), (1, "1,3"), (2, "0,2"), (3, "1,3")] {
            let rel = format!("devices/system/cpu/cpu{cpu}/topology/thread_siblings_list");
            write(dir.path(), &rel, &format!("{list}\n"));
        }
        std::fs::create_dir_all(dir.path().join("devices/system/cpu/cpufreq")).unwrap();
        let facts = read(dir.path(), &[]).unwrap();
        let cores: Vec<String> = facts.machine.cores.iter().map(|c| c.cpus.to_list()).collect();
        assert_eq!(cores, ["0,2", "1,3"]);
        // cpu2 and cpu3 were named by cpu0's and cpu1's lists: not read.
        assert_eq!(facts.files.len(), 2);
        write(dir.path(), "devices/system/cpu/cpu1/topology/thread_siblings_list", "1-x\n");
        let err = read(dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("cpu1/topology/thread_siblings_list:1: bad cpu list"), "{err}");
    }

    #[test]
    fn missing_root_is_empty_not_an_error() {
        let facts = read(Path::new("/nonexistent-sysfs-root"), &[]).unwrap();
        assert!(facts.machine.nodes.is_empty());
    }

    #[test]
    fn live_sysfs_has_at_least_one_node_with_cpus() {
        let facts = read(Path::new("/sys"), &[]).unwrap();
        assert!(!facts.machine.nodes.is_empty());
        assert!(!facts.machine.nodes[0].cpus.is_empty());
        assert!(facts.machine.nodes[0].memory_total_mb.unwrap() > 0);
    }

    proptest! {
        #[test]
        fn never_panics_on_any_cpulist_or_distance(cpus in "\\PC{0,30}", dist in "\\PC{0,30}") {
            let dir = tempfile::tempdir().unwrap();
            two_nodes(dir.path());
            write(dir.path(), "devices/system/node/node0/cpulist", &cpus);
            write(dir.path(), "devices/system/node/node1/distance", &dist);
            let _ = read(dir.path(), &[]);
        }
    }
}
