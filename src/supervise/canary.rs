//! The canary: an engine whose completions fail (HTTP 500) while `/health` and `/v1/models`
//! answer (vLLM #1492) passes every health check, and when nothing is sent to it its token
//! counters are flat like an idle engine's. So, when the counters are flat and nothing waits or
//! runs, the supervisor sends one `max_tokens: 1` completion every `canary_interval`, within
//! `canary_timeout`; `health_failures` failed canaries in a row (a 5xx, a timeout, no answer)
//! restart the engine. A 4xx is the request's fault (a model name the engine does not serve),
//! recorded, never counted. `CanaryWatch` is pure (the caller brings the clock and the answer);
//! `send` does the one POST. Off (`canary_interval = "0s"`) by default: a canary is a real
//! request, in the engine's logs and metrics, and costs one token.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// What one canary got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "detail")]
pub enum CanaryOutcome {
    /// A 2xx answer.
    Ok,
    /// A 4xx answer: the request's fault, not counted against the engine.
    Refused(String),
    /// A 5xx, a timeout or no answer.
    Failed(String),
}

impl std::fmt::Display for CanaryOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CanaryOutcome::Ok => write!(f, "ok"),
            CanaryOutcome::Refused(w) => write!(f, "refused: {w}"),
            CanaryOutcome::Failed(w) => write!(f, "failed: {w}"),
        }
    }
}

/// POSTs `{"model": MODEL, "prompt": "ping", "max_tokens": 1}` to `/v1/completions`.
pub async fn send(addr: SocketAddr, model: &str, timeout: Duration) -> CanaryOutcome {
    let body = serde_json::json!({"model": model, "prompt": "ping", "max_tokens": 1}).to_string();
    let fut = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::post("/v1/completions")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let result = async {
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            Ok::<u16, String>(status)
        }
        .await;
        driver.abort();
        result
    };
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => CanaryOutcome::Failed(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
        Ok(Err(e)) => CanaryOutcome::Failed(e),
        Ok(Ok(s)) if (200..300).contains(&s) => CanaryOutcome::Ok,
        Ok(Ok(s)) if (400..500).contains(&s) => CanaryOutcome::Refused(format!("HTTP {s}")),
        Ok(Ok(s)) => CanaryOutcome::Failed(format!("HTTP {s}")),
    }
}

/// The canary's schedule and failure count over one engine life.
#[derive(Debug)]
pub struct CanaryWatch {
    interval: Duration,
    failures: u32,
    last_at: Option<Instant>,
    last: Option<CanaryOutcome>,
    /// RFC 3339 time of the last canary, for the status record.
    at: Option<String>,
}

impl CanaryWatch {
    /// `interval`: time between canaries; zero turns the canary off.
    pub fn new(interval: Duration) -> Self {
        Self { interval, failures: 0, last_at: None, last: None, at: None }
    }

    /// Whether a canary is due at `now`: enabled, the engine `idle` (counters flat, nothing
    /// waiting or running, or no `/metrics` to tell) and `interval` since the last one.
    pub fn due(&self, now: Instant, idle: bool) -> bool {
        !self.interval.is_zero()
            && idle
            && self.last_at.is_none_or(|t| now.saturating_duration_since(t) >= self.interval)
    }

    /// Records one canary; `Some(reason)` once `limit` canaries in a row have failed.
    pub fn record(&mut self, now: Instant, outcome: CanaryOutcome, limit: u32) -> Option<String> {
        self.last_at = Some(now);
        self.at = Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
        match &outcome {
            CanaryOutcome::Failed(_) => self.failures += 1,
            CanaryOutcome::Ok => self.failures = 0,
            CanaryOutcome::Refused(_) => {}
        }
        let why = (self.failures >= limit.max(1)).then(|| {
            format!(
                "engine fails completions: {} canary completion(s) in a row failed, last: {}, while /health answers",
                self.failures,
                match &outcome {
                    CanaryOutcome::Failed(w) | CanaryOutcome::Refused(w) => w.as_str(),
                    CanaryOutcome::Ok => "ok",
                }
            )
        });
        self.last = Some(outcome);
        why
    }

    /// RFC 3339 time of the last canary.
    pub fn at(&self) -> Option<String> {
        self.at.clone()
    }

    /// The last canary's outcome and how many have failed in a row.
    pub fn last(&self) -> Option<(&CanaryOutcome, u32)> {
        self.last.as_ref().map(|o| (o, self.failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_only_when_on_idle_and_the_interval_has_passed() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let off = CanaryWatch::new(Duration::ZERO);
        assert!(!off.due(at(0), true));
        let mut w = CanaryWatch::new(Duration::from_secs(60));
        assert!(w.due(at(0), true), "first one at once");
        assert!(!w.due(at(0), false), "not while tokens move or requests are owed");
        assert_eq!(w.record(at(0), CanaryOutcome::Ok, 3), None);
        assert!(!w.due(at(59), true));
        assert!(w.due(at(60), true));
    }

    #[test]
    fn restarts_after_limit_failures_in_a_row_and_4xx_does_not_count() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = CanaryWatch::new(Duration::from_secs(10));
        let fail = || CanaryOutcome::Failed("HTTP 500".into());
        assert_eq!(w.record(at(0), fail(), 3), None);
        assert_eq!(w.record(at(10), fail(), 3), None);
        assert_eq!(w.record(at(20), CanaryOutcome::Ok, 3), None, "one success resets");
        assert_eq!(w.record(at(30), fail(), 3), None);
        assert_eq!(w.record(at(40), CanaryOutcome::Refused("HTTP 404".into()), 3), None);
        assert_eq!(w.record(at(50), fail(), 3), None);
        assert_eq!(w.last(), Some((&fail(), 2)));
        assert_eq!(
            w.record(at(60), fail(), 3).as_deref(),
            Some(
                "engine fails completions: 3 canary completion(s) in a row failed, last: HTTP 500, \
                 while /health answers"
            )
        );
    }
}
