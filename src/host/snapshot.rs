//! Host snapshots: the raw outputs `probe` read, saved under fixed file names (`probe --save
//! DIR`) and replayed by every command (`--from DIR`). This is the users' support bundle and
//! the tests' fixture format. Any subset of the files may be present.
//!
//! Layout of a snapshot directory:
//! ```text
//! mx-smi.txt  mx-smi-topo-m.txt  numactl-hardware.txt  nvidia-smi.txt  nvidia-smi-topo-m.txt
//! nvidia-smi-query.csv  rocm-smi-showtopo.txt  hwloc.xml  sysfs/<paths below /sys>
//! gpu-pci.txt   (the `--gpu-pci` addresses of the probe, one per line, so a replay needs no flag)
//! procfs/<paths below /proc>   (the settings `doctor` judges: numa_balancing, GPU irq affinity)
//! mxsml.json    (what libmxsml reported to a live probe: `host::mxsml::MxsmlRecord`)
//! ```
//! `sysfs/` also holds the sysfs settings `doctor` reads (THP, governors, PCIe links,
//! `msi_irqs/`); `doctor --from DIR` reads both trees as its roots.
//! This module only moves text between memory and disk; parsing is `crate::host`'s job.

use std::path::{Path, PathBuf};

use super::sysfs::ReadFile;
pub use super::text::{read_input, read_input_text, MAX_SMALL_FILE};

pub const MX_SMI: &str = "mx-smi.txt";
pub const MX_SMI_TOPO: &str = "mx-smi-topo-m.txt";
pub const NUMACTL: &str = "numactl-hardware.txt";
pub const NVIDIA_SMI: &str = "nvidia-smi.txt";
pub const NVIDIA_SMI_TOPO: &str = "nvidia-smi-topo-m.txt";
pub const NVIDIA_SMI_QUERY: &str = "nvidia-smi-query.csv";
pub const ROCM_SMI_TOPO: &str = "rocm-smi-showtopo.txt";
pub const HWLOC_XML: &str = "hwloc.xml";
pub const GPU_PCI: &str = "gpu-pci.txt";
pub const MXSML_JSON: &str = "mxsml.json";
pub const SYSFS_DIR: &str = "sysfs";
pub const PROCFS_DIR: &str = "procfs";

/// Every raw output of one probe, keyed by its snapshot file name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawOutputs {
    pub mx_smi: Option<String>,
    pub mx_smi_topo: Option<String>,
    pub numactl: Option<String>,
    pub nvidia_smi: Option<String>,
    pub nvidia_smi_topo: Option<String>,
    pub nvidia_smi_query: Option<String>,
    pub rocm_smi_topo: Option<String>,
    pub hwloc_xml: Option<String>,
    /// The PCI addresses named with `--gpu-pci`, one per line (`0000:41:01.0`).
    pub gpu_pci: Option<String>,
    /// What libmxsml reported (`host::mxsml::MxsmlRecord` as JSON).
    pub mxsml_json: Option<String>,
    /// sysfs files read, relative to the sysfs root.
    pub sysfs: Vec<ReadFile>,
    /// procfs files read (by `doctor`'s reader), relative to the procfs root.
    pub procfs: Vec<ReadFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {dir}: not a readable directory")]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("{path}: unreadable")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not text (invalid UTF-8)")]
    NotText { path: PathBuf },
    #[error("{path}: cannot write")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("snapshot {dir}: already holds a snapshot ({file}); save into a new directory so outputs of two probes never mix")]
    NotEmpty { dir: PathBuf, file: String },
    #[error("snapshot {dir}: none of the snapshot files is there (expected e.g. {NUMACTL}, {MX_SMI_TOPO}, {SYSFS_DIR}/)")]
    EmptyDir { dir: PathBuf },
}

impl RawOutputs {
    /// `(file name, text)` of every tool output present, in a fixed order.
    pub fn files(&self) -> Vec<(&'static str, &str)> {
        [
            (MX_SMI, &self.mx_smi),
            (MX_SMI_TOPO, &self.mx_smi_topo),
            (NUMACTL, &self.numactl),
            (NVIDIA_SMI, &self.nvidia_smi),
            (NVIDIA_SMI_TOPO, &self.nvidia_smi_topo),
            (NVIDIA_SMI_QUERY, &self.nvidia_smi_query),
            (ROCM_SMI_TOPO, &self.rocm_smi_topo),
            (HWLOC_XML, &self.hwloc_xml),
            (GPU_PCI, &self.gpu_pci),
            (MXSML_JSON, &self.mxsml_json),
        ]
        .into_iter()
        .filter_map(|(name, text)| text.as_deref().map(|t| (name, t)))
        .collect()
    }

