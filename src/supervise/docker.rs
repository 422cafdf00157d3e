//! The container runtime: runs one engine container through the Docker Engine API (bollard),
//! as `crate::supervise::engine::EngineRuntime`. It checks before starting (engine reachable,
//! image present locally, devices and volume sources present, the name free), removes
//! leftovers of an earlier run by label, creates + starts the container from a
//! [`ContainerSpec`], lists the host PIDs of every process in it, waits for it to exit
//! (cancel-safe), and stops it with a grace period and removes it, so nothing is left.
//!
//! The engine's stdout and stderr are copied, as they come, to a sink (the agent's stderr by
//! default, so journald keeps them under the agent's unit as in bare mode): a crashed
//! container is removed when the engine is restarted, and its last words must not go with it.
//!
//! When the Docker daemon stops answering (a `dockerd` restart or upgrade), a failed call says
//! so ([`DockerError::DaemonDown`], told apart from the daemon's own refusals by `/_ping`) and
//! the runtime forgets nothing: the container id is kept until a removal succeeded, a stop
//! that cannot reach the daemon kills the container's processes through its cgroup, and
//! `daemon_back` waits for the daemon. The next start then ADOPTS the container when it
//! survived (dockerd's `live-restore`) and still runs this spec (image, labels, cpuset,
//! command), else removes it and any other leftover of this instance holding the name, and
//! creates a fresh one. Its children: `daemon` (is the daemon there, may a survivor be adopted,
//! stopping processes without the daemon) and `procs` (the container's PIDs from its cgroup, the
//! `docker top` parse).
//!
//! It does not restart (the supervisor does), never pulls images (no registry is assumed
//! reachable: a missing image is a preflight error), and never shells out to the `docker` CLI.
//! Debian's docker.io 20.10 speaks API 1.41; `negotiate_version` settles on it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StartContainerOptions, StopContainerOptions, TopOptions,
    WaitContainerOptions,
};
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;

use crate::config::container::DAEMON_TIMEOUT_DEFAULT;
use crate::launch::container::{ContainerSpec, LABEL_INSTANCE, LABEL_MANAGED};
use crate::supervise::engine::{DockerError, EngineExit, EngineRuntime, RuntimeError};

mod daemon;
pub mod devices;
mod procs;

use procs::{cgroup_dirs, parse_top, read_procs, CGROUP_ROOT};

/// Where the Docker engine listens unless `DOCKER_HOST` (a `unix://` address) says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How long a leftover container gets to stop after SIGTERM before it is killed.
const LEFTOVER_GRACE: Duration = Duration::from_secs(10);

/// Per-request timeout for short API calls (inspect, create, list, top).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Per-request timeout for the long-poll `wait`; on expiry the wait is simply re-issued.
const WAIT_POLL: Duration = Duration::from_secs(3600);

/// How long `/_ping` may take before the daemon counts as not answering (a daemon still
/// starting accepts connections and answers nothing).
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// How often an unreachable daemon is asked again.
const DAEMON_POLL: Duration = Duration::from_secs(1);

/// A wait whose connection broke while the daemon still answers is re-issued; this many
/// breaks in a row are an error.
const WAIT_RETRIES: u32 = 3;

/// One line from a bollard error: the daemon's own message for server errors (it names the
/// container, image or device), the transport error otherwise.
fn reason(e: &BollardError) -> String {
    let text = match e {
        BollardError::DockerResponseServerError { status_code, message } => {
            format!("{} (HTTP {status_code})", message.trim())
        }
        other => other.to_string(),
    };
    text.replace('\n', " ")
}

