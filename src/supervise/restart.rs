//! The restart decision after an engine life failed: the crash-loop budget (`restart_budget`
//! failures within `restart_window`) and the backoff (doubling from `backoff_initial` up to
//! `backoff_max`); a life of `stable_after` or longer forgives earlier trouble. Pure: the caller
//! brings the clock (tokio's `Instant`, so the supervisor's tests run on paused time).
//!
//! Not here: stopping, waiting or starting (`super::supervisor`).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::SupervisePolicy;

/// What the restart policy says after a failed life.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Start again after this backoff.
    RestartAfter(Duration),
    /// The crash-loop budget is spent: the reason.
    GiveUp(String),
}

/// The crash-loop budget (`restart_budget` failures within `restart_window`) and the backoff
/// (doubling from `backoff_initial` up to `backoff_max`); a life of `stable_after` or longer
/// forgives earlier trouble. Pure: the caller brings the clock.
#[derive(Debug)]
pub struct RestartBudget {
    failures: VecDeque<Instant>,
    backoff: Duration,
}

impl RestartBudget {
    pub fn new(policy: &SupervisePolicy) -> Self {
        Self { failures: VecDeque::new(), backoff: policy.backoff_initial }
    }

    /// A life that started at `started` failed at `now` because of `reason`.
    pub fn after_failure(
        &mut self,
        p: &SupervisePolicy,
        started: Instant,
        now: Instant,
        reason: &str,
    ) -> Decision {
        // A long healthy run forgives earlier trouble.
        if now.duration_since(started) >= p.stable_after {
            self.backoff = p.backoff_initial;
            self.failures.clear();
        }
        self.failures.push_back(now);
        while self.failures.front().is_some_and(|t| now.duration_since(*t) > p.restart_window) {
            self.failures.pop_front();
        }
        if self.failures.len() as u32 > p.restart_budget {
            return Decision::GiveUp(format!(
                "crash loop: {} failures within {}, restart budget {} spent; last: {reason}",
                self.failures.len(),
                humantime::format_duration(p.restart_window),
                p.restart_budget
            ));
        }
        let wait = self.backoff;
        self.backoff = self.backoff.saturating_mul(2).min(p.backoff_max);
        Decision::RestartAfter(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_budget_counts_only_failures_within_the_window() {
        let mut p = Config::default().policy();
        p.restart_budget = 2;
        p.restart_window = Duration::from_secs(10);
        p.stable_after = Duration::from_secs(300);
        p.backoff_initial = Duration::from_secs(1);
        p.backoff_max = Duration::from_secs(3);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = RestartBudget::new(&p);
        // Spaced wider than the window: never a crash loop; the backoff still grows.
        let waits: Vec<_> =
            (0..5).map(|i| b.after_failure(&p, at(i * 11), at(i * 11), "x")).collect();
        let secs = |s| Decision::RestartAfter(Duration::from_secs(s));
        assert_eq!(waits, [secs(1), secs(2), secs(3), secs(3), secs(3)]);
        // Three within the window: the budget of 2 is spent.
        let mut b = RestartBudget::new(&p);
        assert_eq!(b.after_failure(&p, at(0), at(0), "x"), secs(1));
        assert_eq!(b.after_failure(&p, at(1), at(1), "x"), secs(2));
        let Decision::GiveUp(why) = b.after_failure(&p, at(2), at(2), "boom") else {
            panic!("budget not spent")
        };
        assert_eq!(why, "crash loop: 3 failures within 10s, restart budget 2 spent; last: boom");
    }
}
