//! The OpenAI-compatible engine simulator: a stand-in for vLLM where none can run (no GPU in CI,
//! no vLLM on these machines), used by `nodeagent simulate`, the `verify` load tests and the
//! supervisor tests.
//!
//! It serves `GET /v1/models`, `GET /health` (and `/ping`), `GET /metrics` (vLLM's metric
//! names), `POST /v1/chat/completions` and `POST /v1/completions`, streaming (SSE, vLLM's chunk
//! layout, `stream_options.include_usage`) and not, on real HTTP over loopback. Timing follows
//! a latency model (`model::LatencyModel`): prefill grows with the prompt, each decode step with
//! the number of running requests, at most `max_num_seqs` requests run and the rest wait in a
//! FIFO queue. Faults (HTTP 500, cut streams, stalls, in-band stream errors) are drawn from the
//! seed and the request's arrival index, so a run is reproducible. Every request leaves a
//! ground-truth record (`RequestTruth`: when its first and last token were written), readable
//! in-process (`SimHandle::ground_truth`) and at `GET /sim/requests`.
//!
//! What it does not do: tokenize like a real model (see `model::count_tokens`), generate
//! meaningful text, support `n > 1`, tools or logprobs. Process-level behaviour (startup delay,
//! crash, worker processes, signals, pid file) lives in `cmd::simulate` and `workers`.
//!
//! Inside: `server` (routes, `generate`) over `request` (parsing and validation), `job` (the
//! token machine and wire format) and `state` (shared state, the truth log); `model` and
//! `prefix` (the prefix-cache model: a prompt whose leading blocks were seen recently
//! prefills faster) are pure, `metrics` renders vLLM's metric names.

pub mod model;
pub mod prefix;
pub mod workers;

mod job;
mod metrics;
mod request;
mod server;
mod state;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use model::{Fault, FaultRates, Finish, LatencyModel, OutputLen, OutputLenDist};

/// Everything the simulator can be told. `Default` is a realistic 72B-at-TP4 engine;
/// `SimConfig::zero_delay()` answers as fast as it can.
#[derive(Debug, Clone, Serialize)]
pub struct SimConfig {
    /// Address to bind; loopback unless told otherwise.
    pub host: IpAddr,
    /// Port to bind; 0 picks a free one (read it back with `SimHandle::addr`).
    pub port: u16,
    /// The model name `/v1/models` lists and requests must name (vLLM's `--served-model-name`).
    pub served_model_name: String,
    /// Seed of every random choice: output lengths, token texts, faults.
    pub seed: u64,
    /// Longest prompt + output, in tokens (vLLM's `--max-model-len`).
    pub max_model_len: u32,
    /// Most requests running at once (vLLM's `--max-num-seqs`); the rest wait in FIFO order.
    /// 0 means no limit.
    pub max_num_seqs: u32,
    pub latency: LatencyModel,
    /// Output length of requests that do not set `max_tokens` (or stop "at EOS" before it).
    pub output_len: OutputLen,
    pub faults: FaultRates,
    /// How long a stall fault pauses the response.
    pub stall: Duration,
    /// KV cache size in tokens, for `vllm:gpu_cache_usage_perc` (each running request
    /// reserves its prompt plus its output).
    pub kv_cache_tokens: u64,
    /// After this long, stop answering anything (incl. `/health`) while staying alive: a
    /// deadlocked engine.
    pub hang_after: Option<Duration>,
    /// After this long, produce no more tokens (running requests stay running) while `/health`
    /// and `/metrics` still answer: an engine stuck behind a live API server.
    pub freeze_after: Option<Duration>,
    /// After this long, the scheduler admits no new request (each waits, counted in
    /// `vllm:num_requests_waiting`) while requests already running finish and `/health` and
    /// `/metrics` still answer: a dead EngineCore behind a live API server (vLLM #39863).
    pub stop_admitting_after: Option<Duration>,
    /// After this long, every completion answers HTTP 500 while `/health`, `/v1/models` and
    /// `/metrics` answer (vLLM #1492).
    pub fail_completions_after: Option<Duration>,
    /// `/health` and `/live` answer 404: an engine with `/v1/models` only (llama-cpp-python).
    pub no_health: bool,
    /// Count prompt tokens chunk by chunk over the prefill, this many a chunk (vLLM's chunked
    /// prefill); 0: all at admission.
    pub prefill_chunk_tokens: u32,
    /// After this long, ask the owner to stop (`SimHandle::stop_requested`): crash simulation.
    pub exit_after: Option<Duration>,
    /// After this many requests have finished, ask the owner to stop.
    pub exit_after_requests: Option<u64>,
    /// Ground-truth records kept (the oldest are dropped beyond this; `seq` keeps counting).
    pub max_records: usize,
    /// Prefix cache size in blocks of `prefix_block_tokens` (vLLM's automatic prefix caching,
    /// `prefix::PrefixCache`); 0: no prefix cache.
    pub prefix_cache_blocks: u64,
    /// Tokens per prefix-cache block (vLLM's `--block-size`, 16 by default).
    pub prefix_block_tokens: u32,
    /// Prefill cost of a cached prompt token, as a fraction of an uncached one's.
    pub prefix_hit_cost: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            served_model_name: "qwen2.5".to_string(),
            seed: 0,
            max_model_len: 32768,
            max_num_seqs: 256,
            latency: LatencyModel::default(),
            output_len: OutputLen::default(),
            faults: FaultRates::default(),
            stall: Duration::from_secs(2),
            // ~A 72B model at TP4 on 64 GiB cards keeps roughly this many tokens of KV cache.
            kv_cache_tokens: 400_000,
            hang_after: None,
            freeze_after: None,
            stop_admitting_after: None,
            fail_completions_after: None,
            no_health: false,
            prefill_chunk_tokens: 0,
            exit_after: None,
            exit_after_requests: None,
            // ~250 bytes each: 25 MB at most.
            max_records: 100_000,
            prefix_cache_blocks: 0,
            prefix_block_tokens: 16,
            prefix_hit_cost: 0.1,
        }
    }
}

