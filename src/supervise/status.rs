//! What `nodeagent status` shows: the agent's shared status record, the local endpoint that
//! serves it (HTTP over a Unix socket in the state dir, never a network address), and the
//! client side. The JSON shape is documented in the README ("`nodeagent status`"); the monitor
//! (`crate::monitor::supervised`, which sits above this module) puts its own status under the
//! `monitor` key, as JSON this module does not interpret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::binding::Binding;
use crate::supervise::health::{get_unix, HttpError};
use crate::supervise::procs::ProcCheck;
use crate::supervise::statedir::StateDir;

pub const SOCKET_NAME: &str = "status.sock";

/// Supervisor states (STYLE.md): Starting -> Ready <-> Degraded -> Restarting -> Starting ...;
/// (Draining ->) Stopping -> Stopped on a signal; Failed when the restart budget is spent or the binding was
/// escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Ready,
    Degraded,
    Restarting,
    /// Before a stop: in-flight requests may finish (`drain_timeout`); send no new ones.
    Draining,
    Stopping,
    Stopped,
    Failed,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok();
        write!(f, "{}", s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingCheck {
    /// RFC 3339 time of the last check.
    pub at: String,
    /// Every engine process was inside the binding.
    pub ok: bool,
    pub processes: Vec<ProcCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Last probe succeeded.
    pub ok: bool,
    /// `healthy`, `not listening`, or the failure.
    pub last: String,
    pub consecutive_failures: u32,
    pub at: String,
}

/// The liveness signals the supervisor acts on (docs/serve.md, "Supervision"): what the last
/// `/metrics` scrape and the last canary said. `None` fields: not known (no vLLM `/metrics`,
/// no canary sent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Liveness {
    /// Seconds since the engine's token counters last moved (from the first scrape on).
    pub last_token_s_ago: Option<u64>,
    /// `vllm:num_requests_running` at the last scrape.
    pub running: Option<f64>,
    /// `vllm:num_requests_waiting` at the last scrape.
    pub waiting: Option<f64>,
    /// The last canary: `ok`, `refused: HTTP 404`, `failed: HTTP 500`, ...
    pub canary: Option<String>,
    /// Failed canaries in a row.
    pub canary_failures: u32,
    /// RFC 3339 time of the last canary.
    pub canary_at: Option<String>,
    /// When the counters last moved; `last_token_s_ago` is computed from it.
    #[serde(skip)]
    pub last_token_at: Option<SystemTime>,
}

/// A drain before a stop (docs/serve.md, "Drain").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drain {
    /// RFC 3339 time the drain began.
    pub since: String,
    /// `drain_timeout`, seconds.
    pub timeout_s: f64,
    /// Requests running plus waiting at the engine at the last look (`None`: not known).
    pub in_flight: Option<f64>,
    /// How it ended (`drained: ...`, `drain_timeout 5s passed with 1 request(s) in flight`);
    /// `None` while it goes on.
    pub result: Option<String>,
}

/// Where the engine's memory and threads are against its binding, from the supervisor's last
/// binding check: the figures the status record and the monitor's engine report share (each
/// flattens them, so the keys stay at its top level). `memory_by_node` stays beside it in each,
/// so that the record's keys keep their order (its `ranks` sit between the two).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlacementFigures {
    /// Share (0 to 1) of the engine's resident bytes off the binding's memory nodes; `None`
    /// when unbound or before the first audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_off_node_share: Option<f64>,
    /// The placement alert: the off-node share is above `binding.memory_off_node_alert`.
    #[serde(default)]
    pub memory_off_node_alert: bool,
    /// Where the engine's threads ran over the last binding check interval
    /// (`/proc/PID/task/*/stat` and `sched`): last CPUs, migrations, the share of the engine's
    /// CPU time outside the binding's CPUs. `None` before the first reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_placement: Option<crate::host::task_stat::ThreadPlacement>,
    /// The thread placement alert: the outside share is above `binding.cpu_outside_alert`.
    #[serde(default)]
    pub cpu_outside_alert: bool,
}