    /// Writes the snapshot into `dir` (created if missing). Refuses a directory that already
    /// holds snapshot files: stale outputs of another probe would be replayed as this host's.
    pub fn save(&self, dir: &Path) -> Result<(), SnapshotError> {
        let known = [
            MX_SMI,
            MX_SMI_TOPO,
            NUMACTL,
            NVIDIA_SMI,
            NVIDIA_SMI_TOPO,
            NVIDIA_SMI_QUERY,
            ROCM_SMI_TOPO,
            HWLOC_XML,
            GPU_PCI,
            MXSML_JSON,
            SYSFS_DIR,
            PROCFS_DIR,
        ];
        if let Some(file) = known.iter().find(|f| dir.join(f).exists()) {
            return Err(SnapshotError::NotEmpty { dir: dir.to_path_buf(), file: file.to_string() });
        }
        let mkdir = |p: &Path| {
            std::fs::create_dir_all(p)
                .map_err(|source| SnapshotError::Write { path: p.to_path_buf(), source })
        };
        mkdir(dir)?;
        let write = |path: PathBuf, text: &str| {
            std::fs::write(&path, text).map_err(|source| SnapshotError::Write { path, source })
        };
        for (name, text) in self.files() {
            write(dir.join(name), text)?;
        }
        let trees = self.sysfs.iter().map(|f| (SYSFS_DIR, f));
        for (tree, file) in trees.chain(self.procfs.iter().map(|f| (PROCFS_DIR, f))) {
            // Only relative paths below the root: a crafted `..` must not escape `dir`.
            if file.rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                continue;
            }
            let path = dir.join(tree).join(&file.rel);
            if let Some(parent) = path.parent() {
                mkdir(parent)?;
            }
            write(path, &file.text)?;
        }
        Ok(())
    }
}

/// Reads the tool outputs of a snapshot (not `sysfs/`: that is read by `host::sysfs` with the
/// snapshot's `sysfs/` as root). Errors if the directory is missing or holds no snapshot file.
pub fn load(dir: &Path) -> Result<RawOutputs, SnapshotError> {
    std::fs::read_dir(dir)
        .map_err(|source| SnapshotError::Dir { dir: dir.to_path_buf(), source })?;
    let read = |name: &str| -> Result<Option<String>, SnapshotError> {
        let path = dir.join(name);
        match read_input(&path, MAX_SMALL_FILE) {
            Ok(bytes) => {
                String::from_utf8(bytes).map(Some).map_err(|_| SnapshotError::NotText { path })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SnapshotError::Read { path, source }),
        }
    };
    let raw = RawOutputs {
        mx_smi: read(MX_SMI)?,
        mx_smi_topo: read(MX_SMI_TOPO)?,
        numactl: read(NUMACTL)?,
        nvidia_smi: read(NVIDIA_SMI)?,
        nvidia_smi_topo: read(NVIDIA_SMI_TOPO)?,
        nvidia_smi_query: read(NVIDIA_SMI_QUERY)?,
        rocm_smi_topo: read(ROCM_SMI_TOPO)?,
        hwloc_xml: read(HWLOC_XML)?,
        gpu_pci: read(GPU_PCI)?,
        mxsml_json: read(MXSML_JSON)?,
        sysfs: Vec::new(),
        procfs: Vec::new(),
    };
    if raw.files().is_empty() && !dir.join(SYSFS_DIR).is_dir() {
        return Err(SnapshotError::EmptyDir { dir: dir.to_path_buf() });
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_input_refuses_what_is_not_a_regular_file_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // A fifo with no writer: a plain read blocks forever (the test would hang).
        let e = read_input(&fifo, MAX_SMALL_FILE).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a fifo)");
        let e = read_input(Path::new("/dev/zero"), MAX_SMALL_FILE).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a device)");
        let e = read_input(dir.path(), MAX_SMALL_FILE).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a directory)");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 2048]).unwrap();
        assert_eq!(read_input(&big, 2048).unwrap().len(), 2048);
        assert_eq!(read_input(&big, 1024).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        let gone = read_input(&dir.path().join("gone"), 10).unwrap_err();
        assert_eq!(gone.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn load_names_a_snapshot_file_that_is_a_device() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join(NUMACTL)).unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(matches!(&e, SnapshotError::Read { path, .. } if path.ends_with(NUMACTL)), "{e}");
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let raw = RawOutputs {
            numactl: Some("available: 1 nodes (0)\n".into()),
            hwloc_xml: Some("<topology/>".into()),
            sysfs: vec![
                ReadFile { rel: "devices/system/node/node0/cpulist".into(), text: "0-1\n".into() },
                ReadFile { rel: "../escape".into(), text: "x".into() },
            ],
            procfs: vec![ReadFile { rel: "sys/kernel/numa_balancing".into(), text: "1\n".into() }],
            ..RawOutputs::default()
        };
        raw.save(dir.path()).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back.numactl, raw.numactl);
        assert_eq!(back.hwloc_xml, raw.hwloc_xml);
        assert_eq!(back.mx_smi, None);
        let cpulist = dir.path().join("sysfs/devices/system/node/node0/cpulist");
        assert_eq!(std::fs::read_to_string(cpulist).unwrap(), "0-1\n");
        assert!(!dir.path().join("escape").exists());
        let balancing = dir.path().join("procfs/sys/kernel/numa_balancing");
        assert_eq!(std::fs::read_to_string(balancing).unwrap(), "1\n");
        // A second save into the same directory would mix two probes.
        let err = raw.save(dir.path()).unwrap_err();
        assert!(matches!(err, SnapshotError::NotEmpty { .. }), "{err}");
    }

    #[test]
    fn missing_and_empty_dirs_are_errors() {
        let err = load(Path::new("/nonexistent/snap")).unwrap_err();
        assert!(matches!(err, SnapshotError::Dir { .. }), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(matches!(err, SnapshotError::EmptyDir { .. }), "{err}");
    }

    #[test]
    fn binary_file_is_not_text() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NUMACTL), [0xff, 0xfe, 0x00]).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(matches!(err, SnapshotError::NotText { .. }), "{err}");
    }
}
