//! Where host facts come from, for every command that reads them (`probe`, `plan`, `serve`
//! with `binding.auto`, `compare`'s `auto`, `demo`): the CLI's `SourceArgs` turned into
//! `host::SourceOptions`, then gather and build the topology model.
//!
//! It does not print, plan or save a snapshot; the handlers do.

use crate::cli::SourceArgs;
use crate::exit::{CmdError, ResultExt};
use crate::host::runner::SystemRunner;
use crate::host::{self, HostFacts, SourceOptions};
use crate::topology::{self, Topology};

/// Domain form of the source arguments.
pub fn options(args: &SourceArgs) -> SourceOptions {
    SourceOptions {
        from: args.from.clone(),
        mx_smi: args.mx_smi.clone(),
        nvidia_smi: args.nvidia_smi.clone(),
        rocm_smi: args.rocm_smi.clone(),
        numactl: args.numactl.clone(),
        sysfs_root: args.sysfs_root.clone(),
        timeout: args.tool_timeout,
        gpu_pci: args.gpu_pci.clone(),
        hwloc: !args.no_hwloc,
        ..SourceOptions::default()
    }
}

/// Gathers facts (live or from `--from`) and builds the model; every failure here is bad
/// input (exit 2).
pub fn load(args: &SourceArgs) -> Result<(HostFacts, Topology), CmdError> {
    let facts = host::gather(&options(args), &SystemRunner).bad_input()?;
    let topo = topology::build(&facts);
    Ok((facts, topo))
}
