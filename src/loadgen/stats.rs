//! The aggregator: turns the records of one level into that level's metrics. Pure: no I/O, no
//! clock, no worker code; it only reads `record::RequestRecord`. Unit-tested on literal vectors.
//!
//! Percentiles use linear interpolation between the two closest ranks (numpy's default
//! `linear` method, Hyndman-Fan type 7): with `h = (n - 1) * q` over the sorted samples `x`,
//! `p(q) = x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])`. `std` is the
//! population standard deviation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::record::{InputTokenSource, RequestRecord, TokenSource};

/// Name of the percentile method, written into `summary.json`'s `meta`.
pub const PERCENTILE_METHOD: &str =
    "linear interpolation between closest ranks (numpy 'linear', Hyndman-Fan type 7)";

/// Summary of one metric's samples. All fields are 0 when there are no samples (`count` says so).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dist {
    pub count: u64,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub p50: f64,
    pub p66: f64,
    pub p75: f64,
    pub p80: f64,
    pub p90: f64,
    pub p95: f64,
    pub p98: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    pub max: f64,
}

/// The percentile columns of `Dist`, in order, with their labels.
pub const PERCENTILES: [(&str, f64); 9] = [
    ("p50", 0.50),
    ("p66", 0.66),
    ("p75", 0.75),
    ("p80", 0.80),
    ("p90", 0.90),
    ("p95", 0.95),
    ("p98", 0.98),
    ("p99", 0.99),
    ("p99.9", 0.999),
];

impl Dist {
    /// Summarises `samples` (sorted in place; NaNs are dropped first).
    pub fn from_samples(samples: &mut Vec<f64>) -> Self {
        samples.retain(|x| !x.is_nan());
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let var = samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        let p = |q| percentile_sorted(samples, q);
        Self {
            count: samples.len() as u64,
            mean,
            std: var.sqrt(),
            min: samples[0],
            p50: p(0.50),
            p66: p(0.66),
            p75: p(0.75),
            p80: p(0.80),
            p90: p(0.90),
            p95: p(0.95),
            p98: p(0.98),
            p99: p(0.99),
            p99_9: p(0.999),
            max: samples[samples.len() - 1],
        }
    }

    /// Percentile by its label (`"p99"`), or `mean`/`min`/`max`/`std`.
    pub fn get(&self, key: &str) -> Option<f64> {
        Some(match key {
            "mean" => self.mean,
            "std" => self.std,
            "min" => self.min,
            "max" => self.max,
            "p50" => self.p50,
            "p66" => self.p66,
            "p75" => self.p75,
            "p80" => self.p80,
            "p90" => self.p90,
            "p95" => self.p95,
            "p98" => self.p98,
            "p99" => self.p99,
            "p99.9" => self.p99_9,
            _ => return None,
        })
    }
}

/// Percentile `q` in [0, 1] of sorted, non-empty samples (linear interpolation).
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Service-level objectives for goodput: a request is "good" when it succeeded and meets every
/// objective that is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_s: Option<f64>,
    pub tpot_s: Option<f64>,
    pub itl_s: Option<f64>,
    pub latency_s: Option<f64>,
}

impl Slo {
    pub fn is_set(&self) -> bool {
        self.ttft_s.is_some()
            || self.tpot_s.is_some()
            || self.itl_s.is_some()
            || self.latency_s.is_some()
    }

    fn met_by(&self, r: &RequestRecord) -> bool {
        let under = |limit: Option<f64>, value: Option<f64>| match (limit, value) {
            (None, _) => true,
            (Some(l), Some(v)) => v <= l,
            (Some(_), None) => false,
        };
        let max_itl = r.itl().fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        under(self.ttft_s, r.ttft())
            && (self.tpot_s.is_none() || r.output_tokens < 2 || under(self.tpot_s, r.tpot()))
            && (self.itl_s.is_none() || max_itl.is_none() || under(self.itl_s, max_itl))
            && under(self.latency_s, Some(r.latency()))
    }
}

/// Goodput: requests meeting every SLO, per second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    pub slo: Slo,
    pub good_requests: u64,
    /// Good requests per second of the level's duration.
    pub goodput_qps: f64,
    /// Good requests as a fraction of sent requests.
    pub good_fraction: f64,
}

