//! Machine facts from hwloc: NUMA nodes (CPUs, memory, distances) and PCI devices (class,
//! vendor/device ids, the NUMA node and CPUs they hang under, OS device names such as `card0`,
//! `cuda0`, `nvml0`), either from the live machine or from an exported XML (`lstopo --of xml`,
//! `probe --save`'s `hwloc.xml`). Reading goes through hwlocality (the system libhwloc), with
//! I/O objects enabled; nothing here parses XML by hand.
//!
//! XML sample (hwloc 2.x):
//! ```text
//! <topology version="2.0">
//!   <object type="Machine" os_index="0" cpuset="0x0000ffff" ...>
//!     <object type="Package" ...>
//!       <object type="NUMANode" os_index="0" cpuset="0x000000ff" local_memory="..."/>
//!       <object type="Bridge" ...><object type="PCIDev" pci_busid="0000:02:00.0"
//!          pci_type="0302 [10de:1234] ..."><object type="OSDev" name="cuda0" .../>
//! ```
//! hwloc 2.x cannot import hwloc 3.0 XML (`<topology version="3.0">`); that is reported as
//! [`HwlocError::UnsupportedVersion`] before hwloc is asked.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::ObjectType;
use hwlocality::object::TopologyObject;
use hwlocality::topology::builder::TypeFilter;
use hwlocality::topology::export::xml::XMLExportFlags;
use hwlocality::Topology;

use super::cpuset::CpuSet;
use super::facts::{MachineFacts, NodeFacts, PciDeviceFacts};

/// Why hwloc facts could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HwlocError {
    #[error("hwloc xml: expected a <topology> document, found {found:?}")]
    NotXml { found: String },
    #[error(
        "hwloc xml: topology version {version} cannot be imported by the hwloc {supported} library here; export it with hwloc 2.x (lstopo --of xml) or use the v2 format (hwloc 3: lstopo --export-xml-flags v2)"
    )]
    UnsupportedVersion { version: String, supported: String },
    #[error("hwloc xml: the library rejected the document ({reason})")]
    Invalid { reason: String },
    #[error("hwloc: failed to {action}: {reason}")]
    Library { action: &'static str, reason: String },
}

fn library(action: &'static str) -> impl FnOnce(String) -> HwlocError {
    move |reason| HwlocError::Library { action, reason }
}

/// Runs an hwlocality call, turning a panic inside the binding (it asserts on error codes it
/// does not expect) into an error instead of taking the whole probe down.
fn guarded<T>(
    action: &'static str,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<T, HwlocError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(library(action)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unexpected failure inside hwlocality".into());
            Err(HwlocError::Library { action, reason: msg })
        }
    }
}

/// The `version="..."` attribute of the `<topology>` element, if any.
fn xml_version(text: &str) -> Result<Option<String>, HwlocError> {
    let Some(at) = text.find("<topology") else {
        let found: String = text.trim().chars().take(40).collect();
        return Err(HwlocError::NotXml { found });
    };
    let tag_end = text[at..].find('>').map_or(text.len(), |e| at + e);
    let tag = &text[at..tag_end];
    Ok(tag.find("version=\"").map(|v| {
        let rest = &tag[v + 9..];
        rest[..rest.find('"').unwrap_or(rest.len())].to_string()
    }))
}

/// How long the isolated hwloc check of an XML document may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads an exported hwloc XML topology and reads its facts.
///
/// libhwloc 2.9 crashes (SIGSEGV) or spins on some well-formed but inconsistent documents (an
/// object missing `complete_cpuset` or `os_index`), and would take the whole probe with it.
/// So when `lstopo-no-graphics` or `lstopo` is on PATH, the document is first loaded by that
/// child process (same library) under a timeout; what it re-exports, hwloc's own canonical
/// XML, is then imported here. Without lstopo the document is imported directly
/// ([`parse_xml_in_process`]).
pub fn parse_xml(text: &str) -> Result<MachineFacts, HwlocError> {
    check_version(text)?;
    match find_lstopo() {
        Some(lstopo) => parse_xml_in_process(&canonical_xml(&lstopo, text, CHECK_TIMEOUT)?),
        None => parse_xml_in_process(text),
    }
}

