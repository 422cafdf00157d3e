//! Graceful drain before the supervisor stops an engine that serves (docs/serve.md,
//! "Drain"): the state turns `draining` first (the status socket, the monitor's `/metrics`
//! and `/ready`), so a router or a probe stops sending; then in-flight requests get up to
//! `drain_timeout` to finish, watched through the engine's running and waiting gauges until
//! both reach 0; then the stop goes on as always (SIGTERM, `stop_grace`, SIGKILL). An engine
//! that drains itself on SIGTERM (`probe.shutdown_timeout_arg`, vLLM's `--shutdown-timeout`,
//! given `drain_timeout` at start) gets SIGTERM at once and `drain_timeout` more grace.
//! An engine without the gauges (no `/metrics`) is given the whole `drain_timeout`.
//!
//! Not here: when a drain happens (`shutdown`, in `super`), what a stop does (`EngineRuntime`).

use std::time::Duration;

use tokio::time::Instant;

use crate::supervise::health::get_tcp;
use crate::supervise::progress::Progress;
use crate::supervise::status::{now_rfc3339, Drain, State};
use crate::supervise::supervisor::Supervisor;

/// How often the gauges are read while draining.
const DRAIN_POLL: Duration = Duration::from_millis(200);

impl Supervisor {
    /// Drains the engine before `what` (`stop`); returns the grace to give SIGTERM. With
    /// `drain_timeout = 0` nothing happens and the grace is `stop_grace`.
    pub(super) async fn drain(&mut self, what: &str) -> Duration {
        let p = self.policy.clone();
        if p.drain_timeout.is_zero() {
            return p.stop_grace;
        }
        let started = Instant::now();
        let limit = humantime::format_duration(p.drain_timeout).to_string();
        self.status.lock().unwrap().drain = Some(Drain {
            since: now_rfc3339(),
            timeout_s: p.drain_timeout.as_secs_f64(),
            in_flight: None,
            result: None,
        });
        if let Some(arg) = &p.probe.shutdown_timeout_arg {
            // The engine was started with `ARG <drain_timeout>`: on SIGTERM it refuses new
            // requests and finishes those in flight itself.
            let result = format!("left to the engine ({arg} {})", p.drain_timeout.as_secs());
            self.set_state(State::Draining, format!("draining before {what}: {result}"));
            self.record_drain(None, Some(result));
            return p.stop_grace.saturating_add(p.drain_timeout);
        }
        self.set_state(
            State::Draining,
            format!("draining before {what}: in-flight requests get up to {limit}"),
        );
        let result = loop {
            let in_flight = self.in_flight(p.health_timeout.min(DRAIN_POLL * 5)).await;
            self.record_drain(in_flight, None);
            if in_flight == Some(0.0) {
                break format!(
                    "drained: no request in flight after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            let left = p.drain_timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                break match in_flight {
                    Some(n) => {
                        format!("drain_timeout {limit} passed with {n} request(s) in flight")
                    }
                    None => format!("drain_timeout {limit} passed (no gauges to tell)"),
                };
            }
            tokio::select! {
                // The engine ended on its own while draining: nothing left to wait for.
                exit = self.runtime.wait() => {
                    break format!("engine ended while draining: {}", super::describe_exit(&exit))
                }
                _ = tokio::time::sleep(left.min(DRAIN_POLL)) => {}
            }
        };
        tracing::info!("{result}");
        self.record_drain(None, Some(result));
        p.stop_grace
    }

    /// Requests running plus waiting at the engine; `None` when its `/metrics` does not tell.
    async fn in_flight(&self, timeout: Duration) -> Option<f64> {
        let path = self.policy.probe.metrics.as_deref()?;
        let (status, body) = get_tcp(self.health_addr, path, timeout).await.ok()?;
        if status != 200 {
            return None;
        }
        let text = String::from_utf8_lossy(&body);
        let p = Progress::from_metrics(&text, self.policy.probe.metrics_series)?;
        Some(p.running + p.waiting)
    }

    fn record_drain(&self, in_flight: Option<f64>, result: Option<String>) {
        if let Some(d) = self.status.lock().unwrap().drain.as_mut() {
            if in_flight.is_some() {
                d.in_flight = in_flight;
            }
            if result.is_some() {
                d.result = result;
            }
        }
    }
}
