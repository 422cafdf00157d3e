//! The arguments of `probe`, `plan` and `doctor`: where host facts come from (`SourceArgs`,
//! flattened into serve's too) and what the plan is asked for. Clap types only.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Where host facts come from: live tools, or a snapshot directory written by `probe --save`.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Replay a host snapshot (a directory written by `probe --save`) instead of probing live.
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Path of the mx-smi tool.
    #[arg(long, value_name = "PATH", default_value = "mx-smi")]
    pub mx_smi: PathBuf,
    /// Path of the nvidia-smi tool.
    #[arg(long, value_name = "PATH", default_value = "nvidia-smi")]
    pub nvidia_smi: PathBuf,
    /// Path of the rocm-smi tool.
    #[arg(long, value_name = "PATH", default_value = "rocm-smi")]
    pub rocm_smi: PathBuf,
    /// Path of the numactl tool.
    #[arg(long, value_name = "PATH", default_value = "numactl")]
    pub numactl: PathBuf,
    /// Root of the sysfs tree to read (for tests and chroots).
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    pub sysfs_root: PathBuf,
    /// Timeout for each external tool, e.g. `10s`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tool_timeout: std::time::Duration,
    /// Count the PCI device at this address as a GPU (repeatable), for vendors nodeagent does
    /// not recognise.
    #[arg(long = "gpu-pci", value_name = "BUS_ID")]
    pub gpu_pci: Vec<String>,
    /// Do not read the live topology through hwloc.
    #[arg(long)]
    pub no_hwloc: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write every raw output read into DIR (a host snapshot / support bundle).
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// Print how long each source took on stderr: the tool's own time and ours (parsing).
    #[arg(long)]
    pub timings: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// GPUs to serve with (default: all), e.g. `0,1,2,3`.
    #[arg(long, value_delimiter = ',', value_name = "INDEXES")]
    pub gpus: Vec<u32>,
    /// Number of serving instances to split the GPUs into.
    #[arg(long, conflicts_with = "tp")]
    pub instances: Option<u32>,
    /// Tensor-parallel size of each instance (GPUs per instance).
    #[arg(long)]
    pub tp: Option<u32>,
    /// Host memory the engine needs, in GB: when the bound nodes have less free, the plan
    /// uses `--preferred` instead of `--membind`.
    #[arg(long, value_name = "GB")]
    pub host_memory_gb: Option<f64>,
    /// Instances on one NUMA node keep the node's CPUs shared (default: each gets its own
    /// part, sized by its GPU count).
    #[arg(long)]
    pub share_cores: bool,
    /// CPUs per NUMA node left out of every instance's binding (whole cores where the host's
    /// cores are known, each node's first), for the OS, the agent, tokenizers and load
    /// generators.
    #[arg(long, value_name = "N")]
    pub reserve_cpus: Option<u32>,
    /// Output format: `text`, `json` (as `--json`), `slurm-gres` (Slurm `gres.conf` lines with
    /// Slurm's core indexes), `nfd` (a Node Feature Discovery local feature file).
    #[arg(long, value_enum, conflicts_with = "json")]
    pub format: Option<PlanFormat>,
    /// With `--format nfd`: a `verify --compare none,auto` run's `compare.json`; the gain it
    /// measured for the plan's binding becomes labels.
    #[arg(long, value_name = "FILE", requires = "format")]
    pub compare_result: Option<PathBuf>,
    /// With `--format slurm-gres`: the device file of GPU INDEX (`3=/dev/nvidia3`), for GPUs
    /// whose node the probe cannot find (a snapshot taken on another machine); repeatable.
    #[arg(long = "gres-file", value_name = "INDEX=PATH", requires = "format")]
    pub gres_files: Vec<String>,
}

/// What `nodeagent plan` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
    SlurmGres,
    Nfd,
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Where the host facts come from, which GPUs and split: the binding checked is the one
    /// `nodeagent plan` gives for the same flags (`--from DIR` replays a `probe --save`
    /// snapshot, settings included).
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Root of the procfs tree to read live (for tests and chroots).
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// State directory of a running `nodeagent serve`, whose engine is checked against the
    /// plan (no agent answering: that check is `unknown`).
    #[arg(long, value_name = "DIR", default_value = "/run/nodeagent")]
    pub state_dir: PathBuf,
}
