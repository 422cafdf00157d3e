//! The simulator's HTTP side: axum routes, request parsing and validation, the batch slots and
//! FIFO queue, the per-request token machine that paces output by the latency model, vLLM's
//! wire format, and the ground-truth log.
//!
//! One `Job` per generation request walks through queue -> prefill -> tokens -> end and yields
//! events; the streaming path turns each event into an SSE chunk as hyper polls the body (so
//! "first token written" is recorded when the bytes go to the connection), the non-streaming
//! path collects them. When nothing takes time (zero-delay mode) the whole response is built
//! in one buffer and sent as one body: no timers, no per-chunk polling.
//!
//! What it does not do: decide output lengths or faults (`model`), or anything process-level.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::FutureExt;
use serde::Deserialize;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::model::{self, Ask, AskError, Fault, Outcome};
use super::{Endpoint, RequestStatus, RequestTruth, SimConfig, StopReason};
use crate::rxstamp::{RxClock, StampedTcp};

/// State shared by every connection.
pub(crate) struct Shared {
    pub cfg: SimConfig,
    /// The model name as a JSON string literal (quotes included), escaped once.
    model_json: String,
    started: Instant,
    arrivals: AtomicU64,
    completed: AtomicU64,
    slots: Option<Arc<Semaphore>>,
    truth: Mutex<TruthLog>,
    metrics: Metrics,
    hung: AtomicBool,
    /// No more tokens (requests stay running), while `/health` and `/metrics` answer.
    frozen: AtomicBool,
    pub shutdown: CancellationToken,
    stop_tx: watch::Sender<Option<StopReason>>,
}

struct TruthLog {
    next_seq: u64,
    records: VecDeque<RequestTruth>,
}

impl Shared {
    pub fn new(cfg: SimConfig, stop_tx: watch::Sender<Option<StopReason>>) -> Self {
        let slots =
            (cfg.max_num_seqs > 0).then(|| Arc::new(Semaphore::new(cfg.max_num_seqs as usize)));
        Shared {
            model_json: json_str(&cfg.served_model_name),
            metrics: Metrics::new(&cfg.served_model_name, cfg.kv_cache_tokens),
            started: Instant::now(),
            arrivals: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            slots,
            truth: Mutex::new(TruthLog { next_seq: 0, records: VecDeque::new() }),
            hung: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            stop_tx,
            cfg,
        }
    }

    pub fn arrivals(&self) -> u64 {
        self.arrivals.load(Ordering::Relaxed)
    }

    pub fn truth_since(&self, since: u64) -> Vec<RequestTruth> {
        let log = self.truth.lock().unwrap_or_else(|e| e.into_inner());
        // Records are in seq order, so the first wanted one is found by its distance from the
        // front.
        let first = log.records.front().map_or(0, |r| r.seq);
        let skip = since.saturating_sub(first) as usize;
        log.records.iter().skip(skip).cloned().collect()
    }

    fn record(&self, mut truth: RequestTruth) {
        {
            let mut log = self.truth.lock().unwrap_or_else(|e| e.into_inner());
            truth.seq = log.next_seq;
            log.next_seq += 1;
            if log.records.len() >= self.cfg.max_records.max(1) {
                log.records.pop_front();
            }
            log.records.push_back(truth);
        }
        let done = self.completed.fetch_add(1, Ordering::Relaxed) + 1;
        if self.cfg.exit_after_requests == Some(done) {
            self.stop_tx.send_replace(Some(StopReason::ExitAfterRequests));
        }
    }

    /// (unix ns, ns since start) of now.
    fn now(&self) -> (u64, u64) {
        (unix_ns(), self.started.elapsed().as_nanos() as u64)
    }

    /// (unix ns, ns since start) of a request's arrival: when the kernel received its last
    /// bytes (the connection's latest read, which completed the request), so the ground
    /// truth does not include how long this process was busy before it read them. Without
    /// a kernel stamp (or with an implausible one), now.
    fn arrival(&self, rx: &RxClock) -> (u64, u64) {
        let (unix, offset) = self.now();
        match rx.unix_ns() {
            Some(ns) if ns <= unix && unix - ns < offset => (ns, offset - (unix - ns)),
            _ => (unix, offset),
        }
    }
}

fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn json_str(s: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

pub(crate) fn spawn(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    if let Some(after) = shared.cfg.hang_after {
        on_cue(&shared, after, move |s| {
            tracing::warn!(after_ms = after.as_millis() as u64, "simulated hang: no more answers");
            s.hung.store(true, Ordering::Relaxed);
        });
    }
    if let Some(after) = shared.cfg.freeze_after {
        on_cue(&shared, after, move |s| {
            tracing::warn!(
                after_ms = after.as_millis() as u64,
                "simulated stuck engine: no more tokens, /health still answers"
            );
            s.frozen.store(true, Ordering::Relaxed);
        });
    }
    if let Some(after) = shared.cfg.exit_after {
        on_cue(&shared, after, |s| {
            s.stop_tx.send_replace(Some(StopReason::ExitAfterTime));
        });
    }
    let token = shared.shutdown.clone();
    let app = Router::new()
        .route("/health", get(health))
        .route("/ping", get(health).post(health))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .route("/sim/requests", get(sim_requests))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), hang_gate))
        .with_state(shared);
    tokio::spawn(async move {
        axum::serve(StampedListener(listener), app.into_make_service_with_connect_info::<RxClock>())
            .with_graceful_shutdown(token.cancelled_owned())
            .await
    })
}

/// Runs `act` `after` this long, unless the simulator shuts down first (a simulated fault).
fn on_cue(shared: &Arc<Shared>, after: Duration, act: impl FnOnce(&Shared) + Send + 'static) {
    let s = shared.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(after) => act(&s),
            _ = s.shutdown.cancelled() => {}
        }
    });
}

/// Accepts connections whose reads carry the kernel's receive time (`rxstamp`); the
/// connection's `RxClock` reaches the handlers as `ConnectInfo`.
struct StampedListener(tokio::net::TcpListener);

impl axum::serve::Listener for StampedListener {
    type Io = StampedTcp;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((tcp, addr)) => {
                    // Tokens are small writes: send each at once, as vLLM's server does.
                    let _ = tcp.set_nodelay(true);
                    return (StampedTcp::new(tcp), addr);
                }
                // A connection that died in the backlog is the client's business.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, StampedListener>>
    for RxClock
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, StampedListener>) -> Self {
        stream.io().clock()
    }
}

/// Once hung, nothing is answered (the connection stays open) until shutdown.
async fn hang_gate(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if s.hung.load(Ordering::Relaxed) {
        s.shutdown.cancelled().await;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    next.run(req).await
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "NotFoundError", "Not Found")
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    let created = s.started_unix_secs();
    let body = serde_json::json!({
        "object": "list",
        "data": [{
            "id": s.cfg.served_model_name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": s.cfg.served_model_name,
            "parent": null,
            "max_model_len": s.cfg.max_model_len,
        }],
    });
    json_response(StatusCode::OK, body.to_string())
}

