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

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures_util::future::BoxFuture;
    use tokio::time::Instant;

    use crate::supervise::engine::{DockerError, EngineExit, EngineRuntime, RuntimeError};
    use crate::supervise::notify::Notice;
    use tokio_util::sync::CancellationToken;

    use crate::binding::Binding;
    use crate::config::Config;
    use crate::supervise::notify::RecordingNotifier;
    use crate::supervise::procs::ProcFs;
    use crate::supervise::status::{AgentStatus, Shared, State};
    use crate::supervise::supervisor::{Outcome, Supervisor};

    /// Within half a second after `want` (health probes of a real, refused socket may move
    /// paused time to the next tick).
    fn assert_near(got: f64, want: f64, what: &str) {
        assert!((want..want + 0.5).contains(&got), "{what}: {got} s, want {want} s");
    }

    /// A runtime whose daemon is away from `down.0` to `down.1` (after its creation): the
    /// first life's wait reports the outage; start and stop fail while it lasts.
    struct DaemonFake {
        t0: Instant,
        down: (Duration, Duration),
        timeout: Duration,
        starts: Arc<Mutex<u32>>,
        reported: bool,
    }

    impl DaemonFake {
        fn is_down(&self) -> bool {
            let e = Instant::now() - self.t0;
            e >= self.down.0 && e < self.down.1
        }
        fn down_error() -> RuntimeError {
            DockerError::DaemonDown {
                addr: "/run/docker.sock".into(),
                op: "wait for",
                name: "nodeagent-0".into(),
                reason: "connection refused".into(),
            }
            .into()
        }
    }

    impl EngineRuntime for DaemonFake {
        fn describe(&self) -> String {
            "fake container".to_string()
        }
        fn preflight(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
            Box::pin(async { Ok(()) })
        }
        fn cleanup_leftovers(&mut self) -> BoxFuture<'_, Result<Vec<String>, RuntimeError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn start(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
            Box::pin(async move {
                *self.starts.lock().unwrap() += 1;
                if self.is_down() {
                    return Err(Self::down_error());
                }
                Ok(())
            })
        }
        fn pids(&mut self) -> BoxFuture<'_, Result<Vec<i32>, RuntimeError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn wait(&mut self) -> BoxFuture<'_, Result<EngineExit, RuntimeError>> {
            Box::pin(async move {
                // Once, whenever polled after the outage began (the paused clock may have
                // moved past its start while no wait was polled).
                if !self.reported {
                    tokio::time::sleep_until(self.t0 + self.down.0).await;
                    self.reported = true;
                    return Err(Self::down_error());
                }
                std::future::pending().await
            })
        }
        fn stop(&mut self, _grace: Duration) -> BoxFuture<'_, Result<(), RuntimeError>> {
            Box::pin(async move {
                if self.is_down() {
                    Err(Self::down_error())
                } else {
                    Ok(())
                }
            })
        }
        fn daemon_back(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
            Box::pin(async move {
                tokio::time::sleep_until(self.t0 + self.down.1).await;
                Ok(())
            })
        }
        fn daemon_timeout(&self) -> Duration {
            self.timeout
        }
    }

    /// What a test sees of a supervisor over a [`DaemonFake`].
    struct Harness {
        supervisor: Supervisor,
        starts: Arc<Mutex<u32>>,
        notices: Arc<Mutex<Vec<Notice>>>,
        status: Shared,
        cancel: CancellationToken,
        /// Bound, never listening: every health probe is refused (an engine still loading).
        _closed: tokio::net::TcpSocket,
    }

    /// The daemon is away from `down.0` to `down.1` seconds; the supervisor waits up to
    /// `timeout` seconds for it, with a restart budget of 0 (any counted failure ends it).
    fn daemon_harness(down: (u64, u64), timeout: u64) -> Harness {
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let health_addr = closed.local_addr().unwrap();
        let mut policy = Config::default().policy();
        policy.ready_timeout = Duration::from_secs(3600);
        policy.restart_budget = 0;
        let notifier = RecordingNotifier::default();
        let notices = notifier.notices.clone();
        let status = Arc::new(Mutex::new(AgentStatus::new(
            "fake container".into(),
            vec!["engine".into()],
            health_addr.port(),
            None,
            Binding::none(),
        )));
        let cancel = CancellationToken::new();
        let starts = Arc::new(Mutex::new(0));
        let supervisor = Supervisor {
            runtime: Box::new(DaemonFake {
                t0: Instant::now(),
                down: (Duration::from_secs(down.0), Duration::from_secs(down.1)),
                timeout: Duration::from_secs(timeout),
                starts: starts.clone(),
                reported: false,
            }),
            policy,
            health_addr,
            model: None,
            binding: Binding::none(),
            notifier: Arc::new(notifier),
            status: status.clone(),
            cancel: cancel.clone(),
            proc: ProcFs::default(),
            check_port: None,
            check_path: None,
            gpu_hung: None,
            ranks: None,
        };
        Harness { supervisor, starts, notices, status, cancel, _closed: closed }
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
        assert_eq!(*h.starts.lock().unwrap(), 2, "one start before, one after the outage");
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
        assert_eq!(*h.starts.lock().unwrap(), 1);
        assert_eq!(h.status.lock().unwrap().state, State::Failed);
    }
}
