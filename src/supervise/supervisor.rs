//! The supervisor state machine (STYLE.md): Starting -> Ready <-> Degraded -> Restarting ->
//! Starting ..., Stopping -> Stopped on cancellation, Failed when the restart budget is spent or
//! a process escaped its binding. One `tokio::select!` per engine life over: the cancellation
//! token (SIGTERM/SIGINT in `cmd::serve`), the engine's exit, health ticks, binding-check ticks
//! and watchdog ticks. It works on any `EngineRuntime` (process tree or container) and tells
//! systemd through a `Notifier`.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::binding::Binding;
use crate::config::{EscapePolicy, SupervisePolicy};
use crate::supervise::health::{get_tcp, probe, Probe};
use crate::supervise::notify::{Notice, Notifier};
use crate::supervise::procs::ProcFs;
use crate::supervise::progress::{Progress, ProgressWatch};
use crate::supervise::runtime::{EngineExit, EngineRuntime, RuntimeError};
use crate::supervise::status::{now_rfc3339, BindingCheck, Health, Shared, State};

/// While starting, readiness is polled this often (connection refused is cheap).
const READY_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// Nothing was started (exit 2). The source is printed by the error chain.
    #[error("{runtime}")]
    Preflight {
        runtime: String,
        #[source]
        source: RuntimeError,
    },
    #[error("removing leftovers of an earlier run ({runtime})")]
    Leftovers {
        runtime: String,
        #[source]
        source: RuntimeError,
    },
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
enum LifeEnd {
    Cancelled,
    /// Crash, hang, not ready in time: worth a restart.
    Restart(String),
    /// A process escaped the binding under `on_escape = "fail"`.
    Escaped(String),
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
        self.set_state(State::Starting, "looking for leftovers of an earlier run");
        let removed = self
            .runtime
            .cleanup_leftovers()
            .await
            .map_err(|source| SuperviseError::Leftovers { runtime: runtime.clone(), source })?;
        if !removed.is_empty() {
            tracing::warn!(removed = ?removed, "removed leftovers of an earlier run");
        }
        self.runtime
            .preflight()
            .await
            .map_err(|source| SuperviseError::Preflight { runtime: runtime.clone(), source })?;
        let preflight = |source| SuperviseError::Preflight { runtime: runtime.clone(), source };
        if let Some(port) = self.check_port {
            crate::supervise::process::port_free(&self.proc, port).map_err(preflight)?;
        }
        if let Some(path) = &self.check_path {
            if !path.exists() {
                return Err(preflight(RuntimeError::Preflight(format!(
                    "model path {} does not exist",
                    path.display()
                ))));
            }
        }

