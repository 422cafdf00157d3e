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
    /// A worker process of `simulate --workers` (internal).
    #[command(hide = true)]
    SimulateWorker(SimulateWorkerArgs),
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

/// `nodeagent simulate`: every latency is in milliseconds (fractions allowed); every rate is a
/// probability per request.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on (0 picks a free port; the bound address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Model name that /v1/models lists and requests must name.
    #[arg(long, default_value = "qwen2.5", value_name = "NAME")]
    pub served_model_name: String,
    /// Seed for output lengths, token texts and faults (same seed + same request order = same
    /// answers).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Longest prompt + output in tokens; longer requests get HTTP 400.
    #[arg(long, default_value_t = 32768, value_name = "TOKENS")]
    pub max_model_len: u32,
    /// Most requests running at once; the rest wait in a FIFO queue (0 = no limit)
    /// [default: 256, or 0 with --zero-delay].
    #[arg(long, value_name = "N")]
    pub max_num_seqs: Option<u32>,
    /// Time to first token, fixed part.
    #[arg(long, default_value_t = 50.0, value_name = "MS")]
    pub prefill_base_ms: f64,
    /// Time to first token, per prompt token.
    #[arg(long, default_value_t = 0.1, value_name = "MS")]
    pub prefill_per_token_ms: f64,
    /// Time per further output token, fixed part.
    #[arg(long, default_value_t = 30.0, value_name = "MS")]
    pub decode_base_ms: f64,
    /// Time per further output token, per request running in the batch.
    #[arg(long, default_value_t = 0.1, value_name = "MS")]
    pub decode_per_running_ms: f64,
    /// Answer as fast as possible: every latency 0, no batch limit unless --max-num-seqs.
    #[arg(long)]
    pub zero_delay: bool,
    /// Output length of requests without max_tokens (or that "stop at EOS" before it).
    #[arg(long, value_enum, default_value_t = crate::sim::OutputLenDist::Uniform, value_name = "DIST")]
    pub output_len_dist: crate::sim::OutputLenDist,
    /// Mean of that output length.
    #[arg(long, default_value_t = 256, value_name = "TOKENS")]
    pub output_len_mean: u32,
    /// Rate of requests answered with HTTP 500 at once.
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub fault_500_rate: f64,
    /// Rate of responses cut half-way (connection closed, no [DONE]).
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub fault_drop_rate: f64,
    /// Rate of responses that pause --stall-ms half-way.
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub fault_stall_rate: f64,
    /// Rate of streams that send an in-band `data: {"error": ...}` half-way, then [DONE].
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub fault_stream_error_rate: f64,
    /// Length of a stall.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub stall_ms: u64,
    /// KV cache size in tokens (for vllm:gpu_cache_usage_perc).
    #[arg(long, default_value_t = 400_000, value_name = "TOKENS")]
    pub kv_cache_tokens: u64,
    /// Ground-truth records kept for /sim/requests (oldest dropped beyond).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_records: usize,
    /// Refuse connections for this long before listening, like vLLM loading a model.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub startup_delay_ms: u64,
    /// Crash (exit with --exit-code, no cleanup) this long after listening.
    #[arg(long, value_name = "MS")]
    pub exit_after_ms: Option<u64>,
    /// Crash (exit with --exit-code, no cleanup) after this many requests finished.
    #[arg(long, value_name = "N")]
    pub exit_after_requests: Option<u64>,
    /// Exit status of a simulated crash (0 is allowed: vLLM sometimes crashes with 0).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub exit_code: u8,
    /// Stop answering anything (incl. /health) this long after listening; stay alive.
    #[arg(long, value_name = "MS")]
    pub hang_after_ms: Option<u64>,
    /// Start N worker processes (`nodeagent simulate-worker`), each in its own session like
    /// Ray workers; they exit when this process dies.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub workers: u32,
    /// Workers outlive this process's death (leftovers, like Ray workers after a SIGKILL).
    #[arg(long)]
    pub orphan_workers: bool,
    /// Write this process's PID to FILE (removed on a graceful stop).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
}

/// Hidden: one worker process of `simulate --workers`.
#[derive(Debug, Clone, Args)]
pub struct SimulateWorkerArgs {
    /// Worker rank (1-based; the simulator itself is rank 0).
    #[arg(long)]
    pub rank: u32,
    /// PID of the simulator that started this worker; the worker exits when it is gone.
    #[arg(long)]
    pub parent_pid: u32,
    /// Keep running after the parent dies.
    #[arg(long)]
    pub orphan: bool,
}
