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
    /// Measure a serving endpoint with a load sweep (TTFT, TPOT, ITL, throughput, failures).
    Verify(Box<VerifyArgs>),
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
// verify

/// Parses a duration: plain seconds (`120`, `0.5`, as the seed's `--read-timeout=120`) or
/// humantime (`2m`, `500ms`).
pub fn parse_seconds_or_duration(s: &str) -> Result<std::time::Duration, String> {
    if let Ok(x) = s.parse::<f64>() {
        return std::time::Duration::try_from_secs_f64(x).map_err(|e| format!("{s:?}: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (use seconds or e.g. 500ms, 2m)"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyApi {
    /// `/v1/chat/completions` (messages).
    Chat,
    /// `/v1/completions` (prompt).
    Completions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatasetKind {
    /// JSON lines with the prompt in a field (`--dataset-field`, default `question`).
    Openqa,
    /// One prompt per line of text.
    Line,
    /// ShareGPT JSON (first human turn of each conversation).
    Sharegpt,
    /// Random prompts of `--input-len` words.
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArrivalKind {
    Constant,
    Poisson,
    Gamma,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyFormat {
    /// A table per level, then the sweep table.
    Table,
    /// evalscope-style "Benchmarking summary" blocks (the seed's labels).
    Evalscope,
    /// `summary.json` on stdout.
    Json,
}

#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct VerifyArgs {
    #[command(subcommand)]
    pub command: Option<VerifyCommand>,
    #[command(flatten)]
    pub run: VerifyRunArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum VerifyCommand {
    /// Print two runs (`--out` directories or summary.json files) side by side with the changes.
    Compare {
        /// The baseline run.
        run_a: PathBuf,
        /// The run compared with it.
        run_b: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct VerifyRunArgs {
    /// Server base URL (`http://127.0.0.1:8000`) or full endpoint URL
    /// (`http://127.0.0.1:8000/v1/chat/completions`).
    #[arg(long, required = true, value_name = "URL")]
    pub url: Option<String>,
    /// API to use; a full endpoint URL implies it.
    #[arg(long, value_enum)]
    pub api: Option<VerifyApi>,
    /// Model name sent in requests (default: the first of GET /v1/models).
    #[arg(long)]
    pub model: Option<String>,
    /// Bearer token for the Authorization header.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Concurrency of each level (closed loop), e.g. `--parallel 8 16 32`; repeatable
    /// (`--parallels 8 --parallels 16`). With `--rate`, the concurrency cap of each level.
    #[arg(long, visible_alias = "parallels", num_args = 1.., value_name = "N")]
    pub parallel: Vec<u64>,
    /// Open loop: requests per second of each level (one level per rate).
    #[arg(long, num_args = 1.., value_name = "REQ_PER_S")]
    pub rate: Vec<f64>,
    /// Inter-arrival distribution of the open loop.
    #[arg(long, value_enum, default_value_t = ArrivalKind::Poisson)]
    pub arrival: ArrivalKind,
    /// Gamma shape for `--arrival gamma` (below 1 burstier than Poisson, above 1 smoother).
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Requests per level: one number for all levels, or one per level.
    #[arg(long, visible_alias = "n", num_args = 1.., value_name = "N", default_value = "1000")]
    pub number: Vec<u64>,
    /// Warmup requests run at each level's concurrency before measuring (not in any metric).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub warmup: u64,
    /// Stop sending in a level after this long (seconds or e.g. `5m`); unsent requests are reported.
    #[arg(long, value_parser = parse_seconds_or_duration, value_name = "DURATION")]
    pub duration: Option<std::time::Duration>,
    /// Longest wait for any read (response headers, each chunk).
    #[arg(long, value_parser = parse_seconds_or_duration, default_value = "120", value_name = "DURATION")]
    pub read_timeout: std::time::Duration,
    /// Longest wait for a TCP connection.
    #[arg(long, value_parser = parse_seconds_or_duration, default_value = "10", value_name = "DURATION")]
    pub connect_timeout: std::time::Duration,
    /// Longest wait from the send to the first content token (default: none).
    #[arg(long, value_parser = parse_seconds_or_duration, value_name = "DURATION")]
    pub first_token_timeout: Option<std::time::Duration>,
    /// Longest time for a whole request (default: none).
    #[arg(long, value_parser = parse_seconds_or_duration, value_name = "DURATION")]
    pub total_timeout: Option<std::time::Duration>,
    /// `max_tokens` of each request.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// `min_tokens` of each request (vLLM extension).
    #[arg(long)]
    pub min_tokens: Option<u32>,
    /// Send `ignore_eos: true` (vLLM extension) so every request produces `max_tokens`.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Sampling temperature.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// JSON object merged into every request body last (overrides the fields above).
    #[arg(long, value_name = "JSON")]
    pub extra_body: Option<String>,
    /// Do not stream (TTFT then equals latency; only for servers that cannot stream).
    #[arg(long)]
    pub no_stream: bool,
    /// Dataset kind.
    #[arg(long, value_enum, default_value_t = DatasetKind::Openqa)]
    pub dataset: DatasetKind,
    /// Dataset file (openqa, line, sharegpt).
    #[arg(long, value_name = "FILE")]
    pub dataset_path: Option<PathBuf>,
    /// Field holding the prompt in openqa JSONL (Codefuse uses `input`).
    #[arg(long, default_value = "question", value_name = "NAME")]
    pub dataset_field: String,
    /// Random dataset: words per prompt.
    #[arg(long, default_value_t = 128, value_name = "WORDS")]
    pub input_len: usize,
    /// Random dataset: sets `--max-tokens` (and `--ignore-eos`) unless given.
    #[arg(long, value_name = "TOKENS")]
    pub output_len: Option<u32>,
    /// Drop prompts longer than this many characters.
    #[arg(long, value_name = "CHARS")]
    pub max_prompt_length: Option<usize>,
    /// Drop prompts shorter than this many characters.
    #[arg(long, default_value_t = 0, value_name = "CHARS")]
    pub min_prompt_length: usize,
    /// Seed for prompt order, random prompts and arrival times.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Service-level objectives for goodput, e.g. `ttft=2s,tpot=50ms` (keys: ttft, tpot, itl, latency).
    #[arg(long, value_name = "LIST")]
    pub slo: Option<String>,
    /// Exit 1 when a level's failed/sent exceeds this fraction (0..1); a level with no success
    /// always fails the run.
    #[arg(long, value_name = "FRACTION")]
    pub max_failure_rate: Option<f64>,
    /// Write summary.json, summary.csv, requests.jsonl and evalscope-summary.txt into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value_t = VerifyFormat::Table)]
    pub format: VerifyFormat,
    /// Skip the preflight (GET /v1/models and one request).
    #[arg(long)]
    pub no_preflight: bool,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
    /// After Ctrl-C, how long requests in flight may still finish.
    #[arg(long, value_parser = parse_seconds_or_duration, default_value = "5", value_name = "DURATION")]
    pub grace: std::time::Duration,
}
