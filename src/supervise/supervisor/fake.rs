//! Test-only (`#[cfg(test)]`): the scripted runtime and the harness that the state machine's
//! tests share (`supervisor/tests.rs`, `supervisor/tests/ranks.rs`, `daemon_wait.rs`). Each start
//! takes the next scripted lifetime, after which the engine exits with code 1; a Docker daemon
//! outage may be scripted too. Everything runs on tokio's paused clock; the health address is a
//! bound socket that never listens, so every probe is refused (an engine still loading).
//!
//! Not here: the tests themselves, and fakes of anything but the runtime (the notifier is
//! `RecordingNotifier`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::binding::Binding;
use crate::config::{Config, SupervisePolicy};
use crate::supervise::engine::{DockerError, EngineExit, EngineRuntime, RuntimeError};
use crate::supervise::notify::{Notice, RecordingNotifier};
use crate::supervise::procs::ProcFs;
use crate::supervise::status::{AgentStatus, Shared};
use crate::supervise::supervisor::Supervisor;

/// A Docker daemon away from `from` to `until`: the first wait reports it at `from`, start and
/// stop fail while it lasts, `daemon_back` answers at `until`.
#[derive(Clone, Copy)]
pub(super) struct Outage {
    from: Instant,
    until: Instant,
    /// The runtime's `daemon_timeout`.
    timeout: Duration,
}

impl Outage {
    fn is_on(&self) -> bool {
        let now = Instant::now();
        now >= self.from && now < self.until
    }

    fn error() -> RuntimeError {
        DockerError::DaemonDown {
            addr: "/run/docker.sock".into(),
            op: "wait for",
            name: "nodeagent-0".into(),
            reason: "connection refused".into(),
        }
        .into()
    }
}

/// What the fake runtime does and saw: each start takes the next lifetime (`None`, or none
/// left: it runs until stopped), after which the engine exits with code 1.
#[derive(Clone, Default)]
pub(super) struct Script {
    pub(super) lives: Arc<Mutex<VecDeque<Option<Duration>>>>,
    pub(super) starts: Arc<Mutex<Vec<Instant>>>,
    pub(super) stops: Arc<Mutex<u32>>,
    /// The engine's pids per life, in start order (none left: no pids).
    pub(super) pids: Arc<Mutex<VecDeque<Vec<i32>>>>,
    /// The pids of the life that runs now (empty once stopped).
    pub(super) running_pids: Arc<Mutex<Vec<i32>>>,
    /// What the runtime answers to `containment()`.
    pub(super) containment: Option<String>,
    /// A daemon outage, if any (`Script::with_outage`).
    outage: Option<Outage>,
}

impl Script {
    /// Lifetimes in seconds.
    pub(super) fn new(lives: &[Option<u64>]) -> Self {
        let lives = lives.iter().map(|l| l.map(Duration::from_secs)).collect();
        Self { lives: Arc::new(Mutex::new(lives)), ..Default::default() }
    }

    /// One life that runs until stopped, and a daemon away from `down.0` to `down.1` seconds
    /// from now; the runtime waits up to `timeout` seconds for it.
    pub(super) fn with_outage(down: (u64, u64), timeout: u64) -> Self {
        let now = Instant::now();
        let outage = Outage {
            from: now + Duration::from_secs(down.0),
            until: now + Duration::from_secs(down.1),
            timeout: Duration::from_secs(timeout),
        };
        Self { outage: Some(outage), ..Self::new(&[None]) }
    }

    pub(super) fn starts(&self) -> Vec<Instant> {
        self.starts.lock().unwrap().clone()
    }

    /// Seconds between consecutive starts.
    pub(super) fn gaps(&self) -> Vec<f64> {
        self.starts().windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect()
    }

    fn daemon_down(&self) -> bool {
        self.outage.is_some_and(|o| o.is_on())
    }
}

/// The runtime that plays a [`Script`].
pub(super) struct FakeRuntime {
    script: Script,
    exit_at: Option<Instant>,
    running: bool,
    /// The outage was reported by a wait (once).
    outage_reported: bool,
}

impl FakeRuntime {
    pub(super) fn new(script: Script) -> Self {
        Self { script, exit_at: None, running: false, outage_reported: false }
    }
}

