//! Renderers for `nodeagent verify` results: the `summary.json` document, tables, CSV, the
//! evalscope-style "Benchmarking summary" block, the run-to-run comparison and the chart. Every
//! renderer writes to any `W: Write`; none measures or decides anything.

pub mod compare;
pub mod csv;
pub mod evalscope;
pub mod summary;
pub mod table;

pub use summary::{Meta, Summary};
