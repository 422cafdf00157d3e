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
    #[arg(long, value_enum, default_value_t = OutputLenDist::Uniform, value_name = "DIST")]
    pub output_len_dist: OutputLenDist,
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
    /// Produce no more tokens this long after listening (requests stay running), while
    /// /health and /metrics still answer: a stuck engine behind a live API server.
    #[arg(long, value_name = "MS")]
    pub freeze_after_ms: Option<u64>,
    /// Admit no new request this long after listening (they wait, counted in
    /// vllm:num_requests_waiting; running ones finish), while /health and /metrics still
    /// answer: a dead scheduler behind a live API server.
    #[arg(long, value_name = "MS")]
    pub stop_admitting_after_ms: Option<u64>,
    /// Every completion answers HTTP 500 this long after listening, while /health,
    /// /v1/models and /metrics still answer (vLLM #1492).
    #[arg(long, value_name = "MS")]
    pub fail_completions_after_ms: Option<u64>,
    /// Answer 404 on /health and /live, like llama-cpp-python's server (it has /v1/models
    /// only).
    #[arg(long)]
    pub no_health: bool,
    /// Count the prompt's tokens in vllm:prompt_tokens_total chunk by chunk over the prefill
    /// time, N tokens a chunk (vLLM's chunked prefill); 0 counts them all at admission.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub prefill_chunk_tokens: u32,
    /// Prefix cache of N blocks (vLLM's automatic prefix caching): a prompt whose leading
    /// blocks were seen recently prefills faster; counted in vllm:prefix_cache_queries_total and
    /// vllm:prefix_cache_hits_total. 0: no prefix cache.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub prefix_cache_blocks: u64,
    /// Tokens per prefix-cache block (vLLM's `--block-size`).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub prefix_block_tokens: u32,
    /// Prefill cost of a cached prompt token, a fraction of an uncached one's (0 to 1).
    #[arg(long, default_value_t = 0.1, value_name = "FRACTION")]
    pub prefix_hit_cost: f64,
    /// Start N worker processes (`nodeagent simulate-worker`), each in its own session like
    /// Ray workers; they exit when this process dies.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub workers: u32,
    /// Workers outlive this process's death (leftovers, like Ray workers after a SIGKILL).
    #[arg(long)]
    pub orphan_workers: bool,
    /// Each worker allocates and touches this many MiB and holds them (a stand-in for a GPU
    /// worker's host memory, for the memory placement audit).
    #[arg(long, default_value_t = 0, value_name = "MIB")]
    pub worker_memory_mb: u64,
    /// Write this process's PID to FILE (removed on a graceful stop).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
}

/// `simulate --output-len-dist`; `cmd::simulate` maps it to the simulator's own type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputLenDist {
    /// Always the mean.
    Fixed,
    /// Uniform on 1 ..= 2×mean−1.
    Uniform,
    /// Exponential with the given mean (rounded, at least 1): a long tail.
    Exponential,
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
    /// Allocate and touch this many MiB first, and hold them.
    #[arg(long, default_value_t = 0)]
    pub memory_mb: u64,
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
    /// Which instance of the plan this agent serves (overrides `launch.instance`): its state
    /// dir is `STATE_DIR/N` for N >= 1 and its port `engine.port + N` unless `launch.ports`
    /// lists it (docs/multi-instance.md).
    #[arg(long, value_name = "N")]
    pub instance: Option<usize>,
    /// With `--print-config`: print `{"config": ..., "launch": ...}` as JSON (the contract is in
    /// docs/serve.md).
    #[arg(long, requires = "print_config")]
    pub json: bool,
    /// When running as root, accept a config, profile or engine program that another user can
    /// write (group/world writable, or owned by another user), with a warning. For labs only:
    /// whoever can write such a file can run anything as root.
    #[arg(long)]
    pub allow_insecure_files: bool,
    /// Before the first start, stop (SIGTERM, then SIGKILL after 10 s) engine-shaped processes
    /// of a manual run that hold the instance's GPUs after their parent died (`VLLM::EngineCore`,
    /// `VLLM::Worker_TP*`, `ray::RayWorkerWrapper`, `python ... vllm serve`, re-parented to PID
    /// 1) instead of refusing to start. Other processes on the GPUs are never killed.
    #[arg(long)]
    pub reclaim_orphans: bool,
    /// This node's part in a multi-node Ray cluster (overrides `ray.role`): `ray-head` runs
    /// `ray start --head` and starts the engine once `ray.expected_nodes` joined; `ray-worker`
    /// runs `ray start --address` to `ray.head` and follows it (docs/ray.md).
    #[arg(long, value_enum, value_name = "ROLE")]
    pub role: Option<ServeRole>,
    /// Testing aid, hidden: the host's root for the GPU device nodes (`DIR/dev/...`) and the
    /// NVIDIA driver's files (`DIR/proc/driver/nvidia`) that container mode passes (stand-in
    /// nodes in tests/container.rs). The sysfs root is `--sysfs-root`.
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub host_root: PathBuf,
    /// Start an instance of several GPUs even when the links between them (NVLink) are
    /// reported down or not enabled: the refusal becomes a warning. For hosts that run
    /// without the links (docs/gpu-sources.md, "Interconnect preflight").
    #[arg(long)]
    pub skip_link_check: bool,
    /// Where the plan's host facts come from when `binding.auto = true`.
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub monitor: ServeMonitorArgs,
    /// Debugging aid, hidden: panic on purpose once the engine is ready, to prove that a panic
    /// stops the engine tree before the agent exits (tests/hardening.rs). Never use in service.
    #[arg(long, hide = true)]
    pub debug_panic_when_ready: bool,
    /// Debugging aid, hidden: like `--debug-panic-when-ready`, but the panic happens in a
    /// spawned task, not in the supervisor's own future (tests/hardening.rs).
    #[arg(long, hide = true)]
    pub debug_panic_in_task: bool,
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

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// State directory of the agents (instance 0's `status.sock`; instance N's in `DIR/N`).
    #[arg(long, value_name = "DIR", default_value = "/run/nodeagent")]
    pub state_dir: PathBuf,
    /// Only instance N (default: every instance that answers).
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub instance: Option<usize>,
    /// With `--json`: a JSON array of every instance's record (without it, `--json` needs one
    /// instance: the only one running, or `--instance N`).
    #[arg(long)]
    pub all: bool,
    /// Print the agent's status record as JSON.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the agent's answer, e.g. `5s`.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
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
    /// Random prompts of `--input-len` words (tokens with `--tokenizer`).
    Random,
}

