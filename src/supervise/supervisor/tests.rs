//! The state machine on paused time, with a scripted runtime: backoff, the crash-loop
//! budget, readiness timeouts and the watchdog take no real time. `tests/serve.rs` runs the
//! same rules on real processes.

use std::collections::VecDeque;
use std::sync::Mutex;

use futures_util::future::BoxFuture;

use super::*;
use crate::config::Config;
use crate::supervise::notify::RecordingNotifier;
use crate::supervise::status::AgentStatus;

mod ranks;

/// What the fake runtime does and saw: each start takes the next lifetime (`None`, or none
/// left: it runs until stopped), after which the engine exits with code 1.
#[derive(Clone, Default)]
struct Script {
    lives: Arc<Mutex<VecDeque<Option<Duration>>>>,
    starts: Arc<Mutex<Vec<Instant>>>,
    stops: Arc<Mutex<u32>>,
    /// The engine's pids per life, in start order (none left: no pids).
    pids: Arc<Mutex<VecDeque<Vec<i32>>>>,
    /// The pids of the life that runs now (empty once stopped).
    running_pids: Arc<Mutex<Vec<i32>>>,
    /// What the runtime answers to `containment()`.
    containment: Option<String>,
}

impl Script {
    fn new(lives: &[Option<u64>]) -> Self {
        let lives = lives.iter().map(|l| l.map(Duration::from_secs)).collect();
        Self { lives: Arc::new(Mutex::new(lives)), ..Default::default() }
    }
    fn starts(&self) -> Vec<Instant> {
        self.starts.lock().unwrap().clone()
    }
    /// Seconds between consecutive starts.
    fn gaps(&self) -> Vec<f64> {
        self.starts().windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect()
    }
}

struct FakeRuntime {
    script: Script,
    exit_at: Option<Instant>,
    running: bool,
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
            self.running = false;
            self.exit_at = None;
            self.script.running_pids.lock().unwrap().clear();
            *self.script.stops.lock().unwrap() += 1;
            Ok(())
        })
    }
}

struct Harness {
    supervisor: Supervisor,
    script: Script,
    notices: Arc<Mutex<Vec<Notice>>>,
    status: Shared,
    cancel: CancellationToken,
    /// Bound, never listening: every health probe is refused (an engine still loading).
    _closed: tokio::net::TcpSocket,
}