/// The whole status record (`nodeagent status --json` prints it as is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The instance this agent serves (`serve --instance N`, `launch.instance`).
    #[serde(default)]
    pub instance: usize,
    /// The instance's GPU indexes (the vendor tool's numbering) when known.
    #[serde(default)]
    pub gpus: Option<Vec<u32>>,
    /// The instance's state dir (where this socket is).
    #[serde(default)]
    pub state_dir: Option<String>,
    pub agent_pid: u32,
    pub state: State,
    /// What happened last, one line.
    pub message: String,
    pub state_since: String,
    pub agent_started: String,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// Seconds since the current engine started (`None` when none runs).
    pub engine_uptime_s: Option<u64>,
    pub runtime: String,
    pub argv: Vec<String>,
    pub port: u16,
    pub served_model_name: Option<String>,
    pub main_pid: Option<i32>,
    /// Every process of the engine at the last scan.
    pub pids: Vec<i32>,
    /// How the engine's processes are tracked: `cgroup-v2 PATH`, `cgroup-v1 PATH` or
    /// `proc-walk` (no writable cgroup); `None` for containers and before the first start.
    #[serde(default)]
    pub containment: Option<String>,
    /// The engine's memory as its cgroup counts it (`memory.current`, v1
    /// `memory.usage_in_bytes`), bytes; `None` when unknown.
    #[serde(default)]
    pub engine_memory_bytes: Option<u64>,
    /// CPU time the engine's cgroup used (`cpu.stat` `usage_usec`, v1 `cpuacct.usage`),
    /// seconds; `None` when unknown.
    #[serde(default)]
    pub engine_cpu_seconds: Option<f64>,
    pub binding: Binding,
    pub binding_check: Option<BindingCheck>,
    /// Resident bytes of every engine process per NUMA node (`numa_maps`), keyed by node id;
    /// `None` before the first audit and for containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_by_node: Option<std::collections::BTreeMap<u32, u64>>,
    /// Per-rank binding (`supervise::ranks`): each rank's workers, cgroup, CPUs and resident
    /// memory per node; empty when the instance has no per-rank layout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranks: Vec<crate::supervise::ranks::RankStatus>,
    /// The share of `memory_by_node` off the binding's memory nodes, where the threads ran,
    /// and their alerts (flattened: the keys stay at this level).
    #[serde(flatten)]
    pub placement: PlacementFigures,
    /// The previous reading of the engine's threads, the start of the next interval.
    #[serde(skip)]
    pub thread_reading: Option<crate::host::task_stat::Sample>,
    pub health: Option<Health>,
    /// The liveness signals of the current engine life (`None` before its first check).
    #[serde(default)]
    pub liveness: Option<Liveness>,
    /// Paths this engine lacks and what the probes use instead (a 404 on `/health` or
    /// `/live`), said once per agent run.
    #[serde(default)]
    pub probe_notes: Vec<String>,
    /// The drain before a stop, once one began.
    #[serde(default)]
    pub drain: Option<Drain>,
    pub restarts: u32,
    /// How the engine ended last (`exit code 1`, `signal 9`, `hung: ...`).
    pub last_exit: Option<String>,
    /// GPUs, their processes and the monitor's alerts (`nodeagent serve --metrics-port`): the
    /// monitor's status as JSON, put here by `crate::monitor::supervised`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<serde_json::Value>,
    #[serde(skip)]
    pub started_at: Option<SystemTime>,
    #[serde(skip)]
    pub engine_started_at: Option<SystemTime>,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl AgentStatus {
    pub fn new(
        runtime: String,
        argv: Vec<String>,
        port: u16,
        model: Option<String>,
        binding: Binding,
    ) -> Self {
        let now = now_rfc3339();
        Self {
            instance: 0,
            gpus: None,
            state_dir: None,
            agent_pid: std::process::id(),
            state: State::Starting,
            message: "starting".to_string(),
            state_since: now.clone(),
            agent_started: now,
            uptime_s: 0,
            engine_uptime_s: None,
            runtime,
            argv,
            port,
            served_model_name: model,
            main_pid: None,
            pids: Vec::new(),
            containment: None,
            engine_memory_bytes: None,
            engine_cpu_seconds: None,
            binding,
            binding_check: None,
            memory_by_node: None,
            ranks: Vec::new(),
            placement: PlacementFigures::default(),
            thread_reading: None,
            health: None,
            liveness: None,
            probe_notes: Vec::new(),
            drain: None,
            restarts: 0,
            last_exit: None,
            monitor: None,
            started_at: Some(SystemTime::now()),
            engine_started_at: None,
        }
    }

    /// A copy with the uptimes computed now.
    pub fn snapshot(&self) -> Self {
        let mut s = self.clone();
        let since = |t: Option<SystemTime>| t.and_then(|t| t.elapsed().ok()).map(|d| d.as_secs());
        s.uptime_s = since(self.started_at).unwrap_or(0);
        s.engine_uptime_s = since(self.engine_started_at);
        if let Some(l) = &mut s.liveness {
            l.last_token_s_ago = since(l.last_token_at);
        }
        s
    }
}

