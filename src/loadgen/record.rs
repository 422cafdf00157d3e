//! The per-request record: what one request measured, as plain serde data. One line of
//! `requests.jsonl` is one `RequestRecord`. This module imports nothing else from the crate, so
//! the worker (which fills records) and the aggregator (which reads them) never import each
//! other. It does not measure anything itself.

use serde::{Deserialize, Serialize};

/// Why a request failed. Every sent request ends either with no error (it succeeded) or with
/// exactly one of these, so `sent = succeeded + failed` holds by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The TCP connect was refused (nothing listening).
    ConnectRefused,
    /// The TCP connect did not finish within `--connect-timeout`.
    ConnectTimeout,
    /// Any other failure to connect or to send the request.
    ConnectError,
    /// No first content token within `--first-token-timeout`.
    FirstTokenTimeout,
    /// No bytes for `--read-timeout` between two reads (headers, chunks).
    IdleTimeout,
    /// The whole request took longer than `--total-timeout`.
    TotalTimeout,
    /// The server answered with a status other than 200 (the code is in `status`).
    HttpStatus,
    /// A stream ended without a `finish_reason` (with or without `[DONE]`), or the
    /// connection broke.
    StreamCut,
    /// A body that is not the SSE/JSON an OpenAI-compatible server sends, or an error object
    /// inside the stream.
    ParseError,
    /// The server put an error object into the stream (`data: {"error": ...}`).
    ServerError,
    /// A complete, well-formed answer without a single output token.
    EmptyOutput,
    /// Stopped by Ctrl-C after the grace period, still in flight.
    Cancelled,
}

impl ErrorClass {
    /// The key used in `failures` maps (`summary.json`, tables). HTTP statuses get their own
    /// key per code (`http_500`), built by `failure_key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectRefused => "connect_refused",
            Self::ConnectTimeout => "connect_timeout",
            Self::ConnectError => "connect_error",
            Self::FirstTokenTimeout => "first_token_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::TotalTimeout => "total_timeout",
            Self::HttpStatus => "http_status",
            Self::StreamCut => "stream_cut",
            Self::ParseError => "parse_error",
            Self::ServerError => "server_error",
            Self::EmptyOutput => "empty_output",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Where `output_tokens` (and `input_tokens`) came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The server's `usage` object.
    Usage,
    /// Counted by the client: one token per content chunk (the server sent no `usage`).
    CountedChunks,
}

/// Where `input_tokens` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputTokenSource {
    /// The server's `usage.prompt_tokens` (chat template included).
    Usage,
    /// Counted by the client with `--tokenizer` (prompt text only: no chat template, no
    /// special tokens), because the server sent no `usage`.
    Tokenizer,
}

/// One request, start to end. Times are seconds since the sweep started (one `Instant` anchor
/// for the whole sweep; `meta.started_at` in `summary.json` gives the wall-clock time of it).
/// Timestamps of response events are the kernel's receive time of the bytes that carried them
/// (`rxstamp`; the time they were read where the kernel gave none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Index of the level in the sweep (0-based).
    pub level: u32,
    /// Index of the request within its level (warmup requests have their own sequence).
    pub seq: u64,
    /// The `x-request-id` header sent with the request.
    pub request_id: String,
    /// Warmup requests are recorded but left out of every metric.
    pub warmup: bool,
    /// Index of the prompt in the (shuffled) dataset.
    pub prompt: u32,
    /// When the schedule wanted the request sent.
    pub scheduled_s: f64,
    /// When the request was handed to the connection (before connecting, if it needed a new one).
    pub sent_s: f64,
    /// Seconds spent opening a new connection for this request; absent when it reused one
    /// (a fresh connection's TTFT includes this, which is what `--warmup` takes out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_s: Option<f64>,
    /// When the response headers arrived.
    pub first_byte_s: Option<f64>,
    /// When the first chunk with content arrived.
    pub first_token_s: Option<f64>,
    /// When the last chunk with content arrived.
    pub last_token_s: Option<f64>,
    /// When the request ended (success or failure).
    pub done_s: f64,
    /// Arrival time of each content chunk, in order.
    pub chunk_s: Vec<f64>,
    /// Prompt tokens: from `usage`, else the tokenizer's count when one was given, else
    /// unknown (see `input_tokens_from`).
    pub input_tokens: Option<u64>,
    /// `null` when `input_tokens` is unknown.
    #[serde(default)]
    pub input_tokens_from: Option<InputTokenSource>,
    /// Output tokens: from `usage`, else the number of content chunks (see `tokens_from`).
    pub output_tokens: u64,
    pub tokens_from: TokenSource,
    /// HTTP status, when headers arrived.
    pub status: Option<u16>,
    /// `finish_reason` of the last choice that had one.
    pub finish_reason: Option<String>,
    /// `None` for a success.
    pub error: Option<ErrorClass>,
    /// One line saying what went wrong, for failures.
    pub error_detail: Option<String>,
}

