//! The SLO search, in pure code: from the steps measured so far, the next load to try or the
//! end of the search. The load is a concurrency (closed loop) or a request rate (open loop);
//! a step "meets" the SLO when at least `attainment` of its requests met every objective.
//!
//! The search doubles the load from the start while steps meet the SLO, then bisects between
//! the highest step that met it and the lowest above it that did not: to one request of
//! concurrency, or to `RATE_PRECISION` of the rate. Two guards end it early: the saturation
//! stop (a doubling that raised throughput by less than `SATURATION_GAIN` while the median
//! latency grew by more than `SATURATION_LATENCY`: more load only queues) and `max_steps`.
//!
//! Not here: running a step (`sweep`), the types written to `summary.json` (`summary`).

use crate::summary::{LevelStats, SearchStep};

/// What the search varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    /// Closed loop: the number of requests in flight.
    Concurrency,
    /// Open loop: requests per second.
    Rate,
}

impl SearchKind {
    pub fn name(self) -> &'static str {
        match self {
            SearchKind::Concurrency => "concurrency",
            SearchKind::Rate => "rate",
        }
    }
}

/// A doubling that gains less throughput than this (a fraction: 0.15 = 15 %; an engine with
/// room to spare gains close to 100 %, and one just under saturation gains a few % from its
/// queue hiding the client's round trips) ...
pub const SATURATION_GAIN: f64 = 0.15;
/// ... while its median end-to-end latency grows by more than this fraction, is saturated.
pub const SATURATION_LATENCY: f64 = 0.25;
/// A rate search ends when the bracket is narrower than this fraction of its upper end.
pub const RATE_PRECISION: f64 = 0.05;
/// The highest concurrency the search tries (the load generator's worker limit).
pub const MAX_CONCURRENCY: f64 = 65_536.0;

/// The search's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchSpec {
    pub kind: SearchKind,
    /// The first load tried (a concurrency of at least 1, or a positive rate).
    pub start: f64,
    /// The share of requests (0 to 1) that must meet every SLO.
    pub attainment: f64,
    /// At most this many steps.
    pub max_steps: u32,
}

/// Why a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The capacity is bracketed: the best step met the SLO and the next load up did not.
    Bracketed,
    /// More load raised throughput no more while latency climbed.
    Saturated,
    /// `max_steps` steps were run.
    MaxSteps,
    /// Even the lowest load tried (concurrency 1) missed the SLO.
    NothingMet,
    /// The load reached `MAX_CONCURRENCY` still meeting the SLO.
    Limit,
}

impl Stop {
    pub fn name(self) -> &'static str {
        match self {
            Stop::Bracketed => "bracketed",
            Stop::Saturated => "saturated",
            Stop::MaxSteps => "max_steps",
            Stop::NothingMet => "nothing_met",
            Stop::Limit => "limit",
        }
    }
}

/// The search's next move.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Measure this load (a whole concurrency, or a rate).
    Try(f64),
    Done(Stop),
}

/// The load a step measured.
pub fn load(kind: SearchKind, s: &SearchStep) -> f64 {
    match kind {
        SearchKind::Concurrency => s.parallel.unwrap_or(0) as f64,
        SearchKind::Rate => s.rate.unwrap_or(0.0),
    }
}

/// The step a measured level makes, `met` when `attainment` of its requests met every SLO.
pub fn step_of(spec: &SearchSpec, level: usize, l: &LevelStats) -> SearchStep {
    let attainment = l.goodput.as_ref().map_or(0.0, |g| g.good_fraction);
    SearchStep {
        level,
        parallel: (spec.kind == SearchKind::Concurrency).then_some(l.parallel),
        rate: match spec.kind {
            SearchKind::Rate => l.rate,
            SearchKind::Concurrency => None,
        },
        attainment,
        // A level with nothing sent proves nothing.
        met: l.requests > 0 && attainment + 1e-12 >= spec.attainment,
        requests: l.requests,
        qps: l.qps,
        output_throughput: l.output_throughput,
        ttft_p99_s: l.ttft_s.p99,
        tpot_p99_s: l.tpot_s.p99,
        latency_p50_s: l.latency_s.p50,
        latency_p99_s: l.latency_s.p99,
    }
}

/// The highest step that met the SLO below the lowest one that did not (the capacity found).
pub fn best(kind: SearchKind, steps: &[SearchStep]) -> Option<&SearchStep> {
    let (lo, _) = bracket(kind, steps);
    lo
}

/// (highest met step below `hi`, lowest step that did not meet the SLO). A noisy met step
/// above a failed one does not count: capacity is where the SLO first fails.
fn bracket(kind: SearchKind, steps: &[SearchStep]) -> (Option<&SearchStep>, Option<&SearchStep>) {
    let hi = steps.iter().filter(|s| !s.met).min_by(|a, b| load(kind, a).total_cmp(&load(kind, b)));
    let lo = steps
        .iter()
        .filter(|s| s.met && hi.is_none_or(|h| load(kind, s) < load(kind, h)))
        .max_by(|a, b| load(kind, a).total_cmp(&load(kind, b)));
    (lo, hi)
}