fn harness(
    lives: &[Option<u64>],
    watchdog: Option<Duration>,
    tune: impl FnOnce(&mut SupervisePolicy),
) -> Harness {
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let health_addr = closed.local_addr().unwrap();
    let mut policy = Config::default().policy();
    tune(&mut policy);
    let script = Script::new(lives);
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
        runtime: Box::new(FakeRuntime { script: script.clone(), exit_at: None, running: false }),
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

/// Cancels once the engine has been started `n` times and `after` has passed since.
fn cancel_after_start(h: &Harness, n: usize, after: Duration) {
    let (script, cancel) = (h.script.clone(), h.cancel.clone());
    tokio::spawn(async move {
        while script.starts().len() < n {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(after).await;
        cancel.cancel();
    });
}

fn assert_near(got: f64, want: f64, what: &str) {
    // Health probes of a real (refused) socket may move paused time to the next tick.
    assert!((want..want + 0.5).contains(&got), "{what}: {got} s, want {want} s");
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_backs_off_doubling_up_to_the_cap_then_gives_up() {
    let h = harness(&[Some(0); 10], None, |p| {
        p.backoff_initial = Duration::from_secs(1);
        p.backoff_max = Duration::from_secs(2);
        p.restart_budget = 3;
        p.restart_window = Duration::from_secs(600);
    });
    let outcome = h.supervisor.run().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Failed(
            "crash loop: 4 failures within 10m, restart budget 3 spent; last: engine \
             exited with code 1"
                .into()
        )
    );
    let gaps = h.script.gaps();
    assert_eq!(gaps.len(), 3, "{gaps:?}");
    for (got, want) in gaps.iter().zip([1.0, 2.0, 2.0]) {
        assert_near(*got, want, "backoff");
    }
    let s = h.status.lock().unwrap();
    assert_eq!((s.state, s.restarts), (State::Failed, 3));
    assert_eq!(s.last_exit.as_deref(), Some("engine exited with code 1"));
    assert_eq!(*h.script.stops.lock().unwrap(), 4, "every failed life is stopped");
}

#[tokio::test(start_paused = true)]
async fn a_stable_run_forgives_earlier_failures_and_resets_the_backoff() {
    // Two quick crashes, ten stable minutes, a crash, then a healthy run until cancelled.
    // Without the forgiveness the third failure would spend the budget of 2.
    let h = harness(&[Some(0), Some(0), Some(600), Some(0), None], None, |p| {
        p.backoff_initial = Duration::from_secs(1);
        p.backoff_max = Duration::from_secs(60);
        p.restart_budget = 2;
        p.restart_window = Duration::from_secs(3600);
        p.stable_after = Duration::from_secs(300);
        p.ready_timeout = Duration::from_secs(3600);
    });
    cancel_after_start(&h, 5, Duration::from_secs(1));
    assert_eq!(h.supervisor.run().await.unwrap(), Outcome::Stopped);
    let gaps = h.script.gaps();
    assert_eq!(gaps.len(), 4, "{gaps:?}");
    for (got, want) in gaps.iter().zip([1.0, 2.0, 601.0, 2.0]) {
        assert_near(*got, want, "backoff");
    }
    assert_eq!(h.status.lock().unwrap().state, State::Stopped);
}

#[tokio::test(start_paused = true)]
async fn an_engine_not_ready_in_time_is_restarted_and_a_zero_budget_gives_up() {
    let h = harness(&[None], None, |p| {
        p.ready_timeout = Duration::from_secs(30);
        p.restart_budget = 0;
    });
    let t0 = Instant::now();
    let outcome = h.supervisor.run().await.unwrap();
    let Outcome::Failed(why) = outcome else { panic!("expected a failure, got {outcome:?}") };
    assert!(why.ends_with("last: engine not ready within 30s"), "{why}");
    assert_near(t0.elapsed().as_secs_f64(), 30.0, "ready timeout");
    let health = h.status.lock().unwrap().health.clone().expect("probed");
    assert_eq!((health.ok, health.last.as_str()), (false, "not listening"));
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_is_fed_at_half_its_interval_until_a_signal_stops_the_engine() {
    let h = harness(&[None], Some(Duration::from_secs(10)), |p| {
        p.ready_timeout = Duration::from_secs(3600);
    });
    cancel_after_start(&h, 1, Duration::from_secs(60));
    assert_eq!(h.supervisor.run().await.unwrap(), Outcome::Stopped);
    let notices = h.notices.lock().unwrap();
    let fed = notices.iter().filter(|n| **n == Notice::Watchdog).count();
    // At 0, 5, ..., 55 s, and maybe 60 s (the tick and the signal are due together).
    assert!((12..=13).contains(&fed), "{fed} watchdog notices");
    assert!(notices.contains(&Notice::ExtendTimeout(Duration::from_secs(3630))));
    assert!(notices.contains(&Notice::Stopping));
    assert!(!notices.contains(&Notice::Ready));
    assert_eq!(*h.script.stops.lock().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_signal_during_the_backoff_stops_without_another_start() {
    let h = harness(&[Some(0)], None, |p| {
        p.backoff_initial = Duration::from_secs(600);
    });
    cancel_after_start(&h, 1, Duration::from_secs(1));
    let t0 = Instant::now();
    assert_eq!(h.supervisor.run().await.unwrap(), Outcome::Stopped);
    assert!(t0.elapsed() < Duration::from_secs(5), "waited out the backoff");
    assert_eq!(h.script.starts().len(), 1);
    assert_eq!(h.status.lock().unwrap().state, State::Stopped);
}
