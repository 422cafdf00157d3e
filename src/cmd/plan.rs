//! `nodeagent plan`: load host facts and the model, plan each serving instance's binding
//! (`cmd::source`, where planning errors are told in the flags' words) and print it (text
//! mirroring the seed's by-hand steps, or the JSON contract).

use std::io::Write;

use crate::cli::PlanArgs;
use crate::exit::{CmdError, ResultExt};
use crate::plan::Plan;

pub fn run(args: &PlanArgs) -> Result<(), CmdError> {
    let (_, topo) = super::source::load(&args.source)?;
    let plan = super::source::plan_for(args, &topo).bad_input()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &plan).failed()?;
        writeln!(out).failed()?;
    } else {
        write!(out, "{}", render(&plan)).failed()?;
    }
    binding_warnings(args, &topo, &plan);
    Ok(())
}

/// The host settings that concern this binding (`nodeagent doctor`'s warn and fail checks),
/// on stderr, one line each; a setting that cannot be read is itself one such line.
fn binding_warnings(args: &PlanArgs, topo: &crate::topology::Topology, plan: &Plan) {
    use crate::doctor;
    let src = &args.source;
    let (sys, proc) =
        doctor::read::roots(src.from.as_deref(), &src.sysfs_root, std::path::Path::new("/proc"));
    let mut scope = doctor::scope(topo, Some(plan), args.host_memory_gb);
    scope.engine_note = "plan asks no agent".into();
    let buses: Vec<String> = scope.gpus.iter().filter_map(|g| g.bus_id.clone()).collect();
    match doctor::read(&sys, &proc, &buses) {
        Ok(settings) => {
            for line in doctor::binding_warnings(&doctor::run(&settings, &scope)) {
                eprintln!("warning: {line}");
            }
        }
        Err(e) => eprintln!("warning: doctor: host settings not read: {e}"),
    }
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
