//! `nodeagent completions bash|zsh|fish`: the shell completion script, generated from the clap
//! types in `crate::cli` (so it cannot drift from the options), written to stdout.
//!
//! Not here: installing the script (the manual says where each shell looks for it).

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, CompletionShell, CompletionsArgs};
use crate::exit::{CmdError, ResultExt};

/// The binary name the scripts complete.
const BIN: &str = "nodeagent";

pub fn run(args: &CompletionsArgs) -> Result<(), CmdError> {
    // Rendered into memory first: clap_complete panics on a failed write (a closed pipe), and
    // a write error here must be an error line, not a panic.
    let script = script(args.shell);
    let mut out = std::io::stdout().lock();
    out.write_all(&script).and_then(|()| out.flush()).failed()
}

/// The completion script for `shell`.
pub fn script(shell: CompletionShell) -> Vec<u8> {
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut buf);
    buf
}