impl EngineRuntime for FakeRuntime {
    fn describe(&self) -> String {
        "fake".to_string()
    }
    fn preflight(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async { Ok(()) })
    }
    fn cleanup_leftovers(&mut self) -> BoxFuture<'_, Result<Vec<String>, RuntimeError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn start(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            let now = Instant::now();
            self.script.starts.lock().unwrap().push(now);
            if self.script.daemon_down() {
                return Err(Outage::error());
            }
            let life = self.script.lives.lock().unwrap().pop_front().flatten();
            self.exit_at = life.map(|d| now + d);
            self.running = true;
            *self.script.running_pids.lock().unwrap() =
                self.script.pids.lock().unwrap().pop_front().unwrap_or_default();
            Ok(())
        })
    }
    fn pids(&mut self) -> BoxFuture<'_, Result<Vec<i32>, RuntimeError>> {
        Box::pin(async { Ok(self.script.running_pids.lock().unwrap().clone()) })
    }
    fn containment(&self) -> Option<String> {
        self.script.containment.clone()
    }
    fn wait(&mut self) -> BoxFuture<'_, Result<EngineExit, RuntimeError>> {
        Box::pin(async move {
            // An outage is reported once, whenever polled after it began (the paused clock may
            // have moved past its start while no wait was polled).
            if let Some(outage) = self.script.outage.filter(|_| !self.outage_reported) {
                tokio::time::sleep_until(outage.from).await;
                self.outage_reported = true;
                return Err(Outage::error());
            }
            match (self.running, self.exit_at) {
                (true, Some(at)) => {
                    tokio::time::sleep_until(at).await;
                    Ok(EngineExit::Code(1))
                }
                _ => std::future::pending().await,
            }
        })
    }
    fn stop(&mut self, _grace: Duration) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move {
            if self.script.daemon_down() {
                return Err(Outage::error());
            }
            self.running = false;
            self.exit_at = None;
            self.script.running_pids.lock().unwrap().clear();
            *self.script.stops.lock().unwrap() += 1;
            Ok(())
        })
    }
    fn daemon_back(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let until = self.script.outage.map(|o| o.until);
        Box::pin(async move {
            if let Some(until) = until {
                tokio::time::sleep_until(until).await;
            }
            Ok(())
        })
    }
    fn daemon_timeout(&self) -> Duration {
        self.script.outage.map_or(Duration::ZERO, |o| o.timeout)
    }
}

/// What a test sees of a supervisor over a [`FakeRuntime`].
pub(super) struct Harness {
    pub(super) supervisor: Supervisor,
    pub(super) script: Script,
    pub(super) notices: Arc<Mutex<Vec<Notice>>>,
    pub(super) status: Shared,
    pub(super) cancel: CancellationToken,
    /// Bound, never listening: every health probe is refused (an engine still loading).
    _closed: tokio::net::TcpSocket,
}

/// A supervisor over lifetimes `lives` (seconds, `None`: until stopped), with a systemd
/// watchdog of `watchdog` and the default policy changed by `tune`.
pub(super) fn harness(
    lives: &[Option<u64>],
    watchdog: Option<Duration>,
    tune: impl FnOnce(&mut SupervisePolicy),
) -> Harness {
    harness_with(Script::new(lives), watchdog, tune)
}

/// [`harness`] over any script.
pub(super) fn harness_with(
    script: Script,
    watchdog: Option<Duration>,
    tune: impl FnOnce(&mut SupervisePolicy),
) -> Harness {
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let health_addr = closed.local_addr().unwrap();
    let mut policy = Config::default().policy();
    tune(&mut policy);
    let notifier = RecordingNotifier { watchdog, ..Default::default() };
    let notices = notifier.notices.clone();
    let status = Arc::new(Mutex::new(AgentStatus::new(
        "fake".into(),
        vec!["engine".into()],
        health_addr.port(),
        None,
        Binding::none(),
    )));
    let cancel = CancellationToken::new();
    let supervisor = Supervisor {
        runtime: Box::new(FakeRuntime::new(script.clone())),
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
    Harness { supervisor, script, notices, status, cancel, _closed: closed }
}

/// Within half a second after `want` (health probes of a real, refused socket may move paused
/// time to the next tick).
pub(super) fn assert_near(got: f64, want: f64, what: &str) {
    assert!((want..want + 0.5).contains(&got), "{what}: {got} s, want {want} s");
}