/// The metrics of one level. Every key of the `summary.json` contract is here; see README
/// ("Metrics") for each formula and its aliases in other tools.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LevelStats {
    /// Concurrency: the fixed concurrency (closed loop) or the cap (open loop, 0 = none).
    pub parallel: u64,
    /// Request rate of an open loop, requests/s; `null` for a closed loop.
    pub rate: Option<f64>,
    /// Requests the level was asked to send (warmup not included).
    pub planned: u64,
    /// Requests sent (= succeeded + failed).
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Planned requests never sent (duration limit reached, or interrupted).
    pub not_sent: u64,
    /// Warmup requests sent before the level, excluded from every metric.
    pub warmup: u64,
    /// From the first send to the last response end, seconds.
    pub duration_s: f64,
    /// Succeeded requests per second.
    pub qps: f64,
    /// Output tokens of succeeded requests per second.
    pub output_throughput: f64,
    /// Input + output tokens of succeeded requests per second.
    pub total_throughput: f64,
    pub ttft_s: Dist,
    pub tpot_s: Dist,
    pub itl_s: Dist,
    pub latency_s: Dist,
    pub ntpot_s: Dist,
    pub schedule_lag_s: Dist,
    pub input_tokens: Dist,
    pub output_tokens: Dist,
    /// Mean input tokens over the succeeded requests whose count is known (`input_tokens`
    /// likewise); `input_tokens_from` says where the counts came from.
    pub input_tokens_mean: f64,
    pub output_tokens_mean: f64,
    /// `usage` (the server's count, chat template included), `tokenizer` (`--tokenizer`'s
    /// count of the prompt text, the server sent no usage), `usage+tokenizer` (both occur),
    /// or `null`: no succeeded request's input count is known.
    #[serde(default)]
    pub input_tokens_from: Option<String>,
    /// Succeeded requests whose input tokens were counted with `--tokenizer`.
    #[serde(default)]
    pub input_tokens_counted: u64,
    /// Succeeded requests whose input tokens are unknown (no usage, no `--tokenizer`); left
    /// out of `input_tokens` and its mean.
    #[serde(default)]
    pub input_tokens_unknown: u64,
    /// Mean number of content chunks per succeeded request.
    pub chunks_mean: f64,
    /// Mean requests in flight: sum of latencies / duration (Little's law).
    pub achieved_concurrency: f64,
    /// Succeeded requests whose token counts were counted by the client (no `usage`).
    pub tokens_counted: u64,
    /// Failures by class (`http_500`, `stream_cut`, ...).
    pub failures: BTreeMap<String, u64>,
    pub goodput: Option<Goodput>,
}

/// What the level was asked to do, for the fields the records cannot tell.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LevelPlan {
    pub parallel: u64,
    pub rate: Option<f64>,
    pub planned: u64,
}

/// Collects one level's records. Warmup records are counted and otherwise ignored.
#[derive(Debug, Default)]
pub struct Aggregator {
    plan: LevelPlan,
    slo: Slo,
    warmup: u64,
    sent: u64,
    succeeded: u64,
    first_sent: Option<f64>,
    last_done: Option<f64>,
    latency_sum: f64,
    input_sum: u64,
    input_known: u64,
    input_counted: u64,
    output_sum: u64,
    chunks_sum: u64,
    counted: u64,
    good: u64,
    ttft: Vec<f64>,
    tpot: Vec<f64>,
    itl: Vec<f64>,
    latency: Vec<f64>,
    ntpot: Vec<f64>,
    lag: Vec<f64>,
    input_tokens: Vec<f64>,
    output_tokens: Vec<f64>,
    failures: BTreeMap<String, u64>,
}

impl Aggregator {
    pub fn new(plan: LevelPlan, slo: Slo) -> Self {
        Self { plan, slo, ..Self::default() }
    }

    pub fn sent(&self) -> u64 {
        self.sent
    }

    pub fn failed(&self) -> u64 {
        self.sent - self.succeeded
    }

    pub fn push(&mut self, r: &RequestRecord) {
        if r.warmup {
            self.warmup += 1;
            return;
        }
        self.sent += 1;
        self.first_sent = Some(self.first_sent.map_or(r.sent_s, |t| t.min(r.sent_s)));
        self.last_done = Some(self.last_done.map_or(r.done_s, |t| t.max(r.done_s)));
        self.lag.push(r.schedule_lag());
        self.latency_sum += r.latency();
        if let Some(key) = r.failure_key() {
            *self.failures.entry(key).or_default() += 1;
            return;
        }
        self.succeeded += 1;
        self.latency.push(r.latency());
        if let Some(t) = r.ttft() {
            self.ttft.push(t);
        }
        if let Some(t) = r.tpot() {
            self.tpot.push(t);
        }
        if let Some(t) = r.ntpot() {
            self.ntpot.push(t);
        }
        self.itl.extend(r.itl());
        if let Some(input) = r.input_tokens {
            self.input_sum += input;
            self.input_known += 1;
            self.input_tokens.push(input as f64);
            if r.input_tokens_from == Some(InputTokenSource::Tokenizer) {
                self.input_counted += 1;
            }
        }
        self.output_sum += r.output_tokens;
        self.chunks_sum += r.chunk_s.len() as u64;
        self.output_tokens.push(r.output_tokens as f64);
        if r.tokens_from == TokenSource::CountedChunks {
            self.counted += 1;
        }
        if self.slo.is_set() && self.slo.met_by(r) {
            self.good += 1;
        }
    }

