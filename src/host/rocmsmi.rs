//! Parser for `rocm-smi --showtopo` (AMD GPUs): the `Link Type between two GPUs` matrix and
//! the `Numa Nodes` section. The weight and hop matrices are not kept (`GpuTopo` has no place
//! for them and the plan does not use them). This module does not run `rocm-smi`.
//!
//! ```text
//! =============================== Link Type between two GPUs ===============================
//!        GPU0         GPU1         GPU2         GPU3
//! GPU0   0            XGMI         XGMI         XGMI
//! ...
//! ======================================= Numa Nodes =======================================
//! GPU[0]          : (Topology) Numa Node: 0
//! GPU[0]          : (Topology) Numa Affinity: 0
//! ```
//! The self cell prints `0`; it is not a link and is left out. `Numa Affinity` wins over
//! `Numa Node` for `numa_affinity`; `-1` means unknown.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use super::facts::{GpuTopo, GpuTopoRow};
use super::text::clean_lines;
pub use super::text::ParseError;

const TOOL: &str = "rocm-smi --showtopo";

static GPU_COL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^GPU(\d+)$").unwrap());
static NUMA_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^GPU\[(\d+)\]\s*:\s*\(Topology\)\s*Numa (Node|Affinity)\s*:\s*(-?\d+)\s*$")
        .unwrap()
});

/// Parses `rocm-smi --showtopo` output.
pub fn parse_showtopo(text: &str) -> Result<GpuTopo, ParseError> {
    let lines = clean_lines(text);
    let mut rows: BTreeMap<u32, GpuTopoRow> = BTreeMap::new();
    let mut section = String::new();
    let mut columns: Vec<u32> = Vec::new();
    let mut affinity_seen: BTreeMap<u32, bool> = BTreeMap::new();
    for l in &lines {
        let t = l.text.trim();
        if t.starts_with("==") {
            section = t.trim_matches('=').trim().to_ascii_lowercase();
            columns.clear();
            continue;
        }
        if t.is_empty() {
            continue;
        }
        if let Some(c) = NUMA_LINE.captures(t) {
            let (Ok(gpu), Ok(node)) = (c[1].parse::<u32>(), c[3].parse::<i64>()) else {
                return Err(ParseError::new(TOOL, l.no, t, "a GPU index and a NUMA node number"));
            };
            let node = u32::try_from(node).ok();
            let is_affinity = &c[2] == "Affinity";
            let row = rows.entry(gpu).or_insert_with(|| GpuTopoRow {
                index: gpu,
                line: l.no,
                ..Default::default()
            });
            if is_affinity || !affinity_seen.get(&gpu).copied().unwrap_or(false) {
                row.numa_affinity = node;
            }
            if is_affinity {
                affinity_seen.insert(gpu, true);
            }
            continue;
        }
        if !section.starts_with("link type") {
            continue;
        }
        let tokens: Vec<&str> = t.split_whitespace().collect();
        if columns.is_empty() {
            columns = tokens
                .iter()
                .map(|tok| GPU_COL.captures(tok).and_then(|c| c[1].parse().ok()))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| {
                    ParseError::new(TOOL, l.no, t, "a header of GPU0, GPU1, ... columns")
                })?;
            continue;
        }
        let index = GPU_COL
            .captures(tokens[0])
            .and_then(|c| c[1].parse::<u32>().ok())
            .ok_or_else(|| ParseError::new(TOOL, l.no, t, "a matrix row starting with GPU<n>"))?;
        if tokens.len() != columns.len() + 1 {
            return Err(ParseError::new(
                TOOL,
                l.no,
                t,
                format!("{} link types (one per GPU column)", columns.len()),
            ));
        }
        let row = rows.entry(index).or_insert_with(|| GpuTopoRow {
            index,
            line: l.no,
            ..Default::default()
        });
        row.line = l.no;
        for (col, code) in columns.iter().zip(&tokens[1..]) {
            if *col != index {
                row.links.insert(*col, (*code).to_string());
            }
        }
    }
    if rows.is_empty() {
        return Err(ParseError::no_match(
            TOOL,
            &lines,
            "a \"Link Type between two GPUs\" matrix or \"Numa Node\" lines",
        ));
    }
    Ok(GpuTopo { gpus: rows.into_values().collect(), ..Default::default() })
}
