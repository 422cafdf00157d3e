//! `nodeagent simulate`: run the engine simulator as a process that behaves like `vllm serve`
//! to a supervisor: it refuses connections while "loading" (`--startup-delay-ms`), prints
//! `listening on http://ADDR` as its first stdout line once the port accepts connections, logs
//! uvicorn's readiness lines on stderr, starts worker processes in their own sessions, can
//! crash (`--exit-after-*`) or hang (`--hang-after-ms`) on cue, and on SIGTERM/SIGINT stops
//! gracefully (listener closed, streams in flight aborted, workers stopped) and exits 0.
//!
//! Also `nodeagent simulate-worker` (hidden), the worker processes' entry point.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{self, SimulateArgs, SimulateWorkerArgs};
use crate::exit::{CmdError, ResultExt};
use crate::sim::{self, FaultRates, LatencyModel, OutputLen, OutputLenDist, SimConfig, StopReason};

/// Turns the arguments into a checked `SimConfig`.
pub fn config_from(args: &SimulateArgs) -> Result<SimConfig, CmdError> {
    let ms = |name: &str, v: f64| {
        Duration::try_from_secs_f64(v / 1000.0)
            .map_err(|_| anyhow::anyhow!("--{name} must be a non-negative number of ms, got {v}"))
            .bad_input()
    };
    let latency = if args.zero_delay {
        LatencyModel::ZERO
    } else {
        LatencyModel {
            prefill_base: ms("prefill-base-ms", args.prefill_base_ms)?,
            prefill_per_token: ms("prefill-per-token-ms", args.prefill_per_token_ms)?,
            decode_base: ms("decode-base-ms", args.decode_base_ms)?,
            decode_per_running: ms("decode-per-running-ms", args.decode_per_running_ms)?,
        }
    };
    let cfg = SimConfig {
        host: args.host,
        port: args.port,
        served_model_name: args.served_model_name.clone(),
        seed: args.seed,
        max_model_len: args.max_model_len,
        max_num_seqs: args.max_num_seqs.unwrap_or(if args.zero_delay { 0 } else { 256 }),
        latency,
        output_len: OutputLen {
            dist: output_len_dist(args.output_len_dist),
            mean: args.output_len_mean,
        },
        faults: FaultRates {
            http_500: args.fault_500_rate,
            drop: args.fault_drop_rate,
            stall: args.fault_stall_rate,
            stream_error: args.fault_stream_error_rate,
        },
        stall: Duration::from_millis(args.stall_ms),
        kv_cache_tokens: args.kv_cache_tokens,
        hang_after: args.hang_after_ms.map(Duration::from_millis),
        freeze_after: args.freeze_after_ms.map(Duration::from_millis),
        stop_admitting_after: args.stop_admitting_after_ms.map(Duration::from_millis),
        fail_completions_after: args.fail_completions_after_ms.map(Duration::from_millis),
        no_health: args.no_health,
        prefill_chunk_tokens: args.prefill_chunk_tokens,
        exit_after: args.exit_after_ms.map(Duration::from_millis),
        exit_after_requests: args.exit_after_requests,
        max_records: args.max_records,
        prefix_cache_blocks: args.prefix_cache_blocks,
        prefix_block_tokens: args.prefix_block_tokens,
        prefix_hit_cost: args.prefix_hit_cost,
    };
    cfg.validate().bad_input()?;
    Ok(cfg)
}

/// The CLI's `--output-len-dist` as the simulator's type (the CLI does not import `sim`).
fn output_len_dist(dist: cli::OutputLenDist) -> OutputLenDist {
    match dist {
        cli::OutputLenDist::Fixed => OutputLenDist::Fixed,
        cli::OutputLenDist::Uniform => OutputLenDist::Uniform,
        cli::OutputLenDist::Exponential => OutputLenDist::Exponential,
    }
}

