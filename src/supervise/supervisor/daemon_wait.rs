//! The supervisor while the runtime's daemon (Docker) does not answer: it waits, up to the
//! runtime's `daemon_timeout`, with a status message saying so, and spends no restart budget;
//! the next start adopts the engine if it survived (see `crate::supervise::docker`).
//!
//! Not here: telling a daemon outage from an engine failure (`RuntimeError::is_daemon_down`).

use crate::supervise::status::State;
use crate::supervise::supervisor::{Outcome, Supervisor};

impl Supervisor {
    /// The runtime's daemon does not answer (`why`): waits for it, up to the runtime's
    /// `daemon_timeout`, without spending the restart budget. `None` when it is back (the
    /// next start adopts the engine if it survived); `Some` when supervision ends (cancelled,
    /// or the daemon did not come back in time: failed).
    pub(super) async fn wait_for_daemon(&mut self, why: String) -> Option<Outcome> {
        let timeout = self.runtime.daemon_timeout();
        let limit = humantime::format_duration(timeout);
        self.set_state(
            State::Restarting,
            format!("waiting for the Docker daemon (up to {limit}): {why}"),
        );
        tokio::select! {
            _ = self.cancel.cancelled() => Some(self.shutdown().await),
            back = tokio::time::timeout(timeout, self.runtime.daemon_back()) => match back {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(self.daemon_lost(format!("{e}; before: {why}")).await),
                Err(_) => Some(self.daemon_lost(format!("no answer within {limit}: {why}")).await),
            },
        }
    }

    async fn daemon_lost(&mut self, why: String) -> Outcome {
        let why = format!("the Docker daemon did not come back: {why}");
        let _ = self.stop_engine().await;
        self.set_state(State::Failed, why.clone());
        Outcome::Failed(why)
    }
}

#[cfg(test)]
mod tests {
    //! On paused time, with a runtime whose daemon goes away and comes back (or does not).

    use std::time::Duration;

    use tokio::time::Instant;

    use crate::supervise::notify::Notice;
    use crate::supervise::status::State;
    use crate::supervise::supervisor::fake::{assert_near, harness_with, Harness, Script};
    use crate::supervise::supervisor::Outcome;

    /// The daemon is away from `down.0` to `down.1` seconds; the supervisor waits up to
    /// `timeout` seconds for it, with a restart budget of 0 (any counted failure ends it).
    fn daemon_harness(down: (u64, u64), timeout: u64) -> Harness {
        harness_with(Script::with_outage(down, timeout), None, |p| {
            p.ready_timeout = Duration::from_secs(3600);
            p.restart_budget = 0;
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_daemon_outage_is_waited_out_without_spending_the_restart_budget() {
        // A budget of 0: any counted failure would end supervision.
        let h = daemon_harness((5, 35), 300);
        let cancel = h.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            cancel.cancel();
        });
        assert_eq!(h.supervisor.run().await.unwrap(), Outcome::Stopped);
        assert_eq!(h.script.starts().len(), 2, "one start before, one after the outage");
        assert_eq!(h.status.lock().unwrap().restarts, 0);
        let notices = h.notices.lock().unwrap();
        let waited = notices.iter().any(|n| {
            matches!(n, Notice::Status(l) if l.starts_with("restarting: waiting for the Docker \
                daemon (up to 5m): docker: the docker daemon at /run/docker.sock does not answer"))
        });
        assert!(waited, "{notices:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_daemon_that_stays_away_past_its_timeout_ends_supervision_failed() {
        let h = daemon_harness((5, 3600), 10);
        let t0 = Instant::now();
        let Outcome::Failed(why) = h.supervisor.run().await.unwrap() else {
            panic!("expected a failure")
        };
        assert!(
            why.starts_with("the Docker daemon did not come back: no answer within 10s: "),
            "{why}"
        );
        assert_near(t0.elapsed().as_secs_f64(), 15.0, "daemon timeout");
        assert_eq!(h.script.starts().len(), 1);
        assert_eq!(h.status.lock().unwrap().state, State::Failed);
    }
}
