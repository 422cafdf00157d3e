//! The supervisor and every effect on the engine: spawn it (a process tree or a container),
//! check its binding, wait for readiness, watch liveness, restart with backoff, stop cleanly,
//! talk to systemd.
//!
//! `engine` is the seam (`EngineRuntime`, its typed errors); `runtime` chooses the runtime for a
//! launch spec; `process` runs a process tree (with `native` applying the binding between fork
//! and exec, and `cgroup` containing it in a cgroup of its own) and `docker` a container;
//! `supervisor` is the state machine (on tokio's clock, so its tests run on paused time) and
//! `restart` its restart decision; `procs` reads `/proc`; `health` asks the engine over HTTP;
//! `progress` reads its token counters; `notify` talks to systemd; `status` is what
//! `nodeagent status` reads over the state dir's Unix socket.
//! `statedir` opens and checks the state dir and makes every file in it without following a
//! symlink; `pidfile` says which processes a pid file may name as leftovers (a hint, never an
//! order); `occupancy` is the GPU-occupancy preflight (who holds the instance's GPUs:
//! orphans of a manual run, foreign processes); `guard` stops the engine tree synchronously when `serve` panics; `ray` runs a node's
//! multi-node Ray role (`serve --role`) as the engine.
//!
//! Imports run one way: `crate::launch` (pure specs) and `crate::config` below, `crate::monitor`
//! above (it reads the status record; nothing here names the monitor).
pub mod canary;
pub mod cgroup;
pub mod docker;
pub mod engine;
pub mod guard;
pub mod health;
pub mod interconnect;
pub mod native;
pub mod notify;
pub mod occupancy;
pub mod pidfile;
pub mod placement;
pub mod process;
pub mod procs;
pub mod progress;
pub mod ranks;
pub mod ray;
pub mod restart;
pub mod runtime;
pub mod statedir;
pub mod status;
pub mod supervisor;
pub mod threads;
