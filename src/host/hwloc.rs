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
//!
//! An XML document is never loaded in the agent's process: libhwloc 2.9 crashes (SIGSEGV,
//! SIGABRT) or spins on some well-formed but inconsistent documents (an object missing
//! `complete_cpuset`), so [`parse_xml`] loads it in a child ([`XmlLoader`]: our own binary's
//! hidden `__hwloc-xml` subcommand, else `lstopo`) under a generous time limit, and a crash
//! or a hang of the child is one error line. Only the live machine ([`live`]) is read
//! in-process. Every error's Display is one line.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::ObjectType;
use hwlocality::object::TopologyObject;
use hwlocality::topology::builder::TypeFilter;
use hwlocality::topology::export::xml::XMLExportFlags;
use hwlocality::Topology;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::cpuset::CpuSet;
use super::facts::{CoreFacts, MachineFacts, NodeFacts, PciDeviceFacts};

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
    #[error("hwloc xml: libhwloc crashed loading the document in a child process ({program}, {signal}); the document is malformed in a way hwloc does not check")]
    Crashed { program: String, signal: String },
    #[error("hwloc xml: {program} did not finish loading the document within {limit:?} and was killed (libhwloc loads real topologies in well under a second)")]
    TimedOut { program: String, limit: Duration },
    #[error("hwloc xml: cannot load the document out of process with {program}: {reason}")]
    Child { program: String, reason: String },
    #[error("hwloc xml: no program to load the document out of process ({helper} is not nodeagent and lstopo is not on PATH); install hwloc or set {HELPER_ENV} to a nodeagent binary")]
    NoLoader { helper: String },
    #[error("hwloc: failed to {action}: {reason}")]
    Library { action: &'static str, reason: String },
}

