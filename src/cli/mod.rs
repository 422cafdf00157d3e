//! Command-line types only (clap derive; the doc comments are the help text). Each command's
//! handler in `crate::cmd` turns these into domain requests before any work starts.
//!
//! Here: the command list (`Cli`, `Command`), the global flags, and the small commands' arguments
//! (demo, completions, man, `__hwloc-xml`). Each group of larger commands has its file: `plan`
//! (host sources, probe, plan, doctor), `simulate`, `serve` (serve, status, the Ray member),
//! `verify` (sweeps and `--compare`) and `monitor` (the monitor, alone or under serve). Every type
//! is re-exported here, so callers name `crate::cli::VerifyRunArgs`, never the file it is in.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod monitor;
mod plan;
mod serve;
mod simulate;
mod verify;

pub use monitor::{GpuToolArg, MonitorArgs, ServeMonitorArgs};
pub use plan::{DoctorArgs, PlanArgs, PlanFormat, ProbeArgs, SourceArgs};
pub use serve::{RayMemberArgs, RayMemberRole, ServeArgs, ServeMode, ServeRole, StatusArgs};
pub use simulate::{OutputLenDist, SimulateArgs, SimulateWorkerArgs};
pub use verify::{
    parse_seconds_or_duration, ArrivalKind, CompareArgs, DatasetKind, PacingKind, SearchArg,
    TraceFormatArg, VerifyApi, VerifyArgs, VerifyCommand, VerifyFormat, VerifyRunArgs,
};

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
    /// A worker process of `simulate --workers` (internal).
    #[command(hide = true)]
    SimulateWorker(SimulateWorkerArgs),
    /// Launch vLLM (or any engine) under the plan's binding and supervise it: binding check,
    /// readiness, liveness, restarts, clean stop; systemd notify when run as a service.
    Serve(ServeArgs),
    /// Check the host settings that bear on the binding (NUMA balancing, huge pages, CPU
    /// governor, GPU interrupts, PCIe links, offline CPUs, memory headroom, a running engine):
    /// pass, warn, fail or unknown, with evidence and fix. Exit 1 when any check fails.
    Doctor(DoctorArgs),
    /// Ask the running `nodeagent serve` for its state, engine pids, binding check, restarts,
    /// health and uptime.
    Status(StatusArgs),
    /// Measure a serving endpoint with a load sweep (TTFT, TPOT, ITL, throughput, failures).
    Verify(Box<VerifyArgs>),
    /// Watch the GPUs: memory, utilization, temperature, power, processes (tied to the engine)
    /// and alerts; optionally serve Prometheus `/metrics` and JSON `/status`.
    Monitor(MonitorArgs),
    /// Try nodeagent on any machine: plan the bundled seed host (4 x MetaX MXC500), serve the
    /// engine simulator under that binding mapped onto this machine's CPUs, check it in /proc,
    /// run a short sweep and a short binding comparison, write the report, stop everything.
    Demo(DemoArgs),
    /// Print a shell completion script for bash, zsh or fish on stdout.
    Completions(CompletionsArgs),
    /// Write a man page per command (roff) into a directory (for packagers).
    #[command(hide = true)]
    Man(ManArgs),
    /// Load one hwloc XML document for a parent nodeagent and print its facts (internal: how
    /// hwloc XML is kept out of the agent's process).
    #[command(name = "__hwloc-xml", hide = true)]
    HwlocXml(HwlocXmlArgs),
    /// Run this node's part of a multi-node Ray cluster (internal: the engine process `serve
    /// --role` starts; docs/ray.md).
    #[command(name = "__ray-member", hide = true)]
    RayMember(RayMemberArgs),
}

// ---------------------------------------------------------------------------------------------
// demo

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where to write the report (created if missing; a symlink or a file is refused; default:
    /// a fresh private `nodeagent-demo-*` directory, mode 0700, under the temp directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Host snapshot to plan from (default: the bundled seed host, 4 x MXC500).
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Trials per binding in the comparison.
    #[arg(long, default_value_t = 2, value_name = "K")]
    pub trials: u32,
}

// ---------------------------------------------------------------------------------------------
// completions / man

/// A shell `nodeagent completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell, e.g. `nodeagent completions bash > /etc/bash_completion.d/nodeagent`.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Directory to write `nodeagent.1` and `nodeagent-<command>.1` into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// __hwloc-xml (hidden)

#[derive(Debug, Clone, Args)]
pub struct HwlocXmlArgs {
    /// The XML document (`-`: standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}
