//! The arguments of `simulate` (the engine simulator) and of its hidden worker processes. Clap
//! types only; `cmd::simulate` maps them to the simulator's own types.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

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
