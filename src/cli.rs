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
    /// Launch vLLM (or any engine) under the plan's binding and supervise it: binding check,
    /// readiness, liveness, restarts, clean stop; systemd notify when run as a service.
    Serve(ServeArgs),
    /// Ask the running `nodeagent serve` for its state, engine pids, binding check, restarts,
    /// health and uptime.
    Status(StatusArgs),
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
// serve / status

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServeMode {
    /// The binding is applied natively in the engine process before exec.
    Bare,
    /// The engine runs under `numactl` with the binding's options.
    Numactl,
    /// The engine runs in a container through the Docker Engine API.
    Container,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML): picks a host and a model profile and overrides their keys.
    #[arg(
        long,
        value_name = "FILE",
        env = "NODEAGENT_CONFIG",
        default_value = "/etc/nodeagent/nodeagent.toml"
    )]
    pub config: PathBuf,
    /// Print the effective configuration (profiles merged, CLI applied) and the exact command
    /// that would run, then exit without starting anything.
    #[arg(long)]
    pub print_config: bool,
    /// Directory for the pid file and the status socket (overrides `state_dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Launch mode (overrides `launch.mode`).
    #[arg(long, value_enum)]
    pub mode: Option<ServeMode>,
    /// Engine port (overrides `engine.port`).
    #[arg(long)]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// State directory of the running agent (where its `status.sock` is).
    #[arg(long, value_name = "DIR", default_value = "/run/nodeagent")]
    pub state_dir: PathBuf,
    /// Print the agent's status record as JSON.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the agent's answer, e.g. `5s`.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}
