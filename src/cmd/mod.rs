//! One handler per subcommand. Handlers turn CLI args into domain requests, call the library,
//! print results to stdout, and map failures to `CmdError` (exit 1 or 2).

use crate::cli::{Cli, Command};
use crate::exit::CmdError;

pub mod monitor;

pub fn dispatch(cli: Cli) -> Result<(), CmdError> {
    match cli.command {
        Command::Monitor(args) => monitor::run(args),
        Command::Probe(_) | Command::Plan(_) | Command::Simulate(_) => {
            Err(CmdError::bad_input(anyhow::anyhow!("this command is not built yet")))
        }
    }
}
