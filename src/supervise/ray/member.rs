//! The member process (`nodeagent __ray-member`, started by `serve` as the node's engine): runs
//! `ray start --block` and, on the head, the driver; watches the cluster; writes the cluster
//! file; stops everything it started on SIGTERM/SIGINT. Each child runs in a process group of
//! its own, stopped with SIGTERM to the group and SIGKILL after a grace; whatever a child leaves
//! behind in other groups stays in the engine's cgroup, which the supervisor empties after the
//! member exits. The decisions over the node list are `super::nodes`'; this file only acts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{interval, sleep, timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::nodes::{self, Member};
use super::{ClusterRecord, CLUSTER_FILE};
use crate::config::ray::{RayRole, RaySettings};
use crate::supervise::health::get_tcp;
use crate::supervise::statedir::StateDir;
use crate::supervise::status::now_rfc3339;

/// How often the head reads the node list and a worker asks for the head's GCS.
const POLL: Duration = Duration::from_secs(1);
/// Consecutive unanswered GCS connects after which a worker takes its head for gone.
const HEAD_MISSES: u32 = 3;
/// Consecutive failed node-list reads after which the head gives up on its own dashboard.
const LIST_MISSES: u32 = 60;
/// SIGTERM to SIGKILL on a requested stop: `ray start` drains its node for up to 30 s before
/// it stops its daemons; the driver (vLLM) finishes its requests.
const RAY_GRACE: Duration = Duration::from_secs(30);
const DRIVER_GRACE: Duration = Duration::from_secs(15);
/// SIGTERM to SIGKILL when the cluster already failed (nothing to drain): a short wait.
const FAST_GRACE: Duration = Duration::from_secs(5);
/// What `ray start` prints once its node is registered with the GCS.
const STARTED: &str = "Ray runtime started";

/// What the member runs (the `__ray-member` arguments): the `[ray]` settings as `serve`
/// resolved them (`num_gpus` always set: the plan's count unless `ray.num_gpus` was), and what
/// only the member process needs.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub settings: RaySettings,
    /// Worker: where its `/health` answers (the agent's engine address).
    pub health_listen: SocketAddr,
    pub state_dir: PathBuf,
    /// Head: the driver's command.
    pub engine: Vec<String>,
}

impl MemberSpec {
    /// This node's `--num-gpus`.
    fn num_gpus(&self) -> u32 {
        self.settings.num_gpus.unwrap_or(0)
    }
}

/// Why the member ended (every one exits 1: the supervisor restarts the group).
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("ray {role}: starting {what} `{program}`: {source}")]
    Spawn { role: &'static str, what: &'static str, program: String, source: std::io::Error },
    #[error("ray head: the engine command is empty (engine.argv)")]
    NoEngine,
    #[error("ray {role}: `ray start` exited ({status})")]
    RayExited { role: &'static str, status: String },
    #[error("ray head: {alive} of {nodes} node(s) alive, {gpus} of {want_gpus} GPU(s), within {within}: the engine was not started")]
    NotFormed { alive: u32, nodes: u32, gpus: f64, want_gpus: u32, within: String },
    #[error("ray head: cluster member {node} lost: engine and Ray stopped, the group restarts")]
    Lost { node: String },
    #[error("ray head: the engine exited ({status}): Ray stopped")]
    EngineExited { status: String },
    #[error(
        "ray head: no node list from the dashboard at 127.0.0.1:{port} for {misses} s: {last}"
    )]
    NoNodeList { port: u16, misses: u32, last: String },
    #[error("ray worker: `ray start` did not join the head at {head} within {within}")]
    NotJoined { head: String, within: String },
    #[error("ray worker: listening for /health on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("ray {role}: signal handler: {source}")]
    Signals { role: &'static str, source: std::io::Error },
}

