//! Parser of `numactl --hardware`: NUMA nodes, their CPUs, memory size/free and the distance
//! matrix. Pure function over text; running the tool is `crate::host`'s job.
//!
//! Input it expects (the seed's 8-node host, trimmed):
//! ```text
//! available: 8 nodes (0-7)
//! node 0 cpus: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
//! node 0 size: 64992 MB
//! node 0 free: 4950 MB
//! ...
//! node distances:
//! node   0   1   2   3   4   5   6   7
//!   0:  10  22  22  22  28  22  28  28
//! ```
//! It survives what support bundles contain: empty `cpus:` (CPU-less nodes), `size: 0 MB`
//! (memoryless nodes), CPU lists wrapped over several lines by a mail client, distance 255
//! misaligning the columns, non-contiguous node ids, `1 nodes (0)`.

use std::collections::BTreeMap;

use super::cpuset::CpuSet;
use super::facts::NodeFacts;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumactlError {
    #[error("empty output")]
    Empty,
    #[error("line {line}: {what}: {text:?}")]
    Line { line: usize, what: String, text: String },
    #[error("line {line}: says {said} nodes but lists {found}")]
    NodeCount { line: usize, said: usize, found: usize },
}

impl NumactlError {
    /// 1-based line of the offending text, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            NumactlError::Empty => None,
            NumactlError::Line { line, .. } | NumactlError::NodeCount { line, .. } => Some(*line),
        }
    }
}

fn bad(line: usize, what: impl Into<String>, text: &str) -> NumactlError {
    let mut text = text.trim().to_string();
    if text.len() > 80 {
        let cut = (0..=80).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
    }
    NumactlError::Line { line, what: what.into(), text }
}

/// Parses `numactl --hardware`. Nodes come back in the order listed; `line` is the line of
/// each node's `cpus:` entry.
pub fn parse(text: &str) -> Result<Vec<NodeFacts>, NumactlError> {
    let lines: Vec<&str> = text.lines().collect();
    if lines.iter().all(|l| l.trim().is_empty()) {
        return Err(NumactlError::Empty);
    }
    let mut nodes: BTreeMap<u32, NodeFacts> = BTreeMap::new();
    let mut order: Vec<u32> = Vec::new();
    let mut available: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < lines.len() {
        let n = i + 1;
        let raw = lines[i];
        let line = raw.trim();
        i += 1;
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("available:") {
            // "available: 8 nodes (0-7)" or "available: 1 nodes (0)"
            let count = rest.split_whitespace().next().and_then(|c| c.parse::<usize>().ok());
            match count {
                Some(c) if c <= 4096 => available = Some((n, c)),
                _ => return Err(bad(n, "bad node count", raw)),
            }
            continue;
        }
        if line == "node distances:" {
            i = parse_distances(&lines, i, &mut nodes)?;
            continue;
        }
        if line.starts_with("No distance information") {
            continue;
        }
        let Some(rest) = line.strip_prefix("node ") else {
            return Err(bad(n, "unexpected line", raw));
        };
        let Some((id, rest)) = rest.trim_start().split_once(char::is_whitespace) else {
            return Err(bad(n, "unexpected line", raw));
        };
        let id: u32 = id.parse().map_err(|_| bad(n, "bad node id", raw))?;
        if id > 65535 {
            return Err(bad(n, "bad node id", raw));
        }
        let node = nodes.entry(id).or_insert_with(|| {
            order.push(id);
            NodeFacts { id, line: n, ..NodeFacts::default() }
        });
        let rest = rest.trim();
        if let Some(cpus) = rest.strip_prefix("cpus:") {
            let mut set = CpuSet::new();
            add_cpus(&mut set, cpus, n, raw)?;
            // A mail client may wrap a long CPU list: continuation lines hold only numbers.
            while i < lines.len() {
                let next = lines[i].trim();
                if next.is_empty() || !next.bytes().all(|b| b.is_ascii_digit() || b == b' ') {
                    break;
                }
                add_cpus(&mut set, next, i + 1, lines[i])?;
                i += 1;
            }
            node.cpus = set;
            node.line = n;
        } else if let Some(size) = rest.strip_prefix("size:") {
            node.memory_total_mb = Some(parse_mb(size).ok_or_else(|| bad(n, "bad size", raw))?);
        } else if let Some(free) = rest.strip_prefix("free:") {
            node.memory_free_mb = Some(parse_mb(free).ok_or_else(|| bad(n, "bad free", raw))?);
        } else {
            return Err(bad(n, "unexpected node field", raw));
        }
    }
    if nodes.is_empty() {
        return Err(bad(1, "no node lines", lines[0]));
    }
    if let Some((line, said)) = available {
        if said != nodes.len() {
            return Err(NumactlError::NodeCount { line, said, found: nodes.len() });
        }
    }
    Ok(order.into_iter().filter_map(|id| nodes.remove(&id)).collect())
}

fn add_cpus(set: &mut CpuSet, text: &str, line: usize, raw: &str) -> Result<(), NumactlError> {
    for word in text.split_whitespace() {
        let cpu: u32 = word.parse().map_err(|_| bad(line, "bad cpu id", raw))?;
        if cpu > 1 << 20 {
            return Err(bad(line, "bad cpu id", raw));
        }
        set.insert(cpu);
    }
    Ok(())
}

/// "64992 MB" -> 64992. numactl always prints MB.
fn parse_mb(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    let value = words.next()?.parse().ok()?;
    match (words.next(), words.next()) {
        (Some("MB"), None) => Some(value),
        _ => None,
    }
}

