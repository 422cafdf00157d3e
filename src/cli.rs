//! Command-line types only (clap derive; the doc comments are the help text). Each command's
//! handler in `crate::cmd` turns these into domain requests before any work starts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Host-side agent for GPU LLM servers: probe the GPU/CPU/NUMA topology, plan the NUMA
/// binding, serve and supervise vLLM under it, and verify the result with a load sweep.
#[derive(Debug, Parser)]
#[command(name = "nodeagent", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Log level (error, warn, info, debug, trace); `RUST_LOG` overrides it.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read the host's GPUs, NUMA nodes and links and print the topology model.
    Probe(ProbeArgs),
    /// Recommend the numactl / container cpuset binding for each serving instance, with reasons.
    Plan(PlanArgs),
    /// Run the OpenAI-compatible engine simulator (a stand-in for vLLM in demos and tests).
    Simulate(SimulateArgs),
}

// ---------------------------------------------------------------------------------------------
// probe / plan

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
}

// ---------------------------------------------------------------------------------------------
// simulate

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Port to listen on (0 picks a free port; the bound address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
}
