//! The arguments of `serve`, `status` and the hidden `__ray-member` (the engine process of
//! `serve --role`). Clap types only.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::monitor::ServeMonitorArgs;
use super::plan::SourceArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServeMode {
    /// The binding is applied natively in the engine process before exec.
    Bare,
    /// The engine runs under `numactl` with the binding's options.
    Numactl,
    /// The engine runs in a container through the Docker Engine API.
    Container,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML): picks a host and a model profile and overrides their keys.
    #[arg(
        long,
        value_name = "FILE",
        env = "NODEAGENT_CONFIG",
        default_value = "/etc/nodeagent/nodeagent.toml"
    )]
    pub config: PathBuf,
    /// Print the effective configuration (profiles merged, CLI applied) and the exact command
    /// that would run, then exit without starting anything.
    #[arg(long)]
    pub print_config: bool,
    /// Directory for the pid file and the status socket (overrides `state_dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Launch mode (overrides `launch.mode`).
    #[arg(long, value_enum)]
    pub mode: Option<ServeMode>,
    /// Engine port (overrides `engine.port`).
    #[arg(long)]
    pub port: Option<u16>,
    /// Which instance of the plan this agent serves (overrides `launch.instance`): its state
    /// dir is `STATE_DIR/N` for N >= 1 and its port `engine.port + N` unless `launch.ports`
    /// lists it (docs/multi-instance.md).
    #[arg(long, value_name = "N")]
    pub instance: Option<usize>,
    /// With `--print-config`: print `{"config": ..., "launch": ...}` as JSON (the contract is in
    /// docs/serve.md).
    #[arg(long, requires = "print_config")]
    pub json: bool,
    /// When running as root, accept a config, profile or engine program that another user can
    /// write (group/world writable, or owned by another user), with a warning. For labs only:
    /// whoever can write such a file can run anything as root.
    #[arg(long)]
    pub allow_insecure_files: bool,
    /// Before the first start, stop (SIGTERM, then SIGKILL after 10 s) engine-shaped processes
    /// of a manual run that hold the instance's GPUs after their parent died (`VLLM::EngineCore`,
    /// `VLLM::Worker_TP*`, `ray::RayWorkerWrapper`, `python ... vllm serve`, re-parented to PID
    /// 1) instead of refusing to start. Other processes on the GPUs are never killed.
    #[arg(long)]
    pub reclaim_orphans: bool,
    /// This node's part in a multi-node Ray cluster (overrides `ray.role`): `ray-head` runs
    /// `ray start --head` and starts the engine once `ray.expected_nodes` joined; `ray-worker`
    /// runs `ray start --address` to `ray.head` and follows it (docs/ray.md).
    #[arg(long, value_enum, value_name = "ROLE")]
    pub role: Option<ServeRole>,
    /// Testing aid, hidden: the host's root for the GPU device nodes (`DIR/dev/...`) and the
    /// NVIDIA driver's files (`DIR/proc/driver/nvidia`) that container mode passes (stand-in
    /// nodes in tests/container.rs). The sysfs root is `--sysfs-root`.
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub host_root: PathBuf,
    /// Start an instance of several GPUs even when the links between them (NVLink) are
    /// reported down or not enabled: the refusal becomes a warning. For hosts that run
    /// without the links (docs/gpu-sources.md, "Interconnect preflight").
    #[arg(long)]
    pub skip_link_check: bool,
    /// Where the plan's host facts come from when `binding.auto = true`.
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub monitor: ServeMonitorArgs,
    /// Debugging aid, hidden: panic on purpose once the engine is ready, to prove that a panic
    /// stops the engine tree before the agent exits (tests/hardening.rs). Never use in service.
    #[arg(long, hide = true)]
    pub debug_panic_when_ready: bool,
    /// Debugging aid, hidden: like `--debug-panic-when-ready`, but the panic happens in a
    /// spawned task, not in the supervisor's own future (tests/hardening.rs).
    #[arg(long, hide = true)]
    pub debug_panic_in_task: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// State directory of the agents (instance 0's `status.sock`; instance N's in `DIR/N`).
    #[arg(long, value_name = "DIR", default_value = "/run/nodeagent")]
    pub state_dir: PathBuf,
    /// Only instance N (default: every instance that answers).
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub instance: Option<usize>,
    /// With `--json`: a JSON array of every instance's record (without it, `--json` needs one
    /// instance: the only one running, or `--instance N`).
    #[arg(long)]
    pub all: bool,
    /// Print the agent's status record as JSON.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the agent's answer, e.g. `5s`.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

/// A node's Ray role, as `serve --role` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServeRole {
    /// `ray start --head`, then the engine once every node joined.
    RayHead,
    /// `ray start --address HEAD:PORT`, following the head.
    RayWorker,
}

/// Member roles, as `__ray-member --role` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RayMemberRole {
    Head,
    Worker,
}

#[derive(Debug, Clone, Args)]
pub struct RayMemberArgs {
    #[arg(long, value_enum)]
    pub role: RayMemberRole,
    /// The `ray` program.
    #[arg(long, value_name = "PATH")]
    pub ray: PathBuf,
    /// The head node's address.
    #[arg(long, value_name = "ADDR")]
    pub head: String,
    /// The head's GCS port.
    #[arg(long)]
    pub port: u16,
    /// This node's address for Ray (`--node-ip-address`).
    #[arg(long, value_name = "ADDR")]
    pub node_ip: Option<String>,
    #[arg(long)]
    pub dashboard_port: u16,
    #[arg(long, value_name = "N")]
    pub expected_nodes: u32,
    #[arg(long, value_name = "N")]
    pub expected_gpus: u32,
    #[arg(long, value_name = "N")]
    pub num_gpus: u32,
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub join_timeout: std::time::Duration,
    /// Worker: where its `/health` answers.
    #[arg(long, value_name = "ADDR:PORT")]
    pub health_listen: std::net::SocketAddr,
    /// Where the cluster file is written.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// One more argument for `ray start` (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub start_arg: Vec<String>,
    /// Head: the engine command (the driver).
    #[arg(last = true, value_name = "ENGINE")]
    pub engine: Vec<String>,
}