/// Runs the member until SIGTERM/SIGINT (`Ok`) or until the cluster fails it (`Err`).
pub async fn run(spec: MemberSpec) -> Result<(), MemberError> {
    let role = spec.settings.role.as_str();
    let cancel = CancellationToken::new();
    let signals =
        |k| tokio::signal::unix::signal(k).map_err(|source| MemberError::Signals { role, source });
    let mut term = signals(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = signals(tokio::signal::unix::SignalKind::interrupt())?;
    let token = cancel.clone();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("stop requested: stopping Ray");
        token.cancel();
    });
    // The cluster file goes through the state dir's checks (no symlink, `O_NOFOLLOW`); a state
    // dir that fails them only costs `status` its Ray lines.
    let dir = StateDir::open(&spec.state_dir)
        .map_err(|e| tracing::warn!("ray {role}: no cluster file for status: {e}"))
        .ok();
    let m = Member_ { spec, cancel, dir };
    match m.spec.settings.role {
        RayRole::Head => m.head().await,
        RayRole::Worker => m.worker().await,
    }
}

#[allow(non_camel_case_types)]
struct Member_ {
    spec: MemberSpec,
    cancel: CancellationToken,
    dir: Option<StateDir>,
}

impl Member_ {
    fn role(&self) -> &'static str {
        self.spec.settings.role.as_str()
    }

    fn gcs(&self) -> String {
        format!("{}:{}", self.spec.settings.head, self.spec.settings.port)
    }

    /// `ray start ... --block` for this role, in a process group of its own. The worker's
    /// output is piped (its "Ray runtime started" tells the join), then copied to stderr.
    fn start_ray(&self) -> Result<Proc, MemberError> {
        let s = &self.spec.settings;
        let mut cmd = Command::new(&s.ray);
        cmd.args(["start", "--block", "--disable-usage-stats"]);
        cmd.args(["--num-gpus", &self.spec.num_gpus().to_string()]);
        match s.role {
            RayRole::Head => {
                let ip = s.node_ip.clone().unwrap_or_else(|| s.head.clone());
                cmd.args(["--head", "--port", &s.port.to_string(), "--node-ip-address", &ip]);
                cmd.args(["--include-dashboard", "true"]);
                cmd.args(["--dashboard-port", &s.dashboard_port.to_string()]);
            }
            RayRole::Worker => {
                cmd.args(["--address", &self.gcs()]);
                if let Some(ip) = &s.node_ip {
                    cmd.args(["--node-ip-address", ip]);
                }
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
        }
        cmd.args(&s.start_args);
        cmd.process_group(0).kill_on_drop(false);
        tracing::info!(program = %s.ray.display(), gcs = %self.gcs(), "ray start ({})", self.role());
        cmd.spawn().map(Proc::new).map_err(|source| MemberError::Spawn {
            role: self.role(),
            what: "ray start",
            program: s.ray.display().to_string(),
            source,
        })
    }

    fn record(&self, phase: &str, members: Vec<Member>) {
        let r = ClusterRecord {
            role: self.spec.settings.role,
            head: self.gcs(),
            phase: phase.to_string(),
            expected_nodes: self.spec.settings.expected_nodes,
            expected_gpus: self.spec.settings.expected_gpus,
            members,
            updated: now_rfc3339(),
        };
        let text = serde_json::to_vec_pretty(&r).unwrap_or_default();
        // The record is for `status` only: failing to write it must not stop the cluster.
        if let Some(Err(e)) = self.dir.as_ref().map(|d| d.write_atomic(CLUSTER_FILE, &text)) {
            tracing::warn!("writing {CLUSTER_FILE}: {e}");
        }
    }

    fn forget(&self) {
        if let Some(d) = &self.dir {
            let _ = d.remove(CLUSTER_FILE);
        }
    }

    async fn node_list(&self) -> Result<Vec<Member>, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.spec.settings.dashboard_port));
        let (code, body) = get_tcp(addr, "/api/v0/nodes?limit=10000", Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        if code != 200 {
            return Err(format!("GET /api/v0/nodes answered {code}"));
        }
        nodes::parse(&body).map_err(|e| e.to_string())
    }

    async fn head(&self) -> Result<(), MemberError> {
        if self.spec.engine.is_empty() {
            return Err(MemberError::NoEngine);
        }
        self.record("starting", Vec::new());
        let mut ray = self.start_ray()?;
        let (nodes, gpus) = (self.spec.settings.expected_nodes, self.spec.settings.expected_gpus);
        let deadline = Instant::now() + self.spec.settings.join_timeout;
        let mut tick = ticker();
        let mut seen = Vec::new();
        let formed_on = loop {
            tokio::select! {
                () = self.cancel.cancelled() => return self.stop_all(None, &mut ray).await,
                st = ray.wait() => return Err(self.ray_exited(st)),
                _ = tick.tick() => {}
            }
            if let Ok(m) = self.node_list().await {
                self.record("waiting for nodes", m.clone());
                if nodes::formed(&m, nodes, gpus) {
                    break nodes::alive_ids(&m);
                }
                seen = m;
            }
            if Instant::now() >= deadline {
                let (alive, have) = nodes::alive(&seen);
                let _ = self.stop_all(None, &mut ray).await;
                let within =
                    humantime::format_duration(self.spec.settings.join_timeout).to_string();
                return Err(MemberError::NotFormed {
                    alive,
                    nodes,
                    gpus: have,
                    want_gpus: gpus,
                    within,
                });
            }
        };
        tracing::info!(
            nodes = formed_on.len(),
            "ray head: the cluster formed: starting the engine"
        );
        let mut driver = self.start_driver()?;
        let mut misses = 0;
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return self.stop_all(Some(&mut driver), &mut ray).await,
                st = driver.wait() => {
                    let status = describe(st);
                    self.record("engine exited", Vec::new());
                    stop_group(&mut ray, FAST_GRACE).await;
                    return Err(MemberError::EngineExited { status });
                }
                st = ray.wait() => {
                    stop_group(&mut driver, FAST_GRACE).await;
                    return Err(self.ray_exited(st));
                }
                _ = tick.tick() => {}
            }
            match self.node_list().await {
                Ok(m) => {
                    misses = 0;
                    if let Some(node) = nodes::lost(&formed_on, &m) {
                        tracing::error!(
                            "ray head: cluster member {node} lost: stopping the engine"
                        );
                        self.record("lost a member", m);
                        stop_group(&mut driver, FAST_GRACE).await;
                        stop_group(&mut ray, FAST_GRACE).await;
                        return Err(MemberError::Lost { node });
                    }
                    self.record("serving", m);
                }
                Err(last) => {
                    misses += 1;
                    if misses >= LIST_MISSES {
                        stop_group(&mut driver, FAST_GRACE).await;
                        stop_group(&mut ray, FAST_GRACE).await;
                        let port = self.spec.settings.dashboard_port;
                        return Err(MemberError::NoNodeList { port, misses, last });
                    }
                }
            }
        }
    }

    fn start_driver(&self) -> Result<Proc, MemberError> {
        let argv = &self.spec.engine;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).env("RAY_ADDRESS", self.gcs());
        cmd.process_group(0).kill_on_drop(false);
        cmd.spawn().map(Proc::new).map_err(|source| MemberError::Spawn {
            role: "head",
            what: "the engine",
            program: argv[0].clone(),
            source,
        })
    }

    fn ray_exited(&self, st: std::io::Result<ExitStatus>) -> MemberError {
        self.record("ray exited", Vec::new());
        MemberError::RayExited { role: self.role(), status: describe(st) }
    }

    /// On request: the driver first (it leaves the cluster), then Ray.
    async fn stop_all(&self, driver: Option<&mut Proc>, ray: &mut Proc) -> Result<(), MemberError> {
        self.record("stopping", Vec::new());
        if let Some(d) = driver {
            stop_group(d, DRIVER_GRACE).await;
        }
        stop_group(ray, RAY_GRACE).await;
        self.forget();
        Ok(())
    }

    async fn worker(&self) -> Result<(), MemberError> {
        let joined_once = Arc::new(AtomicBool::new(false));
        let addr = self.spec.health_listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| MemberError::Listen { addr, source })?;
        let flag = joined_once.clone();
        let app = axum::Router::new().route(
            "/health",
            axum::routing::get(move || {
                let ok = flag.load(Ordering::Relaxed);
                async move {
                    if ok {
                        (axum::http::StatusCode::OK, "joined")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not joined yet")
                    }
                }
            }),
        );
        let server = self.cancel.clone();
        tokio::spawn(async move {
            let _ =
                axum::serve(listener, app).with_graceful_shutdown(server.cancelled_owned()).await;
        });
        let mut phase = "waiting for the head";
        loop {
            self.record(phase, Vec::new());
            if !self.wait_for_head().await {
                self.forget();
                return Ok(());
            }
            self.record("joining", Vec::new());
            let mut ray = self.start_ray()?;
            let (tx, mut started) = tokio::sync::watch::channel(false);
            let tx = Arc::new(tx);
            for out in [ray.child.stdout.take().map(boxed), ray.child.stderr.take().map(boxed)]
                .into_iter()
                .flatten()
            {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(out).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.contains(STARTED) {
                            let _ = tx.send(true);
                        }
                        eprintln!("{line}");
                    }
                });
            }
            let began = Instant::now();
            let mut tick = ticker();
            let mut misses = 0;
            let mut joined = false;
            loop {
                tokio::select! {
                    () = self.cancel.cancelled() => return self.stop_all(None, &mut ray).await,
                    st = ray.wait() => {
                        tracing::warn!("ray worker: `ray start` exited ({}): rejoining", describe(st));
                        stop_group(&mut ray, FAST_GRACE).await;
                        break;
                    }
                    Ok(()) = started.changed(), if !joined => {
                        joined = true;
                        joined_once.store(true, Ordering::Relaxed);
                        tracing::info!(head = %self.gcs(), "ray worker: joined");
                        self.record("joined", Vec::new());
                        continue;
                    }
                    _ = tick.tick() => {}
                }
                if self.head_answers().await {
                    misses = 0;
                } else {
                    misses += 1;
                }
                if misses >= HEAD_MISSES {
                    tracing::warn!(head = %self.gcs(), "ray worker: the head's GCS stopped answering: stopping Ray, rejoining when it is back");
                    stop_group(&mut ray, FAST_GRACE).await;
                    break;
                }
                if !joined && began.elapsed() > self.spec.settings.join_timeout {
                    stop_group(&mut ray, FAST_GRACE).await;
                    let within =
                        humantime::format_duration(self.spec.settings.join_timeout).to_string();
                    return Err(MemberError::NotJoined { head: self.gcs(), within });
                }
            }
            phase = "rejoining";
            // Not in a tight loop when Ray fails at once.
            tokio::select! { () = self.cancel.cancelled() => {}, () = sleep(POLL) => {} }
        }
    }

    async fn head_answers(&self) -> bool {
        let gcs = self.gcs();
        matches!(
            timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(gcs)).await,
            Ok(Ok(_))
        )
    }

    /// Until the head's GCS accepts a connection (`true`) or a stop is asked (`false`).
    async fn wait_for_head(&self) -> bool {
        let mut said = false;
        loop {
            if self.cancel.is_cancelled() {
                return false;
            }
            if self.head_answers().await {
                return true;
            }
            if !said {
                tracing::info!(head = %self.gcs(), "ray worker: waiting for the head");
                said = true;
            }
            tokio::select! { () = self.cancel.cancelled() => return false, () = sleep(POLL) => {} }
        }
    }
}

