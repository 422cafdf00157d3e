//! Launch specs: plan + profile -> exactly what to run (argv, environment, binding, container
//! request). Pure data with no effects: `spec` (the argv, env and binding of one engine) and
//! `container` (the Docker API request a [`spec::LaunchSpec`] becomes in container mode).
//! Everything that runs it (process trees, the native binding between fork and exec, Docker)
//! lives in `crate::supervise`; this module imports nothing from there.

pub mod container;
pub mod spec;
