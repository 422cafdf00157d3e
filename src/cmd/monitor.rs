//! `nodeagent monitor`: one sample (`--once`), or a live view refreshed every interval, of the
//! GPUs, their processes (tied to `--engine-pid`'s process tree) and the alerts; optionally
//! serving `/metrics` and `/status` while it runs. Reads live tools or a snapshot (`--from`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::cli::MonitorArgs;
use crate::exit::{CmdError, ResultExt};
use crate::monitor::checks::CheckConfig;
use crate::monitor::{
    agent, server, view, AgentChannels, AgentConfig, DirSampler, EngineReport, Monitor, Sampler,
    Shared, ToolSampler,
};

pub fn run(args: MonitorArgs) -> Result<(), CmdError> {
    check_args(&args).bad_input()?;
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

/// The flags clap cannot judge alone: each refusal names the flag and its value.
fn check_args(args: &MonitorArgs) -> anyhow::Result<()> {
    if args.interval.is_zero() {
        anyhow::bail!("--interval must be above zero");
    }
    crate::monitor::checks::check_percentage("--memory-threshold", args.memory_threshold)
        .map_err(anyhow::Error::msg)?;
    if args.count == Some(0) {
        anyhow::bail!("--count 0: must be at least 1 (leave it out to run until interrupted)");
    }
    if args.hung_after == 0 {
        anyhow::bail!("--hung-after 0: must be at least 1 sample");
    }
    if let Some(url) = &args.engine_metrics {
        agent::check_http_url("--engine-metrics", url).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// `--engine-pid`'s processes as they were when the monitor started. A pid counts as running
/// while it names the same process: the same start time in `PROC/PID/stat` (a pid reused by
/// another process does not count) or, where `/proc` hides it (`hidepid`), while the kernel
/// still knows it (`kill(pid, 0)` answers anything but "no such process").
#[derive(Debug)]
struct EngineWatch {
    proc_root: PathBuf,
    /// Each pid and its start time (clock ticks since boot), when its stat was readable.
    pids: Vec<(u32, Option<u64>)>,
}

impl EngineWatch {
    /// Fails on a pid that names no process.
    fn new(pids: &[u32], proc_root: &Path) -> anyhow::Result<Self> {
        let w = Self {
            proc_root: proc_root.to_path_buf(),
            pids: pids.iter().map(|&p| (p, start_time(proc_root, p))).collect(),
        };
        if let Some((p, _)) = w.pids.iter().find(|&&(p, t)| !w.alive(p, t)) {
            anyhow::bail!("--engine-pid {p}: no such process (in {})", proc_root.display());
        }
        Ok(w)
    }

    fn alive(&self, pid: u32, started: Option<u64>) -> bool {
        match (start_time(&self.proc_root, pid), started) {
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
            // It was readable and is gone: the process ended.
            (None, Some(_)) => false,
            (None, None) => self.proc_root == Path::new("/proc") && kernel_knows(pid),
        }
    }

    fn running(&self) -> bool {
        self.pids.iter().any(|&(p, t)| self.alive(p, t))
    }
}

/// Field 22 of `PROC/PID/stat` (after the parenthesized command name, which may hold spaces).
fn start_time(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// `kill(pid, 0)`: the process exists, whether or not we may signal it.
fn kernel_knows(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

fn engine_report(args: &MonitorArgs, watch: &EngineWatch) -> EngineReport {
    let supervised = !args.engine_pids.is_empty();
    let running = watch.running();
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
    let watch = EngineWatch::new(&args.engine_pids, &config.proc_root).bad_input()?;
    let mut monitor = Monitor::new(sampler, config);
    if args.once {
        monitor.tick(&engine_report(&args, &watch)).await;
        let status = monitor.status().clone();
        print_status(&status, args.json, false)?;
        if let Some(why) = &status.missing {
            return Err(CmdError::failed(anyhow::anyhow!("GPU sample missing: {why}")));
        }
        return Ok(());
    }

    let shared = Arc::new(Shared::default());
    let cancel = CancellationToken::new();
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
    let engine = {
        let args = args.clone();
        Box::new(move || engine_report(&args, &watch))
    };
    let channels = AgentChannels { engine, hung: None, samples: Some(samples_tx) };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `PROC/PID/stat` with start time `start` (a command name with a space and a `)`).
    fn stat(root: &Path, pid: u32, start: u64) {
        std::fs::create_dir_all(root.join(pid.to_string())).unwrap();
        let fields: Vec<String> = (3..=21).map(|f| f.to_string()).collect();
        let text = format!("{pid} (vllm (x) y) {} {start} 0 0\n", fields.join(" "));
        std::fs::write(root.join(pid.to_string()).join("stat"), text).unwrap();
    }

    #[test]
    fn an_engine_pid_runs_while_it_names_the_process_it_named_at_start() {
        let root = tempfile::tempdir().unwrap();
        stat(root.path(), 100, 5555);
        stat(root.path(), 200, 7777);
        assert_eq!(start_time(root.path(), 100), Some(5555));
        let w = EngineWatch::new(&[100, 200], root.path()).unwrap();
        assert!(w.running());
        // One of two gone: still running.
        std::fs::remove_dir_all(root.path().join("200")).unwrap();
        assert!(w.running());
        // The other pid reused by a later process: not the engine.
        stat(root.path(), 100, 9999);
        assert!(!w.running());
        std::fs::remove_dir_all(root.path().join("100")).unwrap();
        assert!(!w.running());
    }

    #[test]
    fn an_engine_pid_that_names_no_process_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let e = EngineWatch::new(&[4_000_001], root.path()).unwrap_err().to_string();
        assert!(e.starts_with("--engine-pid 4000001: no such process (in "), "{e}");
        // No pid: nothing to watch, nothing running.
        assert!(!EngineWatch::new(&[], root.path()).unwrap().running());
    }

    #[test]
    fn on_the_real_proc_a_pid_whose_stat_cannot_be_read_is_asked_of_the_kernel() {
        let me = std::process::id();
        assert!(kernel_knows(me));
        assert!(!kernel_knows(i32::MAX as u32), "no pid is that high");
        assert!(!kernel_knows(u32::MAX), "not a pid");
        // Unreadable at start (as under hidepid): the kernel's word decides.
        let w = EngineWatch { proc_root: "/proc".into(), pids: vec![(me, None)] };
        assert!(w.running());
        let w = EngineWatch { proc_root: "/proc".into(), pids: vec![(i32::MAX as u32, None)] };
        assert!(!w.running());
    }
}