    /// The level's metrics. `finish` takes `&mut self` only to sort samples in place.
    pub fn finish(&mut self) -> LevelStats {
        let duration = match (self.first_sent, self.last_done) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => 0.0,
        };
        let per_s = |x: f64| if duration > 0.0 { x / duration } else { 0.0 };
        let mean_of = |sum: u64, n: u64| if n > 0 { sum as f64 / n as f64 } else { 0.0 };
        let goodput = self.slo.is_set().then(|| Goodput {
            slo: self.slo,
            good_requests: self.good,
            goodput_qps: per_s(self.good as f64),
            good_fraction: mean_of(self.good, self.sent),
        });
        LevelStats {
            parallel: self.plan.parallel,
            rate: self.plan.rate,
            planned: self.plan.planned,
            requests: self.sent,
            succeeded: self.succeeded,
            failed: self.sent - self.succeeded,
            not_sent: self.plan.planned.saturating_sub(self.sent),
            warmup: self.warmup,
            duration_s: duration,
            qps: per_s(self.succeeded as f64),
            output_throughput: per_s(self.output_sum as f64),
            total_throughput: per_s((self.input_sum + self.output_sum) as f64),
            ttft_s: Dist::from_samples(&mut self.ttft),
            tpot_s: Dist::from_samples(&mut self.tpot),
            itl_s: Dist::from_samples(&mut self.itl),
            latency_s: Dist::from_samples(&mut self.latency),
            ntpot_s: Dist::from_samples(&mut self.ntpot),
            schedule_lag_s: Dist::from_samples(&mut self.lag),
            input_tokens: Dist::from_samples(&mut self.input_tokens),
            output_tokens: Dist::from_samples(&mut self.output_tokens),
            input_tokens_mean: mean_of(self.input_sum, self.input_known),
            output_tokens_mean: mean_of(self.output_sum, self.succeeded),
            input_tokens_from: match (self.input_known, self.input_counted) {
                (0, _) => None,
                (k, c) if c == k => Some("tokenizer".into()),
                (_, 0) => Some("usage".into()),
                _ => Some("usage+tokenizer".into()),
            },
            input_tokens_counted: self.input_counted,
            input_tokens_unknown: self.succeeded - self.input_known,
            chunks_mean: mean_of(self.chunks_sum, self.succeeded),
            achieved_concurrency: per_s(self.latency_sum),
            tokens_counted: self.counted,
            failures: self.failures.clone(),
            goodput,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::record::ErrorClass;

    fn ok(sent: f64, chunks: &[f64], done: f64, out: u64) -> RequestRecord {
        RequestRecord {
            level: 0,
            seq: 0,
            request_id: String::new(),
            warmup: false,
            prompt: 0,
            scheduled_s: sent,
            sent_s: sent,
            connect_s: None,
            first_byte_s: Some(sent),
            first_token_s: chunks.first().copied(),
            last_token_s: chunks.last().copied(),
            done_s: done,
            chunk_s: chunks.to_vec(),
            input_tokens: Some(10),
            input_tokens_from: Some(InputTokenSource::Usage),
            output_tokens: out,
            tokens_from: TokenSource::Usage,
            status: Some(200),
            finish_reason: Some("stop".into()),
            error: None,
            error_detail: None,
        }
    }

    #[test]
    fn percentiles_interpolate_linearly() {
        let mut v: Vec<f64> = (1..=10).map(f64::from).collect();
        let d = Dist::from_samples(&mut v);
        assert_eq!(d.count, 10);
        assert!((d.mean - 5.5).abs() < 1e-12);
        assert!((d.p50 - 5.5).abs() < 1e-12);
        // h = 9 * 0.9 = 8.1 -> 9 + 0.1 * (10 - 9)
        assert!((d.p90 - 9.1).abs() < 1e-12);
        assert!((d.p99_9 - 9.991).abs() < 1e-9);
        assert_eq!((d.min, d.max), (1.0, 10.0));
        // population std of 1..=10 is sqrt(8.25)
        assert!((d.std - 8.25f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn empty_and_single_samples() {
        assert_eq!(Dist::from_samples(&mut vec![]), Dist::default());
        let d = Dist::from_samples(&mut vec![3.0]);
        assert_eq!((d.p50, d.p99_9, d.std), (3.0, 3.0, 0.0));
    }

    #[test]
    fn nan_samples_are_dropped() {
        let d = Dist::from_samples(&mut vec![f64::NAN, 2.0, 4.0]);
        assert_eq!(d.count, 2);
        assert_eq!(d.mean, 3.0);
    }

    #[test]
    fn every_sent_request_is_accounted_for() {
        let mut agg =
            Aggregator::new(LevelPlan { parallel: 2, rate: None, planned: 5 }, Slo::default());
        agg.push(&ok(0.0, &[0.5, 0.6, 0.7], 1.0, 3));
        agg.push(&ok(0.0, &[0.2, 0.4], 2.0, 2));
        let mut bad = ok(1.0, &[], 1.5, 0);
        bad.error = Some(ErrorClass::HttpStatus);
        bad.status = Some(500);
        agg.push(&bad);
        let mut warm = ok(0.0, &[0.1], 0.2, 1);
        warm.warmup = true;
        agg.push(&warm);
        let s = agg.finish();
        assert_eq!((s.requests, s.succeeded, s.failed, s.not_sent, s.warmup), (3, 2, 1, 2, 1));
        assert_eq!(s.failures.get("http_500"), Some(&1));
        assert!((s.duration_s - 2.0).abs() < 1e-12);
        assert!((s.qps - 1.0).abs() < 1e-12);
        assert!((s.output_throughput - 2.5).abs() < 1e-12);
        assert!((s.total_throughput - 12.5).abs() < 1e-12);
        // TTFT samples 0.5 and 0.2; TPOT (0.7-0.5)/2 = 0.1 and (0.4-0.2)/1 = 0.2
        assert!((s.ttft_s.mean - 0.35).abs() < 1e-12);
        assert!((s.tpot_s.mean - 0.15).abs() < 1e-12);
        assert_eq!(s.itl_s.count, 3);
        // Little's law: (1 + 2 + 0.5) / 2
        assert!((s.achieved_concurrency - 1.75).abs() < 1e-12);
        assert_eq!(s.output_tokens_mean, 2.5);
        assert!(s.goodput.is_none());
    }

    #[test]
    fn goodput_counts_requests_meeting_every_slo() {
        let slo = Slo { ttft_s: Some(0.3), tpot_s: Some(0.15), ..Slo::default() };
        let mut agg = Aggregator::new(LevelPlan { parallel: 1, rate: None, planned: 3 }, slo);
        agg.push(&ok(0.0, &[0.2, 0.3, 0.4], 1.0, 3)); // ttft 0.2, tpot 0.1: good
        agg.push(&ok(0.0, &[0.5, 0.6], 1.0, 2)); // ttft 0.5: bad
        agg.push(&ok(0.0, &[0.1, 0.5], 1.0, 2)); // tpot 0.4: bad
        let g = agg.finish().goodput.unwrap();
        assert_eq!(g.good_requests, 1);
        assert!((g.goodput_qps - 1.0).abs() < 1e-12);
        assert!((g.good_fraction - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn counted_tokens_are_reported() {
        let mut agg = Aggregator::new(LevelPlan::default(), Slo::default());
        let mut r = ok(0.0, &[0.1, 0.2], 0.3, 2);
        r.tokens_from = TokenSource::CountedChunks;
        r.input_tokens = None;
        r.input_tokens_from = None;
        agg.push(&r);
        let s = agg.finish();
        assert_eq!(s.tokens_counted, 1);
        assert_eq!(s.input_tokens_mean, 0.0);
        assert_eq!((s.input_tokens_from, s.input_tokens_unknown), (None, 1));
    }

    #[test]
    fn input_token_mean_leaves_unknown_counts_out_and_names_its_source() {
        let mut agg = Aggregator::new(LevelPlan::default(), Slo::default());
        let mut r = ok(0.0, &[0.1, 0.2], 0.3, 2);
        agg.push(&r); // 10 from usage
        r.input_tokens = None;
        r.input_tokens_from = None;
        agg.push(&r); // unknown: not a 0 in the mean
        r.input_tokens = Some(4);
        r.input_tokens_from = Some(InputTokenSource::Tokenizer);
        agg.push(&r);
        let s = agg.finish();
        assert_eq!(s.input_tokens_mean, 7.0);
        assert_eq!(s.input_tokens.count, 2);
        assert_eq!(s.input_tokens_from.as_deref(), Some("usage+tokenizer"));
        assert_eq!((s.input_tokens_counted, s.input_tokens_unknown), (1, 1));
        let mut agg = Aggregator::new(LevelPlan::default(), Slo::default());
        agg.push(&r);
        assert_eq!(agg.finish().input_tokens_from.as_deref(), Some("tokenizer"));
    }
}
