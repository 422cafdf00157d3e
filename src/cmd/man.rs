//! `nodeagent man --out DIR` (hidden, for packagers): one roff man page per visible command,
//! `nodeagent.1` and `nodeagent-<command>.1`, generated from the clap types in `crate::cli`
//! by `clap_mangen`, so the pages say exactly what `--help` says.
//!
//! Not here: the Markdown command reference `docs/cli.md`, which `tests/docs.rs` writes from
//! the real binary's `--help` and checks for drift.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::{Cli, ManArgs};
use crate::exit::{CmdError, ResultExt};

#[derive(Debug, thiserror::Error)]
pub enum ManError {
    #[error("cannot create man page directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write man pages into {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn run(args: &ManArgs) -> Result<(), CmdError> {
    let written = write_pages(&args.out).bad_input()?;
    for page in written {
        println!("{}", page.display());
    }
    Ok(())
}

/// Writes `nodeagent.1` and a page per visible subcommand into `dir` (created if missing);
/// returns the man pages now in `dir`, sorted.
pub fn write_pages(dir: &Path) -> Result<Vec<PathBuf>, ManError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| ManError::CreateDir { path: dir.to_path_buf(), source })?;
    let write_err = |source| ManError::Write { path: dir.to_path_buf(), source };
    clap_mangen::generate_to(Cli::command(), dir).map_err(write_err)?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(write_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    Ok(pages)
}