        let mut failures: VecDeque<Instant> = VecDeque::new();
        let mut backoff = self.policy.backoff_initial;
        let mut ready_sent = false;
        loop {
            self.set_state(State::Starting, format!("starting {runtime}"));
            let started = Instant::now();
            let end = match self.runtime.start().await {
                Ok(()) => self.life(&mut ready_sent).await,
                Err(e) => LifeEnd::Restart(format!("engine did not start: {e}")),
            };
            let reason = match end {
                LifeEnd::Cancelled => return Ok(self.shutdown().await),
                LifeEnd::Escaped(why) => {
                    self.set_state(State::Stopping, format!("binding escaped: {why}"));
                    self.stop_engine().await;
                    self.set_state(State::Failed, format!("binding escaped: {why}"));
                    return Ok(Outcome::Failed(format!("binding escaped: {why}")));
                }
                LifeEnd::Restart(why) => why,
            };
            self.status.lock().unwrap().last_exit = Some(reason.clone());
            self.set_state(State::Restarting, reason.clone());
            self.stop_engine().await;
            if self.cancel.is_cancelled() {
                return Ok(self.shutdown().await);
            }
            // A long healthy run forgives earlier trouble.
            if started.elapsed() >= self.policy.stable_after {
                backoff = self.policy.backoff_initial;
                failures.clear();
            }
            let now = Instant::now();
            failures.push_back(now);
            while failures
                .front()
                .is_some_and(|t| now.duration_since(*t) > self.policy.restart_window)
            {
                failures.pop_front();
            }
            if failures.len() as u32 > self.policy.restart_budget {
                let why = format!(
                    "crash loop: {} failures within {}, restart budget {} spent; last: {reason}",
                    failures.len(),
                    humantime::format_duration(self.policy.restart_window),
                    self.policy.restart_budget
                );
                self.set_state(State::Failed, why.clone());
                return Ok(Outcome::Failed(why));
            }
            self.status.lock().unwrap().restarts += 1;
            self.set_state(
                State::Restarting,
                format!("restarting in {} after: {reason}", humantime::format_duration(backoff)),
            );
            tokio::select! {
                // Signal during the backoff: nothing runs, just stop.
                _ = self.cancel.cancelled() => return Ok(self.shutdown().await),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.policy.backoff_max);
        }
    }

    async fn stop_engine(&mut self) {
        if let Err(e) = self.runtime.stop(self.policy.stop_grace).await {
            tracing::error!(error = %e, "stopping the engine");
        }
        let mut s = self.status.lock().unwrap();
        s.pids.clear();
        s.main_pid = None;
        s.engine_started_at = None;
    }

    async fn shutdown(&mut self) -> Outcome {
        self.notifier.notify(Notice::Stopping);
        self.set_state(State::Stopping, "stopping the engine");
        self.stop_engine().await;
        self.set_state(State::Stopped, "stopped");
        Outcome::Stopped
    }

    /// Checks every engine process against the binding; records the result.
    async fn check_binding(&mut self) -> Result<Vec<i32>, String> {
        let pids =
            self.runtime.pids().await.map_err(|e| format!("listing engine processes: {e}"))?;
        let processes: Vec<_> = pids
            .iter()
            .filter_map(|p| self.proc.check(*p, &self.binding))
            .filter(crate::supervise::procs::is_engine_process)
            .collect();
        let escaped: Vec<String> = processes
            .iter()
            .filter_map(|c| c.escape.as_ref().map(|e| format!("pid {} ({}): {e}", c.pid, c.comm)))
            .collect();
        {
            let mut s = self.status.lock().unwrap();
            s.pids = pids.clone();
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

    /// One engine life: from start to exit, hang, escape or cancellation.
    /// One `/metrics` scrape into the progress watchdog; `Some(reason)` when the engine is
    /// stuck. An engine without vLLM's series (or without `/metrics`) is not judged.
    async fn stalled(&self, watch: &mut ProgressWatch, timeout: Duration) -> Option<String> {
        let (status, body) = get_tcp(self.health_addr, "/metrics", timeout).await.ok()?;
        if status != 200 {
            return None;
        }
        let progress = Progress::from_vllm_metrics(&String::from_utf8_lossy(&body))?;
        watch.observe(Instant::now(), progress)
    }

    async fn life(&mut self, ready_sent: &mut bool) -> LifeEnd {
        let started = Instant::now();
        {
            let mut s = self.status.lock().unwrap();
            s.engine_started_at = Some(SystemTime::now());
            s.health = None;
        }
        if !*ready_sent {
            self.notifier
                .notify(Notice::ExtendTimeout(self.policy.ready_timeout + Duration::from_secs(30)));
        }
        let p = self.policy.clone();
        let mut ready = false;
        let mut failures = 0u32;
        let mut ready_pids: BTreeSet<i32> = BTreeSet::new();
        let mut progress = ProgressWatch::new(p.stall_timeout);
        let mut health_tick = tokio::time::interval(READY_POLL);
        let mut bind_tick = tokio::time::interval(p.binding_check_interval);
        let watchdog = self.notifier.watchdog();
        let mut wd_tick =
            tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |d| d / 2));
        for t in [&mut health_tick, &mut bind_tick, &mut wd_tick] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        // The first binding check runs at once, so a process that escaped is caught early.
        match self.check_binding().await {
            Err(why) if p.on_escape == EscapePolicy::Fail && !self.binding.is_none() => {
                return LifeEnd::Escaped(why)
            }
            Ok(pids) => self.status.lock().unwrap().main_pid = pids.first().copied(),
            Err(_) => {}
        }
        loop {
            tokio::select! {
                // SIGTERM/SIGINT (or the caller) asked to stop.
                _ = self.cancel.cancelled() => return LifeEnd::Cancelled,
                // The engine's main process ended (reaped by the runtime). Any exit the
                // supervisor did not ask for is a failure, even code 0 (VLLM-NOTES.md).
                exit = self.runtime.wait() => {
                    return LifeEnd::Restart(describe_exit(&exit));
                }
                _ = health_tick.tick() => {
                    if !ready {
                        if started.elapsed() > p.ready_timeout {
                            return LifeEnd::Restart(format!(
                                "engine not ready within {}",
                                humantime::format_duration(p.ready_timeout)
                            ));
                        }
                        let probe = probe(self.health_addr, self.model.as_deref(), p.health_timeout).await;
                        self.record_health(&probe, 0);
                        if probe == Probe::Healthy {
                            ready = true;
                            ready_pids = match self.check_binding().await {
                                Ok(pids) => pids.into_iter().collect(),
                                Err(why) if p.on_escape == EscapePolicy::Fail && !self.binding.is_none() => return LifeEnd::Escaped(why),
                                Err(_) => self.status.lock().unwrap().pids.iter().copied().collect(),
                            };
                            health_tick = tokio::time::interval_at(tokio::time::Instant::now() + p.health_interval, p.health_interval);
                            health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            self.set_state(State::Ready, format!(
                                "engine healthy after {:.1} s", started.elapsed().as_secs_f64()));
                            if !*ready_sent {
                                self.notifier.notify(Notice::Ready);
                                *ready_sent = true;
                            }
                        }
                        continue;
                    }
                    let probe = probe(self.health_addr, self.model.as_deref(), p.health_timeout).await;
                    // Liveness also needs every process that was there at readiness: a dead
                    // worker under a live API server is a dead engine (VLLM-NOTES.md).
                    let now: BTreeSet<i32> = self.runtime.pids().await.unwrap_or_default().into_iter().collect();
                    let lost: Vec<i32> = ready_pids.difference(&now).copied().collect();
                    if !lost.is_empty() {
                        // The main process may be among them (a zombie not reaped yet): then
                        // its exit status is the better report.
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
                        // /health answers; are tokens still being produced?
                        if progress.enabled() {
                            if let Some(why) = self.stalled(&mut progress, p.health_timeout).await {
                                return LifeEnd::Restart(why);
                            }
                        }
                    } else {
                        failures += 1;
                        self.record_health(&probe, failures);
                        let why = match &probe { Probe::Unhealthy(w) => w.clone(), _ => "not listening".to_string() };
                        if failures >= p.health_failures {
                            return LifeEnd::Restart(format!(
                                "engine hung: {failures} failed health checks, last: {why}"));
                        }
                        self.set_state(State::Degraded, format!(
                            "health check failed ({failures}/{}): {why}", p.health_failures));
                    }
                }
                _ = bind_tick.tick() => {
                    if let Err(why) = self.check_binding().await {
                        if p.on_escape == EscapePolicy::Fail && !self.binding.is_none() {
                            return LifeEnd::Escaped(why);
                        }
                    }
                }
                // The monitor saw requests in flight while every engine GPU sat at 0 % for
                // several samples: a hang the HTTP health check cannot see.
                _ = gpu_hung_edge(&mut self.gpu_hung), if ready => {
                    return LifeEnd::Restart(
                        "engine hung: requests in flight but its GPUs idle (monitor)".to_string());
                }
                _ = wd_tick.tick(), if watchdog.is_some() => {
                    self.notifier.notify(Notice::Watchdog);
                }
            }
        }
    }
}