/// The file format of `verify --trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceFormatArg {
    /// JSON lines: `timestamp` (ms), `input_length`, `output_length`, `hash_ids`.
    Mooncake,
    /// CSV with a header: `Timestamp` (s), `Request tokens`, `Response tokens`, ...
    Burstgpt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArrivalKind {
    Constant,
    Poisson,
    Gamma,
}

/// How an open loop waits for each send (hidden `--pacing`, for `scripts/bench-openloop.sh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PacingKind {
    /// A timerfd until 50 us before the instant, then a spin (the default).
    Exact,
    /// tokio's 1 ms timer until 2 ms before the instant, then a spin.
    Spin,
    /// tokio's 1 ms timer alone.
    Coarse,
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

/// What `verify --search` varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SearchArg {
    /// The concurrency of a closed loop.
    Concurrency,
    /// The request rate of an open loop.
    Rate,
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
    #[arg(long, required_unless_present = "compare", value_name = "URL")]
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
    /// Open loop: how to wait for each send: `exact` (a timerfd, then a short spin), `spin`
    /// (tokio's 1 ms timer, then a 2 ms spin), `coarse` (tokio's timer alone, the old imprecise
    /// wait); for `scripts/bench-openloop.sh`'s side-by-side only.
    #[arg(long, hide = true, value_enum, default_value_t = PacingKind::Exact)]
    pub pacing: PacingKind,
    /// Run the client's thread under SCHED_FIFO real-time priority (root or CAP_SYS_NICE), so a
    /// loaded machine does not preempt it between an open loop's timer and its send; refused:
    /// a warning, and the normal priority. It takes a core whenever it is runnable.
    #[arg(long)]
    pub realtime: bool,
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
    /// Random dataset: prompt length, in words (roughly as many tokens); with `--tokenizer`,
    /// exactly this many tokens.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub input_len: usize,
    /// Random dataset: sets `--max-tokens` (and `--ignore-eos`) unless given.
    #[arg(long, value_name = "TOKENS")]
    pub output_len: Option<u32>,
    /// Replay a request trace instead of `--dataset`: request `i` is sent at the trace's time
    /// `i` (divided by `--trace-speed`) with its input and output lengths (`max_tokens`,
    /// `ignore_eos`), the whole trace once per level; `--parallel` caps the requests in flight
    /// (default: no cap). Schemas in docs/verify.md.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["rate", "search", "prefix_len"])]
    pub trace: Option<PathBuf>,
    /// Format of `--trace`: Mooncake JSONL or BurstGPT CSV.
    #[arg(long, value_enum, default_value_t = TraceFormatArg::Mooncake)]
    pub trace_format: TraceFormatArg,
    /// Replay speed of `--trace`, one level per value (2: twice as fast).
    #[arg(long, num_args = 1.., value_name = "X", default_value = "1")]
    pub trace_speed: Vec<f64>,
    /// Shared-prefix prompts instead of `--dataset`: prompt `i` is shared prefix `i mod
    /// --num-prefixes` of this many tokens (words), then a unique suffix of `--input-len`.
    #[arg(long, value_name = "N")]
    pub prefix_len: Option<u32>,
    /// How many distinct shared prefixes `--prefix-len` prompts use.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub num_prefixes: u64,
    /// With `--dataset sharegpt`: send whole conversations, every human turn after the answer
    /// to the one before, with the conversation so far (the dataset's own answers as the
    /// assistant's turns) in `messages`; `--number` counts conversations (chat API only).
    #[arg(long)]
    pub multi_turn: bool,
    /// With `--multi-turn`: at most this many turns of each conversation.
    #[arg(long, value_name = "N", requires = "multi_turn")]
    pub max_turns: Option<usize>,
    /// Drop prompts longer than this: characters, or tokens with `--tokenizer`.
    #[arg(long, value_name = "N")]
    pub max_prompt_length: Option<usize>,
    /// Drop prompts shorter than this: characters, or tokens with `--tokenizer`.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub min_prompt_length: usize,
    /// The model's Hugging Face `tokenizer.json`, or the model directory vLLM serves from (its
    /// `tokenizer.json` is read): prompt lengths (`--min/--max-prompt-length`, random `--input-len`) are then in tokens,
    /// and requests whose server sends no `usage` get their input tokens from it. Counts are of
    /// the prompt text alone: no special tokens, chat template NOT applied.
    #[arg(long, value_name = "FILE|DIR")]
    pub tokenizer: Option<PathBuf>,
    /// Seed for prompt order, random prompts and arrival times.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Service-level objectives for goodput, e.g. `ttft=2s,tpot=50ms` (keys: ttft, tpot, itl, latency).
    #[arg(long, value_name = "LIST")]
    pub slo: Option<String>,
    /// SLO search: find the highest concurrency (closed loop) or request rate (open loop) at
    /// which `--slo-attainment` of the requests meet every `--slo`, doubling from `--parallel`
    /// (default 1) or `--rate` (default 1) and then bisecting; each step is a level.
    #[arg(long, value_enum, requires = "slo", value_name = "KIND")]
    pub search: Option<SearchArg>,
    /// The share of requests (0 to 1) that must meet every SLO for a search step to pass.
    #[arg(long, default_value_t = 0.99, value_name = "FRACTION")]
    pub slo_attainment: f64,
    /// Most steps an SLO search runs.
    #[arg(long, default_value_t = 12, value_name = "N")]
    pub search_max_steps: u32,
    /// The engine's Prometheus endpoint, scraped during every level (running and waiting
    /// requests, KV-cache use, preemptions, token counters, the server's latency histograms);
    /// default: the server's `/metrics` when it answers with vLLM's or llama.cpp's names.
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,
    /// Time between scrapes of the engine's metrics during a level (0: do not scrape).
    #[arg(long, value_parser = parse_seconds_or_duration, default_value = "1s", value_name = "DURATION")]
    pub metrics_interval: std::time::Duration,
    /// Root of the sysfs tree whose NUMA counters (`devices/system/node/node*/numastat`) are
    /// read at the start and end of each measured level (for tests and chroots).
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    pub sysfs_root: PathBuf,
    /// Exit 1 when any measured level's failed/sent exceeds this fraction (0 to 1; the
    /// default 0.05 is 5 %); a level with no success always fails the run. Results are saved
    /// either way.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.05)]
    pub max_failure_rate: f64,
    /// Write summary.json, summary.csv, requests.jsonl and evalscope-summary.txt into DIR
    /// (created if missing; a symlink or a file is refused). An earlier run's files there are
    /// first moved into DIR/previous-<its run id>/.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value_t = VerifyFormat::Table)]
    pub format: VerifyFormat,
    /// Skip the preflight (GET /v1/models and one request).
    #[arg(long)]
    pub no_preflight: bool,
    /// Do not pin the load generator away from the engine's CPUs. By default, when the URL
    /// is this host's (or under --compare), every thread of verify is pinned to the CPUs the
    /// engine's processes may not use, so the two do not compete for the engine's cores.
    #[arg(long)]
    pub no_isolate: bool,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
    /// After Ctrl-C or SIGTERM, how long requests in flight may still finish.
    #[arg(long, value_parser = parse_seconds_or_duration, default_value = "5", value_name = "DURATION")]
    pub grace: std::time::Duration,
    #[command(flatten)]
    pub compare: CompareArgs,
}

