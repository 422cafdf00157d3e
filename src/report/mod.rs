//! Renderers for `nodeagent verify` results over the `crate::summary` types: tables, CSV, the
//! evalscope-style "Benchmarking summary" block, the run-to-run comparison and the chart. Every
//! renderer writes to any `W: Write`; none measures or decides anything.

pub mod chart;
pub mod compare;
pub mod csv;
pub mod evalscope;
pub mod table;
