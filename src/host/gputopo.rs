//! One header-driven parser for the GPU link matrix of `nvidia-smi topo -m` and
//! `mx-smi topo -m`. Both print a header row naming the columns, one row per GPU (and per NIC),
//! a legend of link codes and, on newer NVIDIA drivers, a NIC legend:
//!
//! ```text
//! Attached GPUs                                     : 4          <- preamble (MetaX), skipped
//!         GPU0    GPU1    Node Affinity  CPU Affinity            <- MetaX: Node before CPU
//! GPU0    X       MX      0              0-15
//! <TAB>GPU0<TAB>GPU1<TAB>NIC0<TAB>CPU Affinity<TAB>NUMA Affinity<TAB>GPU NUMA ID   <- NVIDIA
//! GPU0<TAB> X <TAB>NV18<TAB>PXB<TAB>0-55,112-167<TAB>0<TAB><TAB>N/A
//! NIC0<TAB>PXB<TAB>NODE<TAB> X                                   <- NIC rows: no affinity
//! Legend:
//!   X    = Self
//!   NV#  = Connection traversing a bonded set of # NVLinks
//! NIC Legend:
//!   NIC0: mlx5_0
//! ```
//!
//! What it survives: columns found by name (never position); tabs or spaces; ANSI escapes
//! (the H100 VM underlines the header even when piped); a header wrapped over lines; glued
//! header names (`GPU0GPU1`) and glued link cells (`NODENODE`); ragged rows with empty cells;
//! affinity fields read from the right end of a row, with glued fields (`0-31,64-950` = CPU
//! list `0-31,64-95` + node `0`) split where the CPU ids come out plausible. Link codes are the
//! usual set (X NV# PIX PXB PHB NODE SYS SOC MX ETH NA HT XGMI) plus whatever the legend
//! declares. It does not judge the topology; `crate::topology` does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;

use super::cpuset::CpuSet;
use super::facts::{GpuTopo, GpuTopoRow};
pub use super::text::ParseError;
use super::text::{clean_lines, Line};

const TOOL: &str = "topo -m";

/// Link codes known without a legend. `NV#` (any count) is matched separately.
const BASE_CODES: &[&str] =
    &["X", "PIX", "PXB", "PHB", "NODE", "SYS", "SOC", "MX", "ETH", "NA", "HT", "XGMI"];

/// Most affinity columns any tool prints (CPU, NUMA, GPU NUMA ID) plus slack.
const MAX_AFFINITY_COLUMNS: usize = 4;

/// Most lines a wrapped header spans (a wide matrix wraps over two or three), and most columns
/// a matrix has (GPUs plus NICs, with slack): bounds that keep a garbled input from making the
/// header search quadratic (found by fuzzing: 1,900 repeated header lines took minutes).
const MAX_HEADER_LINES: usize = 8;
const MAX_COLUMNS: usize = 1024;
/// Longest header text looked at (1,024 columns of a few characters fit many times over); a
/// 1 MB line is not a header and is not run through the header regex.
const MAX_HEADER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Gpu(u32),
    /// A NIC (or other device) column of the matrix: `NIC0`, `mlx5_0`.
    Device(String),
    Affinity(Aff),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aff {
    Cpu,
    Numa,
    GpuNumaId,
}

