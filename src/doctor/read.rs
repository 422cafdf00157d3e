//! Reads the host settings the doctor judges, below two injectable roots: the sysfs root
//! (`/sys` live, a snapshot's `sysfs/`) and the procfs root (`/proc` live, a snapshot's
//! `procfs/`). Every file read is recorded with its text, so `probe --save` writes them back at
//! the same paths and `doctor --from DIR` replays the host.
//!
//! Files read (relative to their root; the real formats):
//! ```text
//! proc: sys/kernel/numa_balancing                     1
//!       irq/142/smp_affinity_list                     0-15
//!       <pid>/comm                                    irqbalance   (only irqbalance's is kept)
//! sys:  kernel/mm/transparent_hugepage/enabled        always [madvise] never
//!       kernel/mm/transparent_hugepage/defrag         always defer defer+madvise [madvise] never
//!       devices/system/cpu/online                     0-63
//!       devices/system/cpu/cpu3/cpufreq/scaling_governor   performance
//!       bus/pci/devices/0000:18:00.0/current_link_width   16
//!       bus/pci/devices/0000:18:00.0/current_link_speed   32.0 GT/s PCIe
//!       bus/pci/devices/0000:18:00.0/max_link_width ... max_link_speed
//!       bus/pci/devices/0000:18:00.0/msi_irqs/142     msix
//! ```
//! It parses only what it must to store typed values (CPU lists, the bracketed THP choice);
//! judging is `checks.rs`'s job. A missing file is `None`, never an error (kernels differ);
//! a garbled one is an error naming the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::host::cpuset::CpuSet;
use crate::host::sysfs::ReadFile;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: cannot read")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:1: {what}: {text:?}")]
    Parse { path: PathBuf, what: &'static str, text: String },
}

/// One GPU's PCI facts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PciSettings {
    pub current_link_width: Option<String>,
    pub current_link_speed: Option<String>,
    pub max_link_width: Option<String>,
    pub max_link_speed: Option<String>,
    /// `msi_irqs/` entries; `None` when the device has no such directory.
    pub msi_irqs: Option<Vec<u32>>,
    /// `/proc/irq/N/smp_affinity_list` of each MSI interrupt (`None`: unreadable).
    pub irq_affinity: BTreeMap<u32, Option<CpuSet>>,
}

/// Every setting the checks judge, as read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostSettings {
    /// `/proc/sys/kernel/numa_balancing`, trimmed.
    pub numa_balancing: Option<String>,
    /// The bracketed choice of THP `enabled` (`always`, `madvise`, `never`).
    pub thp_enabled: Option<String>,
    /// The bracketed choice of THP `defrag`.
    pub thp_defrag: Option<String>,
    pub online_cpus: Option<CpuSet>,
    /// `scaling_governor` of every CPU that has one.
    pub governors: BTreeMap<u32, String>,
    /// Whether an `irqbalance` process runs; `None` when the procfs root lists no process.
    pub irqbalance: Option<bool>,
    /// Keyed by bus id (`0000:18:00.0`), for the GPUs asked about.
    pub pci: BTreeMap<String, PciSettings>,
    /// Every sysfs file read, relative to the sysfs root.
    pub sys_files: Vec<ReadFile>,
    /// Every procfs file read, relative to the procfs root.
    pub proc_files: Vec<ReadFile>,
}

struct Root<'a> {
    root: &'a Path,
    files: Vec<ReadFile>,
}

impl Root<'_> {
    fn read(&mut self, rel: &str) -> Result<Option<String>, ReadError> {
        let path = self.root.join(rel);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                self.files.push(ReadFile { rel: rel.into(), text: text.clone() });
                Ok(Some(text))
            }
            // Not there on this kernel, or (procfs) a process that just went away.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ESRCH) =>
            {
                Ok(None)
            }
            // A procfs or sysfs attribute that refuses reading (EINVAL/EIO on some devices)
            // is unreadable evidence, not a broken host.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIO)) => Ok(None),
            Err(source) => Err(ReadError::Read { path, source }),
        }
    }

    fn cpus(&mut self, rel: &str) -> Result<Option<CpuSet>, ReadError> {
        let Some(text) = self.read(rel)? else { return Ok(None) };
        CpuSet::parse_list(text.trim()).map(Some).map_err(|_| ReadError::Parse {
            path: self.root.join(rel),
            what: "bad cpu list",
            text: text.trim().chars().take(80).collect(),
        })
    }

    /// Entries of a directory, `None` when it is missing.
    fn list(&self, rel: &str) -> Option<Vec<String>> {
        let entries = std::fs::read_dir(self.root.join(rel)).ok()?;
        let mut names: Vec<String> =
            entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        names.sort();
        Some(names)
    }
}

/// The bracketed word of a sysfs choice file: `always [madvise] never` → `madvise`.
pub fn bracketed(text: &str) -> Option<&str> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(&text[start + 1..end])
}

/// The sysfs and procfs roots: a snapshot's `sysfs/` and `procfs/` when replaying one, else the
/// live roots given.
pub fn roots(from: Option<&Path>, sys: &Path, proc: &Path) -> (PathBuf, PathBuf) {
    use crate::host::snapshot::{PROCFS_DIR, SYSFS_DIR};
    match from {
        Some(dir) => (dir.join(SYSFS_DIR), dir.join(PROCFS_DIR)),
        None => (sys.to_path_buf(), proc.to_path_buf()),
    }
}

