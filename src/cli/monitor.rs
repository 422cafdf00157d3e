//! The arguments of `monitor`, and of the monitor under `serve` (`ServeMonitorArgs`, flattened
//! into serve's). Clap types only.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GpuToolArg {
    /// mx-smi if found, else nvidia-smi.
    Auto,
    /// MetaX: the `mx-smi` status table.
    Metax,
    /// NVIDIA: `nvidia-smi --query-gpu` / `--query-compute-apps` CSV.
    Nvidia,
}

#[derive(Debug, Clone, Args)]
pub struct MonitorArgs {
    /// Take one sample, print it and exit (exit 1 if the GPU tool failed).
    #[arg(long)]
    pub once: bool,
    /// Print JSON (the `/status` document; one line per tick when not `--once`).
    #[arg(long)]
    pub json: bool,
    /// Read a snapshot directory (`probe --save`: `mx-smi.txt`; or `nvidia-smi-query.csv` and
    /// `nvidia-smi-apps.csv`; or `nvidia-smi.txt`) instead of running the GPU tool.
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Which GPU tool to run.
    #[arg(long, value_enum, default_value_t = GpuToolArg::Auto)]
    pub tool: GpuToolArg,
    /// Path of the mx-smi tool.
    #[arg(long, value_name = "PATH", default_value = "mx-smi")]
    pub mx_smi: PathBuf,
    /// Path of the nvidia-smi tool.
    #[arg(long, value_name = "PATH", default_value = "nvidia-smi")]
    pub nvidia_smi: PathBuf,
    /// Time between samples, e.g. `5s`, `500ms`.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Give up on the GPU tool after this long; the sample is then marked missing.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tool_timeout: std::time::Duration,
    /// Stop after this many samples (default: run until interrupted).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Attribute GPU processes to the process tree of this engine pid (repeatable).
    #[arg(long = "engine-pid", value_name = "PID")]
    pub engine_pids: Vec<u32>,
    /// The engine's GPUs, e.g. `0,1,2,3` (default: those its processes hold memory on).
    #[arg(long, value_delimiter = ',', value_name = "INDEXES")]
    pub engine_gpus: Vec<u32>,
    /// The engine's Prometheus endpoint (vLLM `/metrics`): requests in flight for the
    /// hung-engine check, re-exported under `/metrics/engine`.
    #[arg(long, value_name = "URL")]
    pub engine_metrics: Option<String>,
    /// Serve `/metrics`, `/metrics/engine` and `/status` on this address, e.g.
    /// `127.0.0.1:9400` (port 0 picks a free port; the bound address is printed on stderr).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Alert when a GPU's memory use is above this percentage of its total.
    #[arg(long, value_name = "PCT", default_value_t = 97.0)]
    pub memory_threshold: f64,
    /// Consecutive samples at 0 % utilization with requests in flight before the engine is
    /// reported hung.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub hung_after: u32,
    /// Root of the sysfs tree (GPU NUMA nodes).
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    pub sysfs_root: PathBuf,
    /// Root of the proc tree (the engine's process tree).
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    pub proc_root: PathBuf,
}

/// The monitor under `nodeagent serve` (flattened into `ServeArgs`).
#[derive(Debug, Clone, Args)]
pub struct ServeMonitorArgs {
    /// Watch the GPUs and serve Prometheus `/metrics` and JSON `/status` on 127.0.0.1:PORT
    /// (0 picks a free port, logged at start). The monitor is off when not given.
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,
    /// Which GPU tool the monitor runs (`--mx-smi` / `--nvidia-smi` give their paths).
    #[arg(long, value_enum, default_value_t = GpuToolArg::Auto)]
    pub gpu_tool: GpuToolArg,
    /// Time between GPU samples.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub gpu_interval: std::time::Duration,
    /// Alert when a GPU's memory use is above this percentage of its total.
    #[arg(long, value_name = "PCT", default_value_t = 97.0)]
    pub gpu_memory_threshold: f64,
    /// Do not restart the engine when the monitor finds it hung (requests in flight, GPUs at
    /// 0 % for several samples); only report it.
    #[arg(long)]
    pub no_gpu_hang_restart: bool,
}
