//! `summary.json`: the levels' metrics plus `meta` (what was run, against what). The schema is
//! checked in at `docs/summary.schema.json`; the `levels[]` keys of the contract are
//! fields of `LevelStats`. Reading it back is what `verify compare` does.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::loadgen::stats::LevelStats;

#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a nodeagent summary.json: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
}

/// Everything about the run that is not a metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub tool: String,
    pub version: String,
    /// Prefix of every `x-request-id` of this run.
    pub run_id: String,
    /// Wall-clock start, RFC 3339 (UTC); record times count from here.
    pub started_at: String,
    pub url: String,
    pub endpoint: String,
    pub api: String,
    pub model: String,
    pub stream: bool,
    pub dataset: String,
    pub prompts: u64,
    /// Unit of the prompt length limits (and of a random dataset's length): `characters`, or
    /// `tokens` when `tokenizer` was given.
    #[serde(default = "characters")]
    pub prompt_length_unit: String,
    /// `--min-prompt-length` / `--max-prompt-length`, in `prompt_length_unit`.
    #[serde(default)]
    pub min_prompt_length: u64,
    #[serde(default)]
    pub max_prompt_length: Option<u64>,
    /// The `tokenizer.json` that counted prompt tokens (`--tokenizer`), as given.
    #[serde(default)]
    pub tokenizer: Option<String>,
    pub seed: u64,
    pub max_tokens: Option<u32>,
    /// Open-loop arrival process (`constant`, `poisson`, `gamma(0.5)`), `null` for closed loops.
    pub arrival: Option<String>,
    pub percentile_method: String,
    /// Stopped by Ctrl-C: the last level is partial.
    pub interrupted: bool,
    /// Warnings raised during the run (preflight, server behaviour).
    pub warnings: Vec<String>,
    /// The command line as given.
    pub argv: Vec<String>,
    /// Room for GPU samples taken during the sweep (filled by the monitor when it exists).
    pub gpu: Option<serde_json::Value>,
}

fn characters() -> String {
    "characters".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub levels: Vec<LevelStats>,
    pub meta: Meta,
}

impl Summary {
    pub fn write_json<W: Write>(&self, mut w: W) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut w, self)?;
        writeln!(w)
    }

    /// Reads `summary.json` from a run directory (or the file itself).
    pub fn read(path: &Path) -> Result<Self, SummaryError> {
        let file = if path.is_dir() { path.join("summary.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file)
            .map_err(|source| SummaryError::Read { path: file.clone(), source })?;
        serde_json::from_str(&text).map_err(|source| SummaryError::Parse { path: file, source })
    }
}
