//! `nodeagent verify`: turns the CLI arguments into a `SweepSpec`, runs the sweep on a tokio
//! runtime with Ctrl-C handling, prints tables (or evalscope blocks, or JSON), and decides the
//! exit status: 2 for bad arguments or dataset, 1 when the server is unreachable, a level has
//! no success, failures exceed `--max-failure-rate`, or the run was interrupted.
//! `nodeagent verify compare A B` prints two runs side by side.

use std::io::Write;

use anyhow::{anyhow, Context};
use tokio_util::sync::CancellationToken;

use crate::cli::{
    ArrivalKind, DatasetKind, VerifyApi, VerifyArgs, VerifyCommand, VerifyFormat, VerifyRunArgs,
};
use crate::exit::{CmdError, ResultExt};
use crate::loadgen::dataset::{Dataset, DatasetSpec, LengthFilter};
use crate::loadgen::request::{parse_extra_body, Api, BodySettings, Endpoint, Timeouts};
use crate::loadgen::schedule::Arrival;
use crate::loadgen::tokenizer::PromptTokenizer;
use crate::report::table::{gpu_table, level_table, sweep_table};
use crate::summary::{Slo, Summary};
use crate::verify::{run_sweep, LevelSpec, SweepSpec, VerifyError};

pub fn run(args: VerifyArgs) -> Result<(), CmdError> {
    match args.command {
        Some(VerifyCommand::Compare { run_a, run_b }) => {
            let a = Summary::read(&run_a).bad_input()?;
            let b = Summary::read(&run_b).bad_input()?;
            let names = (run_a.display().to_string(), run_b.display().to_string());
            let n = crate::report::compare::compare(
                &a,
                &b,
                (&names.0, &names.1),
                std::io::stdout().lock(),
            )
            .context("writing to stdout")
            .failed()?;
            if n == 0 {
                return Err(CmdError::bad_input(anyhow!(
                    "{} and {} have no level in common",
                    names.0,
                    names.1
                )));
            }
            Ok(())
        }
        None if args.run.compare.compare.is_some() => super::compare::run(args.run),
        None => run_sweep_cmd(args.run),
    }
}

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
            "latency" | "e2el" => &mut slo.latency_s,
            other => {
                return Err(anyhow!("bad --slo key {other:?}: use ttft, tpot, itl or latency"))
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
            .map(|(&p, n)| LevelSpec { parallel: p, rate: None, number: n })
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
            .map(|((&r, c), n)| LevelSpec { parallel: c, rate: Some(r), number: n })
            .collect()
    };
    if specs.iter().any(|l| l.number == 0) {
        return Err(anyhow!("--number must be at least 1"));
    }
    Ok(specs)
}

