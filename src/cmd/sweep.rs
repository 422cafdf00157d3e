//! What `verify`, `verify --compare` and `demo` share, so that no handler calls another: the
//! CLI's sweep arguments turned into a `SweepSpec` and its dataset (`build`, with `levels`,
//! `per_level`, `parse_slo`), the open-file limit, the GPU sampler of a local engine, the host's
//! NUMA nodes a binding must fit, one engine runtime per binding (`factory`), a comparison's
//! spec from the config (`compare_spec`), the exit status of a comparison (`compare_outcome`),
//! and SIGINT/SIGTERM turned into a cancellation (`on_interrupt`).
//!
//! Not here: running sweeps and comparisons (`crate::verify`), printing results (the handlers).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use tokio_util::sync::CancellationToken;

use crate::binding::Binding;
use crate::cli::{
    ArrivalKind, DatasetKind, PacingKind, SearchArg, TraceFormatArg, VerifyApi, VerifyFormat,
    VerifyRunArgs,
};
use crate::config::Config;
use crate::exit::{CmdError, ResultExt};
use crate::host::cpuset::CpuSet;
use crate::launch::spec::LaunchSpec;
use crate::loadgen::dataset::{Dataset, DatasetSpec, LengthFilter};
use crate::loadgen::request::{parse_extra_body, Api, BodySettings, Endpoint, Timeouts};
use crate::loadgen::schedule::{self, Arrival, Pacing};
use crate::loadgen::tokenizer::PromptTokenizer;
use crate::loadgen::trace::TraceFormat;
use crate::monitor::{Sampler, ToolSampler};
use crate::summary::Slo;
use crate::supervise::runtime::{runtime_for, EngineRuntime, RuntimeOptions};
use crate::verify::bindings::HostNodes;
use crate::verify::compare::CompareReport;
use crate::verify::redact::{Secret, Secrets};
use crate::verify::search::{SearchKind, SearchSpec};
use crate::verify::trials::RuntimeFactory;
use crate::verify::{LevelSpec, SweepSpec};

/// Parses `ttft=2s,tpot=50ms,itl=100ms,latency=30s`.
pub fn parse_slo(text: &str) -> anyhow::Result<Slo> {
    let mut slo = Slo::default();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("bad --slo item {part:?}: expected KEY=DURATION"))?;
        let secs = crate::cli::parse_seconds_or_duration(value.trim())
            .map_err(|e| anyhow!("bad --slo item {part:?}: {e}"))?
            .as_secs_f64();
        let slot = match key.trim() {
            "ttft" => &mut slo.ttft_s,
            "tpot" => &mut slo.tpot_s,
            "itl" => &mut slo.itl_s,
            "latency" | "e2el" | "e2e" => &mut slo.latency_s,
            other => {
                return Err(anyhow!(
                    "bad --slo key {other:?}: use ttft, tpot, itl or latency (e2e)"
                ))
            }
        };
        *slot = Some(secs);
    }
    Ok(slo)
}

/// One value for every level, or one per level.
fn per_level<T: Copy>(values: &[T], levels: usize, flag: &str) -> anyhow::Result<Vec<T>> {
    match values.len() {
        1 => Ok(vec![values[0]; levels]),
        n if n == levels => Ok(values.to_vec()),
        n => Err(anyhow!("{flag} has {n} values for {levels} levels: give one, or one per level")),
    }
}

/// The sweep's levels: `--parallel` (closed loop) or `--rate` (open loop, `--parallel` caps
/// it), each with its `--number` of requests.
fn levels(a: &VerifyRunArgs) -> anyhow::Result<Vec<LevelSpec>> {
    if a.parallel.contains(&0) && a.rate.is_empty() {
        return Err(anyhow!("--parallel 0 is only meaningful with --rate (no concurrency cap)"));
    }
    if let Some(r) = a.rate.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
        return Err(anyhow!("--rate {r}: must be a positive number of requests per second"));
    }
    let specs: Vec<LevelSpec> = if a.rate.is_empty() {
        let parallel = if a.parallel.is_empty() { vec![1] } else { a.parallel.clone() };
        let number = per_level(&a.number, parallel.len(), "--number")?;
        parallel
            .iter()
            .zip(number)
            .map(|(&p, n)| LevelSpec { parallel: p, rate: None, number: n, speed: None })
            .collect()
    } else {
        let caps = if a.parallel.is_empty() {
            vec![0; a.rate.len()]
        } else {
            per_level(&a.parallel, a.rate.len(), "--parallel")?
        };
        let number = per_level(&a.number, a.rate.len(), "--number")?;
        a.rate
            .iter()
            .zip(caps)
            .zip(number)
            .map(|((&r, c), n)| LevelSpec { parallel: c, rate: Some(r), number: n, speed: None })
            .collect()
    };
    if specs.iter().any(|l| l.number == 0) {
        return Err(anyhow!("--number must be at least 1"));
    }
    for l in &specs {
        if let Some(r) = l.rate {
            schedule::check_open(r, l.number)
                .map_err(|e| anyhow!("--rate {r} with --number {}: {e}", l.number))?;
        }
    }
    Ok(specs)
}

