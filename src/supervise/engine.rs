//! The seam between the supervisor and the ways an engine can run: a local process tree (bare
//! with the binding applied natively, or under `numactl`; `super::process`) or a container
//! (`super::docker`). The supervisor only ever talks to `dyn EngineRuntime`, so its state
//! machine is the same for both, and tests can drive it with either (or with a fake).
//!
//! [`RuntimeError`] is the seam's one error type, with a variant per thing a caller may want
//! to tell apart (a busy port, a missing image, an unreachable Docker engine, a failed spawn).
//! Every message is the whole story on one line, the text of its source included, so print a
//! `RuntimeError` with `{}` rather than as a chain; the source is still there for callers that
//! inspect it. [`RuntimeError::is_preflight`] says whether nothing was started and the fix lies
//! in the host or the config (exit 2 in `serve`).
//!
//! Not here: choosing a runtime (`super::runtime::runtime_for`).

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::container::ContainerError;
use crate::host::cpuset::CpuSet;
use crate::supervise::cgroup::{CgroupError, Usage};
use crate::supervise::native::NativeError;
use crate::supervise::occupancy::OccupancyError;
use crate::supervise::statedir::StateDirError;

/// `from + d`, saturating at a far future instead of panicking on overflow: deadlines in the
/// supervisor and the runtimes. The config's bounds keep every duration within a year; this is
/// the second line of defence.
pub fn deadline_after(from: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    let far = Duration::from_secs(30 * 365 * 24 * 3600);
    from.checked_add(d).or_else(|| from.checked_add(far)).unwrap_or(from)
}

/// How an engine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineExit {
    /// Exited with this status code (a crash can end with 0: the supervisor treats any exit it
    /// did not ask for as a failure).
    Code(i64),
    /// Killed by this signal.
    Signal(i32),
}

/// The process holding a port, as `/proc` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortHolder {
    pub pid: i32,
    pub comm: String,
}

/// " by pid 41 (python3)", or nothing when the holder is unknown.
fn held_by(holder: &Option<PortHolder>) -> String {
    holder.as_ref().map(|h| format!(" by pid {} ({})", h.pid, h.comm)).unwrap_or_default()
}

/// A Docker Engine API call that failed while the engine ran (the container runtime's
/// preflight failures have variants of their own in [`RuntimeError`]).
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("{op} {name}: {reason}")]
    Api { op: &'static str, name: String, reason: String },
    #[error("container {name} was removed behind nodeagent's back")]
    Gone { name: String },
    #[error("container {name}: {what}")]
    Unexpected { name: String, what: String },
    #[error("container {name} is not started")]
    NotStarted { name: String },
    /// The daemon does not answer (socket missing, connection refused, a 5xx while it
    /// restarts and `/_ping` fails too): the supervisor waits for it (`daemon_timeout`)
    /// instead of counting an engine failure.
    #[error("the docker daemon at {addr} does not answer ({op} {name}: {reason})")]
    DaemonDown { addr: String, op: &'static str, name: String, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    // Preflight: something that makes starting pointless; nothing was started.
    #[error("preflight: engine program `{program}` not found (PATH or path)")]
    ProgramNotFound { program: String },
    #[error("preflight: model path {} does not exist", path.display())]
    ModelPathMissing { path: PathBuf },
    #[error("preflight: binding cpus {cpus} are not all online (online: {online})")]
    CpusOffline { cpus: CpuSet, online: CpuSet },
    #[error("preflight: binding memory node {node} does not exist ({})", dir.display())]
    NodeMissing { node: u32, dir: PathBuf },
    /// A memoryless node (numactl issue 165): the kernel refuses a policy that names only it.
    #[error(
        "preflight: binding memory node {node} has no memory ({}: {with_memory}); bind memory \
         to the nearest node with memory, as `nodeagent plan` does",
        file.display()
    )]
    NodeWithoutMemory { node: u32, file: PathBuf, with_memory: CpuSet },
    #[error("preflight: port {port} is already in use{}", held_by(holder))]
    PortBusy { port: u16, holder: Option<PortHolder> },
    #[error("preflight: cannot check port {port}: {source}")]
    PortCheck {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("preflight: binding: {source}")]
    Binding {
        #[from]
        source: NativeError,
    },
    #[error("preflight: engine log {}: {source}", path.display())]
    EngineLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating state dir {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The state dir is unsafe (a symlink, another user's, writable by others) or a file in
    /// it cannot be made; the message names the path.
    #[error("{source}")]
    UnsafeStateDir {
        #[from]
        source: StateDirError,
    },
    #[error(
        "preflight: docker: cannot reach the engine at {addr}: {reason} (is dockerd running? \
         `systemctl start docker`)"
    )]
    DockerUnreachable { addr: String, reason: String },
    #[error(
        "preflight: docker: image {image} not found locally; nodeagent never pulls (no registry \
         is assumed reachable): `docker load` or `docker pull` it first"
    )]
    ImageMissing { image: String },
    #[error(
        "preflight: docker: device {path} does not exist on this host (container.devices entry \
         {entry:?})"
    )]
    DeviceMissing { path: String, entry: String },
    #[error(
        "preflight: docker: volume source {path} does not exist on this host (container.volumes \
         entry {entry:?})"
    )]
    VolumeMissing { path: String, entry: String },
    #[error(
        "preflight: docker: a container named {name} ({id}) exists and is not managed by \
         nodeagent: remove or rename it"
    )]
    NameTaken { name: String, id: String },
    /// The instance's GPUs are held by another process (`super::occupancy`).
    #[error("preflight: {source}")]
    Occupancy {
        #[from]
        source: OccupancyError,
    },
    #[error("preflight: docker: {source}")]
    ContainerSettings {
        #[from]
        source: ContainerError,
    },

    // While running: the engine was (or may have been) started.
    #[error("starting `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("engine exited before its pid was read")]
    NoPid,
    #[error("waiting for the engine: {source}")]
    Wait {
        #[source]
        source: std::io::Error,
    },
    #[error("reading pid file {}: {source}", path.display())]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("leftover engine processes survive SIGKILL: {pids:?}")]
    LeftoversSurvive { pids: Vec<i32> },
    #[error("engine processes left after stop: {pids:?}")]
    ProcessesLeft { pids: Vec<i32> },
    #[error("engine cgroup: {source}")]
    Cgroup {
        #[source]
        source: CgroupError,
    },
    #[error("prctl(PR_SET_CHILD_SUBREAPER): {source}")]
    Subreaper {
        #[source]
        source: nix::Error,
    },
    /// A Docker Engine API call failed, or the container went away.
    #[error("docker: {source}")]
    Docker {
        #[from]
        source: DockerError,
    },
}

