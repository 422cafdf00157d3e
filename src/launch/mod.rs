//! Launch specs: plan + profile -> exactly what to run (argv, environment, binding, container
//! settings). Pure data here (`spec`, `container`), plus `native`, the one piece that runs in
//! the engine's child before exec; `launch::docker` and `crate::supervise` perform the effects.

pub mod container;
pub mod docker;
pub mod native;
pub mod spec;