impl Shared {
    fn started_unix_secs(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(self.started.elapsed().as_secs())
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let mut r = s.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[derive(Deserialize)]
struct SinceQuery {
    since: Option<u64>,
}

async fn sim_requests(State(s): State<Arc<Shared>>, q: Query<SinceQuery>) -> Response {
    let records = s.truth_since(q.since.unwrap_or(0));
    match serde_json::to_string(&records) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", &e.to_string())
        }
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// vLLM's error body (the flat `ErrorResponse` of the 0.6–0.8 API server).
fn error_body(status: StatusCode, kind: &str, message: &str) -> String {
    serde_json::json!({
        "object": "error",
        "message": message,
        "type": kind,
        "param": null,
        "code": status.as_u16(),
    })
    .to_string()
}

fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    json_response(status, error_body(status, kind, message))
}

// ---------------------------------------------------------------------------------------------
// request bodies

/// The body of both generation endpoints; unknown fields are ignored, as vLLM does for the
/// sampling options it would honour (temperature, top_p, ...). For example:
///
/// `{"model": "qwen2.5", "messages": [{"role": "user", "content": "解释人工智能"}],`
/// ` "max_tokens": 256, "stream": true, "stream_options": {"include_usage": true}}`
/// `{"model": "qwen2.5", "prompt": "你是谁？", "max_tokens": 16, "ignore_eos": true}`
#[derive(Deserialize)]
struct GenRequest {
    model: Option<String>,
    messages: Option<Vec<Message>>,
    prompt: Option<Prompt>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    min_tokens: u32,
    #[serde(default)]
    ignore_eos: bool,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
}

#[derive(Deserialize)]
struct Message {
    #[allow(dead_code)]
    role: String,
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

#[derive(Deserialize, Default, Clone, Copy)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
    #[serde(default)]
    continuous_usage_stats: bool,
}

async fn chat(
    State(s): State<Arc<Shared>>,
    ConnectInfo(rx): ConnectInfo<RxClock>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generate(s, Endpoint::ChatCompletions, &rx, &headers, &body).await
}

async fn completions(
    State(s): State<Arc<Shared>>,
    ConnectInfo(rx): ConnectInfo<RxClock>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generate(s, Endpoint::Completions, &rx, &headers, &body).await
}

/// What parsing and validation made of a request.
struct Parsed {
    prompt_tokens: u32,
    ask: Ask,
    stream: bool,
    opts: StreamOptions,
}

/// A refusal before any work: the HTTP status, vLLM's error type, and the message.
struct Refusal(StatusCode, &'static str, String);

fn parse(s: &Shared, endpoint: Endpoint, body: &[u8]) -> Result<Parsed, Refusal> {
    let bad = |msg: String| Refusal(StatusCode::BAD_REQUEST, "BadRequestError", msg);
    let req: GenRequest =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON request body: {e}")))?;
    if let Some(name) = &req.model {
        if *name != s.cfg.served_model_name {
            return Err(Refusal(
                StatusCode::NOT_FOUND,
                "NotFoundError",
                format!("The model `{name}` does not exist."),
            ));
        }
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(bad("the simulator supports only n=1".into()));
    }
    let prompt_tokens = match endpoint {
        Endpoint::ChatCompletions => {
            let messages =
                req.messages.as_ref().ok_or_else(|| bad("messages: field required".into()))?;
            let mut texts: Vec<&str> = Vec::with_capacity(messages.len());
            let mut parts_tokens = 0u32;
            for m in messages {
                match &m.content {
                    Some(Content::Text(t)) => texts.push(t),
                    Some(Content::Parts(parts)) => {
                        texts.push("");
                        for p in parts {
                            parts_tokens = parts_tokens
                                .saturating_add(p.text.as_deref().map_or(0, model::count_tokens));
                        }
                    }
                    None => texts.push(""),
                }
            }
            model::chat_prompt_tokens(texts).saturating_add(parts_tokens)
        }
        Endpoint::Completions => match req.prompt.as_ref() {
            None => return Err(bad("prompt: field required".into())),
            Some(Prompt::Text(t)) => model::count_tokens(t),
            Some(Prompt::Ids(ids)) => ids.len() as u32,
            Some(Prompt::Texts(ts)) if ts.len() == 1 => model::count_tokens(&ts[0]),
            Some(Prompt::IdLists(ls)) if ls.len() == 1 => ls[0].len() as u32,
            Some(_) => return Err(bad("the simulator supports one prompt per request".into())),
        },
    };
    Ok(Parsed {
        prompt_tokens,
        ask: Ask {
            prompt_tokens,
            max_tokens: req.max_tokens.or(req.max_completion_tokens),
            min_tokens: req.min_tokens,
            ignore_eos: req.ignore_eos,
        },
        stream: req.stream,
        opts: req.stream_options.unwrap_or_default(),
    })
}

fn request_id(s: &Shared, headers: &HeaderMap, index: u64) -> String {
    match headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        Some(id) if !id.is_empty() => id.to_string(),
        // Derived from seed and arrival index, so reruns give the same ids.
        _ => format!(
            "{:016x}{:016x}",
            model::mix(model::mix(s.cfg.seed) ^ index),
            model::mix(model::mix(!s.cfg.seed) ^ index)
        ),
    }
}

async fn generate(
    s: Arc<Shared>,
    endpoint: Endpoint,
    rx: &RxClock,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let index = s.arrivals.fetch_add(1, Ordering::Relaxed);
    let (arrival_unix_ns, arrival_offset_ns) = s.arrival(rx);
    let request_id = request_id(&s, headers, index);
    let mut truth = RequestTruth {
        index,
        request_id,
        endpoint,
        status: RequestStatus::Aborted,
        http_status: 200,
        arrival_unix_ns,
        arrival_offset_ns,
        ..RequestTruth::default()
    };
    let refuse = |mut truth: RequestTruth, Refusal(status, kind, msg): Refusal| {
        truth.status = if status == StatusCode::NOT_FOUND {
            RequestStatus::NotFound
        } else {
            RequestStatus::BadRequest
        };
        truth.http_status = status.as_u16();
        (truth.end_unix_ns, truth.end_offset_ns) = s.now();
        s.record(truth);
        error_response(status, kind, &msg)
    };
    let parsed = match parse(&s, endpoint, body) {
        Ok(p) => p,
        Err(refusal) => return refuse(truth, refusal),
    };
    truth.stream = parsed.stream;
    truth.prompt_tokens = parsed.prompt_tokens;
    let outcome = match model::decide(
        s.cfg.seed,
        index,
        &parsed.ask,
        s.cfg.max_model_len,
        &s.cfg.output_len,
        &s.cfg.faults,
    ) {
        Ok(o) => o,
        Err(e @ (AskError::TooLong { .. } | AskError::PromptTooLong { .. })) => {
            return refuse(
                truth,
                Refusal(StatusCode::BAD_REQUEST, "BadRequestError", e.to_string()),
            )
        }
        Err(e) => {
            return refuse(
                truth,
                Refusal(StatusCode::BAD_REQUEST, "BadRequestError", e.to_string()),
            )
        }
    };
    truth.output_tokens = outcome.output_tokens;
    truth.fault = outcome.fault.map(|f| f.name().to_string());
    if outcome.fault == Some(Fault::Http500) {
        truth.status = RequestStatus::ServerError;
        truth.http_status = 500;
        (truth.end_unix_ns, truth.end_offset_ns) = s.now();
        s.record(truth);
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "simulated engine failure (fault-500-rate)",
        );
    }