/// The levels of a trace replay: the whole trace once per `--trace-speed`, `--parallel` (one
/// value) capping the requests in flight; each level's `rate` is the replay's mean rate.
fn trace_levels(
    a: &VerifyRunArgs,
    offsets: &[std::time::Duration],
) -> anyhow::Result<Vec<LevelSpec>> {
    if let Some(x) = a.trace_speed.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
        return Err(anyhow!("--trace-speed {x}: must be a positive factor (2 = twice as fast)"));
    }
    if a.parallel.len() > 1 {
        return Err(anyhow!("--trace takes one --parallel value (the cap of every level)"));
    }
    let cap = a.parallel.first().copied().unwrap_or(0);
    let n = offsets.len() as u64;
    let span = offsets.last().map_or(0.0, |d| d.as_secs_f64());
    let max = schedule::MAX_OPEN_SPAN.as_secs_f64();
    if let Some(x) = a.trace_speed.iter().find(|x| span / **x > max) {
        return Err(anyhow!(
            "--trace-speed {x}: the replay of this {span} s trace would last {:.3e} s; a replay \
             spans at most 365 days",
            span / x
        ));
    }
    Ok(a.trace_speed
        .iter()
        .map(|&x| LevelSpec {
            parallel: cap,
            rate: (span > 0.0).then(|| (n.saturating_sub(1)) as f64 * x / span),
            number: n,
            speed: Some(x),
        })
        .collect())
}

/// The SLO search of `--search`, and the one level that is the template of its steps: a
/// concurrency search starts at `--parallel` (default 1), a rate search at `--rate` (default
/// 1/s) with `--parallel` as its cap; one `--number` per step.
fn search(a: &VerifyRunArgs) -> anyhow::Result<Option<(SearchSpec, LevelSpec)>> {
    let Some(kind) = a.search else { return Ok(None) };
    if !(a.slo_attainment > 0.0 && a.slo_attainment <= 1.0) {
        return Err(anyhow!(
            "--slo-attainment {}: must be a fraction above 0 and at most 1 (0.99 = 99 %)",
            a.slo_attainment
        ));
    }
    if a.search_max_steps == 0 {
        return Err(anyhow!("--search-max-steps must be at least 1"));
    }
    if a.number.len() > 1 {
        return Err(anyhow!("--search takes one --number (requests per step)"));
    }
    let one = |values: usize, flag: &str| {
        if values > 1 {
            Err(anyhow!("--search starts from one {flag} value, got {values}"))
        } else {
            Ok(())
        }
    };
    let number = a.number.first().copied().unwrap_or(1000);
    let (kind, level) = match kind {
        SearchArg::Concurrency => {
            one(a.parallel.len(), "--parallel")?;
            if !a.rate.is_empty() {
                return Err(anyhow!("--search concurrency is a closed loop: drop --rate"));
            }
            let start = a.parallel.first().copied().unwrap_or(1);
            if start == 0 {
                return Err(anyhow!("--search concurrency starts at --parallel 1 or more"));
            }
            (
                SearchKind::Concurrency,
                LevelSpec { parallel: start, rate: None, number, speed: None },
            )
        }
        SearchArg::Rate => {
            one(a.rate.len(), "--rate")?;
            one(a.parallel.len(), "--parallel")?;
            let rate = a.rate.first().copied().unwrap_or(1.0);
            let cap = a.parallel.first().copied().unwrap_or(0);
            (SearchKind::Rate, LevelSpec { parallel: cap, rate: Some(rate), number, speed: None })
        }
    };
    let spec = SearchSpec {
        kind,
        start: level.rate.unwrap_or(level.parallel as f64),
        attainment: a.slo_attainment,
        max_steps: a.search_max_steps,
    };
    Ok(Some((spec, level)))
}

