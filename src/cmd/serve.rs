//! `nodeagent serve`: load the config and profiles, resolve the binding, build the launch spec,
//! then run the supervisor until SIGTERM/SIGINT (exit 0) or until it gives up (exit 1). Bad
//! config and failed preflight checks exit 2 with nothing started: among them, as root, a
//! config, profile or engine program another user can write (`config::trust`, unless
//! `--allow-insecure-files`), and an unsafe state dir (`supervise::statedir`). A panic after the
//! start is caught here and the engine tree stopped (`supervise::guard`) before the exit (1).
//!
//! Several instances on one host (`--instance N`, `launch.instance`): instance N's state dir is
//! `state_dir/N` (the base itself for 0, `supervise::statedir::instance_dir`) and its port the
//! first of `--port`, `launch.ports[N]`, `engine.port + N` ([`instance_port`]; N counted from
//! the config's own `launch.instance`, so a config written for one instance keeps its port).
//! `--print-config --json` prints the effective config and the launch as one JSON document
//! ([`launch_json`]; the contract is in docs/serve.md).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio_util::sync::CancellationToken;

use crate::binding::Binding;
use crate::cli::{ServeArgs, ServeMode, ServeRole};
use crate::config::ray::RayRole;
use crate::config::trust::{self, TrustError};
use crate::config::{self, Config, LaunchMode, RankBinding};
use crate::exit::{CmdError, ResultExt};
use crate::host::facts::Vendor;
use crate::host::runner::SystemRunner;
use crate::launch::spec::{GpuStack, LaunchSpec, Placement};
use crate::monitor::checks::CheckConfig;
use crate::monitor::{AgentConfig, ToolSampler};
use crate::plan::{self, PlanRequest, Split};
use crate::supervise::cgroup::cgroup_name;
use crate::supervise::docker::devices;
use crate::supervise::guard;
use crate::supervise::notify::{Notifier, SdNotifier};
use crate::supervise::occupancy::check::{self as occupancy, GpuTool, OccupancyCheck};
use crate::supervise::pidfile::Identity;
use crate::supervise::procs::ProcFs;
use crate::supervise::ranks::{RankBinder, RankTarget};
use crate::supervise::runtime::{runtime_for, RuntimeOptions};
use crate::supervise::statedir::{instance_dir, StateDir};
use crate::supervise::status::{self, AgentStatus};
use crate::supervise::supervisor::{Outcome, SuperviseError, Supervisor};

/// The longest the panic guard waits for the engine after SIGTERM before SIGKILL.
const PANIC_GRACE: Duration = Duration::from_secs(10);

