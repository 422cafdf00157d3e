//! `nodeagent demo`: the whole tool on any machine in about half a minute. It plans the seed's
//! 4 x MetaX MXC500 host from its snapshot (`testdata/hosts/seed-4xmxc500`: the plan is
//! `--cpunodebind=0 --membind=0`, CPUs 0-15), maps that binding onto the CPUs and nodes this
//! machine has, serves the engine simulator under it through serve's process runtime, checks
//! the binding in `/proc`, runs a short sweep and a short `none` vs `auto` comparison, writes
//! `report.md` with the chart, stops everything it started and prints where the report is.
//! Its directory is `--out` (a symlink or a file there refused) or a fresh private
//! `nodeagent-demo-XXXXXX` (mode 0700) under the temp dir, printed first; SIGINT and SIGTERM
//! stop the engine.
//!
//! Not here: anything a real GPU host needs (docs/demo.md, "The real thing on a MetaX host", covers that).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::Parser;
use tokio_util::sync::CancellationToken;

use super::sweep::{build, compare_outcome, factory, host_nodes, on_interrupt};
use crate::binding::{Binding, MemPolicy};
use crate::cli::{Cli, Command, DemoArgs};
use crate::exit::{CmdError, ResultExt};
use crate::host::cpuset::CpuSet;
use crate::plan::Plan;
use crate::verify::bindings::{BindingChoice, Choice, HostNodes};
use crate::verify::compare::TrialRun;
use crate::verify::outdir;
use crate::verify::render::write_table;
use crate::verify::trials::{engine_life, run_compare};

/// The seed host's plan, compiled in for when the snapshot directory is not next to the binary.
const BUNDLED_PLAN: &str = include_str!("../../testdata/hosts/seed-4xmxc500/plan.json");
const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/hosts/seed-4xmxc500");

/// The plan's binding carried onto this host, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub binding: Binding,
    pub explanation: Vec<String>,
}

/// Maps a binding planned for another host onto `local`: each planned node goes to the local
/// node at the same position (modulo the local node count), and the binding keeps the same
/// share of that node's CPUs as it had of the planned host's (at least one CPU), so the
/// binding is visible in `/proc` even on a one-node, two-CPU machine.
pub fn map_binding(plan: &Plan, planned: &Binding, local: &HostNodes) -> Mapping {
    let seed_ids: Vec<u32> = plan.numa_nodes.iter().map(|n| n.id).collect();
    let seed_total: usize = plan.numa_nodes.iter().map(|n| n.cpus.len()).sum::<usize>().max(1);
    let local_ids: Vec<u32> = local.nodes.keys().copied().collect();
    let map_node = |n: u32| -> u32 {
        let pos = seed_ids.iter().position(|&x| x == n).unwrap_or(n as usize);
        local_ids[pos % local_ids.len()]
    };
    let mut explanation = vec![format!(
        "the planned host has {} NUMA node(s) and {seed_total} CPUs; this machine has {} node(s) ({}) and CPUs {}",
        seed_ids.len(),
        local_ids.len(),
        local_ids.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        local.all_cpus()
    )];
    let planned_cpus = planned.cpus.as_ref().map_or(0, |c| c.len());
    let mut cpu_nodes: Vec<u32> = planned.cpu_nodes.iter().map(|&n| map_node(n)).collect();
    cpu_nodes.dedup();
    let cpus = planned.cpus.as_ref().map(|_| {
        let pool: CpuSet = if cpu_nodes.is_empty() {
            local.all_cpus()
        } else {
            cpu_nodes.iter().fold(CpuSet::new(), |a, n| a.union(&local.nodes[n]))
        };
        let share = planned_cpus as f64 / seed_total as f64;
        let k = ((share * pool.len() as f64).round() as usize).clamp(1, pool.len().max(1));
        let set: CpuSet = pool.iter().take(k).collect();
        explanation.push(format!(
            "CPUs {} are {planned_cpus} of {seed_total} ({:.0} %); the same share of CPUs {pool} here, at least one: CPUs {set}",
            planned.cpus.as_ref().map(|c| c.to_list()).unwrap_or_default(),
            share * 100.0
        ));
        set
    });
    let nodes = |v: &[u32]| -> Vec<u32> {
        let mut m: Vec<u32> = v.iter().map(|&n| map_node(n)).collect();
        m.sort_unstable();
        m.dedup();
        m
    };
    let memory = match &planned.memory {
        MemPolicy::Default => MemPolicy::Default,
        MemPolicy::Bind(v) => MemPolicy::Bind(nodes(v)),
        MemPolicy::Interleave(v) => MemPolicy::Interleave(nodes(v)),
        MemPolicy::Preferred(n) => MemPolicy::Preferred(map_node(*n)),
    };
    for (from, to) in planned.cpu_nodes.iter().map(|&n| (n, map_node(n))) {
        explanation.push(format!("planned node {from} -> local node {to}"));
    }
    // A CPU list alone (not whole nodes) once the share is smaller than the node.
    let whole = cpus.as_ref().is_some_and(|c| {
        cpu_nodes.iter().fold(CpuSet::new(), |a, n| a.union(&local.nodes[n])) == *c
    });
    let binding = Binding { cpu_nodes: if whole { cpu_nodes } else { Vec::new() }, cpus, memory };
    Mapping { binding, explanation }
}