/// `verify --compare`: the binding experiment (restart the engine under each binding, sweep).
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Compare bindings: restart the engine under each, sweep, repeat `--trials` times
    /// interleaved. A list such as `none,auto,nodes=0-3,nodes=0,2,4,6,cpus=0-15/mem=0`
    /// (`auto` = the plan's recommendation; `union` = the same, named beside `per-rank`, which
    /// then binds each rank's worker to its GPU's node; keys nodes, cpus, mem, preferred,
    /// interleave).
    /// Results go to `--out`, else to a fresh private directory under the temp dir (printed);
    /// the engine is launched from `--config`.
    #[arg(long, value_name = "BINDINGS")]
    pub compare: Option<String>,
    /// Trials per binding (interleaved); 3 or more give a confidence interval worth reading.
    #[arg(long, default_value_t = 3, value_name = "K", requires = "compare")]
    pub trials: u32,
    /// Engine configuration for `--compare` (the same TOML as `serve`).
    #[arg(
        long,
        value_name = "FILE",
        env = "NODEAGENT_CONFIG",
        default_value = "/etc/nodeagent/nodeagent.toml"
    )]
    pub config: PathBuf,
    /// Launch mode for `--compare` (overrides `launch.mode`).
    #[arg(long, value_enum)]
    pub mode: Option<ServeMode>,
    /// Engine port for `--compare` (overrides `engine.port`).
    #[arg(long)]
    pub engine_port: Option<u16>,
    /// State directory for `--compare`'s engine pid file (default: `<out>/.state`). Without
    /// `--compare`: the base state directory of the `nodeagent serve` agents asked which
    /// processes serve the URL's port, to keep the load generator off their CPUs (default:
    /// `/run/nodeagent`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
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
    /// Read a snapshot directory (`probe --save`: `mx-smi.txt`; or `nvidia-smi-query.csv` and
    /// `nvidia-smi-apps.csv`; or `nvidia-smi.txt`) instead of running the GPU tool.
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

