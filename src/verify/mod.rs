//! Sweeps and binding comparisons, built on the load generator.
//!
//! - `sweep`: one sweep (`run_sweep`): preflight, each level's warmup and measured phase, the
//!   summary; the run directory's files are `rundir`'s.
//! - `rundir`: the files of one sweep (`requests.jsonl`, `summary.json`, `summary.csv`,
//!   `evalscope-summary.txt`, the chart) and `VerifyError`, the error of a sweep.
//! - `outdir`: where results go: a given `--out` checked (no symlink, no file), else a fresh
//!   private directory; an earlier run's files moved aside before a sweep starts.
//! - `redact`: the run's secrets (API key, secret keys of `--extra-body`, URL password) and
//!   their redaction from the command line and any text written out.
//! - `bindings`: the BINDINGS grammar of `--compare` and resolving an entry against the host's
//!   nodes (given by the caller). No I/O.
//! - `compare`: pure code of a binding comparison: the interleaved schedule, statistics across
//!   trials and the verdict. No I/O.
//! - `results`: the records `compare.json` holds (each sub-run, each binding across trials, the
//!   report) and the Student-t estimate; plain data, re-exported by `compare`.
//! - `trials`: runs a comparison: one engine life and one sweep per (trial, binding), and keeps
//!   `compare.json`, `compare.txt` and `compare.svg` current.
//! - `render`: the comparison's table and chart, to any `W: Write`.
//! - `server_metrics`: pure code of the engine's own metrics: a `/metrics` body parsed, and
//!   a level's scrapes turned into its `ServerLevel` (counter deltas, gauges, histograms).
//! - `scrape`: fetches `/metrics` before, during and after each measured phase.
//! - `isolate`: keeps the load generator off the engine's CPUs (the engine found by the URL's
//!   port in `/proc`, or the processes `--compare` started) and measures its CPU time.
//! - `search`: pure code of the SLO search (`--search`): the next load to try from the steps
//!   measured so far, the saturation stop, the capacity found. No I/O.
//!
//! Imports run one way: `trials` -> `sweep` -> (`rundir` -> (`outdir`, `redact`), `isolate`, `search`,
//! `scrape` -> `server_metrics`), and
//! `trials` -> `render` -> `compare` -> (`bindings`, `results`).
//! Not here: parsing CLI arguments, choosing the engine runtime, printing, exit codes (`cmd/`).

pub mod bindings;
pub mod compare;
pub mod isolate;
pub mod outdir;
pub mod redact;
pub mod render;
pub mod results;
pub mod rundir;
pub mod scrape;
pub mod search;
pub mod server_metrics;
pub mod sweep;
pub mod trials;

pub use rundir::VerifyError;
pub use sweep::{run_sweep, LevelSpec, SweepOutcome, SweepSpec};
