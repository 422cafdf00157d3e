//! `nodeagent verify --compare BINDINGS`: parse the bindings, resolve them against this host
//! (`auto` through the planner), load the engine config, and run `crate::compare::run` with a
//! runtime per engine life (serve's process runtime for bare/numactl, the Docker runtime for
//! container mode). Prints a line per sub-run on stderr, the table and verdict on stdout. Exit 2
//! for bad bindings/config, 1 when any sub-run failed or the run was interrupted.
//!
//! Not done here: asking an already running `nodeagent serve` to rebind (the engine is always
//! launched from the config).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context};
use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::binding::Binding;
use crate::cli::{Cli, Command, ServeMode, VerifyRunArgs};
use crate::compare::run::{run_compare, CompareSpec, RuntimeFactory};
use crate::compare::{self, BindingChoice, CompareReport, HostNodes};
use crate::config::{self, Config, LaunchMode};
use crate::exit::{CmdError, ResultExt};
use crate::launch::container::ContainerSpec;
use crate::launch::spec::LaunchSpec;
use crate::supervise::docker::{DockerRuntime, LogSink};
use crate::supervise::process::ProcessRuntime;
use crate::supervise::procs::ProcFs;
use crate::supervise::runtime::EngineRuntime;

/// A factory of engine runtimes for `config`: one fresh runtime per engine life. The engine's
/// output is appended to `engine_log` (kept beside the results), else it shares stderr.
pub fn factory(
    config: &Config,
    state_dir: PathBuf,
    engine_log: Option<PathBuf>,
) -> Result<RuntimeFactory, CmdError> {
    let self_exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "nodeagent".to_string());
    // Fail on a bad engine config now, not at the first sub-run.
    LaunchSpec::build(config, Binding::none(), &self_exe).bad_input()?;
    let config = config.clone();
    Ok(Box::new(move |binding: &Binding| -> Result<Box<dyn EngineRuntime>, String> {
        let spec =
            LaunchSpec::build(&config, binding.clone(), &self_exe).map_err(|e| e.to_string())?;
        Ok(match spec.mode {
            LaunchMode::Bare | LaunchMode::Numactl => Box::new(
                ProcessRuntime::new(spec, state_dir.clone())
                    .stdout_to_stderr(true)
                    .log_to(engine_log.clone()),
            ),
            LaunchMode::Container => {
                let runtime = DockerRuntime::new(ContainerSpec::new(
                    &config.container,
                    binding,
                    spec.engine_argv.clone(),
                    spec.env.clone(),
                    "compare",
                ));
                match &engine_log {
                    Some(path) => {
                        let file = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(path)
                            .map_err(|e| format!("engine log {}: {e}", path.display()))?;
                        let sink: LogSink = Arc::new(Mutex::new(file));
                        Box::new(runtime.with_log_sink(Some(sink)))
                    }
                    None => Box::new(runtime),
                }
            }
        })
    }))
}

/// The plan's recommendation on this host (first instance), for `auto`.
fn auto_binding() -> Result<Binding, CmdError> {
    let cli =
        Cli::try_parse_from(["nodeagent", "plan"]).context("default plan arguments").failed()?;
    let Command::Plan(args) = cli.command else {
        return Err(CmdError::failed(anyhow!("default plan arguments did not parse as plan")));
    };
    let (_, topo) = super::probe::load(&args.source)?;
    let plan = crate::plan::plan(&topo, &super::plan::request(&args))
        .map_err(|e| anyhow!("`auto` needs the plan of this host: {e}"))
        .bad_input()?;
    plan.instances
        .first()
        .map(|i| i.binding.clone())
        .ok_or_else(|| CmdError::bad_input(anyhow!("`auto`: the plan has no instance")))
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

pub fn run(mut a: VerifyRunArgs) -> Result<(), CmdError> {
    let text = a.compare.compare.clone().unwrap_or_default();
    let choices = compare::parse_bindings(&text).bad_input()?;
    if a.compare.trials == 0 {
        return Err(CmdError::bad_input(anyhow!("--trials must be at least 1")));
    }
    let out =
        a.out.clone().ok_or_else(|| CmdError::bad_input(anyhow!("--compare needs --out DIR")))?;
    let c = load_config(&a, &out)?;
    let host = HostNodes::read(Path::new("/sys")).bad_input()?;
    let auto = if choices.iter().any(|c| c.choice == BindingChoice::Auto) {
        Some(auto_binding()?)
    } else {
        None
    };
    let resolved = choices
        .into_iter()
        .map(|ch| compare::resolve(&ch, &host, auto.as_ref()).map(|b| (ch, b)))
        .collect::<Result<Vec<_>, _>>()
        .bad_input()?;
    let addr = c.engine_addr();
    if a.url.is_none() {
        a.url = Some(format!("http://{addr}"));
    }
    let (sweep, dataset, _) = super::verify::build(&a).bad_input()?;
    super::verify::raise_open_file_limit();
    let factory = factory(&c, c.state_dir(), Some(out.join("engine.log")))?;
    let policy = c.policy();
    let spec = CompareSpec {
        choices: resolved,
        trials: a.compare.trials,
        out: out.clone(),
        sweep,
        health_addr: addr,
        model: c.engine.served_model_name.clone(),
        ready_timeout: policy.ready_timeout,
        stop_grace: policy.stop_grace,
        proc: ProcFs::default(),
    };
    let report = execute(&spec, &dataset, &factory)?;
    print_report(&report, &out)?;
    outcome(&report)
}

/// Runs the comparison on a fresh tokio runtime with Ctrl-C handling.
pub fn execute(
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
        let on_signal = interrupt.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping the engine; what was measured is kept");
                on_signal.cancel();
            }
        });
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
    })
    .failed()
}

pub fn print_report(report: &CompareReport, out: &Path) -> Result<(), CmdError> {
    let mut stdout = std::io::stdout().lock();
    compare::write_table(report, &mut stdout).context("writing to stdout").failed()?;
    eprintln!(
        "results in {} (compare.json, compare.txt, compare.svg, <binding>/trial-<k>/, engine.log)",
        out.display()
    );
    Ok(())
}

/// Exit 1 when a sub-run failed or the comparison stopped early.
pub fn outcome(report: &CompareReport) -> Result<(), CmdError> {
    let failed = report.runs.iter().filter(|r| r.error.is_some()).count();
    if report.incomplete {
        return Err(CmdError::failed(anyhow!(
            "comparison incomplete: {} of {} sub-runs done; what was measured is saved",
            report.runs.len(),
            report.trials as usize * report.order.len()
        )));
    }
    if failed > 0 {
        return Err(CmdError::failed(anyhow!(
            "{failed} of {} sub-runs failed (see FAILED lines above)",
            report.runs.len()
        )));
    }
    Ok(())
}
