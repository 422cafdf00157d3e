//! The supervisor: spawn the engine (a process tree or a container), check its binding, wait for
//! readiness, watch liveness, restart with backoff, stop cleanly, talk to systemd.
pub mod runtime;
