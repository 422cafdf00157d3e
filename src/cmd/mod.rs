//! One handler per subcommand. Handlers turn CLI args into domain requests, call the library,
//! print results to stdout, and map failures to `CmdError` (exit 1 or 2).

pub mod plan;
pub mod probe;

use crate::cli::{Cli, Command};
use crate::exit::CmdError;

pub fn dispatch(cli: Cli) -> Result<(), CmdError> {
    match cli.command {
        Command::Probe(args) => probe::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Simulate(_) => {
            Err(CmdError::bad_input(anyhow::anyhow!("this command is not built yet")))
        }
    }
}
