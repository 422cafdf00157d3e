//! Host facts: one parser per source (pure functions over text), the runners that execute the
//! tools with a timeout, and host snapshots (`probe --save` / `--from`).

pub mod cpuset;
pub mod facts;
pub mod gputopo;
pub mod hwloc;
pub mod mxsmi;
pub mod numactl;
pub mod nvsmi;
pub mod rocmsmi;
pub mod runner;
pub mod snapshot;
pub mod sysfs;
pub mod text;
