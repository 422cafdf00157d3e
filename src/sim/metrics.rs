//! The simulator's `/metrics`: vLLM's metric names (old-engine family plus the new-engine
//! aliases a monitor may look for), each with a `model_name` label, in OpenMetrics text.
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
        Metrics {
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

    /// The OpenMetrics text of every series, `# EOF` included.
    pub fn render(&self) -> String {
        let used = self.kv_tokens.load(Ordering::Relaxed) as f64 / self.kv_capacity as f64;
        self.cache_usage.set(used.min(1.0));
        self.kv_cache_usage.set(used.min(1.0));
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