fn library(action: &'static str) -> impl FnOnce(String) -> HwlocError {
    move |reason| HwlocError::Library { action, reason: one_line(&reason, 300) }
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
            Err(HwlocError::Library { action, reason: one_line(&msg, 300) })
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

/// How long one out-of-process load of an XML document may take before the child is killed.
/// libhwloc loads the largest real topologies (thousands of PUs, hundreds of PCI devices) in
/// well under a second, so 60 s rejects only a document that would otherwise hang the agent,
/// never one the library loads in a second (a 60x margin for a loaded machine).
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variable naming the program to run as `PROGRAM __hwloc-xml -` (default: this
/// executable). Tests and embedders whose executable is not `nodeagent` set it.
pub const HELPER_ENV: &str = "NODEAGENT_HWLOC_HELPER";

/// The hidden subcommand of `nodeagent` that loads one XML document for its parent.
pub const HELPER_SUBCOMMAND: &str = "__hwloc-xml";

/// First line of the helper's answer: proves the child is a nodeagent helper (and which
/// protocol it speaks) rather than some other program that happened to exit 0.
pub const HELPER_MAGIC: &str = "nodeagent-hwloc-xml 1";

/// How exported hwloc XML is loaded: always in a child process, so that a document that makes
/// libhwloc crash (SIGSEGV, SIGABRT) or spin costs one clean error, never the agent.
///
/// The child is, in order: the `helper` (`nodeagent __hwloc-xml -`: this very library in a
/// child of our own binary, which loads the document and prints only the facts), else
/// `lstopo` (which loads it and re-exports hwloc's canonical XML, imported here). The helper
/// comes first because it does exactly what the agent needs: lstopo's re-export can be many
/// times slower than the load itself (a PU with `os_index="2147483648"` loads in 0.3 s and
/// re-exports as 67 MB of XML in 15 s), which is how a time limit used to reject documents
/// the library loads in under a second. lstopo serves where the running executable is not
/// `nodeagent` (the library linked into a test harness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlLoader {
    /// A program that answers `PROGRAM __hwloc-xml -` ([`helper_answer`] on stdout).
    pub helper: Option<PathBuf>,
    /// `lstopo-no-graphics` or `lstopo`.
    pub lstopo: Option<PathBuf>,
    /// Per-document limit; the child is killed when it runs out.
    pub timeout: Duration,
}

impl XmlLoader {
    /// The helper from [`HELPER_ENV`] or this executable, lstopo from `PATH`, [`LOAD_TIMEOUT`].
    pub fn from_env() -> Self {
        let helper = std::env::var_os(HELPER_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::current_exe().ok());
        Self { helper, lstopo: find_lstopo(), timeout: LOAD_TIMEOUT }
    }

    /// Loads `text` (an exported hwloc XML topology) in a child process and returns its facts.
    pub fn load(&self, text: &str) -> Result<MachineFacts, HwlocError> {
        check_version(text)?;
        check_text(text)?;
        if let Some(helper) = self.helper.as_deref().filter(|h| !known_not_helper(h)) {
            match run_helper(helper, text, self.timeout)? {
                Some(facts) => return Ok(facts),
                // Some other program (a test harness) answered: remember, use lstopo.
                None => mark_not_helper(helper),
            }
        }
        match &self.lstopo {
            Some(lstopo) => parse_xml_in_process(&canonical_xml(lstopo, text, self.timeout)?),
            None => Err(HwlocError::NoLoader {
                helper: self
                    .helper
                    .as_deref()
                    .map_or_else(|| "no executable".into(), |h| h.display().to_string()),
            }),
        }
    }
}

/// Loads an exported hwloc XML topology (out of process, see [`XmlLoader`]) and reads its
/// facts.
pub fn parse_xml(text: &str) -> Result<MachineFacts, HwlocError> {
    XmlLoader::from_env().load(text)
}

fn check_version(text: &str) -> Result<(), HwlocError> {
    if let Some(version) = xml_version(text)? {
        let major = version.split('.').next().and_then(|m| m.parse::<u32>().ok());
        if major.is_none_or(|m| m >= 3) {
            return Err(HwlocError::UnsupportedVersion {
                version: one_line(&version, 40),
                supported: "2.x".into(),
            });
        }
    }
    Ok(())
}

/// hwloc reads an XML buffer up to its first NUL: a document with one would be cut silently.
fn check_text(text: &str) -> Result<(), HwlocError> {
    if text.contains('\0') {
        return Err(HwlocError::Invalid { reason: "the document contains a NUL byte".into() });
    }
    Ok(())
}

fn find_lstopo() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["lstopo-no-graphics", "lstopo"].map(|n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Programs found not to be helpers in this process (so a test harness is asked only once).
static NOT_HELPERS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn known_not_helper(program: &Path) -> bool {
    NOT_HELPERS.lock().is_ok_and(|v| v.iter().any(|p| p == program))
}

fn mark_not_helper(program: &Path) {
    if let Ok(mut v) = NOT_HELPERS.lock() {
        v.push(program.to_path_buf());
    }
}

/// What the helper prints after [`HELPER_MAGIC`]: one JSON line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Answer {
    Facts(MachineFacts),
    Refused(String),
}

/// The helper's side: loads `text` in this process and returns what to print on stdout
/// ([`HELPER_MAGIC`], then one JSON line). Only a child process may call this on untrusted
/// input: libhwloc may crash on it, and that is the point of the child.
pub fn helper_answer(text: &str) -> String {
    let answer = match parse_xml_in_process(text) {
        Ok(facts) => Answer::Facts(facts),
        Err(e) => Answer::Refused(e.to_string()),
    };
    let json = serde_json::to_string(&answer)
        .unwrap_or_else(|e| format!("{{\"refused\":\"cannot encode the facts: {e}\"}}"));
    format!("{HELPER_MAGIC}\n{json}\n")
}

/// Runs `helper __hwloc-xml -` on `text`. `Ok(None)`: the program exited normally without the
/// magic line, so it is not a helper.
fn run_helper(
    helper: &Path,
    text: &str,
    timeout: Duration,
) -> Result<Option<MachineFacts>, HwlocError> {
    let program = format!("{} {HELPER_SUBCOMMAND}", helper.display());
    let mut cmd = Command::new(helper);
    cmd.args([HELPER_SUBCOMMAND, "-"]);
    let out = run_child(cmd, &program, text, timeout)?;
    let mut lines = out.stdout.lines();
    if lines.next() != Some(HELPER_MAGIC) {
        return match out.status.code() {
            Some(_) if out.status.success() || out.stdout.is_empty() && out.stderr.is_empty() => {
                Ok(None)
            }
            _ => Err(child_failed(&program, out.status, &out.stderr)),
        };
    }
    match lines.next().map(serde_json::from_str::<Answer>) {
        Some(Ok(Answer::Facts(facts))) => Ok(Some(facts)),
        Some(Ok(Answer::Refused(reason))) => {
            Err(HwlocError::Invalid { reason: one_line(&reason, 300) })
        }
        _ if !out.status.success() => Err(child_failed(&program, out.status, &out.stderr)),
        Some(Err(e)) => Err(HwlocError::Child {
            program,
            reason: one_line(&format!("unreadable answer: {e}"), 200),
        }),
        None => Err(HwlocError::Child { program, reason: "no answer after its greeting".into() }),
    }
}

/// What a child printed, and how it ended.
struct ChildOutput {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with `input` on stdin, killing it at `timeout`. Writer and readers run in
/// threads, so that a full pipe cannot deadlock the wait.
fn run_child(
    mut cmd: Command,
    program: &str,
    input: &str,
    timeout: Duration,
) -> Result<ChildOutput, HwlocError> {
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(
            |e| HwlocError::Child {
                program: program.to_string(),
                reason: one_line(&format!("cannot start it: {e}"), 200),
            },
        )?;
    let mut stdin = child.stdin.take();
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        if let Some(mut s) = stdin.take() {
            // A child that exits early closes the pipe: its exit status tells why.
            let _ = s.write_all(input.as_bytes());
        }
    });
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut s) = pipe {
                let _ = s.read_to_end(&mut out);
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let out = read(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = read(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    // Poll instead of a waiter thread: we keep ownership of the child, so the kill below can
    // never hit a reaped (and possibly reused) pid.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = writer.join();
                return Err(HwlocError::TimedOut { program: program.to_string(), limit: timeout });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => {
                return Err(HwlocError::Child {
                    program: program.to_string(),
                    reason: one_line(&format!("cannot wait for it: {e}"), 200),
                })
            }
        }
    };
    let _ = writer.join();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(ChildOutput { status, stdout, stderr })
}