/// Files root reads or runs, named for messages: (what, path).
type Files = Vec<(&'static str, PathBuf)>;

/// The effective config with the CLI's overrides applied (the CLI wins), the display names of
/// its sources and the files it was read from.
fn effective(args: &ServeArgs) -> Result<(Config, Vec<String>, Files), CmdError> {
    let loaded = config::load(&args.config).bad_input()?;
    let mut c = loaded.config;
    if let Some(dir) = &args.state_dir {
        c.state_dir = Some(dir.clone());
    }
    let own = c.launch.instance.unwrap_or(0);
    if let Some(n) = args.instance {
        c.launch.instance = Some(n);
    }
    if let Some(mode) = args.mode {
        c.launch.mode = Some(match mode {
            ServeMode::Bare => LaunchMode::Bare,
            ServeMode::Numactl => LaunchMode::Numactl,
            ServeMode::Container => LaunchMode::Container,
        });
    }
    if let Some(role) = args.role {
        c.ray.role = Some(match role {
            ServeRole::RayHead => RayRole::Head,
            ServeRole::RayWorker => RayRole::Worker,
        });
    }
    if c.ray.role == Some(RayRole::Worker) {
        // A Ray worker runs no engine of its own: its `/health` is the member's (joined), and
        // there is no model list, metrics or completion to ask (docs/ray.md).
        if c.engine.argv.is_empty() {
            c.engine.argv = vec!["{self}".into()];
        }
        c.probe.models = Some(String::new());
        c.probe.metrics = Some(String::new());
        c.supervise.canary_interval = Some(Duration::ZERO);
    }
    c.validate().bad_input()?;
    c.engine.port = Some(instance_port(&c, own, args.port).bad_input()?);
    if args.monitor.metrics_port.is_some() {
        let pct = args.monitor.gpu_memory_threshold;
        crate::monitor::checks::check_percentage("--gpu-memory-threshold", pct)
            .map_err(|e| CmdError::bad_input(anyhow!(e)))?;
    }
    let every = args.monitor.gpu_interval;
    let bounds = Duration::from_millis(100)..=Duration::from_secs(24 * 3600);
    if args.monitor.metrics_port.is_some() && !bounds.contains(&every) {
        return Err(CmdError::bad_input(anyhow!(
            "--gpu-interval {}: must be between 100ms and 1day",
            humantime::format_duration(every)
        )));
    }
    Ok((c, loaded.sources, loaded.files))
}

/// The engine port of the config's instance (`launch.instance`, after `--instance`): `cli`
/// (`--port`) when given, else `launch.ports[N]` when the list has that entry, else
/// `engine.port` + N − `own` (`own`: the instance the config file itself names, 0 when unset;
/// a shared config's instances get consecutive ports, a per-instance config keeps its own).
pub fn instance_port(c: &Config, own: usize, cli: Option<u16>) -> anyhow::Result<u16> {
    let n = c.launch.instance.unwrap_or(0);
    if let Some(port) = cli {
        return Ok(port);
    }
    if let Some(port) = c.launch.ports.as_ref().and_then(|p| p.get(n)) {
        return Ok(*port);
    }
    let port = i64::from(c.port()) + n as i64 - own as i64;
    u16::try_from(port).ok().filter(|p| *p != 0).ok_or_else(|| {
        anyhow!(
            "instance {n}: engine.port {} + {n} - launch.instance {own} = {port} is not a port: \
             set launch.ports or --port",
            c.port()
        )
    })
}

/// The state dir of the config's instance (`state_dir` for 0, `state_dir/N` otherwise).
pub fn state_dir_of(c: &Config) -> PathBuf {
    instance_dir(&c.state_dir(), c.launch.instance.unwrap_or(0))
}

/// As root: refuses (or with `--allow-insecure-files` warns about) the config, path profiles
/// and the programs root would execute (bare and numactl modes; a container's argv runs in the
/// container) when another user can write them or a directory above them.
fn check_files(files: &Files, spec: &LaunchSpec, allow: bool) -> Result<(), CmdError> {
    if !trust::running_as_root() {
        return Ok(());
    }
    let mut checks = files.clone();
    if spec.mode != LaunchMode::Container {
        let mut programs = vec![("engine program", &spec.engine_argv[0])];
        if spec.mode == LaunchMode::Numactl {
            programs.push(("numactl program", &spec.argv[0]));
        }
        for (what, program) in programs {
            checks.extend(trust::resolve_program(program).map(|p| (what, p)));
        }
    }
    for (what, path) in &checks {
        match trust::check(what, path) {
            Ok(()) => {}
            Err(e @ TrustError::Insecure { .. }) if allow => {
                tracing::warn!("insecure file accepted (--allow-insecure-files): {e}")
            }
            Err(e) => return Err(CmdError::bad_input(e)),
        }
    }
    Ok(())
}

/// The text of a panic's payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// The binding to apply: explicit from `[binding]`, or with `auto = true` the binding that
/// `nodeagent plan` prints for instance `launch.instance` (host facts live or `--from DIR`).
/// The binding and the placement (instance index, GPUs, GPU stack). With `binding.auto` both
/// come from the plan's instance; with an explicit `[binding]` the GPUs are `launch.gpus` when
/// set, else unknown (no visibility variable is set and `{tp}` falls back to `launch.tp`).
fn binding(
    c: &Config,
    args: &ServeArgs,
) -> Result<(Binding, Placement, Vec<RankTarget>), CmdError> {
    if !c.wants_auto_binding() {
        return Ok((c.explicit_binding().bad_input()?, Placement::from_config(c), Vec::new()));
    }
    let (_, topo) = super::source::load(&args.source)?;
    let request = PlanRequest {
        gpus: c.launch.gpus.clone(),
        split: c.launch.tp.map_or(Split::One, Split::Tp),
        host_memory_gb: None,
        share_cores: false,
        reserve_cpus: c.launch.reserve_cpus.unwrap_or(0),
    };
    let plan = plan::plan(&topo, &request).context("binding.auto: planning").bad_input()?;
    let index = c.launch.instance.unwrap_or(0);
    let count = plan.instances.len();
    let instance = plan.instances.into_iter().nth(index).ok_or_else(|| {
        CmdError::bad_input(anyhow!(
            "launch.instance = {index}, but the plan has {count} instance(s) (0-based)"
        ))
    })?;
    tracing::info!(
        gpus = ?instance.gpus,
        binding = ?instance.binding.numactl_args(),
        "binding from the plan"
    );
    let stack = match topo.vendor {
        Vendor::Nvidia => GpuStack::Cuda,
        Vendor::Metax => GpuStack::Maca,
        Vendor::Amd | Vendor::Other => GpuStack::Unknown,
    };
    let placement = Placement { instance: index, gpus: Some(instance.gpus.clone()), stack };
    // Per-rank binding (docs/serve.md): the plan's ranks, unless `binding.ranks = "union"`.
    let ranks = match c.binding.ranks.unwrap_or_default() {
        RankBinding::Union => Vec::new(),
        RankBinding::PerRank => instance.ranks.clone(),
    };
    Ok((instance.binding, placement, ranks))
}

/// The `launch` object of `--print-config --json` (docs/serve.md, "The launch as JSON"):
/// mode, argv, env (object), gpus (indexes or null), cpus (cpulist or null), mems (node list or
/// null), mem_policy, devices (host paths of the container's device nodes; empty outside
/// container mode), port, state_dir, plus instance and unset_env.
pub fn launch_json(c: &Config, spec: &LaunchSpec) -> Result<serde_json::Value, anyhow::Error> {
    use crate::binding::MemPolicy;
    let b = &spec.binding;
    let (mem_policy, mems) = match &b.memory {
        MemPolicy::Default => ("default", None),
        MemPolicy::Bind(n) => ("bind", Some(n.clone())),
        MemPolicy::Preferred(n) => ("preferred", Some(vec![*n])),
        MemPolicy::Interleave(n) => ("interleave", Some(n.clone())),
    };
    let devices: Vec<String> = if spec.mode == LaunchMode::Container {
        let settings = &c.container;
        let container = crate::launch::container::ContainerSpec::new(
            settings,
            b,
            spec.engine_argv.clone(),
            spec.env.clone(),
            &spec.placement.instance.to_string(),
        );
        container.devices()?.into_iter().map(|d| d.host).collect()
    } else {
        Vec::new()
    };
    Ok(serde_json::json!({
        "mode": spec.mode,
        "instance": spec.placement.instance,
        "argv": spec.argv,
        "env": spec.env,
        "unset_env": spec.unset_env,
        "gpus": spec.placement.gpus,
        "cpus": b.cpus.as_ref().map(|c| c.to_list()),
        "mems": mems,
        "mem_policy": mem_policy,
        "devices": devices,
        "port": spec.port,
        "state_dir": state_dir_of(c),
    }))
}

fn print_config_json(c: &Config, spec: &LaunchSpec) -> Result<(), CmdError> {
    let launch = launch_json(c, spec).bad_input()?;
    let config = serde_json::to_value(c).context("rendering the config").failed()?;
    let doc = serde_json::json!({ "config": config, "launch": launch });
    let text = serde_json::to_string_pretty(&doc).context("rendering JSON").failed()? + "\n";
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing to stdout").failed()
}

fn print_config(c: &Config, sources: &[String], spec: &LaunchSpec) -> Result<(), CmdError> {
    let text = toml::to_string_pretty(c).context("rendering the config").failed()?;
    let mut out = format!("# effective config, merged from (later wins): {}\n", sources.join(", "));
    out += &format!("{text}\n");
    out += &format!("# what runs ({}):\n", serde_json::to_value(spec.mode).unwrap_or_default());
    out += &format!("#   argv: {}\n", serde_json::to_string(&spec.argv).unwrap_or_default());
    if let Some(gpus) = &spec.placement.gpus {
        out += &format!("#   instance {}: gpus {:?}\n", spec.placement.instance, gpus);
    }
    out += &format!(
        "#   instance {}: port {}, state dir {}\n",
        spec.placement.instance,
        spec.port,
        state_dir_of(c).display()
    );
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !env.is_empty() {
        out += &format!("#   env: {}\n", env.join(" "));
    }
    if !spec.unset_env.is_empty() {
        out += &format!("#   unset: {}\n", spec.unset_env.join(" "));
    }
    if spec.native_binding {
        out += &format!(
            "#   binding applied natively before exec: {}\n",
            spec.binding.numactl_args().join(" ")
        );
    } else if spec.mode == LaunchMode::Container && !spec.binding.is_none() {
        out += &format!("#   container cpuset: {}\n", spec.binding.docker_args().join(" "));
    }
    std::io::stdout().lock().write_all(out.as_bytes()).context("writing to stdout").failed()
}

pub fn run(args: ServeArgs) -> Result<(), CmdError> {
    let (c, sources, files) = effective(&args)?;
    let (binding, placement, ranks) = binding(&c, &args)?;
    let self_exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "nodeagent".to_string());
    let mut spec =
        LaunchSpec::build_placed(&c, binding.clone(), &placement, &self_exe).bad_input()?;
    // The engine's own drain option (`probe.shutdown_timeout_arg`, vLLM's
    // `--shutdown-timeout`) gets `drain_timeout` in seconds (docs/serve.md, "Drain").
    let policy = c.policy();
    if let Some(arg) = policy.probe.shutdown_timeout_arg.filter(|_| !policy.drain_timeout.is_zero())
    {
        let secs = policy.drain_timeout.as_secs().max(1).to_string();
        for argv in [&mut spec.argv, &mut spec.engine_argv] {
            argv.extend([arg.clone(), secs.clone()]);
        }
    }
    // `[ray] role`: the engine becomes this node's Ray member, the engine command its driver.
    if let Some(ray) = c.ray.settings().bad_input()? {
        let gpus = spec.placement.gpus.as_ref().map_or(0, |g| g.len() as u32);
        let member = crate::supervise::ray::member_argv(
            &self_exe,
            &ray,
            gpus,
            c.engine_addr(),
            &std::path::absolute(state_dir_of(&c)).unwrap_or_else(|_| state_dir_of(&c)),
            &spec.engine_argv,
        );
        spec.argv.truncate(spec.argv.len() - spec.engine_argv.len());
        spec.argv.extend(member.iter().cloned());
        spec.engine_argv = member;
    }
    let mut c = c;
    if spec.mode == LaunchMode::Container {
        // Only the instance's GPU device nodes go into the container (nothing when its GPUs
        // are unknown: the configured devices, as given). `--print-config` shows them when
        // this machine has them, else the configured list (a config planned elsewhere).
        let src = &args.source;
        let tool = GpuTool::detect(spec.placement.stack, &src.mx_smi, &src.nvidia_smi);
        match devices::instance_devices(
            &spec.placement,
            tool.as_ref(),
            &SystemRunner,
            src.tool_timeout,
            &src.sysfs_root,
            &args.host_root,
        ) {
            Ok(found) => c.container.gpu_devices = found,
            Err(e) if args.print_config => {
                tracing::warn!("container devices shown as configured: {e}");
            }
            Err(e) => return Err(CmdError::bad_input(e)),
        }
    }
    if args.print_config && args.json {
        return print_config_json(&c, &spec);
    }
    if args.print_config {
        return print_config(&c, &sources, &spec);
    }
    check_files(&files, &spec, args.allow_insecure_files)?;
    if let Some(gpus) = &spec.placement.gpus {
        if spec.placement.stack == GpuStack::Maca {
            crate::supervise::interconnect::preflight_metax(gpus, args.skip_link_check).failed()?;
        } else {
            crate::supervise::interconnect::preflight_nvidia(gpus, args.skip_link_check)
                .failed()?;
        }
    }
    let instance = c.launch.instance.unwrap_or(0);
    let state_path = state_dir_of(&c);
    let state_dir = StateDir::open_instance(&c.state_dir(), instance).bad_input()?;
    // One thread is plenty for one engine, and keeps the agent's footprint small.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .failed()?;
    let id = Identity::new(&state_dir, &spec.engine_argv);
    // The engine's cgroup (process modes), named as the process runtime names it.
    let cgroup = (spec.mode != LaunchMode::Container)
        .then(|| cgroup_name(&instance.to_string(), &state_path));
    let grace = c.policy().stop_grace.min(PANIC_GRACE);
    // A panic anywhere in `serve` (the supervisor's own future, a spawned task, a thread) ends
    // here: stop the engine tree before the process dies, so the worst case is a clean
    // failure, never an orphaned engine.
    let guard_dir = StateDir::open(&state_path).bad_input()?;
    install_panic_guard(guard_dir, id, cgroup, grace);
    let result = rt.block_on(serve(c, spec, &args, &state_dir, ranks));
    drop(std::panic::take_hook());
    result
}

