//! The supervisor state machine (STYLE.md): Starting -> Ready <-> Degraded -> Restarting ->
//! Starting ..., Stopping -> Stopped on cancellation, Failed when the restart budget is spent or
//! a process escaped its binding. It works on any `EngineRuntime` (process tree or container)
//! and tells systemd through a `Notifier`.
//!
//! One agent run is: `prepare` (leftovers, preflight), then per engine life `start`, `wait_ready`
//! and `run_healthy`, then `after_failure` (the restart decision of `RestartBudget`, then the
//! backoff) or `shutdown`. A life waits on one `tokio::select!` (`next_event`) over the
//! cancellation token (SIGTERM/SIGINT in `cmd::serve`), the engine's exit, health ticks,
//! binding-check ticks, the monitor's hung verdict and watchdog ticks. A life that ends because
//! the runtime's daemon (Docker) stopped answering is no failure: `daemon_wait` waits for the
//! daemon, spending no restart budget. Every timer is tokio's
//! (`tokio::time::{Instant, sleep, interval}`), so the tests below run on paused time.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::binding::Binding;
use crate::config::{EscapePolicy, SupervisePolicy};
use crate::supervise::canary::CanaryWatch;
use crate::supervise::engine::{deadline_after, EngineExit, EngineRuntime, RuntimeError};
use crate::supervise::health::{Probe, Prober};
use crate::supervise::notify::{Notice, Notifier};
use crate::supervise::procs::ProcFs;
use crate::supervise::progress::ProgressWatch;
use crate::supervise::restart::{Decision, RestartBudget};
use crate::supervise::status::{
    now_rfc3339, BindingCheck, Health, PlacementFigures, Shared, State,
};

mod daemon_wait;
mod drain;
#[cfg(test)]
mod fake;
mod liveness;
mod threads;

/// While starting, readiness is polled this often (connection refused is cheap).
const READY_POLL: Duration = Duration::from_millis(200);

/// Errors of an agent run that started nothing. The runtime's error is printed inline (its
/// message already carries its own source), so the chain is not repeated.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// Nothing was started (exit 2).
    #[error("{runtime}: {error}")]
    Preflight { runtime: String, error: RuntimeError },
    #[error("removing leftovers of an earlier run ({runtime}): {error}")]
    Leftovers { runtime: String, error: RuntimeError },
}

/// How supervision ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on request; nothing of the engine is left.
    Stopped,
    /// Gave up: the reason (crash loop, binding escaped). Nothing of the engine is left.
    Failed(String),
}

/// How one engine life ended.
#[derive(Debug, PartialEq)]
enum LifeEnd {
    Cancelled,
    /// Crash, hang, not ready in time: worth a restart.
    Restart(String),
    /// A process escaped the binding under `on_escape = "fail"`.
    Escaped(String),
    /// The runtime's daemon (Docker) stopped answering: wait for it, spend no budget.
    DaemonDown(String),
}

/// What woke the supervisor during an engine life.
enum Event {
    /// SIGTERM/SIGINT (or the caller) asked to stop.
    Cancelled,
    /// The engine's main process ended (reaped by the runtime).
    Exited(Result<EngineExit, RuntimeError>),
    HealthTick,
    BindingTick,
    /// The monitor's hung verdict turned true.
    GpuHung,
    WatchdogTick,
}

/// What a phase of a life does next after an event the phases handle alike.
enum Step {
    Continue,
    End(LifeEnd),
    /// A health tick: its meaning depends on the phase (readiness poll or liveness check).
    Health,
}

/// The timers of one engine life.
struct Ticks {
    health: Interval,
    binding: Interval,
    watchdog: Interval,
    /// systemd asked for watchdog pings.
    watchdog_on: bool,
}

impl Ticks {
    /// Every first tick is at once: readiness is polled, the binding checked and the watchdog
    /// fed as soon as the engine runs.
    fn new(p: &SupervisePolicy, watchdog: Option<Duration>) -> Self {
        let delayed = |mut t: Interval| {
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        };
        Self {
            health: delayed(tokio::time::interval(READY_POLL)),
            binding: delayed(tokio::time::interval(p.binding_check_interval)),
            watchdog: delayed(tokio::time::interval(
                // Never zero (a tokio interval of zero panics), whatever WATCHDOG_USEC says.
                watchdog
                    .map_or(Duration::from_secs(3600), |d| (d / 2).max(Duration::from_millis(1))),
            )),
            watchdog_on: watchdog.is_some(),
        }
    }

