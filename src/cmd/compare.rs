//! `nodeagent verify --compare BINDINGS`: parse the bindings, resolve them against this host
//! (`auto` through the planner), load the engine config, and run `crate::verify::trials` with a
//! runtime per engine life (`cmd::sweep::factory`: serve's process runtime for bare/numactl, the
//! Docker runtime for container mode). Results go to `--out` (a symlink or a file refused),
//! else to a fresh private directory under the temp dir; the directory is printed. Prints a
//! line per sub-run on stderr, the table and verdict on stdout. Exit 2 for bad
//! bindings/config/`--out`, 1 when any sub-run failed or the run was interrupted (SIGINT or
//! SIGTERM: the engine is stopped and what was measured is kept).
//!
//! Not done here: asking an already running `nodeagent serve` to rebind (the engine is always
//! launched from the config).

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Parser;
use tokio_util::sync::CancellationToken;

use super::sweep::{
    build, compare_outcome, factory, host_nodes, on_interrupt, raise_open_file_limit,
};
use crate::binding::Binding;
use crate::cli::{Cli, Command, ServeMode, VerifyRunArgs};
use crate::config::{self, Config, LaunchMode};
use crate::exit::{CmdError, ResultExt};
use crate::host::facts::Vendor;
use crate::launch::spec::GpuStack;
use crate::supervise::occupancy::check::GpuTool;
use crate::verify::bindings::{self, BindingChoice};
use crate::verify::compare::CompareReport;
use crate::verify::outdir;
use crate::verify::render::write_table;
use crate::verify::trials::{run_compare, CompareSpec, PerRank, RuntimeFactory};

/// The plan's recommendation on this host (first instance), for `auto`.
/// The plan's binding of its first instance and, when that instance spans nodes, its
/// per-rank layout with the vendor tool that finds the ranks' workers.
fn auto_binding() -> Result<(Binding, Option<PerRank>), CmdError> {
    let cli =
        Cli::try_parse_from(["nodeagent", "plan"]).context("default plan arguments").failed()?;
    let Command::Plan(args) = cli.command else {
        return Err(CmdError::failed(anyhow!("default plan arguments did not parse as plan")));
    };
    let (_, topo) = super::source::load(&args.source)?;
    let plan = super::source::plan_for(&args, &topo)
        .map_err(|e| anyhow!("`auto` needs the plan of this host: {e}"))
        .bad_input()?;
    let inst = plan
        .instances
        .first()
        .ok_or_else(|| CmdError::bad_input(anyhow!("`auto`: the plan has no instance")))?;
    let stack = match topo.vendor {
        Vendor::Nvidia => GpuStack::Cuda,
        Vendor::Metax => GpuStack::Maca,
        Vendor::Amd | Vendor::Other => GpuStack::Unknown,
    };
    let per_rank = (!inst.ranks.is_empty()).then(|| PerRank {
        ranks: inst.ranks.clone(),
        tool: GpuTool::detect(stack, &args.source.mx_smi, &args.source.nvidia_smi),
        tool_timeout: args.source.tool_timeout,
        within: Duration::from_secs(120),
    });
    Ok((inst.binding.clone(), per_rank))
}

fn load_config(a: &VerifyRunArgs, out: &Path) -> Result<Config, CmdError> {
    let ca = &a.compare;
    let mut c = config::load(&ca.config)
        .with_context(|| {
            format!("--compare needs the engine config (--config {})", ca.config.display())
        })
        .bad_input()?
        .config;
    if let Some(p) = ca.engine_port {
        c.engine.port = Some(p);
    }
    if let Some(m) = ca.mode {
        c.launch.mode = Some(match m {
            ServeMode::Bare => LaunchMode::Bare,
            ServeMode::Numactl => LaunchMode::Numactl,
            ServeMode::Container => LaunchMode::Container,
        });
    }
    c.state_dir = Some(ca.state_dir.clone().unwrap_or_else(|| out.join(".state")));
    c.validate().bad_input()?;
    Ok(c)
}