/// Replaces the panic hook for the life of `serve`: after the default report (the panic's
/// place, on stderr), the engine tree and its cgroup are stopped synchronously
/// (`guard::stop_engine_now`), the status socket removed, and the agent exits 1 with one line.
/// A hook rather than `catch_unwind`: tokio catches a panic inside a spawned task and the agent
/// would go on without that task; the hook sees every panic, on every thread.
fn install_panic_guard(dir: StateDir, id: Identity, cgroup: Option<String>, grace: Duration) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let why = panic_text(info.payload());
        let left = guard::stop_engine_now(&dir, &id, cgroup.as_deref(), grace);
        let _ = dir.remove(status::SOCKET_NAME);
        let what = if left.is_empty() {
            "engine stopped".to_string()
        } else {
            format!("engine processes {left:?} survive SIGKILL")
        };
        eprintln!("error: agent panicked: {why}; {what}");
        std::process::exit(1);
    }));
}

async fn serve(
    c: Config,
    spec: LaunchSpec,
    args: &ServeArgs,
    state_dir: &StateDir,
    ranks: Vec<RankTarget>,
) -> Result<(), CmdError> {
    let status = Arc::new(Mutex::new(AgentStatus::new(
        String::new(),
        spec.argv.clone(),
        spec.port,
        spec.served_model_name.clone(),
        spec.binding.clone(),
    )));
    {
        let mut s = status.lock().unwrap();
        s.instance = spec.placement.instance;
        s.gpus = spec.placement.gpus.clone();
        s.state_dir = Some(state_dir.path().display().to_string());
    }
    let cancel = CancellationToken::new();
    // The status socket and the monitor outlive the signal: they report the drain and the
    // stop, and end once the supervisor has stopped the engine.
    let endpoints = CancellationToken::new();
    let server =
        status::serve(state_dir, status.clone(), endpoints.child_token()).await.bad_input()?;
    let gpu_hung = start_monitor(args, &spec, &c.state_dir(), status.clone(), &endpoints).await?;
    let signals = tokio::spawn(watch_signals(cancel.clone()));
    let health = c.engine_addr();
    let model = spec.served_model_name.clone();
    let binding = spec.binding.clone();
    // The process runtime checks port and model path itself; containers are checked here.
    let container = spec.mode == LaunchMode::Container;
    let check_port = container.then_some(spec.port);
    let check_path = if container { spec.model_path_host.clone() } else { None };
    let spec_stack = spec.placement.stack;
    let options = RuntimeOptions {
        state_dir: state_dir.path().to_path_buf(),
        instance: c.launch.instance.unwrap_or(0).to_string(),
        engine_log: None,
        stdout_to_stderr: false,
        adopt_orphans: true,
    };
    // The GPU-occupancy preflight, run after the runtime's own leftovers are removed.
    let occupancy = OccupancyCheck::detect(
        &spec.placement,
        &args.source.mx_smi,
        &args.source.nvidia_smi,
        args.source.tool_timeout,
        state_dir,
        Identity::new(state_dir, &spec.engine_argv),
    )
    .map(|check| OccupancyCheck { reclaim: args.reclaim_orphans, ..check });
    // Printed inline: the error's message already names its source.
    let runtime =
        runtime_for(spec, &c.container, &options).map_err(|e| CmdError::failed(anyhow!("{e}")))?;
    let runtime = occupancy::guard(runtime, occupancy);
    let ranks = (!ranks.is_empty()).then(|| {
        let src = &args.source;
        let tool = GpuTool::detect(spec_stack, &src.mx_smi, &src.nvidia_smi);
        RankBinder::new(ranks, tool, Box::new(SystemRunner), src.tool_timeout)
            .with_library_of(spec_stack)
    });
    status.lock().unwrap().runtime = runtime.describe();
    let notifier: Arc<dyn Notifier> = Arc::new(SdNotifier);
    let status_for_debug = status.clone();
    let supervisor = Supervisor {
        runtime,
        policy: c.policy(),
        health_addr: health,
        model,
        binding,
        notifier,
        status,
        cancel: cancel.clone(),
        proc: ProcFs::default(),
        check_port,
        check_path,
        gpu_hung,
        ranks,
    };
    if args.debug_panic_in_task {
        let status = status_for_debug.clone();
        tokio::spawn(async move {
            while status.lock().unwrap().state != status::State::Ready {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("--debug-panic-in-task: the engine is ready, panicking on purpose in a task");
        });
    }
    let outcome = if args.debug_panic_when_ready {
        let status = status_for_debug;
        tokio::select! {
            outcome = supervisor.run() => outcome,
            _ = async {
                while status.lock().unwrap().state != status::State::Ready {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            } => panic!("--debug-panic-when-ready: the engine is ready, panicking on purpose"),
        }
    } else {
        supervisor.run().await
    };
    cancel.cancel();
    endpoints.cancel();
    signals.abort();
    let _ = server.await;
    match outcome {
        Ok(Outcome::Stopped) => Ok(()),
        Ok(Outcome::Failed(why)) => Err(CmdError::failed(anyhow!("engine failed: {why}"))),
        Err(e @ SuperviseError::Preflight { .. }) => Err(CmdError::bad_input(e)),
        Err(e) => Err(CmdError::failed(e)),
    }
}

/// SIGTERM (systemd stop, docker stop) and SIGINT (^C) both mean: stop the engine, exit 0.
async fn watch_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "stopping");
    cancel.cancel();
}