fn boxed<R: tokio::io::AsyncRead + Send + Unpin + 'static>(
    r: R,
) -> Box<dyn tokio::io::AsyncRead + Send + Unpin> {
    Box::new(r)
}

fn ticker() -> tokio::time::Interval {
    let mut t = interval(POLL);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

fn describe(st: std::io::Result<ExitStatus>) -> String {
    match st {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// A child leading a process group of its own.
struct Proc {
    child: Child,
    group: Pid,
}

impl Proc {
    fn new(child: Child) -> Proc {
        let group = Pid::from_raw(child.id().map_or(0, |p| p as i32));
        Proc { child, group }
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }
}

/// SIGTERM to the child's process group; SIGKILL to it when the leader outlives `grace`, and
/// to what is left of the group once the leader is gone (also after the leader was reaped).
async fn stop_group(p: &mut Proc, grace: Duration) {
    let group = p.group;
    if group.as_raw() <= 1 {
        return;
    }
    let _ = killpg(group, Signal::SIGTERM);
    if timeout(grace, p.child.wait()).await.is_err() {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = p.child.wait().await;
    }
    // The leader is gone; its group may still be finishing: a little time, then SIGKILL.
    for _ in 0..20 {
        if killpg(group, None).is_err() {
            return;
        }
        sleep(Duration::from_millis(100)).await;
    }
    let _ = killpg(group, Signal::SIGKILL);
}