    /// Once ready, health is asked every `health_interval`, starting one interval from now.
    fn health_every(&mut self, every: Duration) {
        self.health = tokio::time::interval_at(deadline_after(Instant::now(), every), every);
        self.health.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
}

pub struct Supervisor {
    pub runtime: Box<dyn EngineRuntime>,
    pub policy: SupervisePolicy,
    /// Where the engine answers health checks (loopback and the engine's port).
    pub health_addr: SocketAddr,
    pub model: Option<String>,
    pub binding: Binding,
    pub notifier: Arc<dyn Notifier>,
    pub status: Shared,
    pub cancel: CancellationToken,
    pub proc: ProcFs,
    /// Checks the supervisor makes itself after the runtime's preflight, for runtimes that do
    /// not (containers): this port must be free, this host path must exist.
    pub check_port: Option<u16>,
    pub check_path: Option<std::path::PathBuf>,
    /// The monitor's debounced hung-engine verdict (requests in flight, GPUs idle); `None`
    /// when the monitor does not run or must not restart the engine.
    pub gpu_hung: Option<tokio::sync::watch::Receiver<bool>>,
    /// Per-rank binding of an instance over several nodes (`supervise::ranks`), run on every
    /// binding check; `None` when the plan has no ranks or `binding.ranks = "union"`.
    pub ranks: Option<crate::supervise::ranks::RankBinder>,
}

/// Resolves when the monitor's hung verdict turns true (an edge, so a verdict left over from
/// the previous engine life does not restart the new one); never when there is no monitor.
async fn gpu_hung_edge(rx: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    let Some(rx) = rx else { return std::future::pending().await };
    loop {
        if rx.changed().await.is_err() {
            // The monitor is gone: no verdicts any more.
            return std::future::pending().await;
        }
        if *rx.borrow_and_update() {
            return;
        }
    }
}

fn describe_exit(exit: &Result<EngineExit, RuntimeError>) -> String {
    match exit {
        Ok(EngineExit::Code(c)) => format!("engine exited with code {c}"),
        Ok(EngineExit::Signal(s)) => format!("engine killed by signal {s}"),
        Err(e) => format!("lost the engine: {e}"),
    }
}

impl Supervisor {
    fn set_state(&self, state: State, message: impl Into<String>) {
        let message = message.into();
        let line = {
            let mut s = self.status.lock().unwrap();
            if s.state != state {
                s.state_since = now_rfc3339();
            }
            s.state = state;
            s.message = message.clone();
            format!("{state}: {message} (engine pids {}, restarts {})", s.pids.len(), s.restarts)
        };
        match state {
            State::Failed | State::Degraded | State::Restarting => {
                tracing::warn!(%state, "{message}")
            }
            _ => tracing::info!(%state, "{message}"),
        }
        self.notifier.notify(Notice::Status(line));
    }

    /// Runs until cancelled (`Outcome::Stopped`) or given up (`Outcome::Failed`). Errors mean
    /// nothing was started.
    pub async fn run(mut self) -> Result<Outcome, SuperviseError> {
        let runtime = self.runtime.describe();
        self.prepare(&runtime).await?;
        let mut budget = RestartBudget::new(&self.policy);
        let mut ready_sent = false;
        loop {
            self.set_state(State::Starting, format!("starting {runtime}"));
            let started = Instant::now();
            let end = match self.runtime.start().await {
                Ok(()) => self.life(&mut ready_sent).await,
                Err(e) if e.is_daemon_down() => LifeEnd::DaemonDown(e.to_string()),
                Err(e) => LifeEnd::Restart(format!("engine did not start: {e}")),
            };
            let reason = match end {
                LifeEnd::Cancelled => return Ok(self.shutdown().await),
                LifeEnd::Escaped(why) => {
                    self.set_state(State::Stopping, format!("binding escaped: {why}"));
                    let _ = self.stop_engine().await;
                    self.set_state(State::Failed, format!("binding escaped: {why}"));
                    return Ok(Outcome::Failed(format!("binding escaped: {why}")));
                }
                LifeEnd::DaemonDown(why) => match self.wait_for_daemon(why).await {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                },
                LifeEnd::Restart(why) => why,
            };
            if let Some(outcome) = self.after_failure(&mut budget, reason, started).await {
                return Ok(outcome);
            }
        }
    }

