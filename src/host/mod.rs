//! Host facts: one parser per source (pure functions over text), the runners that execute the
//! tools with a timeout, host snapshots (`probe --save` / `--from`), and [`gather`], which
//! collects every source live or from a snapshot into one [`HostFacts`].
//!
//! What is fatal, per source, when probing live (documented in docs/probe-and-plan.md, "Sources"):
//! - sysfs: unreadable or garbled files are errors; a missing `/sys/devices/system/node`
//!   (kernel without NUMA) just means no nodes from sysfs.
//! - `numactl --hardware`: optional. Missing, or "No NUMA available", is a warning (sysfs knows
//!   the same); garbled output or a hang is an error.
//! - the vendor tool (`mx-smi`, `nvidia-smi`, `rocm-smi`): run when it is on PATH (or given by
//!   path). Missing while its GPUs are on the PCI bus is a warning (placement then comes from
//!   sysfs); present but failing, hanging or printing garbage is an error.
//! - hwloc (live): optional; a failure is a warning.
//!
//! From a snapshot every file is optional; any file that is there must parse.
//! Building the model from these facts is `crate::topology`'s job.

pub mod cpuset;
pub mod drm;
pub mod facts;
mod gather;
pub mod gputopo;
pub mod health;
pub mod hwloc;
pub mod mxdmon;
pub mod mxsmi;
pub mod mxsml;
pub mod numa_maps;
pub mod numactl;
pub mod numastat;
pub mod nvml;
pub mod nvsmi;
pub mod rocmsmi;
pub mod runner;
pub mod snapshot;
pub mod sysfs;
pub mod task_stat;
pub mod text;

pub use gather::gather;

use std::path::PathBuf;
use std::time::Duration;

use facts::{GpuTopo, MachineFacts, NodeFacts, SmiStatus, Vendor};
use runner::RunError;
use snapshot::RawOutputs;

/// Where to read host facts from, and how (domain form of the CLI's `SourceArgs`).
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Replay this snapshot instead of probing live.
    pub from: Option<PathBuf>,
    pub mx_smi: PathBuf,
    /// Where the MetaX driver installs `mx-smi` (`/opt/mxdriver/bin/mx-smi`); used live when
    /// `mx_smi` is the default name and that name is not on PATH.
    pub mx_smi_driver: PathBuf,
    pub nvidia_smi: PathBuf,
    pub rocm_smi: PathBuf,
    pub numactl: PathBuf,
    pub sysfs_root: PathBuf,
    /// Where `/dev/mxcd` is looked for (MetaX detection), live only.
    pub dev_root: PathBuf,
    pub timeout: Duration,
    /// Extra PCI devices to count as GPUs (`--gpu-pci`), any bus-id form.
    pub gpu_pci: Vec<String>,
    /// Read the live topology through hwloc as well.
    pub hwloc: bool,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            from: None,
            mx_smi: "mx-smi".into(),
            mx_smi_driver: "/opt/mxdriver/bin/mx-smi".into(),
            nvidia_smi: "nvidia-smi".into(),
            rocm_smi: "rocm-smi".into(),
            numactl: "numactl".into(),
            sysfs_root: "/sys".into(),
            dev_root: "/dev".into(),
            timeout: Duration::from_secs(10),
            gpu_pci: Vec::new(),
            hwloc: true,
        }
    }
}

/// How long one source took: the tool's own time (process start to exit, or file reads) and
/// ours (parsing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    pub source: String,
    pub tool: Duration,
    pub parse: Duration,
}

/// Everything the sources said, parsed, before it is merged into the topology model.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    pub vendor: Vendor,
    /// Why that vendor ("mx-smi on PATH", "PCI vendor 0x9999 at 0000:05:00.0").
    pub vendor_evidence: String,
    /// The raw outputs, as `probe --save` writes them.
    pub raw: RawOutputs,
    pub numactl: Option<Vec<NodeFacts>>,
    pub sysfs: Option<MachineFacts>,
    pub hwloc: Option<MachineFacts>,
    /// The vendor tool's status table and the snapshot file it came from.
    pub smi: Option<(String, SmiStatus)>,
    /// MetaX GPUs as `libmxsml` reports them (live, or recorded in a snapshot's `mxsml.json`)
    /// and the library file they came from.
    pub mxsml: Option<(String, Vec<mxsml::GpuFacts>)>,
    /// The GPU link/affinity matrix and the snapshot file it came from.
    pub gpu_topo: Option<(String, GpuTopo)>,
    /// `--gpu-pci` devices, normalised.
    pub gpu_pci: Vec<String>,
    /// Non-fatal problems met while gathering (a missing optional tool).
    pub warnings: Vec<String>,
    pub timings: Vec<Timing>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error(transparent)]
    Sysfs(#[from] sysfs::SysfsError),
    #[error(transparent)]
    Tool(#[from] RunError),
    /// Garbage in a tool's output: `file:line: what` (file is the snapshot path, or the tool
    /// and its arguments when live).
    #[error("{file}:{line}: {what}")]
    Parse { file: String, line: usize, what: String },
    #[error("{file}: {what}")]
    Invalid { file: String, what: String },
    #[error("--gpu-pci {value:?}: not a PCI bus id (expected e.g. 0000:41:00.0)")]
    BadGpuPci { value: String },
}