impl SimConfig {
    /// No latency, no batch limit, no faults: the cheapest server for load-client benchmarks.
    pub fn zero_delay() -> Self {
        SimConfig { latency: LatencyModel::ZERO, max_num_seqs: 0, ..SimConfig::default() }
    }

    /// Fixed time to first token and per further token (no jitter, no load dependence, no
    /// batch limit): the server for client accuracy tests.
    pub fn fixed(ttft: Duration, per_token: Duration) -> Self {
        SimConfig {
            latency: LatencyModel::fixed(ttft, per_token),
            max_num_seqs: 0,
            ..SimConfig::default()
        }
    }

    /// Checks what types cannot: rates in range, a model name, a usable context length.
    pub fn validate(&self) -> Result<(), SimError> {
        let f = &self.faults;
        for (name, rate) in [
            ("fault-500-rate", f.http_500),
            ("fault-drop-rate", f.drop),
            ("fault-stall-rate", f.stall),
            ("fault-stream-error-rate", f.stream_error),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(SimError::BadConfig {
                    reason: format!("{name} must be between 0 and 1, got {rate}"),
                });
            }
        }
        if f.sum() > 1.0 + 1e-9 {
            return Err(SimError::BadConfig {
                reason: format!(
                    "fault rates add up to {} (at most 1: one fault per request)",
                    f.sum()
                ),
            });
        }
        if self.served_model_name.is_empty() {
            return Err(SimError::BadConfig { reason: "the served model name is empty".into() });
        }
        if self.max_model_len < 2 {
            return Err(SimError::BadConfig {
                reason: format!("max-model-len must be at least 2, got {}", self.max_model_len),
            });
        }
        if self.output_len.mean == 0 {
            return Err(SimError::BadConfig {
                reason: "output-len-mean must be at least 1".into(),
            });
        }
        if self.prefix_block_tokens == 0 {
            return Err(SimError::BadConfig {
                reason: "prefix-block-tokens must be at least 1".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.prefix_hit_cost) {
            return Err(SimError::BadConfig {
                reason: format!(
                    "prefix-hit-cost must be between 0 and 1, got {}",
                    self.prefix_hit_cost
                ),
            });
        }
        if self.kv_cache_tokens == 0 {
            return Err(SimError::BadConfig {
                reason: "kv-cache-tokens must be at least 1".into(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("bad simulator configuration: {reason}")]
    BadConfig { reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the simulator's HTTP server failed: {source}")]
    Serve { source: std::io::Error },
    #[error("the simulator's HTTP server task panicked or was aborted")]
    ServerTask,
}

/// Which API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    #[default]
    ChatCompletions,
    Completions,
}

/// How a request ended, from the server's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Every token and the end of the response were written (`[DONE]` when streaming).
    Ok,
    /// Refused with HTTP 400 (bad JSON, missing field, context too long).
    BadRequest,
    /// Refused with HTTP 404 (unknown model).
    NotFound,
    /// A simulated HTTP 500.
    ServerError,
    /// A simulated cut: the connection was closed mid-response.
    Dropped,
    /// A simulated in-band error event after streaming started.
    StreamError,
    /// Ended early: the client went away, or the server shut down mid-response.
    #[default]
    Aborted,
}

/// The simulator's ground truth about one request. Times come twice: unix nanoseconds from the
/// system clock (comparable with an out-of-process client's `SystemTime`) and monotonic
/// nanoseconds since the server started (immune to clock steps).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RequestTruth {
    /// Order in which records were completed (the `since` cursor of `/sim/requests`).
    pub seq: u64,
    /// Arrival order (0 = the first request this server saw); faults and texts derive from it.
    pub index: u64,
    /// The `x-request-id` header if sent, else a generated id (the response `id` adds the
    /// `chatcmpl-`/`cmpl-` prefix).
    pub request_id: String,
    pub endpoint: Endpoint,
    pub stream: bool,
    pub status: RequestStatus,
    /// HTTP status sent (200 for a stream that failed after it started; 0 when the connection
    /// was closed before any reply).
    pub http_status: u16,
    /// The fault drawn for this request, if any (`http_500`, `drop`, `stall`, `stream_error`).
    pub fault: Option<String>,
    pub prompt_tokens: u32,
    /// Prompt tokens found in the prefix cache (0 without one).
    #[serde(default)]
    pub cached_tokens: u32,
    /// Output tokens the request was going to produce.
    pub output_tokens: u32,
    /// Content tokens actually written.
    pub tokens_sent: u32,
    /// When the kernel received the request's last bytes (`rxstamp`), else when the handler ran.
    pub arrival_unix_ns: u64,
    /// When the request got a batch slot (after queueing).
    pub scheduled_unix_ns: Option<u64>,
    /// When the first content token was handed to the HTTP layer (streaming) or generated.
    pub first_token_unix_ns: Option<u64>,
    pub last_token_unix_ns: Option<u64>,
    pub end_unix_ns: u64,
    pub arrival_offset_ns: u64,
    pub scheduled_offset_ns: Option<u64>,
    pub first_token_offset_ns: Option<u64>,
    pub last_token_offset_ns: Option<u64>,
    pub end_offset_ns: u64,
}

impl RequestTruth {
    /// Time to first token as the server saw it (arrival to first content token).
    pub fn ttft(&self) -> Option<Duration> {
        self.first_token_offset_ns
            .map(|t| Duration::from_nanos(t.saturating_sub(self.arrival_offset_ns)))
    }

    /// Time spent waiting for a batch slot.
    pub fn queue_time(&self) -> Option<Duration> {
        self.scheduled_offset_ns
            .map(|t| Duration::from_nanos(t.saturating_sub(self.arrival_offset_ns)))
    }
}

/// Why the simulator asks its owner to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `exit_after` elapsed.
    ExitAfterTime,
    /// `exit_after_requests` requests finished.
    ExitAfterRequests,
}

/// A running simulator. Dropping it without `shutdown` leaves the server task running until
/// the runtime ends.
pub struct SimHandle {
    addr: SocketAddr,
    backlog: u32,
    shared: Arc<state::Shared>,
    server: JoinHandle<std::io::Result<()>>,
    stop_rx: watch::Receiver<Option<StopReason>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// The listen backlog the simulator asks for: connections the kernel completes and queues
/// before the server accepts them. tokio's default (128) turned a burst of 300 clients into
/// SYNs dropped and retried a second later; vLLM's server uses 2048.
pub const LISTEN_BACKLOG: u32 = 4096;

/// The backlog the kernel grants for `wanted`: Linux silently caps it at
/// `net.core.somaxconn` (`somaxconn`: the text of `/proc/sys/net/core/somaxconn`, `None` when
/// unreadable, then `wanted` is assumed to hold).
pub fn effective_backlog(wanted: u32, somaxconn: Option<&str>) -> u32 {
    match somaxconn.and_then(|s| s.trim().parse::<u32>().ok()) {
        Some(cap) if cap > 0 => wanted.min(cap),
        _ => wanted,
    }
}

/// A listener on `addr` with `LISTEN_BACKLOG`, clamped by `somaxconn` (a warning says so);
/// the backlog granted comes back with it.
fn listen(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, u32)> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok();
    let backlog = effective_backlog(LISTEN_BACKLOG, somaxconn.as_deref());
    if backlog < LISTEN_BACKLOG {
        tracing::warn!(
            backlog,
            wanted = LISTEN_BACKLOG,
            "listen backlog clamped by net.core.somaxconn: a burst of more connections than \
             this waits for SYN retries (raise it: sysctl -w net.core.somaxconn={LISTEN_BACKLOG})"
        );
    }
    Ok((socket.listen(backlog)?, backlog))
}

/// Binds the listener and starts serving. Returns once the port accepts connections.
pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
    config.validate()?;
    let addr = SocketAddr::new(config.host, config.port);
    let (listener, backlog) = listen(addr).map_err(|source| SimError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind { addr, source })?;
    let (stop_tx, stop_rx) = watch::channel(None);
    let shared = Arc::new(state::Shared::new(config, stop_tx));
    let server = server::spawn(listener, shared.clone());
    Ok(SimHandle { addr, backlog, shared, server, stop_rx })
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listen backlog granted (`LISTEN_BACKLOG`, or less where `somaxconn` clamps it).
    pub fn listen_backlog(&self) -> u32 {
        self.backlog
    }

    /// `http://127.0.0.1:PORT` (no trailing slash, no `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config(&self) -> &SimConfig {
        &self.shared.cfg
    }