/// Per-request settings no request could use: a zero timeout, a temperature that is not a
/// finite number.
fn check_request_settings(a: &VerifyRunArgs) -> anyhow::Result<()> {
    let zero = std::time::Duration::ZERO;
    for (flag, t) in [
        ("--connect-timeout", Some(a.connect_timeout)),
        ("--read-timeout", Some(a.read_timeout)),
        ("--first-token-timeout", a.first_token_timeout),
        ("--total-timeout", a.total_timeout),
    ] {
        if t == Some(zero) {
            return Err(anyhow!("{flag} 0: must be above zero (leave it out for the default)"));
        }
    }
    if let Some(t) = a.temperature.filter(|t| !t.is_finite()) {
        return Err(anyhow!("--temperature {t}: must be a finite number"));
    }
    if let Some(url) = &a.metrics_url {
        crate::monitor::agent::check_http_url("--metrics-url", url).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// The `SweepSpec`, the loaded dataset and the output format of `verify`'s arguments.
pub(crate) fn build(a: &VerifyRunArgs) -> anyhow::Result<(SweepSpec, Dataset, VerifyFormat)> {
    let url = a.url.clone().ok_or_else(|| anyhow!("--url is required"))?;
    let api = a.api.map(|x| match x {
        VerifyApi::Chat => Api::Chat,
        VerifyApi::Completions => Api::Completions,
    });
    let endpoint = Endpoint::parse(&url, api)?;
    let search = search(a)?;
    check_request_settings(a)?;
    let levels = match search {
        Some((_, template)) => vec![template],
        None => levels(a)?,
    };
    let slo = a.slo.as_deref().map(parse_slo).transpose()?.unwrap_or_default();
    if search.is_some() && !slo.is_set() {
        return Err(anyhow!("--search needs at least one objective in --slo"));
    }
    let max_number = levels.iter().map(|l| l.number).max().unwrap_or(1);
    let path = |kind: &'static str| {
        a.dataset_path.clone().ok_or(crate::loadgen::dataset::DatasetError::NoPath { kind })
    };
    if a.multi_turn
        && (a.dataset != DatasetKind::Sharegpt || a.trace.is_some() || a.prefix_len.is_some())
    {
        return Err(anyhow!("--multi-turn needs --dataset sharegpt (its full dialogues)"));
    }
    let dataset_spec = match (&a.trace, a.prefix_len, a.dataset) {
        (Some(path), _, _) => DatasetSpec::Trace {
            path: path.clone(),
            format: match a.trace_format {
                TraceFormatArg::Mooncake => TraceFormat::Mooncake,
                TraceFormatArg::Burstgpt => TraceFormat::BurstGpt,
            },
        },
        (None, Some(prefix_len), _) => DatasetSpec::SharedPrefix {
            prefix_len,
            num_prefixes: a.num_prefixes,
            suffix_len: u32::try_from(a.input_len)
                .map_err(|_| anyhow!("--input-len {} is too long", a.input_len))?,
            count: (max_number + a.warmup).clamp(1, 1_000_000) as usize,
        },
        (None, None, kind) => match kind {
            DatasetKind::Openqa => {
                DatasetSpec::OpenQa { path: path("openqa")?, field: a.dataset_field.clone() }
            }
            DatasetKind::Line => DatasetSpec::Lines { path: path("line")? },
            DatasetKind::Sharegpt if a.multi_turn => {
                if endpoint.api != Api::Chat {
                    return Err(anyhow!("--multi-turn sends conversations: it needs the chat API"));
                }
                if a.max_turns == Some(0) {
                    return Err(anyhow!("--max-turns must be at least 1"));
                }
                DatasetSpec::ShareGptDialogues { path: path("sharegpt")?, max_turns: a.max_turns }
            }
            DatasetKind::Sharegpt => DatasetSpec::ShareGpt { path: path("sharegpt")? },
            DatasetKind::Random => DatasetSpec::Random {
                input_len: a.input_len,
                count: (max_number + a.warmup).clamp(1, 100_000) as usize,
            },
        },
    };
    if let (Some(max), min) = (a.max_prompt_length, a.min_prompt_length) {
        if max < min {
            return Err(anyhow!("--max-prompt-length {max} is below --min-prompt-length {min}"));
        }
    }
    let tokenizer = a.tokenizer.as_deref().map(PromptTokenizer::load).transpose()?;
    let filter = LengthFilter { min: a.min_prompt_length, max: a.max_prompt_length };
    let dataset = Dataset::load(&dataset_spec, filter, tokenizer.as_ref(), a.seed)?;
    let levels = match &dataset.offsets {
        Some(offsets) => trace_levels(a, offsets)?,
        None => levels,
    };
    let generated = a.dataset == DatasetKind::Random || a.prefix_len.is_some();
    let random_out = if generated && a.trace.is_none() { a.output_len } else { None };
    let body = BodySettings {
        model: a.model.clone().unwrap_or_default(),
        max_tokens: a.max_tokens.or(random_out),
        min_tokens: a.min_tokens,
        ignore_eos: a.ignore_eos || (random_out.is_some() && a.max_tokens.is_none()),
        temperature: a.temperature,
        stream: !a.no_stream,
        extra_body: a.extra_body.as_deref().map(parse_extra_body).transpose()?,
    };
    let arrival = match a.arrival {
        ArrivalKind::Constant => Arrival::Constant,
        ArrivalKind::Poisson => Arrival::Poisson,
        ArrivalKind::Gamma => {
            if !(a.burstiness.is_finite() && a.burstiness > 0.0) {
                return Err(anyhow!("--burstiness {}: must be positive", a.burstiness));
            }
            Arrival::Gamma { burstiness: a.burstiness }
        }
    };
    if !(0.0..=1.0).contains(&a.max_failure_rate) {
        return Err(anyhow!(
            "--max-failure-rate {}: must be a fraction from 0 to 1 (0.05 = 5 %)",
            a.max_failure_rate
        ));
    }
    let spec = SweepSpec {
        url,
        endpoint,
        api_key: a.api_key.clone().map(Secret::new),
        secrets: Secrets::new(a.api_key.as_deref(), a.extra_body.as_deref(), a.url.as_deref()),
        body,
        timeouts: Timeouts {
            connect: a.connect_timeout,
            read: a.read_timeout,
            first_token: a.first_token_timeout,
            total: a.total_timeout,
        },
        levels,
        search: search.map(|(s, _)| s),
        arrival,
        pacing: match a.pacing {
            PacingKind::Exact => Pacing::Exact,
            PacingKind::Spin => Pacing::Spin,
            PacingKind::Coarse => Pacing::Coarse,
        },
        warmup: a.warmup,
        duration: a.duration,
        seed: a.seed,
        slo,
        out: a.out.clone(),
        preflight: !a.no_preflight,
        progress: !a.quiet,
        grace: a.grace,
        argv: std::env::args().collect(),
        metrics_url: a.metrics_url.clone(),
        metrics_interval: a.metrics_interval,
        gpu_sampler: local_gpu_sampler(a.url.as_deref().unwrap_or_default()),
        sysfs_root: a.sysfs_root.clone(),
        engine: None,
        isolate: !a.no_isolate,
        serve_state_dir: a
            .compare
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/run/nodeagent")),
    };
    Ok((spec, dataset, a.format))
}

/// Cancels `token` at the first SIGINT or SIGTERM (Ctrl-C, a timeout, CI, systemd, `docker
/// stop`), after `say(signal name)`. The handlers are installed before this returns, so no
/// signal from then on kills the process; later signals are ignored (the run is already
/// ending). Call it inside a tokio runtime.
pub(crate) fn on_interrupt(
    token: CancellationToken,
    say: impl FnOnce(&str) + Send + 'static,
) -> Result<(), CmdError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT").failed()?;
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM").failed()?;
    tokio::spawn(async move {
        let name = tokio::select! {
            Some(()) = int.recv() => "SIGINT",
            Some(()) = term.recv() => "SIGTERM",
            else => return,
        };
        say(name);
        token.cancel();
        // Keep the handlers installed: a second signal must not kill the run that is saving.
        loop {
            tokio::select! {
                Some(()) = int.recv() => {}
                Some(()) = term.recv() => {}
                else => return,
            }
        }
    });
    Ok(())
}