/// The monitor under `nodeagent serve` (flattened into `ServeArgs`).
#[derive(Debug, Clone, Args)]
pub struct ServeMonitorArgs {
    /// Watch the GPUs and serve Prometheus `/metrics` and JSON `/status` on 127.0.0.1:PORT
    /// (0 picks a free port, logged at start). The monitor is off when not given.
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,
    /// Which GPU tool the monitor runs (`--mx-smi` / `--nvidia-smi` give their paths).
    #[arg(long, value_enum, default_value_t = GpuToolArg::Auto)]
    pub gpu_tool: GpuToolArg,
    /// Time between GPU samples.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub gpu_interval: std::time::Duration,
    /// Alert when a GPU's memory use is above this percentage of its total.
    #[arg(long, value_name = "PCT", default_value_t = 97.0)]
    pub gpu_memory_threshold: f64,
    /// Do not restart the engine when the monitor finds it hung (requests in flight, GPUs at
    /// 0 % for several samples); only report it.
    #[arg(long)]
    pub no_gpu_hang_restart: bool,
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

// ---------------------------------------------------------------------------------------------
// __ray-member (hidden)

/// A node's Ray role, as `serve --role` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServeRole {
    /// `ray start --head`, then the engine once every node joined.
    RayHead,
    /// `ray start --address HEAD:PORT`, following the head.
    RayWorker,
}

/// Member roles, as `__ray-member --role` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RayMemberRole {
    Head,
    Worker,
}

#[derive(Debug, Clone, Args)]
pub struct RayMemberArgs {
    #[arg(long, value_enum)]
    pub role: RayMemberRole,
    /// The `ray` program.
    #[arg(long, value_name = "PATH")]
    pub ray: PathBuf,
    /// The head node's address.
    #[arg(long, value_name = "ADDR")]
    pub head: String,
    /// The head's GCS port.
    #[arg(long)]
    pub port: u16,
    /// This node's address for Ray (`--node-ip-address`).
    #[arg(long, value_name = "ADDR")]
    pub node_ip: Option<String>,
    #[arg(long)]
    pub dashboard_port: u16,
    #[arg(long, value_name = "N")]
    pub expected_nodes: u32,
    #[arg(long, value_name = "N")]
    pub expected_gpus: u32,
    #[arg(long, value_name = "N")]
    pub num_gpus: u32,
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub join_timeout: std::time::Duration,
    /// Worker: where its `/health` answers.
    #[arg(long, value_name = "ADDR:PORT")]
    pub health_listen: std::net::SocketAddr,
    /// Where the cluster file is written.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// One more argument for `ray start` (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub start_arg: Vec<String>,
    /// Head: the engine command (the driver).
    #[arg(last = true, value_name = "ENGINE")]
    pub engine: Vec<String>,
}