/// Reads the matrix after `node distances:`; returns the index of the first line after it.
/// Columns are split on whitespace, never by position: 255 makes them ragged.
fn parse_distances(
    lines: &[&str],
    mut i: usize,
    nodes: &mut BTreeMap<u32, NodeFacts>,
) -> Result<usize, NumactlError> {
    let Some(header) = lines.get(i) else {
        return Err(bad(i, "distance matrix missing after 'node distances:'", ""));
    };
    let hn = i + 1;
    let mut words = header.split_whitespace();
    if words.next() != Some("node") {
        return Err(bad(hn, "expected distance header 'node 0 1 ...'", header));
    }
    let columns: Vec<u32> = words
        .map(|w| w.parse().map_err(|_| bad(hn, "bad node id in distance header", header)))
        .collect::<Result<_, _>>()?;
    i += 1;
    while i < lines.len() {
        let raw = lines[i];
        let n = i + 1;
        let line = raw.trim();
        let Some((id, rest)) = line.split_once(':') else { break };
        let Ok(id) = id.trim().parse::<u32>() else { break };
        let values: Vec<u32> = rest
            .split_whitespace()
            .map(|w| w.parse().map_err(|_| bad(n, "bad distance", raw)))
            .collect::<Result<_, _>>()?;
        if values.len() != columns.len() {
            return Err(bad(
                n,
                format!("{} distances for {} nodes", values.len(), columns.len()),
                raw,
            ));
        }
        let Some(node) = nodes.get_mut(&id) else {
            return Err(bad(n, format!("distances for unknown node {id}"), raw));
        };
        node.distances = columns.iter().copied().zip(values).collect();
        i += 1;
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEED: &str = include_str!("../../testdata/hosts/seed-4xmxc500/numactl-hardware.txt");
    const TR: &str =
        include_str!("../../testdata/hosts/threadripper-nps4-memoryless/numactl-hardware.txt");
    const GH: &str = include_str!("../../testdata/hosts/grace-hopper-9node/numactl-hardware.txt");
    const STELLINE: &str =
        include_str!("../../testdata/hosts/stelline-4xrtx6000ada/numactl-hardware.txt");

    #[test]
    fn parses_the_seed_host() {
        let nodes = parse(SEED).unwrap();
        assert_eq!(nodes.len(), 8);
        assert_eq!(nodes[0].cpus.to_list(), "0-15");
        assert_eq!(nodes[0].memory_total_mb, Some(64992));
        assert_eq!(nodes[0].memory_free_mb, Some(4950));
        assert_eq!(nodes[0].line, 2);
        assert_eq!(nodes[7].cpus.to_list(), "112-127");
        assert_eq!(nodes[0].distances[&4], 28);
        assert_eq!(nodes[7].distances[&7], 10);
    }

    #[test]
    fn memoryless_nodes_have_zero_size() {
        let nodes = parse(TR).unwrap();
        assert_eq!(nodes[0].memory_total_mb, Some(0));
        assert_eq!(nodes[0].cpus.to_list(), "0-5,24-29");
        assert_eq!(nodes[3].memory_total_mb, Some(0));
        assert_eq!(nodes[1].memory_total_mb, Some(64307));
    }

    #[test]
    fn wrapped_cpu_lists_cpuless_nodes_and_255_distances() {
        let nodes = parse(GH).unwrap();
        assert_eq!(nodes.len(), 9);
        assert_eq!(nodes[0].cpus.to_list(), "0-71");
        assert!(nodes[1].cpus.is_empty());
        assert_eq!(nodes[1].memory_total_mb, Some(97280));
        assert_eq!(nodes[1].distances[&2], 255);
        assert_eq!(nodes[8].distances[&0], 80);
    }

    #[test]
    fn two_node_host() {
        let nodes = parse(STELLINE).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].cpus.to_list(), "32-63");
        assert_eq!(nodes[1].distances[&0], 32);
    }

    #[test]
    fn single_node_and_sparse_ids() {
        let text = "available: 2 nodes (0,8)\nnode 0 cpus: 0 1\nnode 0 size: 10 MB\nnode 0 free: 5 MB\nnode 8 cpus: 2 3\nnode 8 size: 10 MB\nnode 8 free: 5 MB\nnode distances:\nnode   0   8\n  0:  10  20\n  8:  20  10\n";
        let nodes = parse(text).unwrap();
        assert_eq!(nodes[1].id, 8);
        assert_eq!(nodes[1].distances[&0], 20);
    }

    #[test]
    fn garbage_is_an_error_with_a_line() {
        assert_eq!(parse(""), Err(NumactlError::Empty));
        let err = parse("available: 1 nodes (0)\nnode 0 cpus: 0 1 x\n").unwrap_err();
        assert_eq!(err.line(), Some(2));
        let err = parse("available: 1 nodes (0)\nnode 0 size: lots\n").unwrap_err();
        assert_eq!(err.line(), Some(2));
        let err = parse("hello world\n").unwrap_err();
        assert_eq!(err.line(), Some(1));
        // Truncated: the header promises 8 nodes.
        let cut: String = SEED.lines().take(7).collect::<Vec<_>>().join("\n");
        assert!(matches!(parse(&cut), Err(NumactlError::NodeCount { said: 8, found: 2, .. })));
        // A distance row with a missing column.
        let text = "available: 2 nodes (0-1)\nnode 0 cpus: 0\nnode 1 cpus: 1\nnode distances:\nnode 0 1\n 0: 10\n";
        assert_eq!(parse(text).unwrap_err().line(), Some(6));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_mangled_real_output(cut in 0usize..2000, junk in "[ 0-9a-z:\n]{0,20}") {
            let mut text = SEED.to_string();
            let at = cut.min(text.len());
            text.insert_str(at, &junk);
            let _ = parse(&text);
        }
    }
}