fn plan_seed(from: Option<&Path>) -> Result<(Plan, String), CmdError> {
    let dir = from.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(SNAPSHOT));
    if dir.is_dir() {
        let cli = Cli::try_parse_from(
            ["nodeagent", "plan", "--no-hwloc", "--from"]
                .iter()
                .copied()
                .chain([dir.to_str().unwrap_or_default()]),
        )
        .context("plan arguments")
        .bad_input()?;
        let Command::Plan(args) = cli.command else {
            return Err(CmdError::failed(anyhow!("plan arguments did not parse as plan")));
        };
        let (_, topo) = super::source::load(&args.source)?;
        let plan = super::source::plan_for(&args, &topo)
            .with_context(|| format!("planning {}", dir.display()))
            .bad_input()?;
        return Ok((plan, format!("planned from the snapshot {}", dir.display())));
    }
    if from.is_some() {
        return Err(CmdError::bad_input(anyhow!("--from {}: not a directory", dir.display())));
    }
    let plan: Plan =
        serde_json::from_str(BUNDLED_PLAN).context("the bundled plan.json").failed()?;
    Ok((plan, "the snapshot is not here; using the plan bundled in the binary".into()))
}

fn free_port() -> Result<u16, CmdError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port").failed()?;
    Ok(l.local_addr().context("finding a free port").failed()?.port())
}

