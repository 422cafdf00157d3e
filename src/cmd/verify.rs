//! `nodeagent verify`: turns the CLI arguments into a `SweepSpec`, runs the sweep on a tokio
//! runtime with SIGINT/SIGTERM handling, prints tables (or evalscope blocks, or JSON), and
//! decides the exit status: 2 for bad arguments, dataset or `--out`, 1 when the server is
//! unreachable, a level has no success, a level's failures exceed `--max-failure-rate` (5 %
//! by default), or the run was interrupted.
//! `nodeagent verify compare A B` prints two runs side by side.
//!
//! Not here: turning the arguments into a `SweepSpec` (`cmd::sweep`, shared with `--compare`
//! and `demo`), and `verify --compare` (`cmd::compare`, to which `cmd::dispatch` routes it).

use std::io::Write;

use anyhow::{anyhow, Context};
use tokio_util::sync::CancellationToken;

use super::sweep::{build, on_interrupt, raise_open_file_limit};
use crate::cli::{VerifyArgs, VerifyCommand, VerifyFormat, VerifyRunArgs};
use crate::exit::{CmdError, ResultExt};
use crate::report::table::{gpu_table, level_table, search_table, server_table, sweep_table};
use crate::summary::Summary;
use crate::verify::{run_sweep, VerifyError};

/// `verify compare A B`, or a sweep (`verify --compare` never comes here: see `cmd::dispatch`).
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
        None => run_sweep_cmd(args.run),
    }
}

fn run_sweep_cmd(args: VerifyRunArgs) -> Result<(), CmdError> {
    let (spec, dataset, format) = build(&args).bad_input()?;
    raise_open_file_limit();
    if args.realtime {
        if let Err(e) = crate::loadgen::timer::raise_to_realtime() {
            eprintln!("warning: {e}; running at normal priority");
        }
    }
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
        let grace = spec.grace;
        on_interrupt(interrupt.clone(), move |signal| {
            eprintln!(
                "interrupted ({signal}): no new requests; requests in flight get {} to finish",
                humantime::format_duration(grace)
            );
        })?;
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
        .map_err(sweep_error)
    })?;
    let summary = &outcome.summary;
    let mut stdout = std::io::stdout().lock();
    match format {
        VerifyFormat::Table => (|| {
            if summary.levels.len() > 1 {
                sweep_table(&summary.levels, &mut stdout)?;
            }
            server_table(&summary.levels, &mut stdout)?;
            if let Some(search) = &summary.search {
                search_table(search, &mut stdout)?;
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

/// The exit status of a sweep that failed: 2 for what the caller chose (a model, a schedule,
/// a request the client cannot build, an output directory that is a symlink or a file), 1
/// for the server's or the host's faults.
fn sweep_error(e: VerifyError) -> CmdError {
    match e {
        VerifyError::Client(crate::loadgen::request::ClientError::Models { .. })
        | VerifyError::Preflight { .. } => CmdError::failed(e),
        VerifyError::NoModel { .. } | VerifyError::Schedule(_) | VerifyError::Client(_) => {
            CmdError::bad_input(e)
        }
        VerifyError::OutDir(ref o) if o.is_bad_input() => CmdError::bad_input(e),
        VerifyError::Write { .. }
        | VerifyError::Csv { .. }
        | VerifyError::Chart(_)
        | VerifyError::OutDir(_) => CmdError::failed(e),
    }
}

/// The exit status of a finished sweep: 1 when it was interrupted, a level had no success, or
/// a measured level's failed/sent is above `max_failure_rate` (`--max-failure-rate`, 0.05 by
/// default); the first such level is named with its failure rate.
pub fn verdict(summary: &Summary, max_failure_rate: f64) -> Result<(), CmdError> {
    if summary.meta.interrupted {
        return Err(CmdError::failed(anyhow!(
            "interrupted after {} level(s); what was measured is reported and saved",
            summary.levels.len()
        )));
    }
    // A level with no success first: it says more than a failure rate elsewhere.
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
    }
    for l in &summary.levels {
        let label = crate::report::table::level_label(l);
        let rate = l.failed as f64 / l.requests.max(1) as f64;
        if rate > max_failure_rate {
            return Err(CmdError::failed(anyhow!(
                "level {label}: {} of {} requests failed ({:.1} % > --max-failure-rate {}); \
                 the results are saved",
                l.failed,
                l.requests,
                rate * 100.0,
                max_failure_rate
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(verdict(&s, 0.1).is_ok());
        let e = verdict(&s, 0.05).unwrap_err();
        assert_eq!(e.code(), 1);
        assert!(e.to_string().contains("level c=8: 1 of 10 requests failed (10.0 % >"), "{e}");
        // 1 of 20 is 5 %: not above the default.
        s.levels[0].requests = 20;
        s.levels[0].succeeded = 19;
        assert!(verdict(&s, 0.05).is_ok());
        assert!(verdict(&s, 0.0).is_err());
        s.levels.push(LevelStats { parallel: 16, requests: 3, failed: 3, ..Default::default() });
        assert!(verdict(&s, 1.0).unwrap_err().to_string().contains("c=16: no request succeeded"));
        // Over the limit at c=8 and no success at c=16: the worse is named.
        s.levels[0].failed = 10;
        s.levels[0].succeeded = 10;
        assert!(verdict(&s, 0.05).unwrap_err().to_string().contains("c=16: no request succeeded"));
        s.levels.truncate(1);
        s.meta.interrupted = true;
        assert!(verdict(&s, 1.0).unwrap_err().to_string().contains("interrupted"));
    }
}