/// Raises the soft open-file limit to the hard one: an open loop may hold thousands of
/// connections, and the usual soft limit of 1024 would turn them into `connect_error`s.
pub(crate) fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::debug!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
    }
}

/// The GPU sampler `verify` uses while it sweeps an engine on this host (a loopback URL) and a
/// GPU tool is on PATH; `None` otherwise (the sweep runs without GPU figures).
pub(crate) fn local_gpu_sampler(url: &str) -> Option<Arc<dyn Sampler>> {
    let host = url.split("://").nth(1).unwrap_or(url).split(['/', ':']).next().unwrap_or("");
    if !matches!(host, "127.0.0.1" | "localhost" | "[") {
        return None;
    }
    let s = ToolSampler::detect(
        None,
        Path::new("mx-smi"),
        Path::new("nvidia-smi"),
        std::time::Duration::from_secs(5),
    )
    .ok()?;
    tracing::info!(sampler = %s.describe(), "sampling the GPUs during the sweep");
    Some(Arc::new(s))
}

/// The host's NUMA nodes and their CPUs from `<sysfs>/devices/system/node/node*/cpulist` (the
/// probe's own sysfs reader); a kernel without NUMA nodes in sysfs counts as one node 0 holding
/// every online CPU (`<sysfs>/devices/system/cpu/online`).
pub(crate) fn host_nodes(sysfs_root: &Path) -> anyhow::Result<HostNodes> {
    let facts = crate::host::sysfs::read(sysfs_root, &[])?;
    let mut nodes: std::collections::BTreeMap<u32, CpuSet> =
        facts.machine.nodes.into_iter().map(|n| (n.id, n.cpus)).collect();
    if nodes.is_empty() {
        let path = sysfs_root.join("devices/system/cpu/online");
        let read = || -> anyhow::Result<CpuSet> {
            let text = std::fs::read_to_string(&path)?;
            Ok(CpuSet::parse_list(text.trim())?)
        };
        let cpus = read().with_context(|| format!("cannot read {}", path.display()))?;
        nodes.insert(0, cpus);
    }
    Ok(HostNodes { nodes })
}

