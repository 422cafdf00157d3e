//! The progress watchdog: an engine whose API server still answers `/health` while its
//! generation loop is stuck passes every health check. vLLM's `/metrics` shows it: requests
//! waiting or running, and the token counters (`vllm:prompt_tokens_total`,
//! `vllm:generation_tokens_total`) not moving. Whatever the split: `Running: 1, Waiting: 14`
//! (a hung collective between tensor-parallel workers, vLLM #17972) and `Running: 0,
//! Waiting: 3` (a dead or deadlocked EngineCore whose API server still queues requests, vLLM
//! #39863) are the same rule. Any token counted, prompt or generated, is progress: a long
//! chunked prefill counts its prompt tokens chunk by chunk, so a slow engine is never stuck.
//! `ProgressWatch` is fed one scrape per health tick and says when that has lasted longer than
//! the allowed stall; the supervisor then restarts the engine. Pure: no I/O, the caller brings
//! the clock and the scrape.
//!
//! The figures it reads, from vLLM's Prometheus text:
//! ```text
//! vllm:num_requests_running{engine="0",model_name="qwen2.5"} 3.0
//! vllm:num_requests_waiting{engine="0",model_name="qwen2.5"} 14.0
//! vllm:prompt_tokens_total{engine="0",model_name="qwen2.5"} 18422.0
//! vllm:generation_tokens_total{engine="0",model_name="qwen2.5"} 90210.0
//! ```
//! SGLang and llama.cpp's `llama-server --metrics` name the same figures their own way
//! (`config::MetricsSeries`, chosen by the profile's `probe.metrics_series`).
//! Engines without these series (or without `/metrics`) are not watched; one without the
//! waiting gauge is read as nothing waiting. `vllm_sum` reads
//! them (the monitor uses it too, for requests in flight). The clock is tokio's, so the
//! supervisor's tests can run on paused time.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::MetricsSeries;

/// The series of one dialect: running gauge, waiting gauge, the token counters.
pub fn series_names(s: MetricsSeries) -> (&'static str, &'static str, [&'static str; 2]) {
    match s {
        MetricsSeries::Vllm => (
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            ["vllm:prompt_tokens_total", "vllm:generation_tokens_total"],
        ),
        MetricsSeries::Sglang => (
            "sglang:num_running_reqs",
            "sglang:num_queue_reqs",
            ["sglang:prompt_tokens_total", "sglang:generation_tokens_total"],
        ),
        MetricsSeries::Llamacpp => (
            "llamacpp:requests_processing",
            "llamacpp:requests_deferred",
            ["llamacpp:prompt_tokens_total", "llamacpp:tokens_predicted_total"],
        ),
    }
}

/// What one scrape says about progress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Requests the engine is working on now (`vllm:num_requests_running`).
    pub running: f64,
    /// Requests queued for the scheduler (`vllm:num_requests_waiting`; 0 when absent).
    pub waiting: f64,
    /// Prompt + generated tokens counted since the engine started.
    pub tokens: f64,
}

impl Progress {
    /// Reads a `/metrics` text; `None` when it lacks the running gauge or both token counters.
    pub fn from_vllm_metrics(text: &str) -> Option<Self> {
        Self::from_metrics(text, MetricsSeries::Vllm)
    }

    /// Reads a `/metrics` text with the series of `series`.
    pub fn from_metrics(text: &str, series: MetricsSeries) -> Option<Self> {
        let (running, waiting, tokens) = series_names(series);
        let running = vllm_sum(text, &[running])?;
        let waiting = vllm_sum(text, &[waiting]).unwrap_or(0.0);
        let tokens = vllm_sum(text, &tokens)?;
        Some(Self { running, waiting, tokens })
    }

    /// Requests waiting or running: the engine owes tokens.
    pub fn busy(&self) -> bool {
        self.running + self.waiting >= 1.0
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
    /// The token count last seen, and since when it has not moved while requests were owed.
    last_tokens: Option<f64>,
    stuck_since: Option<Instant>,
    /// The last scrape, and when the token count last moved (or was first seen).
    last: Option<Progress>,
    last_token_at: Option<Instant>,
    /// The counters moved at the last scrape.
    last_moved: bool,
    /// Whose token counters the stall reason names.
    series: MetricsSeries,
}

impl ProgressWatch {
    /// `stall`: how long requests may wait or run without a single token counted. Zero turns
    /// it off.
    pub fn new(stall: Duration) -> Self {
        Self {
            stall,
            last_tokens: None,
            stuck_since: None,
            last: None,
            last_token_at: None,
            last_moved: false,
            series: MetricsSeries::Vllm,
        }
    }

    /// The same, for an engine whose `/metrics` has the series of `series`.
    pub fn with_series(mut self, series: MetricsSeries) -> Self {
        self.series = series;
        self
    }

    /// The last scrape read, if any.
    pub fn last(&self) -> Option<Progress> {
        self.last
    }

