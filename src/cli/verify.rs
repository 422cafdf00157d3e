//! The arguments of `verify`: a sweep's load, dataset and outputs (`VerifyRunArgs`), the binding
//! comparison (`CompareArgs`), `verify compare A B`, and the duration parser they share. Clap
//! types only; `cmd::sweep` turns them into a `SweepSpec`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::serve::ServeMode;

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
