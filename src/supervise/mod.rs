//! The supervisor: spawn the engine (a process tree or a container), check its binding, wait for
//! readiness, watch liveness, restart with backoff, stop cleanly, talk to systemd.
//!
//! `runtime` is the seam (process tree here in `process`, containers in `crate::launch::docker`);
//! `supervisor` is the state machine; `procs` reads `/proc`; `health` asks the engine over HTTP;
//! `notify` talks to systemd; `status` is what `nodeagent status` reads over the state dir's
//! Unix socket.
pub mod health;
pub mod notify;
pub mod process;
pub mod procs;
pub mod progress;
pub mod runtime;
pub mod status;
pub mod supervisor;