    /// Every ground-truth record kept so far, in completion order.
    pub fn ground_truth(&self) -> Vec<RequestTruth> {
        self.shared.truth_since(0)
    }

    /// Records with `seq >= since`.
    pub fn ground_truth_since(&self, since: u64) -> Vec<RequestTruth> {
        self.shared.truth_since(since)
    }

    /// Requests that have arrived so far (including refused ones).
    pub fn arrivals(&self) -> u64 {
        self.shared.arrivals()
    }

    /// Resolves when `exit_after` / `exit_after_requests` fires; never if neither is set.
    pub async fn stop_requested(&mut self) -> StopReason {
        loop {
            if let Some(reason) = *self.stop_rx.borrow_and_update() {
                return reason;
            }
            if self.stop_rx.changed().await.is_err() {
                // The sender lives in `shared`, which we hold: this cannot end, but waiting
                // forever is the right answer if it did.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops gracefully: closes the listener, aborts responses in flight (their records say
    /// `aborted`), waits up to 5 s for connections to close.
    pub async fn shutdown(self) -> Result<(), SimError> {
        self.shared.shutdown.cancel();
        let mut server = self.server;
        match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(source))) => Err(SimError::Serve { source }),
            Ok(Err(_)) => Err(SimError::ServerTask),
            Err(_) => {
                server.abort();
                Ok(())
            }
        }
    }
}