pub fn run(a: VerifyRunArgs) -> Result<(), CmdError> {
    let text = a.compare.compare.clone().unwrap_or_default();
    let choices = bindings::parse_bindings(&text).bad_input()?;
    if a.compare.trials == 0 {
        return Err(CmdError::bad_input(anyhow!("--trials must be at least 1")));
    }
    let (out, fresh) = outdir::given_or_private(a.out.as_deref(), "nodeagent-compare-")
        .map_err(|e| if e.is_bad_input() { CmdError::bad_input(e) } else { CmdError::failed(e) })?;
    let res = prepare_and_run(a, choices, &out);
    if fresh && res.as_ref().is_err_and(|e| e.code() == 2) {
        // Nothing ran: the fresh directory holds nothing worth keeping.
        let _ = std::fs::remove_dir_all(&out);
    }
    res
}

/// Everything after the output directory is settled: config, host, bindings, the run.
fn prepare_and_run(
    mut a: VerifyRunArgs,
    choices: Vec<bindings::Choice>,
    out: &Path,
) -> Result<(), CmdError> {
    let out = out.to_path_buf();
    let c = load_config(&a, &out)?;
    let host = host_nodes(Path::new("/sys")).bad_input()?;
    let planned = |c: &bindings::Choice| {
        matches!(c.choice, BindingChoice::Auto | BindingChoice::Union | BindingChoice::PerRank)
    };
    let (auto, per_rank) =
        if choices.iter().any(planned) { auto_binding()? } else { (Binding::none(), None) };
    let auto = choices.iter().any(planned).then_some(auto);
    let resolved = choices
        .into_iter()
        .map(|ch| bindings::resolve(&ch, &host, auto.as_ref()).map(|b| (ch, b)))
        .collect::<Result<Vec<_>, _>>()
        .bad_input()?;
    let addr = c.engine_addr();
    if a.url.is_none() {
        a.url = Some(format!("http://{addr}"));
    }
    let (sweep, dataset, _) = build(&a).bad_input()?;
    raise_open_file_limit();
    let factory = factory(&c, c.state_dir(), Some(out.join("engine.log")))?;
    let spec = CompareSpec {
        per_rank,
        ..super::sweep::compare_spec(&c, resolved, a.compare.trials, out.clone(), sweep, addr)
    };
    eprintln!("writing results in {}", out.display());
    let report = execute(&spec, &dataset, &factory)?;
    print_report(&report, &out)?;
    compare_outcome(&report)
}

/// Runs the comparison on a fresh tokio runtime; SIGINT or SIGTERM interrupts it.
fn execute(
    spec: &CompareSpec,
    dataset: &crate::loadgen::dataset::Dataset,
    factory: &RuntimeFactory,
) -> Result<CompareReport, CmdError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")
        .failed()?;
    let total = spec.trials as usize * spec.choices.len();
    rt.block_on(async {
        let interrupt = CancellationToken::new();
        on_interrupt(interrupt.clone(), |signal| {
            eprintln!("interrupted ({signal}): stopping the engine; what was measured is kept");
        })?;
        let mut done = 0;
        run_compare(spec, dataset, factory, interrupt, |r| {
            done += 1;
            let what = match &r.error {
                Some(e) => format!("FAILED: {e}"),
                None => {
                    let cpus: Vec<String> = r
                        .binding_check
                        .iter()
                        .map(|c| format!("pid {} cpus {}", c.pid, c.cpus_allowed))
                        .collect();
                    let thr: Vec<String> = r
                        .levels
                        .iter()
                        .map(|(l, f)| format!("{l} {:.1} tok/s", f.output_throughput))
                        .collect();
                    format!("{} [{}]", thr.join(", "), cpus.join("; "))
                }
            };
            eprintln!("[{done}/{total}] {} trial {}: {what}", r.binding, r.trial);
        })
        .await
        .failed()
    })
}

fn print_report(report: &CompareReport, out: &Path) -> Result<(), CmdError> {
    let mut stdout = std::io::stdout().lock();
    write_table(report, &mut stdout).context("writing to stdout").failed()?;
    eprintln!(
        "results in {} (compare.json, compare.txt, compare.svg, <binding>/trial-<k>/, engine.log)",
        out.display()
    );
    Ok(())
}