impl RequestRecord {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }

    /// The key this record counts under in a `failures` map, `None` for a success.
    pub fn failure_key(&self) -> Option<String> {
        match self.error? {
            ErrorClass::HttpStatus => Some(format!(
                "http_{}",
                self.status.map_or_else(|| "unknown".into(), |s| s.to_string())
            )),
            other => Some(other.as_str().to_string()),
        }
    }

    /// Time to first token, measured from the send (not from the schedule).
    pub fn ttft(&self) -> Option<f64> {
        self.first_token_s.map(|t| t - self.sent_s)
    }

    /// End-to-end latency, from the send to the end of the response.
    pub fn latency(&self) -> f64 {
        self.done_s - self.sent_s
    }

    /// Time per output token after the first: `(last - first) / (n - 1)`; `None` for n < 2.
    pub fn tpot(&self) -> Option<f64> {
        let (first, last) = (self.first_token_s?, self.last_token_s?);
        (self.output_tokens >= 2).then(|| (last - first) / (self.output_tokens - 1) as f64)
    }

    /// Normalised time per output token: latency / n (LLMPerf's NTPOT); `None` for n = 0.
    pub fn ntpot(&self) -> Option<f64> {
        (self.output_tokens > 0).then(|| self.latency() / self.output_tokens as f64)
    }

    /// How late the send was against the schedule: `sent_s - scheduled_s`, the instant the
    /// request was handed to its connection minus its planned instant (an open loop's arrival
    /// time; a closed loop's ticket draw). Microseconds when the client keeps up; an open loop
    /// at its concurrency cap, or a client that cannot keep up, queues here.
    pub fn schedule_lag(&self) -> f64 {
        (self.sent_s - self.scheduled_s).max(0.0)
    }

    /// Gaps between consecutive content chunks (inter-chunk latency).
    pub fn itl(&self) -> impl Iterator<Item = f64> + '_ {
        self.chunk_s.windows(2).map(|w| w[1] - w[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> RequestRecord {
        RequestRecord {
            level: 0,
            seq: 0,
            request_id: "r".into(),
            warmup: false,
            prompt: 0,
            scheduled_s: 1.0,
            sent_s: 1.5,
            connect_s: None,
            first_byte_s: Some(1.6),
            first_token_s: Some(2.0),
            last_token_s: Some(2.4),
            done_s: 2.5,
            chunk_s: vec![2.0, 2.1, 2.4],
            input_tokens: Some(10),
            input_tokens_from: Some(InputTokenSource::Usage),
            output_tokens: 5,
            tokens_from: TokenSource::Usage,
            status: Some(200),
            finish_reason: Some("stop".into()),
            error: None,
            error_detail: None,
        }
    }

    #[test]
    fn derived_times_follow_their_formulas() {
        let r = rec();
        assert!((r.ttft().unwrap() - 0.5).abs() < 1e-12);
        assert!((r.latency() - 1.0).abs() < 1e-12);
        assert!((r.tpot().unwrap() - 0.1).abs() < 1e-12);
        assert!((r.ntpot().unwrap() - 0.2).abs() < 1e-12);
        assert!((r.schedule_lag() - 0.5).abs() < 1e-12);
        let itl: Vec<f64> = r.itl().collect();
        assert_eq!(itl.len(), 2);
        assert!((itl[1] - 0.3).abs() < 1e-12);
    }

    #[test]
    fn tpot_needs_two_tokens() {
        let mut r = rec();
        r.output_tokens = 1;
        assert_eq!(r.tpot(), None);
    }

    #[test]
    fn http_failures_are_keyed_by_code() {
        let mut r = rec();
        assert_eq!(r.failure_key(), None);
        r.error = Some(ErrorClass::HttpStatus);
        r.status = Some(503);
        assert_eq!(r.failure_key().as_deref(), Some("http_503"));
        r.error = Some(ErrorClass::StreamCut);
        assert_eq!(r.failure_key().as_deref(), Some("stream_cut"));
    }

    #[test]
    fn record_round_trips_through_json() {
        let r = rec();
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains("\"tokens_from\":\"usage\""));
        assert!(line.contains("\"input_tokens_from\":\"usage\""));
        let back: RequestRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
    }
}