impl RuntimeError {
    /// The runtime's daemon (Docker) is unreachable: wait for it, do not count a failure.
    pub fn is_daemon_down(&self) -> bool {
        matches!(self, RuntimeError::Docker { source: DockerError::DaemonDown { .. } })
    }

    /// Nothing was started: the host or the config must change before a retry can work.
    pub fn is_preflight(&self) -> bool {
        use RuntimeError as E;
        matches!(
            self,
            E::ProgramNotFound { .. }
                | E::ModelPathMissing { .. }
                | E::CpusOffline { .. }
                | E::NodeMissing { .. }
                | E::NodeWithoutMemory { .. }
                | E::PortBusy { .. }
                | E::PortCheck { .. }
                | E::Binding { .. }
                | E::EngineLog { .. }
                | E::StateDir { .. }
                | E::UnsafeStateDir { .. }
                | E::DockerUnreachable { .. }
                | E::ImageMissing { .. }
                | E::DeviceMissing { .. }
                | E::VolumeMissing { .. }
                | E::NameTaken { .. }
                | E::ContainerSettings { .. }
                | E::Occupancy { .. }
        )
    }
}

/// One way of running the engine. Methods take `&mut self`; `wait` must be cancel-safe (the
/// supervisor drops it when another event wins a `select!`).
pub trait EngineRuntime: Send {
    /// What this runtime is, for logs and status (`process`, `container nodeagent-engine-0`).
    fn describe(&self) -> String;
    /// Checks what can be checked before starting; starts nothing.
    fn preflight(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>>;
    /// Removes leftovers of an earlier run of this agent (containers found by label, process
    /// trees found by pid file or marker); returns a description of each thing removed.
    fn cleanup_leftovers(&mut self) -> BoxFuture<'_, Result<Vec<String>, RuntimeError>>;
    /// Starts the engine; returns once its main process exists (not when it is ready).
    fn start(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>>;
    /// Host PIDs of every process that belongs to the running engine now (descendants that left
    /// the process group, like Ray workers, included).
    fn pids(&mut self) -> BoxFuture<'_, Result<Vec<i32>, RuntimeError>>;
    /// Resolves when the engine has exited.
    fn wait(&mut self) -> BoxFuture<'_, Result<EngineExit, RuntimeError>>;
    /// SIGTERM, up to `grace`, then SIGKILL; returns once nothing of the engine is left.
    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, Result<(), RuntimeError>>;
    /// After an error for which [`RuntimeError::is_daemon_down`] holds: resolves once the
    /// daemon answers again (the caller bounds it with [`Self::daemon_timeout`]); the next
    /// `start` then adopts the engine if it survived, or starts a fresh one. Runtimes without
    /// a daemon (process trees) never report one down: at once.
    fn daemon_back(&mut self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async { Ok(()) })
    }
    /// How long to wait for an unreachable daemon before giving up (`container.daemon_timeout`).
    fn daemon_timeout(&self) -> Duration {
        Duration::ZERO
    }
    /// How the engine's processes are tracked, for `status`: `cgroup-v2 PATH`, `cgroup-v1
    /// PATH` or `proc-walk` (process runtimes); `None` when the runtime does not say.
    fn containment(&self) -> Option<String> {
        None
    }
    /// The engine's memory and CPU use as its cgroup counts them; unknown by default.
    fn usage(&mut self) -> Usage {
        Usage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_errors_are_told_apart_and_stay_on_one_line() {
        let busy = RuntimeError::PortBusy {
            port: 8000,
            holder: Some(PortHolder { pid: 41, comm: "python3".into() }),
        };
        assert!(busy.is_preflight());
        assert_eq!(busy.to_string(), "preflight: port 8000 is already in use by pid 41 (python3)");
        let unknown = RuntimeError::PortBusy { port: 8000, holder: None };
        assert_eq!(unknown.to_string(), "preflight: port 8000 is already in use");
        let spawn = RuntimeError::Spawn {
            program: "vllm".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert!(!spawn.is_preflight());
        assert!(spawn.to_string().starts_with("starting `vllm`: "), "{spawn}");
        assert!(std::error::Error::source(&spawn).is_some());
        let gone = RuntimeError::from(DockerError::Gone { name: "nodeagent-0".into() });
        assert!(!gone.is_preflight());
        for e in [busy, unknown, spawn, gone] {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn deadlines_saturate_instead_of_overflowing() {
        let now = tokio::time::Instant::now();
        assert_eq!(deadline_after(now, Duration::from_secs(1)), now + Duration::from_secs(1));
        assert!(deadline_after(now, Duration::MAX) > now + Duration::from_secs(365 * 24 * 3600));
    }
}
