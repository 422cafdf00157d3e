//! The seam between the supervisor and the ways an engine can run: a local process tree
//! (bare or under `numactl`; `crate::supervise`) or a container (`crate::launch::docker`).
//! The supervisor only ever talks to `dyn EngineRuntime`, so its state machine is the same
//! for both, and tests can drive it with either.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How an engine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineExit {
    /// Exited with this status code (a crash can end with 0: the supervisor treats any exit it
    /// did not ask for as a failure).
    Code(i64),
    /// Killed by this signal.
    Signal(i32),
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Something that makes starting pointless (missing device, image, model path, busy port);
    /// nothing was started.
    #[error("preflight: {0}")]
    Preflight(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("docker: {0}")]
    Docker(String),
    #[error("{0}")]
    Other(String),
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
}