    /// The last scrape showed an idle engine: nothing waiting or running, and the counters
    /// did not move since the scrape before (the first scrape counts as moved).
    pub fn idle(&self) -> bool {
        self.last.is_some_and(|p| !p.busy()) && !self.last_moved
    }

    /// How long before `now` the token count last moved (from the first scrape on).
    pub fn since_last_token(&self, now: Instant) -> Option<Duration> {
        self.last_token_at.map(|t| now.saturating_duration_since(t))
    }

    pub fn enabled(&self) -> bool {
        !self.stall.is_zero()
    }

    /// One scrape at `now`; `Some(reason)` when requests have been waiting or running for
    /// longer than the allowed stall with no token counted. An idle engine (nothing waiting or
    /// running) or any token counted resets the clock. A counter that goes down (a reset) counts
    /// as moved.
    pub fn observe(&mut self, now: Instant, p: Progress) -> Option<String> {
        let moved = self.last_tokens.is_none_or(|last| p.tokens != last);
        self.last_tokens = Some(p.tokens);
        self.last = Some(p);
        self.last_moved = moved;
        if moved {
            self.last_token_at = Some(now);
        }
        if !self.enabled() || moved || !p.busy() {
            self.stuck_since = None;
            return None;
        }
        let since = *self.stuck_since.get_or_insert(now);
        let stuck = now.duration_since(since);
        let [prompt, generated] = series_names(self.series).2;
        (stuck >= self.stall).then(|| {
            format!(
                "engine stalled: {} running, {} waiting, no token counted for {} \
                 ({prompt} + {generated} stay at {}), while /health answers",
                p.running,
                p.waiting,
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

    /// A `/metrics` text as vLLM writes it, with these figures.
    fn scrape(running: u32, waiting: u32, prompt: u64, generated: u64) -> Progress {
        let text = format!(
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
             # TYPE vllm:num_requests_running gauge\n\
             vllm:num_requests_running{{engine=\"0\",model_name=\"qwen2.5\"}} {running}.0\n\
             # HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
             # TYPE vllm:num_requests_waiting gauge\n\
             vllm:num_requests_waiting{{engine=\"0\",model_name=\"qwen2.5\"}} {waiting}.0\n\
             # TYPE vllm:prompt_tokens_total counter\n\
             vllm:prompt_tokens_total{{engine=\"0\",model_name=\"qwen2.5\"}} {prompt}.0\n\
             # TYPE vllm:generation_tokens_total counter\n\
             vllm:generation_tokens_total{{engine=\"0\",model_name=\"qwen2.5\"}} {generated}.0\n"
        );
        Progress::from_vllm_metrics(&text).expect("a vLLM scrape")
    }

    #[test]
    fn reads_running_waiting_and_both_token_counters() {
        assert_eq!(
            Progress::from_vllm_metrics(METRICS),
            Some(Progress { running: 3.0, waiting: 1.0, tokens: 108_632.0 })
        );
        assert_eq!(Progress::from_vllm_metrics("# nothing\nfoo 1\n"), None);
        let no_tokens = "vllm:num_requests_running 2\n";
        assert_eq!(Progress::from_vllm_metrics(no_tokens), None);
        // An engine without the waiting gauge: nothing waiting.
        let no_waiting = "vllm:num_requests_running 2\nvllm:generation_tokens_total 7\n";
        assert_eq!(
            Progress::from_vllm_metrics(no_waiting),
            Some(Progress { running: 2.0, waiting: 0.0, tokens: 7.0 })
        );
    }

    #[test]
    fn raises_only_after_the_stall_with_requests_running_and_resets_on_progress() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = ProgressWatch::new(Duration::from_secs(10));
        assert_eq!(w.observe(at(0), scrape(2, 0, 50, 50)), None, "first scrape: no baseline");
        assert_eq!(w.observe(at(5), scrape(2, 0, 50, 50)), None, "stuck since 5 s");
        assert_eq!(w.observe(at(14), scrape(2, 0, 50, 50)), None, "9 s stuck");
        let why = w.observe(at(15), scrape(2, 0, 50, 50)).expect("10 s stuck");
        assert_eq!(
            why,
            "engine stalled: 2 running, 0 waiting, no token counted for 10s \
             (vllm:prompt_tokens_total + vllm:generation_tokens_total stay at 100), while /health answers"
        );
        // One token resets; so does an idle engine, however long its counters rest.
        assert_eq!(w.observe(at(16), scrape(2, 0, 50, 51)), None);
        assert_eq!(w.observe(at(30), scrape(0, 0, 50, 51)), None);
        assert_eq!(w.observe(at(60), scrape(0, 0, 50, 51)), None);
        assert_eq!(
            w.observe(at(61), scrape(1, 0, 50, 51)),
            None,
            "running again: the clock restarts"
        );
        assert!(w.observe(at(71), scrape(1, 0, 50, 51)).is_some());
    }

    /// vLLM #39863: a dead EngineCore behind a live API server, `Running: 0 reqs, Waiting: 3`.
    #[test]
    fn requests_waiting_with_none_running_and_no_token_is_a_stall() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = ProgressWatch::new(Duration::from_secs(120));
        // Idle for an hour: flat counters, nothing owed.
        for m in 0..60 {
            assert_eq!(w.observe(at(m * 60), scrape(0, 0, 900, 4000)), None);
        }
        // Three requests arrive and are never admitted.
        assert_eq!(w.observe(at(3600), scrape(0, 3, 900, 4000)), None);
        assert_eq!(w.observe(at(3719), scrape(0, 3, 900, 4000)), None, "119 s");
        let why = w.observe(at(3720), scrape(0, 3, 900, 4000)).expect("2 min, nothing admitted");
        assert!(
            why.starts_with("engine stalled: 0 running, 3 waiting, no token counted for 2m "),
            "{why}"
        );
        assert_eq!(w.since_last_token(at(3720)), Some(Duration::from_secs(3720)));
        assert_eq!(w.last(), Some(scrape(0, 3, 900, 4000)));
    }

    /// vLLM #17972: `Running: 1, Waiting: 14` for an hour.
    #[test]
    fn running_and_waiting_with_no_token_is_a_stall() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = ProgressWatch::new(Duration::from_secs(120));
        assert_eq!(w.observe(at(0), scrape(1, 14, 10, 10)), None);
        assert_eq!(w.observe(at(5), scrape(1, 14, 10, 10)), None);
        let why = w.observe(at(125), scrape(1, 14, 10, 10)).expect("2 min flat");
        assert!(
            why.starts_with("engine stalled: 1 running, 14 waiting, no token counted for 2m "),
            "{why}"
        );
    }

    /// A long chunked prefill: no generated token for far longer than the stall, but the
    /// prompt counter moves chunk by chunk; and a slow decode, one token per minute. Neither is
    /// a stall, however long it lasts.
    #[test]
    fn a_slow_but_progressing_engine_is_never_stalled() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = ProgressWatch::new(Duration::from_secs(120));
        // One 1M-token prompt, prefilled in 8192-token chunks every 100 s, 13 waiting behind it.
        for k in 0..120u64 {
            assert_eq!(w.observe(at(k * 10), scrape(1, 13, 8192 * (k / 10), 0)), None, "{k}");
        }
        // Decode: one token every 110 s, scraped every 10 s.
        for k in 0..120u64 {
            assert_eq!(w.observe(at(1200 + k * 10), scrape(1, 13, 98_304, k / 11)), None, "{k}");
        }
    }

    #[test]
    fn a_counter_reset_counts_as_moved() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = ProgressWatch::new(Duration::from_secs(10));
        assert_eq!(w.observe(at(0), scrape(1, 0, 500, 500)), None);
        assert_eq!(w.observe(at(9), scrape(1, 0, 500, 500)), None);
        assert_eq!(w.observe(at(10), scrape(1, 0, 0, 3)), None, "counters went back: moved");
        assert_eq!(w.since_last_token(at(12)), Some(Duration::from_secs(2)));
    }

    /// llama-server --metrics and SGLang name the same figures their own way.
    #[test]
    fn reads_the_series_of_llama_server_and_sglang() {
        let llama = "# TYPE llamacpp:prompt_tokens_total counter\n\
                     llamacpp:prompt_tokens_total 120\n\
                     llamacpp:tokens_predicted_total 37\n\
                     llamacpp:requests_processing 1\n\
                     llamacpp:requests_deferred 2\n";
        let want = Some(Progress { running: 1.0, waiting: 2.0, tokens: 157.0 });
        assert_eq!(Progress::from_metrics(llama, MetricsSeries::Llamacpp), want);
        assert_eq!(Progress::from_vllm_metrics(llama), None);
        let sglang = "sglang:num_running_reqs{model_name=\"m\"} 1.0\n\
                      sglang:num_queue_reqs{model_name=\"m\"} 2.0\n\
                      sglang:prompt_tokens_total{model_name=\"m\"} 100.0\n\
                      sglang:generation_tokens_total{model_name=\"m\"} 57.0\n";
        assert_eq!(Progress::from_metrics(sglang, MetricsSeries::Sglang), want);
        let t0 = Instant::now();
        let mut w = ProgressWatch::new(Duration::from_secs(1)).with_series(MetricsSeries::Llamacpp);
        let p = Progress::from_metrics(llama, MetricsSeries::Llamacpp).unwrap();
        assert_eq!(w.observe(t0, p), None, "first scrape: no baseline");
        assert_eq!(w.observe(t0 + Duration::from_secs(1), p), None, "flat from here");
        let why = w.observe(t0 + Duration::from_secs(2), p).unwrap();
        assert!(
            why.contains(
                "(llamacpp:prompt_tokens_total + llamacpp:tokens_predicted_total stay at 157)"
            ),
            "{why}"
        );
    }

    #[test]
    fn zero_turns_it_off() {
        let mut w = ProgressWatch::new(Duration::ZERO);
        let t0 = Instant::now();
        for s in 0..100 {
            assert_eq!(w.observe(t0 + Duration::from_secs(s * 60), scrape(5, 5, 1, 0)), None);
        }
    }
}
