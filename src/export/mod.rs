//! What the agent hands the engines users scale out with, written from the host model (and,
//! where it matters, the plan or a measured comparison): Slurm's `gres.conf` lines
//! ([`slurm`]) and a Node Feature Discovery local feature file for Kubernetes ([`nfd`]).
//!
//! Pure text from typed facts: no probing, no files read. Where a fact comes from the running
//! machine (a GPU's device node), the caller finds it and passes it in ([`DeviceNodes`]).

pub mod nfd;
pub mod slurm;

use std::collections::BTreeMap;

/// The device file of each GPU (by GPU index), as the caller found it: `/dev/nvidia3`,
/// `/dev/dri/renderD129`. A GPU missing here gets a commented line saying what to fill in.
pub type DeviceNodes = BTreeMap<u32, String>;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{what}: no GPU in the host model ({source_desc}); nothing to write")]
    NoGpus { what: &'static str, source_desc: String },
    #[error("slurm-gres needs the core topology (hwloc's cores, for Slurm's core indexes) and {source_desc} has none: run it on the host itself, or probe --save there (it records hwloc.xml) and use that snapshot; OS CPU numbers are not Slurm core indexes, so none are printed")]
    NoCores { source_desc: String },
    #[error("{file}: not a compare summary: {reason}")]
    BadCompare { file: String, reason: String },
}
