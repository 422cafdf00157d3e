//! `nodeagent probe`: load host facts and the topology model (live or `--from`, through
//! `cmd::source`), print them as tables or JSON, optionally save the raw outputs as a snapshot
//! (`--save`).

use std::io::Write;

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use serde::Serialize;

use crate::cli::ProbeArgs;
use crate::exit::{CmdError, ResultExt};
use crate::host::HostFacts;
use crate::plan::{distance_row, plan_gpu, plan_node, PlanGpu, PlanNode};
use crate::topology::Topology;

/// `probe --json`: the same `gpus` and `numa_nodes` shapes as `plan --json`, plus the full
/// model with the evidence of every fact.
#[derive(Debug, Serialize)]
struct ProbeJson<'a> {
    vendor: crate::host::facts::Vendor,
    vendor_evidence: &'a str,
    gpus: Vec<PlanGpu>,
    numa_nodes: Vec<PlanNode>,
    warnings: &'a [String],
    sources: &'a [String],
    model: &'a Topology,
    /// NVML as one more source (live NVIDIA hosts): its facts and the cross-check.
    #[serde(skip_serializing_if = "Option::is_none")]
    nvml: Option<NvmlProvenance>,
}

/// What NVML says of the GPUs' placement, next to the other sources.
#[derive(Debug, Serialize)]
struct NvmlProvenance {
    /// `libnvidia-ml.so.1 (driver 580.159.04)`, or why NVML was not read.
    source: String,
    gpus: Vec<crate::host::nvml::NvmlGpuFacts>,
    /// Fields NVML could not read.
    notes: Vec<String>,
    cross_check: Vec<String>,
}

/// NVML's placement facts cross-checked against the model (live NVIDIA hosts only).
fn nvml_provenance(topo: &Topology) -> NvmlProvenance {
    use crate::host::nvml::{cross_check, NvmlLib, PlacedGpu};
    let lib = match NvmlLib::open_from_env() {
        Ok(lib) => lib,
        Err(e) => {
            return NvmlProvenance {
                source: e.to_string(),
                gpus: vec![],
                notes: vec![],
                cross_check: vec![],
            }
        }
    };
    let source = format!("{} (driver {})", lib.lib(), lib.driver_version().unwrap_or("unknown"));
    let (gpus, notes) = match lib.facts() {
        Ok(r) => r,
        Err(e) => (vec![], vec![e.to_string()]),
    };
    let placed: Vec<PlacedGpu> = topo
        .gpus
        .iter()
        .map(|g| PlacedGpu {
            index: g.index,
            bus_id: g.bus_id.clone(),
            numa_node: g.numa_node.as_ref().map(|f| (f.value, f.source.to_string())),
            cpu_affinity: g.cpu_affinity.as_ref().map(|f| (f.value.clone(), f.source.to_string())),
        })
        .collect();
    let cross_check = cross_check(&gpus, &placed);
    NvmlProvenance { source, gpus, notes, cross_check }
}

pub fn run(args: &ProbeArgs) -> Result<(), CmdError> {
    let start = std::time::Instant::now();
    let (facts, topo) = super::source::load(&args.source)?;
    if let Some(dir) = &args.save {
        let mut raw = facts.raw.clone();
        add_doctor_settings(&mut raw, &args.source, &topo)?;
        raw.save(dir).bad_input()?;
        tracing::info!(dir = %dir.display(), "snapshot saved");
    }
    let nvml = (args.source.from.is_none() && topo.vendor == crate::host::facts::Vendor::Nvidia)
        .then(|| nvml_provenance(&topo));
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = ProbeJson {
            vendor: topo.vendor,
            vendor_evidence: &facts.vendor_evidence,
            gpus: topo.gpus.iter().map(plan_gpu).collect(),
            numa_nodes: topo.nodes.iter().map(plan_node).collect(),
            warnings: &topo.warnings,
            sources: &topo.sources,
            model: &topo,
            nvml,
        };
        serde_json::to_writer_pretty(&mut out, &json).failed()?;
        writeln!(out).failed()?;
    } else {
        write!(out, "{}", render(&topo, &facts.vendor_evidence)).failed()?;
        if let Some(n) = &nvml {
            writeln!(out, "\nNVML: {}", n.source).failed()?;
            for line in n.cross_check.iter().chain(&n.notes) {
                writeln!(out, "  {line}").failed()?;
            }
        }
    }
    if let Some(dir) = &args.save {
        eprintln!("snapshot written to {}", dir.display());
    }
    if args.timings {
        print_timings(&facts, start.elapsed());
    }
    Ok(())
}

