//! Where host facts and plans come from, for every command that reads them (`probe`, `plan`,
//! `serve` with `binding.auto`, `compare`'s `auto`, `demo`): the CLI's `SourceArgs` turned into
//! `host::SourceOptions`, then gather and build the topology model; the CLI's `PlanArgs` turned
//! into a `PlanRequest`, and planning errors told in the words of the command line (the flag
//! that carries each value, `--tp 3: ...`): the planner itself names no flag.
//!
//! It does not print or save a snapshot; the handlers do.

use crate::cli::{GpuToolArg, PlanArgs, SourceArgs};
use crate::exit::{CmdError, ResultExt};
use crate::host::facts::Vendor;
use crate::host::runner::SystemRunner;
use crate::host::{self, HostFacts, SourceOptions};
use crate::plan::{self, Plan, PlanError, PlanRequest, Split};
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

/// The vendor whose GPU tool `--gpu-tool`/`--tool` names (`auto`: whichever is found).
pub fn gpu_vendor(arg: GpuToolArg) -> Option<Vendor> {
    match arg {
        GpuToolArg::Auto => None,
        GpuToolArg::Metax => Some(Vendor::Metax),
        GpuToolArg::Nvidia => Some(Vendor::Nvidia),
    }
}

/// Gathers facts (live or from `--from`) and builds the model; every failure here is bad
/// input (exit 2).
pub fn load(args: &SourceArgs) -> Result<(HostFacts, Topology), CmdError> {
    let facts = host::gather(&options(args), &SystemRunner).bad_input()?;
    let topo = topology::build(&facts);
    Ok((facts, topo))
}

/// Domain form of the plan arguments.
pub fn request(args: &PlanArgs) -> PlanRequest {
    PlanRequest {
        gpus: (!args.gpus.is_empty()).then(|| args.gpus.clone()),
        split: match (args.instances, args.tp) {
            (Some(n), _) => Split::Instances(n),
            (None, Some(tp)) => Split::Tp(tp),
            (None, None) => Split::One,
        },
        host_memory_gb: args.host_memory_gb,
        share_cores: args.share_cores,
        reserve_cpus: args.reserve_cpus.unwrap_or(0),
    }
}

/// A [`PlanError`] told in the flags of `nodeagent plan` (and of the commands that take the
/// same flags).
#[derive(Debug, thiserror::Error)]
#[error("{}", flag_words(.error))]
pub struct PlanFlagError {
    pub error: PlanError,
}

impl From<PlanError> for PlanFlagError {
    fn from(error: PlanError) -> Self {
        Self { error }
    }
}

/// The message of `error` with the flag that carries each value: `--tp 3: ...`,
/// `--gpus: ...`, `--gpu-pci BUS: ...`.
pub fn flag_words(error: &PlanError) -> String {
    match error {
        PlanError::NoGpus { .. } => format!("{error}; name them with --gpu-pci BUS_ID"),
        PlanError::GpuPciNotFound { bus_id, problem } => format!("--gpu-pci {bus_id}: {problem}"),
        PlanError::UnknownGpu { .. } | PlanError::DuplicateGpu { .. } => {
            format!("--gpus: {error}")
        }
        PlanError::ZeroInstances => "--instances 0: must be at least 1".into(),
        PlanError::ZeroTp => "--tp 0: must be at least 1".into(),
        PlanError::Uneven { .. } => error.to_string(),
        PlanError::UnevenTp { count, tp } => {
            format!("--tp {tp}: {count} GPUs cannot be split into instances of {tp}")
        }
        PlanError::BadMemory { value } => {
            format!("--host-memory-gb {value}: must be a positive number")
        }
        PlanError::ReserveLeavesNoCpu { count, .. } => format!("--reserve-cpus {count}: {error}"),
    }
}

/// The plan that `args` asks for on `topo`, its errors in flag words.
pub fn plan_for(args: &PlanArgs, topo: &Topology) -> Result<Plan, PlanFlagError> {
    Ok(plan::plan(topo, &request(args))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words users saw before the planner stopped naming flags (tests/plan.rs pins some
    /// end to end; this pins every one).
    #[test]
    fn flag_words_are_the_command_lines() {
        let cases = [
            (
                PlanError::NoGpus { sources: "none".into() },
                "no GPUs found on this host (sources: none); name them with --gpu-pci BUS_ID",
            ),
            (
                PlanError::GpuPciNotFound {
                    bus_id: "0000:99:00.0".into(),
                    problem: "no such PCI device in sysfs/bus/pci/devices".into(),
                },
                "--gpu-pci 0000:99:00.0: no such PCI device in sysfs/bus/pci/devices",
            ),
            (
                PlanError::UnknownGpu { index: 9, known: "0,1,2,3".into() },
                "--gpus: there is no GPU 9 (GPUs: 0,1,2,3)",
            ),
            (PlanError::DuplicateGpu { index: 0 }, "--gpus: GPU 0 is listed twice"),
            (PlanError::ZeroInstances, "--instances 0: must be at least 1"),
            (PlanError::ZeroTp, "--tp 0: must be at least 1"),
            (
                PlanError::Uneven { count: 3, instances: 2 },
                "3 GPUs cannot be split into 2 equal instances",
            ),
            (
                PlanError::UnevenTp { count: 4, tp: 3 },
                "--tp 3: 4 GPUs cannot be split into instances of 3",
            ),
            (
                PlanError::BadMemory { value: -1.0 },
                "--host-memory-gb -1: must be a positive number",
            ),
            (
                PlanError::ReserveLeavesNoCpu { count: 8, gpus: "0".into(), cpus: "0-7".into() },
                "--reserve-cpus 8: a reserve of 8 CPU(s) per NUMA node leaves the instance of GPUs 0 no CPU (its CPUs 0-7 are all reserved)",
            ),
        ];
        for (error, words) in cases {
            assert_eq!(PlanFlagError::from(error).to_string(), words);
        }
    }
}
