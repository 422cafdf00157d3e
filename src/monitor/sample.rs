//! The record one sampler tick produces: what the GPU tool reported (or why nothing was), when,
//! and how long it took. Plain serde data; this module imports nothing from the crate except
//! the host fact records, so checks, metrics, views and `verify` can all share it.

use serde::{Deserialize, Serialize};

use crate::host::facts::{GpuProcess, GpuStatus, SmiStatus};
use crate::host::health::GpuHealth;

/// Which source a sample came from: each vendor arm of the sampler says which one it used
/// (docs/gpu-sources.md lists what each gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SampleSource {
    /// NVIDIA's management library (`libnvidia-ml.so.1`).
    #[serde(rename = "nvml")]
    Nvml,
    /// `nvidia-smi --query-gpu` / `--query-compute-apps` CSV.
    #[serde(rename = "nvidia-smi")]
    NvidiaSmi,
    /// MetaX's management library (`libmxsml.so`).
    #[serde(rename = "mxsml")]
    Mxsml,
    /// `mx-smi dmon ... --format csv`.
    #[serde(rename = "mx-smi dmon")]
    MxSmiDmon,
    /// The `mx-smi` status table (or its `-j` JSON).
    #[serde(rename = "mx-smi")]
    MxSmi,
    /// Read from files in a snapshot directory (`--from DIR`).
    #[serde(rename = "snapshot")]
    Snapshot,
}

impl SampleSource {
    /// The name in `/status`, `/metrics` (`source` label) and the terminal view.
    pub fn as_str(self) -> &'static str {
        match self {
            SampleSource::Nvml => "nvml",
            SampleSource::NvidiaSmi => "nvidia-smi",
            SampleSource::Mxsml => "mxsml",
            SampleSource::MxSmiDmon => "mx-smi dmon",
            SampleSource::MxSmi => "mx-smi",
            SampleSource::Snapshot => "snapshot",
        }
    }
}

/// One tick of the sampler. `status` is `None` when the tool hung, failed or printed something
/// unreadable: the sample is then *missing* and `missing` says why. A missing sample is data
/// too: checks count them, metrics export `nodeagent_gpu_sample_up 0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Wall-clock time the tick started, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub source: SampleSource,
    /// How long the tool took (or how long we waited before giving up), in milliseconds.
    pub duration_ms: f64,
    pub status: Option<SmiStatus>,
    /// Why there is no status: `"mx-smi timed out after 5s"`, `"nvidia-smi exited with 9: ..."`.
    pub missing: Option<String>,
    /// Health readings per GPU (clocks, ECC, PCIe and GPU links), where the source gives them
    /// (the vendor libraries); empty for the tools' tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<GpuHealth>,
    /// Fields the source could not read this tick, one note each (`gpu 0 power: not
    /// supported`): the field is absent and the rest of the sample stands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<String>,
}

impl Sample {
    pub fn gpus(&self) -> &[GpuStatus] {
        self.status.as_ref().map(|s| s.gpus.as_slice()).unwrap_or(&[])
    }

    pub fn processes(&self) -> &[GpuProcess] {
        self.status.as_ref().map(|s| s.processes.as_slice()).unwrap_or(&[])
    }

    pub fn is_missing(&self) -> bool {
        self.status.is_none()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
