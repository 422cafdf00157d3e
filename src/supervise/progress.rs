//! The progress watchdog: an engine whose API server still answers `/health` while its
//! generation loop is stuck (a hung collective between tensor-parallel workers, a wedged
//! scheduler) passes every health check. vLLM's `/metrics` shows it: requests running, and
//! the token counters (`vllm:prompt_tokens_total`, `vllm:generation_tokens_total`) not moving.
//! `ProgressWatch` is fed one scrape per health tick and says when that has lasted longer than
//! the allowed stall; the supervisor then restarts the engine. Pure: no I/O, the caller brings
//! the clock and the scrape.
//!
//! The figures it reads, from vLLM's Prometheus text:
//! ```text
//! vllm:num_requests_running{engine="0",model_name="qwen2.5"} 3.0
//! vllm:prompt_tokens_total{engine="0",model_name="qwen2.5"} 18422.0
//! vllm:generation_tokens_total{engine="0",model_name="qwen2.5"} 90210.0
//! ```
//! Engines without these series (or without `/metrics`) are not watched. `vllm_sum` reads
//! them (the monitor uses it too, for requests in flight). The clock is tokio's, so the
//! supervisor's tests can run on paused time.

use std::time::Duration;

use tokio::time::Instant;

/// What one scrape says about progress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Requests the engine is working on now (`vllm:num_requests_running`).
    pub running: f64,
    /// Prompt + generated tokens counted since the engine started.
    pub tokens: f64,
}

impl Progress {
    /// Reads a `/metrics` text; `None` when it lacks the running gauge or both token counters.
    pub fn from_vllm_metrics(text: &str) -> Option<Self> {
        let running = vllm_sum(text, &["vllm:num_requests_running"])?;
        let tokens = vllm_sum(text, &["vllm:prompt_tokens_total", "vllm:generation_tokens_total"])?;
        Some(Self { running, tokens })
    }
}

/// The sum of every sample of the series `names` (all label sets: one per engine or model) in
/// a Prometheus text exposition; `None` when none of them is there.
pub fn vllm_sum(text: &str, names: &[&str]) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') {
            continue;
        }
        let name_end = t.find(['{', ' ']).unwrap_or(t.len());
        if !names.contains(&&t[..name_end]) {
            continue;
        }
        let value = t.rsplit_once('}').map(|(_, v)| v).unwrap_or(&t[name_end..]);
        if let Some(v) = value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            found = true;
            sum += v;
        }
    }
    found.then_some(sum)
}

/// Tracks token progress across scrapes of one engine life.
#[derive(Debug)]
pub struct ProgressWatch {
    stall: Duration,
    /// The token count last seen, and since when it has not moved while requests ran.
    last_tokens: Option<f64>,
    stuck_since: Option<Instant>,
}

impl ProgressWatch {
    /// `stall`: how long requests may run without a single token counted. Zero turns it off.
    pub fn new(stall: Duration) -> Self {
        Self { stall, last_tokens: None, stuck_since: None }
    }

    pub fn enabled(&self) -> bool {
        !self.stall.is_zero()
    }

    /// One scrape at `now`; `Some(reason)` when the engine has been stuck for longer than the
    /// allowed stall. An idle engine (nothing running) or any token counted resets the clock.
    pub fn observe(&mut self, now: Instant, p: Progress) -> Option<String> {
        if !self.enabled() {
            return None;
        }
        let moved = self.last_tokens.is_none_or(|last| p.tokens > last);
        self.last_tokens = Some(p.tokens);
        if moved || p.running < 1.0 {
            self.stuck_since = None;
            return None;
        }
        let since = *self.stuck_since.get_or_insert(now);
        let stuck = now.duration_since(since);
        (stuck >= self.stall).then(|| {
            format!(
                "engine stalled: {} request(s) running but no token counted for {} \
                 (vllm:prompt_tokens_total + vllm:generation_tokens_total stay at {}), while /health answers",
                p.running,
                humantime::format_duration(Duration::from_secs(stuck.as_secs())),
                p.tokens
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str =
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
        # TYPE vllm:num_requests_running gauge\n\
        vllm:num_requests_running{engine=\"0\",model_name=\"qwen2.5\"} 3.0\n\
        vllm:num_requests_waiting{engine=\"0\",model_name=\"qwen2.5\"} 1.0\n\
        vllm:prompt_tokens_total{engine=\"0\",model_name=\"qwen2.5\"} 18422.0\n\
        vllm:generation_tokens_total{engine=\"0\",model_name=\"qwen2.5\"} 90210.0\n\
        vllm:generation_tokens_created{engine=\"0\",model_name=\"qwen2.5\"} 1.7e9\n";

    #[test]
    fn reads_running_and_both_token_counters() {
        assert_eq!(
            Progress::from_vllm_metrics(METRICS),
            Some(Progress { running: 3.0, tokens: 108_632.0 })
        );
        assert_eq!(Progress::from_vllm_metrics("# nothing\nfoo 1\n"), None);
        let no_tokens = "vllm:num_requests_running 2\n";
        assert_eq!(Progress::from_vllm_metrics(no_tokens), None);
    }

    #[test]
    fn raises_only_after_the_stall_with_requests_running_and_resets_on_progress() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let p = |running: f64, tokens: f64| Progress { running, tokens };
        let mut w = ProgressWatch::new(Duration::from_secs(10));
        assert_eq!(w.observe(at(0), p(2.0, 100.0)), None, "first scrape: no baseline");
        assert_eq!(w.observe(at(5), p(2.0, 100.0)), None, "stuck since 5 s");
        assert_eq!(w.observe(at(14), p(2.0, 100.0)), None, "9 s stuck");
        let why = w.observe(at(15), p(2.0, 100.0)).expect("10 s stuck");
        assert!(why.contains("2 request(s) running") && why.contains("for 10s"), "{why}");
        // One token resets; so does an idle engine, however long its counters rest.
        assert_eq!(w.observe(at(16), p(2.0, 101.0)), None);
        assert_eq!(w.observe(at(30), p(0.0, 101.0)), None);
        assert_eq!(w.observe(at(60), p(0.0, 101.0)), None);
        assert_eq!(w.observe(at(61), p(1.0, 101.0)), None, "running again: the clock restarts");
        assert!(w.observe(at(71), p(1.0, 101.0)).is_some());
    }

    #[test]
    fn zero_turns_it_off() {
        let mut w = ProgressWatch::new(Duration::ZERO);
        let t0 = Instant::now();
        for s in 0..100 {
            let p = Progress { running: 5.0, tokens: 1.0 };
            assert_eq!(w.observe(t0 + Duration::from_secs(s * 60), p), None);
        }
    }
}