fn status_of(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Docker reports a container killed by a signal as `128 + signal` (and so does the init
/// process when its child dies by one). A process can also `exit(137)` on its own; the
/// supervisor treats both as a failure, so the ambiguity does not change what it does.
fn exit_from_status(code: i64) -> EngineExit {
    if (129..=128 + 64).contains(&code) {
        EngineExit::Signal((code - 128) as i32)
    } else {
        EngineExit::Code(code)
    }
}

/// Where the engine's output goes: raw bytes, stdout and stderr interleaved as they come.
pub type LogSink = Arc<Mutex<dyn Write + Send>>;

/// How long a stopped container's last output may take to drain into the sink.
const LOG_DRAIN: Duration = Duration::from_secs(2);

/// Runs the engine as one container, created from `spec`. See the module docs.
pub struct DockerRuntime {
    spec: ContainerSpec,
    socket: Option<PathBuf>,
    docker: Option<Docker>,
    logs: Option<LogSink>,
    log_task: Option<tokio::task::JoinHandle<()>>,
    /// Id of the container this runtime created and has not removed yet.
    id: Option<String>,
    /// Host PID of the container's PID 1, as reported at start.
    main_pid: Option<i64>,
    /// A call found the daemon down since the last start: the next start may adopt the
    /// container if it survived.
    daemon_was_down: bool,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("name", &self.spec.name)
            .field("id", &self.id)
            .field("main_pid", &self.main_pid)
            .finish()
    }
}

impl DockerRuntime {
    pub fn new(spec: ContainerSpec) -> DockerRuntime {
        let stderr: LogSink = Arc::new(Mutex::new(std::io::stderr()));
        DockerRuntime {
            spec,
            socket: None,
            docker: None,
            logs: Some(stderr),
            log_task: None,
            id: None,
            main_pid: None,
            daemon_was_down: false,
        }
    }

    /// Copies the engine's output to `sink` instead of the agent's stderr; `None` leaves it
    /// only in Docker's log (`docker logs`), which goes when the container is removed.
    pub fn with_log_sink(mut self, sink: Option<LogSink>) -> DockerRuntime {
        self.logs = sink;
        self
    }

    /// Talks to the engine on this Unix socket instead of `DOCKER_HOST` / the default.
    pub fn with_socket(mut self, socket: impl Into<PathBuf>) -> DockerRuntime {
        self.socket = Some(socket.into());
        self.docker = None;
        self
    }

    pub fn spec(&self) -> &ContainerSpec {
        &self.spec
    }

    /// Id of the running (or exited, not yet removed) container.
    pub fn container_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Host PID of the container's PID 1 (the init, or the engine itself with `init = false`).
    pub fn main_pid(&self) -> Option<i64> {
        self.main_pid
    }

    /// The engine address, for messages.
    pub fn address(&self) -> String {
        match &self.socket {
            Some(p) => p.display().to_string(),
            None => std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| h.starts_with("unix://"))
                .map(|h| h.trim_start_matches("unix://").to_string())
                .unwrap_or_else(|| DEFAULT_SOCKET.to_string()),
        }
    }

    /// The client, connected and version-negotiated on first use.
    async fn client(&mut self) -> Result<Docker, RuntimeError> {
        if let Some(d) = &self.docker {
            return Ok(d.clone());
        }
        let addr = self.address();
        let unreachable = |e: BollardError| RuntimeError::DockerUnreachable {
            addr: addr.clone(),
            reason: reason(&e),
        };
        let docker = match &self.socket {
            Some(p) => Docker::connect_with_unix(
                &p.to_string_lossy(),
                REQUEST_TIMEOUT.as_secs(),
                bollard::API_DEFAULT_VERSION,
            ),
            None => Docker::connect_with_local_defaults().map(|d| d.with_timeout(REQUEST_TIMEOUT)),
        }
        .map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        tracing::debug!(addr = %addr, api = %docker.client_version(), "connected to the docker engine");
        self.docker = Some(docker.clone());
        Ok(docker)
    }

    async fn preflight_inner(&mut self) -> Result<(), RuntimeError> {
        // Settings first: a typo in a size is the cheapest thing to report.
        self.spec.create_body()?;
        let docker = self.client().await?;
        let image = self.spec.settings.image.clone();
        match docker.inspect_image(&image).await {
            Ok(_) => {}
            Err(e) if status_of(&e) == Some(404) => {
                return Err(RuntimeError::ImageMissing { image })
            }
            Err(e) => {
                return Err(DockerError::Api {
                    op: "inspect image",
                    name: image,
                    reason: reason(&e),
                }
                .into())
            }
        }
        for (entry, device) in self.spec.settings.devices.iter().zip(self.spec.devices()?) {
            if !Path::new(&device.host).exists() {
                return Err(RuntimeError::DeviceMissing {
                    path: device.host,
                    entry: entry.clone(),
                });
            }
        }
        for volume in self.spec.volumes()? {
            if let Some(path) = volume.host_path {
                if !Path::new(&path).exists() {
                    return Err(RuntimeError::VolumeMissing { path, entry: volume.bind });
                }
            }
        }
        // A container of ours under this name is a leftover (cleanup removes it); anyone
        // else's is not ours to remove.
        let name = self.spec.name.clone();
        match docker.inspect_container(&name, None::<InspectContainerOptions>).await {
            Ok(c) => {
                let ours = c
                    .config
                    .and_then(|c| c.labels)
                    .is_some_and(|l| l.get(LABEL_MANAGED).is_some_and(|v| v == "true"));
                if !ours {
                    let id = c.id.unwrap_or_default().chars().take(12).collect();
                    return Err(RuntimeError::NameTaken { name, id });
                }
            }
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => {
                return Err(
                    DockerError::Api { op: "inspect container", name, reason: reason(&e) }.into()
                )
            }
        }
        Ok(())
    }

    /// The error for a failed call: [`DockerError::DaemonDown`] when the daemon itself does not
    /// answer (nothing came back, or a 5xx, and `/_ping` fails too), else the daemon's own
    /// answer ([`DockerError::Api`]).
    async fn failed(&mut self, op: &'static str, name: &str, e: BollardError) -> RuntimeError {
        let answered = status_of(&e).is_some_and(|code| code < 500);
        let docker = self.docker.clone();
        let down = match docker {
            Some(d) if !answered => !daemon::answers(&d, PING_TIMEOUT).await,
            _ => false,
        };
        let (name, reason) = (name.to_string(), reason(&e));
        if down {
            self.daemon_was_down = true;
            DockerError::DaemonDown { addr: self.address(), op, name, reason }.into()
        } else {
            DockerError::Api { op, name, reason }.into()
        }
    }

    /// Stops (SIGTERM, `grace`, SIGKILL) and removes one container; "already stopped" and
    /// "no such container" count as done.
    async fn stop_and_remove(&mut self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        // The stop call blocks for up to the grace period; give the request room beyond it.
        let long = docker.clone().with_timeout(grace + REQUEST_TIMEOUT);
        let secs = i32::try_from(grace.as_secs_f64().ceil() as u64).unwrap_or(i32::MAX);
        let stop = StopContainerOptions { t: Some(secs), signal: None };
        match long.stop_container(id, Some(stop)).await {
            Ok(()) => {}
            // 304: already stopped; 404: already gone.
            Err(e) if matches!(status_of(&e), Some(304 | 404)) => {}
            Err(e) => return Err(self.failed("stop container", id, e).await),
        }
        let remove = RemoveContainerOptions { force: true, v: true, link: false };
        match docker.remove_container(id, Some(remove)).await {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(404) => {}
            // 409 "removal already in progress": wait for it below.
            Err(e) if status_of(&e) == Some(409) => {}
            Err(e) => return Err(self.failed("remove container", id, e).await),
        }
        // Removal is asynchronous in the daemon only for the 409 case; confirm it is gone.
        for _ in 0..100 {
            match docker.inspect_container(id, None::<InspectContainerOptions>).await {
                Err(e) if status_of(&e) == Some(404) => return Ok(()),
                Err(e) => return Err(self.failed("inspect container", id, e).await),
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Err(DockerError::Unexpected {
            name: id.to_string(),
            what: "still present 10 s after removal".into(),
        }
        .into())
    }

    async fn cleanup_inner(&mut self) -> Result<Vec<String>, RuntimeError> {
        let docker = self.client().await?;
        // Every container this agent's kind manages; those of this instance are leftovers.
        let filters =
            [("label".to_string(), vec![format!("{LABEL_MANAGED}=true")])].into_iter().collect();
        let list =
            ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let found = match docker.list_containers(Some(list)).await {
            Ok(found) => found,
            Err(e) => return Err(self.failed("list containers", &self.spec.name.clone(), e).await),
        };
        let mut removed = Vec::new();
        for c in found {
            let Some(id) = c.id else { continue };
            let short = &id[..12.min(id.len())];
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_else(|| id.clone());
            let state = c.state.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into());
            let instance = c.labels.as_ref().and_then(|l| l.get(LABEL_INSTANCE)).cloned();
            if instance.as_deref() != Some(self.spec.instance.as_str()) {
                // Another instance's engine (a sibling agent, or a renamed instance's
                // leftover): not ours to remove, but worth knowing, since it may hold GPUs.
                if state == "running" {
                    tracing::warn!(container = %name, id = %short, instance = ?instance, "another nodeagent engine container is running; left alone");
                }
                continue;
            }
            tracing::warn!(container = %name, id = %short, state = %state, "removing a leftover engine container");
            self.stop_and_remove(&id, LEFTOVER_GRACE).await?;
            removed.push(format!("container {name} ({short}, {state}) removed"));
            if self.id.as_deref() == Some(id.as_str()) {
                self.id = None;
                self.main_pid = None;
            }
        }
        Ok(removed)
    }

    /// After the daemon was down: the host PID of the container's main process when the
    /// container survived (live-restore), still runs and runs this spec; `None` when it must
    /// be replaced.
    async fn adoptable(
        &mut self,
        docker: &Docker,
        id: &str,
        body: &ContainerCreateBody,
    ) -> Result<Option<i64>, RuntimeError> {
        let c = match docker.inspect_container(id, None::<InspectContainerOptions>).await {
            Ok(c) => c,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(self.failed("inspect container", id, e).await),
        };
        let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        let pid = c.state.as_ref().and_then(|s| s.pid).filter(|p| *p > 0);
        match (running, pid, daemon::runs_spec(&c, body)) {
            (true, Some(pid), Ok(())) => Ok(Some(pid)),
            (true, _, Err(why)) => {
                tracing::warn!(container = %self.spec.name, "the container survived the daemon's restart but is not adopted: {why}");
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Removes a container of this instance that holds the name although this runtime does not
    /// know its id (a create whose answer was lost when the daemon went down); a container of
    /// anyone else under the name is refused, never removed.
    async fn free_the_name(&mut self, docker: &Docker) -> Result<(), RuntimeError> {
        let name = self.spec.name.clone();
        let c = match docker.inspect_container(&name, None::<InspectContainerOptions>).await {
            Ok(c) => c,
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(self.failed("inspect container", &name, e).await),
        };
        let id = c.id.clone().unwrap_or_default();
        let labels = c.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
        let ours = labels.get(LABEL_MANAGED).is_some_and(|v| v == "true")
            && labels.get(LABEL_INSTANCE) == Some(&self.spec.instance);
        if !ours {
            return Err(RuntimeError::NameTaken { name, id: id.chars().take(12).collect() });
        }
        tracing::warn!(container = %name, id = %&id[..12.min(id.len())], "removing a leftover engine container that holds the name");
        self.stop_and_remove(&id, Duration::ZERO).await
    }

    async fn start_inner(&mut self) -> Result<(), RuntimeError> {
        let body = self.spec.create_body()?;
        let docker = self.client().await?;
        let name = self.spec.name.clone();
        if let Some(old) = self.id.clone() {
            if std::mem::take(&mut self.daemon_was_down) {
                if let Some(pid) = self.adoptable(&docker, &old, &body).await? {
                    self.end_log_task().await;
                    self.main_pid = Some(pid);
                    self.follow_logs(&docker, &old, true);
                    tracing::info!(container = %name, id = %&old[..12.min(old.len())], pid, "adopted the running engine container after the docker daemon came back");
                    return Ok(());
                }
            }
            // A restart: the previous (exited) container still holds the name. Its id is
            // forgotten only once it is removed, so a failed removal is tried again.
            self.main_pid = None;
            self.stop_and_remove(&old, Duration::ZERO).await?;
            self.id = None;
        }
        self.daemon_was_down = false;
        self.end_log_task().await;
        self.free_the_name(&docker).await?;
        let create = CreateContainerOptions { name: Some(name.clone()), platform: String::new() };
        let id = match docker.create_container(Some(create), body).await {
            Ok(created) => {
                for w in created.warnings {
                    tracing::warn!(container = %name, "docker: {w}");
                }
                created.id
            }
            Err(e) => return Err(self.failed("create container", &name, e).await),
        };
        self.id = Some(id.clone());
        if let Err(e) = docker.start_container(&id, None::<StartContainerOptions>).await {
            let err = self.failed("start container", &name, e).await;
            // Created but not started (a device it cannot open, a group it cannot resolve):
            // remove it so that nothing is left; the id stays known until that worked.
            if self.stop_and_remove(&id, Duration::ZERO).await.is_ok() {
                self.id = None;
            }
            return Err(err);
        }
        self.follow_logs(&docker, &id, false);
        match docker.inspect_container(&id, None::<InspectContainerOptions>).await {
            Ok(inspect) => self.main_pid = inspect.state.and_then(|s| s.pid).filter(|p| *p > 0),
            Err(e) => return Err(self.failed("inspect container", &name, e).await),
        }
        tracing::info!(container = %name, id = %&id[..12.min(id.len())], pid = ?self.main_pid, "engine container started");
        Ok(())
    }

    /// Copies the container's output to the sink until the container is gone. `tail=all`
    /// from right after start: nothing printed before the copy began is lost; an adopted
    /// container's output is copied `from_now` on (what it printed before was copied already).
    fn follow_logs(&mut self, docker: &Docker, id: &str, from_now: bool) {
        let Some(sink) = self.logs.clone() else { return };
        let since = if from_now { daemon::unix_now() } else { 0 };
        let opts =
            LogsOptions { follow: true, stdout: true, stderr: true, since, ..Default::default() };
        let mut stream = docker.logs(id, Some(opts));
        let name = self.spec.name.clone();
        self.log_task = Some(tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(out) => {
                        let bytes = out.into_bytes();
                        // A poisoned lock only means another writer panicked mid-write; the
                        // bytes are still worth writing.
                        let mut w = sink.lock().unwrap_or_else(|p| p.into_inner());
                        let _ = w.write_all(&bytes);
                        let _ = w.flush();
                    }
                    Err(e) => {
                        tracing::warn!(container = %name, "docker: engine output no longer forwarded: {}", reason(&e));
                        break;
                    }
                }
            }
        }));
    }

    /// Lets the log copy drain what the exited container printed last, then ends it.
    async fn end_log_task(&mut self) {
        if let Some(mut task) = self.log_task.take() {
            if tokio::time::timeout(LOG_DRAIN, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// Host PIDs of the container's processes from its cgroup (`cgroup.procs`, found through
    /// `/proc/<main pid>/cgroup`): a few small reads, where `docker top` makes the daemon run
    /// `ps` over the whole host. `None` when the cgroup cannot be found or read (the container
    /// exited, an unusual cgroup layout): [`Self::pids_from_docker_top`] is the fallback.
    pub fn pids_from_cgroup(&self) -> Option<Vec<i32>> {
        let id = self.id.as_deref()?;
        let main = self.main_pid?;
        let table = std::fs::read_to_string(format!("/proc/{main}/cgroup")).ok()?;
        // The id check also guards against the main PID having been reused after an exit.
        cgroup_dirs(&table, id).into_iter().find_map(|rel| {
            let mut pids = Vec::new();
            read_procs(&Path::new(CGROUP_ROOT).join(rel), &mut pids).ok()?;
            pids.sort_unstable();
            pids.dedup();
            Some(pids)
        })
    }

    /// Host PIDs of the container's processes as the daemon lists them (`docker top`).
    pub async fn pids_from_docker_top(&mut self) -> Result<Vec<i32>, RuntimeError> {
        self.top_pids().await
    }

    async fn pids_inner(&mut self) -> Result<Vec<i32>, RuntimeError> {
        match self.pids_from_cgroup() {
            Some(pids) if !pids.is_empty() => Ok(pids),
            _ => self.top_pids().await,
        }
    }

    async fn top_pids(&mut self) -> Result<Vec<i32>, RuntimeError> {
        let name = self.spec.name.clone();
        let Some(id) = self.id.clone() else { return Err(DockerError::NotStarted { name }.into()) };
        let docker = self.client().await?;
        // `docker top` lists the container's cgroup members (containerd's task pids) and
        // filters the host's `ps` by them: `-e` so that processes in other sessions (setsid
        // workers) are listed too; only the pid column is asked for.
        let top = TopOptions { ps_args: "-eo pid".to_string() };
        let resp = match docker.top_processes(&id, Some(top)).await {
            Ok(r) => r,
            Err(e) if status_of(&e) == Some(404) => return Err(DockerError::Gone { name }.into()),
            // 409: not running (exited, waiting to be reaped by the supervisor): no processes.
            Err(e) if status_of(&e) == Some(409) => return Ok(Vec::new()),
            Err(e) => return Err(self.failed("list processes of", &name, e).await),
        };
        parse_top(resp.titles.unwrap_or_default(), resp.processes.unwrap_or_default())
            .map_err(|what| DockerError::Unexpected { name, what }.into())
    }

    async fn wait_inner(&mut self) -> Result<EngineExit, RuntimeError> {
        let name = self.spec.name.clone();
        let Some(id) = self.id.clone() else { return Err(DockerError::NotStarted { name }.into()) };
        let long = self.client().await?.with_timeout(WAIT_POLL);
        // Cancel-safe: the state lives in the daemon; a dropped wait drops only an HTTP
        // request, and the next call asks again ("not-running" answers at once for a
        // container that has already exited).
        let mut breaks = 0;
        loop {
            let opts = WaitContainerOptions { condition: "not-running".to_string() };
            let mut stream = long.wait_container(&id, Some(opts));
            match stream.next().await {
                Some(Ok(r)) => return Ok(exit_from_status(r.status_code)),
                // bollard reports a non-zero status as an error; it is an exit status here.
                Some(Err(BollardError::DockerContainerWaitError { code, .. })) => {
                    return Ok(exit_from_status(code))
                }
                Some(Err(BollardError::RequestTimeoutError)) => continue,
                Some(Err(e)) if status_of(&e) == Some(404) => {
                    return Err(DockerError::Gone { name }.into())
                }
                Some(Err(e)) => {
                    let answered = status_of(&e).is_some();
                    let err = self.failed("wait for", &name, e).await;
                    // The daemon answers and only the connection broke: ask again.
                    if !answered && !err.is_daemon_down() && breaks < WAIT_RETRIES {
                        breaks += 1;
                        continue;
                    }
                    return Err(err);
                }
                None => {
                    return Err(DockerError::Unexpected {
                        name,
                        what: "wait ended without an exit status".into(),
                    }
                    .into())
                }
            }
        }
    }

    async fn stop_inner(&mut self, grace: Duration) -> Result<(), RuntimeError> {
        let Some(id) = self.id.clone() else { return Ok(()) };
        if let Err(e) = self.stop_and_remove(&id, grace).await {
            // Asked to stop: never adopt it later.
            self.daemon_was_down = false;
            if e.is_daemon_down() {
                // The daemon cannot stop it: stop its processes through the container's
                // cgroup, so nothing of the engine runs on. The id is kept: the container
                // is removed once the daemon is back (next start, or the next agent's
                // leftover cleanup).
                if let Some(pids) = self.pids_from_cgroup() {
                    tracing::warn!(container = %self.spec.name, pids = ?pids, "the docker daemon does not answer: stopping the container's processes directly");
                    daemon::kill_all(&pids, grace).await;
                }
            }
            return Err(e);
        }
        self.end_log_task().await;
        tracing::info!(container = %self.spec.name, "engine container stopped and removed");
        self.id = None;
        self.main_pid = None;
        Ok(())
    }

    async fn daemon_back_inner(&mut self) -> Result<(), RuntimeError> {
        loop {
            // A fresh client each time: connections to the old daemon are dead, and a daemon
            // still starting may accept a connection and answer nothing for a while.
            self.docker = None;
            if let Ok(Ok(docker)) = tokio::time::timeout(PING_TIMEOUT, self.client()).await {
                if daemon::answers(&docker, PING_TIMEOUT).await {
                    tracing::info!(addr = %self.address(), "the docker daemon answers again");
                    return Ok(());
                }
            }
            tokio::time::sleep(DAEMON_POLL).await;
        }
    }
}

impl EngineRuntime for DockerRuntime {
    fn describe(&self) -> String {
        format!("container {}", self.spec.name)
    }

    fn preflight(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move { self.preflight_inner().await })
    }

    fn cleanup_leftovers(&mut self) -> BoxFuture<'_, Result<Vec<String>, RuntimeError>> {
        Box::pin(async move { self.cleanup_inner().await })
    }

    fn start(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move { self.start_inner().await })
    }

    fn pids(&mut self) -> BoxFuture<'_, Result<Vec<i32>, RuntimeError>> {
        Box::pin(async move { self.pids_inner().await })
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<EngineExit, RuntimeError>> {
        Box::pin(async move { self.wait_inner().await })
    }

    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move { self.stop_inner(grace).await })
    }

    fn daemon_back(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async move { self.daemon_back_inner().await })
    }

    fn daemon_timeout(&self) -> Duration {
        self.spec.settings.daemon_timeout.unwrap_or(DAEMON_TIMEOUT_DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_map_signals_the_docker_way() {
        assert_eq!(exit_from_status(0), EngineExit::Code(0));
        assert_eq!(exit_from_status(3), EngineExit::Code(3));
        assert_eq!(exit_from_status(128), EngineExit::Code(128));
        assert_eq!(exit_from_status(137), EngineExit::Signal(9));
        assert_eq!(exit_from_status(143), EngineExit::Signal(15));
        assert_eq!(exit_from_status(255), EngineExit::Code(255));
    }

    #[test]
    fn preflight_errors_say_docker_and_what() {
        let e = RuntimeError::ImageMissing { image: "img:1".into() };
        assert!(e.is_preflight());
        assert!(
            e.to_string().starts_with("preflight: docker: image img:1 not found locally"),
            "{e}"
        );
        let e = RuntimeError::from(DockerError::Gone { name: "nodeagent-0".into() });
        assert!(!e.is_preflight());
        assert_eq!(
            e.to_string(),
            "docker: container nodeagent-0 was removed behind nodeagent's back"
        );
    }
}