/// Reads every setting below `sys` and `proc` for the GPUs at `gpu_bus_ids`.
pub fn read(sys: &Path, proc: &Path, gpu_bus_ids: &[String]) -> Result<HostSettings, ReadError> {
    let mut s = Root { root: sys, files: Vec::new() };
    let mut p = Root { root: proc, files: Vec::new() };
    let mut out = HostSettings {
        numa_balancing: p.read("sys/kernel/numa_balancing")?.map(|t| t.trim().to_string()),
        ..HostSettings::default()
    };
    let choice = |root: &mut Root<'_>, rel: &str| -> Result<Option<String>, ReadError> {
        let Some(text) = root.read(rel)? else { return Ok(None) };
        match bracketed(&text) {
            Some(word) => Ok(Some(word.to_string())),
            None => Err(ReadError::Parse {
                path: root.root.join(rel),
                what: "no [bracketed] choice",
                text: text.trim().chars().take(80).collect(),
            }),
        }
    };
    out.thp_enabled = choice(&mut s, "kernel/mm/transparent_hugepage/enabled")?;
    out.thp_defrag = choice(&mut s, "kernel/mm/transparent_hugepage/defrag")?;
    out.online_cpus = s.cpus("devices/system/cpu/online")?;
    let cpu_ids: Vec<u32> = s
        .list("devices/system/cpu")
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.strip_prefix("cpu")?.parse().ok())
        .collect();
    for id in cpu_ids {
        let rel = format!("devices/system/cpu/cpu{id}/cpufreq/scaling_governor");
        if let Some(g) = s.read(&rel)? {
            out.governors.insert(id, g.trim().to_string());
        }
    }
    // irqbalance: a process whose comm is `irqbalance`. Only its comm is recorded.
    let pids: Vec<String> = p
        .list("")
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    if !pids.is_empty() || proc.join("sys").is_dir() {
        let mut found = false;
        for pid in pids {
            let rel = format!("{pid}/comm");
            if let Ok(comm) = std::fs::read_to_string(proc.join(&rel)) {
                if comm.trim() == "irqbalance" {
                    p.files.push(ReadFile { rel: rel.into(), text: comm });
                    found = true;
                }
            }
        }
        out.irqbalance = Some(found);
    }
    for bus in gpu_bus_ids {
        let dir = format!("bus/pci/devices/{bus}");
        let mut pci = PciSettings {
            current_link_width: s.read(&format!("{dir}/current_link_width"))?.map(trim),
            current_link_speed: s.read(&format!("{dir}/current_link_speed"))?.map(trim),
            max_link_width: s.read(&format!("{dir}/max_link_width"))?.map(trim),
            max_link_speed: s.read(&format!("{dir}/max_link_speed"))?.map(trim),
            ..PciSettings::default()
        };
        if let Some(names) = s.list(&format!("{dir}/msi_irqs")) {
            let mut irqs = Vec::new();
            for name in names {
                let Ok(irq) = name.parse::<u32>() else { continue };
                // Recorded so a snapshot keeps the directory (the text is `msi` or `msix`).
                s.read(&format!("{dir}/msi_irqs/{irq}"))?;
                irqs.push(irq);
                let affinity = p.cpus(&format!("irq/{irq}/smp_affinity_list"))?;
                pci.irq_affinity.insert(irq, affinity);
            }
            pci.msi_irqs = Some(irqs);
        }
        out.pci.insert(bus.clone(), pci);
    }
    out.sys_files = s.files;
    out.proc_files = p.files;
    Ok(out)
}

fn trim(t: String) -> String {
    t.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracketed_choice() {
        assert_eq!(bracketed("always [madvise] never\n"), Some("madvise"));
        assert_eq!(bracketed("[always] defer defer+madvise madvise never"), Some("always"));
        assert_eq!(bracketed("always madvise never"), None);
        assert_eq!(bracketed("]["), None);
    }

    #[test]
    fn missing_roots_read_as_unknown() {
        let s = read(
            Path::new("/nonexistent/sys"),
            Path::new("/nonexistent/proc"),
            &["0000:18:00.0".into()],
        )
        .unwrap();
        assert_eq!(s.numa_balancing, None);
        assert_eq!(s.irqbalance, None);
        assert_eq!(s.pci["0000:18:00.0"].msi_irqs, None);
        assert!(s.sys_files.is_empty() && s.proc_files.is_empty());
    }

    #[test]
    fn garbled_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let thp = dir.path().join("kernel/mm/transparent_hugepage");
        std::fs::create_dir_all(&thp).unwrap();
        std::fs::write(thp.join("enabled"), "always madvise never\n").unwrap();
        let err = read(dir.path(), dir.path(), &[]).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "transparent_hugepage/enabled:1: no [bracketed] choice: \"always madvise never\""
            ),
            "{err}"
        );
        std::fs::write(thp.join("enabled"), "[never]\n").unwrap();
        std::fs::create_dir_all(dir.path().join("devices/system/cpu")).unwrap();
        std::fs::write(dir.path().join("devices/system/cpu/online"), "0-x\n").unwrap();
        let err = read(dir.path(), dir.path(), &[]).unwrap_err().to_string();
        assert!(err.ends_with("devices/system/cpu/online:1: bad cpu list: \"0-x\""), "{err}");
    }
}