/// Starts the monitor for `nodeagent serve` when `--metrics-port` is given; returns the
/// hung-engine verdict for the supervisor (`None`: no monitor, or `--no-gpu-hang-restart`).
async fn start_monitor(
    serve: &crate::cli::ServeArgs,
    spec: &crate::launch::spec::LaunchSpec,
    state_base: &std::path::Path,
    status: crate::supervise::status::Shared,
    cancel: &CancellationToken,
) -> Result<Option<tokio::sync::watch::Receiver<bool>>, CmdError> {
    let args = &serve.monitor;
    let Some(port) = args.metrics_port else { return Ok(None) };
    let vendor = super::source::gpu_vendor(args.gpu_tool);
    let timeout = args.gpu_interval.max(std::time::Duration::from_secs(1));
    let (mx_smi, nvidia_smi) = (&serve.source.mx_smi, &serve.source.nvidia_smi);
    let sampler = ToolSampler::detect(vendor, mx_smi, nvidia_smi, timeout)
        .context("--metrics-port needs a GPU tool")
        .bad_input()?;
    let config = AgentConfig {
        interval: args.gpu_interval,
        checks: CheckConfig {
            memory_high_pct: args.gpu_memory_threshold,
            ..CheckConfig::default()
        },
        // Every instance's GPU processes are named, this one's and its neighbours'.
        instances_dir: Some(state_base.to_path_buf()),
        ..AgentConfig::default()
    };
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let gpus = crate::monitor::supervised::visible_gpus(&spec.env);
    let started = crate::monitor::supervised::spawn(
        Arc::new(sampler),
        config,
        listen,
        status,
        gpus,
        cancel.child_token(),
    )
    .await
    .bad_input()?;
    tracing::info!(
        addr = %started.addr,
        "monitor: serving http://{}/metrics and http://{}/status",
        started.addr,
        started.addr
    );
    Ok((!args.no_gpu_hang_restart).then_some(started.hung))
}
