//! The simulator's `/metrics`: vLLM's metric names (old-engine family plus the new-engine
//! aliases a monitor may look for), each with a `model_name` label, in the Prometheus text
//! format 0.0.4 that vLLM serves.
//!
//! Every series has one label value (the served model name), so the handles are taken out of
//! their families once at start-up and the request path only touches atomics (and the
//! histograms' own short locks).

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model_name: String,
}

/// vLLM's TTFT buckets (seconds).
const TTFT_BUCKETS: [f64; 17] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0,
];
/// vLLM's per-output-token buckets (seconds).
const TPOT_BUCKETS: [f64; 14] =
    [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0];
/// vLLM's request latency buckets (seconds).
const E2E_BUCKETS: [f64; 14] =
    [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0];

type HistFamily = Family<ModelLabel, Histogram, fn() -> Histogram>;

pub(crate) struct Metrics {
    registry: Registry,
    pub running: Gauge,
    pub waiting: Gauge,
    cache_usage: Gauge<f64, AtomicU64>,
    kv_cache_usage: Gauge<f64, AtomicU64>,
    /// KV tokens reserved by running requests; turned into the usage ratio at scrape time.
    pub kv_tokens: AtomicU64,
    kv_capacity: u64,
    pub prompt_tokens: Counter,
    pub generation_tokens: Counter,
    pub request_success: Counter,
    /// Prompt tokens looked up in the prefix cache, and those found (vLLM V1's counters).
    pub prefix_queries: Counter,
    pub prefix_hits: Counter,
    pub ttft: Histogram,
    pub tpot: Histogram,
    pub inter_token: Histogram,
    pub e2e: Histogram,
    pub queue: Histogram,
}

impl Metrics {
    pub fn new(model_name: &str, kv_capacity: u64) -> Self {
        let label = ModelLabel { model_name: model_name.to_string() };
        let mut registry = Registry::default();

        fn gauge<N, A>(r: &mut Registry, name: &str, help: &str, l: &ModelLabel) -> Gauge<N, A>
        where
            Gauge<N, A>: prometheus_client::metrics::TypedMetric
                + prometheus_client::encoding::EncodeMetric
                + Clone
                + Default
                + Send
                + Sync
                + std::fmt::Debug
                + 'static,
        {
            let fam = Family::<ModelLabel, Gauge<N, A>>::default();
            r.register(name, help, fam.clone());
            fam.get_or_create_owned(l)
        }
        fn counter(r: &mut Registry, name: &str, help: &str, l: &ModelLabel) -> Counter {
            let fam = Family::<ModelLabel, Counter>::default();
            r.register(name, help, fam.clone());
            fam.get_or_create_owned(l)
        }
        fn histogram(
            r: &mut Registry,
            name: &str,
            help: &str,
            l: &ModelLabel,
            make: fn() -> Histogram,
        ) -> Histogram {
            let fam = HistFamily::new_with_constructor(make);
            r.register(name, help, fam.clone());
            fam.get_or_create_owned(l)
        }

        let running = gauge(
            &mut registry,
            "vllm:num_requests_running",
            "Number of requests currently running on GPU",
            &label,
        );
        let waiting = gauge(
            &mut registry,
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed",
            &label,
        );
        let cache_usage = gauge(
            &mut registry,
            "vllm:gpu_cache_usage_perc",
            "GPU KV-cache usage. 1 means 100 percent usage",
            &label,
        );
        let kv_cache_usage = gauge(
            &mut registry,
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage",
            &label,
        );
        // Registered so the series exists (a monitor alerts on its rate); the simulator never
        // preempts.
        let _preemptions = counter(
            &mut registry,
            "vllm:num_preemptions",
            "Cumulative number of preemption from the engine",
            &label,
        );
        let prompt_tokens = counter(
            &mut registry,
            "vllm:prompt_tokens",
            "Number of prefill tokens processed",
            &label,
        );
        let generation_tokens = counter(
            &mut registry,
            "vllm:generation_tokens",
            "Number of generation tokens processed",
            &label,
        );
        let request_success = counter(
            &mut registry,
            "vllm:request_success",
            "Count of successfully processed requests",
            &label,
        );
        let ttft = histogram(
            &mut registry,
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds",
            &label,
            || Histogram::new(TTFT_BUCKETS),
        );
        let tpot = histogram(
            &mut registry,
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds",
            &label,
            || Histogram::new(TPOT_BUCKETS),
        );
        let inter_token = histogram(
            &mut registry,
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds",
            &label,
            || Histogram::new(TPOT_BUCKETS),
        );
        let e2e = histogram(
            &mut registry,
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds",
            &label,
            || Histogram::new(E2E_BUCKETS),
        );
        let queue = histogram(
            &mut registry,
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request",
            &label,
            || Histogram::new(E2E_BUCKETS),
        );
        let prefix_queries = counter(
            &mut registry,
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            &label,
        );
        let prefix_hits = counter(
            &mut registry,
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            &label,
        );
        Metrics {
            prefix_queries,
            prefix_hits,
            registry,
            running,
            waiting,
            cache_usage,
            kv_cache_usage,
            kv_tokens: AtomicU64::new(0),
            kv_capacity,
            prompt_tokens,
            generation_tokens,
            request_success,
            ttft,
            tpot,
            inter_token,
            e2e,
            queue,
        }
    }