/// Rounds a rate to 3 significant digits, so levels read `rate=3.75/s`, not `3.7499999/s`.
fn round_rate(r: f64) -> f64 {
    if r <= 0.0 || !r.is_finite() {
        return r;
    }
    let e = 2 - r.log10().floor() as i32;
    if e >= 0 {
        let scale = 10f64.powi(e);
        (r * scale).round() / scale
    } else {
        let scale = 10f64.powi(-e);
        (r / scale).round() * scale
    }
}

/// Whether the last step, a doubling of the one before, only added queueing.
fn saturated(steps: &[SearchStep]) -> bool {
    let [.., prev, last] = steps else { return false };
    prev.met
        && last.qps <= prev.qps * (1.0 + SATURATION_GAIN)
        && last.latency_p50_s > prev.latency_p50_s * (1.0 + SATURATION_LATENCY)
}

/// The next load after `steps` (in the order they ran).
pub fn next(spec: &SearchSpec, steps: &[SearchStep]) -> Next {
    let kind = spec.kind;
    let Some(last) = steps.last() else {
        return Next::Try(match kind {
            SearchKind::Concurrency => spec.start.max(1.0).round(),
            SearchKind::Rate => spec.start,
        });
    };
    if steps.len() as u32 >= spec.max_steps {
        return Next::Done(Stop::MaxSteps);
    }
    let (lo, hi) = bracket(kind, steps);
    let Some(hi) = hi else {
        // Still doubling: every step so far met the SLO.
        if saturated(steps) {
            return Next::Done(Stop::Saturated);
        }
        let up = load(kind, last) * 2.0;
        return match kind {
            SearchKind::Concurrency if load(kind, last) >= MAX_CONCURRENCY => {
                Next::Done(Stop::Limit)
            }
            SearchKind::Concurrency => Next::Try(up.min(MAX_CONCURRENCY)),
            SearchKind::Rate => Next::Try(round_rate(up)),
        };
    };
    let hi = load(kind, hi);
    let lo = lo.map_or(0.0, |s| load(kind, s));
    match kind {
        SearchKind::Concurrency => {
            if hi <= 1.0 {
                return Next::Done(Stop::NothingMet);
            }
            if hi - lo <= 1.0 {
                return Next::Done(Stop::Bracketed);
            }
            Next::Try(((lo + hi) / 2.0).floor())
        }
        SearchKind::Rate => {
            if lo > 0.0 && hi - lo <= RATE_PRECISION * hi {
                return Next::Done(Stop::Bracketed);
            }
            let mid = round_rate((lo + hi) / 2.0);
            // Rounding can land on a bound when the bracket is this narrow: it is found.
            if mid <= lo || mid >= hi {
                return Next::Done(Stop::Bracketed);
            }
            Next::Try(mid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: SearchKind, start: f64) -> SearchSpec {
        SearchSpec { kind, start, attainment: 0.99, max_steps: 12 }
    }

    /// A step at concurrency `c` that met the SLO or not, with throughput `qps` and median
    /// latency `p50`.
    fn c(c: u64, met: bool, qps: f64, p50: f64) -> SearchStep {
        SearchStep {
            parallel: Some(c),
            met,
            attainment: if met { 1.0 } else { 0.5 },
            qps,
            latency_p50_s: p50,
            ..SearchStep::default()
        }
    }

    fn r(rate: f64, met: bool) -> SearchStep {
        SearchStep { rate: Some(rate), met, qps: rate, latency_p50_s: 1.0, ..SearchStep::default() }
    }

    /// Runs a whole search against `engine` (load -> step) and returns the loads tried and
    /// why it stopped.
    fn run(spec: &SearchSpec, engine: impl Fn(f64) -> SearchStep) -> (Vec<f64>, Stop) {
        let mut steps = Vec::new();
        loop {
            match next(spec, &steps) {
                Next::Try(x) => steps.push(engine(x)),
                Next::Done(stop) => {
                    return (steps.iter().map(|s| load(spec.kind, s)).collect(), stop)
                }
            }
        }
    }

    #[test]
    fn doubling_then_bisection_finds_the_concurrency_capacity() {
        // Capacity 11: met up to 11, missed from 12; throughput grows with the load.
        let engine = |x: f64| c(x as u64, x <= 11.0, x, 1.0);
        let (tried, stop) = run(&spec(SearchKind::Concurrency, 1.0), engine);
        assert_eq!(tried, [1.0, 2.0, 4.0, 8.0, 16.0, 12.0, 10.0, 11.0]);
        assert_eq!(stop, Stop::Bracketed);
        let steps: Vec<_> = tried.iter().map(|&x| engine(x)).collect();
        assert_eq!(best(SearchKind::Concurrency, &steps).unwrap().parallel, Some(11));
    }

    #[test]
    fn the_first_step_failing_bisects_down_and_concurrency_1_failing_ends_it() {
        let engine = |x: f64| c(x as u64, x <= 3.0, x, 1.0);
        let (tried, stop) = run(&spec(SearchKind::Concurrency, 16.0), engine);
        assert_eq!(tried, [16.0, 8.0, 4.0, 2.0, 3.0]);
        assert_eq!(stop, Stop::Bracketed);
        let (tried, stop) =
            run(&spec(SearchKind::Concurrency, 4.0), |x| c(x as u64, false, x, 1.0));
        assert_eq!(tried, [4.0, 2.0, 1.0]);
        assert_eq!(stop, Stop::NothingMet);
        assert_eq!(best(SearchKind::Concurrency, &[c(1, false, 1.0, 1.0)]), None);
    }

    #[test]
    fn saturation_ends_a_search_whose_engine_cannot_keep_up() {
        // Throughput stops at 8 requests/s from concurrency 8 on; latency doubles with each
        // doubling; the SLO is loose enough to be met throughout.
        let engine = |x: f64| c(x as u64, true, x.min(8.0), (x / 8.0).max(1.0));
        let (tried, stop) = run(&spec(SearchKind::Concurrency, 1.0), engine);
        assert_eq!(tried, [1.0, 2.0, 4.0, 8.0, 16.0]);
        assert_eq!(stop, Stop::Saturated);
        // Throughput flat but latency flat too (a client-side limit, say): not saturation.
        let flat = |x: f64| c(x as u64, true, 8.0, 1.0);
        let (tried, stop) =
            run(&SearchSpec { max_steps: 5, ..spec(SearchKind::Concurrency, 1.0) }, flat);
        assert_eq!((tried.len(), stop), (5, Stop::MaxSteps));
    }

    #[test]
    fn max_steps_and_the_concurrency_limit_bound_the_search() {
        let always = |x: f64| c(x as u64, true, x, 1.0);
        let (tried, stop) =
            run(&SearchSpec { max_steps: 3, ..spec(SearchKind::Concurrency, 1.0) }, always);
        assert_eq!((tried, stop), (vec![1.0, 2.0, 4.0], Stop::MaxSteps));
        let (tried, stop) =
            run(&SearchSpec { max_steps: 100, ..spec(SearchKind::Concurrency, 16384.0) }, always);
        assert_eq!((tried, stop), (vec![16384.0, 32768.0, 65536.0], Stop::Limit));
    }

    #[test]
    fn a_rate_search_bisects_to_five_percent() {
        // Capacity 6.3 requests/s.
        let engine = |x: f64| r(x, x <= 6.3);
        let (tried, stop) = run(&spec(SearchKind::Rate, 1.0), engine);
        assert_eq!(tried, [1.0, 2.0, 4.0, 8.0, 6.0, 7.0, 6.5, 6.25]);
        assert_eq!(stop, Stop::Bracketed);
        let steps: Vec<_> = tried.iter().map(|&x| engine(x)).collect();
        assert_eq!(best(SearchKind::Rate, &steps).unwrap().rate, Some(6.25));
        assert_eq!(round_rate(1.0 / 3.0), 0.333);
        assert_eq!(round_rate(1234.5), 1230.0);
    }

    #[test]
    fn a_noisy_pass_above_a_failure_does_not_count() {
        let steps = [c(4, true, 4.0, 1.0), c(8, false, 8.0, 1.0), c(16, true, 16.0, 1.0)];
        assert_eq!(best(SearchKind::Concurrency, &steps).unwrap().parallel, Some(4));
        assert_eq!(next(&spec(SearchKind::Concurrency, 4.0), &steps), Next::Try(6.0));
    }

    #[test]
    fn a_step_meets_the_slo_by_its_share_of_good_requests() {
        use crate::summary::{Goodput, LevelStats};
        let s = spec(SearchKind::Concurrency, 1.0);
        let mut l = LevelStats {
            parallel: 8,
            requests: 100,
            goodput: Some(Goodput { good_fraction: 0.99, ..Goodput::default() }),
            ..LevelStats::default()
        };
        let st = step_of(&s, 3, &l);
        assert!(st.met);
        assert_eq!((st.level, st.parallel, st.rate, st.attainment), (3, Some(8), None, 0.99));
        l.goodput.as_mut().unwrap().good_fraction = 0.98;
        assert!(!step_of(&s, 3, &l).met);
        l.requests = 0;
        l.goodput.as_mut().unwrap().good_fraction = 1.0;
        assert!(!step_of(&s, 3, &l).met, "a step that sent nothing proves nothing");
    }
}