/// The files `nodeagent doctor` reads (host settings below the sysfs and procfs roots, for the
/// host's GPUs), so `doctor --from DIR` replays this host.
fn add_doctor_settings(
    raw: &mut crate::host::snapshot::RawOutputs,
    source: &crate::cli::SourceArgs,
    topo: &Topology,
) -> Result<(), CmdError> {
    let (sys, proc) = crate::doctor::read::roots(
        source.from.as_deref(),
        &source.sysfs_root,
        std::path::Path::new("/proc"),
    );
    let buses: Vec<String> = topo.gpus.iter().filter_map(|g| g.bus_id.clone()).collect();
    let settings = crate::doctor::read(&sys, &proc, &buses).bad_input()?;
    for file in settings.sys_files {
        if !raw.sysfs.iter().any(|f| f.rel == file.rel) {
            raw.sysfs.push(file);
        }
    }
    raw.procfs = settings.proc_files;
    Ok(())
}

/// Tool time vs our time, on stderr: what `BENCHMARKS.md` reports. External tools (and the
/// hwloc library's discovery) are "tools"; reading sysfs, parsing, modelling and rendering are
/// "ours" (the whole run minus the tools).
fn print_timings(facts: &HostFacts, total: std::time::Duration) {
    let mut tools = std::time::Duration::ZERO;
    for t in &facts.timings {
        eprintln!(
            "timing {:<24} {:>9.3} ms  parse {:>8.3} ms",
            t.source,
            t.tool.as_secs_f64() * 1e3,
            t.parse.as_secs_f64() * 1e3
        );
        if t.source != "sysfs" {
            tools += t.tool;
        }
    }
    let ours = total.saturating_sub(tools);
    eprintln!(
        "timing total {:.3} ms = tools {:.3} ms + nodeagent {:.3} ms",
        total.as_secs_f64() * 1e3,
        tools.as_secs_f64() * 1e3,
        ours.as_secs_f64() * 1e3
    );
}

fn mb(v: Option<u64>) -> String {
    v.map_or("?".into(), |v| format!("{v} MB"))
}

/// The human form: nodes table, GPUs table, warnings.
pub fn render(topo: &Topology, vendor_evidence: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "vendor: {:?} ({vendor_evidence})\nsources: {}\n\nNUMA nodes\n",
        topo.vendor,
        if topo.sources.is_empty() { "none".into() } else { topo.sources.join(", ") }
    ));
    let mut nodes = Table::new();
    nodes.load_preset(UTF8_BORDERS_ONLY);
    nodes.set_header(["node", "cpus", "memory", "free", "distances", "note"]);
    for n in &topo.nodes {
        let note = if n.gpu_memory {
            "GPU memory"
        } else if !n.has_cpus() {
            "no CPUs"
        } else if n.has_memory() == Some(false) {
            "memoryless"
        } else {
            ""
        };
        nodes.add_row([
            n.id.to_string(),
            if n.cpus.value.is_empty() { "-".into() } else { n.cpus.value.to_list() },
            mb(n.memory_total_mb.as_ref().map(|m| m.value)),
            mb(n.memory_free_mb.as_ref().map(|m| m.value)),
            n.distances.as_ref().map_or("?".into(), |d| distance_row(&d.value)),
            note.into(),
        ]);
    }
    s.push_str(&format!("{nodes}\n\nGPUs\n"));
    if topo.gpus.is_empty() {
        s.push_str("(none found)\n");
    } else {
        let mut gpus = Table::new();
        gpus.load_preset(UTF8_BORDERS_ONLY);
        gpus.set_header([
            "gpu",
            "name",
            "bus id",
            "memory",
            "node",
            "cpu affinity",
            "links",
            "node from",
        ]);
        for g in &topo.gpus {
            let links = g
                .links
                .iter()
                .filter(|(i, _)| **i != g.index)
                .map(|(i, l)| format!("{i}:{l}"))
                .collect::<Vec<_>>()
                .join(" ");
            let node = match (&g.numa_node, &g.memory_node) {
                (Some(n), Some(m)) => format!("{} (memory {})", n.value, m.value),
                (Some(n), None) => n.value.to_string(),
                (None, _) => "unknown".into(),
            };
            gpus.add_row([
                g.index.to_string(),
                g.name.clone().unwrap_or_else(|| "?".into()),
                g.bus_id.clone().unwrap_or_else(|| "?".into()),
                g.memory_total_mib.map_or("?".into(), |m| format!("{m} MiB")),
                node,
                g.cpu_affinity.as_ref().map_or("?".into(), |c| c.value.to_list()),
                links,
                g.numa_node.as_ref().map_or(String::new(), |n| n.source.to_string()),
            ]);
        }
        s.push_str(&format!("{gpus}\n"));
    }
    if !topo.warnings.is_empty() {
        s.push_str("\nwarnings:\n");
        for w in &topo.warnings {
            s.push_str(&format!("  - {w}\n"));
        }
    }
    s
}
