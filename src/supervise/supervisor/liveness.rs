//! The supervisor's liveness checks on a healthy engine (docs/serve.md, "Supervision"): one
//! `/metrics` scrape into the progress watchdog (`crate::supervise::progress`), the canary
//! completion when the engine is idle (`crate::supervise::canary`), and the signals they saw
//! into the status record. The rules themselves are in those two modules, pure.
//!
//! Not here: `/health` and `/v1/models` (`crate::supervise::health`), the failure count of
//! health checks (`run_healthy`).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::supervise::canary::{self, CanaryWatch};
use crate::supervise::health::{get_tcp, Prober};
use crate::supervise::progress::{Progress, ProgressWatch};
use crate::supervise::status::Liveness;
use crate::supervise::supervisor::Supervisor;

impl Supervisor {
    /// After a healthy `/health`: the progress watchdog and the canary; `Some(reason)` when
    /// one of them says the engine must be restarted.
    pub(super) async fn check_liveness(
        &mut self,
        progress: &mut ProgressWatch,
        canary: &mut CanaryWatch,
    ) -> Option<String> {
        let p = self.policy.clone();
        // /metrics is read on every healthy check, for the status record's liveness
        // signals even when the watchdog is off.
        let canary_on = !p.canary_interval.is_zero();
        let stalled = self.stalled(progress, p.health_timeout).await;
        self.record_liveness(progress, canary);
        let scraped = match stalled {
            Ok(Some(why)) => return Some(why),
            Ok(None) => true,
            Err(()) => false,
        };
        // Flat and idle (or no /metrics to tell): do completions still work?
        if let Some(model) = self.model.clone().filter(|_| canary_on) {
            if canary.due(Instant::now(), !scraped || progress.idle()) {
                let outcome = canary::send(self.health_addr, &model, p.canary_timeout).await;
                let why = canary.record(Instant::now(), outcome, p.health_failures);
                self.record_liveness(progress, canary);
                return why;
            }
        }
        None
    }

    /// The prober's fallback notes (an engine without `/health` or `/live`) into the log and
    /// the status record, each once per agent run.
    pub(super) fn record_probe_notes(&self, prober: &mut Prober) {
        for note in prober.take_notes() {
            let mut s = self.status.lock().unwrap();
            if !s.probe_notes.contains(&note) {
                tracing::warn!("{note}");
                s.probe_notes.push(note);
            }
        }
    }

    /// The liveness signals into the status record (`nodeagent status`, the monitor's
    /// `/metrics`).
    fn record_liveness(&self, progress: &ProgressWatch, canary: &CanaryWatch) {
        let last = progress.last();
        let last_token_at = progress
            .since_last_token(Instant::now())
            .and_then(|ago| SystemTime::now().checked_sub(ago));
        let (outcome, failures) =
            canary.last().map_or((None, 0), |(o, n)| (Some(o.to_string()), n));
        self.status.lock().unwrap().liveness = Some(Liveness {
            last_token_s_ago: None,
            running: last.map(|p| p.running),
            waiting: last.map(|p| p.waiting),
            canary: outcome,
            canary_failures: failures,
            canary_at: canary.at(),
            last_token_at,
        });
    }

    /// One `/metrics` scrape into the progress watchdog; `Ok(Some(reason))` when the engine is
    /// stuck. An engine without vLLM's series (or without `/metrics`) is not judged: `Err(())`.
    pub(super) async fn stalled(
        &self,
        watch: &mut ProgressWatch,
        timeout: Duration,
    ) -> Result<Option<String>, ()> {
        let path = self.policy.probe.metrics.as_deref().ok_or(())?;
        let (status, body) = get_tcp(self.health_addr, path, timeout).await.map_err(|_| ())?;
        if status != 200 {
            return Err(());
        }
        let series = self.policy.probe.metrics_series;
        let progress = Progress::from_metrics(&String::from_utf8_lossy(&body), series).ok_or(())?;
        Ok(watch.observe(Instant::now(), progress))
    }
}
