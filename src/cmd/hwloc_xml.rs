//! `nodeagent __hwloc-xml FILE` (hidden): the child side of `host::hwloc::XmlLoader`. Loads one
//! hwloc XML document with the library in this process and prints what the parent needs
//! (`host::hwloc::helper_answer`: a greeting line, then the facts or the refusal as one JSON
//! line). If libhwloc crashes on the document, this process dies, not the agent that asked.
//! It does no other work and is not meant to be run by hand.

use std::io::{Read, Write};

use anyhow::Context;

use crate::cli::HwlocXmlArgs;
use crate::exit::{CmdError, ResultExt};
use crate::host::hwloc;

pub fn run(args: &HwlocXmlArgs) -> Result<(), CmdError> {
    let mut bytes = Vec::new();
    if args.file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).context("reading standard input").bad_input()?;
    } else {
        bytes = std::fs::read(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))
            .bad_input()?;
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{}: not text (invalid UTF-8)", args.file.display()))
        .bad_input()?;
    let mut out = std::io::stdout().lock();
    out.write_all(hwloc::helper_answer(&text).as_bytes())
        .and_then(|()| out.flush())
        .context("writing the answer")
        .failed()
}
