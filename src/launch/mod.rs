//! Launch specs: plan + profile -> exactly what to run (argv, environment, binding, container
//! settings). Pure data here; `launch::docker` and `crate::supervise` perform the effects.

pub mod container;
pub mod docker;