    let echo_id = headers.get("x-request-id").cloned();
    let fast = s.cfg.latency.is_zero() && s.slots.is_none() && outcome.fault.is_none();
    let mut job = Job::new(s, truth, outcome, parsed.opts);
    let mut response = if parsed.stream {
        if fast {
            // Nothing can wait: build the whole event stream in one buffer.
            let mut buf = String::with_capacity(256 + 200 * job.outcome.output_tokens as usize);
            while let Some(Some(ev)) = job.next_event().now_or_never() {
                job.write_sse(&mut buf, ev);
            }
            sse_response(Body::from(buf))
        } else {
            let stream = futures_util::stream::unfold(job, |mut job| async move {
                let ev = job.next_event().await?;
                if let Ev::Drop = ev {
                    let err = std::io::Error::other("simulated dropped stream (fault-drop-rate)");
                    return Some((Err(err), job));
                }
                if let Ev::Aborted = ev {
                    return Some((Err(std::io::Error::other("response aborted")), job));
                }
                let mut buf = String::with_capacity(320);
                job.write_sse(&mut buf, ev);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), job))
            });
            sse_response(Body::from_stream(stream))
        }
    } else {
        job.run_to_end().await
    };
    if let Some(id) = echo_id {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}

fn sse_response(body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

// ---------------------------------------------------------------------------------------------
// the token machine

/// What the machine produced next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    /// The chat stream's opening `{"role":"assistant"}` chunk.
    Role,
    /// Content token `i`; `last` carries the finish reason.
    Token {
        i: u32,
        last: bool,
    },
    /// A simulated in-band error after the response started.
    StreamError,
    Usage,
    Done,
    /// A simulated cut: close the connection now.
    Drop,
    /// Shutdown while in flight.
    Aborted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Queue,
    Tokens(u32),
    Usage,
    Done,
    End,
}

struct Job {
    s: Arc<Shared>,
    truth: RequestTruth,
    outcome: Outcome,
    opts: StreamOptions,
    /// The response `id` as a JSON string literal.
    id_json: String,
    created: u64,
    phase: Phase,
    permit: Option<OwnedSemaphorePermit>,
    running: bool,
    kv_reserved: u64,
    deadline: tokio::time::Instant,
    last_token_at: Option<Instant>,
    stalled: bool,
    /// Whether any step can take time; if not, no clock is read to pace tokens.
    paced: bool,
}

impl Job {
    fn new(s: Arc<Shared>, truth: RequestTruth, outcome: Outcome, opts: StreamOptions) -> Self {
        let prefix = match truth.endpoint {
            Endpoint::ChatCompletions => "chatcmpl-",
            Endpoint::Completions => "cmpl-",
        };
        let id_json = json_str(&format!("{prefix}{}", truth.request_id));
        let paced = !s.cfg.latency.is_zero() || matches!(outcome.fault, Some(Fault::Stall { .. }));
        Job {
            created: truth.arrival_unix_ns / 1_000_000_000,
            s,
            truth,
            outcome,
            opts,
            id_json,
            phase: Phase::Start,
            permit: None,
            running: false,
            kv_reserved: 0,
            deadline: tokio::time::Instant::now(),
            last_token_at: None,
            stalled: false,
            paced,
        }
    }

