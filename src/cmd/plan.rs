//! `nodeagent plan`: load host facts and the model (`cmd::source`), plan each serving
//! instance's binding and print it (text mirroring the seed's by-hand steps, or the JSON
//! contract). Planning errors are told here in the words of the command line: the flag that
//! carries each value (`--tp 3: ...`); the planner itself names no flag.

use std::io::Write;

use crate::cli::PlanArgs;
use crate::exit::{CmdError, ResultExt};
use crate::plan::{self, Plan, PlanError, PlanRequest, Split};
use crate::topology::Topology;

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
    }
}

/// The plan that `args` asks for on `topo`, its errors in flag words.
pub fn plan_for(args: &PlanArgs, topo: &Topology) -> Result<Plan, PlanFlagError> {
    Ok(plan::plan(topo, &request(args))?)
}

pub fn run(args: &PlanArgs) -> Result<(), CmdError> {
    let (_, topo) = super::source::load(&args.source)?;
    let plan = plan_for(args, &topo).bad_input()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &plan).failed()?;
        writeln!(out).failed()?;
    } else {
        write!(out, "{}", render(&plan)).failed()?;
    }
    Ok(())
}

/// The text form: one block per instance, as the seed worked it out by hand.
pub fn render(plan: &Plan) -> String {
    let mut s = String::new();
    let n = plan.instances.len();
    for (i, inst) in plan.instances.iter().enumerate() {
        let gpus = inst.gpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        s.push_str(&format!(
            "instance {} of {n}: GPUs {gpus} (tensor parallel {})\n",
            i + 1,
            inst.gpus.len()
        ));
        let nodes = if inst.numa_nodes.is_empty() {
            "unknown".into()
        } else {
            inst.numa_nodes.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        };
        s.push_str(&format!("  GPU NUMA node(s): {nodes}\n"));
        match (&inst.numactl, &inst.numactl_short) {
            (Some(long), Some(short)) => {
                s.push_str(&format!("  numactl:          {long}\n"));
                s.push_str(&format!("  short form:       {short}\n"));
                s.push_str(&format!("  container:        {}\n", inst.docker_args.join(" ")));
                s.push_str(&format!("  CPUs:             {}\n", inst.cpus.to_list()));
            }
            _ => s.push_str("  numactl:          none recommended (run unbound)\n"),
        }
        s.push_str("  why:\n");
        for r in &inst.reasons {
            s.push_str(&format!("    - {r}\n"));
        }
        s.push('\n');
    }
    if !plan.warnings.is_empty() {
        s.push_str("warnings:\n");
        for w in &plan.warnings {
            s.push_str(&format!("  - {w}\n"));
        }
    }
    s
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
        ];
        for (error, words) in cases {
            assert_eq!(PlanFlagError::from(error).to_string(), words);
        }
    }
}