    /// Every series in the Prometheus text format 0.0.4, as vLLM's Python client serves it.
    pub fn render(&self) -> String {
        let used = self.kv_tokens.load(Ordering::Relaxed) as f64 / self.kv_capacity as f64;
        self.cache_usage.set(used.min(1.0));
        self.kv_cache_usage.set(used.min(1.0));
        let mut open = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut open, &self.registry);
        openmetrics_to_prometheus(&open)
    }
}

/// Rewrites the crate's OpenMetrics text into Prometheus text 0.0.4: a counter's `# HELP` and
/// `# TYPE` name the `_total` series (OpenMetrics names the family without it, which
/// Prometheus-format parsers and `promtool check metrics` read as a counter without help), and
/// there is no `# EOF`.
///
/// In:  `# HELP vllm:prompt_tokens Number of prefill tokens processed`
///      `# TYPE vllm:prompt_tokens counter`
///      `vllm:prompt_tokens_total{model_name="qwen2.5"} 13`
/// Out: the same with `vllm:prompt_tokens_total` on both comment lines.
fn openmetrics_to_prometheus(open: &str) -> String {
    let mut out = String::with_capacity(open.len() + 256);
    let mut help: Option<&str> = None;
    for line in open.lines() {
        if line == "# EOF" {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(h) = help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                if let Some(h) = help.take() {
                    let text = h.strip_prefix("# HELP ").and_then(|h| h.strip_prefix(name));
                    out.push_str(&format!("# HELP {name}_total{}\n", text.unwrap_or_default()));
                }
                out.push_str(&format!("# TYPE {name}_total counter\n"));
                continue;
            }
        }
        if let Some(h) = help.take() {
            out.push_str(h);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_total_and_eof_is_dropped() {
        let open = "# HELP vllm:prompt_tokens Number of prefill tokens processed.\n\
                    # TYPE vllm:prompt_tokens counter\n\
                    vllm:prompt_tokens_total{model_name=\"m\"} 13\n\
                    # HELP vllm:num_requests_running Running.\n\
                    # TYPE vllm:num_requests_running gauge\n\
                    vllm:num_requests_running{model_name=\"m\"} 0\n\
                    # EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(open),
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n\
             # TYPE vllm:prompt_tokens_total counter\n\
             vllm:prompt_tokens_total{model_name=\"m\"} 13\n\
             # HELP vllm:num_requests_running Running.\n\
             # TYPE vllm:num_requests_running gauge\n\
             vllm:num_requests_running{model_name=\"m\"} 0\n"
        );
    }

    #[test]
    fn rendered_metrics_have_help_and_type_for_every_series() {
        let m = Metrics::new("qwen2.5", 100);
        m.prompt_tokens.inc_by(5);
        let text = m.render();
        assert!(!text.contains("# EOF"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let series = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| series.strip_suffix(s))
                .filter(|f| text.contains(&format!("# TYPE {f} histogram")))
                .unwrap_or(series);
            assert!(text.contains(&format!("# HELP {family} ")), "no help for {line}");
            assert!(text.contains(&format!("# TYPE {family} ")), "no type for {line}");
        }
        assert!(text.contains("vllm:prompt_tokens_total{model_name=\"qwen2.5\"} 5\n"));
    }
}