fn check_version(text: &str) -> Result<(), HwlocError> {
    if let Some(version) = xml_version(text)? {
        let major = version.split('.').next().and_then(|m| m.parse::<u32>().ok());
        if major.is_none_or(|m| m >= 3) {
            return Err(HwlocError::UnsupportedVersion { version, supported: "2.x".into() });
        }
    }
    Ok(())
}

fn find_lstopo() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["lstopo-no-graphics", "lstopo"].map(|n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Has `lstopo` load `text` and re-export it (all I/O objects kept), under `timeout`.
fn canonical_xml(lstopo: &Path, text: &str, timeout: Duration) -> Result<String, HwlocError> {
    let invalid = |reason: String| HwlocError::Invalid { reason };
    let mut child = Command::new(lstopo)
        .args(["--if", "xml", "-i", "/dev/stdin", "--whole-io", "--of", "xml", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HwlocError::Library {
            action: "start lstopo to check the XML",
            reason: e.to_string(),
        })?;
    let mut stdin = child.stdin.take();
    let input = text.to_string();
    // Writer and readers in threads, so that a full pipe cannot deadlock the wait below.
    let writer = std::thread::spawn(move || {
        if let Some(mut s) = stdin.take() {
            let _ = s.write_all(input.as_bytes());
        }
    });
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_string(&mut out);
        }
        out
    });
    let mut stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut out = String::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_string(&mut out);
        }
        out
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = writer.join();
                return Err(invalid(format!(
                    "hwloc did not finish loading it within {}s",
                    timeout.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                return Err(HwlocError::Library {
                    action: "wait for lstopo",
                    reason: e.to_string(),
                })
            }
        }
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        let why = match status.signal() {
            Some(sig) => format!("hwloc crashed loading it (signal {sig})"),
            None => {
                let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message");
                format!("hwloc refused it: {}", first.trim())
            }
        };
        return Err(invalid(why));
    }
    Ok(out)
}

/// Loads an exported hwloc XML topology in this process, without the isolated check of
/// [`parse_xml`]: for XML this process produced itself ([`live`]) or that is already known
/// to load.
pub fn parse_xml_in_process(text: &str) -> Result<MachineFacts, HwlocError> {
    if let Some(version) = xml_version(text)? {
        let major = version.split('.').next().and_then(|m| m.parse::<u32>().ok());
        if major.is_none_or(|m| m >= 3) {
            return Err(HwlocError::UnsupportedVersion { version, supported: "2.x".into() });
        }
    }
    if text.contains('\0') {
        return Err(HwlocError::Invalid { reason: "the document contains a NUL byte".into() });
    }
    let topology = guarded("load the XML topology", || {
        Topology::builder()
            .from_xml(text)
            .map_err(|e| format!("{e}"))?
            .with_io_type_filter(TypeFilter::KeepAll)
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| e.to_string())
    })
    .map_err(|e| match e {
        HwlocError::Library { reason, .. } => HwlocError::Invalid { reason },
        other => other,
    })?;
    facts(&topology)
}

/// Reads the live machine's topology, with PCI devices, and exports it as XML (what
/// `probe --save` writes as `hwloc.xml`; [`parse_xml`] reads it back to the same facts).
pub fn live() -> Result<(MachineFacts, String), HwlocError> {
    let topology = guarded("load the live topology", || {
        Topology::builder()
            .with_io_type_filter(TypeFilter::KeepAll)
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| e.to_string())
    })?;
    let xml = guarded("export the topology as XML", || {
        topology
            .export_xml(XMLExportFlags::empty())
            .map(|x| x.as_str().to_string())
            .map_err(|e| e.to_string())
    })?;
    Ok((facts(&topology)?, xml))
}

fn to_cpuset<'a>(ids: impl Iterator<Item = hwlocality::bitmap::BitmapIndex> + 'a) -> CpuSet {
    ids.map(|i| u32::try_from(usize::from(i)).unwrap_or(u32::MAX)).collect()
}