/// The error for a child that crashed or refused: the signal by name, else its first line.
fn child_failed(program: &str, status: ExitStatus, stderr: &str) -> HwlocError {
    match status.signal() {
        Some(sig) => HwlocError::Crashed { program: program.to_string(), signal: signal_name(sig) },
        None => {
            let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message");
            HwlocError::Invalid {
                reason: one_line(&format!("{program} refused it: {}", first.trim()), 300),
            }
        }
    }
}

/// `signal 11 (SIGSEGV)`.
fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => format!("signal {sig} ({})", s.as_str()),
        Err(_) => format!("signal {sig}"),
    }
}

/// `text` on one line (control characters as spaces), cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}...", flat.chars().take(max).collect::<String>())
    }
}

/// Has `lstopo` load `text` and re-export it (all I/O objects kept), under `timeout`.
fn canonical_xml(lstopo: &Path, text: &str, timeout: Duration) -> Result<String, HwlocError> {
    let program = lstopo.display().to_string();
    let mut cmd = Command::new(lstopo);
    cmd.args(["--if", "xml", "-i", "/dev/stdin", "--whole-io", "--of", "xml", "-"]);
    let out = run_child(cmd, &program, text, timeout)?;
    if !out.status.success() {
        return Err(child_failed(&program, out.status, &out.stderr));
    }
    Ok(out.stdout)
}