// Leftmost-first alternation: multi-word names before single tokens; `GPU\d+` and
// `mlx\d+_\d+` stop at the next name so glued headers (`GPU0GPU1`) split.
static HEADER_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(GPU\s+NUMA\s+ID)|(CPU\s+Affinity)|((?:NUMA|Node)\s+Affinity)|GPU(\d+)|(NIC\d+|mlx\d+_\d+)|(\S+)",
    )
    .unwrap()
});
// A word that can only be part of a header: a column name or a piece of an affinity name. A
// line of nothing else continues a wrapped header even when it starts with `GPU4`.
static HEADER_WORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:GPU\d+|NIC\d+|mlx\d+_\d+|CPU|NUMA|Node|Affinity|GPU|ID)$").unwrap()
});
static GPU_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^GPU(\d+)").unwrap());
// At most two digits: a GPU pair bonds at most 18 NVLinks (H100/H200/B200), and a longer run
// is a link glued to the affinity field after it (`NV180-31` = `NV18` + `0-31`).
static NV_CODE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^NV\d{1,2}").unwrap());
static LEGEND_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*([A-Za-z][A-Za-z0-9#]*)\s*=\s*(.+?)\s*$").unwrap());
static NIC_LEGEND_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*(NIC\d+)\s*:\s*(\S+)\s*$").unwrap());

fn header_columns(text: &str) -> Vec<Column> {
    HEADER_TOKEN
        .captures_iter(text)
        .filter_map(|c| {
            if c.get(1).is_some() {
                Some(Column::Affinity(Aff::GpuNumaId))
            } else if c.get(2).is_some() {
                Some(Column::Affinity(Aff::Cpu))
            } else if c.get(3).is_some() {
                Some(Column::Affinity(Aff::Numa))
            } else if let Some(n) = c.get(4) {
                n.as_str().parse().ok().map(Column::Gpu)
            } else if let Some(n) = c.get(5) {
                Some(Column::Device(n.as_str().to_string()))
            } else {
                // A lone word left over from a wrapped or unknown header name ("Affinity").
                let w = c.get(6)?.as_str();
                w.chars().any(|ch| ch.is_ascii_digit()).then(|| Column::Device(w.to_string()))
            }
        })
        .collect()
}

fn is_header(text: &str) -> bool {
    if text.len() > MAX_HEADER_BYTES {
        return false;
    }
    let tokens: Vec<&str> = text.split_whitespace().collect();
    !tokens.is_empty()
        && !tokens.iter().any(|t| t.eq_ignore_ascii_case("x"))
        && header_columns(text).iter().any(|c| matches!(c, Column::Gpu(_)))
        && !tokens.iter().any(|t| *t == ":" || t.ends_with(':'))
}

/// Parses `nvidia-smi topo -m` or `mx-smi topo -m` output.
pub fn parse(text: &str) -> Result<GpuTopo, ParseError> {
    parse_with_nodes(text, &[])
}

/// [`parse`], checking CPU affinities against the host's NUMA node CPU lists (from numactl or
/// sysfs) where a glued cell can be split more than one way: a split that yields a node's CPU
/// list (or a union of nodes) wins, one that names CPUs no node has loses.
pub fn parse_with_nodes(text: &str, node_cpus: &[CpuSet]) -> Result<GpuTopo, ParseError> {
    let lines = clean_lines(text);
    let Some(head_at) = lines.iter().position(|l| is_header(&l.text)) else {
        return Err(ParseError::no_match(TOOL, &lines, "a matrix header naming GPU0, GPU1, ..."));
    };
    let (legend, nic_legend) = parse_legends(&lines[head_at + 1..]);
    let mut codes: BTreeSet<String> = BASE_CODES.iter().map(|c| c.to_string()).collect();
    codes.extend(legend.keys().filter(|k| !k.contains('#')).cloned());
    // Longest first, so `NODE` wins over `NA`-like prefixes when splitting glued cells.
    let mut codes: Vec<String> = codes.into_iter().collect();
    codes.sort_by_key(|c| std::cmp::Reverse(c.len()));

    // The header, with any wrapped continuation lines (lines before the first row that start
    // with no row name) joined on.
    let mut header_text = lines[head_at].text.clone();
    let mut columns = header_columns(&header_text);
    let mut i = head_at + 1;
    while let Some(l) = lines.get(i) {
        if i - head_at >= MAX_HEADER_LINES
            || columns.len() > MAX_COLUMNS
            || header_text.len() + l.text.len() > MAX_HEADER_BYTES
        {
            break;
        }
        let only_names = l.text.split_whitespace().all(|t| HEADER_WORD.is_match(t));
        if l.text.trim().is_empty() || (row_name(&l.text, &columns).is_some() && !only_names) {
            break;
        }
        header_text.push(' ');
        header_text.push_str(&l.text);
        columns = header_columns(&header_text);
        i += 1;
    }
    let matrix: Vec<&Column> =
        columns.iter().filter(|c| !matches!(c, Column::Affinity(_))).collect();
    let affinity: Vec<Aff> = columns
        .iter()
        .filter_map(|c| match c {
            Column::Affinity(a) => Some(*a),
            _ => None,
        })
        .collect();
    let head = &lines[head_at];
    if columns.len() > MAX_COLUMNS {
        return Err(ParseError::new(
            TOOL,
            head.no,
            &head.text,
            format!("a matrix header of at most {MAX_COLUMNS} columns"),
        ));
    }
    if affinity.len() > MAX_AFFINITY_COLUMNS {
        return Err(ParseError::new(
            TOOL,
            head.no,
            &head.text,
            "at most one CPU, NUMA and GPU NUMA ID column",
        ));
    }

    // Rows: a line starting with a row name opens a row; a non-empty line that does not is
    // the wrapped tail of the previous row; a blank line or the legend ends the matrix.
    let mut rows: Vec<(String, usize, Vec<String>)> = Vec::new();
    while let Some(l) = lines.get(i) {
        let t = l.text.trim();
        if t.is_empty() && !rows.is_empty() {
            break;
        }
        if t.to_ascii_lowercase().starts_with("legend")
            || t.to_ascii_lowercase().starts_with("nic legend")
        {
            break;
        }
        if !t.is_empty() {
            if let Some((name, rest)) = row_name(&l.text, &columns) {
                rows.push((name, l.no, rest.split_whitespace().map(str::to_string).collect()));
            } else if let Some(last) = rows.last_mut() {
                last.2.extend(t.split_whitespace().map(str::to_string));
            } else {
                return Err(ParseError::new(
                    TOOL,
                    l.no,
                    &l.text,
                    "a matrix row starting with GPU0, NIC0, ...",
                ));
            }
        }
        i += 1;
    }

    let mut topo = GpuTopo { legend, ..Default::default() };
    for c in &matrix {
        if let Column::Device(name) = c {
            topo.nics.push(nic_legend.get(name).cloned().unwrap_or_else(|| name.clone()));
        }
    }
    let mut seen = BTreeSet::new();
    for (name, line, cells) in &rows {
        let found = || format!("{name} {}", cells.join(" "));
        let (links, rest) = split_links(cells, matrix.len(), &codes);
        let Some(index) = GPU_NAME.captures(name).and_then(|c| c[1].parse::<u32>().ok()) else {
            // NIC rows carry no affinity; only their shape is checked.
            if links.len() < matrix.len() {
                return Err(ParseError::new(
                    TOOL,
                    *line,
                    &found(),
                    format!("{} link codes (one per GPU/NIC column)", matrix.len()),
                ));
            }
            continue;
        };
        if links.len() < matrix.len() {
            let bad = rest.first().map_or_else(found, Clone::clone);
            return Err(ParseError::new(
                TOOL,
                *line,
                &bad,
                format!(
                    "{} link codes (one per GPU/NIC column; known codes: {}, NV#)",
                    matrix.len(),
                    codes.join(" ")
                ),
            ));
        }
        if !seen.insert(index) {
            return Err(ParseError::new(
                TOOL,
                *line,
                &found(),
                format!("one row for GPU{index}, not two"),
            ));
        }
        let values = assign_affinity(&rest, &affinity, node_cpus).ok_or_else(|| {
            ParseError::new(
                TOOL,
                *line,
                &rest.join(" "),
                format!("affinity fields for columns {}", describe(&affinity)),
            )
        })?;
        let mut row = GpuTopoRow { index, line: *line, ..Default::default() };
        for (col, code) in matrix.iter().zip(&links) {
            if let Column::Gpu(g) = col {
                if *g != index {
                    row.links.insert(*g, code.clone());
                }
            }
        }
        for (aff, value) in affinity.iter().zip(values) {
            let Some(v) = value else { continue };
            match aff {
                Aff::Cpu => row.cpu_affinity = CpuSet::parse_list(&v).ok(),
                Aff::Numa => row.numa_affinity = node_id(&v),
                Aff::GpuNumaId => row.gpu_numa_id = node_id(&v),
            }
        }
        topo.gpus.push(row);
    }
    for c in &matrix {
        if let Column::Gpu(g) = c {
            if !seen.contains(g) {
                return Err(ParseError::at_end(
                    TOOL,
                    &lines,
                    format!("a row for GPU{g} (the header names it)"),
                ));
            }
        }
    }
    if topo.gpus.is_empty() {
        return Err(ParseError::new(TOOL, head.no, &head.text, "GPU rows below the header"));
    }
    topo.gpus.sort_by_key(|g| g.index);
    Ok(topo)
}

fn describe(aff: &[Aff]) -> String {
    aff.iter()
        .map(|a| match a {
            Aff::Cpu => "CPU Affinity",
            Aff::Numa => "NUMA Affinity",
            Aff::GpuNumaId => "GPU NUMA ID",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The row name at the start of `text` (`GPU3`, `NIC0`, `mlx5_10`, also when glued to the
/// first cell) and the rest of the line.
fn row_name<'a>(text: &'a str, columns: &[Column]) -> Option<(String, &'a str)> {
    let t = text.trim_start();
    let first = t.split_whitespace().next()?;
    let mut best: Option<&str> = None;
    let gpu = GPU_NAME.find(first).map(|m| m.as_str());
    for c in columns {
        let name = match c {
            Column::Gpu(_) => gpu,
            Column::Device(n) => first.starts_with(n.as_str()).then_some(n.as_str()),
            Column::Affinity(_) => None,
        };
        if let Some(n) = name {
            if best.is_none_or(|b| n.len() > b.len()) {
                best = Some(n);
            }
        }
    }
    let name = best.or(gpu)?;
    // `GPU10` must not be read as `GPU1` glued to `0`: take the longest digit run for GPUs.
    Some((name.to_string(), &t[name.len()..]))
}

/// Splits a row's cells into `want` link codes and the remaining (affinity) cells. Glued codes
/// (`NODENODE`) are split; a cell whose tail is not a code (`SYS48-63`) gives its codes to the
/// links and its tail to the rest.
fn split_links(cells: &[String], want: usize, codes: &[String]) -> (Vec<String>, Vec<String>) {
    let mut links = Vec::new();
    let mut rest = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        if links.len() >= want {
            rest.extend(cells[i..].iter().cloned());
            break;
        }
        let (found, tail) = split_codes(cell, codes);
        if found.is_empty() {
            rest.extend(cells[i..].iter().cloned());
            break;
        }
        let room = want - links.len();
        if found.len() > room {
            // More codes than columns: not a matrix row we understand; leave it to the caller.
            rest.extend(cells[i..].iter().cloned());
            break;
        }
        links.extend(found);
        if !tail.is_empty() {
            rest.push(tail.to_string());
            rest.extend(cells[i + 1..].iter().cloned());
            break;
        }
    }
    (links, rest)
}

fn split_codes<'a>(cell: &'a str, codes: &[String]) -> (Vec<String>, &'a str) {
    let mut found = Vec::new();
    let mut rest = cell;
    while !rest.is_empty() {
        if let Some(m) = NV_CODE.find(rest) {
            found.push(m.as_str().to_string());
            rest = &rest[m.end()..];
            continue;
        }
        match codes.iter().find(|c| rest.starts_with(c.as_str())) {
            Some(c) => {
                found.push(c.clone());
                rest = &rest[c.len()..];
            }
            None => break,
        }
    }
    // A tail that is not affinity-like (`PIXEL`) means the cell was never a code run.
    if !rest.is_empty() && !rest.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == 'N') {
        return (Vec::new(), cell);
    }
    (found, rest)
}

fn is_na(v: &str) -> bool {
    v.eq_ignore_ascii_case("n/a") || v == "-1"
}

fn node_id(v: &str) -> Option<u32> {
    v.parse::<u32>().ok().filter(|n| *n <= super::cpuset::MAX_ID)
}

fn fits(v: &str, aff: Aff) -> bool {
    if is_na(v) {
        return true;
    }
    match aff {
        Aff::Cpu => {
            v.ends_with(|c: char| c.is_ascii_digit())
                && CpuSet::parse_list(v).is_ok_and(|s| !s.is_empty() && s.last_below(8192))
        }
        // A node id, or a node list (`0-1`) when the device is equally near several nodes;
        // `GpuTopoRow` holds one node, so a list reads as no single node (`None`).
        Aff::Numa | Aff::GpuNumaId => {
            node_id(v).is_some_and(|n| n < 1024)
                || (v.ends_with(|c: char| c.is_ascii_digit())
                    && v.contains(['-', ','])
                    && CpuSet::parse_list(v).is_ok_and(|s| s.len() > 1 && s.last_below(1024)))
        }
    }
}

trait LastBelow {
    fn last_below(&self, limit: u32) -> bool;
}
impl LastBelow for CpuSet {
    fn last_below(&self, limit: u32) -> bool {
        self.iter().last().is_some_and(|l| l < limit)
    }
}

/// How plausible a CPU list is as a real affinity: equal to a NUMA node's CPUs (or a union of
/// them) when the caller knows them, ranges of equal length (SMT siblings: `0-31,64-95`), an
/// even count; CPUs that no node has count against it. (Whether the same list appears on
/// another row says nothing: a glued cell repeats on every row of its node.)
fn cpu_plausibility(v: &str, nodes: &[CpuSet]) -> i32 {
    if is_na(v) {
        return 0;
    }
    let Ok(set) = CpuSet::parse_list(v) else { return 0 };
    let mut score = 0;
    if !nodes.is_empty() {
        let all = nodes.iter().fold(CpuSet::new(), |acc, n| acc.union(n));
        if !set.is_subset(&all) {
            score -= 8;
        } else if nodes.contains(&set)
            || nodes.iter().filter(|n| n.is_subset(&set)).fold(CpuSet::new(), |a, n| a.union(n))
                == set
        {
            score += 8;
        }
    }
    let lens: Vec<u32> = v
        .split(',')
        .filter_map(|p| match p.split_once('-') {
            Some((a, b)) => Some(b.parse::<u32>().ok()?.checked_sub(a.parse::<u32>().ok()?)? + 1),
            None => Some(1),
        })
        .collect();
    if lens.len() > 1 && lens.windows(2).all(|w| w[0] == w[1]) {
        score += 2;
    }
    if set.len() % 2 == 0 {
        score += 1;
    }
    score
}

#[derive(Clone, Default)]
struct Candidate {
    values: Vec<Option<String>>,
    missing: usize,
    /// Sum of the positions of missing columns: a cell left out is likelier at the right end.
    missing_at: usize,
    splits: usize,
    plausibility: i32,
}

impl Candidate {
    fn key(&self) -> (usize, i32, std::cmp::Reverse<usize>, usize) {
        (
            self.missing + self.splits,
            -self.plausibility,
            std::cmp::Reverse(self.missing_at),
            self.splits,
        )
    }
}

/// Assigns the affinity cells of a GPU row to the affinity columns, reading from the right
/// end. Considers, per column: the cell as is, a glued cell split with its right part here,
/// or the column being empty (a ragged row); picks the reading with fewest repairs, then the
/// most plausible CPU lists. `None` if no reading uses every cell.
fn assign_affinity(
    cells: &[String],
    cols: &[Aff],
    nodes: &[CpuSet],
) -> Option<Vec<Option<String>>> {
    if cells.len() > cols.len() || cells.iter().any(|c| c.len() > 64) {
        return None;
    }
    // A bound on the readings tried, so that a hostile row cannot make the search explode.
    let mut search = Search { nodes, best: None, budget: 20_000 };
    search.run(cells.to_vec(), cols, Candidate::default());
    search.best.map(|mut c| {
        c.values.reverse();
        c.values
    })
}

struct Search<'a> {
    nodes: &'a [CpuSet],
    best: Option<Candidate>,
    budget: usize,
}

impl Search<'_> {
    fn run(&mut self, cells: Vec<String>, cols: &[Aff], acc: Candidate) {
        if self.budget == 0 {
            return;
        }
        self.budget -= 1;
        let Some((&col, left_cols)) = cols.split_last() else {
            if cells.is_empty() && self.best.as_ref().is_none_or(|b| acc.key() < b.key()) {
                self.best = Some(acc);
            }
            return;
        };
        let nodes = self.nodes;
        let push = |acc: &Candidate, v: Option<String>, missing: usize, splits: usize| {
            let mut next = acc.clone();
            match (col, &v) {
                (Aff::Cpu, Some(v)) => next.plausibility += cpu_plausibility(v, nodes),
                // Between `0-31` + `0` and `0-3` + `10`, the short node id is likelier.
                (_, Some(v)) if node_id(v).is_some() && v.len() > 1 => next.plausibility -= 1,
                // A node list is rare: only when nothing else reads the row.
                (_, Some(v)) if !is_na(v) && node_id(v).is_none() => next.plausibility -= 6,
                _ => {}
            }
            next.values.push(v);
            next.missing += missing;
            next.splits += splits;
            next
        };
        if let Some((last, left_cells)) = cells.split_last() {
            if fits(last, col) {
                self.run(left_cells.to_vec(), left_cols, push(&acc, Some(last.clone()), 0, 0));
            }
            if !left_cols.is_empty() {
                for (p, _) in last.char_indices().skip(1) {
                    let (l, r) = last.split_at(p);
                    if fits(r, col) {
                        let mut next_cells = left_cells.to_vec();
                        next_cells.push(l.to_string());
                        self.run(next_cells, left_cols, push(&acc, Some(r.to_string()), 0, 1));
                    }
                }
            }
        }
        if cells.len() < cols.len() {
            let mut next = push(&acc, None, 1, 0);
            next.missing_at += left_cols.len();
            self.run(cells, left_cols, next);
        }
    }
}