fn facts(topology: &Topology) -> Result<MachineFacts, HwlocError> {
    let mut nodes: Vec<NodeFacts> = Vec::new();
    for node in topology.objects_with_type(ObjectType::NUMANode) {
        let Some(id) = node.os_index().and_then(|i| u32::try_from(i).ok()) else { continue };
        let cpus = node.cpuset().map(|s| to_cpuset(s.iter_set())).unwrap_or_default();
        let memory_total_mb = match node.attributes() {
            Some(ObjectAttributes::NUMANode(attr)) => {
                Some(attr.local_memory().map_or(0, |m| m.get() / (1024 * 1024)))
            }
            _ => None,
        };
        nodes.push(NodeFacts { id, cpus, memory_total_mb, ..Default::default() });
    }
    nodes.sort_by_key(|n| n.id);

    // The first NUMA-node distance matrix (hwloc may hold several: latency, bandwidth).
    let matrices =
        guarded("read distance matrices", || topology.distances(None).map_err(|e| e.to_string()))?;
    if let Some(matrix) = matrices.iter().find(|d| {
        d.num_objects() > 0
            && d.objects().all(|o| o.is_some_and(|o| o.object_type() == ObjectType::NUMANode))
    }) {
        for ((from, to), value) in matrix.object_distances() {
            let (Some(from), Some(to)) = (from, to) else { continue };
            let (Some(f), Some(t)) = (os_u32(from), os_u32(to)) else { continue };
            if let (Some(node), Ok(v)) =
                (nodes.iter_mut().find(|n| n.id == f), u32::try_from(value))
            {
                node.distances.insert(t, v);
            }
        }
    }

    let mut pci_devices = Vec::new();
    for dev in topology.pci_devices() {
        let Some(ObjectAttributes::PCIDevice(pci)) = dev.attributes() else { continue };
        let bus_id = format!(
            "{:04x}:{:02x}:{:02x}.{:x}",
            pci.domain(),
            pci.bus_id(),
            pci.bus_device(),
            pci.function()
        );
        let ancestor = dev.first_non_io_ancestor();
        let numa_node = ancestor.and_then(|a| a.nodeset()).and_then(|ns| {
            let ids: Vec<_> = ns.iter_set().collect();
            // The device is local to one node only when its nearest non-I/O ancestor covers
            // exactly one; a Machine-level attachment says nothing.
            (ids.len() == 1 && !nodes.is_empty())
                .then(|| u32::try_from(usize::from(ids[0])).ok())
                .flatten()
        });
        let local_cpus = ancestor.and_then(|a| a.cpuset()).map(|s| to_cpuset(s.iter_set()));
        let mut os_devices = Vec::new();
        collect_os_devices(dev, &mut os_devices);
        pci_devices.push(PciDeviceFacts {
            bus_id,
            // hwloc keeps class and subclass (0x0302); sysfs-style codes add the prog-if byte.
            class: Some(u32::from(pci.class_id()) << 8),
            vendor: Some(pci.vendor_id()),
            device: Some(pci.device_id()),
            numa_node,
            local_cpus,
            os_devices,
        });
    }
    Ok(MachineFacts { nodes, pci_devices })
}

fn os_u32(obj: &TopologyObject) -> Option<u32> {
    obj.os_index().and_then(|i| u32::try_from(i).ok())
}

fn collect_os_devices(obj: &TopologyObject, out: &mut Vec<String>) {
    for child in obj.io_children() {
        if child.object_type() == ObjectType::OSDevice {
            if let Some(name) = child.name() {
                out.push(name.to_string_lossy().into_owned());
            }
            collect_os_devices(child, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_3_is_a_clean_error() {
        let e = parse_xml("<?xml version=\"1.0\"?>\n<topology version=\"3.0\">\n</topology>")
            .unwrap_err();
        assert!(
            matches!(e, HwlocError::UnsupportedVersion { ref version, .. } if version == "3.0"),
            "{e}"
        );
    }

    #[test]
    fn not_xml_is_a_clean_error() {
        assert!(matches!(parse_xml("hello"), Err(HwlocError::NotXml { .. })));
    }
}
