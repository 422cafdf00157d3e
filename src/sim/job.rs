//! The token machine: one `Job` per generation request walks queue -> prefill -> tokens -> end
//! and yields events (`Ev`), paced by the latency model and the batch slots; it writes them in
//! vLLM's wire format (SSE chunks, or one JSON answer), and when dropped, however the request
//! ended, writes the request's ground-truth record. It neither routes nor parses requests
//! (`server`, `request`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::sync::OwnedSemaphorePermit;

use super::model::{self, Fault, Outcome};
use super::prefix;
use super::request::StreamOptions;
use super::state::{error_body, error_response, json_response, json_str, unix_ns, Shared};
use super::{Endpoint, RequestStatus, RequestTruth};

/// What the machine produced next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ev {
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

pub(super) struct Job {
    s: Arc<Shared>,
    truth: RequestTruth,
    pub(super) outcome: Outcome,
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
    /// The prompt's prefix-cache block hashes (`prefix::block_hashes`), looked up at admission.
    pub(super) prefix_blocks: Vec<u64>,
}

impl Job {
    pub(super) fn new(
        s: Arc<Shared>,
        truth: RequestTruth,
        outcome: Outcome,
        opts: StreamOptions,
    ) -> Self {
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
            prefix_blocks: Vec::new(),
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

    pub(super) async fn next_event(&mut self) -> Option<Ev> {
        loop {
            match self.phase {
                Phase::Start => {
                    self.phase = Phase::Queue;
                    if self.truth.stream && self.truth.endpoint == Endpoint::ChatCompletions {
                        return Some(Ev::Role);
                    }
                }
                Phase::Queue => {
                    if self.s.not_admitting.load(Ordering::Relaxed) {
                        // A dead scheduler: the request waits, never admitted, until shutdown.
                        self.s.metrics.waiting.inc();
                        self.s.shutdown.cancelled().await;
                        self.s.metrics.waiting.dec();
                        return self.abort();
                    }
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
                    self.look_up_prefix();
                    self.s.metrics.running.inc();
                    self.running = true;
                    self.kv_reserved =
                        u64::from(self.truth.prompt_tokens) + u64::from(self.outcome.output_tokens);
                    self.s.metrics.kv_tokens.fetch_add(self.kv_reserved, Ordering::Relaxed);
                    let chunk = self.s.cfg.prefill_chunk_tokens;
                    if self.paced && chunk > 0 {
                        // Chunked prefill: the prompt counted chunk by chunk as it is done.
                        if !self.chunked_prefill(chunk).await {
                            return self.abort();
                        }
                        self.deadline = tokio::time::Instant::now();
                    } else {
                        self.s.metrics.prompt_tokens.inc_by(u64::from(self.truth.prompt_tokens));
                        if self.paced {
                            self.deadline = tokio::time::Instant::now() + self.prefill_time();
                        }
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

    /// The prefill in chunks of `chunk` prompt tokens, each counted when done, spread evenly
    /// over the prefill time; false when shut down (or frozen) meanwhile.
    async fn chunked_prefill(&mut self, chunk: u32) -> bool {
        let total = self.truth.prompt_tokens.max(1);
        let whole = self.prefill_time();
        let start = tokio::time::Instant::now();
        let mut done = 0u32;
        while done < total {
            let n = chunk.min(total - done);
            done += n;
            if !self.wait_until(start + whole.mul_f64(f64::from(done) / f64::from(total))).await {
                return false;
            }
            if self.s.hung.load(Ordering::Relaxed) || self.s.frozen.load(Ordering::Relaxed) {
                self.s.shutdown.cancelled().await;
                return false;
            }
            self.s.metrics.prompt_tokens.inc_by(u64::from(n));
        }
        true
    }

    /// At admission, as vLLM's scheduler does: the prompt's leading blocks found in the prefix
    /// cache are its cached tokens (counted in the truth and the metrics); its blocks enter
    /// the cache.
    fn look_up_prefix(&mut self) {
        let Some(cache) = &self.s.prefix else { return };
        let hit_blocks = match cache.lock() {
            Ok(mut c) => c.lookup_insert(&self.prefix_blocks),
            Err(_) => 0,
        };
        let p = self.truth.prompt_tokens;
        self.truth.cached_tokens =
            prefix::cached_tokens(hit_blocks, self.s.cfg.prefix_block_tokens, p);
        self.s.metrics.prefix_queries.inc_by(u64::from(p));
        self.s.metrics.prefix_hits.inc_by(u64::from(self.truth.cached_tokens));
    }

    /// The prefill time of this prompt, its cached tokens at their lower cost.
    fn prefill_time(&self) -> Duration {
        prefix::prefill(
            &self.s.cfg.latency,
            self.truth.prompt_tokens,
            self.truth.cached_tokens,
            self.s.cfg.prefix_hit_cost,
        )
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
    pub(super) fn write_sse(&self, buf: &mut String, ev: Ev) {
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
    pub(super) async fn run_to_end(mut self) -> Response {
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