    /// Before the first start: removes leftovers of an earlier run, then runs the runtime's
    /// preflight and the supervisor's own checks. Nothing is started.
    async fn prepare(&mut self, runtime: &str) -> Result<(), SuperviseError> {
        self.set_state(State::Starting, "looking for leftovers of an earlier run");
        let removed = self
            .runtime
            .cleanup_leftovers()
            .await
            .map_err(|error| SuperviseError::Leftovers { runtime: runtime.to_string(), error })?;
        if !removed.is_empty() {
            tracing::warn!(removed = ?removed, "removed leftovers of an earlier run");
        }
        let preflight = |error| SuperviseError::Preflight { runtime: runtime.to_string(), error };
        self.runtime.preflight().await.map_err(preflight)?;
        if let Some(port) = self.check_port {
            crate::supervise::process::port_free(&self.proc, port).map_err(preflight)?;
        }
        if let Some(path) = &self.check_path {
            if !path.exists() {
                return Err(preflight(RuntimeError::ModelPathMissing { path: path.clone() }));
            }
        }
        Ok(())
    }

    /// After a life that failed: stops what is left of it, then asks the budget. `Some` when
    /// supervision ends (budget spent, or cancelled meanwhile); `None` after the backoff, to
    /// start again.
    async fn after_failure(
        &mut self,
        budget: &mut RestartBudget,
        reason: String,
        started: Instant,
    ) -> Option<Outcome> {
        self.status.lock().unwrap().last_exit = Some(reason.clone());
        self.set_state(State::Restarting, reason.clone());
        if let Err(e) = self.stop_engine().await {
            // The engine went down with its daemon: not a failure of the engine.
            if e.is_daemon_down() {
                return self.wait_for_daemon(format!("{reason}; {e}")).await;
            }
        }
        if self.cancel.is_cancelled() {
            return Some(self.shutdown().await);
        }
        match budget.after_failure(&self.policy, started, Instant::now(), &reason) {
            Decision::GiveUp(why) => {
                self.set_state(State::Failed, why.clone());
                Some(Outcome::Failed(why))
            }
            Decision::RestartAfter(backoff) => {
                self.status.lock().unwrap().restarts += 1;
                self.set_state(
                    State::Restarting,
                    format!(
                        "restarting in {} after: {reason}",
                        humantime::format_duration(backoff)
                    ),
                );
                tokio::select! {
                    // Signal during the backoff: nothing runs, just stop.
                    _ = self.cancel.cancelled() => Some(self.shutdown().await),
                    _ = tokio::time::sleep(backoff) => None,
                }
            }
        }
    }

    async fn stop_engine(&mut self) -> Result<(), RuntimeError> {
        self.stop_engine_within(self.policy.stop_grace).await
    }

    /// Stops the engine: SIGTERM, `grace`, SIGKILL.
    async fn stop_engine_within(&mut self, grace: Duration) -> Result<(), RuntimeError> {
        let stopped = self.runtime.stop(grace).await;
        if let Err(e) = &stopped {
            tracing::error!(error = %e, "stopping the engine");
        }
        if let Some(ranks) = self.ranks.as_mut() {
            ranks.release();
        }
        let mut s = self.status.lock().unwrap();
        s.pids.clear();
        s.main_pid = None;
        s.engine_memory_bytes = None;
        s.engine_cpu_seconds = None;
        s.memory_by_node = None;
        s.placement = PlacementFigures::default();
        s.thread_reading = None;
        // The ranks of the stopped engine are gone with it (the binder forgot them).
        s.ranks.clear();
        s.engine_started_at = None;
        stopped
    }

