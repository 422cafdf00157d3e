//! `nodeagent monitor`: one sample (`--once`), or a live view refreshed every interval, of the
//! GPUs, their processes (tied to `--engine-pid`'s process tree) and the alerts; optionally
//! serving `/metrics` and `/status` while it runs. Reads live tools or a snapshot (`--from`).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::cli::MonitorArgs;
use crate::exit::{CmdError, ResultExt};
use crate::monitor::checks::CheckConfig;
use crate::monitor::{
    agent, server, view, AgentChannels, AgentConfig, DirSampler, EngineReport, Monitor, Sampler,
    Shared, ToolSampler,
};

pub fn run(args: MonitorArgs) -> Result<(), CmdError> {
    if args.interval.is_zero() {
        return Err(CmdError::bad_input(anyhow::anyhow!("--interval must be above zero")));
    }
    if !(0.0..=100.0).contains(&args.memory_threshold) {
        return Err(CmdError::bad_input(anyhow::anyhow!(
            "--memory-threshold {} is not a percentage (0-100)",
            args.memory_threshold
        )));
    }
    let mut sysfs_root = args.sysfs_root.clone();
    let sampler: Arc<dyn Sampler> = match &args.from {
        Some(dir) => {
            // A snapshot keeps its sysfs files under `sysfs/` (`probe --save`) or `sysfs/sys/`
            // (device captures): use them for NUMA labels unless a root was given.
            if args.sysfs_root == Path::new("/sys") {
                if let Some(root) = ["sysfs", "sysfs/sys"]
                    .iter()
                    .map(|d| dir.join(d))
                    .find(|d| d.join("bus/pci/devices").is_dir())
                {
                    sysfs_root = root;
                }
            }
            Arc::new(DirSampler::new(dir).bad_input()?)
        }
        None => {
            let vendor = super::source::gpu_vendor(args.tool);
            Arc::new(
                ToolSampler::detect(vendor, &args.mx_smi, &args.nvidia_smi, args.tool_timeout)
                    .bad_input()?,
            )
        }
    };
    let config = AgentConfig {
        interval: args.interval,
        checks: CheckConfig {
            memory_high_pct: args.memory_threshold,
            hung_after: args.hung_after,
            ..CheckConfig::default()
        },
        sysfs_root,
        proc_root: args.proc_root.clone(),
        ..AgentConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
        .failed()?;
    rt.block_on(run_async(args, sampler, config))
}

fn engine_report(args: &MonitorArgs, proc_root: &Path) -> EngineReport {
    let supervised = !args.engine_pids.is_empty();
    let running = args.engine_pids.iter().any(|p| proc_root.join(p.to_string()).exists());
    EngineReport {
        supervised,
        state: if !supervised {
            String::new()
        } else if running {
            "ready".into()
        } else {
            "stopped".into()
        },
        running,
        pids: args.engine_pids.clone(),
        gpus: (!args.engine_gpus.is_empty()).then(|| args.engine_gpus.clone()),
        metrics_url: args.engine_metrics.clone(),
        ..Default::default()
    }
}

async fn run_async(
    args: MonitorArgs,
    sampler: Arc<dyn Sampler>,
    config: AgentConfig,
) -> Result<(), CmdError> {
    let proc_root = config.proc_root.clone();
    let mut monitor = Monitor::new(sampler, config);
    if args.once {
        monitor.tick(&engine_report(&args, &proc_root)).await;
        let status = monitor.status().clone();
        print_status(&status, args.json, false)?;
        if let Some(why) = &status.missing {
            return Err(CmdError::failed(anyhow::anyhow!("GPU sample missing: {why}")));
        }
        return Ok(());
    }

    let shared = Arc::new(Shared::default());
    let cancel = CancellationToken::new();
    let (engine_tx, engine_rx) = watch::channel(engine_report(&args, &proc_root));
    let (samples_tx, mut samples_rx) = broadcast::channel(16);
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = args.listen {
        let (bound, serve) =
            server::bind(addr, shared.clone(), cancel.clone()).await.bad_input()?;
        eprintln!("serving http://{bound}/metrics and http://{bound}/status");
        tasks.spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    let channels = AgentChannels { engine: engine_rx, hung: None, samples: Some(samples_tx) };
    tasks.spawn(agent::run(monitor, shared.clone(), channels, cancel.clone()));

    let live = !args.json && std::io::stdout().is_terminal();
    let mut seen = 0u64;
    let result = loop {
        tokio::select! {
            // Ctrl-C / SIGTERM end the view cleanly; the endpoint goes down with it.
            _ = tokio::signal::ctrl_c() => break Ok(()),
            r = samples_rx.recv() => match r {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    seen += 1;
                    if let Err(e) = print_status(&shared.snapshot(), args.json, live) {
                        break Err(e);
                    }
                    let _ = engine_tx.send(engine_report(&args, &proc_root));
                    if args.count.is_some_and(|n| seen >= n) {
                        break Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break Ok(()),
            },
        }
    };
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    result
}

fn print_status(
    status: &crate::monitor::MonitorStatus,
    json: bool,
    clear: bool,
) -> Result<(), CmdError> {
    let mut out = std::io::stdout().lock();
    let r = if json {
        serde_json::to_writer(&mut out, status)
            .map_err(std::io::Error::other)
            .and_then(|_| writeln!(out))
    } else {
        // Clear the screen and home the cursor for a live view on a terminal.
        let prefix = if clear { "\x1b[2J\x1b[H" } else { "" };
        write!(out, "{prefix}{}", view::render(status))
    };
    r.and_then(|_| out.flush()).context("writing to stdout").failed()
}