    /// Waits until `deadline`, unless shutdown comes first (then false). Returns at once when
    /// the deadline has passed, without touching the timer; never returns before it (tokio's
    /// millisecond timer wheel may wake a little early, so the remainder is slept again).
    async fn wait_until(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            if deadline <= tokio::time::Instant::now() {
                return !self.s.shutdown.is_cancelled();
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.s.shutdown.cancelled() => return false,
            }
        }
    }

    async fn next_event(&mut self) -> Option<Ev> {
        loop {
            match self.phase {
                Phase::Start => {
                    self.phase = Phase::Queue;
                    if self.truth.stream && self.truth.endpoint == Endpoint::ChatCompletions {
                        return Some(Ev::Role);
                    }
                }
                Phase::Queue => {
                    if let Some(slots) = self.s.slots.clone() {
                        let permit = match slots.clone().try_acquire_owned() {
                            Ok(p) => p,
                            Err(_) => {
                                self.s.metrics.waiting.inc();
                                let got = tokio::select! {
                                    p = slots.acquire_owned() => p.ok(),
                                    _ = self.s.shutdown.cancelled() => None,
                                };
                                self.s.metrics.waiting.dec();
                                match got {
                                    Some(p) => p,
                                    None => return self.abort(),
                                }
                            }
                        };
                        self.permit = Some(permit);
                    }
                    let (unix, offset) = self.s.now();
                    self.truth.scheduled_unix_ns = Some(unix);
                    self.truth.scheduled_offset_ns = Some(offset);
                    self.s
                        .metrics
                        .queue
                        .observe(offset.saturating_sub(self.truth.arrival_offset_ns) as f64 / 1e9);
                    self.s.metrics.running.inc();
                    self.running = true;
                    self.kv_reserved =
                        u64::from(self.truth.prompt_tokens) + u64::from(self.outcome.output_tokens);
                    self.s.metrics.kv_tokens.fetch_add(self.kv_reserved, Ordering::Relaxed);
                    self.s.metrics.prompt_tokens.inc_by(u64::from(self.truth.prompt_tokens));
                    if self.paced {
                        self.deadline = tokio::time::Instant::now()
                            + self.s.cfg.latency.prefill(self.truth.prompt_tokens);
                    }
                    self.phase = Phase::Tokens(0);
                }
                Phase::Tokens(i) => {
                    let n = self.outcome.output_tokens;
                    if i >= n {
                        self.phase = Phase::Usage;
                        continue;
                    }
                    match self.outcome.fault {
                        Some(Fault::Stall { at_token }) if at_token == i && !self.stalled => {
                            self.stalled = true;
                            self.deadline += self.s.cfg.stall;
                        }
                        _ => {}
                    }
                    let waited = if self.paced {
                        self.wait_until(self.deadline).await
                    } else {
                        !self.s.shutdown.is_cancelled()
                    };
                    if !waited {
                        return self.abort();
                    }
                    if self.s.hung.load(Ordering::Relaxed) || self.s.frozen.load(Ordering::Relaxed)
                    {
                        self.s.shutdown.cancelled().await;
                        return self.abort();
                    }
                    match self.outcome.fault {
                        Some(Fault::Drop { at_token }) if at_token == i => {
                            // Give hyper one chance to flush the tokens already yielded, so
                            // the cut lands mid-stream rather than before the headers.
                            tokio::task::yield_now().await;
                            self.truth.status = RequestStatus::Dropped;
                            self.phase = Phase::End;
                            return Some(Ev::Drop);
                        }
                        Some(Fault::StreamError { at_token }) if at_token == i => {
                            self.truth.status = RequestStatus::StreamError;
                            self.phase = Phase::Done;
                            return Some(Ev::StreamError);
                        }
                        _ => {}
                    }
                    let sent = self.note_token(i);
                    let running = self.s.metrics.running.get().max(1) as u32;
                    // The decode clock starts when the first token actually went out: token i
                    // is due one step after token i-1 was due. A late first token (a busy
                    // machine) shifts the whole schedule, so (last - first) / (n - 1), the TPOT
                    // a client computes, is never below the model's step; a late token in the
                    // middle does not shift the ones after it, so lateness does not accumulate.
                    let step = self.s.cfg.latency.decode_step(running);
                    self.deadline = if i == 0 {
                        self.deadline.max(tokio::time::Instant::from_std(sent)) + step
                    } else {
                        self.deadline + step
                    };
                    self.phase = Phase::Tokens(i + 1);
                    return Some(Ev::Token { i, last: i + 1 == n });
                }
                Phase::Usage => {
                    self.phase = Phase::Done;
                    self.truth.status = RequestStatus::Ok;
                    if self.truth.stream && self.opts.include_usage {
                        return Some(Ev::Usage);
                    }
                }
                Phase::Done => {
                    self.phase = Phase::End;
                    return Some(Ev::Done);
                }
                Phase::End => return None,
            }
        }
    }

    fn abort(&mut self) -> Option<Ev> {
        self.truth.status = RequestStatus::Aborted;
        self.phase = Phase::End;
        Some(Ev::Aborted)
    }

    /// Notes that content token `i` goes out now. One clock read per token (a zero-delay
    /// stream writes thousands a second): the last token's unix time is derived at the end
    /// from its monotonic offset.
    fn note_token(&mut self, i: u32) -> Instant {
        let now = Instant::now();
        let offset = now.duration_since(self.s.started).as_nanos() as u64;
        if i == 0 {
            self.truth.first_token_unix_ns = Some(unix_ns());
            self.truth.first_token_offset_ns = Some(offset);
            self.s
                .metrics
                .ttft
                .observe(offset.saturating_sub(self.truth.arrival_offset_ns) as f64 / 1e9);
        } else if let Some(prev) = self.last_token_at {
            self.s.metrics.inter_token.observe(now.duration_since(prev).as_secs_f64());
        }
        self.last_token_at = Some(now);
        self.truth.last_token_offset_ns = Some(offset);
        self.truth.tokens_sent = i + 1;
        self.s.metrics.generation_tokens.inc();
        now
    }

    fn release(&mut self) {
        if self.running {
            self.running = false;
            self.s.metrics.running.dec();
            self.s.metrics.kv_tokens.fetch_sub(self.kv_reserved, Ordering::Relaxed);
        }
        self.permit = None;
    }

    fn token_text(&self, i: u32) -> &'static str {
        model::token_text(self.s.cfg.seed, self.truth.index, i)
    }

    fn write_usage(&self, buf: &mut String, completion_tokens: u32) {
        let p = self.truth.prompt_tokens;
        let _ = write!(
            buf,
            "\"usage\":{{\"prompt_tokens\":{p},\"total_tokens\":{},\"completion_tokens\":{completion_tokens}}}",
            u64::from(p) + u64::from(completion_tokens)
        );
    }

    /// Appends the SSE event for `ev` (`data: ...\n\n`).
    fn write_sse(&self, buf: &mut String, ev: Ev) {
        let object = match self.truth.endpoint {
            Endpoint::ChatCompletions => "chat.completion.chunk",
            Endpoint::Completions => "text_completion",
        };
        let head = |buf: &mut String| {
            let _ = write!(
                buf,
                "data: {{\"id\":{},\"object\":\"{object}\",\"created\":{},\"model\":{},\"choices\":[",
                self.id_json, self.created, self.s.model_json
            );
        };
        match ev {
            Ev::Role => {
                head(buf);
                buf.push_str(
                    "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]",
                );
                if self.opts.continuous_usage_stats {
                    buf.push(',');
                    self.write_usage(buf, 0);
                }
                buf.push_str("}\n\n");
            }
            Ev::Token { i, last } => {
                head(buf);
                let text = self.token_text(i);
                let finish = if last {
                    format!("\"{}\"", self.outcome.finish.as_str())
                } else {
                    "null".to_string()
                };
                match self.truth.endpoint {
                    Endpoint::ChatCompletions => {
                        let _ = write!(
                            buf,
                            "{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"logprobs\":null,\"finish_reason\":{finish}}}]"
                        );
                    }
                    Endpoint::Completions => {
                        let _ = write!(
                            buf,
                            "{{\"index\":0,\"text\":\"{text}\",\"logprobs\":null,\"finish_reason\":{finish},\"stop_reason\":null}}]"
                        );
                    }
                }
                if self.opts.continuous_usage_stats {
                    buf.push(',');
                    self.write_usage(buf, i + 1);
                }
                buf.push_str("}\n\n");
            }
            Ev::Usage => {
                head(buf);
                buf.push_str("],");
                self.write_usage(buf, self.outcome.output_tokens);
                buf.push_str("}\n\n");
            }
            Ev::StreamError => {
                let _ = write!(
                    buf,
                    "data: {{\"error\": {}}}\n\n",
                    error_body(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalServerError",
                        "simulated engine error after the stream started (fault-stream-error-rate)"
                    )
                );
            }
            Ev::Done => buf.push_str("data: [DONE]\n\n"),
            Ev::Drop | Ev::Aborted => {}
        }
    }

    /// Runs a non-streaming request to its end and builds the response.
    async fn run_to_end(mut self) -> Response {
        let mut text = String::with_capacity(5 * self.outcome.output_tokens as usize);
        while let Some(ev) = self.next_event().await {
            match ev {
                Ev::Token { i, .. } => text.push_str(self.token_text(i)),
                Ev::Drop => {
                    // The body breaks before hyper sends anything: the client sees the
                    // connection closed without a reply.
                    self.truth.http_status = 0;
                    let stream = futures_util::stream::once(async {
                        Err::<Bytes, _>(std::io::Error::other("simulated dropped response"))
                    });
                    let mut r = Response::new(Body::from_stream(stream));
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    return r;
                }
                Ev::StreamError => {
                    self.truth.http_status = 500;
                    return error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalServerError",
                        "simulated engine error mid-generation (fault-stream-error-rate)",
                    );
                }
                Ev::Aborted => {
                    self.truth.http_status = 503;
                    return error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailableError",
                        "the server is shutting down",
                    );
                }
                Ev::Role | Ev::Usage | Ev::Done => {}
            }
        }
        let n = self.outcome.output_tokens;
        let p = self.truth.prompt_tokens;
        let finish = self.outcome.finish.as_str();
        let id = format!(
            "{}{}",
            if self.truth.endpoint == Endpoint::ChatCompletions { "chatcmpl-" } else { "cmpl-" },
            self.truth.request_id
        );
        let usage = serde_json::json!({
            "prompt_tokens": p,
            "total_tokens": u64::from(p) + u64::from(n),
            "completion_tokens": n,
        });
        let body = match self.truth.endpoint {
            Endpoint::ChatCompletions => serde_json::json!({
                "id": id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.s.cfg.served_model_name,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "tool_calls": []},
                    "logprobs": null,
                    "finish_reason": finish,
                    "stop_reason": null,
                }],
                "usage": usage,
            }),
            Endpoint::Completions => serde_json::json!({
                "id": id,
                "object": "text_completion",
                "created": self.created,
                "model": self.s.cfg.served_model_name,
                "choices": [{
                    "index": 0,
                    "text": text,
                    "logprobs": null,
                    "finish_reason": finish,
                    "stop_reason": null,
                }],
                "usage": usage,
            }),
        };
        json_response(StatusCode::OK, body.to_string())
    }
}

