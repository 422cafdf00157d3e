//! The `nodeagent` binary: parse the command line, hand it to the library, map the outcome to
//! an exit status. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = nodeagent::cli::Cli::parse();
    nodeagent::logging::init(&cli.global);
    match nodeagent::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.code())
        }
    }
}
