//! nodeagent: a host-side agent for servers that serve LLMs on GPUs.
//!
//! Data flows one way:
//! host facts (`host`) -> topology (`topology`) -> plan (`plan`, `binding`) -> launch spec
//! (`launch`) -> supervisor (`supervise`) -> monitor (`monitor`); and for `verify`:
//! dataset -> load workers -> stats -> summary types -> report (`loadgen`, `summary`, `report`,
//! `verify`).
//! `sim` is the OpenAI-compatible engine simulator used by `demo` and the tests; `rxstamp`
//! gives both it and the load generator the kernel's receive time of what they read.
//! `cmd` holds one handler per subcommand: the only layer that prints and decides exit codes.

pub mod binding;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod doctor;
pub mod exit;
pub mod export;
pub mod host;
pub mod launch;
pub mod loadgen;
pub mod logging;
pub mod monitor;
pub mod plan;
pub mod report;
pub mod rxstamp;
pub mod sim;
pub mod summary;
pub mod supervise;
pub mod topology;
pub mod verify;

pub use exit::CmdError;

/// Runs one parsed command line.
pub fn run(cli: cli::Cli) -> Result<(), CmdError> {
    cmd::dispatch(cli)
}