impl Drop for Job {
    /// The one place a generation request's record is written, however it ended (finished,
    /// faulted, client gone, shutdown): a body dropped by hyper lands here too.
    fn drop(&mut self) {
        // End time first: the request waiting for this slot must see it freed after our end.
        let (unix, offset) = self.s.now();
        self.release();
        self.truth.end_unix_ns = unix;
        self.truth.end_offset_ns = offset;
        // The last token's unix time from its monotonic distance to the first token's (both
        // clocks read together there), so last >= first always holds.
        if let (Some(first_unix), Some(first), Some(last)) = (
            self.truth.first_token_unix_ns,
            self.truth.first_token_offset_ns,
            self.truth.last_token_offset_ns,
        ) {
            self.truth.last_token_unix_ns = Some(first_unix + last.saturating_sub(first));
        }
        let m = &self.s.metrics;
        if self.truth.status == RequestStatus::Ok {
            m.request_success.inc();
            m.e2e.observe(offset.saturating_sub(self.truth.arrival_offset_ns) as f64 / 1e9);
            if let (Some(first), Some(last)) =
                (self.truth.first_token_offset_ns, self.truth.last_token_offset_ns)
            {
                if self.truth.tokens_sent > 1 {
                    m.tpot.observe(
                        (last - first) as f64 / 1e9 / f64::from(self.truth.tokens_sent - 1),
                    );
                }
            }
        }
        let truth = std::mem::take(&mut self.truth);
        self.s.record(truth);
    }
}
