//! `nodeagent plan`: load host facts and the model, plan each serving instance's binding
//! (`cmd::source`, where planning errors are told in the flags' words) and print it (text
//! mirroring the seed's by-hand steps, the JSON contract, or for the engines users scale out
//! with: Slurm's `gres.conf` and a Node Feature Discovery feature file, see `crate::export`).
//! On the live host it finds each GPU's device node (`host::drm`: the NVIDIA driver, sysfs); a
//! snapshot has only what hwloc recorded.

use std::io::Write;
use std::path::Path;

use crate::cli::{PlanArgs, PlanFormat};
use crate::exit::{CmdError, ResultExt};
use crate::export::{self, DeviceNodes};
use crate::host::HostFacts;
use crate::plan::Plan;
use crate::topology::Topology;

pub fn run(args: &PlanArgs) -> Result<(), CmdError> {
    let (facts, topo) = super::source::load(&args.source)?;
    let plan = super::source::plan_for(args, &topo).bad_input()?;
    let format = args.format.unwrap_or(if args.json { PlanFormat::Json } else { PlanFormat::Text });
    let source_desc = match &args.source.from {
        Some(dir) => format!("snapshot {}", dir.display()),
        None => "this host".to_string(),
    };
    let text = match format {
        PlanFormat::Json => {
            let mut t = serde_json::to_string_pretty(&plan).failed()?;
            t.push('\n');
            t
        }
        PlanFormat::Text => render(&plan),
        PlanFormat::SlurmGres => {
            let cores = facts.hwloc.as_ref().map(|h| h.cores.as_slice()).unwrap_or_default();
            let mut devices = device_nodes(&facts, &topo, args.source.from.is_none());
            for given in &args.gres_files {
                let (index, path) = given
                    .split_once('=')
                    .and_then(|(i, p)| Some((i.trim().parse::<u32>().ok()?, p.trim())))
                    .filter(|(_, p)| p.starts_with('/'))
                    .ok_or_else(|| {
                        CmdError::bad_input(anyhow::anyhow!(
                            "--gres-file {given:?}: expected INDEX=/absolute/path, e.g. 3=/dev/nvidia3"
                        ))
                    })?;
                if topo.gpu(index).is_none() {
                    return Err(CmdError::bad_input(anyhow::anyhow!(
                        "--gres-file {given:?}: the host has no GPU {index} (GPUs: {})",
                        topo.gpus.iter().map(|g| g.index.to_string()).collect::<Vec<_>>().join(",")
                    )));
                }
                devices.insert(index, path.to_string());
            }
            export::slurm::gres_conf(&topo, cores, &devices, &source_desc).bad_input()?
        }
        PlanFormat::Nfd => {
            let gain = match &args.compare_result {
                Some(file) => {
                    // A regular file only: a fifo or a device is refused, not read forever.
                    let limit = crate::host::snapshot::MAX_SMALL_FILE;
                    let text =
                        crate::host::snapshot::read_input_text(file, limit).map_err(|e| {
                            CmdError::bad_input(anyhow::anyhow!(
                                "{}: cannot read: {e}",
                                file.display()
                            ))
                        })?;
                    Some(
                        export::nfd::gain_from_compare(&text, &file.display().to_string())
                            .bad_input()?,
                    )
                }
                None => None,
            };
            export::nfd::feature_file(&topo, &plan, gain.as_ref(), &source_desc).bad_input()?
        }
    };
    let mut out = std::io::stdout().lock();
    write!(out, "{text}").failed()?;
    binding_warnings(args, &topo, &plan);
    Ok(())
}

/// Each GPU's device node: what hwloc recorded (DRM `renderD*`/`card*`), and on the live host
/// the NVIDIA driver's minor number or the sysfs `drm/` directory of the GPU's PCI device
/// (`host::drm`, as container mode finds them).
fn device_nodes(facts: &HostFacts, topo: &Topology, live: bool) -> DeviceNodes {
    let pci = facts.hwloc.as_ref().map(|h| h.pci_devices.as_slice()).unwrap_or_default();
    let mut nodes = export::slurm::drm_nodes_from_hwloc(topo, pci);
    if !live {
        return nodes;
    }
    for gpu in &topo.gpus {
        let Some(bus) = &gpu.bus_id else { continue };
        let found = crate::host::drm::gpu_nodes(
            Path::new("/sys"),
            Path::new("/proc"),
            gpu.vendor,
            gpu.index,
            bus,
        );
        if let Some(node) = found.ok().and_then(|n| export::slurm::pick_node(&n)) {
            nodes.insert(gpu.index, node);
        }
    }
    nodes
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
        for r in &inst.ranks {
            let mem = r.memory_node.map_or("default".into(), |m| m.to_string());
            s.push_str(&format!(
                "  rank {}:           GPU{} node {} CPUs {} memory node {mem}\n",
                r.rank,
                r.gpu,
                r.node,
                r.cpus.to_list()
            ));
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