pub type Shared = Arc<Mutex<AgentStatus>>;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("another nodeagent serve already answers on {path}")]
    AlreadyRunning { path: PathBuf },
    #[error("status socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no nodeagent serve answers on {path} ({source}); is it running with this --state-dir?"
    )]
    NotRunning {
        path: PathBuf,
        #[source]
        source: HttpError,
    },
    #[error("status socket {path} answered {code}")]
    BadAnswer { path: PathBuf, code: u16 },
    #[error("status socket {path}: bad JSON: {source}")]
    BadJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Binds the status socket in the (checked) state dir, refusing when another agent answers
/// there and removing a stale socket file otherwise (`unlink`: a planted symlink is removed,
/// not followed), and serves `GET /status` until the token is cancelled. The socket is made
/// mode 0600: only the agent's user (root under systemd) can ask.
pub async fn serve(
    state_dir: &StateDir,
    status: Shared,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, StatusError> {
    let path = state_dir.join(SOCKET_NAME);
    if std::fs::symlink_metadata(&path).is_ok() {
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            return Err(StatusError::AlreadyRunning { path });
        }
        let _ = state_dir.remove(SOCKET_NAME);
    }
    let io = |source| StatusError::Io { path: path.clone(), source };
    let listener = tokio::net::UnixListener::bind(&path).map_err(io)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    let app = axum::Router::new().route(
        "/status",
        axum::routing::get(move || {
            let status = status.clone();
            async move { axum::Json(status.lock().unwrap().snapshot()) }
        }),
    );
    let cleanup = path.clone();
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await;
        let _ = std::fs::remove_file(cleanup);
    }))
}

/// What answered on one instance's socket.
#[derive(Debug)]
pub struct Found {
    pub instance: usize,
    pub state_dir: PathBuf,
    pub status: Result<AgentStatus, StatusError>,
}

/// Asks every instance under `base` that has a status socket (`super::statedir::instance_dirs`;
/// only `instance` when given), all at once; those without a socket are not listed, those
/// whose socket does not answer are, with the error.
pub async fn query_all(base: &Path, instance: Option<usize>, timeout: Duration) -> Vec<Found> {
    let dirs: Vec<(usize, PathBuf)> = match instance {
        Some(n) => vec![(n, crate::supervise::statedir::instance_dir(base, n))],
        None => crate::supervise::statedir::instance_dirs(base)
            .into_iter()
            .filter(|(_, d)| std::fs::symlink_metadata(d.join(SOCKET_NAME)).is_ok())
            .collect(),
    };
    let asks = dirs.into_iter().map(|(instance, dir)| async move {
        let status = query(&dir, timeout).await;
        Found { instance, state_dir: dir, status }
    });
    futures_util::future::join_all(asks).await
}

/// Asks the agent whose state dir is `state_dir`.
pub async fn query(state_dir: &Path, timeout: Duration) -> Result<AgentStatus, StatusError> {
    let path = state_dir.join(SOCKET_NAME);
    let (code, body) = get_unix(&path, "/status", timeout)
        .await
        .map_err(|source| StatusError::NotRunning { path: path.clone(), source })?;
    if code != 200 {
        return Err(StatusError::BadAnswer { path, code });
    }
    serde_json::from_slice(&body).map_err(|source| StatusError::BadJson { path, source })
}