    async fn shutdown(&mut self) -> Outcome {
        self.notifier.notify(Notice::Stopping);
        // An engine that serves is drained first (off with drain_timeout = 0); one that is
        // starting or restarting has nothing in flight.
        let serving = matches!(self.status.lock().unwrap().state, State::Ready | State::Degraded);
        let grace = if serving { self.drain("stop").await } else { self.policy.stop_grace };
        self.set_state(State::Stopping, "stopping the engine");
        let _ = self.stop_engine_within(grace).await;
        self.set_state(State::Stopped, "stopped");
        Outcome::Stopped
    }

    /// Checks every engine process against the binding; records the result.
    async fn check_binding(&mut self) -> Result<Vec<i32>, String> {
        let pids = match self.runtime.pids().await {
            Ok(pids) => pids,
            // The daemon is away (a restart): nothing to judge until it is back; the engine's
            // wait reports the outage.
            Err(e) if e.is_daemon_down() => return Ok(self.status.lock().unwrap().pids.clone()),
            Err(e) => return Err(format!("listing engine processes: {e}")),
        };
        let containment = self.runtime.containment();
        let usage = self.runtime.usage();
        let processes: Vec<_> = pids
            .iter()
            .filter_map(|p| self.proc.check(*p, &self.binding))
            .filter(crate::supervise::procs::is_engine_process)
            .collect();
        let placement = self.audit_placement(&processes);
        let threads = self.audit_threads(&processes);
        let ranks = self.ranks.as_mut().map(|r| r.tick(&pids, containment.as_deref()));
        let escaped: Vec<String> = processes
            .iter()
            .filter_map(|c| c.escape.as_ref().map(|e| format!("pid {} ({}): {e}", c.pid, c.comm)))
            .collect();
        {
            let mut s = self.status.lock().unwrap();
            s.pids = pids.clone();
            s.containment = containment;
            s.engine_memory_bytes = usage.memory_bytes;
            s.engine_cpu_seconds = usage.cpu_seconds;
            if let Some((by_node, share, alert)) = placement {
                s.memory_by_node = Some(by_node);
                s.placement.memory_off_node_share = share;
                s.placement.memory_off_node_alert = alert;
            }
            if let Some((placement, alert)) = threads {
                s.placement.thread_placement = Some(placement);
                s.placement.cpu_outside_alert = alert;
            }
            if let Some(ranks) = ranks {
                s.ranks = ranks;
            }
            s.binding_check =
                Some(BindingCheck { at: now_rfc3339(), ok: escaped.is_empty(), processes });
        }
        if escaped.is_empty() {
            Ok(pids)
        } else {
            for e in &escaped {
                tracing::error!("binding escaped: {e}");
            }
            Err(escaped.join("; "))
        }
    }

    /// The memory placement audit of the engine's processes (`supervise::placement`): bytes per
    /// node, the share off the binding's memory nodes, and whether that is above
    /// `binding.memory_off_node_alert` (logged when it goes up). `None` when no process's
    /// `numa_maps` is readable here (a container's processes in another pid namespace still are).
    fn audit_placement(
        &self,
        processes: &[crate::supervise::procs::ProcCheck],
    ) -> Option<(std::collections::BTreeMap<u32, u64>, Option<f64>, bool)> {
        let pids: Vec<i32> = processes.iter().map(|p| p.pid).collect();
        let audit = crate::supervise::placement::audit(self.proc.root(), &pids);
        for u in &audit.unread {
            tracing::debug!("placement audit: {u}");
        }
        if audit.by_node.is_empty() {
            return None;
        }
        let share =
            crate::host::numa_maps::off_node_share(&audit.by_node, &self.binding.memory_nodes());
        let alert = share.is_some_and(|s| s > self.policy.memory_off_node_alert);
        let was = self.status.lock().unwrap().placement.memory_off_node_alert;
        if alert && !was {
            tracing::warn!(
                share = share.unwrap_or_default(),
                limit = self.policy.memory_off_node_alert,
                by_node = ?audit.by_node,
                "engine memory off its bound nodes: {:.1} % (alert above {:.1} %)",
                share.unwrap_or_default() * 100.0,
                self.policy.memory_off_node_alert * 100.0
            );
        }
        Some((audit.by_node, share, alert))
    }