/// Reads `Legend:` (`  CODE = description`) and `NIC Legend:` (`  NIC0: mlx5_0`) sections.
fn parse_legends(lines: &[Line]) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut legend = BTreeMap::new();
    let mut nics = BTreeMap::new();
    for l in lines {
        if let Some(c) = NIC_LEGEND_LINE.captures(&l.text) {
            nics.insert(c[1].to_string(), c[2].to_string());
        } else if let Some(c) = LEGEND_LINE.captures(&l.text) {
            legend.insert(c[1].to_string(), c[2].to_string());
        }
    }
    (legend, nics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glued_cpu_list_and_node_split_plausibly() {
        let cols = [Aff::Cpu, Aff::Numa, Aff::GpuNumaId];
        let v = assign_affinity(&["0-31,64-950".into(), "N/A".into()], &cols, &[]).unwrap();
        assert_eq!(v, [Some("0-31,64-95".into()), Some("0".into()), Some("N/A".into())]);
        let v = assign_affinity(&["0-15,32-4710".into()], &cols[..2], &[]).unwrap();
        assert_eq!(v, [Some("0-15,32-47".into()), Some("10".into())]);
    }

    #[test]
    fn node_cpu_lists_decide_an_ambiguous_split() {
        let cols = [Aff::Cpu, Aff::Numa];
        let cells = ["0-310".to_string()];
        // Alone, the short node id wins; a host of 8 CPUs (nodes 0-3 and 4-7) says otherwise.
        assert_eq!(assign_affinity(&cells, &cols, &[]).unwrap()[1].as_deref(), Some("0"));
        let nodes: Vec<CpuSet> =
            ["0-3", "4-7"].iter().map(|l| CpuSet::parse_list(l).unwrap()).collect();
        assert_eq!(assign_affinity(&cells, &cols, &nodes).unwrap()[0].as_deref(), Some("0-3"));
    }

    #[test]
    fn numa_node_list_is_accepted_as_no_single_node() {
        let cols = [Aff::Cpu, Aff::Numa, Aff::GpuNumaId];
        let cells: Vec<String> = ["0-63", "0-1", "N/A"].iter().map(|c| c.to_string()).collect();
        let v = assign_affinity(&cells, &cols, &[]).unwrap();
        assert_eq!(v[1].as_deref(), Some("0-1"));
        assert_eq!(node_id("0-1"), None);
        // ... and never preferred over a plain split of a glued cell.
        let v = assign_affinity(&["0-31,64-950".into(), "N/A".into()], &cols, &[]).unwrap();
        assert_eq!(v[1].as_deref(), Some("0"));
    }

    #[test]
    fn metax_order_node_then_cpu() {
        let v = assign_affinity(&["0".into(), "0-15".into()], &[Aff::Numa, Aff::Cpu], &[]).unwrap();
        assert_eq!(v, [Some("0".into()), Some("0-15".into())]);
    }

    #[test]
    fn glued_link_codes_split() {
        let codes: Vec<String> = BASE_CODES.iter().map(|c| c.to_string()).collect();
        let (l, r) = split_links(&["NODENODE".into(), "NV12SYS0-7".into()], 4, &codes);
        assert_eq!(l, ["NODE", "NODE", "NV12", "SYS"]);
        assert_eq!(r, ["0-7"]);
    }

    #[test]
    fn glued_header_names_split() {
        let cols = header_columns("GPU0GPU1mlx5_0mlx5_1CPU AffinityNUMA Affinity");
        assert_eq!(cols.len(), 6, "{cols:?}");
    }
}