/// A factory of engine runtimes for `config`: one fresh runtime per engine life. The engine's
/// output is appended to `engine_log` (kept beside the results), else it shares stderr.
pub(crate) fn factory(
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
    let options = RuntimeOptions {
        state_dir,
        instance: "compare".into(),
        engine_log,
        stdout_to_stderr: true,
        adopt_orphans: false,
    };
    Ok(Box::new(move |binding: &Binding| -> Result<Box<dyn EngineRuntime>, String> {
        let spec =
            LaunchSpec::build(&config, binding.clone(), &self_exe).map_err(|e| e.to_string())?;
        runtime_for(spec, &config.container, &options).map_err(|e| e.to_string())
    }))
}

/// Exit 1 when a sub-run failed or the comparison stopped early.
pub(crate) fn compare_outcome(report: &CompareReport) -> Result<(), CmdError> {
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

/// The compare run of `choices` with the engine, timeouts and placement limits of `c`
/// (`demo` runs one too); no per-rank layout.
pub(crate) fn compare_spec(
    c: &crate::config::Config,
    choices: Vec<(crate::verify::bindings::Choice, Binding)>,
    trials: u32,
    out: std::path::PathBuf,
    sweep: crate::verify::sweep::SweepSpec,
    health_addr: std::net::SocketAddr,
) -> crate::verify::trials::CompareSpec {
    let policy = c.policy();
    crate::verify::trials::CompareSpec {
        choices,
        trials,
        out,
        sweep,
        health_addr,
        model: c.engine.served_model_name.clone(),
        ready_timeout: policy.ready_timeout,
        stop_grace: policy.stop_grace,
        proc: crate::supervise::procs::ProcFs::default(),
        limits: crate::verify::compare::PlacementLimits {
            memory_off_node: policy.memory_off_node_alert,
            cpu_outside: policy.cpu_outside_alert,
        },
        per_rank: None,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn run_args(argv: &[&str]) -> VerifyRunArgs {
        let cli = Cli::try_parse_from(
            [&["nodeagent", "verify", "--url", "http://127.0.0.1:1"], argv].concat(),
        )
        .unwrap();
        match cli.command {
            Command::Verify(v) => v.run,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn slo_list_parses_durations_and_refuses_unknown_keys() {
        let slo = parse_slo("ttft=2s, tpot=50ms,latency=30").unwrap();
        assert_eq!(
            (slo.ttft_s, slo.tpot_s, slo.latency_s, slo.itl_s),
            (Some(2.0), Some(0.05), Some(30.0), None)
        );
        assert!(parse_slo("ttft").unwrap_err().to_string().contains("KEY=DURATION"));
        assert!(parse_slo("foo=1s").unwrap_err().to_string().contains("foo"));
    }

    #[test]
    fn seed_style_sweeps_become_levels() {
        let a = run_args(&["--parallels", "8", "--parallels", "16", "--n", "1000"]);
        let l = levels(&a).unwrap();
        assert_eq!(
            l.iter().map(|x| (x.parallel, x.number)).collect::<Vec<_>>(),
            vec![(8, 1000), (16, 1000)]
        );
        let a = run_args(&["--parallel", "8", "16", "--number", "10", "20"]);
        assert_eq!(levels(&a).unwrap()[1].number, 20);
        let a = run_args(&["--rate", "5", "10", "--parallel", "64"]);
        let l = levels(&a).unwrap();
        assert_eq!((l[1].rate, l[1].parallel), (Some(10.0), 64));
        assert!(levels(&run_args(&["--parallel", "0"])).is_err());
        // Audit of wave 9: a zero timeout failed every request (or none), NaN was sent as null.
        for bad in [
            ["--connect-timeout", "0"],
            ["--read-timeout", "0s"],
            ["--first-token-timeout", "0"],
            ["--total-timeout", "0ms"],
            ["--temperature", "nan"],
            ["--temperature", "inf"],
            ["--metrics-url", "notaurl"],
            ["--metrics-url", "https://h:8000/metrics"],
        ] {
            let msg = check_request_settings(&run_args(&bad)).unwrap_err().to_string();
            assert!(msg.starts_with(bad[0]), "{bad:?}: {msg}");
        }
        check_request_settings(&run_args(&["--temperature", "0.7"])).unwrap();
        assert!(levels(&run_args(&["--rate", "0"])).is_err());
        assert!(levels(&run_args(&["--parallel", "1", "--number", "0"])).is_err());
    }

    #[test]
    fn search_flags_become_a_search_and_its_step_template() {
        let a = run_args(&["--search", "concurrency", "--slo", "ttft=500ms", "--parallel", "4"]);
        let (s, l) = search(&a).unwrap().unwrap();
        assert_eq!(
            (s.kind, s.start, s.attainment, s.max_steps),
            (SearchKind::Concurrency, 4.0, 0.99, 12)
        );
        assert_eq!((l.parallel, l.rate, l.number), (4, None, 1000));
        let a = run_args(&[
            "--search",
            "rate",
            "--slo",
            "e2e=2s",
            "--rate",
            "2.5",
            "--parallel",
            "64",
            "--slo-attainment",
            "0.9",
            "--search-max-steps",
            "5",
            "--number",
            "50",
        ]);
        let (s, l) = search(&a).unwrap().unwrap();
        assert_eq!((s.kind, s.start, s.attainment, s.max_steps), (SearchKind::Rate, 2.5, 0.9, 5));
        assert_eq!((l.parallel, l.rate, l.number), (64, Some(2.5), 50));
        let bad = |argv: &[&str]| search(&run_args(argv)).unwrap_err().to_string();
        assert!(bad(&["--search", "rate", "--slo", "ttft=1s", "--rate", "1", "2"])
            .contains("one --rate"));
        assert!(bad(&["--search", "concurrency", "--slo", "ttft=1s", "--rate", "1"])
            .contains("drop --rate"));
        assert!(bad(&["--search", "concurrency", "--slo", "ttft=1s", "--slo-attainment", "0"])
            .contains("--slo-attainment 0"));
        assert!(bad(&["--search", "concurrency", "--slo", "ttft=1s", "--n", "1", "2"])
            .contains("one --number"));
        // --search without --slo is refused by the parser.
        assert!(
            Cli::try_parse_from(["nodeagent", "verify", "--url", "u", "--search", "rate"]).is_err()
        );
    }

    #[test]
    fn host_nodes_come_from_sysfs_else_one_node_of_the_online_cpus() {
        let root = tempfile::tempdir().unwrap();
        let cpu = root.path().join("devices/system/cpu");
        std::fs::create_dir_all(&cpu).unwrap();
        // No node directory and no online file: nothing to go on.
        assert!(host_nodes(root.path()).unwrap_err().to_string().contains("cannot read"));
        std::fs::write(cpu.join("online"), "0-3\n").unwrap();
        let h = host_nodes(root.path()).unwrap();
        assert_eq!(
            h.nodes.into_iter().collect::<Vec<_>>(),
            [(0, CpuSet::parse_list("0-3").unwrap())]
        );
        for (id, cpus) in [(0, "0-1"), (1, "2-3")] {
            let node = root.path().join(format!("devices/system/node/node{id}"));
            std::fs::create_dir_all(&node).unwrap();
            std::fs::write(node.join("cpulist"), format!("{cpus}\n")).unwrap();
        }
        let h = host_nodes(root.path()).unwrap();
        assert_eq!(h.nodes.len(), 2);
        assert_eq!(h.nodes[&1], CpuSet::parse_list("2-3").unwrap());
    }
}