    /// Whether an escape from the binding ends the life (`on_escape = "fail"` and a binding).
    fn escape_fails(&self) -> bool {
        self.policy.on_escape == EscapePolicy::Fail && !self.binding.is_none()
    }

    fn record_health(&self, p: &Probe, failures: u32) {
        let last = match p {
            Probe::Healthy => "healthy".to_string(),
            Probe::NotListening => "not listening".to_string(),
            Probe::Unhealthy(why) => why.clone(),
        };
        self.status.lock().unwrap().health = Some(Health {
            ok: *p == Probe::Healthy,
            last,
            consecutive_failures: failures,
            at: now_rfc3339(),
        });
    }

    /// One engine life, from start to exit, hang, escape or cancellation: the first binding
    /// check, then `wait_ready`, then `run_healthy`.
    async fn life(&mut self, ready_sent: &mut bool) -> LifeEnd {
        let started = Instant::now();
        {
            let mut s = self.status.lock().unwrap();
            s.engine_started_at = Some(SystemTime::now());
            s.health = None;
            s.liveness = None;
        }
        if !*ready_sent {
            self.notifier.notify(Notice::ExtendTimeout(
                self.policy.ready_timeout.saturating_add(Duration::from_secs(30)),
            ));
        }
        let mut ticks = Ticks::new(&self.policy, self.notifier.watchdog());
        // The first binding check runs at once, so a process that escaped is caught early.
        match self.check_binding().await {
            Err(why) if self.escape_fails() => return LifeEnd::Escaped(why),
            Ok(pids) => self.status.lock().unwrap().main_pid = pids.first().copied(),
            Err(_) => {}
        }
        let mut prober = Prober::new(self.policy.probe.clone());
        let ready_pids = match self.wait_ready(started, &mut ticks, ready_sent, &mut prober).await {
            Ok(pids) => pids,
            Err(end) => return end,
        };
        self.run_healthy(&ready_pids, &mut ticks, &mut prober).await
    }

    /// The next thing that happens in a life. `ready` arms the monitor's hung verdict (an
    /// engine still loading has no requests to hang on).
    async fn next_event(&mut self, ticks: &mut Ticks, ready: bool) -> Event {
        tokio::select! {
            // SIGTERM/SIGINT (or the caller) asked to stop.
            _ = self.cancel.cancelled() => Event::Cancelled,
            // The engine's main process ended (reaped by the runtime).
            exit = self.runtime.wait() => Event::Exited(exit),
            _ = ticks.health.tick() => Event::HealthTick,
            _ = ticks.binding.tick() => Event::BindingTick,
            _ = gpu_hung_edge(&mut self.gpu_hung), if ready => Event::GpuHung,
            _ = ticks.watchdog.tick(), if ticks.watchdog_on => Event::WatchdogTick,
        }
    }

    /// The events every phase of a life handles alike.
    async fn handle(&mut self, event: Event) -> Step {
        match event {
            Event::Cancelled => Step::End(LifeEnd::Cancelled),
            Event::Exited(Err(e)) if e.is_daemon_down() => {
                Step::End(LifeEnd::DaemonDown(e.to_string()))
            }
            // Any exit the supervisor did not ask for is a failure, even code 0
            // (VLLM-NOTES.md).
            Event::Exited(exit) => Step::End(LifeEnd::Restart(describe_exit(&exit))),
            Event::HealthTick => Step::Health,
            Event::BindingTick => match self.check_binding().await {
                Err(why) if self.escape_fails() => Step::End(LifeEnd::Escaped(why)),
                _ => Step::Continue,
            },
            // The monitor saw requests in flight while every engine GPU sat at 0 % for several
            // samples: a hang the HTTP health check cannot see.
            Event::GpuHung => Step::End(LifeEnd::Restart(
                "engine hung: requests in flight but its GPUs idle (monitor)".to_string(),
            )),
            Event::WatchdogTick => {
                self.notifier.notify(Notice::Watchdog);
                Step::Continue
            }
        }
    }

