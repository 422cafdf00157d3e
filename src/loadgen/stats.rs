//! The aggregator: turns the records of one level into that level's metrics (`LevelStats`, a
//! type of the `summary.json` schema in `crate::summary`, where the percentile method is
//! defined too). Pure: no I/O, no clock, no worker code; it only reads `record::RequestRecord`.
//! Unit-tested on literal vectors.

use std::collections::BTreeMap;

use super::record::{InputTokenSource, RequestRecord, TokenSource};
use crate::summary::{Dist, Goodput, LevelStats, Slo};

/// Whether `r` meets every objective of `slo` that is set (only succeeded requests are asked).
fn slo_met(slo: &Slo, r: &RequestRecord) -> bool {
    let under = |limit: Option<f64>, value: Option<f64>| match (limit, value) {
        (None, _) => true,
        (Some(l), Some(v)) => v <= l,
        (Some(_), None) => false,
    };
    let max_itl = r.itl().fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    under(slo.ttft_s, r.ttft())
        && (slo.tpot_s.is_none() || r.output_tokens < 2 || under(slo.tpot_s, r.tpot()))
        && (slo.itl_s.is_none() || max_itl.is_none() || under(slo.itl_s, max_itl))
        && under(slo.latency_s, Some(r.latency()))
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
        if self.slo.is_set() && slo_met(&self.slo, r) {
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
            server: None,
            numa: None,
            memory_by_node: None,
            memory_off_node_share: None,
            threads: None,
            loadgen_cpu: None,
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
