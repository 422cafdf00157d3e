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
    /// Watch the GPUs: memory, utilization, temperature, power, processes (tied to the engine)
    /// and alerts; optionally serve Prometheus `/metrics` and JSON `/status`.
    Monitor(MonitorArgs),
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
}

// ---------------------------------------------------------------------------------------------
// simulate

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Port to listen on (0 picks a free port; the bound address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
}

// ---------------------------------------------------------------------------------------------
// monitor

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GpuToolArg {
    /// mx-smi if found, else nvidia-smi.
    Auto,
    /// MetaX: the `mx-smi` status table.
    Metax,
    /// NVIDIA: `nvidia-smi --query-gpu` / `--query-compute-apps` CSV.
    Nvidia,
}

#[derive(Debug, Clone, Args)]
pub struct MonitorArgs {
    /// Take one sample, print it and exit (exit 1 if the GPU tool failed).
    #[arg(long)]
    pub once: bool,
    /// Print JSON (the `/status` document; one line per tick when not `--once`).
    #[arg(long)]
    pub json: bool,
    /// Read a snapshot directory (`mx-smi.txt`, or `nvidia-smi-query.csv` and
    /// `nvidia-smi-apps.csv`) instead of running the GPU tool.
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Which GPU tool to run.
    #[arg(long, value_enum, default_value_t = GpuToolArg::Auto)]
    pub tool: GpuToolArg,
    /// Path of the mx-smi tool.
    #[arg(long, value_name = "PATH", default_value = "mx-smi")]
    pub mx_smi: PathBuf,
    /// Path of the nvidia-smi tool.
    #[arg(long, value_name = "PATH", default_value = "nvidia-smi")]
    pub nvidia_smi: PathBuf,
    /// Time between samples, e.g. `5s`, `500ms`.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Give up on the GPU tool after this long; the sample is then marked missing.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tool_timeout: std::time::Duration,
    /// Stop after this many samples (default: run until interrupted).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Attribute GPU processes to the process tree of this engine pid (repeatable).
    #[arg(long = "engine-pid", value_name = "PID")]
    pub engine_pids: Vec<u32>,
    /// The engine's GPUs, e.g. `0,1,2,3` (default: those its processes hold memory on).
    #[arg(long, value_delimiter = ',', value_name = "INDEXES")]
    pub engine_gpus: Vec<u32>,
    /// The engine's Prometheus endpoint (vLLM `/metrics`): requests in flight for the
    /// hung-engine check, re-exported under `/metrics/engine`.
    #[arg(long, value_name = "URL")]
    pub engine_metrics: Option<String>,
    /// Serve `/metrics`, `/metrics/engine` and `/status` on this address, e.g.
    /// `127.0.0.1:9400` (port 0 picks a free port; the bound address is printed on stderr).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Alert when a GPU's memory use is above this percentage of its total.
    #[arg(long, value_name = "PCT", default_value_t = 97.0)]
    pub memory_threshold: f64,
    /// Consecutive samples at 0 % utilization with requests in flight before the engine is
    /// reported hung.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub hung_after: u32,
    /// Root of the sysfs tree (GPU NUMA nodes).
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    pub sysfs_root: PathBuf,
    /// Root of the proc tree (the engine's process tree).
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    pub proc_root: PathBuf,
}
