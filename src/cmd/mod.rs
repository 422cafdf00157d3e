//! One handler per subcommand. Handlers turn CLI args into domain requests, call the library,
//! print results to stdout, and map failures to `CmdError` (exit 1 or 2). No handler calls
//! another: what several share sits in a module that is no handler (`sweep`).

pub mod compare;
pub mod completions;
pub mod demo;
pub mod doctor;
pub mod hwloc_xml;
pub mod man;
pub mod monitor;
pub mod plan;
pub mod probe;
pub mod ray_member;
pub mod serve;
pub mod simulate;
pub mod source;
pub mod status;
pub mod sweep;
pub mod verify;

use crate::cli::{Cli, Command};
use crate::exit::CmdError;

pub fn dispatch(cli: Cli) -> Result<(), CmdError> {
    match cli.command {
        Command::Probe(args) => probe::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Simulate(args) => simulate::run(args),
        Command::SimulateWorker(args) => simulate::run_worker(args),
        Command::Serve(args) => serve::run(args),
        Command::Status(args) => status::run(args),
        Command::Doctor(args) => doctor::run(&args),
        Command::Verify(args) if args.command.is_none() && args.run.compare.compare.is_some() => {
            compare::run(args.run)
        }
        Command::Verify(args) => verify::run(*args),
        Command::Monitor(args) => monitor::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Completions(args) => completions::run(&args),
        Command::Man(args) => man::run(&args),
        Command::HwlocXml(args) => hwloc_xml::run(&args),
        Command::RayMember(args) => ray_member::run(args),
    }
}