/// Loads an exported hwloc XML topology in this process: what the helper child runs, and for
/// XML that is already known to load (lstopo's canonical re-export). Never call it on an
/// untrusted document in a process that must survive: libhwloc may crash on it.
pub fn parse_xml_in_process(text: &str) -> Result<MachineFacts, HwlocError> {
    check_version(text)?;
    check_text(text)?;
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

/// More CPUs than any machine has: a cpuset above it (or an infinite one, `0xf...f`) is a
/// malformed document, and iterating it would never end.
const MAX_CPUS: usize = 1 << 20;

fn to_cpuset(set: &hwlocality::cpu::cpuset::CpuSet, what: &str) -> Result<CpuSet, HwlocError> {
    match set.weight() {
        Some(n) if n <= MAX_CPUS => {
            Ok(set.iter_set().map(|i| u32::try_from(usize::from(i)).unwrap_or(u32::MAX)).collect())
        }
        _ => Err(HwlocError::Invalid {
            reason: format!("the cpuset of {what} is not a finite CPU list"),
        }),
    }
}

fn facts(topology: &Topology) -> Result<MachineFacts, HwlocError> {
    let mut nodes: Vec<NodeFacts> = Vec::new();
    for node in topology.objects_with_type(ObjectType::NUMANode) {
        let Some(id) = node.os_index().and_then(|i| u32::try_from(i).ok()) else { continue };
        let cpus = match node.cpuset() {
            Some(s) => to_cpuset(&s, &format!("NUMA node {id}"))?,
            None => CpuSet::default(),
        };
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
            // An infinite nodeset (`0xf...f`) covers more than one node, like any other.
            let ids: Vec<_> = ns.iter_set().take(2).collect();
            // The device is local to one node only when its nearest non-I/O ancestor covers
            // exactly one; a Machine-level attachment says nothing.
            (ids.len() == 1 && !nodes.is_empty())
                .then(|| u32::try_from(usize::from(ids[0])).ok())
                .flatten()
        });
        let local_cpus = match ancestor.and_then(|a| a.cpuset()) {
            Some(s) => Some(to_cpuset(&s, &format!("the parent of PCI device {bus_id}"))?),
            None => None,
        };
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
    let mut cores = Vec::new();
    for core in topology.objects_with_type(ObjectType::Core) {
        let Ok(logical_index) = u32::try_from(core.logical_index()) else { continue };
        let cpus = match core.cpuset() {
            Some(s) => to_cpuset(&s, &format!("core L#{logical_index}"))?,
            None => continue,
        };
        let package = core
            .ancestors()
            .find(|a| a.object_type() == ObjectType::Package)
            .and_then(|p| u32::try_from(p.logical_index()).ok());
        cores.push(CoreFacts { logical_index, package, cpus });
    }
    cores.sort_by_key(|c| c.logical_index);
    Ok(MachineFacts { nodes, pci_devices, cores })
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

    const FIXTURE: &str =
        include_str!("../../testdata/hosts/hwloc-32em64t-2n8c2t-pci-normalio/hwloc.xml");

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

    /// A fake child: a shell script in a temp dir (kept alive by the returned guard). The
    /// script is written by a `cp` child, not by this process: a file this multi-threaded test
    /// process wrote may still be open for writing in a child that another test thread forked
    /// and has not yet exec'd, and exec'ing it then fails with ETXTBSY ("Text file busy").
    fn script(body: &str) -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("child.txt");
        let path = dir.path().join("child");
        std::fs::write(&source, format!("#!/bin/sh\n{body}\n")).unwrap();
        let copied = std::process::Command::new("cp").arg(&source).arg(&path).status().unwrap();
        assert!(copied.success(), "cp {} {}", source.display(), path.display());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, path)
    }

    fn loader(helper: Option<&Path>, lstopo: Option<&Path>) -> XmlLoader {
        XmlLoader {
            helper: helper.map(Path::to_path_buf),
            lstopo: lstopo.map(Path::to_path_buf),
            timeout: Duration::from_secs(20),
        }
    }

    fn assert_one_line(e: &HwlocError) {
        let msg = e.to_string();
        assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
    }

    // Regression (issue 12, defect 8): a child that libhwloc kills is one error naming the
    // signal, and this process lives on.
    #[test]
    fn crashing_child_is_an_error_naming_the_signal() {
        let (_dir, crash) = script("cat >/dev/null; kill -SEGV $$");
        let e = loader(Some(&crash), None).load(FIXTURE).unwrap_err();
        assert!(matches!(e, HwlocError::Crashed { .. }), "{e}");
        assert!(e.to_string().contains("signal 11 (SIGSEGV)"), "{e}");
        assert_one_line(&e);
        let (_dir, abort) = script("kill -ABRT $$");
        let e = loader(None, Some(&abort)).load(FIXTURE).unwrap_err();
        assert!(e.to_string().contains("SIGABRT"), "{e}");
    }

    #[test]
    fn hanging_child_is_killed_at_the_limit() {
        let (_dir, hang) = script("exec sleep 30");
        let mut l = loader(Some(&hang), None);
        l.timeout = Duration::from_millis(300);
        let start = Instant::now();
        let e = l.load(FIXTURE).unwrap_err();
        assert!(matches!(e, HwlocError::TimedOut { .. }), "{e}");
        assert!(e.to_string().contains("300ms") && e.to_string().contains("killed"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_one_line(&e);
    }

    #[test]
    fn helper_answer_round_trips_the_facts() {
        let answer = helper_answer(FIXTURE);
        assert!(answer.starts_with(&format!("{HELPER_MAGIC}\n")), "{answer}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("answer"), &answer).unwrap();
        let (_d, fake) =
            script(&format!("cat >/dev/null; cat '{}'", dir.path().join("answer").display()));
        let facts = loader(Some(&fake), None).load(FIXTURE).unwrap();
        assert_eq!(facts, parse_xml_in_process(FIXTURE).unwrap());
        assert_eq!(facts.nodes.len(), 2);
        // The cores, in hwloc's logical order, cross the child boundary too: 2 packages of 8
        // cores, each core two threads n and n+16 (logical index != CPU number).
        assert_eq!(facts.cores.len(), 16);
        assert_eq!(facts.cores[0].cpus.to_list(), "0,16");
        assert_eq!(facts.cores[9].cpus.to_list(), "9,25");
        assert_eq!(facts.cores[9].logical_index, 9);
        assert_eq!(facts.cores[7].package, Some(0));
        assert_eq!(facts.cores[8].package, Some(1));
    }

    #[test]
    fn helper_refusal_is_an_invalid_document() {
        let refused =
            helper_answer("<topology version=\"2.0\"><object type=\"Machine\" cpuset=\"zz\">");
        assert!(refused.contains("\"refused\""), "{refused}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("answer"), &refused).unwrap();
        let (_d, fake) =
            script(&format!("cat >/dev/null; cat '{}'", dir.path().join("answer").display()));
        let e = loader(Some(&fake), None).load(FIXTURE).unwrap_err();
        assert!(matches!(e, HwlocError::Invalid { .. }), "{e}");
        assert_one_line(&e);
    }

    #[test]
    fn a_program_that_is_no_helper_falls_back_to_lstopo() {
        // `true` answers nothing: not a helper. The fake lstopo echoes the document back as
        // its "canonical" export.
        let (_d1, silent) = script("cat >/dev/null; exit 0");
        let (_d2, echo) = script("cat");
        let facts = loader(Some(&silent), Some(&echo)).load(FIXTURE).unwrap();
        assert_eq!(facts.nodes.len(), 2);
        let (_d3, silent2) = script("exit 0");
        let e = loader(Some(&silent2), None).load(FIXTURE).unwrap_err();
        assert!(matches!(e, HwlocError::NoLoader { .. }), "{e}");
        assert_one_line(&e);
    }

    #[test]
    fn nul_byte_is_refused_before_any_child() {
        let e = loader(None, None).load("<topology version=\"2.0\">\0</topology>").unwrap_err();
        assert!(e.to_string().contains("NUL"), "{e}");
    }

    #[test]
    fn signals_by_name() {
        assert_eq!(signal_name(11), "signal 11 (SIGSEGV)");
        assert_eq!(signal_name(6), "signal 6 (SIGABRT)");
        assert_eq!(one_line("a\nb\r\nc", 10), "a b  c");
        assert_eq!(one_line("abcdef", 3), "abc...");
    }
}