pub(crate) fn build(a: &VerifyRunArgs) -> anyhow::Result<(SweepSpec, Dataset, VerifyFormat)> {
    let url = a.url.clone().ok_or_else(|| anyhow!("--url is required"))?;
    let api = a.api.map(|x| match x {
        VerifyApi::Chat => Api::Chat,
        VerifyApi::Completions => Api::Completions,
    });
    let endpoint = Endpoint::parse(&url, api)?;
    let levels = levels(a)?;
    let max_number = levels.iter().map(|l| l.number).max().unwrap_or(1);
    let path = |kind: &'static str| {
        a.dataset_path.clone().ok_or(crate::loadgen::dataset::DatasetError::NoPath { kind })
    };
    let dataset_spec = match a.dataset {
        DatasetKind::Openqa => {
            DatasetSpec::OpenQa { path: path("openqa")?, field: a.dataset_field.clone() }
        }
        DatasetKind::Line => DatasetSpec::Lines { path: path("line")? },
        DatasetKind::Sharegpt => DatasetSpec::ShareGpt { path: path("sharegpt")? },
        DatasetKind::Random => DatasetSpec::Random {
            input_len: a.input_len,
            count: (max_number + a.warmup).clamp(1, 100_000) as usize,
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
    let random_out = if a.dataset == DatasetKind::Random { a.output_len } else { None };
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
    if let Some(f) = a.max_failure_rate {
        if !(0.0..=1.0).contains(&f) {
            return Err(anyhow!("--max-failure-rate {f}: must be a fraction between 0 and 1"));
        }
    }
    let spec = SweepSpec {
        url,
        endpoint,
        api_key: a.api_key.clone(),
        body,
        timeouts: Timeouts {
            connect: a.connect_timeout,
            read: a.read_timeout,
            first_token: a.first_token_timeout,
            total: a.total_timeout,
        },
        levels,
        arrival,
        warmup: a.warmup,
        duration: a.duration,
        seed: a.seed,
        slo: a.slo.as_deref().map(parse_slo).transpose()?.unwrap_or_default(),
        out: a.out.clone(),
        preflight: !a.no_preflight,
        progress: !a.quiet,
        grace: a.grace,
        argv: std::env::args().collect(),
        gpu_sampler: crate::cmd::monitor::local_gpu_sampler(a.url.as_deref().unwrap_or_default()),
    };
    Ok((spec, dataset, a.format))
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

fn run_sweep_cmd(args: VerifyRunArgs) -> Result<(), CmdError> {
    let (spec, dataset, format) = build(&args).bad_input()?;
    raise_open_file_limit();
    // One thread: every request drives its connection inside its worker's task, so nothing gains
    // from a second thread but cross-thread wakeups; one core carries some 30,000 streamed
    // requests a second (BENCHMARKS.md), far beyond any engine, and the other cores stay with
    // the engine under test. Chunk times come from the kernel, not from this loop's clock.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")
        .failed()?;
    let max_failure_rate = args.max_failure_rate;
    let outcome = rt.block_on(async {
        let interrupt = CancellationToken::new();
        let on_signal = interrupt.clone();
        let grace = spec.grace;
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "interrupted: no new requests; requests in flight get {} to finish",
                    humantime::format_duration(grace)
                );
                on_signal.cancel();
            }
        });
        let mut stdout = std::io::stdout();
        run_sweep(&spec, &dataset, interrupt, |l| {
            let _ = match format {
                VerifyFormat::Table => level_table(l, &mut stdout).and_then(|()| writeln!(stdout)),
                VerifyFormat::Evalscope => {
                    crate::report::evalscope::benchmarking_summary(l, &mut stdout)
                        .and_then(|()| writeln!(stdout))
                }
                VerifyFormat::Json => Ok(()),
            };
        })
        .await
    });
    let outcome = outcome.map_err(|e| match e {
        VerifyError::Client(crate::loadgen::request::ClientError::Models { .. })
        | VerifyError::Preflight { .. } => CmdError::failed(e),
        VerifyError::NoModel { .. } | VerifyError::Schedule(_) | VerifyError::Client(_) => {
            CmdError::bad_input(e)
        }
        VerifyError::Write { .. } | VerifyError::Csv { .. } | VerifyError::Chart(_) => {
            CmdError::failed(e)
        }
    })?;
    let summary = &outcome.summary;
    let mut stdout = std::io::stdout().lock();
    match format {
        VerifyFormat::Table => (|| {
            if summary.levels.len() > 1 {
                sweep_table(&summary.levels, &mut stdout)?;
            }
            match &summary.meta.gpu {
                Some(gpu) => gpu_table(gpu, &mut stdout),
                None => Ok(()),
            }
        })(),
        VerifyFormat::Json => summary.write_json(&mut stdout),
        _ => Ok(()),
    }
    .context("writing to stdout")
    .failed()?;
    if let Some(dir) = &outcome.out {
        eprintln!("results in {}", dir.display());
    }
    verdict(summary, max_failure_rate)
}

/// The exit status of a finished sweep.
pub fn verdict(summary: &Summary, max_failure_rate: Option<f64>) -> Result<(), CmdError> {
    if summary.meta.interrupted {
        return Err(CmdError::failed(anyhow!(
            "interrupted after {} level(s); what was measured is reported and saved",
            summary.levels.len()
        )));
    }
    for l in &summary.levels {
        let label = crate::report::table::level_label(l);
        if l.succeeded == 0 {
            let why: Vec<String> = l.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
            return Err(CmdError::failed(anyhow!(
                "level {label}: no request succeeded ({} sent; {})",
                l.requests,
                if why.is_empty() { "none sent".into() } else { why.join(", ") }
            )));
        }
        if let Some(max) = max_failure_rate {
            let rate = l.failed as f64 / l.requests as f64;
            if rate > max {
                return Err(CmdError::failed(anyhow!(
                    "level {label}: {} of {} requests failed ({:.1}% > --max-failure-rate {})",
                    l.failed,
                    l.requests,
                    rate * 100.0,
                    max
                )));
            }
        }
    }
    Ok(())
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
        assert!(levels(&run_args(&["--rate", "0"])).is_err());
        assert!(levels(&run_args(&["--parallel", "1", "--number", "0"])).is_err());
    }

    #[test]
    fn verdict_fails_levels_without_success_or_over_the_failure_limit() {
        use crate::summary::LevelStats;
        let mut s = Summary::default();
        s.levels.push(LevelStats {
            parallel: 8,
            requests: 10,
            succeeded: 9,
            failed: 1,
            ..Default::default()
        });
        assert!(verdict(&s, None).is_ok());
        assert!(verdict(&s, Some(0.1)).is_ok());
        let e = verdict(&s, Some(0.05)).unwrap_err();
        assert_eq!(e.code(), 1);
        s.levels.push(LevelStats { parallel: 16, requests: 3, failed: 3, ..Default::default() });
        assert!(verdict(&s, None).unwrap_err().to_string().contains("c=16: no request succeeded"));
        s.levels.truncate(1);
        s.meta.interrupted = true;
        assert!(verdict(&s, None).unwrap_err().to_string().contains("interrupted"));
    }
}