pub fn run(args: SimulateArgs) -> Result<(), CmdError> {
    let cfg = config_from(&args)?;
    if let Some(path) = &args.pid_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pid file {}", path.display()))
            .bad_input()?;
    }
    let pid_file = PidFile(args.pid_file.clone());

    // Workers start before the port opens, as vLLM's do while the model loads. Spawned from
    // this (the main) thread, which lives as long as the process.
    let mut workers = if args.workers > 0 {
        let exe = std::env::current_exe()
            .context("cannot find the nodeagent executable to start workers")
            .failed()?;
        sim::workers::spawn_with_memory(
            &exe,
            args.workers,
            args.orphan_workers,
            args.worker_memory_mb,
        )
        .failed()?
    } else {
        sim::workers::Workers::default()
    };
    if !workers.pids().is_empty() {
        tracing::info!(pids = ?workers.pids(), "started simulator workers");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .failed()?;
    let outcome = runtime.block_on(serve(cfg, &args));
    match outcome {
        Ok(Ending::Graceful) => {
            workers.stop(Duration::from_secs(5));
            drop(pid_file);
            eprintln!("INFO:     Finished server process [{}]", std::process::id());
            Ok(())
        }
        Ok(Ending::Crash(reason)) => {
            // A crash does no cleanup: workers notice their parent is gone by themselves, the
            // pid file stays behind, like after a real engine crash.
            eprintln!(
                "ERROR:    simulated engine crash ({reason:?}), exit status {}",
                args.exit_code
            );
            std::mem::forget(pid_file);
            std::process::exit(i32::from(args.exit_code));
        }
        Err(e) => {
            workers.stop(Duration::from_secs(5));
            Err(e)
        }
    }
}

enum Ending {
    Graceful,
    Crash(StopReason),
}

async fn serve(cfg: SimConfig, args: &SimulateArgs) -> Result<Ending, CmdError> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM").failed()?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT").failed()?;

    if args.startup_delay_ms > 0 {
        // "Loading the model": nothing listens yet, so connections are refused.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(args.startup_delay_ms)) => {}
            _ = sigterm.recv() => return Ok(Ending::Graceful),
            _ = sigint.recv() => return Ok(Ending::Graceful),
        }
    }
    let mut handle = sim::start(cfg).await.failed()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", handle.base_url())
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")
        .failed()?;
    drop(stdout);
    eprintln!("INFO:     Started server process [{}]", std::process::id());
    eprintln!("INFO:     Application startup complete.");
    eprintln!("INFO:     Uvicorn running on {} (Press CTRL+C to quit)", handle.base_url());

    let ending = tokio::select! {
        _ = sigterm.recv() => Ending::Graceful,
        _ = sigint.recv() => Ending::Graceful,
        reason = handle.stop_requested() => Ending::Crash(reason),
    };
    match ending {
        Ending::Graceful => {
            eprintln!("INFO:     Shutting down");
            handle.shutdown().await.failed()?;
        }
        Ending::Crash(StopReason::ExitAfterRequests) => {
            // Let the last response's final bytes reach the socket before dying.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ending::Crash(StopReason::ExitAfterTime) => {}
    }
    Ok(ending)
}

/// Removes the pid file when dropped (a graceful stop); forgotten on a crash.
struct PidFile(Option<PathBuf>);

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            remove_quietly(path);
        }
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove pid file");
    }
}

pub fn run_worker(args: SimulateWorkerArgs) -> Result<(), CmdError> {
    // Held until the worker ends.
    let _memory = sim::workers::touch_memory(args.memory_mb);
    sim::workers::run_worker(args.rank, args.parent_pid, args.orphan).failed()
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn every_output_len_dist_maps_to_the_simulator_dist_of_the_same_name() {
        for &dist in cli::OutputLenDist::value_variants() {
            let cli_name = dist.to_possible_value().unwrap().get_name().to_string();
            let sim_name = serde_json::to_value(output_len_dist(dist)).unwrap();
            assert_eq!(sim_name, serde_json::Value::String(cli_name));
        }
    }
}
