//! The record one sampler tick produces: what the GPU tool reported (or why nothing was), when,
//! and how long it took. Plain serde data; this module imports nothing from the crate except
//! the host fact records, so checks, metrics, views and `verify` can all share it.

use serde::{Deserialize, Serialize};

use crate::host::facts::{GpuProcess, GpuStatus, SmiStatus};

/// Which tool a sample came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SampleSource {
    MxSmi,
    NvidiaSmi,
    /// MetaX's management library `libmxsml` (gaps filled from `mx-smi`, see `monitor::metax`).
    Mxsml,
    /// `mx-smi dmon --format csv` (no library; gaps and processes from the `mx-smi` table).
    MxSmiDmon,
    /// Read from files in a snapshot directory (`--from DIR`).
    Snapshot,
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