fn verify_args(
    url: &str,
    levels: &[&str],
    numbers: &[&str],
    out: &Path,
) -> Result<crate::cli::VerifyRunArgs, CmdError> {
    let mut argv: Vec<String> = [
        "nodeagent",
        "verify",
        "--url",
        url,
        "--dataset",
        "random",
        "--input-len",
        "64",
        "--output-len",
        "32",
        "--warmup",
        "2",
        "--quiet",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.push(out.display().to_string());
    argv.push("--parallel".into());
    argv.extend(levels.iter().map(|s| s.to_string()));
    argv.push("--number".into());
    argv.extend(numbers.iter().map(|s| s.to_string()));
    let cli = Cli::try_parse_from(argv).context("demo sweep arguments").failed()?;
    match cli.command {
        Command::Verify(v) => Ok(v.run),
        _ => Err(CmdError::failed(anyhow!("demo sweep arguments did not parse as verify"))),
    }
}

pub fn run(args: DemoArgs) -> Result<(), CmdError> {
    if args.trials == 0 {
        return Err(CmdError::bad_input(anyhow!("--trials must be at least 1")));
    }
    let started = std::time::Instant::now();
    let (out, _) = outdir::given_or_private(args.out.as_deref(), "nodeagent-demo-")
        .map_err(|e| if e.is_bad_input() { CmdError::bad_input(e) } else { CmdError::failed(e) })?;
    println!("demo directory: {}", out.display());
    let mut report = String::from("# nodeagent demo\n\n");
    let say = |line: String, report: &mut String| {
        println!("{line}");
        report.push_str(&line);
        report.push('\n');
    };

    // 1. Plan the seed host.
    let (plan, source) = plan_seed(args.from.as_deref())?;
    let inst = plan
        .instances
        .first()
        .ok_or_else(|| CmdError::failed(anyhow!("the seed plan has no instance")))?;
    say(format!("1. plan: seed host, {} GPUs ({source})", plan.gpus.len()), &mut report);
    say(
        format!(
            "   recommended: {}  (CPUs {})",
            inst.numactl.as_deref().unwrap_or("no binding"),
            inst.cpus
        ),
        &mut report,
    );
    if let Some(r) = inst.reasons.first() {
        say(format!("   because: {r}"), &mut report);
    }

    // 2. Map it onto this machine.
    let local = host_nodes(Path::new("/sys")).bad_input()?;
    let mapping = map_binding(&plan, &inst.binding, &local);
    say("2. mapped onto this machine:".into(), &mut report);
    for e in &mapping.explanation {
        say(format!("   {e}"), &mut report);
    }
    say(format!("   -> numactl {}", mapping.binding.numactl_args().join(" ")), &mut report);

    // 3. Serve the simulator under it, check /proc, sweep.
    let port = free_port()?;
    let state = out.join(".state");
    let toml = format!(
        "host = \"local\"\nmodel = \"sim\"\nstate_dir = {state:?}\n[engine]\nport = {port}\n\
         argv = [\"{{self}}\", \"simulate\", \"--port\", \"{{port}}\", \"--served-model-name\", \
         \"{{served_model_name}}\", \"--decode-base-ms\", \"10\", \"--prefill-base-ms\", \"20\"]\n\
         [supervise]\nready_timeout = \"30s\"\nstop_grace = \"5s\"\n",
        state = state.display().to_string()
    );
    let c = crate::config::load_str("demo.toml", &toml, Path::new("."))
        .context("the demo's engine config")
        .failed()?
        .config;
    let addr = c.engine_addr();
    let url = format!("http://{addr}");
    let factory = factory(&c, c.state_dir(), Some(out.join("engine.log")))?;
    let auto = Choice { label: "auto".into(), choice: BindingChoice::Auto };
    let none = Choice { label: "none".into(), choice: BindingChoice::None };
    let sweep_args = verify_args(&url, &["1", "4"], &["8", "24"], &out.join("sweep"))?;
    let (sweep, dataset, _) = build(&sweep_args).bad_input()?;
    let mut spec = super::sweep::compare_spec(
        &c,
        vec![(auto.clone(), mapping.binding.clone())],
        1,
        out.join("sweep"),
        sweep,
        addr,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")
        .failed()?;
    let interrupt = CancellationToken::new();
    rt.block_on(async {
        on_interrupt(interrupt.clone(), |signal| {
            eprintln!("interrupted ({signal}): stopping the engine");
        })
    })?;
    let mut life = TrialRun::new("auto", 1, "sweep");
    say(
        format!("3. serving the engine simulator on {url} under that binding; sweep c=1, c=4"),
        &mut report,
    );
    let res = rt.block_on(engine_life(
        &spec,
        &dataset,
        &factory,
        &mapping.binding,
        &out.join("sweep"),
        &interrupt,
        &mut life,
    ));
    for ch in &life.binding_check {
        say(
            format!(
                "   /proc/{}/status: Cpus_allowed_list {}  Mems_allowed_list {}  policy {}  -> {}",
                ch.pid,
                ch.cpus_allowed,
                ch.mems_allowed,
                ch.mempolicy.as_deref().unwrap_or("?"),
                ch.escape.as_deref().unwrap_or("inside the binding")
            ),
            &mut report,
        );
    }
    res.map_err(|e| CmdError::failed(anyhow!("demo engine under the planned binding: {e}")))?;
    let summary = crate::summary::Summary::read(&out.join("sweep")).failed()?;
    let mut table = Vec::new();
    crate::report::table::sweep_table(&summary.levels, &mut table).failed()?;
    let table = String::from_utf8_lossy(&table).to_string();
    print!("{table}");
    let _ = writeln!(report, "\n```text\n{table}```\n");

    // 4. Compare none with auto.
    say(
        format!(
            "4. comparing none with auto, {} trial(s) each, interleaved (c=4, 16 requests)",
            args.trials
        ),
        &mut report,
    );
    spec.choices = vec![(none, crate::binding::Binding::none()), (auto, mapping.binding.clone())];
    spec.trials = args.trials;
    spec.out = out.join("compare");
    spec.sweep = build(&verify_args(&url, &["4"], &["16"], &out.join("compare"))?).bad_input()?.0;
    let cmp = rt
        .block_on(run_compare(&spec, &dataset, &factory, interrupt.clone(), |r| {
            eprintln!(
                "   {} trial {}: {}",
                r.binding,
                r.trial,
                r.error.clone().unwrap_or_else(|| r
                    .levels
                    .iter()
                    .map(|(l, f)| format!("{l} {:.1} tok/s", f.output_throughput))
                    .collect::<Vec<_>>()
                    .join(", "))
            )
        }))
        .failed()?;
    let mut table = Vec::new();
    write_table(&cmp, &mut table).failed()?;
    let table = String::from_utf8_lossy(&table).to_string();
    print!("{table}");
    let _ = writeln!(
        report,
        "\n```text\n{table}```\n\n![output tok/s by binding](compare/compare.svg)\n"
    );
    let _ = writeln!(
        report,
        "The simulator's speed does not depend on where it runs, so a verdict of \"within noise\" \
         is the right answer here; on a real GPU host the same comparison measures the NUMA effect."
    );
    drop(rt);

    // 5. Nothing left running: every engine life ended with a stop that waits for the tree.
    let path = out.join("report.md");
    std::fs::write(&path, &report)
        .with_context(|| format!("writing {}", path.display()))
        .failed()?;
    compare_outcome(&cmp)?;
    println!(
        "5. stopped everything it started; took {:.0} s\nreport: {}\nchart:  {}\nengine log: {}",
        started.elapsed().as_secs_f64(),
        path.display(),
        out.join("compare/compare.svg").display(),
        out.join("engine.log").display()
    );
    std::io::stdout().flush().ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn seed_binding_maps_to_a_share_of_a_two_cpu_machine() {
        let plan: Plan = serde_json::from_str(BUNDLED_PLAN).unwrap();
        let local = HostNodes { nodes: BTreeMap::from([(0, CpuSet::parse_list("0-1").unwrap())]) };
        let m = map_binding(&plan, &plan.instances[0].binding, &local);
        assert_eq!(m.binding.numactl_args(), ["--physcpubind=0", "--membind=0"]);
        let big = HostNodes {
            nodes: BTreeMap::from([
                (0, CpuSet::parse_list("0-7").unwrap()),
                (1, CpuSet::parse_list("8-15").unwrap()),
            ]),
        };
        let m = map_binding(&plan, &plan.instances[0].binding, &big);
        assert_eq!(m.binding.cpus, Some(CpuSet::parse_list("0").unwrap()));
        assert_eq!(m.binding.memory, MemPolicy::Bind(vec![0]));
    }
}
