//! The simulator's shared state (`Shared`): the configuration, the batch slots, arrival and
//! completion counters, the fault switches (hung, frozen), the metrics, and the ground-truth
//! log (`TruthLog`) every request leaves its `RequestTruth` in; plus the JSON helpers (vLLM's
//! error body) that routes and jobs share. It serves nothing and paces nothing (`server`,
//! `job`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::prefix::PrefixCache;
use super::{RequestTruth, SimConfig, StopReason};
use crate::rxstamp::RxClock;

/// State shared by every connection.
pub(crate) struct Shared {
    pub cfg: SimConfig,
    /// The model name as a JSON string literal (quotes included), escaped once.
    pub(super) model_json: String,
    pub(super) started: Instant,
    pub(super) arrivals: AtomicU64,
    completed: AtomicU64,
    pub(super) slots: Option<Arc<Semaphore>>,
    truth: Mutex<TruthLog>,
    pub(super) metrics: Metrics,
    pub(super) hung: AtomicBool,
    /// No more tokens (requests stay running), while `/health` and `/metrics` answer.
    pub(super) frozen: AtomicBool,
    /// The scheduler admits no new request: each waits until shutdown.
    pub(super) not_admitting: AtomicBool,
    /// Completions answer HTTP 500.
    pub(super) failing_completions: AtomicBool,
    pub shutdown: CancellationToken,
    /// The prefix cache, when `cfg.prefix_cache_blocks` is not 0.
    pub(super) prefix: Option<Mutex<PrefixCache>>,
    pub(super) stop_tx: watch::Sender<Option<StopReason>>,
}

/// The ground-truth records kept (at most `max_records`, in `seq` order) and the next `seq`.
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
            not_admitting: AtomicBool::new(false),
            failing_completions: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            prefix: (cfg.prefix_cache_blocks > 0).then(|| {
                Mutex::new(PrefixCache::new(
                    usize::try_from(cfg.prefix_cache_blocks).unwrap_or(usize::MAX),
                ))
            }),
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

    pub(super) fn record(&self, mut truth: RequestTruth) {
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
    pub(super) fn now(&self) -> (u64, u64) {
        (unix_ns(), self.started.elapsed().as_nanos() as u64)
    }

    /// (unix ns, ns since start) of a request's arrival: when the kernel received its last
    /// bytes (the connection's latest read, which completed the request), so the ground
    /// truth does not include how long this process was busy before it read them. Without
    /// a kernel stamp (or with an implausible one), now.
    pub(super) fn arrival(&self, rx: &RxClock) -> (u64, u64) {
        let (unix, offset) = self.now();
        match rx.unix_ns() {
            Some(ns) if ns <= unix && unix - ns < offset => (ns, offset - (unix - ns)),
            _ => (unix, offset),
        }
    }

    /// When the server started, unix seconds (`created` of `/v1/models`).
    pub(super) fn started_unix_secs(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(self.started.elapsed().as_secs())
    }
}

pub(super) fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

pub(super) fn json_str(s: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

pub(super) fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// vLLM's error body (the flat `ErrorResponse` of the 0.6–0.8 API server).
pub(super) fn error_body(status: StatusCode, kind: &str, message: &str) -> String {
    serde_json::json!({
        "object": "error",
        "message": message,
        "type": kind,
        "param": null,
        "code": status.as_u16(),
    })
    .to_string()
}

pub(super) fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    json_response(status, error_body(status, kind, message))
}