    /// Polls readiness until the engine is healthy (`Ok`: the engine's processes then, which
    /// must all stay alive) or the life ends first (not ready in time, exit, escape, cancel).
    async fn wait_ready(
        &mut self,
        started: Instant,
        ticks: &mut Ticks,
        ready_sent: &mut bool,
        prober: &mut Prober,
    ) -> Result<BTreeSet<i32>, LifeEnd> {
        let p = self.policy.clone();
        loop {
            let event = self.next_event(ticks, false).await;
            match self.handle(event).await {
                Step::Continue => continue,
                Step::End(end) => return Err(end),
                Step::Health => {}
            }
            if started.elapsed() > p.ready_timeout {
                return Err(LifeEnd::Restart(format!(
                    "engine not ready within {}",
                    humantime::format_duration(p.ready_timeout)
                )));
            }
            let probe =
                prober.ready(self.health_addr, self.model.as_deref(), p.health_timeout).await;
            self.record_probe_notes(prober);
            self.record_health(&probe, 0);
            if probe != Probe::Healthy {
                continue;
            }
            let ready_pids = match self.check_binding().await {
                Ok(pids) => pids.into_iter().collect(),
                Err(why) if self.escape_fails() => return Err(LifeEnd::Escaped(why)),
                Err(_) => self.status.lock().unwrap().pids.iter().copied().collect(),
            };
            ticks.health_every(p.health_interval);
            self.set_state(
                State::Ready,
                format!("engine healthy after {:.1} s", started.elapsed().as_secs_f64()),
            );
            if !*ready_sent {
                self.notifier.notify(Notice::Ready);
                *ready_sent = true;
            }
            return Ok(ready_pids);
        }
    }

    /// Watches a ready engine until the life ends: health checks with a failure count, the
    /// processes seen at readiness, the progress watchdog, the monitor's hung verdict.
    async fn run_healthy(
        &mut self,
        ready_pids: &BTreeSet<i32>,
        ticks: &mut Ticks,
        prober: &mut Prober,
    ) -> LifeEnd {
        let p = self.policy.clone();
        let mut failures = 0u32;
        let mut progress = ProgressWatch::new(p.stall_timeout).with_series(p.probe.metrics_series);
        let mut canary = CanaryWatch::new(p.canary_interval);
        loop {
            let event = self.next_event(ticks, true).await;
            match self.handle(event).await {
                Step::Continue => continue,
                Step::End(end) => return end,
                Step::Health => {}
            }
            let probe =
                prober.live(self.health_addr, self.model.as_deref(), p.health_timeout).await;
            self.record_probe_notes(prober);
            // Liveness also needs every process that was there at readiness: a dead worker
            // under a live API server is a dead engine (VLLM-NOTES.md).
            let now: BTreeSet<i32> =
                self.runtime.pids().await.unwrap_or_default().into_iter().collect();
            let lost: Vec<i32> = ready_pids.difference(&now).copied().collect();
            if !lost.is_empty() {
                // The main process may be among them (a zombie not reaped yet): then its exit
                // status is the better report.
                let wait = tokio::time::timeout(Duration::from_millis(500), self.runtime.wait());
                if let Ok(exit) = wait.await {
                    return LifeEnd::Restart(describe_exit(&exit));
                }
                return LifeEnd::Restart(format!("engine process(es) {lost:?} died"));
            }
            if probe == Probe::Healthy {
                failures = 0;
                self.record_health(&probe, 0);
                if self.status.lock().unwrap().state == State::Degraded {
                    self.set_state(State::Ready, "engine healthy again");
                }
                // /health answers; are tokens still being produced, do completions work?
                if let Some(why) = self.check_liveness(&mut progress, &mut canary).await {
                    return LifeEnd::Restart(why);
                }
            } else {
                failures += 1;
                self.record_health(&probe, failures);
                let why = match &probe {
                    Probe::Unhealthy(w) => w.clone(),
                    _ => "not listening".to_string(),
                };
                if failures >= p.health_failures {
                    return LifeEnd::Restart(format!(
                        "engine hung: {failures} failed health checks, last: {why}"
                    ));
                }
                self.set_state(
                    State::Degraded,
                    format!("health check failed ({failures}/{}): {why}", p.health_failures),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
